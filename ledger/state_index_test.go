package ledger

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The indexed readers (Spent, Rejected, Reverted, RecentRuns, RevertsOf)
// answer as the scans of every run they replace, on a history with
// retries, repeated changes, rejections, merges, reverts (merged and
// not) and times that go backwards (two reconcilers' clocks), after every
// entry, and the same again on a clone and on a state decoded from a
// snapshot (whose indexes are rebuilt from Runs alone).
func TestStateIndexesAnswerAsScans(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			f := &folder{t: t, s: NewState()}
			last := map[string]uint64{} // run id -> seq of its last entry
			ap := func(at time.Time, ev Event) {
				t.Helper()
				f.apply(at, ev)
				last[ev.RunID] = f.s.Seq
			}
			at := time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC)
			agents := []string{"a", "b"}
			type live struct{ id, agent string }
			var started, finished, opened, merged []live
			n := 0
			for step := range 400 {
				// Mostly forward, sometimes back (another reconciler's clock).
				at = at.Add(time.Duration(rng.IntN(20)-4) * time.Minute)
				base := func(l live, typ string) Event {
					return Event{Type: typ, Agent: l.agent, RunID: l.id, Trigger: "manual:" + l.id, SpecCommit: exampleCommit("spec"), SpecDigest: "d"}
				}
				prop := func(l live) *Proposal {
					return &Proposal{Branch: "agents/" + l.agent + "/" + l.id, Head: exampleCommit("head " + l.id), MergeCommit: exampleCommit("merge " + l.id)}
				}
				pick := func(from *[]live) (live, bool) {
					if len(*from) == 0 {
						return live{}, false
					}
					i := rng.IntN(len(*from))
					l := (*from)[i]
					*from = append((*from)[:i], (*from)[i+1:]...)
					return l, true
				}
				switch k := rng.IntN(10); {
				case k < 3 || len(started) == 0:
					n++
					l := live{id: fmt.Sprintf("%012x", n), agent: agents[rng.IntN(len(agents))]}
					ev := base(l, RunStarted)
					ev.ReservedUSD, ev.Claimant, ev.LeaseUntil = float64(rng.IntN(100))/100, "r", at.Add(time.Hour)
					if len(merged) > 0 && rng.IntN(3) == 0 {
						if m := merged[rng.IntN(len(merged))]; m.agent == l.agent {
							ev.Reverts = m.id
						}
					}
					ap(at, ev)
					started = append(started, l)
				case k < 5:
					l, _ := pick(&started)
					if rng.IntN(4) == 0 { // fails, is retried
						ev := base(l, RunFailed)
						ev.Error, ev.Attempt, ev.CostUSD, ev.RetryAfter = "HTTP 503", 1, 0.01, at.Add(time.Minute)
						ap(at, ev)
						ev = base(l, RunRetried)
						ev.Attempt, ev.Claimant, ev.LeaseUntil, ev.ReservedUSD = 2, "r", at.Add(time.Hour), 0.5
						ap(at.Add(time.Minute), ev)
					}
					ev := base(l, RunFinished)
					ev.Outcome, ev.CostUSD, ev.Model = OutcomeChanged, float64(rng.IntN(50))/1000, "m"
					ev.Change = &Change{ID: fmt.Sprint("change-", rng.IntN(6)), Files: []string{"f"}}
					ap(at, ev)
					finished = append(finished, l)
				case k < 7:
					l, ok := pick(&finished)
					if !ok {
						continue
					}
					ev := base(l, PolicyDecision)
					ev.Decision, ev.CostUSD = []byte(`{"outcome":"require_approval"}`), 0.002
					ap(at, ev)
					ev = base(l, ProposalOpened)
					ev.Proposal = prop(l)
					ap(at, ev)
					opened = append(opened, l)
				default:
					l, ok := pick(&opened)
					if !ok {
						continue
					}
					typ := ProposalRejected
					if rng.IntN(2) == 0 {
						typ = ProposalMerged
						merged = append(merged, l)
					}
					ev := base(l, typ)
					ev.Proposal = prop(l)
					ap(at, ev)
				}
				if step%7 == 0 || step == 399 {
					checkIndexes(t, fmt.Sprint("step ", step), f.s, at)
					checkRunsSince(t, f.s, last)
				}
			}
			c := f.s.Clone()
			checkIndexes(t, "clone", c, at)
			if n := len(slices.Collect(c.RunsSince(c.Seq - 1))); n != len(c.Runs) {
				t.Errorf("a clone's RunsSince(an entry before it) yields %d runs, want all %d", n, len(c.Runs))
			}
			if n := len(slices.Collect(c.RunsSince(c.Seq))); n != 0 {
				t.Errorf("a clone's RunsSince(its seq) yields %d runs, want none", n)
			}
			// The clone and the original fold on apart: what one adds to
			// the indexes they share is not seen by the other.
			revertOf := ""
			for _, m := range merged {
				if m.agent == "a" {
					revertOf = m.id
				}
			}
			for k, st := range []*State{c, f.s} {
				g := &folder{t: t, s: st}
				id := fmt.Sprintf("%012x", 0xfff000+k)
				ev := func(typ string) Event {
					return Event{Type: typ, Agent: "a", RunID: id, Trigger: "manual:" + id, SpecCommit: exampleCommit("spec"), SpecDigest: "d", Reverts: revertOf}
				}
				e := ev(RunStarted)
				e.ReservedUSD, e.Claimant = 0.5, "r"
				g.apply(at.Add(-30*time.Minute), e) // in the middle of the attempts
				e = ev(RunFinished)
				e.Outcome, e.CostUSD, e.Change = OutcomeChanged, 0.25, &Change{ID: fmt.Sprint("change-", k), Files: []string{"f"}}
				g.apply(at, e)
				e = ev(ProposalOpened)
				e.Proposal = &Proposal{Branch: "agents/a/" + id, Head: exampleCommit("h" + id), MergeCommit: exampleCommit("m" + id)}
				g.apply(at, e)
				e.Type = []string{ProposalRejected, ProposalMerged}[k]
				g.apply(at.Add(time.Minute), e)
			}
			checkIndexes(t, "the clone, folded on", c, at)
			checkIndexes(t, "the original, folded on", f.s, at)
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(f.s); err != nil {
				t.Fatal(err)
			}
			back := &State{}
			if err := gob.NewDecoder(&buf).Decode(back); err != nil {
				t.Fatal(err)
			}
			back.init()
			checkIndexes(t, "decoded", back, at)
			rejected, reverted := 0, 0
			for c := range 6 {
				for _, agent := range agents {
					if f.s.Rejected(agent, fmt.Sprint("change-", c)) != nil {
						rejected++
					}
					if o, _ := f.s.Reverted(agent, fmt.Sprint("change-", c)); o != nil {
						reverted++
					}
				}
			}
			if rejected == 0 || reverted == 0 {
				t.Fatalf("the history has %d rejected and %d reverted changes; the test needs both", rejected, reverted)
			}
		})
	}
}

