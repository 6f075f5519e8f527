package reconcile

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// outcomeOf reads each way a proposal ends from the run's entries, as
// the fold leaves them.
func TestOutcomeOf(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 11, 17, 10, min, 0, 0, time.UTC) }
	entry := func(typ string, min int, edit func(*ledger.Entry)) *ledger.Entry {
		e := &ledger.Entry{}
		e.Type, e.Time = typ, at(min)
		if edit != nil {
			edit(e)
		}
		return e
	}
	finished := func(outcome string) *ledger.Entry {
		return entry(ledger.RunFinished, 1, func(e *ledger.Entry) {
			e.Outcome = outcome
			e.Summary = "run.finished tuner abc: same change as rejected proposal def, not proposed again"
			e.Change = &ledger.Change{ID: "c1", Files: []string{"config/a.env"}}
		})
	}
	decision := func(d policy.Decision) *ledger.Entry {
		b, _ := json.Marshal(d)
		return entry(ledger.PolicyDecision, 2, func(e *ledger.Entry) { e.Decision = b })
	}
	opened := entry(ledger.ProposalOpened, 3, nil)
	tests := []struct {
		name    string
		run     ledger.Run
		outcome string
		detail  string
		when    time.Time
		skip    bool
	}{
		{name: "merged", run: ledger.Run{Finished: finished(OutcomeChanged), Opened: opened,
			Closed: entry(ledger.ProposalMerged, 9, func(e *ledger.Entry) {
				e.Proposal = &ledger.Proposal{MergeCommit: "0123456789abcdef0123456789abcdef01234567"}
			})},
			outcome: agent.OutcomeMerged, detail: "merged by a reviewer in 0123456789ab", when: at(9)},
		{name: "rejected", run: ledger.Run{Finished: finished(OutcomeChanged), Opened: opened, Closed: entry(ledger.ProposalRejected, 8, nil)},
			outcome: agent.OutcomeRejected, detail: "closed without merge: a reviewer rejected it (its branch was deleted); it is never proposed again", when: at(8)},
		{name: "superseded", run: ledger.Run{Finished: finished(OutcomeChanged), Opened: opened,
			Closed: entry(ledger.ProposalSuperseded, 7, func(e *ledger.Entry) { e.Summary = "proposal.superseded tuner abc by def" })},
			outcome: agent.OutcomeSuperseded, detail: "superseded: tuner abc by def", when: at(7)},
		{name: "denied", run: ledger.Run{Finished: finished(OutcomeChanged), Decision: decision(policy.Decision{Outcome: policy.Deny, Summary: "deny protect/cache",
			Rules: []policy.Rule{{Policy: "protect", Rule: "cache", Message: "the cache must stay on"}}})},
			outcome: agent.OutcomeDenied, detail: "denied by policy, never proposed: deny protect/cache; protect/cache: the cache must stay on", when: at(2)},
		{name: "open", run: ledger.Run{Finished: finished(OutcomeChanged), Decision: decision(policy.Decision{Outcome: "require_approval", Summary: "require_approval default (1 reviewer)"}), Opened: opened},
			outcome: agent.OutcomeOpen, detail: "awaiting review: require_approval default (1 reviewer)", when: at(3)},
		{name: "violation", run: ledger.Run{Finished: finished(OutcomeChanged), Opened: opened, Violation: true, Closed: entry(ledger.ProposalMerged, 9, nil)},
			outcome: agent.OutcomeViolation, detail: "a policy violation is recorded on it: a merge or squash that did not satisfy its decision, or a foreign branch on its name; the proposal was then merged", when: at(9)},
		{name: "repeated", run: ledger.Run{Finished: finished(OutcomeDuplicateRejected)},
			outcome: agent.OutcomeRepeated, detail: "same change as rejected proposal def, not proposed again", when: at(1)},
		{name: "no change", run: ledger.Run{Finished: finished(OutcomeNoChange)}, skip: true},
		{name: "failed", run: ledger.Run{Failed: entry(ledger.RunFailed, 1, nil)}, skip: true},
		{name: "finished, not yet decided", run: ledger.Run{Finished: finished(OutcomeChanged)}, skip: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run.ID = "abc"
			o, ok := outcomeOf(&tt.run)
			if ok == tt.skip {
				t.Fatalf("outcomeOf = %+v, %v; want ok %v", o, ok, !tt.skip)
			}
			if tt.skip {
				return
			}
			if o.Outcome != tt.outcome || o.Detail != tt.detail || !o.Time.Equal(tt.when) || o.RunID != "abc" || len(o.Files) != 1 {
				t.Errorf("outcomeOf = %+v\nwant outcome %q detail %q at %s", o, tt.outcome, tt.detail, tt.when)
			}
		})
	}
}

