package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"
	apimeta "k8s.io/apimachinery/pkg/api/meta"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// endpoint is an OpenAI-compatible chat-completions server: it answers
// the n-th request with the n-th answer, an HTTP error status or a
// response, and counts what it served.
type endpoint struct {
	t   *testing.T
	url string

	mu      sync.Mutex
	answers []answer
	served  int
	// in and out are the tokens of the responses it answered with.
	in, out int64
}

type answer struct {
	status int // an error status; 0 answers with resp
	resp   openai.ChatCompletionResponse
}

func newEndpoint(t *testing.T, answers ...answer) *endpoint {
	ep := &endpoint{t: t, answers: answers}
	srv := httptest.NewServer(http.HandlerFunc(ep.serve))
	t.Cleanup(srv.Close)
	ep.url = srv.URL + "/v1"
	return ep
}

func (ep *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if r.URL.Path != "/v1/chat/completions" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if ep.served >= len(ep.answers) {
		ep.t.Errorf("unexpected model request %d", ep.served+1)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, `{"error":{"message":"script exhausted","type":"test"}}`)
		return
	}
	a := ep.answers[ep.served]
	ep.served++
	if a.status != 0 {
		w.WriteHeader(a.status)
		fmt.Fprintf(w, `{"error":{"message":"%s","type":"server_error"}}`, http.StatusText(a.status))
		return
	}
	ep.in += int64(a.resp.Usage.PromptTokens)
	ep.out += int64(a.resp.Usage.CompletionTokens)
	json.NewEncoder(w).Encode(a.resp)
}

func (ep *endpoint) requests() int {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.served
}

// costUSD is what the responses served cost at the example's prices.
func (ep *endpoint) costUSD() float64 {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return (float64(ep.in)*0.15 + float64(ep.out)*0.60) / 1e6
}

// succeeding are the answers of a run that raises the cache TTL.
func succeeding() []answer {
	return []answer{
		{resp: toolCall("1", "edit_file", `{"path":"config/payments-api.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=120s"}`, 1100, 60)},
		{resp: toolCall("2", "finish", `{"summary":"Raise payments-api CACHE_TTL to 120s","rationale":"Hot keys expire between bursts.","risk":"low"}`, 1200, 70)},
	}
}

// flakyEnv is a repository whose only agent is a model agent "flaky" with
// the given limits block, and a reconciler whose openai runner talks to
// ep (the provider's own retries off: one request per model call).
func flakyEnv(t *testing.T, ep *endpoint, limits string) (*env, *reconcile.Reconciler) {
	t.Helper()
	e := newEnv(t, false, func(dir string) {
		onlyAgent(dir, "flaky", `agent "flaky" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Raise the payments-api cache TTL."
  tools    = ["read_file", "edit_file", "finish"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
`+limits+`}
`)
	})
	lookup := func(name string) (string, bool) {
		switch name {
		case "OPENAI_BASE_URL":
			return ep.url, true
		case "OPENAI_API_KEY":
			return "sk-test-retry-0123456789abcdef", true
		}
		return "", false
	}
	runner := &agent.OpenAI{
		NewModel: func(p *hclspec.Provider) (agent.Model, error) {
			return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: lookup, MaxRetries: -1})
		},
		LookupEnv: lookup,
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.Runners = map[string]agent.Runner{hclspec.ProviderOpenAI: runner}
		c.LookupEnv = lookup
	})
	return e, r
}

// runEvents are the ledger's entries about the agent's runs.
func runEvents(es []ledger.Entry, agentName string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range es {
		if en.Agent == agentName {
			out = append(out, en)
		}
	}
	return out
}

func types(es []ledger.Entry) string {
	var out []string
	for _, en := range es {
		out = append(out, en.Type)
	}
	return strings.Join(out, " ")
}

// failingPass runs a pass in which a run of agentName fails: its error
// names the agent and the run.
func failingPass(t *testing.T, r *reconcile.Reconciler, agentName, runID string) {
	t.Helper()
	err := r.Reconcile(context.Background())
	if err == nil {
		t.Fatalf("a pass in which run %s of %s failed returned no error", runID, agentName)
	}
	if !strings.Contains(err.Error(), agentName) || !strings.Contains(err.Error(), runID) {
		t.Errorf("the pass's error %q does not name agent %s and run %s", err, agentName, runID)
	}
}

