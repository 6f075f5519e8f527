package ledger

import "testing"

// Every entry of a ledger read from its start is verified ahead, and the
// walker takes those results: the ledger verifies as before.
func TestVerifyAheadIsTaken(t *testing.T) {
	f := newVerifyFixture(t, 20)
	before := aheadTaken.Load()
	rep, err := f.verify(t) // in memory and on disk
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 21 {
		t.Fatalf("verified %d entries, want 21", rep.Entries)
	}
	// Entries 2..21, twice (memory and disk).
	if got := aheadTaken.Load() - before; got != 2*20 {
		t.Errorf("the walker took %d results verified ahead, want %d", got, 2*20)
	}
}
