package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// meteredRunner stands in for a hosted model, which cannot run here: it
// changes a file and reports the tokens a model would have used.
type meteredRunner struct{ in, out int64 }

func (m meteredRunner) Run(_ context.Context, t agent.Task) (agent.Result, error) {
	err := os.WriteFile(filepath.Join(t.Dir, "config", "tuned.env"), []byte("RUN="+t.RunID+"\n"), 0o644)
	return agent.Result{Summary: "Tune config", Model: t.Agent.Model, Usage: agent.Usage{InputTokens: m.in, OutputTokens: m.out}}, err
}

func (e *env) reconcilerWith(runners map[string]agent.Runner) *reconcile.Reconciler {
	e.t.Helper()
	return e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Runners = runners })
}

func onlyAgent(dir, name, src string) {
	os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
	os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
	os.WriteFile(filepath.Join(dir, "agents", name+".hcl"), []byte(src), 0o644)
}

func TestBudgetExceededAcrossRestart(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		onlyAgent(dir, "tuner", `agent "tuner" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Tune the config."
  trigger {
    schedule = "@every 1h"
  }
  scope {
    paths = ["config/**"]
  }
  limits {
    max_tokens = 1000000
  }
}
`)
		os.WriteFile(filepath.Join(dir, "policies/spend.hcl"), []byte(`policy "spend" {
  applies_to = ["tuner"]
  budget {
    max_cost_usd_per_day = 1
  }
}
`), 0o644)
	})
	// 2M input tokens at $0.15 and 0.5M output at $0.60: $0.60 a run; each
	// run reserves 1M tokens at $0.60 = $0.60 before it starts.
	runners := map[string]agent.Runner{"openai": meteredRunner{in: 2_000_000, out: 500_000}}
	e.now = time.Date(2026, 11, 17, 22, 10, 0, 0, time.UTC)
	r := e.reconcilerWith(runners)
	e.pass(r)
	es := e.entries()
	started, _ := find(es, ledger.RunStarted, "tuner")
	finished, _ := find(es, ledger.RunFinished, "tuner")
	if started.ReservedUSD != 0.6 || fmt.Sprintf("%.2f", finished.CostUSD) != "0.60" {
		t.Fatalf("reserved %v, cost %v", started.ReservedUSD, finished.CostUSD)
	}

	// The next slot: $0.60 spent + $0.60 reserved > $1.
	e.now = e.now.Add(time.Hour)
	n := len(e.entries())
	e.pass(r)
	es = e.entries()
	if len(es) != n+1 || es[n].Type != ledger.BudgetExceeded {
		t.Fatalf("events after the second slot: %q", e.events()[n:])
	}
	h := es[n].Hold
	if h.Kind != "cost_per_day" || h.Policy != "spend" || !h.Until.Equal(time.Date(2026, 11, 18, 0, 0, 0, 0, time.UTC)) ||
		!strings.Contains(es[n].Summary, "budget.exceeded tuner: cost_per_day until 2026-11-18T00:00:00Z") {
		t.Errorf("hold = %+v; summary %q", h, es[n].Summary)
	}

	// Held again, by the same process and by a restarted one: nothing new.
	e.pass(r)
	e.now = e.now.Add(10 * time.Minute)
	e.pass(e.reconcilerWith(runners))
	if got := len(e.entries()); got != n+1 {
		t.Errorf("repeated holds wrote %q", e.events()[n+1:])
	}

	// A new day: the budget has room again.
	e.now = time.Date(2026, 11, 18, 0, 5, 0, 0, time.UTC)
	e.pass(e.reconcilerWith(runners))
	es = e.entries()
	if last := es[len(es)-1]; last.Type != ledger.ProposalOpened && last.Type != ledger.RunFinished && last.Type != ledger.ProposalSuperseded {
		t.Errorf("the next day did not run: %q", e.events()[n+1:])
	}
	if c := count(es, ledger.RunStarted); c != 2 {
		t.Errorf("%d runs started, want 2", c)
	}
	e.verify()
}

func TestFreezeHoldsRuns(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.WriteFile(filepath.Join(dir, "policies/freeze.hcl"), []byte(`policy "change-freeze" {
  applies_to = ["*"]
  freeze "weekend" {
    cron     = "0 16 * * FRI"
    duration = "64h"
    timezone = "Europe/Berlin"
  }
}
`), 0o644)
	})
	// Saturday: frozen until Monday 08:00 Berlin (07:00 UTC).
	e.now = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	r := e.reconciler(nil)
	e.pass(r)
	e.pass(r)
	es := e.entries()
	if c := count(es, ledger.RunHeld); c != 2 {
		t.Fatalf("%d run.held entries, want one per agent: %q", c, e.events())
	}
	if c := count(es, ledger.RunStarted); c != 0 {
		t.Fatalf("a run started during the freeze: %q", e.events())
	}
	held, _ := find(es, ledger.RunHeld, "image-pinner")
	if held.Hold.Kind != "freeze" || held.Hold.Rule != "weekend" || !held.Hold.Until.Equal(time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)) {
		t.Errorf("hold = %+v", held.Hold)
	}
	if b := e.branches(); len(b) != 0 {
		t.Errorf("proposals during a freeze: %v", b)
	}
	if st := r.Status().Agents["image-pinner"]; st.Held == nil || ready(st.Conditions).Reason != "Held" || !strings.Contains(ready(st.Conditions).Message, "freeze change-freeze/weekend") {
		t.Errorf("status = %+v", st)
	}
	// Monday after the freeze: the agents run.
	e.now = time.Date(2026, 11, 23, 7, 30, 0, 0, time.UTC)
	e.pass(r)
	if b := e.branches(); len(b) != 2 {
		t.Errorf("branches after the freeze = %v", b)
	}
}

