package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
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

// slowPushes makes every push to the fixture's remote take at least d on
// the server (a pre-receive hook), so that appends queue behind one in
// flight, and turns on the remote's reflog of branch updates, one line a
// push, for pushes to count them.
func slowPushes(t *testing.T, f *fixture, d string, extra string) {
	t.Helper()
	hook := "#!/bin/sh\n" + extra + "sleep " + d + "\n"
	if err := os.WriteFile(filepath.Join(f.bare, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, "", "--git-dir", f.bare, "config", "core.logAllRefUpdates", "always")
}

// pushes counts the remote's updates of the evidence branch since
// slowPushes.
func pushes(t *testing.T, f *fixture) int {
	t.Helper()
	out := gittest.Git(t, "", "--git-dir", f.bare, "reflog", "show", "--format=%H", "refs/heads/"+ledger.Branch)
	if out == "" {
		return 0
	}
	return len(strings.Split(out, "\n"))
}

// checkChain verifies the remote's ledger and checks that the entries
// callers got are exactly the ledger's after the first seq, each once.
func checkChain(t *testing.T, f *fixture, first uint64, got map[string][]ledger.Entry) {
	t.Helper()
	rep, err := f.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	_, reader := f.ledger(t, nil)
	entries, err := reader.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != rep.Entries {
		t.Fatalf("%d entries read, Verify counted %d", len(entries), rep.Entries)
	}
	owner := map[uint64]string{}
	for who, es := range got {
		for _, e := range es {
			if prev, dup := owner[e.Seq]; dup {
				t.Fatalf("entry %d returned to %s and %s", e.Seq, prev, who)
			}
			owner[e.Seq] = who
			on := entries[e.Seq-1]
			if on.Commit != e.Commit || on.Digest != e.Digest || on.Summary != e.Summary {
				t.Fatalf("%s got entry %d %q at %s, the ledger has %q at %s", who, e.Seq, e.Summary, e.Commit, on.Summary, on.Commit)
			}
			if !strings.HasPrefix(e.Summary, who+" ") {
				t.Fatalf("%s got another caller's entry %d: %q", who, e.Seq, e.Summary)
			}
		}
	}
	for _, e := range entries[first:] {
		if _, ok := owner[e.Seq]; !ok {
			t.Fatalf("entry %d (%q) on the ledger was returned to no caller", e.Seq, e.Summary)
		}
	}
}

// violation is a small valid event whose summary names its caller, of
// its own run (events of one type, run, agent and subject are one event
// to a retried append).
func violation(f *fixture, who string, i int) ledger.Event {
	msg := fmt.Sprintf("%s %d", who, i)
	return ledger.Event{Type: ledger.PolicyViolation, Agent: "a", RunID: fmt.Sprintf("%s-%d", who, i), Subject: f.spec.String(), SubjectName: "main", Error: msg, Summary: msg}
}

// Many goroutines appending at once share pushes (group commit), and end
// with a gap-free chain in which every entry verifies and each caller got
// exactly its own entries, in its order; over a local path and smart HTTP.
func TestAppendConcurrentGroupCommit(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, transport == "http")
			_, l := f.ledger(t, f.signer)
			slowPushes(t, f, "0.2", "")
			first := l.State().Seq
			const writers, each = 24, 4
			var mu sync.Mutex
			got := map[string][]ledger.Entry{}
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				who := fmt.Sprintf("w%02d", w)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						evs := []ledger.Event{violation(f, who, 2*i)}
						if i%2 == 1 {
							evs = append(evs, violation(f, who, 2*i+1))
						}
						stored, err := l.Append(ctx, evs...)
						if err != nil {
							t.Error(err)
							return
						}
						if len(stored) != len(evs) {
							t.Errorf("%s: stored %d of %d", who, len(stored), len(evs))
							return
						}
						for j, e := range stored {
							if e.Summary != evs[j].Summary || (j > 0 && e.Seq != stored[j-1].Seq+1) {
								t.Errorf("%s: entry %d is %q (seq %d), want %q", who, j, e.Summary, e.Seq, evs[j].Summary)
							}
						}
						mu.Lock()
						got[who] = append(got[who], stored...)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			total := writers * (each + each/2)
			if want := first + uint64(total); l.State().Seq != want {
				t.Fatalf("state at %d, want %d", l.State().Seq, want)
			}
			if n := pushes(t, f); n >= writers*each || n == 0 {
				t.Errorf("%d pushes for %d appends: no group commit", n, writers*each)
			}
			checkChain(t, f, first, got)
		})
	}
}

