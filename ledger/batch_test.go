package ledger_test

import (
	"context"
	"errors"
	"testing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
)

// AppendBatch lands many callers' events in one push: each part's check
// sees what the parts before it appended, a refused part is left out with
// its error, and the chain verifies.
func TestAppendBatch(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, transport == "http")
			repo, l := f.ledger(t, f.signer)
			before := l.State().Seq
			claim := func(i int) *ledger.Batch {
				ev := f.event(i)
				return &ledger.Batch{
					Check: func(st *ledger.State) error {
						if st.Run(ev.RunID) != nil {
							return errors.New("claimed")
						}
						return nil
					},
					Events: []ledger.Event{ev},
				}
			}
			parts := []*ledger.Batch{claim(1), claim(2), claim(1)}
			if err := l.AppendBatch(ctx, parts); err != nil {
				t.Fatal(err)
			}
			if len(parts[0].Stored) != 1 || len(parts[1].Stored) != 1 || parts[0].Err != nil || parts[1].Err != nil {
				t.Fatalf("parts 0 and 1: %+v, %+v", parts[0], parts[1])
			}
			if parts[2].Err == nil || len(parts[2].Stored) != 0 {
				t.Fatalf("the second claim of one run was appended: %+v", parts[2])
			}
			if got := l.State().Seq; got != before+2 {
				t.Fatalf("seq %d, want %d", got, before+2)
			}
			// One push moved the branch to the batch's last entry; the
			// remote's reflog-free history shows both entries.
			remote := gittest.Git(t, "", "--git-dir", f.bare, "rev-parse", ledger.Branch)
			if local, err := repo.Branch(ledger.Branch); err != nil || local.String() != remote || remote != parts[1].Stored[0].Commit.String() {
				t.Fatalf("remote at %s, local %s (%v), want the batch's last entry %s", remote, local, err, parts[1].Stored[0].Commit)
			}
			if err := l.AppendBatch(ctx, []*ledger.Batch{{Events: []ledger.Event{{Type: ledger.KeysChanged}}}}); err == nil {
				t.Error("keys.changed appended in a batch")
			}
			if _, err := f.verify(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}
