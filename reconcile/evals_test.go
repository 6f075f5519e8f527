package reconcile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/eval/evaltest"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// evalGateEnv is the example with one more agent, "tuner", an exec agent
// that rewrites the incident-responder's prompt, and a policy that lets
// such a change through with an SRE's approval unless the
// incident-responder's evals fail on it.
func evalGateEnv(t *testing.T) *env {
	return newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		os.WriteFile(filepath.Join(dir, "agents/tuner.hcl"), []byte(`agent "tuner" {
  provider = provider.exec.local
  command  = ["sh", "tools/tune.sh"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["prompts/incident-responder.md"]
  }
}
`), 0o644)
		os.WriteFile(filepath.Join(dir, "tools/tune.sh"), []byte("printf '\\nPrefer the smallest config change.\\n' >> prompts/incident-responder.md\necho 'Tune the incident prompt'\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "policies/evals.hcl"), []byte(`policy "prompt-evals" {
  applies_to  = ["tuner"]
  enforcement = "hard"

  require_approval "prompts" {
    condition             = anytrue([for f in change.files : glob(f.path, "prompts/**")])
    reviewers             = ["sre"]
    min                   = 1
    allow_control_changes = true
  }

  deny "evals" {
    condition = change.evals.failed > 0
    message   = "the prompt change fails the agent's evals"
  }
}
`), 0o644)
	})
}

func evalGateReconciler(e *env, srv *evaltest.Server) *reconcile.Reconciler {
	runners := map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: srv.LookupEnv, MaxRetries: -1})
			},
			LookupEnv: srv.LookupEnv,
		},
	}
	return e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Runners, c.LookupEnv = runners, srv.LookupEnv })
}

func evalDecision(t *testing.T, en ledger.Entry) policy.Decision {
	t.Helper()
	var d policy.Decision
	if err := json.Unmarshal(en.Decision, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// A proposal that changes an agent's prompt gets that agent's evals run
// against the provider (a scripted server on 127.0.0.1: a hosted model
// cannot run here; the committed recording is stale for the new prompt)
// before it is decided: a failing eval denies it through
// change.evals.failed, and the decision entry records the outcome and
// what the evals spent.
func TestEvalsGateAPromptChange(t *testing.T) {
	e := evalGateEnv(t)
	// The model reads the config and stops: the scenario expects a change.
	srv := evaltest.NewServer(t,
		evaltest.ToolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 1500, 40),
		evaltest.ToolCall("2", "finish", `{"summary":"Nothing to change","rationale":"looks fine","risk":"low"}`, 1600, 30),
	)
	r := evalGateReconciler(e, srv)
	e.pass(r)
	dec, ok := find(e.entries(), ledger.PolicyDecision, "tuner")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	d := evalDecision(t, dec)
	if d.Outcome != policy.Deny || !strings.Contains(d.Summary, "prompt-evals/evals") {
		t.Errorf("decision %s: %s, want a denial by prompt-evals/evals", d.Outcome, d.Summary)
	}
	ev := dec.Evals
	if ev == nil || ev.Passed != 0 || ev.Failed != 1 || strings.Join(ev.Agents, ",") != "incident-responder" {
		t.Fatalf("evals recorded: %+v", ev)
	}
	joined := strings.Join(ev.Failures, "\n")
	for _, want := range []string{
		`incident-responder/latency alert raises the cache TTL: evals/incident-responder/latency.hcl:12:21: no changed file matches "config/payments-api.env"; the run changed nothing`,
		`evals/incident-responder/latency.hcl:14:21: no changed file contains "CACHE_TTL=120s"`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("failures lack %q:\n%s", want, joined)
		}
	}
	wantCost := (3100*0.15 + 70*0.60) / 1e6
	if !near(ev.SpentUSD, wantCost) || !near(ev.CostUSD, wantCost) || !near(dec.CostUSD, wantCost) {
		t.Errorf("spent %v cost %v entry cost %v, want %v", ev.SpentUSD, ev.CostUSD, dec.CostUSD, wantCost)
	}
	// The tuner's exec run cost nothing: what its decision spent on the
	// evals is what its money budgets count.
	if spent := r.Ledger().State().Spent("tuner", time.Time{}); !near(spent, wantCost) {
		t.Errorf("the tuner's budget counts $%v, want the evals' $%v", spent, wantCost)
	}
	if srv.Left() != 0 || len(srv.Requests()) != 2 {
		t.Errorf("the provider answered %d requests, %d left", len(srv.Requests()), srv.Left())
	}
	if strings.Contains(srv.Requests()[0].Messages[0].Content, "Prefer the smallest config change.") == false {
		t.Error("the evals did not run the proposed prompt")
	}
	if b := e.branches(); len(b) != 0 {
		t.Errorf("a denied change was proposed: %v", b)
	}
	e.verify()
}

// The same change with a model that does what the scenario expects
// passes its evals and waits for the SRE the policy names; the outcome is
// in the decision entry, and deciding again (a spec change) keeps it.
func TestEvalsPassAndAreKeptOnRedecision(t *testing.T) {
	e := evalGateEnv(t)
	b, err := os.ReadFile("../examples/incident/conversation.json")
	if err != nil {
		t.Fatal(err)
	}
	var script []openai.ChatCompletionResponse
	if err := json.Unmarshal(b, &script); err != nil {
		t.Fatal(err)
	}
	srv := evaltest.NewServer(t, script...)
	r := evalGateReconciler(e, srv)
	e.pass(r)
	dec, ok := find(e.entries(), ledger.PolicyDecision, "tuner")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	if d := evalDecision(t, dec); d.Outcome != policy.RequireApproval || !strings.Contains(d.Summary, "sre") {
		t.Errorf("decision %s: %s", d.Outcome, d.Summary)
	}
	if ev := dec.Evals; ev == nil || ev.Passed != 1 || ev.Failed != 0 || len(ev.Failures) != 0 || ev.SpentUSD <= 0 {
		t.Fatalf("evals recorded: %+v", dec.Evals)
	}
	if _, ok := find(e.entries(), ledger.ProposalOpened, "tuner"); !ok {
		t.Fatalf("no proposal: %q", e.events())
	}

	// A person tightens the policy: the open proposal is decided again
	// with the evals its decision ran, not zero, and no model is asked.
	e.commitAs("Rita", "rita@example.com", "deny passing evals too", func(work string) {
		p := filepath.Join(work, "policies/evals.hcl")
		src, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(src), "change.evals.failed > 0", "change.evals.passed > 0", 1)), 0o644)
	})
	e.pass(r)
	var last ledger.Entry
	for _, en := range e.entries() {
		if en.Type == ledger.PolicyDecision && en.Agent == "tuner" {
			last = en
		}
	}
	if d := evalDecision(t, last); last.Seq == dec.Seq || d.Outcome != policy.Deny {
		t.Errorf("re-decision %d: %s %s, want a denial by the evals recorded on %d", last.Seq, d.Outcome, d.Summary, dec.Seq)
	}
	if srv.Left() != 0 {
		t.Errorf("%d responses left", srv.Left())
	}
	e.verify()
}

// A change that alters the provider's endpoint is not evaluated live: the
// provider's key would go where the change says. Without a recording its
// scenarios fail.
func TestEvalsOfAnAlteredProviderOnlyReplay(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		os.WriteFile(filepath.Join(dir, "agents/mover.hcl"), []byte(`agent "mover" {
  provider = provider.exec.local
  command  = ["sh", "tools/move.sh"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["providers.hcl"]
  }
}
`), 0o644)
		os.WriteFile(filepath.Join(dir, "tools/move.sh"), []byte("sed -i 's|base_url    = env(\"OPENAI_BASE_URL\")|base_url    = \"http://127.0.0.1:9/v1\"|' providers.hcl\necho 'Move the endpoint'\n"), 0o644)
	})
	srv := evaltest.NewServer(t)
	r := evalGateReconciler(e, srv)
	e.pass(r)
	dec, ok := find(e.entries(), ledger.PolicyDecision, "mover")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	ev := dec.Evals
	if ev == nil || ev.Failed != 1 || !strings.Contains(strings.Join(ev.Failures, "\n"), "no recording for this scenario") {
		t.Fatalf("evals recorded: %+v", ev)
	}
	if len(srv.Requests()) != 0 {
		t.Errorf("the provider was asked %d times", len(srv.Requests()))
	}
}

func near(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }
