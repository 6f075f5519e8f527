package ledger

import (
	"bytes"
	"strings"
	"testing"
)

// TestSchemaRevertRun: the entries of a revert run carry reverts, the id of
// the run whose merged change they revert; the schema and Validate take it
// as the Go types write it, the typed run.started keeps it, and the fold
// records it on the revert run.
func TestSchemaRevertRun(t *testing.T) {
	sch, _ := loadSchema(t)
	const original = "7c4a1f0e2b9d"
	for _, p := range schemaExamples(t) {
		switch p.Type {
		case RunStarted, RunFinished, PolicyDecision, ProposalOpened:
		default:
			continue
		}
		t.Run(p.Type, func(t *testing.T) {
			p.Reverts = original
			p.RunID = "0b1c2d3e4f5a"
			p.Trigger = "revert:" + original + ":req-1"
			b := encodeExample(t, p)
			if !bytes.Contains(b, []byte(`"reverts": "`+original+`"`)) {
				t.Fatalf("no reverts in %s", b)
			}
			if err := sch.Validate(instance(t, b)); err != nil {
				t.Errorf("the schema refuses %s: %v", b, err)
			}
			back, err := decodeExample(b, p.Subject)
			if err != nil {
				t.Fatal(err)
			}
			if back.Reverts != original {
				t.Errorf("decoded reverts = %q", back.Reverts)
			}
			ev, err := back.Event.Typed()
			if err != nil {
				t.Fatal(err)
			}
			if st, ok := ev.(RunStartedEvent); ok && st.Reverts != original {
				t.Errorf("typed run.started reverts = %q, want %q", st.Reverts, original)
			}
			back.Reverts = "not/a/run"
			if err := back.Event.Validate(); err == nil || !strings.Contains(err.Error(), "reverts") {
				t.Errorf("Validate of reverts %q = %v, want an error naming reverts", back.Reverts, err)
			}
		})
	}
}

func TestStateRecordsReverts(t *testing.T) {
	s := NewState()
	ev := Event{Type: RunStarted, Agent: "a", RunID: "0b1c2d3e4f5a", Trigger: "revert:7c4a1f0e2b9d:req-1",
		SpecCommit: exampleCommit("spec"), SpecDigest: "d", Subject: exampleCommit("spec"), Summary: "run.started a 0b1c2d3e4f5a",
		Claimant: "c", Reverts: "7c4a1f0e2b9d"}
	if err := s.Apply(Entry{Predicate: Predicate{Seq: 1, Event: ev}}); err != nil {
		t.Fatal(err)
	}
	if got := s.Run("0b1c2d3e4f5a").Reverts; got != "7c4a1f0e2b9d" {
		t.Errorf("run's Reverts = %q", got)
	}
}
