package ledger_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

var identity = object.Signature{Name: "Reconciler", Email: "reconciler@example.com"}

type fixture struct {
	bare   string
	url    string
	signer *signing.Signer
	spec   plumbing.Hash // head of main
}

func newFixture(t *testing.T, http bool) *fixture {
	t.Helper()
	src := t.TempDir()
	gittest.Git(t, src, "init", "-q")
	bare := gittest.NewBare(t, "")
	work := t.TempDir()
	gittest.Git(t, work, "init", "-q", "-b", "main")
	gittest.Git(t, work, "commit", "-q", "--allow-empty", "-m", "desired state")
	gittest.Git(t, work, "push", "-q", bare, "main")
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{bare: bare, url: bare, signer: signer}
	if http {
		f.url = gittest.ServeHTTP(t, bare)
	}
	f.spec = plumbing.NewHash(gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main"))
	return f
}

func (f *fixture) open(t *testing.T) *gitstore.Repo {
	t.Helper()
	repo, err := gitstore.Open(context.Background(), f.url, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// ledger opens a Ledger; with a signer it starts the ledger (its genesis
// entry, trusting the signer's key) when it is empty.
func (f *fixture) ledger(t *testing.T, signer ledger.Signer) (*gitstore.Repo, *ledger.Ledger) {
	t.Helper()
	repo := f.open(t)
	l := ledger.New(repo, ledger.Options{Signer: signer, Identity: identity})
	if signer != nil {
		if _, err := l.Init(context.Background(), f.spec.String(), "main", nil); err != nil {
			t.Fatal(err)
		}
	}
	return repo, l
}

// verify runs Verify with the fixture's key pinned.
func (f *fixture) verify(t *testing.T) (*ledger.Report, error) {
	t.Helper()
	return ledger.VerifyMemoryAndDisk(t, f.url, ledger.VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{f.signer.PublicKey()}})
}

func (f *fixture) event(i int) ledger.Event {
	return ledger.Event{
		Type: ledger.RunStarted, Agent: "a", RunID: fmt.Sprintf("run%09d", i), SpecCommit: f.spec.String(),
		Trigger: "manual", SpecDigest: "d1",
		Subject: f.spec.String(), Summary: fmt.Sprintf("run.started a run%d", i),
	}
}

func TestAppendAndRead(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, transport == "http")
			_, l := f.ledger(t, f.signer)
			stored, err := l.Append(ctx, f.event(1), f.event(2))
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != 2 || stored[0].Seq != 2 || stored[1].Seq != 3 || stored[1].Prev != stored[0].Digest || stored[0].Prev == "" {
				t.Fatalf("stored = %+v", stored)
			}
			if _, err := l.Append(ctx, f.event(3)); err != nil {
				t.Fatal(err)
			}
			// A fresh reader sees the same entries.
			_, l2 := f.ledger(t, nil)
			es, err := l2.Entries(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != 4 || es[0].Type != ledger.Genesis || es[3].Summary != "run.started a run3" || es[3].Path != "ledger/000000000/000000000004.json" {
				t.Fatalf("entries = %+v", es)
			}
			// One commit per entry, messages are the summaries, fsck clean.
			log := gittest.Git(t, "", "--git-dir", f.bare, "log", "--format=%s", "-3", ledger.Branch)
			if want := "run.started a run3\nrun.started a run2\nrun.started a run1"; log != want {
				t.Errorf("git log = %q, want %q", log, want)
			}
			gittest.Git(t, "", "--git-dir", f.bare, "fsck", "--strict")
			rep, err := f.verify(t)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Entries != 4 {
				t.Errorf("verified %d entries, want 4", rep.Entries)
			}
			// The statement is an in-toto v1 statement about the spec commit.
			b := gittest.Git(t, "", "--git-dir", f.bare, "show", ledger.Branch+":ledger/000000000/000000000002.json")
			var bundle struct {
				DSSE struct{ Payload, PayloadType string } `json:"dsseEnvelope"`
			}
			if err := json.Unmarshal([]byte(b), &bundle); err != nil {
				t.Fatal(err)
			}
			payload, _ := base64.StdEncoding.DecodeString(bundle.DSSE.Payload)
			var st map[string]any
			if err := json.Unmarshal(payload, &st); err != nil {
				t.Fatal(err)
			}
			if st["_type"] != ledger.StatementType || st["predicateType"] != ledger.PredicateType || !strings.Contains(string(payload), `"gitCommit":"`+f.spec.String()+`"`) {
				t.Errorf("statement = %s", payload)
			}
		})
	}
}

