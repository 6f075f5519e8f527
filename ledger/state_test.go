package ledger

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// Every event type has a Go type (Typed) and a case in the fold (Apply):
// the documented example of each is applied to a fresh state.
func TestApplyKnowsEveryEvent(t *testing.T) {
	for _, typ := range slices.Sorted(slices.Values(EventTypes())) {
		t.Run(typ, func(t *testing.T) {
			b, err := os.ReadFile(examplePath(typ))
			if err != nil {
				t.Fatal(err)
			}
			var p Predicate
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			p.Event.Subject = exampleCommit("subject")
			typed, err := p.Event.Typed()
			if err != nil {
				t.Fatalf("Typed: %v", err)
			}
			if typed.EventType() != typ {
				t.Errorf("Typed() is a %T for %s, whose EventType is %q", typed, typ, typed.EventType())
			}
			p.Seq, p.Prev = 1, ""
			s := NewState()
			if err := s.Apply(Entry{Predicate: p, Digest: "d"}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if s.Seq != 1 || s.Digest != "d" {
				t.Errorf("state at %d (%q) after applying entry 1", s.Seq, s.Digest)
			}
		})
	}
}

// An event missing a field its type requires has no typed form, and the
// fold refuses it without changing.
func TestApplyRefusesIncompleteEvents(t *testing.T) {
	e := Event{Type: RunStarted, Agent: "a", RunID: "3f2a9c0d41be", Summary: "run.started a", Subject: exampleCommit("s")}
	if _, err := e.Typed(); err == nil {
		t.Fatal("Typed accepted a run.started without trigger, spec commit and digest")
	}
	s := NewState()
	if err := s.Apply(Entry{Predicate: Predicate{Seq: 1, Event: e}}); err == nil || s.Seq != 0 || len(s.Runs) != 0 {
		t.Fatalf("Apply = %v, state at %d with %d runs", err, s.Seq, len(s.Runs))
	}
}

// folder applies events to a state as consecutive entries.
type folder struct {
	t *testing.T
	s *State
}

func (f *folder) apply(at time.Time, ev Event) {
	f.t.Helper()
	ev.Subject = exampleCommit("spec")
	if ev.Summary == "" {
		ev.Summary = ev.Type + " " + ev.Agent
	}
	seq := f.s.Seq + 1
	e := Entry{Predicate: Predicate{Seq: seq, Prev: f.s.Digest, Time: at, Event: ev}, Digest: exampleDigest(fmt.Sprint("entry ", seq))}
	if err := f.s.Apply(e); err != nil {
		f.t.Fatal(err)
	}
}

// A run retried twice: every attempt's cost is counted once, in totals and
// in what budgets read, and each attempt's reservation only while it is
// unsettled.
func TestApplyRetriedRun(t *testing.T) {
	const (
		agent = "tuner"
		id    = "3f2a9c0d41be"
		model = "gpt-4o-mini"
	)
	spec := exampleCommit("spec")
	run := func(typ string) Event {
		return Event{Type: typ, Agent: agent, RunID: id, Trigger: "spec", SpecCommit: spec, SpecDigest: "sha256:agent"}
	}
	started := func(typ string, attempt int, claimant string, at time.Time) Event {
		ev := run(typ)
		ev.ReservedUSD, ev.Claimant, ev.LeaseUntil = 1, claimant, at.Add(12*time.Minute)
		if typ == RunRetried {
			ev.Attempt = attempt
		}
		return ev
	}
	failed := func(attempt int, cost float64, retryAfter time.Time) Event {
		ev := run(RunFailed)
		ev.Error, ev.Model, ev.CostUSD, ev.Attempt, ev.RetryAfter = "HTTP 503", model, cost, attempt, retryAfter
		ev.Usage = &Usage{InputTokens: 1000, OutputTokens: 10}
		return ev
	}
	// The first two attempts are on one day, the third on the next.
	day1 := time.Date(2026, 11, 17, 23, 50, 0, 0, time.UTC)
	day2 := time.Date(2026, 11, 18, 0, 0, 0, 0, time.UTC)
	t1, t2, t3 := day1, day1.Add(5*time.Minute), day2.Add(5*time.Minute)
	f := &folder{t: t, s: NewState()}
	s := f.s
	check := func(step string, attempt int, settled bool, spentDay1, spentDay2 float64) {
		t.Helper()
		r := s.Run(id)
		if r.Attempt != attempt || r.Settled != settled {
			t.Errorf("%s: attempt %d, settled %v; want %d, %v", step, r.Attempt, r.Settled, attempt, settled)
		}
		if r.Settled == (s.Running(agent) == 1) {
			t.Errorf("%s: Running = %d with the run settled %v", step, s.Running(agent), r.Settled)
		}
		all := s.Spent(agent, day1.Add(-time.Hour))
		if got := s.Spent(agent, day2); fmt.Sprintf("%.4f", all-got) != fmt.Sprintf("%.4f", spentDay1) || fmt.Sprintf("%.4f", got) != fmt.Sprintf("%.4f", spentDay2) {
			t.Errorf("%s: spent %.4f on day 1 and %.4f on day 2; want %.4f and %.4f", step, all-got, got, spentDay1, spentDay2)
		}
	}

	f.apply(t1, started(RunStarted, 1, "a", t1))
	check("started", 1, false, 1, 0)
	f.apply(t1.Add(time.Minute), failed(1, 0.1, t1.Add(90*time.Second)))
	check("attempt 1 failed", 1, true, 0.1, 0)
	if r := s.Run(id); r.Failed == nil || !r.RetryAfter.Equal(t1.Add(90*time.Second)) || r.Failed.RetryAfter != r.RetryAfter {
		t.Errorf("after a retryable failure: Failed %v, RetryAfter %v", r.Failed, r.RetryAfter)
	}

	f.apply(t2, started(RunRetried, 2, "b", t2))
	check("attempt 2 claimed", 2, false, 1.1, 0)
	if r := s.Run(id); r.Failed != nil || !r.RetryAfter.IsZero() || r.Claimant != "b" || !r.LeaseUntil.Equal(t2.Add(12*time.Minute)) || !r.Started.Equal(t1) {
		t.Errorf("after run.retried: Failed %v, RetryAfter %v, claim %q until %v, started %v", r.Failed, r.RetryAfter, r.Claimant, r.LeaseUntil, r.Started)
	}
	// A copy folds on without changing the original.
	c := s.Clone()
	if err := c.Apply(Entry{Predicate: Predicate{Seq: s.Seq + 1, Prev: s.Digest, Time: t2, Event: withSubject(failed(2, 5, time.Time{}))}}); err != nil {
		t.Fatal(err)
	}
	check("attempt 2 claimed, after a clone settled it", 2, false, 1.1, 0)

	f.apply(t2.Add(time.Minute), failed(2, 0.2, t2.Add(2*time.Minute)))
	check("attempt 2 failed", 2, true, 0.3, 0)
	f.apply(t3, started(RunRetried, 3, "b", t3))
	check("attempt 3 claimed", 3, false, 0.3, 1)

	fin := run(RunFinished)
	fin.Outcome, fin.Model, fin.CostUSD = OutcomeNoChange, model, 0.3
	fin.Usage = &Usage{InputTokens: 1000, OutputTokens: 10}
	f.apply(t3.Add(time.Minute), fin)
	check("attempt 3 finished", 3, true, 0.3, 0.3)

	r := s.Run(id)
	if fmt.Sprintf("%.4f", r.CostUSD) != "0.6000" || len(r.Attempts) != 3 || r.Failed != nil || r.Finished == nil {
		t.Errorf("run: cost %v over %d attempts, failed %v, finished %v", r.CostUSD, len(r.Attempts), r.Failed, r.Finished)
	}
	if got := s.Totals.CostUSD[agent][model]; fmt.Sprintf("%.4f", got) != "0.6000" {
		t.Errorf("Totals.CostUSD = %v, want 0.6", got)
	}
	if got := s.Totals.Runs[agent]; got["failed"] != 2 || got[OutcomeNoChange] != 1 {
		t.Errorf("Totals.Runs = %v, want 2 failed attempts and 1 no_change", got)
	}
	if got := s.Totals.Tokens[agent][model]; got != [2]int64{3000, 30} {
		t.Errorf("Totals.Tokens = %v, want every attempt's", got)
	}
	if starts := s.RunStarts(agent, day1.Add(-time.Hour)); len(starts) != 1 {
		t.Errorf("RunStarts = %v: a retry is not another run", starts)
	}
}

func withSubject(ev Event) Event {
	ev.Subject, ev.Summary = exampleCommit("spec"), ev.Type+" "+ev.Agent
	return ev
}

// A run.failed with no claim before it (entries written before attempts
// were recorded) still counts its cost once.
func TestApplyFailedWithoutClaim(t *testing.T) {
	f := &folder{t: t, s: NewState()}
	at := time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC)
	f.apply(at, Event{Type: RunFailed, Agent: "a", RunID: "3f2a9c0d41be", SpecDigest: "d", Error: "exit status 1", CostUSD: 0.5})
	if got := f.s.Spent("a", at.Add(-time.Hour)); got != 0.5 {
		t.Errorf("Spent = %v, want 0.5", got)
	}
	if r := f.s.Run("3f2a9c0d41be"); r.CostUSD != 0.5 || !r.Settled || r.Attempt != 0 || !r.RetryAfter.IsZero() {
		t.Errorf("run = %+v", r)
	}
}

