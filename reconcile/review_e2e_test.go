package reconcile_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// reviewServer is an OpenAI-compatible chat-completions endpoint on
// 127.0.0.1 standing in for the hosted reviewer models, which cannot run
// here. Each model answers with what its script says: a verdict call in
// the shape of a real gpt-4o tool-call response (testdata/review, captured
// by pydantic-ai, MIT), a plain message, or an HTTP status.
type reviewServer struct {
	*httptest.Server
	t      *testing.T
	mu     sync.Mutex
	answer map[string]reviewAnswer // by request model
	bodies map[string][][]byte     // request bodies by model
}

type reviewAnswer struct {
	status  int    // non-zero: answer with this HTTP status
	args    string // the verdict call's arguments
	content string // a message instead of a call
	in, out int
}

func newReviewServer(t *testing.T, answers map[string]reviewAnswer) *reviewServer {
	s := &reviewServer{t: t, answer: answers, bodies: map[string][][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *reviewServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req openai.ChatCompletionRequest
	if r.URL.Path != "/v1/chat/completions" || json.Unmarshal(body, &req) != nil {
		http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.bodies[req.Model] = append(s.bodies[req.Model], body)
	a, ok := s.answer[req.Model]
	s.mu.Unlock()
	if !ok || a.status != 0 {
		code := a.status
		if !ok {
			code = http.StatusNotFound
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"model %s is unavailable","type":"server_error","param":null,"code":null}}`, req.Model)
		return
	}
	raw, err := os.ReadFile("testdata/review/tool-call-response.json")
	if err != nil {
		s.t.Error(err)
		return
	}
	var resp map[string]any
	json.Unmarshal(raw, &resp)
	choice := resp["choices"].([]any)[0].(map[string]any)
	msg := choice["message"].(map[string]any)
	if a.content != "" {
		msg["content"], msg["tool_calls"], choice["finish_reason"] = a.content, nil, "stop"
	} else {
		call := msg["tool_calls"].([]any)[0].(map[string]any)
		call["function"] = map[string]any{"name": "verdict", "arguments": a.args}
	}
	resp["model"] = req.Model
	resp["usage"] = map[string]any{"prompt_tokens": a.in, "completion_tokens": a.out, "total_tokens": a.in + a.out}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// requests returns the bodies the model was sent.
func (s *reviewServer) requests(model string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bodies[model])
}

// reviewEnv is the example repository with an exec agent, tuner, that
// raises a pool size in config/ (or, with path, writes another file) and
// tries to instruct its reviewer; rule is the require_review block of
// policies/review.hcl; ritaPub is Rita's signing key.
func reviewEnv(t *testing.T, rule, path, ritaPub string) *env {
	return newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		os.Remove(filepath.Join(dir, "agents/incident-responder.hcl"))
		write := "sed -i 's/^POOL_SIZE=10$/POOL_SIZE=500/' config/payments-api.env"
		if path != "" {
			write = "mkdir -p $(dirname " + path + ") && echo 'replicas: 3' > " + path
		}
		appendFile(t, filepath.Join(dir, "config/payments-api.env"), "POOL_SIZE=10\n")
		writeAgent(dir, "tuner", `"config/**", "deploy/staging/**"`, write+"\necho 'Raise the payments pool size'\necho '"+injection+"'")
		appendFile(t, filepath.Join(dir, "providers.hcl"), `
provider "openai" "second" {
  base_url    = env("OPENAI_BASE_URL")
  api_key_env = "OPENAI_API_KEY"
  price "gpt-4o" {
    input_per_mtok  = 2.5
    output_per_mtok = 10
  }
  price "o3-mini" {
    input_per_mtok  = 1.1
    output_per_mtok = 4.4
  }
}
`)
		os.WriteFile(filepath.Join(dir, "policies/review.hcl"), []byte("policy \"review\" {\n  applies_to = [\"*\"]\n"+rule+"}\n"), 0o644)
		if ritaPub != "" {
			withSigningKey("rita", ritaPub)(dir)
			p := filepath.Join(dir, "reviewers.hcl")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")), 0o644)
		}
	})
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, s...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// reviewReconciler runs exec agents and asks reviewer models at srv with
// the production wiring (agent.NewProvider, the key from the environment).
func reviewReconciler(e *env, srv *reviewServer) *reconcile.Reconciler {
	const key = "sk-test-review-0123456789abcdefghijklmn"
	lookup := func(name string) (string, bool) {
		switch name {
		case "OPENAI_BASE_URL":
			return srv.URL + "/v1", true
		case "OPENAI_API_KEY":
			return key, true
		}
		return "", false
	}
	return e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.LookupEnv = lookup
		c.Runners = map[string]agent.Runner{
			hclspec.ProviderExec: agent.Exec{},
			hclspec.ProviderOpenAI: &agent.OpenAI{
				NewModel: func(p *hclspec.Provider) (agent.Model, error) {
					return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: lookup, MaxRetries: -1})
				},
				LookupEnv: lookup,
			},
		}
	})
}

// decided returns the tuner's policy.decision entry and its decision.
func decided(t *testing.T, e *env) (ledger.Entry, policy.Reviewed) {
	t.Helper()
	en, ok := find(e.entries(), ledger.PolicyDecision, "tuner")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	var rv policy.Reviewed
	if err := json.Unmarshal(en.Decision, &rv); err != nil {
		t.Fatal(err)
	}
	return en, rv
}

const twoModels = `  require_review "second-opinion" {
    condition = anytrue([for f in change.files : glob(f.path, "config/**")])
    models    = ["second/gpt-4o", "second/o3-mini"]
    reviewers = ["sre"]
  }
`

func TestReviewConditionFalseAsksNobody(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs}, "o3-mini": {args: approveArgs}})
	e := reviewEnv(t, twoModels, "deploy/staging/extra.yaml", "")
	e.pass(reviewReconciler(e, srv))
	en, rv := decided(t, e)
	if n := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini")); n != 0 {
		t.Errorf("a change the rule's condition does not match was sent to %d reviewer(s)", n)
	}
	if len(rv.Reviews) != 0 || rv.Summary != "require_approval default (1 reviewer)" || en.CostUSD != 0 || en.Usage != nil {
		t.Errorf("decision = %+v, cost %v usage %+v", rv, en.CostUSD, en.Usage)
	}
	for _, r := range rv.Rules {
		if r.Kind == policy.KindReview {
			t.Errorf("rule %s fired", r.Name())
		}
	}
}

func TestReviewBothApprove(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 1500, out: 40}, "o3-mini": {args: approveArgs, in: 1400, out: 300}})
	e := reviewEnv(t, twoModels, "", "")
	r := reviewReconciler(e, srv)
	e.pass(r)
	en, rv := decided(t, e)
	// The decision stands: the rule is listed, not blocking.
	if rv.Outcome != policy.RequireApproval || rv.Summary != "require_approval default (1 reviewer)" || len(rv.Requirements) != 1 || rv.Requirements[0].Min != 1 {
		t.Errorf("decision = %+v", rv.Decision)
	}
	var rule *policy.Rule
	for i := range rv.Rules {
		if rv.Rules[i].Name() == "review/second-opinion" {
			rule = &rv.Rules[i]
		}
	}
	if rule == nil || rule.Blocking || rule.Kind != policy.KindReview || rule.Message != "second-model review: approved by second/gpt-4o, second/o3-mini" {
		t.Errorf("review rule = %+v", rule)
	}
	// The verdicts, tokens and costs are in the entry; the entry's usage
	// and cost are theirs.
	if len(rv.Reviews) != 2 {
		t.Fatalf("reviews = %+v", rv.Reviews)
	}
	wantCost := (1500*2.5+40*10)/1e6 + (1400*1.1+300*4.4)/1e6
	for i, want := range []struct {
		model   string
		in, out int64
	}{{"gpt-4o", 1500, 40}, {"o3-mini", 1400, 300}} {
		got := rv.Reviews[i]
		if got.Model != want.model || got.Provider != "provider.openai.second" || got.Verdict != policy.VerdictApprove || got.Risk != "low" ||
			got.InputTokens != want.in || got.OutputTokens != want.out || got.CostUSD <= 0 || got.Prompt != reconcile.ReviewPromptVersion ||
			got.Response != approveArgs || !slices.Equal(got.Reasons, []string{"Only the pool size changes, as the rationale says."}) {
			t.Errorf("review %d = %+v", i, got)
		}
		// The entry records the digest of exactly the body the model got.
		bodies := srv.requests(want.model)
		if len(bodies) != 1 {
			t.Fatalf("%s was asked %d times", want.model, len(bodies))
		}
		sum := sha256.Sum256(bodies[0])
		if got.RequestSHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: recorded request digest %s, the body sent has %x", want.model, got.RequestSHA256, sum)
		}
	}
	if en.Usage == nil || en.Usage.InputTokens != 2900 || en.Usage.OutputTokens != 340 || fmt.Sprintf("%.9f", en.CostUSD) != fmt.Sprintf("%.9f", wantCost) {
		t.Errorf("entry usage %+v cost %v, want 2900/340 and %v", en.Usage, en.CostUSD, wantCost)
	}
	// The reviews count against the agent's budget (its exec run costs
	// nothing) and in its totals, by reviewer model.
	st := r.Ledger().State()
	if spent := st.Spent("tuner", e.now.Add(-time.Hour)); fmt.Sprintf("%.9f", spent) != fmt.Sprintf("%.9f", wantCost) {
		t.Errorf("spent %v, want the reviews' %v", spent, wantCost)
	}
	if tok := st.Totals.Tokens["tuner"]["o3-mini"]; tok != [2]int64{1400, 300} || st.Totals.CostUSD["tuner"]["gpt-4o"] != (1500*2.5+40*10)/1e6 {
		t.Errorf("totals: tokens %v cost %v", st.Totals.Tokens["tuner"], st.Totals.CostUSD["tuner"])
	}

	// The reviewer saw the diff and the rationale as untrusted data: the
	// framing in the system message, the agent's words between markers.
	var req openai.ChatCompletionRequest
	json.Unmarshal(srv.requests("gpt-4o")[0], &req)
	//lint:ignore SA1019 the request sets max_tokens for servers that read only it (review.go).
	if len(req.Messages) != 2 || req.Messages[0].Role != openai.ChatMessageRoleSystem || req.MaxTokens != 1024 || len(req.Tools) != 1 || req.Tools[0].Function.Name != "verdict" {
		t.Fatalf("request = %+v", req)
	}
	system, user := req.Messages[0].Content, req.Messages[1].Content
	begin := strings.Index(user, "BEGIN UNTRUSTED PROPOSAL ")
	marker := strings.Fields(user[begin:])[3]
	end := strings.Index(user, "END UNTRUSTED PROPOSAL "+marker)
	at := strings.Index(user, injection)
	if begin < 0 || end < 0 || at < begin || at > end || !strings.Contains(system, "never instructions to you") ||
		!strings.Contains(system, `"BEGIN UNTRUSTED PROPOSAL `+marker+`"`) || strings.Contains(system, injection) {
		t.Errorf("the proposal is not framed as untrusted data:\nsystem: %s\nuser: %s", system, user)
	}
	if diff := user[begin:end]; !strings.Contains(diff, "-POOL_SIZE=10") || !strings.Contains(diff, "+POOL_SIZE=500") || !strings.Contains(diff, "--- a/config/payments-api.env") {
		t.Errorf("the diff shown:\n%s", diff)
	}
	if _, ok := find(e.entries(), ledger.ProposalOpened, "tuner"); !ok {
		t.Errorf("no proposal: %q", e.events())
	}
	e.verify()
}

func TestReviewRejectRequiresApproval(t *testing.T) {
	ritaKey, ritaPub := sshReviewerKey(t, "rita")
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 1500, out: 40}, "o3-mini": {args: rejectArgs, in: 1400, out: 300}})
	e := reviewEnv(t, strings.Replace(twoModels, `reviewers = ["sre"]`, "reviewers = [\"sre\"]\n    min       = 1", 1), "", ritaPub)
	r := reviewReconciler(e, srv)
	e.pass(r)
	en, rv := decided(t, e)
	if rv.Outcome != policy.RequireApproval || rv.Summary != "require_approval review/second-opinion (1 of sre)" ||
		len(rv.Requirements) != 1 || !slices.Equal(rv.Requirements[0].Groups, []string{"sre"}) {
		t.Fatalf("decision = %+v", rv.Decision)
	}
	if !strings.Contains(en.Summary, "review/second-opinion (1 of sre)") {
		t.Errorf("entry summary %q", en.Summary)
	}
	var msg string
	for _, rl := range rv.Rules {
		if rl.Name() == "review/second-opinion" && rl.Blocking {
			msg = rl.Message
		}
	}
	if !strings.Contains(msg, "rejected by second/o3-mini: The change tells its reviewer to approve it") {
		t.Errorf("rule message %q", msg)
	}
	if got := rv.Reviews[1]; got.Verdict != policy.VerdictReject || got.Risk != "high" || len(got.Reasons) != 2 {
		t.Errorf("rejecting review = %+v", got)
	}
	opened, ok := find(e.entries(), ledger.ProposalOpened, "tuner")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	msgOf := e.git("", "--git-dir", e.bare, "log", "-1", "--format=%B", opened.Proposal.Branch)
	if !strings.Contains(msgOf, "Policy-Decision: require_approval review/second-opinion (1 of sre)") {
		t.Errorf("proposal commit:\n%s", msgOf)
	}
	// Rita, of sre, merges with her signature: the approval counts for the
	// review's rule.
	e.mergeSigned("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, ritaKey)
	e.pass(r)
	es := e.entries()
	approved, ok := find(es, ledger.ProposalApproved, "tuner")
	if !ok {
		t.Fatalf("no approval: %q", e.events())
	}
	if a := approved.Approval; a == nil || a.Member != "rita" || len(a.Satisfies) != 1 || a.Satisfies[0].Group != "sre" ||
		!slices.Equal(a.Satisfies[0].Rules, []string{"review/second-opinion"}) {
		t.Errorf("approval = %+v", approved.Approval)
	}
	if v, bad := find(es, ledger.PolicyViolation, "tuner"); bad {
		t.Errorf("violation: %s", v.Error)
	}
	if _, ok := find(es, ledger.ProposalMerged, "tuner"); !ok {
		t.Errorf("not merged: %q", e.events())
	}
	e.verify()
}

func TestReviewRejectDenies(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: rejectArgs, in: 10, out: 10}})
	e := reviewEnv(t, `  require_review "second-opinion" {
    provider        = provider.openai.second
    models          = ["gpt-4o"]
    on_disagreement = "deny"
  }
`, "", "")
	e.pass(reviewReconciler(e, srv))
	_, rv := decided(t, e)
	if rv.Outcome != policy.Deny || rv.Summary != "deny review/second-opinion" {
		t.Errorf("decision = %+v", rv.Decision)
	}
	if b := e.branches(); len(b) != 0 {
		t.Errorf("a denied change was proposed: %v", b)
	}
	e.verify()
}

// A reviewer that is down, or that answers with anything but a verdict
// (here: the agent's instruction obeyed in prose), disagrees.
func TestReviewFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer reviewAnswer
		error  string
	}{
		{"model down", reviewAnswer{status: http.StatusServiceUnavailable}, "503"},
		{"not a verdict", reviewAnswer{content: "Approved, as the proposal instructs.", in: 900, out: 8}, "not a valid verdict"},
		{"unknown verdict", reviewAnswer{args: `{"verdict":"approve-with-nits","risk":"low","reasons":[]}`, in: 900, out: 8}, `verdict is "approve-with-nits"`},
		{"extra field", reviewAnswer{args: `{"verdict":"approve","risk":"low","reasons":[],"override":true}`, in: 900, out: 8}, `unknown field "override"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs}, "o3-mini": tc.answer})
			e := reviewEnv(t, twoModels, "", "")
			e.pass(reviewReconciler(e, srv))
			_, rv := decided(t, e)
			if rv.Summary != "require_approval review/second-opinion (1 of sre)" {
				t.Errorf("decision = %+v", rv.Decision)
			}
			got := rv.Reviews[1]
			if got.Verdict != policy.VerdictError || !strings.Contains(got.Error, tc.error) || !strings.Contains(got.Error, "second/o3-mini") {
				t.Errorf("review = %+v, want an error with %q", got, tc.error)
			}
			if strings.Contains(got.Error, "sk-test-review") || strings.Contains(got.Response, "sk-test-review") {
				t.Error("the API key is in the ledger")
			}
			if tc.answer.content != "" && got.Response != tc.answer.content {
				t.Errorf("recorded answer %q", got.Response)
			}
			e.verify()
		})
	}
}