// A provider that answers 503 twice: the run fails, is retried after 30s,
// fails again, is retried after 60s more, and succeeds; each attempt is
// recorded and its cost counted once.
func TestRetryTransientFailures(t *testing.T) {
	ep := newEndpoint(t, append([]answer{{status: 503}, {status: 503}}, succeeding()...)...)
	e, r := flakyEnv(t, ep, "")
	runID := ""
	if err := r.Reconcile(context.Background()); err == nil {
		t.Fatal("the first attempt's 503 did not fail the pass")
	}
	es := runEvents(e.entries(), "flaky")
	if got := types(es); got != "run.started run.failed" {
		t.Fatalf("events after the first pass: %s", got)
	}
	runID = es[0].RunID
	f1 := es[1]
	if f1.Attempt != 1 || !f1.RetryAfter.Equal(f1.Time.Add(30*time.Second).Truncate(time.Second)) || !strings.Contains(f1.Error, "503") {
		t.Fatalf("run.failed = attempt %d, retry_after %v (failed at %v), error %q; want attempt 1 retried 30s later after a 503",
			f1.Attempt, f1.RetryAfter, f1.Time, f1.Error)
	}

	if c := apimeta.FindStatusCondition(r.Status().Agents["flaky"].Conditions, "Ready"); c == nil || c.Reason != "RetryScheduled" || !strings.Contains(c.Message, "attempt 1 failed") {
		t.Errorf("agent status after a retryable failure = %+v, want RetryScheduled for attempt 1", c)
	}

	// Not before retry_after: a pass does nothing.
	e.now = e.now.Add(10 * time.Second)
	n := len(e.entries())
	e.pass(r)
	if got := len(e.entries()); got != n || ep.requests() != 1 {
		t.Fatalf("a pass before retry_after wrote %d entries and made %d requests", got-n, ep.requests()-1)
	}

	// After it: attempt 2 is claimed, and fails.
	e.now = f1.RetryAfter.Add(time.Second)
	failingPass(t, r, "flaky", runID)
	es = runEvents(e.entries(), "flaky")
	if got := types(es); got != "run.started run.failed run.retried run.failed" {
		t.Fatalf("events after the second attempt: %s", got)
	}
	retried, f2 := es[2], es[3]
	if retried.Attempt != 2 || retried.RunID != runID || retried.Claimant == "" || retried.LeaseUntil.IsZero() ||
		retried.SpecCommit != es[0].SpecCommit || retried.Trigger != es[0].Trigger {
		t.Errorf("run.retried = %+v", retried.Predicate)
	}
	if f2.Attempt != 2 || !f2.RetryAfter.Equal(f2.Time.Add(time.Minute).Truncate(time.Second)) {
		t.Errorf("second run.failed: attempt %d, retry_after %v (failed at %v); want attempt 2 retried 60s later", f2.Attempt, f2.RetryAfter, f2.Time)
	}

	// Attempt 3 succeeds and is proposed.
	e.now = f2.RetryAfter.Add(time.Second)
	e.pass(r)
	es = runEvents(e.entries(), "flaky")
	want := "run.started run.failed run.retried run.failed run.retried run.finished policy.decision proposal.opened"
	if got := types(es); got != want {
		t.Fatalf("events = %s\nwant     %s", got, want)
	}
	if es[4].Attempt != 3 {
		t.Errorf("second run.retried claims attempt %d, want 3", es[4].Attempt)
	}
	for _, en := range es {
		if en.RunID != runID {
			t.Errorf("%s is about run %s, want every attempt in run %s", en.Type, en.RunID, runID)
		}
	}
	if ep.requests() != 4 {
		t.Errorf("%d model requests, want 4 (503, 503, edit, finish)", ep.requests())
	}
	if b := e.branches(); len(b) != 1 || b[0] != reconcile.ProposalBranch("flaky", runID) {
		t.Errorf("branches = %v", b)
	}

	// The cost recorded is what the calls made cost, counted once.
	recorded := 0.0
	for _, en := range es {
		recorded += en.CostUSD
	}
	want6 := fmt.Sprintf("%.8f", ep.costUSD())
	st := r.Ledger().State()
	if fmt.Sprintf("%.8f", recorded) != want6 || fmt.Sprintf("%.8f", st.Run(runID).CostUSD) != want6 ||
		fmt.Sprintf("%.8f", st.Totals.CostUSD["flaky"]["gpt-4o-mini"]) != want6 ||
		fmt.Sprintf("%.8f", st.Spent("flaky", e.now.Add(-time.Hour))) != want6 {
		t.Errorf("recorded cost %.8f, run %.8f, totals %.8f, spent %.8f; the calls cost %s",
			recorded, st.Run(runID).CostUSD, st.Totals.CostUSD["flaky"]["gpt-4o-mini"], st.Spent("flaky", e.now.Add(-time.Hour)), want6)
	}
	if rn := st.Run(runID); rn.Attempt != 3 || rn.Failed != nil || !rn.Settled {
		t.Errorf("run: attempt %d, failed %v, settled %v", rn.Attempt, rn.Failed, rn.Settled)
	}

	// Done: later passes write nothing.
	n = len(e.entries())
	e.now = e.now.Add(time.Hour)
	e.pass(r)
	e.pass(e.reconcilerConfig(nil, nil))
	if got := len(e.entries()); got != n {
		t.Errorf("passes after the run was proposed wrote %d entries", got-n)
	}
	e.verify()
}

