package ledger

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
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
