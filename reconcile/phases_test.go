package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// TestPhasesOneByOne drives one run through its phases one call at a time,
// each by a reconciler of its own (a process restarted between phases,
// with the same claimant), and checks that each phase writes exactly its
// entries and that a full pass afterwards adds nothing for the run.
func TestPhasesOneByOne(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := context.Background()
	const agentName = "image-pinner"
	runEvents := func() []string {
		var out []string
		for _, en := range e.entries() {
			if en.Agent == agentName && en.RunID != "" {
				out = append(out, en.Type)
			}
		}
		return out
	}
	want := []string{}
	for _, step := range []struct {
		phase reconcile.Phase
		adds  []string
	}{
		{reconcile.PhaseStart, []string{ledger.RunStarted}},
		{reconcile.PhaseRun, []string{ledger.RunFinished}},
		{reconcile.PhaseDecide, []string{ledger.PolicyDecision}},
		{reconcile.PhasePropose, []string{ledger.ProposalOpened}},
	} {
		r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Claimant = "test-process" })
		if err := r.Advance(ctx, agentName, step.phase); err != nil {
			t.Fatalf("Advance(%s): %v", step.phase, err)
		}
		want = append(want, step.adds...)
		if got := runEvents(); !slices.Equal(got, want) {
			t.Fatalf("after %s: run entries %q, want %q", step.phase, got, want)
		}
		hasBranch := slices.ContainsFunc(e.branches(), func(b string) bool { return strings.HasPrefix(b, "agents/"+agentName+"/") })
		if hasBranch != (step.phase == reconcile.PhasePropose) {
			t.Fatalf("after %s: proposal branch exists = %v; branches %q", step.phase, hasBranch, e.branches())
		}
	}
	opened, _ := find(e.entries(), ledger.ProposalOpened, agentName)
	if got := e.git(e.bare, "rev-parse", opened.Proposal.Branch); got != opened.Proposal.Head {
		t.Errorf("branch at %s, proposal.opened says %s", got, opened.Proposal.Head)
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Claimant = "test-process" })
	e.pass(r)
	if got := runEvents(); !slices.Equal(got, want) {
		t.Errorf("a full pass after the phases added entries for the run: %q, want %q", got, want)
	}
	if err := r.Advance(ctx, "no-such-agent", reconcile.PhaseStart); err == nil {
		t.Error("Advance of an agent that is not in the spec succeeded")
	}
	e.verify()
}

// TestFinishedModelRunResumesByReplay stops a model run after PhaseRun and
// finishes it in a restarted reconciler whose model has nothing left to
// say: the proposal is built by replaying the recorded transcript, never by
// asking (and paying) the model again, and it is the same proposal.
func TestFinishedModelRunResumesByReplay(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		p := filepath.Join(dir, "agents/incident-responder.hcl")
		b, _ := os.ReadFile(p)
		src := strings.Replace(string(b), "trigger {\n    on_alert {", "trigger {\n    on_spec_change = true\n  }\n  trigger {\n    on_alert {", 1)
		os.WriteFile(p, []byte(src), 0o644)
	})
	t.Setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnopqrstuvwxyz012345")
	ctx := context.Background()
	withModel := func(m *scripted) *reconcile.Reconciler {
		runner := &agent.OpenAI{NewModel: func(*hclspec.Provider) (agent.Model, error) { return m, nil }}
		return e.reconcilerConfig(nil, func(c *reconcile.Config) {
			c.Runners = map[string]agent.Runner{"openai": runner}
			c.Claimant = "test-process"
		})
	}
	first := incidentScript()
	if err := withModel(first).Advance(ctx, "incident-responder", reconcile.PhaseRun); err != nil {
		t.Fatal(err)
	}
	if len(first.requests) != 3 {
		t.Fatalf("the run made %d model calls, want 3", len(first.requests))
	}
	silent := &scripted{}
	if err := withModel(silent).Advance(ctx, "incident-responder", reconcile.PhasePropose); err != nil {
		t.Fatal(err)
	}
	if len(silent.requests) != 0 {
		t.Errorf("resuming the finished run asked the model %d time(s)", len(silent.requests))
	}
	opened, ok := find(e.entries(), ledger.ProposalOpened, "incident-responder")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	diff := e.git("", "--git-dir", e.bare, "diff", "main", opened.Proposal.Branch)
	if !strings.Contains(diff, "+CACHE_TTL=120s") {
		t.Errorf("proposal diff:\n%s", diff)
	}
	msg := e.git("", "--git-dir", e.bare, "log", "-1", "--format=%B", opened.Proposal.Branch)
	if !strings.HasPrefix(msg, "Raise payments-api CACHE_TTL to 120s") {
		t.Errorf("proposal message:\n%s", msg)
	}
	if n := count(e.entries(), ledger.RunFinished); n != 1 {
		t.Errorf("%d run.finished entries, want 1", n)
	}
	e.verify()
}