// A merged change that a merged revert took back is recalled as reverted;
// one whose revert is still open stays merged.
func TestMarkReverted(t *testing.T) {
	merged := func(id string) *ledger.Entry {
		e := &ledger.Entry{}
		e.Type, e.RunID = ledger.ProposalMerged, id
		return e
	}
	runs := []*ledger.Run{
		{ID: "orig", Closed: merged("orig")},
		{ID: "kept", Closed: merged("kept")},
		{ID: "rev", Reverts: "orig", Closed: merged("rev")},
		{ID: "pending", Reverts: "kept"},
	}
	out := []agent.Outcome{{RunID: "orig", Outcome: agent.OutcomeMerged, Detail: "merged by a reviewer"},
		{RunID: "kept", Outcome: agent.OutcomeMerged, Detail: "merged by a reviewer"}}
	markReverted(runs, out)
	if out[0].Outcome != agent.OutcomeReverted || out[0].Detail != "merged by a reviewer; then reverted by run rev (merged): people took it back, and it is never proposed again" {
		t.Errorf("reverted run = %+v", out[0])
	}
	if out[1].Outcome != agent.OutcomeMerged {
		t.Errorf("a run whose revert is not merged = %+v, want merged", out[1])
	}
}

// memory picks the newest outcomes by outcomeAt alone and builds the
// words of those only: the same outcomes, in the same order, as building
// every one and sorting, also past maxMemory, and never the run itself or
// another agent's.
func TestMemoryNewestFirst(t *testing.T) {
	s := outcomeState(t, 3*maxMemory+7)
	r := &Reconciler{}
	p := &pass{state: s}
	a := &hclspec.Agent{Name: "tuner", Tools: []string{hclspec.ToolRecall}}
	self := s.Runs[len(s.Runs)-2].ID
	got := r.memory(p, a, self)
	var all []agent.Outcome
	for _, rn := range s.AgentRuns("tuner") {
		if o, ok := outcomeOf(rn); ok && rn.ID != self {
			all = append(all, o)
		}
	}
	slices.SortStableFunc(all, func(x, y agent.Outcome) int { return cmp.Or(y.Time.Compare(x.Time), strings.Compare(x.RunID, y.RunID)) })
	all = all[:maxMemory]
	if len(got) != maxMemory {
		t.Fatalf("%d outcomes, want %d", len(got), maxMemory)
	}
	for i := range all {
		if got[i].RunID != all[i].RunID || got[i].Outcome != all[i].Outcome || !got[i].Time.Equal(all[i].Time) || len(got[i].Comments) != len(all[i].Comments) {
			t.Errorf("outcome %d = %s %s %s, want %s %s %s", i, got[i].RunID, got[i].Outcome, got[i].Time, all[i].RunID, all[i].Outcome, all[i].Time)
		}
		if got[i].RunID == self {
			t.Errorf("the run itself is in its memory")
		}
	}
	if r.memory(p, &hclspec.Agent{Name: "other", Tools: []string{hclspec.ToolRecall}}, "") != nil {
		t.Errorf("another agent recalls tuner's runs")
	}
}
