package ledger_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/ledger/ledgergen"
)

// What the LLMOps features read from the fold, as the ledger grows
// (docs/performance.md, "LLMOps at scale"): N is the number of entries,
// folded straight into a ledger.State (ledgergen.History) since what is
// measured is the fold and its readers, not git. "own" puts the N entries
// in the measured agent's own history (N/5 runs of 5 entries), "others"
// in other agents' (the measured agent has 10 runs); the cost of the
// second must not depend on N, nor, where git's does not, the first's.
//
//	go test -run '^$' -bench 'Fold|Spent|Refuse' -benchmem ./ledger/

const benchAgent = "tuner"

var llmopsSizes = []int{10, 10_000, 100_000}

type benchHistory struct {
	h *ledgergen.History
	// since is the time of the measured agent's last 10 runs.
	since time.Time
	// rejected and reverted are change ids of the measured agent that a
	// reviewer rejected, and that were merged and then reverted.
	rejected, reverted string
}

var (
	benchMu        sync.Mutex
	benchHistories = map[string]*benchHistory{}
)

// history returns the state of n entries of the kind ("own" or
// "others"), built once per process.
func history(b *testing.B, kind string, n int) *benchHistory {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	key := fmt.Sprint(kind, n)
	if bh := benchHistories[key]; bh != nil {
		return bh
	}
	bh := &benchHistory{h: ledgergen.NewHistory(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	h := bh.h
	h.Step = time.Minute
	run := func(r ledgergen.Run) string {
		id, err := h.Run(r)
		if err != nil {
			b.Fatal(err)
		}
		return id
	}
	ends := []string{ledgergen.EndMerged, ledgergen.EndRejected, ledgergen.EndDenied, ledgergen.EndMerged}
	i := 0
	for h.State.Seq < uint64(n) {
		switch kind {
		case "own":
			run(ledgergen.Run{Agent: benchAgent, N: i, End: ends[i%len(ends)]})
		case "others":
			if i%2 == 0 {
				run(ledgergen.Run{Agent: fmt.Sprintf("gen-%03d", i%100), N: i, End: ends[i%len(ends)]})
			} else if err := h.Held(fmt.Sprintf("gen-%03d", i%100)); err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
	// The measured agent's last runs: one rejected, one merged and
	// reverted, then eight more.
	bh.since = h.Time
	rej := run(ledgergen.Run{Agent: benchAgent, N: -1, End: ledgergen.EndRejected})
	bh.rejected = h.State.Run(rej).ChangeID()
	orig := run(ledgergen.Run{Agent: benchAgent, N: -2, End: ledgergen.EndMerged})
	bh.reverted = h.State.Run(orig).ChangeID()
	run(ledgergen.Run{Agent: benchAgent, N: -3, End: ledgergen.EndMerged, Reverts: orig})
	for j := range 7 {
		run(ledgergen.Run{Agent: benchAgent, N: -4 - j, End: ledgergen.EndOpen})
	}
	benchHistories[key] = bh
	return bh
}

// BenchmarkFoldRun: folding one more model run (5 entries, with tiers'
// model_usage and a review's tokens in its decision) into a state of N
// entries: the per-model usage fold.
func BenchmarkFoldRun(b *testing.B) {
	for _, n := range llmopsSizes {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			hc := history(b, "others", n).h.Clone() // the shared state stays as built
			st := hc.State
			tokens := st.Totals.Tokens[benchAgent]["small"][0]
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := hc.Run(ledgergen.Run{Agent: benchAgent, N: 1_000_000 + i, End: ledgergen.EndMerged}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := st.Totals.Tokens[benchAgent]["small"][0] - tokens; got != int64(b.N)*4000 {
				b.Fatalf("small's input tokens grew by %d, want %d", got, b.N*4000)
			}
		})
	}
}

// BenchmarkSpent: the money budgets' read (policy.Gate before a run,
// policy.BudgetRoom before each second-model review): the agent's spend
// since the time of its last 10 runs.
func BenchmarkSpent(b *testing.B) {
	for _, kind := range []string{"own", "others"} {
		for _, n := range llmopsSizes {
			b.Run(fmt.Sprintf("%s=%d", kind, n), func(b *testing.B) {
				bh := history(b, kind, n)
				st := bh.h.State
				var got float64
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					got = st.Spent(benchAgent, bh.since)
				}
				b.StopTimer()
				// 10 runs, each 0.0021 for the run and 0.0004 for its
				// decision's review.
				if fmt.Sprintf("%.4f", got) != "0.0250" {
					b.Fatalf("Spent = %v, want 0.025", got)
				}
			})
		}
	}
}

// BenchmarkRefuse: the check that keeps a run from proposing a change
// people rejected or reverted (State.Rejected, State.Reverted, as the
// reconciler classifies every changed run), for a new change (the usual
// case) and for a reverted one.
func BenchmarkRefuse(b *testing.B) {
	for _, kind := range []string{"own", "others"} {
		for _, n := range llmopsSizes {
			b.Run(fmt.Sprintf("%s=%d", kind, n), func(b *testing.B) {
				bh := history(b, kind, n)
				st := bh.h.State
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if st.Rejected(benchAgent, "new") != nil {
						b.Fatal("a new change is rejected")
					}
					if o, _ := st.Reverted(benchAgent, "new"); o != nil {
						b.Fatal("a new change is reverted")
					}
					if st.Rejected(benchAgent, bh.rejected) == nil {
						b.Fatal("the rejected change is not")
					}
					if o, rev := st.Reverted(benchAgent, bh.reverted); o == nil || rev == nil {
						b.Fatal("the reverted change is not")
					}
				}
			})
		}
	}
}

// BenchmarkClone: the copy of the state a batched append (AppendBatch of
// more than one part) folds its parts into, with its indexes rebuilt.
func BenchmarkClone(b *testing.B) {
	for _, n := range llmopsSizes {
		b.Run(fmt.Sprintf("own=%d", n), func(b *testing.B) {
			st := history(b, "own", n).h.State
			b.ReportAllocs()
			for range b.N {
				if c := st.Clone(); len(c.Runs) != len(st.Runs) {
					b.Fatal("clone lost runs")
				}
			}
		})
	}
}