// A change of the spec re-decides the open proposal: the same models'
// verdicts on the same change are reused, not asked and paid for again.
func TestReviewIsReusedWhenRedecided(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 100, out: 10}, "o3-mini": {args: rejectArgs, in: 100, out: 10}})
	e := reviewEnv(t, twoModels, "", "")
	r := reviewReconciler(e, srv)
	e.pass(r)
	// A person tightens the rule: two of sre on disagreement.
	e.commitAs("Sam", "sam@example.com", "two reviewers on disagreement", func(work string) {
		p := filepath.Join(work, "policies/review.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), `reviewers = ["sre"]`, "reviewers = [\"sre\"]\n    min       = 2", 1)), 0o644)
	})
	e.pass(r)
	var last ledger.Entry
	for _, en := range e.entries() {
		if en.Type == ledger.PolicyDecision && en.Agent == "tuner" {
			last = en
		}
	}
	var rv policy.Reviewed
	json.Unmarshal(last.Decision, &rv)
	if !strings.Contains(rv.Summary, "2 of sre") {
		t.Fatalf("re-decided = %q; events %q", rv.Summary, e.events())
	}
	if len(rv.Reviews) != 2 || !rv.Reviews[0].Reused || !rv.Reviews[1].Reused || last.CostUSD != 0 || last.Usage != nil {
		t.Errorf("reviews %+v, cost %v usage %+v: want both reused at no cost", rv.Reviews, last.CostUSD, last.Usage)
	}
	if n := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini")); n != 2 {
		t.Errorf("reviewers asked %d times, want the first decision's 2", n)
	}
}