func TestSoftDenyOverride(t *testing.T) {
	for _, tt := range []struct {
		name      string
		merger    [2]string
		trailer   string
		violation string
	}{
		{"overridden by an SRE", [2]string{"Rita Reviewer", "rita@example.com"}, "Policy-Override: change-window/prod-images", ""},
		{"merged without the override", [2]string{"Rita Reviewer", "rita@example.com"}, "", "soft rule change-window/prod-images was not overridden"},
		{"overridden by someone not allowed", [2]string{"Paula", "paula@example.com"}, "Policy-Override: change-window/prod-images", "who is not in sre"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, func(dir string) {
				os.WriteFile(filepath.Join(dir, "policies/change-window.hcl"), []byte(`policy "change-window" {
  applies_to  = ["image-pinner"]
  enforcement = "soft"
  deny "prod-images" {
    condition = anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])
    message   = "production images change in the Tuesday window; override if this cannot wait"
  }
}
`), 0o644)
			})
			r := e.reconciler(nil)
			e.pass(r)
			opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
			if !ok || !strings.Contains(opened.Summary, "override change-window/prod-images") {
				t.Fatalf("soft-denied change not proposed for override: %q", e.events())
			}
			msg := "Merge " + opened.Proposal.Branch
			if tt.trailer != "" {
				msg += "\n\n" + tt.trailer
			}
			work := e.clone()
			e.gitAs(tt.merger[0], tt.merger[1], work, "merge", "-q", "--no-ff", "-m", msg, "origin/"+opened.Proposal.Branch)
			e.git(work, "push", "-q", "origin", "main")
			e.pass(r)
			es := e.entries()
			v, violated := find(es, ledger.PolicyViolation, "image-pinner")
			switch {
			case tt.violation == "" && violated:
				t.Errorf("override recorded as a violation: %s", v.Error)
			case tt.violation != "" && (!violated || !strings.Contains(v.Error, tt.violation)):
				t.Errorf("violation = %q, want %q", v.Error, tt.violation)
			}
			if tt.violation == "" {
				a, _ := find(es, ledger.ProposalApproved, "image-pinner")
				if len(a.Overrides) != 1 || a.Overrides[0] != "change-window/prod-images" {
					t.Errorf("approval overrides = %v", a.Overrides)
				}
			}
		})
	}
}

// Two reconcilers racing on one repository never start more runs than a
// money budget allows: the reservation is appended with the gate checked
// against the ledger it lands on.
func TestBudgetHoldsAcrossConcurrentReconcilers(t *testing.T) {
	agentSrc := func(name string) string {
		return `agent "` + name + `" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Tune the config."
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
  limits {
    max_tokens = 1000000
  }
}
`
	}
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			e := newEnv(t, true, func(dir string) {
				onlyAgent(dir, "tuner-a", agentSrc("tuner-a"))
				os.WriteFile(filepath.Join(dir, "agents/tuner-b.hcl"), []byte(agentSrc("tuner-b")), 0o644)
				os.WriteFile(filepath.Join(dir, "policies/spend.hcl"), []byte(`policy "spend" {
  applies_to = ["tuner-*"]
  budget {
    max_cost_usd_per_day = 1
  }
}
`), 0o644)
			})
			runners := map[string]agent.Runner{"openai": meteredRunner{in: 2_000_000, out: 500_000}}
			r1, r2 := e.reconcilerWith(runners), e.reconcilerWith(runners)
			done := make(chan error, 2)
			for _, r := range []*reconcile.Reconciler{r1, r2} {
				go func() { done <- r.Reconcile(context.Background()) }()
			}
			for range 2 {
				if err := <-done; err != nil && !strings.Contains(err.Error(), "remote ref changed") {
					t.Logf("pass: %v", err)
				}
			}
			e.pass(e.reconcilerWith(runners))
			es := e.entries()
			agents := map[string]bool{}
			for _, en := range es {
				if en.Type == ledger.RunStarted {
					agents[en.Agent] = true
				}
			}
			if len(agents) != 1 {
				t.Fatalf("runs started for %v; the $1 budget allows one $0.60 reservation: %q", agents, e.events())
			}
			if count(es, ledger.BudgetExceeded) != 1 {
				t.Errorf("budget.exceeded recorded %d times: %q", count(es, ledger.BudgetExceeded), e.events())
			}
			e.verify()
		})
	}
}

// A policy made stricter while a proposal is open applies to its merge.
func TestOpenProposalIsRedecided(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	opened, _ := find(e.entries(), ledger.ProposalOpened, "image-pinner")
	e.commitAs("Platform Team", "platform@example.com", "Production needs two SREs", func(work string) {
		p := filepath.Join(work, "policies/protect-prod.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), "min       = 1", "min       = 2", 1)), 0o644)
	})
	e.pass(r)
	// Agents run in parallel: the open proposal's new decision is its
	// run's last entry, wherever the other agent's entries fall.
	var last ledger.Entry
	for _, en := range e.entries() {
		if en.RunID == opened.RunID {
			last = en
		}
	}
	if last.Type != ledger.PolicyDecision || last.Seq <= opened.Seq || !strings.Contains(last.Summary, "(2 of sre)") {
		t.Fatalf("no new decision for the open proposal: %q", e.events())
	}
	if b := e.branches(); len(b) != 2 {
		t.Errorf("branches = %v", b)
	}
	// One SRE's merge no longer satisfies it.
	e.mergeAs("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, "--no-ff")
	e.pass(r)
	v, ok := find(e.entries(), ledger.PolicyViolation, "image-pinner")
	if !ok || !strings.Contains(v.Error, "needs 2 of sre, has 1") {
		t.Errorf("violation = %+v", v.Predicate)
	}
}
