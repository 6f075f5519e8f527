package reconcile

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// outcomeState folds n past proposals of agent tuner, as the ledger
// records them: each run started, finished with a change, decided and
// opened; nine in ten then closed (rejected with three reviewers'
// comments, or merged), the rest left open.
func outcomeState(tb testing.TB, n int) *ledger.State {
	tb.Helper()
	s := ledger.NewState()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	head := strings.Repeat("ab", 20)
	decision, err := json.Marshal(policy.Decision{Outcome: policy.RequireApproval, Summary: "require_approval default (1 reviewer)"})
	if err != nil {
		tb.Fatal(err)
	}
	comments := &ledger.Comments{Items: []ledger.Comment{
		{Kind: ledger.CommentReview, State: ledger.ReviewRequestChanges, ForgeLogin: "rita", Time: at, Body: strings.Repeat("a 120s TTL serves stale prices; ", 8)},
		{Kind: ledger.CommentConversation, ForgeLogin: "sam", Time: at, Body: "agreed, closing"},
		{Kind: ledger.CommentReview, State: ledger.ReviewCommented, ForgeLogin: "outsider", Time: at, Body: "why not 60s?"},
	}}
	apply := func(ev ledger.Event) {
		ev.Subject = head
		if ev.Summary == "" {
			ev.Summary = ev.Type + " tuner " + ev.RunID
		}
		seq := s.Seq + 1
		e := ledger.Entry{Predicate: ledger.Predicate{Seq: seq, Prev: s.Digest, Time: at.Add(time.Duration(seq) * time.Second), Event: ev}, Digest: fmt.Sprint("d", seq)}
		if err := s.Apply(e); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("%012x", i)
		run := ledger.Event{Agent: "tuner", RunID: id, Trigger: fmt.Sprint("schedule:", i), SpecCommit: head, SpecDigest: "d"}
		for _, typ := range []string{ledger.RunStarted, ledger.RunFinished, ledger.PolicyDecision, ledger.ProposalOpened} {
			ev := run
			ev.Type = typ
			switch typ {
			case ledger.RunFinished:
				ev.Outcome = OutcomeChanged
				ev.Change = &ledger.Change{ID: "c" + id, Files: []string{"config/payments-api.env"}}
			case ledger.PolicyDecision:
				ev.Decision = decision
			case ledger.ProposalOpened:
				ev.Proposal = &ledger.Proposal{Branch: "agents/tuner/" + id, Head: head}
			}
			apply(ev)
		}
		ev := run
		ev.Proposal = &ledger.Proposal{Branch: "agents/tuner/" + id, Head: head}
		switch i % 10 {
		case 9:
			continue // open
		case 0, 1, 2:
			ev.Type, ev.Proposal.MergeCommit = ledger.ProposalMerged, head
		default:
			ev.Type, ev.Comments = ledger.ProposalRejected, comments
		}
		apply(ev)
	}
	return s
}

// BenchmarkRecallMemory measures what a run of an agent that lists recall
// costs before its model is asked: Task.Memory built from the fold with
// 10, 10,000 and 100,000 past outcomes of the agent (most with review
// comments). It also reports the fold's heap per outcome.
func BenchmarkRecallMemory(b *testing.B) {
	a := &hclspec.Agent{Name: "tuner", Tools: []string{hclspec.ToolRecall}}
	for _, n := range []int{10, 10_000, 100_000} {
		b.Run(fmt.Sprintf("outcomes=%d", n), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			s := outcomeState(b, n)
			runtime.GC()
			runtime.ReadMemStats(&after)
			r := &Reconciler{}
			p := &pass{state: s}
			b.ResetTimer()
			for range b.N {
				mem := r.memory(p, a, "ffffffffffff")
				if len(mem) != min(n, maxMemory) || mem[0].Time.Before(mem[len(mem)-1].Time) {
					b.Fatalf("memory of %d outcomes", len(mem))
				}
			}
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "fold-B/outcome")
			runtime.KeepAlive(s)
		})
	}
}
