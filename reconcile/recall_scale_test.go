package reconcile

import (
	"cmp"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/ledger/ledgergen"
)

// memory visits only the newest runs, and stops early; it must still
// give exactly what a scan of every run of the agent gives (the code it
// replaced, memoryScan below): on histories whose proposals end long
// after later runs started (an old proposal merged today is a new
// outcome), with denied, rejected, superseded, open and merged ones,
// reverts merged and not, runs of other agents, and a clock that
// sometimes goes back (two reconcilers).
func TestMemoryEqualsTheScan(t *testing.T) {
	kinds := map[string]int{}
	defer func() {
		for _, k := range []string{agent.OutcomeReverted, agent.OutcomeOpen, agent.OutcomeMerged, agent.OutcomeDenied, agent.OutcomeRejected, agent.OutcomeRepeated} {
			if kinds[k] == 0 {
				t.Errorf("the newest outcomes are %v; the test needs %s ones", kinds, k)
			}
		}
	}()
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			h := ledgergen.NewHistory(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
			apply := func(ev ledger.Event) {
				t.Helper()
				now := h.Time.Add(time.Duration(rng.IntN(30)-5) * time.Minute)
				h.Time = now
				if rng.IntN(8) == 0 {
					h.Time = now.Add(-6 * time.Hour) // a reconciler whose clock is late
				}
				if err := h.Apply(ev, [20]byte{}); err != nil {
					t.Fatal(err)
				}
				h.Time = now
			}
			agents := []string{benchTuner, benchTuner, "other"}
			type open struct{ id, agent string }
			var pending []open
			var merged []open
			for i := range 600 {
				if len(pending) > 0 && rng.IntN(6) == 0 {
					// A person pushes to an open proposal: decided again
					// later than the outcome's time (its opening).
					o := pending[rng.IntN(len(pending))]
					apply(ledger.Event{Type: ledger.ProposalUpdated, Agent: o.agent, RunID: o.id,
						Proposal: &ledger.Proposal{Branch: "agents/" + o.agent + "/" + o.id, Head: strings.Repeat("e", 40), PreviousHead: strings.Repeat("a", 40)},
						Change:   &ledger.Change{ID: "pushed", Files: []string{"config/a.env"}},
						Decision: []byte(`{"outcome":"require_approval","summary":"require_approval p/r (1 of sre)"}`)})
					continue
				}
				if len(pending) > 0 && rng.IntN(2) == 0 {
					// An older proposal ends now.
					k := rng.IntN(len(pending))
					o := pending[k]
					pending = slices.Delete(pending, k, k+1)
					base := ledger.Event{Agent: o.agent, RunID: o.id, Proposal: &ledger.Proposal{Branch: "agents/" + o.agent + "/" + o.id, Head: strings.Repeat("a", 40), MergeCommit: strings.Repeat("b", 40)}}
					switch rng.IntN(4) {
					case 0, 1:
						base.Type = ledger.ProposalMerged
						merged = append(merged, o)
					case 2:
						base.Type = ledger.ProposalRejected
					default:
						base.Type = ledger.ProposalSuperseded
					}
					apply(base)
					continue
				}
				agent := agents[rng.IntN(len(agents))]
				id := ledgergen.RunID("scale", i)
				base := ledger.Event{Agent: agent, RunID: id, Trigger: fmt.Sprint("manual:", i), SpecCommit: strings.Repeat("c", 40), SpecDigest: "d"}
				if len(merged) > 0 && rng.IntN(3) == 0 {
					if m := merged[max(0, len(merged)-1-rng.IntN(5))]; m.agent == agent {
						base.Reverts = m.id
					}
				}
				ev := base
				ev.Type, ev.Claimant = ledger.RunStarted, "r"
				apply(ev)
				ev = base
				ev.Type, ev.Outcome = ledger.RunFinished, OutcomeChanged
				if rng.IntN(8) == 0 {
					ev.Outcome = OutcomeDuplicateRejected
				}
				ev.Change, ev.Summary = &ledger.Change{ID: fmt.Sprint("c", rng.IntN(50)), Files: []string{"config/a.env"}}, fmt.Sprintf("run.finished %s %s: change %d", agent, id, i)
				apply(ev)
				if ev.Outcome == OutcomeDuplicateRejected {
					continue
				}
				ev = base
				ev.Type = ledger.PolicyDecision
				ev.Decision = []byte(`{"outcome":"require_approval","summary":"require_approval p/r (1 of sre)"}`)
				if rng.IntN(6) == 0 {
					ev.Decision = []byte(`{"outcome":"deny","summary":"deny p/r","rules":[{"policy":"p","rule":"r","message":"no"}]}`)
					apply(ev)
					continue
				}
				apply(ev)
				ev = base
				ev.Type, ev.Proposal = ledger.ProposalOpened, &ledger.Proposal{Branch: "agents/" + agent + "/" + id, Head: strings.Repeat("a", 40)}
				apply(ev)
				pending = append(pending, open{id, agent})
			}
			r := &Reconciler{log: slog.New(slog.DiscardHandler)}
			p := &pass{state: h.State}
			a := &hclspec.Agent{Name: benchTuner, Tools: []string{hclspec.ToolRecall}}
			for _, self := range []string{"ffffffffffff", h.State.AgentRuns(benchTuner)[3].ID} {
				got, want := r.memory(p, a, self), memoryScan(h.State, benchTuner, self)
				if len(want) != maxMemory {
					t.Fatalf("the scan gives %d outcomes; the history must have more than %d", len(want), maxMemory)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("memory differs from the scan:\n got %v\nwant %v", got, want)
				}
				for _, o := range want {
					kinds[o.Outcome]++
				}
			}
		})
	}
}