func TestAppendRejectsBadEvents(t *testing.T) {
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	ev := f.event(1)
	ev.Summary = "two\nlines"
	if _, err := l.Append(context.Background(), ev); err == nil {
		t.Error("multi-line summary accepted")
	}
	ev = f.event(1)
	ev.Subject = "not-a-commit"
	if _, err := l.Append(context.Background(), ev); err == nil {
		t.Error("non-commit subject accepted")
	}
	_, ro := f.ledger(t, nil)
	if _, err := ro.Append(context.Background(), f.event(1)); err == nil || !strings.Contains(err.Error(), "no signing key") {
		t.Errorf("append without signer: %v", err)
	}
	if out := gittest.Git(t, "", "--git-dir", f.bare, "rev-list", "--count", ledger.Branch); out != "1" {
		t.Errorf("failed appends left %s commits, want the genesis one only", out)
	}
}

// Concurrent reconcilers never fork the chain and lose nothing: the loser of
// the compare-and-swap re-reads and retries.
func TestConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	const writers, each = 3, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo, err := gitstore.Open(ctx, f.url, gitstore.Options{})
			if err != nil {
				errs <- err
				return
			}
			l := ledger.New(repo, ledger.Options{Signer: f.signer, Identity: identity})
			if _, err := l.Init(ctx, f.spec.String(), "main", nil); err != nil {
				errs <- err
				return
			}
			for i := range each {
				if _, err := l.Append(ctx, f.event(w*100+i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rep, err := f.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != writers*each+1 {
		t.Fatalf("ledger has %d entries, want %d and one genesis", rep.Entries, writers*each)
	}
	_, l := f.ledger(t, nil)
	es, _ := l.Entries(ctx)
	seen := map[string]bool{}
	for _, e := range es[1:] {
		seen[e.RunID] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct runs recorded, want %d", len(seen), writers*each)
	}
}

// A running reader never accepts a ledger that does not extend what it
// saw: truncated by one or two entries, rewritten, or deleted; also when
// what it saw comes from the state a previous process saved.
func TestSyncDetectsTruncation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cut    func(t *testing.T, f *fixture)
		reason string
	}{
		{"truncate by one", func(t *testing.T, f *fixture) { resetEvidence(t, f, ledger.Branch+"~1") }, "no longer contains entry 4"},
		{"truncate by two", func(t *testing.T, f *fixture) { resetEvidence(t, f, ledger.Branch+"~2") }, "no longer contains entry 4"},
		{"delete the branch", func(t *testing.T, f *fixture) {
			gittest.Git(t, "", "--git-dir", f.bare, "update-ref", "-d", "refs/heads/"+ledger.Branch)
		}, "was deleted"},
	} {
		for _, transport := range []string{"local", "http"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				ctx := context.Background()
				f := newFixture(t, transport == "http")
				stateFile := filepath.Join(t.TempDir(), "state.gob")
				repo := f.open(t)
				l := f.savedLedger(t, repo, stateFile)
				tc.cut(t, f)
				if err := repo.Fetch(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := l.Sync(ctx); !errors.Is(err, ledger.ErrRewritten) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("Sync after %s: %v, want ErrRewritten saying %q", tc.name, err, tc.reason)
				}
				before := gittest.Git(t, "", "--git-dir", f.bare, "for-each-ref", "refs/heads/"+ledger.Branch)
				if _, err := l.Append(ctx, f.event(9)); !errors.Is(err, ledger.ErrRewritten) {
					t.Fatalf("Append after %s: %v, want ErrRewritten", tc.name, err)
				}
				// A new process continuing from the saved state refuses too.
				next := ledger.New(f.open(t), ledger.Options{Signer: f.signer, Identity: identity, StateFile: stateFile})
				if _, err := next.Sync(ctx); !errors.Is(err, ledger.ErrRewritten) {
					t.Fatalf("Sync from the saved state: %v, want ErrRewritten", err)
				}
				if _, err := next.Append(ctx, f.event(9)); !errors.Is(err, ledger.ErrRewritten) {
					t.Fatalf("Append from the saved state: %v, want ErrRewritten", err)
				}
				if after := gittest.Git(t, "", "--git-dir", f.bare, "for-each-ref", "refs/heads/"+ledger.Branch); after != before {
					t.Errorf("the evidence branch moved after a refused append: %q -> %q", before, after)
				}
			})
		}
	}
}