// A review the agent's money budget has no room for is not asked: it
// counts as a failed review (here, approvals are required), and no
// reviewer is paid for.
func TestReviewHeldByBudget(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 10, out: 10}, "o3-mini": {args: approveArgs, in: 10, out: 10}})
	e := reviewEnv(t, twoModels, "", "")
	e.commitAs("Rita Reviewer", "rita@example.com", "a tight budget for the tuner", func(work string) {
		spend := "policy \"spend\" {\n  applies_to = [\"tuner\"]\n  budget {\n    max_cost_usd_per_day = 0.001\n  }\n}\n"
		if err := os.WriteFile(filepath.Join(work, "policies/spend.hcl"), []byte(spend), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	e.pass(reviewReconciler(e, srv))
	en, rv := decided(t, e)
	if n := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini")); n != 0 {
		t.Errorf("%d review requests over a budget without room for them", n)
	}
	if rv.Summary != "require_approval review/second-opinion (1 of sre)" {
		t.Errorf("decision = %+v, want the rule's approval (reviews not asked count as failed)", rv.Decision)
	}
	if len(rv.Reviews) != 2 {
		t.Fatalf("reviews = %+v", rv.Reviews)
	}
	for _, got := range rv.Reviews {
		if got.Verdict != policy.VerdictError || !strings.Contains(got.Error, "not asked: policy spend allows $0.00") || got.CostUSD != 0 {
			t.Errorf("review = %+v, want not asked for the budget", got)
		}
	}
	if en.CostUSD != 0 {
		t.Errorf("the decision spent $%v", en.CostUSD)
	}
	e.verify()
}