// A run whose proposal's push was lost after it finished is retried to
// push it: the attempt costs nothing and ends when the proposal opens.
func TestApplyRetriedPush(t *testing.T) {
	const id = "3f2a9c0d41be"
	f := &folder{t: t, s: NewState()}
	at := time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC)
	run := func(typ string) Event {
		return Event{Type: typ, Agent: "a", RunID: id, Trigger: "spec", SpecCommit: exampleCommit("spec"), SpecDigest: "d"}
	}
	ev := run(RunStarted)
	ev.ReservedUSD, ev.Claimant, ev.LeaseUntil = 1, "r1", at.Add(time.Hour)
	f.apply(at, ev)
	ev = run(RunFinished)
	ev.Outcome, ev.Change, ev.CostUSD, ev.Model = OutcomeChanged, &Change{ID: "c"}, 0.25, "m"
	f.apply(at, ev)
	ev = run(RunFailed)
	ev.Error, ev.Attempt, ev.RetryAfter = "push agents/a/"+id+": connection refused", 1, at.Add(time.Minute)
	f.apply(at, ev)
	ev = run(RunRetried)
	ev.Attempt, ev.Claimant, ev.LeaseUntil = 2, "r1", at.Add(time.Hour)
	f.apply(at.Add(time.Minute), ev)
	if f.s.Running("a") != 1 {
		t.Errorf("Running = %d while the push is retried", f.s.Running("a"))
	}
	ev = run(ProposalOpened)
	ev.Proposal = &Proposal{Branch: "agents/a/" + id, Head: exampleCommit("head")}
	f.apply(at.Add(2*time.Minute), ev)
	r := f.s.Run(id)
	if !r.Settled || f.s.Running("a") != 0 || r.CostUSD != 0.25 || f.s.Spent("a", at.Add(-time.Hour)) != 0.25 {
		t.Errorf("after proposal.opened: settled %v, running %d, cost %v, spent %v; want settled at the finished cost",
			r.Settled, f.s.Running("a"), r.CostUSD, f.s.Spent("a", at.Add(-time.Hour)))
	}
}