// savedLedger starts a ledger on repo with genesis and three run.started
// entries, and saves its state to stateFile.
func (f *fixture) savedLedger(t *testing.T, repo *gitstore.Repo, stateFile string) *ledger.Ledger {
	t.Helper()
	ctx := context.Background()
	l := ledger.New(repo, ledger.Options{Signer: f.signer, Identity: identity, StateFile: stateFile})
	if _, err := l.Init(ctx, f.spec.String(), "main", nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := l.Append(ctx, f.event(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Save(); err != nil {
		t.Fatal(err)
	}
	return l
}

func resetEvidence(t *testing.T, f *fixture, rev string) {
	t.Helper()
	h := gittest.Git(t, "", "--git-dir", f.bare, "rev-parse", rev)
	gittest.Git(t, "", "--git-dir", f.bare, "update-ref", "refs/heads/"+ledger.Branch, h)
}

// A saved state lets a new process read only what was appended since, and
// gives the same fold as reading everything.
func TestSavedStateIsIncremental(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	stateFile := filepath.Join(t.TempDir(), "state.gob")
	f.savedLedger(t, f.open(t), stateFile)
	_, other := f.ledger(t, f.signer)
	if _, err := other.Append(ctx, f.event(4)); err != nil {
		t.Fatal(err)
	}
	next := ledger.New(f.open(t), ledger.Options{StateFile: stateFile})
	fresh, err := next.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh) != 1 || fresh[0].Seq != 5 {
		t.Fatalf("a process continuing from the saved state read %d entries, want only entry 5", len(fresh))
	}
	full := ledger.New(f.open(t), ledger.Options{})
	if _, err := full.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := next.State(), full.State(); a.Seq != b.Seq || a.Digest != b.Digest || len(a.Runs) != len(b.Runs) || len(a.Runs) != 4 {
		t.Errorf("continued state (seq %d, %d runs) differs from the full fold (seq %d, %d runs)", a.Seq, len(a.Runs), b.Seq, len(b.Runs))
	}
	// A corrupt state file is ignored: the ledger is read from the start.
	os.WriteFile(stateFile, []byte("garbage"), 0o600)
	again := ledger.New(f.open(t), ledger.Options{StateFile: stateFile})
	if es, err := again.Sync(ctx); err != nil || len(es) != 5 {
		t.Fatalf("Sync with a corrupt state file: %d entries, %v", len(es), err)
	}
}

// rebuild rewrites the evidence branch as the given sequence of bundles (one
// commit each, in order) and force-pushes it with a correct lease, as an
// attacker with push access would.
func rebuild(t *testing.T, f *fixture, bundles [][]byte, paths []string) {
	t.Helper()
	ctx := context.Background()
	repo := f.open(t)
	old, err := repo.Branch(ledger.Branch)
	if err != nil {
		t.Fatal(err)
	}
	parent := plumbing.ZeroHash
	for i, b := range bundles {
		tree, err := repo.WriteTree(parent, []gitstore.FileChange{{Path: paths[i], Status: "added", Mode: filemode.Regular, Content: b}})
		if err != nil {
			t.Fatal(err)
		}
		var parents []plumbing.Hash
		if !parent.IsZero() {
			parents = []plumbing.Hash{parent}
		}
		payload := mustPayload(t, b)
		var st struct {
			Predicate struct {
				Summary string `json:"summary"`
			} `json:"predicate"`
		}
		_ = json.Unmarshal(payload, &st)
		sig := identity
		sig.When = time.Unix(1700000000, 0)
		parent, err = repo.CreateCommit(gitstore.NewCommit{Tree: tree, Parents: parents, Author: sig, Message: st.Predicate.Summary + "\n"})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := repo.Push(ctx, gitstore.RefUpdate{Branch: ledger.Branch, Old: old, New: parent}); err != nil {
		t.Fatal(err)
	}
}

func mustPayload(t *testing.T, bundle []byte) []byte {
	t.Helper()
	var b struct {
		DSSE struct{ Payload string } `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	p, err := base64.StdEncoding.DecodeString(b.DSSE.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// withPayload returns bundle with its DSSE payload replaced (signature kept).
func withPayload(t *testing.T, bundle, payload []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundle, &m); err != nil {
		t.Fatal(err)
	}
	m["dsseEnvelope"].(map[string]any)["payload"] = base64.StdEncoding.EncodeToString(payload)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyTampering(t *testing.T) {
	ctx := context.Background()
	other, err := signing.GenerateKey(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, f *fixture, es []ledger.Entry)
		seq    uint64
		reason string
	}{{
		name: "edit an entry",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, paths := split(es)
			p := mustPayload(t, bundles[2])
			bundles[2] = withPayload(t, bundles[2], []byte(strings.Replace(string(p), "run.started", "run.finished", 1)))
			rebuild(t, f, bundles, paths)
		},
		seq: 3, reason: "does not verify",
	}, {
		name: "delete an entry",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, paths := split(es)
			rebuild(t, f, append(bundles[:2:2], bundles[3:]...), append(paths[:2:2], paths[3:]...))
		},
		seq: 3, reason: "entry file missing",
	}, {
		name: "delete an entry and renumber its files",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, _ := split(es)
			bundles = append(bundles[:2:2], bundles[3:]...)
			var paths []string
			for i := range bundles {
				paths = append(paths, ledger.EntryPath(uint64(i+1)))
			}
			rebuild(t, f, bundles, paths)
		},
		seq: 3, reason: "statement says seq 4 at position 3",
	}, {
		name: "reorder entries",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, paths := split(es)
			bundles[2], bundles[3] = bundles[3], bundles[2]
			rebuild(t, f, bundles, paths)
		},
		seq: 3, reason: "statement says seq 4 at position 3",
	}, {
		name: "re-sign with another key",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, paths := split(es)
			b, err := other.SignStatement(ctx, mustPayload(t, bundles[1]))
			if err != nil {
				t.Fatal(err)
			}
			bundles[1] = b
			rebuild(t, f, bundles, paths)
		},
		seq: 2, reason: "not signed by a key trusted at entry 2",
	}, {
		name: "force-push a truncated branch",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			// A merged proposal on main references entry 5.
			work := gittest.Clone(t, f.bare)
			gittest.Git(t, work, "commit", "-q", "--allow-empty", "-m", "Pin images\n\nAgent: a\nAgent-Run: run000000005\nLedger-Entry: 5")
			gittest.Git(t, work, "push", "-q", "origin", "main")
			bundles, paths := split(es)
			rebuild(t, f, bundles[:3], paths[:3])
		},
		seq: 4, reason: "references entry 5 but the ledger ends at 3",
	}, {
		name: "edit an old entry in a new commit",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			work := gittest.Clone(t, f.bare)
			gittest.Git(t, work, "checkout", "-q", ledger.Branch)
			gittest.Git(t, work, "rm", "-q", es[0].Path)
			gittest.Git(t, work, "commit", "-q", "-m", "cleanup")
			gittest.Git(t, work, "push", "-q", "origin", ledger.Branch)
		},
		seq: 7, reason: "removes ledger/000000000/000000000001.json",
	}, {
		name: "rewrite the commit message",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			work := gittest.Clone(t, f.bare)
			gittest.Git(t, work, "checkout", "-q", ledger.Branch)
			gittest.Git(t, work, "commit", "-q", "--amend", "-m", "nothing to see here")
			gittest.Git(t, work, "push", "-q", "--force", "origin", ledger.Branch)
		},
		seq: 6, reason: "commit message",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, false)
			_, l := f.ledger(t, f.signer)
			var evs []ledger.Event
			for i := 1; i <= 5; i++ {
				evs = append(evs, f.event(i))
			}
			if _, err := l.Append(ctx, evs...); err != nil {
				t.Fatal(err)
			}
			es, err := l.Entries(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.verify(t); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tt.tamper(t, f, es)
			_, err = f.verify(t)
			var ve *ledger.VerifyError
			if !errors.As(err, &ve) || !(errors.Is(err, ledger.ErrInvalid) || errors.Is(err, ledger.ErrUntrusted)) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			if ve.Seq != tt.seq || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Verify error = %q (entry %d), want entry %d and %q", err, ve.Seq, tt.seq, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("entry %d ", tt.seq)) {
				t.Errorf("error %q does not start by naming entry %d", err, tt.seq)
			}
		})
	}
}

func split(es []ledger.Entry) ([][]byte, []string) {
	var bundles [][]byte
	var paths []string
	for _, e := range es {
		bundles = append(bundles, e.Bundle)
		paths = append(paths, e.Path)
	}
	return bundles, paths
}

func TestVerifyEmptyAndKeys(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	rep, err := f.verify(t)
	if err != nil || rep.Entries != 0 {
		t.Fatalf("empty ledger: %v, %+v", err, rep)
	}
	_, l := f.ledger(t, f.signer)
	if _, err := l.Append(ctx, f.event(1)); err != nil {
		t.Fatal(err)
	}
	// Trust on first use: the genesis keys, reported as not pinned.
	rep, err = ledger.Verify(ctx, f.open(t), ledger.VerifyOptions{})
	if err != nil || rep.Pinned || len(rep.GenesisKeys) != 1 || rep.GenesisKeys[0].ID != f.signer.KeyID() {
		t.Fatalf("unpinned verify: %v, %+v", err, rep)
	}
	// A ledger whose genesis a pinned key did not sign fails at entry 1.
	stranger, _ := signing.GenerateKey(filepath.Join(t.TempDir(), "s.key"))
	_, err = ledger.Verify(ctx, f.open(t), ledger.VerifyOptions{TrustedKeys: []signing.PublicKey{stranger.PublicKey()}})
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 1 || !errors.Is(err, ledger.ErrUntrusted) {
		t.Fatalf("untrusted key: %v", err)
	}
	// A writer whose key the ledger does not trust is refused before it
	// signs anything.
	sl := ledger.New(f.open(t), ledger.Options{Signer: stranger, Identity: identity})
	if _, err := sl.Append(ctx, f.event(2)); !errors.Is(err, ledger.ErrUntrusted) || !strings.Contains(err.Error(), stranger.KeyID()) {
		t.Fatalf("append with an untrusted key: %v", err)
	}
	if n := gittest.Git(t, "", "--git-dir", f.bare, "rev-list", "--count", ledger.Branch); n != "2" {
		t.Errorf("the ledger has %s commits after a refused append, want 2", n)
	}
}

// keysChanged returns a keys.changed event trusting keys.
func (f *fixture) keysChanged(keys ...signing.PublicKey) ledger.Event {
	return ledger.Event{Type: ledger.KeysChanged, Subject: f.spec.String(), SubjectName: "main", Keys: ledger.KeySet(keys...),
		Summary: fmt.Sprintf("keys.changed: %d key(s)", len(keys))}
}

// A key admitted by keys.changed signs from the entry after it, not before;
// keys.changed must be signed by a key trusted before it; a key dropped by
// keys.changed no longer signs.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	newKey, err := signing.GenerateKey(filepath.Join(t.TempDir(), "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("admitted key signs after its entry", func(t *testing.T) {
		f := newFixture(t, false)
		_, l := f.ledger(t, f.signer)
		if _, err := l.Append(ctx, f.event(1), f.keysChanged(f.signer.PublicKey(), newKey.PublicKey())); err != nil {
			t.Fatal(err)
		}
		_, nl := f.ledger(t, newKey)
		if _, err := nl.Append(ctx, f.event(2)); err != nil {
			t.Fatal(err)
		}
		rep, err := f.verify(t)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entries != 4 || rep.Signers[newKey.KeyID()] != 1 || len(rep.Keys) != 2 {
			t.Errorf("report = %+v", rep)
		}
		es, err := ledger.New(f.open(t), ledger.Options{}).Entries(ctx)
		if err != nil || es[3].Signer != newKey.KeyID() {
			t.Fatalf("Entries: %v", err)
		}
	})
	// resigned rebuilds a ledger of genesis, run.started and a keys.changed
	// admitting newKey, with entry seq re-signed by newKey, and checks that
	// every reader refuses it at that entry.
	resigned := func(t *testing.T, seq uint64) {
		f := newFixture(t, false)
		_, l := f.ledger(t, f.signer)
		if _, err := l.Append(ctx, f.event(1), f.keysChanged(f.signer.PublicKey(), newKey.PublicKey())); err != nil {
			t.Fatal(err)
		}
		es, _ := l.Entries(ctx)
		bundles, paths := split(es)
		b, err := newKey.SignStatement(ctx, mustPayload(t, bundles[seq-1]))
		if err != nil {
			t.Fatal(err)
		}
		bundles[seq-1] = b
		rebuild(t, f, bundles, paths)
		_, err = f.verify(t)
		var ve *ledger.VerifyError
		if !errors.As(err, &ve) || ve.Seq != seq || !errors.Is(err, ledger.ErrUntrusted) {
			t.Fatalf("Verify = %v, want entry %d untrusted", err, seq)
		}
		if _, err := ledger.New(f.open(t), ledger.Options{}).Sync(ctx); !errors.As(err, &ve) || ve.Seq != seq || !errors.Is(err, ledger.ErrUntrusted) {
			t.Fatalf("Sync = %v, want entry %d untrusted", err, seq)
		}
	}
	// Entry 2, before the keys.changed at 3, signed by the key it admits.
	t.Run("key signs before its entry", func(t *testing.T) { resigned(t, 2) })
	t.Run("keys.changed signed by the key it admits", func(t *testing.T) { resigned(t, 3) })
	t.Run("removed key no longer signs", func(t *testing.T) {
		f := newFixture(t, false)
		_, l := f.ledger(t, f.signer)
		if _, err := l.Append(ctx, f.keysChanged(newKey.PublicKey())); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, f.event(1)); !errors.Is(err, ledger.ErrUntrusted) {
			t.Fatalf("append with a removed key: %v, want ErrUntrusted", err)
		}
	})
}

// A reader acts only on entries that verify: one whose payload was replaced
// (signature kept) stops Sync at that entry, and nothing after it is
// applied or appended.
func TestSyncRefusesUnverifiedEntries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	_, l := f.ledger(t, f.signer)
	if _, err := l.Append(ctx, f.event(1), f.event(2)); err != nil {
		t.Fatal(err)
	}
	es, _ := l.Entries(ctx)
	bundles, paths := split(es)
	p := mustPayload(t, bundles[1])
	bundles[1] = withPayload(t, bundles[1], []byte(strings.Replace(string(p), "run000000001", "run000000666", 1)))
	rebuild(t, f, bundles, paths)
	r := ledger.New(f.open(t), ledger.Options{Signer: f.signer, Identity: identity})
	_, err := r.Sync(ctx)
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 2 || !errors.Is(err, ledger.ErrUntrusted) {
		t.Fatalf("Sync = %v, want entry 2 untrusted", err)
	}
	if r.State().Seq != 1 || r.State().Run("run000000666") != nil {
		t.Errorf("the state applied a forged entry: at seq %d", r.State().Seq)
	}
	if _, err := r.Append(ctx, f.event(3)); !errors.Is(err, ledger.ErrUntrusted) {
		t.Errorf("Append after a forged entry: %v, want ErrUntrusted", err)
	}
	// Each hands over what verified, then names the bad entry.
	var seen []uint64
	err = ledger.New(f.open(t), ledger.Options{}).Each(ctx, func(e ledger.Entry) error {
		seen = append(seen, e.Seq)
		return nil
	})
	if !errors.As(err, &ve) || ve.Seq != 2 || len(seen) != 1 {
		t.Errorf("Each saw %v and returned %v", seen, err)
	}
}

// AppendIf checks its precondition against the entries it appends after,
// also when another writer got there first.
func TestAppendIfSeesTheWinner(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	_, first := f.ledger(t, f.signer)
	_, second := f.ledger(t, f.signer)
	if _, err := second.Entries(ctx); err != nil { // second's view: empty
		t.Fatal(err)
	}
	if _, err := first.Append(ctx, f.event(1)); err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("budget spent")
	var seen []int
	_, err := second.AppendIf(ctx, func(st *ledger.State) error {
		seen = append(seen, len(st.Runs))
		if len(st.Runs) >= 1 {
			return errFull
		}
		return nil
	}, f.event(2))
	if !errors.Is(err, errFull) {
		t.Fatalf("AppendIf = %v, want the precondition's error", err)
	}
	if len(seen) != 2 || seen[0] != 0 || seen[1] != 1 {
		t.Errorf("precondition saw %v runs per attempt, want [0 1]", seen)
	}
	_, l := f.ledger(t, nil)
	if es, _ := l.Entries(ctx); len(es) != 2 {
		t.Errorf("ledger has %d entries, want 2", len(es))
	}
}

func TestTranscripts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	_, l := f.ledger(t, f.signer)
	ev := f.event(1)
	ev.RunID = "3f2a9c0d41be"
	ev.Transcript = []byte(`{"version":1}`)
	stored, err := l.Append(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if stored[0].TranscriptDigest == "" {
		t.Fatal("no transcript digest in the signed predicate")
	}
	b, e, err := l.Transcript(ctx, "3f2a9c0d41be")
	if err != nil || string(b) != `{"version":1}` || e.Seq != 2 {
		t.Fatalf("Transcript = %q, %d, %v", b, e.Seq, err)
	}
	if _, _, err := l.Transcript(ctx, "000000000000"); !errors.Is(err, gitstore.ErrNotFound) {
		t.Errorf("missing transcript: %v", err)
	}
	if _, err := f.verify(t); err != nil {
		t.Fatal(err)
	}
	// Edit the transcript in a rewrite of the same commit: verify names the entry.
	work := gittest.Clone(t, f.bare)
	gittest.Git(t, work, "checkout", "-q", ledger.Branch)
	os.WriteFile(filepath.Join(work, "transcripts/3f2a9c0d41be.json"), []byte(`{"version":1,"edited":true}`), 0o644)
	gittest.Git(t, work, "commit", "-q", "--amend", "-a", "--no-edit")
	gittest.Git(t, work, "push", "-q", "--force", "origin", ledger.Branch)
	_, err = f.verify(t)
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 2 || !strings.Contains(err.Error(), "does not match the transcript digest") {
		t.Fatalf("Verify after editing the transcript = %v", err)
	}
	_, l2 := f.ledger(t, nil)
	if _, _, err := l2.Transcript(ctx, "3f2a9c0d41be"); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("Transcript of an edited file = %v, want ErrInvalid", err)
	}
}