func checkIndexes(t *testing.T, when string, s *State, now time.Time) {
	t.Helper()
	for _, agent := range []string{"a", "b", "nobody"} {
		for _, back := range []time.Duration{0, time.Hour, 5 * time.Hour, 1000 * time.Hour} {
			since := now.Add(-back)
			if got, want := s.Spent(agent, since), spentScan(s, agent, since); math.Abs(got-want) > 1e-9 {
				t.Fatalf("%s: Spent(%s, -%v) = %v, the scan says %v", when, agent, back, got, want)
			}
		}
		for c := range 7 {
			id := fmt.Sprint("change-", c)
			if got, want := s.Rejected(agent, id), rejectedScan(s, agent, id); got != want {
				t.Fatalf("%s: Rejected(%s, %s) = %v, the scan says %v", when, agent, id, got, want)
			}
			o, r := s.Reverted(agent, id)
			wo, wr := revertedScan(s, agent, id)
			if o != wo || r != wr {
				t.Fatalf("%s: Reverted(%s, %s) = %v, %v; the scan says %v, %v", when, agent, id, o, r, wo, wr)
			}
		}
		seen := map[*Run]bool{}
		var prev time.Time
		for r := range s.RecentRuns(agent) {
			if seen[r] || r.Agent != agent {
				t.Fatalf("%s: RecentRuns(%s) yields %s (agent %s) twice or of another agent", when, agent, r.ID, r.Agent)
			}
			seen[r] = true
			if !prev.IsZero() && r.LastTime().After(prev) {
				t.Fatalf("%s: RecentRuns(%s) yields %s (last %v) after a run last at %v", when, agent, r.ID, r.LastTime(), prev)
			}
			prev = r.LastTime()
		}
		if len(seen) != len(s.AgentRuns(agent)) {
			t.Fatalf("%s: RecentRuns(%s) yields %d runs of %d", when, agent, len(seen), len(s.AgentRuns(agent)))
		}
	}
	for _, r := range s.Runs {
		var want []*Run
		for _, o := range s.Runs {
			if o.Reverts == r.ID {
				want = append(want, o)
			}
		}
		if got := s.RevertsOf(r.ID); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: RevertsOf(%s) = %v, want %v", when, r.ID, got, want)
		}
	}
}

// checkRunsSince checks RunsSince against the seq of each run's last
// entry, for a few seqs before the state's.
func checkRunsSince(t *testing.T, s *State, last map[string]uint64) {
	t.Helper()
	for _, back := range []uint64{0, 1, 5, 40, s.Seq} {
		since := s.Seq - min(back, s.Seq)
		var want []string
		for _, r := range s.Runs {
			if last[r.ID] > since {
				want = append(want, r.ID)
			}
		}
		var got []string
		for r := range s.RunsSince(since) {
			got = append(got, r.ID)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("RunsSince(%d) at %d = %v, want %v", since, s.Seq, got, want)
		}
	}
}

// The scans the indexes replace, as State had them.

func spentScan(s *State, agent string, since time.Time) float64 {
	total := 0.0
	for _, r := range s.byAgent[agent] {
		attempts := r.Attempts
		if len(attempts) == 0 {
			attempts = []Attempt{{Started: r.Started, ReservedUSD: r.ReservedUSD, CostUSD: r.CostUSD, Settled: r.Settled}}
		}
		for _, a := range attempts {
			switch {
			case a.Started.Before(since):
			case a.Settled:
				total += a.CostUSD
			default:
				total += a.ReservedUSD
			}
		}
	}
	return total
}

func rejectedScan(s *State, agent, changeID string) *Run {
	for _, r := range s.byAgent[agent] {
		if r.Closed != nil && r.Closed.Type == ProposalRejected && r.ChangeID() == changeID {
			return r
		}
	}
	return nil
}

func revertedScan(s *State, agent, changeID string) (orig, revert *Run) {
	for _, r := range s.byAgent[agent] {
		if r.Reverts == "" || r.Closed == nil || r.Closed.Type != ProposalMerged {
			continue
		}
		if o := s.Run(r.Reverts); o != nil && o.Agent == agent && o.ChangeID() == changeID {
			return o, r
		}
	}
	return nil, nil
}