// A second writer (another Ledger on another mirror) appending while group
// commits are in flight makes them lose races: they are rebuilt on its
// entries, and both writers' callers get exactly their entries, once.
func TestAppendConcurrentRacingWriter(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	repo, l := f.ledger(t, f.signer)
	_, other := f.ledger(t, f.signer)
	slowPushes(t, f, "0.05", "")
	first := l.State().Seq
	var mu sync.Mutex
	got := map[string][]ledger.Entry{}
	var wg sync.WaitGroup
	run := func(lg *ledger.Ledger, who string, n int) {
		defer wg.Done()
		for i := 0; i < n; i++ {
			stored, err := lg.Append(ctx, violation(f, who, i))
			if err != nil {
				t.Errorf("%s: %v", who, err)
				return
			}
			mu.Lock()
			got[who] = append(got[who], stored...)
			mu.Unlock()
		}
	}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go run(l, fmt.Sprintf("g%d", w), 5)
	}
	wg.Add(1)
	go run(other, "other", 10)
	wg.Wait()
	if t.Failed() {
		return
	}
	n := 0
	for _, es := range got {
		n += len(es)
	}
	if n != 50 {
		t.Fatalf("%d entries stored, want 50", n)
	}
	checkChain(t, f, first, got)
	// The group's ledger state is the branch's.
	if err := repo.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if l.State().Seq != first+50 {
		t.Fatalf("state at %d, want %d", l.State().Seq, first+50)
	}
}

// AppendIf's check sees what is queued and in flight before it: of many
// concurrent reservations against a budget that admits one, exactly one
// is appended, round after round, while other appends are in flight.
func TestAppendIfConcurrentBudget(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	slowPushes(t, f, "0.1", "")
	errSpent := errors.New("budget spent")
	for round := 0; round < 4; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		admitted, refused := 0, 0
		// Plain appends keep a push in flight while the reservations queue.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				if _, err := l.Append(ctx, violation(f, "filler", round*10+i)); err != nil {
					t.Error(err)
				}
			}
		}()
		for w := 0; w < 6; w++ {
			ev := f.event(round*100 + w)
			wg.Add(1)
			go func() {
				defer wg.Done()
				check := func(st *ledger.State) error {
					for _, r := range st.Runs {
						if strings.HasPrefix(r.ID, fmt.Sprintf("run%07d", round)) {
							return errSpent
						}
					}
					return nil
				}
				stored, err := l.AppendIf(ctx, check, ev)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, errSpent):
					refused++
				case err != nil:
					t.Error(err)
				case len(stored) == 1:
					admitted++
				}
			}()
		}
		wg.Wait()
		if admitted != 1 || refused != 5 {
			t.Fatalf("round %d: %d admitted, %d refused; want 1 and 5", round, admitted, refused)
		}
	}
	if _, err := f.verify(t); err != nil {
		t.Fatal(err)
	}
}

// The remote vanishes in the middle of a push (its receive-pack is killed
// from the pre-receive hook): the callers of that push get an error and
// their entries are not on the branch, the ones queued behind it are
// rebuilt and pushed, and the next append succeeds on a chain that
// verifies.
func TestAppendRemoteVanishesMidPush(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, transport == "http")
			_, l := f.ledger(t, f.signer)
			marker := filepath.Join(t.TempDir(), "vanish")
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			slowPushes(t, f, "0.2", fmt.Sprintf("if [ -e %q ]; then rm %q; sleep 0.2; kill -9 $PPID; exit 1; fi\n", marker, marker))
			first := l.State().Seq
			var mu sync.Mutex
			got := map[string][]ledger.Entry{}
			failed := 0
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				who := fmt.Sprintf("v%d", w)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if w > 0 {
						time.Sleep(50 * time.Millisecond) // queue behind the first push
					}
					stored, err := l.Append(ctx, violation(f, who, 0))
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						if errors.Is(err, gitstore.ErrStale) {
							t.Errorf("%s: %v", who, err)
						}
						failed++
						return
					}
					got[who] = stored
				}()
			}
			wg.Wait()
			if failed == 0 || failed == 8 {
				t.Fatalf("%d of 8 appends failed; want the first push's callers only", failed)
			}
			stored, err := l.Append(ctx, violation(f, "after", 0))
			if err != nil {
				t.Fatalf("append after the remote came back: %v", err)
			}
			got["after"] = stored
			if want := first + uint64(8-failed+1); l.State().Seq != want {
				t.Fatalf("state at %d, want %d", l.State().Seq, want)
			}
			checkChain(t, f, first, got)
		})
	}
}

// A keys.changed that drops the appending key, queued among concurrent
// appends, is pushed alone and nothing is built on it before it lands:
// appends before it are stored, appends after it are refused with
// ErrUntrusted, and the chain verifies (no entry signed by a dropped key).
func TestAppendConcurrentKeysChanged(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	slowPushes(t, f, "0.1", "")
	newKey, err := signing.GenerateKey(filepath.Join(t.TempDir(), "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored, refused := 0, 0
	for w := 0; w < 12; w++ {
		who := fmt.Sprintf("k%02d", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(w) * 20 * time.Millisecond)
			var err error
			var got []ledger.Entry
			if w == 4 {
				got, err = l.Append(ctx, f.keysChanged(newKey.PublicKey()))
			} else {
				got, err = l.Append(ctx, violation(f, who, 0))
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ledger.ErrUntrusted) && w != 4:
				refused++
			case err != nil:
				t.Errorf("%s: %v", who, err)
			case len(got) == 1:
				stored++
			}
		}()
	}
	wg.Wait()
	if refused == 0 || stored < 2 {
		t.Fatalf("%d stored, %d refused: want appends on both sides of the key change", stored, refused)
	}
	rep, err := ledger.VerifyMemoryAndDisk(t, f.url, ledger.VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{f.signer.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 1+stored {
		t.Fatalf("the ledger has %d entries, %d appends were stored", rep.Entries, stored)
	}
}