// memoryScan is memory as it was before it visited runs newest first:
// every run of the agent, sorted, cut.
func memoryScan(st *ledger.State, name, runID string) []agent.Outcome {
	var out []agent.Outcome
	runs := st.AgentRuns(name)
	for _, rn := range runs {
		if rn.ID == runID {
			continue
		}
		if o, ok := outcomeOf(rn); ok {
			out = append(out, o)
		}
	}
	markReverted(runs, out)
	slices.SortStableFunc(out, func(x, y agent.Outcome) int {
		return cmp.Or(y.Time.Compare(x.Time), strings.Compare(x.RunID, y.RunID))
	})
	return out[:min(len(out), maxMemory)]
}

// A transcript is read once per reconciler: the next run's memory takes
// what it said from the reconciler's cache, so a daemon reads only the
// transcripts of outcomes new since the agent's last run. (The second
// call runs without a repository: any read would fail.)
func TestMemoryReadsTranscriptsOnce(t *testing.T) {
	f := buildFixture(t, t.TempDir(), 10)
	t.Cleanup(func() { f.repo.Close() })
	st := runsState(t, "own", 10, f)
	r := &Reconciler{repo: f.repo, log: slog.New(slog.DiscardHandler)}
	p := &pass{state: st}
	a := &hclspec.Agent{Name: benchTuner, Tools: []string{hclspec.ToolRecall}}
	first := r.memory(p, a, "ffffffffffff")
	if len(first) != 10 {
		t.Fatalf("memory of %d outcomes, want 10", len(first))
	}
	for i, o := range first {
		if want := fmt.Sprintf("Transcript summary %d:", 9-i); !strings.HasPrefix(o.Summary, want) || !strings.Contains(o.Rationale, "saturates at peak") {
			t.Errorf("outcome %d: summary %q, rationale %q; want its transcript's (%q...)", i, o.Summary, o.Rationale, want)
		}
	}
	r.repo = nil
	if again := r.memory(p, a, "ffffffffffff"); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("the second memory differs:\n got %v\nwant %v", again, first)
	}
}
