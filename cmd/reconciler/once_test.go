package main

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/ledger"
)

// once names the runs whose failure was recorded in its pass, and only
// those, in the order they failed.
func TestFailedSince(t *testing.T) {
	sum := sha1.Sum([]byte("spec"))
	spec := hex.EncodeToString(sum[:])
	st := ledger.NewState()
	start := time.Date(2026, 11, 17, 9, 30, 0, 0, time.UTC)
	apply := func(at time.Time, ev ledger.Event) {
		t.Helper()
		ev.Subject, ev.Summary, ev.SpecDigest = spec, ev.Type+" "+ev.Agent, "d"
		seq := st.Seq + 1
		if err := st.Apply(ledger.Entry{Predicate: ledger.Predicate{Seq: seq, Prev: st.Digest, Time: at, Event: ev}, Digest: fmt.Sprint(seq)}); err != nil {
			t.Fatal(err)
		}
	}
	failed := func(agent, id string, attempt int, retryAfter time.Time) ledger.Event {
		return ledger.Event{Type: ledger.RunFailed, Agent: agent, RunID: id, Error: "exit status 3:\nthe disk\tis on fire", Attempt: attempt, RetryAfter: retryAfter}
	}
	apply(start.Add(-time.Hour), failed("old", "000000000001", 1, time.Time{}))
	apply(start.Add(time.Second), failed("b", "000000000002", 2, start.Add(time.Minute)))
	apply(start, failed("a", "000000000003", 0, time.Time{}))
	got := failedSince(st, start)
	if len(got) != 2 || got[0].Agent != "b" || got[1].Agent != "a" {
		t.Fatalf("failedSince = %v, want the runs of b and a", got)
	}
	if n := attemptNote(got[0].Failed); n != " (attempt 2, retried after 2026-11-17T09:31:00Z)" {
		t.Errorf("note = %q", n)
	}
	if n := attemptNote(got[1].Failed); n != "" {
		t.Errorf("note of an entry without attempts = %q", n)
	}
}