// Failures that cannot pass on retry, and retries = 0, fail the run once
// for good.
func TestRetryFinalFailures(t *testing.T) {
	for _, tc := range []struct {
		name, limits string
		status       int
	}{
		{"400 is never retried", "", 400},
		{"401 is never retried", "", 401},
		{"retries = 0", "  limits {\n    retries = 0\n  }\n", 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := newEndpoint(t, append([]answer{{status: tc.status}}, succeeding()...)...)
			e, r := flakyEnv(t, ep, tc.limits)
			if err := r.Reconcile(context.Background()); err == nil {
				t.Fatal("the failed run did not fail the pass")
			}
			for range 3 {
				e.now = e.now.Add(time.Hour)
				e.pass(r)
			}
			es := runEvents(e.entries(), "flaky")
			if got := types(es); got != "run.started run.failed" {
				t.Fatalf("events = %s, want the run to fail once", got)
			}
			if f := es[1]; !f.RetryAfter.IsZero() || f.Attempt != 1 || !strings.Contains(f.Error, fmt.Sprint(tc.status)) {
				t.Errorf("run.failed: attempt %d, retry_after %v, error %q", f.Attempt, f.RetryAfter, f.Error)
			}
			if ep.requests() != 1 {
				t.Errorf("%d model requests, want 1", ep.requests())
			}
		})
	}
}

// retries = 1: after the second failure the run is failed for good.
func TestRetryLimit(t *testing.T) {
	ep := newEndpoint(t, append([]answer{{status: 502}, {status: 502}}, succeeding()...)...)
	e, r := flakyEnv(t, ep, "  limits {\n    retries = 1\n  }\n")
	r.Reconcile(context.Background())
	for range 3 {
		e.now = e.now.Add(time.Hour)
		r.Reconcile(context.Background())
	}
	es := runEvents(e.entries(), "flaky")
	if got := types(es); got != "run.started run.failed run.retried run.failed" {
		t.Fatalf("events = %s", got)
	}
	if f := es[3]; f.Attempt != 2 || !f.RetryAfter.IsZero() {
		t.Errorf("last run.failed: attempt %d, retry_after %v; want the final failure of attempt 2", f.Attempt, f.RetryAfter)
	}
	if ep.requests() != 2 {
		t.Errorf("%d model requests, want 2", ep.requests())
	}
}

// A proposal push the remote refuses (here a pre-receive hook, the first
// two pushes to agents/: with the pass's batching that is the batch and the
// first branch pushed alone) is a lost push: run.failed with a retry_after,
// and the next attempt pushes the same proposal by replaying the run,
// without running the agent again.
func TestLostPushIsRetried(t *testing.T) {
	e := newEnv(t, true, nil)
	count := filepath.Join(t.TempDir(), "refused")
	hook := "#!/bin/sh\nwhile read old new ref; do\n  case $ref in refs/heads/agents/*)\n    n=$(cat " + count + " 2>/dev/null || echo 0)\n    if [ \"$n\" -lt 2 ]; then echo $((n+1)) > " + count + "; echo refused >&2; exit 1; fi;;\n  esac\ndone\nexit 0\n"
	if err := os.WriteFile(filepath.Join(e.bare, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	r := e.reconciler(nil)
	if err := r.Reconcile(context.Background()); err == nil {
		t.Fatal("a pass whose proposal push was refused did not fail")
	}
	var failed []ledger.Entry
	for _, en := range e.entries() {
		if en.Type == ledger.RunFailed {
			failed = append(failed, en)
			if en.RetryAfter.IsZero() || !strings.Contains(en.Error, "push") {
				t.Fatalf("run.failed = %+v, want a retryable lost push; events %q", en.Predicate, e.events())
			}
		}
	}
	if len(failed) == 0 {
		t.Fatalf("no run.failed: %q", e.events())
	}
	e.now = failed[len(failed)-1].RetryAfter.Add(time.Second)
	e.pass(r)
	es := e.entries()
	for _, f := range failed {
		rn := runEvents(es, f.Agent)
		var opened, retried, finished int
		for _, en := range rn {
			switch en.Type {
			case ledger.ProposalOpened:
				opened++
			case ledger.RunRetried:
				retried++
			case ledger.RunFinished:
				finished++
			}
		}
		if opened != 1 || retried != 1 || finished != 1 {
			t.Errorf("%s: %d proposal.opened, %d run.retried, %d run.finished; want 1 each: %s", f.Agent, opened, retried, finished, types(rn))
		}
	}
	if b := e.branches(); len(b) != 2 {
		t.Errorf("branches %v, want both agents' proposals", b)
	}
	e.verify()
}
