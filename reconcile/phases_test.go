package reconcile_test

import (
	"context"
	"slices"
	"strings"
	"testing"

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
