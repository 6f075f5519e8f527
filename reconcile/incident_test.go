package reconcile_test

import (
	"context"
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

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/promtest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// incidentExample is the example of the incident flow: Alertmanager's
// notifications and the model's side of the conversation.
const incidentExample = "../examples/incident"

// chatServer is an OpenAI-compatible chat-completions endpoint on
// 127.0.0.1, standing in for a hosted model, which cannot run here: it
// answers each POST /v1/chat/completions with the next response body of a
// conversation, byte for byte as the file has it, and keeps the requests
// it got. Anything else is answered as OpenAI answers it, with an error.
type chatServer struct {
	*httptest.Server
	mu        sync.Mutex
	responses []json.RawMessage
	requests  []openai.ChatCompletionRequest
	auth      []string
	paths     []string
}

func newChatServer(t *testing.T, conversation string) *chatServer {
	t.Helper()
	b, err := os.ReadFile(conversation)
	if err != nil {
		t.Fatal(err)
	}
	s := &chatServer{}
	if err := json.Unmarshal(b, &s.responses); err != nil || len(s.responses) == 0 {
		t.Fatalf("%s: want a JSON array of chat completion bodies: %v", conversation, err)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *chatServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paths = append(s.paths, r.Method+" "+r.URL.Path)
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","param":null,"code":null}}`, msg)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		fail(http.StatusNotFound, "unknown url "+r.URL.Path)
		return
	}
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	body, err := io.ReadAll(r.Body)
	var req openai.ChatCompletionRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		fail(http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	s.requests = append(s.requests, req)
	if len(s.responses) == 0 {
		// 400, which a provider does not retry: the conversation has no
		// more turns.
		fail(http.StatusBadRequest, "the recorded conversation has no more responses")
		return
	}
	next := s.responses[0]
	s.responses = s.responses[1:]
	w.Header().Set("Content-Type", "application/json")
	w.Write(next)
}

// seen returns the requests the server got so far.
func (s *chatServer) seen() []openai.ChatCompletionRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// conversationUsage sums the usage the conversation's responses report.
func conversationUsage(t *testing.T, conversation string) (in, out int64) {
	t.Helper()
	b, err := os.ReadFile(conversation)
	if err != nil {
		t.Fatal(err)
	}
	var rs []openai.ChatCompletionResponse
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		in += int64(r.Usage.PromptTokens)
		out += int64(r.Usage.CompletionTokens)
	}
	return in, out
}

// finishArgs is the finish call the conversation ends with.
func finishArgs(t *testing.T, conversation string) (summary, rationale, risk string) {
	t.Helper()
	b, err := os.ReadFile(conversation)
	if err != nil {
		t.Fatal(err)
	}
	var rs []openai.ChatCompletionResponse
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		for _, c := range r.Choices[0].Message.ToolCalls {
			if c.Function.Name == "finish" {
				var f struct{ Summary, Rationale, Risk string }
				if err := json.Unmarshal([]byte(c.Function.Arguments), &f); err != nil {
					t.Fatal(err)
				}
				return f.Summary, f.Rationale, f.Risk
			}
		}
	}
	t.Fatalf("%s has no finish call", conversation)
	return "", "", ""
}

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(incidentExample, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runEntries returns the entries of run id, in ledger order.
func runEntries(es []ledger.Entry, id string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range es {
		if en.RunID == id {
			out = append(out, en)
		}
	}
	return out
}

// TestIncidentFlow is examples/incident end to end on the example
// repository: Alertmanager's notification starts the incident-responder,
// whose model (the example's conversation, served over HTTP in OpenAI's
// wire format) reads the alert, the config and the staging manifest,
// writes its diagnosis and proposes a config change; policy requires a
// review; a reviewer's signed merge approves it; the resolution is
// recorded, not run; a repeat runs nothing; replay reproduces the
// proposal; the ledger verifies.
func TestIncidentFlow(t *testing.T) {
	ctx := context.Background()
	ritaKey, ritaPub := sshReviewerKey(t, "rita")
	e := newEnv(t, false, func(dir string) {
		// Rita signs her merges, and nothing else counts: the example
		// accepts unsigned merges for the demo; production does not.
		withSigningKey("rita", ritaPub)(dir)
		p := filepath.Join(dir, "reviewers.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")), 0o644)
	})
	conversation := filepath.Join(incidentExample, "conversation.json")
	model := newChatServer(t, conversation)
	// A real Prometheus scraping the service's cache counters: the
	// model's prometheus_query confirms the diagnosis against it.
	exporter := cacheExporter(t)
	promURL, stopPrometheus := promtest.Start(t, "payments-api", strings.TrimPrefix(exporter.URL, "http://"), conversationQuery(t, conversation))
	const apiKey = "sk-test-incident-0123456789abcdefghijklmnop"
	// providers.hcl reads its base_url from OPENAI_BASE_URL and the key
	// from OPENAI_API_KEY: the environment the daemon would have.
	lookup := func(name string) (string, bool) {
		switch name {
		case "OPENAI_BASE_URL":
			return model.URL + "/v1", true
		case "OPENAI_API_KEY":
			return apiKey, true
		case "PROMETHEUS_URL":
			return promURL, true
		}
		return "", false
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.LookupEnv = lookup
		// The production wiring (cmd/reconciler's runners), with this
		// environment.
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

	// The first pass runs the exec agents on the new spec; the incident
	// agent waits for an alert.
	pass(t, r)
	if n := len(model.seen()); n != 0 {
		t.Fatalf("the model was asked %d time(s) before any alert", n)
	}
	if _, ok := find(e.entries(), ledger.RunStarted, "incident-responder"); ok {
		t.Fatal("incident-responder ran without an alert")
	}

	// Alertmanager posts the firing notification.
	firingBody := readExample(t, "alert-firing.json")
	firing := reconcile.Request{ID: "am-firing", Alert: wireAlert(t, firingBody), Received: e.now}
	if got, err := r.Targets(firing); err != nil || !slices.Equal(got, []string{"incident-responder"}) {
		t.Fatalf("Targets = %v, %v; want [incident-responder]", got, err)
	}
	before := len(e.entries())
	res := pass(t, r, firing)
	o := outcome(t, res, "am-firing", "incident-responder")
	if o.State != reconcile.RequestStarted || o.RunID == "" {
		t.Fatalf("outcome = %+v, want a started run", o)
	}
	runID := o.RunID
	const fingerprint = "bd10ced123010a59"
	groupKey := `{}/{alertname="PaymentsHighLatency"}:{alertname="PaymentsHighLatency", service="payments-api"}`
	trigger := ledger.AlertTrigger(groupKey, []string{fingerprint})
	if o.Trigger != trigger || firing.Alert.Trigger() != trigger {
		t.Fatalf("trigger = %q, want %q (group key and fingerprint)", o.Trigger, trigger)
	}

	// The run's entries, in order: started (with the alert), finished,
	// decided, opened.
	es := e.entries()
	got := runEntries(es[before:], runID)
	var types []string
	for _, en := range got {
		types = append(types, en.Type)
	}
	if want := []string{ledger.RunStarted, ledger.RunFinished, ledger.PolicyDecision, ledger.ProposalOpened}; !slices.Equal(types, want) {
		t.Fatalf("run %s entries = %q, want %q", runID, types, want)
	}
	started, finished, decided, opened := got[0], got[1], got[2], got[3]
	if al := started.Alert; al == nil || al.GroupKey != groupKey || al.Status != "firing" || al.Receiver != "reconciler" ||
		len(al.Alerts) != 1 || al.Alerts[0].Fingerprint != fingerprint || al.Alerts[0].Labels["namespace"] != "payments-staging" ||
		started.Trigger != trigger || started.Agent != "incident-responder" {
		t.Fatalf("run.started does not carry the notification: trigger %q alert %+v", started.Trigger, started.Alert)
	}
	wantIn, wantOut := conversationUsage(t, conversation)
	if finished.Outcome != reconcile.OutcomeChanged || finished.Model != "gpt-4o-mini" || finished.Usage == nil ||
		finished.Usage.InputTokens != wantIn || finished.Usage.OutputTokens != wantOut || finished.TranscriptDigest == "" ||
		finished.WorkUnit == nil || finished.WorkUnit.Kind != "incident-remediation" || finished.Trigger != trigger {
		t.Fatalf("run.finished = %+v", finished.Event)
	}
	if want := (float64(wantIn)*0.15 + float64(wantOut)*0.60) / 1e6; fmt.Sprintf("%.9f", finished.CostUSD) != fmt.Sprintf("%.9f", want) {
		t.Errorf("cost = %v, want %v", finished.CostUSD, want)
	}
	diagnosisPath := "incidents/2026-11-17-payments-api-latency.md"
	if finished.Change == nil || !slices.Equal(finished.Change.Files, []string{"config/payments-api.env", diagnosisPath}) {
		t.Errorf("change = %+v, want the config and the diagnosis", finished.Change)
	}

	// Policy: the remediation needs a review (no rule of the example's
	// policies fires on a staging config change, so the built-in review
	// every proposal needs does), and the decision names its rule.
	var d policy.Decision
	if err := json.Unmarshal(decided.Decision, &d); err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, rl := range d.Rules {
		rules = append(rules, rl.Name())
	}
	if d.Outcome != policy.RequireApproval || !slices.Equal(rules, []string{"builtin/one-review"}) || len(d.Requirements) != 1 || d.Requirements[0].Min != 1 {
		t.Fatalf("decision = %+v (rules %q), want require_approval by builtin/one-review", d, rules)
	}

	// The model saw the alert in its first user message, and read the
	// config and the manifest before it changed anything.
	reqs := model.seen()
	if len(reqs) != 4 {
		t.Fatalf("the model was asked %d times, want the conversation's 4", len(reqs))
	}
	for i, a := range model.auth {
		if a != "Bearer "+apiKey {
			t.Errorf("request %d: Authorization %q", i+1, a)
		}
	}
	first := reqs[0]
	if first.Model != "gpt-4o-mini" || len(first.Messages) != 2 || first.Messages[1].Role != openai.ChatMessageRoleUser {
		t.Fatalf("first request: model %q, %d messages", first.Model, len(first.Messages))
	}
	kickoff := first.Messages[1].Content
	for _, s := range []string{runID, trigger, fingerprint, "PaymentsHighLatency", "cache hit ratio 38%", `"kind": "alert"`, `"status": "firing"`} {
		if !strings.Contains(kickoff, s) {
			t.Errorf("the first user message lacks %q:\n%s", s, kickoff)
		}
	}
	var offered []string
	for _, tl := range first.Tools {
		offered = append(offered, tl.Function.Name)
	}
	if !slices.Contains(offered, "write_file") || !slices.Contains(offered, "edit_file") || !slices.Contains(offered, "prometheus_query") {
		t.Errorf("tools offered = %q", offered)
	}
	toolResults := func(req openai.ChatCompletionRequest) string {
		var b strings.Builder
		for _, m := range req.Messages {
			if m.Role == openai.ChatMessageRoleTool {
				b.WriteString(m.Content + "\n")
			}
		}
		return b.String()
	}
	if tr := toolResults(reqs[1]); !strings.Contains(tr, "CACHE_TTL=30s") || !strings.Contains(tr, "deploy/staging/payments-api.yaml") {
		t.Errorf("second request's tool results lack the config and the listing:\n%s", tr)
	}
	// Prometheus confirmed the alert's 38% hit ratio.
	if tr := toolResults(reqs[1]); !strings.Contains(tr, "prometheus main, instant query at ") || !strings.Contains(tr, "vector, 1 series:\n{} => 0.38 @ ") {
		t.Errorf("second request's tool results lack Prometheus's answer:\n%s", tr)
	}
	if tr := toolResults(reqs[2]); !strings.Contains(tr, "replicas: 1") || !strings.Contains(tr, "configMapRef") {
		t.Errorf("third request's tool results lack the staging manifest:\n%s", tr)
	}

	// The proposal: the remediation and the diagnosis, with the
	// diagnosis (finish's rationale) as the commit's body.
	summary, rationale, risk := finishArgs(t, conversation)
	branch := reconcile.ProposalBranch("incident-responder", runID)
	if opened.Proposal == nil || opened.Proposal.Branch != branch {
		t.Fatalf("proposal.opened = %+v", opened.Event)
	}
	head := opened.Proposal.Head
	if h := strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", branch)); h != head {
		t.Fatalf("branch %s is at %s, the ledger says %s", branch, h, head)
	}
	if names := e.git("", "--git-dir", e.bare, "diff", "--name-only", "main", branch); names != "config/payments-api.env\n"+diagnosisPath {
		t.Errorf("proposal changes %q", names)
	}
	diff := e.git("", "--git-dir", e.bare, "diff", "main", branch, "--", "config/payments-api.env")
	if !strings.Contains(diff, "\n-CACHE_TTL=30s") || !strings.Contains(diff, "\n+CACHE_TTL=120s") || strings.Count(diff, "\n+") != 2 {
		t.Errorf("remediation diff:\n%s", diff)
	}
	note := e.git("", "--git-dir", e.bare, "show", branch+":"+diagnosisPath)
	for _, s := range []string{"## Diagnosis", fingerprint, groupKey, "CACHE_TTL", "## What to watch after the merge"} {
		if !strings.Contains(note, s) {
			t.Errorf("the diagnosis lacks %q:\n%s", s, note)
		}
	}
	msg := e.git("", "--git-dir", e.bare, "log", "-1", "--format=%an <%ae>%n%B", branch)
	for _, line := range []string{
		"incident-responder (agent) <reconciler+incident-responder@example.com>",
		summary,
		strings.SplitN(rationale, "\n", 2)[0],
		"Risk (the agent's own assessment): " + risk,
		"Agent-Run: " + runID,
		"Spec-Commit: " + started.SpecCommit,
		"Policy-Decision: " + d.Summary,
		"Ledger-Entry: " + jsonNum(decided.Seq),
	} {
		if !strings.Contains(msg, line) {
			t.Errorf("proposal commit lacks %q:\n%s", line, msg)
		}
	}

	// The diagnosis is on the ledger too: the transcript run.finished
	// signed, which holds the alert, every call and finish's rationale,
	// and no key.
	repo, err := gitstore.Open(ctx, e.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	transcript, tentry, err := ledger.New(repo, ledger.Options{}).Transcript(ctx, runID)
	if err != nil || tentry.Seq != finished.Seq {
		t.Fatalf("transcript: %v (entry %d, want %d)", err, tentry.Seq, finished.Seq)
	}
	var tr agent.Transcript
	if err := json.Unmarshal(transcript, &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Result == nil || tr.Result.Summary != summary || !strings.Contains(tr.Result.Rationale, strings.SplitN(rationale, "\n", 2)[0]) || tr.Trigger != trigger || len(tr.Steps) != 4 {
		t.Errorf("transcript result = %+v, trigger %q, %d steps", tr.Result, tr.Trigger, len(tr.Steps))
	}
	if strings.Contains(string(transcript), apiKey) || !strings.Contains(string(transcript), fingerprint) {
		t.Error("the transcript holds the API key, or lacks the alert")
	}
	if calls := tr.Steps[0].ToolCalls; len(calls) != 3 || calls[2].Name != "prometheus_query" || calls[2].Error || !strings.Contains(calls[2].Result, "{} => 0.38 @ ") {
		t.Errorf("the transcript does not record Prometheus's answer: %+v", calls)
	}

	// Alertmanager repeats the notification while the proposal is open
	// (repeat_interval): the same trigger, answered by the same run.
	n := len(e.entries())
	res = pass(t, r, reconcile.Request{ID: "am-repeat", Alert: wireAlert(t, firingBody)})
	if o := outcome(t, res, "am-repeat", "incident-responder"); o.State != reconcile.RequestStarted || o.RunID != runID {
		t.Fatalf("repeat outcome = %+v, want run %s", o, runID)
	}
	if got := len(e.entries()); got != n {
		t.Fatalf("a repeated notification wrote %q", e.events()[n:])
	}

	// Rita reviews and merges, signing the merge with her key.
	e.mergeSigned("Rita Reviewer", "rita@example.com", branch, ritaKey)
	mergeCommit := strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", "main"))
	pass(t, r)
	es = e.entries()
	approved, ok := find(es, ledger.ProposalApproved, "incident-responder")
	if !ok {
		t.Fatalf("no approval: %q", e.events()[n:])
	}
	a := approved.Approval
	if approved.RunID != runID || a == nil || a.Method != ledger.ApprovalSSH || a.Via != "merge" || a.Member != "rita" || a.Head != head ||
		len(a.Satisfies) != 1 || !slices.Equal(a.Satisfies[0].Rules, []string{"builtin/one-review"}) {
		t.Errorf("proposal.approved = %+v approval %+v, want rita's signed merge of %s for builtin/one-review", approved.Event, a, head)
	}
	merged, ok := find(es, ledger.ProposalMerged, "incident-responder")
	if !ok || merged.RunID != runID || merged.Proposal == nil || merged.Proposal.Head != head || merged.Proposal.MergeCommit != mergeCommit ||
		merged.Subject != mergeCommit || merged.WorkUnit == nil || merged.WorkUnit.HumanMinutes != 45 || merged.Seq < approved.Seq {
		t.Errorf("proposal.merged = %+v, want run %s head %s merge %s", merged.Event, runID, head, mergeCommit)
	}
	if v, ok := find(es, ledger.PolicyViolation, "incident-responder"); ok {
		t.Errorf("violation: %s", v.Error)
	}
	if p2 := strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", "main^2")); p2 != head {
		t.Errorf("main's merge has second parent %s, want the proposal head %s", p2, head)
	}

	// The alert resolves: recorded once, against the same trigger, never
	// run.
	resolved := reconcile.Request{ID: "am-resolved", Alert: wireAlert(t, readExample(t, "alert-resolved.json"))}
	if resolved.Alert.Trigger() != trigger {
		t.Fatalf("the resolved notification's trigger %q differs from the firing one's %q", resolved.Alert.Trigger(), trigger)
	}
	res = pass(t, r, resolved)
	if o := outcome(t, res, "am-resolved", "incident-responder"); o.State != reconcile.RequestRecorded {
		t.Fatalf("resolved outcome = %+v", o)
	}
	es = e.entries()
	rs, ok := find(es, ledger.AlertResolved, "incident-responder")
	if !ok || rs.Trigger != trigger || rs.Alert == nil || rs.Alert.Status != "resolved" || rs.Alert.Alerts[0].EndsAt.IsZero() || rs.RunID != "" {
		t.Fatalf("alert.resolved = %+v", rs.Event)
	}

	// And fires again with the same alert: answered by the run it had.
	n = len(es)
	res = pass(t, r, reconcile.Request{ID: "am-again", Alert: wireAlert(t, firingBody)})
	if o := outcome(t, res, "am-again", "incident-responder"); o.State != reconcile.RequestStarted || o.RunID != runID {
		t.Fatalf("outcome after resolution = %+v, want run %s", o, runID)
	}
	es = e.entries()
	if got := len(es); got != n {
		t.Fatalf("the repeat wrote %q", e.events()[n:])
	}
	if c := count(es, ledger.AlertResolved); c != 1 {
		t.Errorf("alert.resolved written %d times", c)
	}
	var runs int
	for _, en := range es {
		if en.Type == ledger.RunStarted && en.Agent == "incident-responder" {
			runs++
		}
	}
	if runs != 1 || len(model.seen()) != 4 {
		t.Errorf("%d incident runs and %d model calls, want 1 and 4", runs, len(model.seen()))
	}

	// Replay feeds the recorded responses through the same tool loop at
	// the recorded spec commit, asks the model nothing, and gets the
	// proposal's tree. Prometheus is gone: the replay takes what the
	// query returned from the transcript.
	stopPrometheus()
	rep, err := r.Replay(ctx, runID, agent.Replay)
	if err != nil {
		t.Fatal(err)
	}
	wantTree := strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", head+"^{tree}"))
	if !rep.Match() || rep.Err != nil || rep.Expected.String() != wantTree {
		t.Fatalf("replay = %+v, want the tree %s", rep, wantTree)
	}
	if len(model.seen()) != 4 {
		t.Errorf("replay asked the model")
	}
	e.verify()
}
