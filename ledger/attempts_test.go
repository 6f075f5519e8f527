package ledger_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
)

// Each attempt of a retried run stores its transcript apart (a stored
// transcript is never replaced), at a path its signed entry names; verify
// checks them all and Transcript returns the last.
func TestRetriedRunTranscripts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	const id = "3f2a9c0d41be"
	run := func(typ string) ledger.Event {
		return ledger.Event{Type: typ, Agent: "a", RunID: id, Trigger: "spec", SpecCommit: f.spec.String(), SpecDigest: "d1",
			Subject: f.spec.String(), Summary: typ + " a " + id}
	}
	lease := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	claim := func(typ string, attempt int) ledger.Event {
		ev := run(typ)
		ev.Claimant, ev.LeaseUntil, ev.ReservedUSD = "r1", lease, 0.5
		if typ == ledger.RunRetried {
			ev.Attempt = attempt
		}
		return ev
	}
	failed := func(attempt int, transcript string) ledger.Event {
		ev := run(ledger.RunFailed)
		ev.Error, ev.Attempt, ev.Transcript = "HTTP 503", attempt, []byte(transcript)
		ev.RetryAfter = time.Now().UTC().Truncate(time.Second)
		return ev
	}
	second := failed(0, `{"attempt":2}`) // Append fills in the run's attempt
	finished := run(ledger.RunFinished)
	finished.Outcome, finished.Transcript = ledger.OutcomeNoChange, []byte(`{"attempt":3}`)
	for _, ev := range []ledger.Event{
		claim(ledger.RunStarted, 1), failed(1, `{"attempt":1}`),
		claim(ledger.RunRetried, 2), second,
		claim(ledger.RunRetried, 3), finished,
	} {
		if _, err := l.Append(ctx, ev); err != nil {
			t.Fatalf("append %s: %v", ev.Type, err)
		}
	}
	es, err := l.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []int
	for _, e := range es[1:] {
		attempts = append(attempts, e.Attempt)
	}
	if want := []int{0, 1, 2, 2, 3, 3}; !slices.Equal(attempts, want) {
		t.Errorf("attempts recorded %v, want %v", attempts, want)
	}
	for path, want := range map[string]string{
		"transcripts/" + id + ".json":   `{"attempt":1}`,
		"transcripts/" + id + ".2.json": `{"attempt":2}`,
		"transcripts/" + id + ".3.json": `{"attempt":3}`,
	} {
		if got := gittest.Git(t, "", "--git-dir", f.bare, "show", ledger.Branch+":"+path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	b, e, err := l.Transcript(ctx, id)
	if err != nil || string(b) != `{"attempt":3}` || e.Type != ledger.RunFinished {
		t.Errorf("Transcript = %q of %s, %v; want the last attempt's", b, e.Type, err)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rn := l.State().Run(id); rn.Attempt != 3 || !rn.Settled || rn.Failed != nil || len(rn.Attempts) != 3 {
		t.Errorf("run: attempt %d, settled %v, failed %v, %d attempts", rn.Attempt, rn.Settled, rn.Failed, len(rn.Attempts))
	}
}
