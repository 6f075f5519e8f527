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

func (f *fixture) ledger(t *testing.T, signer ledger.Signer) (*gitstore.Repo, *ledger.Ledger) {
	repo := f.open(t)
	return repo, ledger.New(repo, ledger.Options{Signer: signer, Identity: identity})
}

func (f *fixture) event(i int) ledger.Event {
	return ledger.Event{
		Type: ledger.RunStarted, Agent: "a", RunID: fmt.Sprintf("run%09d", i), SpecCommit: f.spec.String(),
		Subject: f.spec.String(), Summary: fmt.Sprintf("run.started a run%d", i),
	}
}

func (f *fixture) verifier(t *testing.T) *signing.Verifier {
	v, err := signing.NewVerifier(f.signer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return v
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
			if len(stored) != 2 || stored[0].Seq != 1 || stored[1].Seq != 2 || stored[1].Prev != stored[0].Digest || stored[0].Prev != "" {
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
			if len(es) != 3 || es[2].Summary != "run.started a run3" || es[2].Path != "ledger/000000000/000000000003.json" {
				t.Fatalf("entries = %+v", es)
			}
			// One commit per entry, messages are the summaries, fsck clean.
			log := gittest.Git(t, "", "--git-dir", f.bare, "log", "--format=%s", ledger.Branch)
			if want := "run.started a run3\nrun.started a run2\nrun.started a run1"; log != want {
				t.Errorf("git log = %q, want %q", log, want)
			}
			gittest.Git(t, "", "--git-dir", f.bare, "fsck", "--strict")
			rep, err := ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{Protected: "main"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Entries != 3 {
				t.Errorf("verified %d entries, want 3", rep.Entries)
			}
			// The statement is an in-toto v1 statement about the spec commit.
			b := gittest.Git(t, "", "--git-dir", f.bare, "show", ledger.Branch+":ledger/000000000/000000000001.json")
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
	if out := gittest.Git(t, "", "--git-dir", f.bare, "branch", "--list", ledger.Branch); out != "" {
		t.Errorf("failed appends left a branch: %q", out)
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
	rep, err := ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != writers*each {
		t.Fatalf("ledger has %d entries, want %d", rep.Entries, writers*each)
	}
	_, l := f.ledger(t, nil)
	es, _ := l.Entries(ctx)
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.RunID] = true
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct runs recorded, want %d", len(seen), writers*each)
	}
}

func TestEntriesDetectsRewrite(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	repo, l := f.ledger(t, f.signer)
	for i := 1; i <= 3; i++ {
		if _, err := l.Append(ctx, f.event(i)); err != nil {
			t.Fatal(err)
		}
	}
	first := gittest.Git(t, "", "--git-dir", f.bare, "rev-parse", ledger.Branch+"~2")
	gittest.Git(t, "", "--git-dir", f.bare, "update-ref", "refs/heads/"+ledger.Branch, first)
	if err := repo.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Entries(ctx); !errors.Is(err, ledger.ErrRewritten) {
		t.Fatalf("Entries after rewrite: %v, want ErrRewritten", err)
	}
	if _, err := l.Append(ctx, f.event(9)); !errors.Is(err, ledger.ErrRewritten) {
		t.Fatalf("Append after rewrite: %v, want ErrRewritten", err)
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
		seq: 3, reason: "signature does not verify",
	}, {
		name: "delete an entry",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			bundles, paths := split(es)
			rebuild(t, f, append(bundles[:2:2], bundles[3:]...), append(paths[:2:2], paths[3:]...))
		},
		seq: 3, reason: "commit does not add exactly this entry",
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
		seq: 2, reason: "signature does not verify",
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
		seq: 6, reason: "commit does not add exactly this entry",
	}, {
		name: "rewrite the commit message",
		tamper: func(t *testing.T, f *fixture, es []ledger.Entry) {
			work := gittest.Clone(t, f.bare)
			gittest.Git(t, work, "checkout", "-q", ledger.Branch)
			gittest.Git(t, work, "commit", "-q", "--amend", "-m", "nothing to see here")
			gittest.Git(t, work, "push", "-q", "--force", "origin", ledger.Branch)
		},
		seq: 5, reason: "commit message",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, false)
			_, l := f.ledger(t, f.signer)
			var evs []ledger.Event
			for i := 1; i <= 5; i++ {
				evs = append(evs, f.event(i))
			}
			es, err := l.Append(ctx, evs...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{Protected: "main"}); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tt.tamper(t, f, es)
			_, err = ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{Protected: "main"})
			var ve *ledger.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ledger.ErrInvalid) {
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
	rep, err := ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{Protected: "main"})
	if err != nil || rep.Entries != 0 {
		t.Fatalf("empty ledger: %v, %+v", err, rep)
	}
	// A ledger signed by an untrusted key fails at entry 1.
	_, l := f.ledger(t, f.signer)
	if _, err := l.Append(ctx, f.event(1)); err != nil {
		t.Fatal(err)
	}
	stranger, _ := signing.GenerateKey(filepath.Join(t.TempDir(), "s.key"))
	v, _ := signing.NewVerifier(stranger.PublicKey())
	_, err = ledger.Verify(ctx, f.open(t), v, ledger.VerifyOptions{})
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 1 {
		t.Fatalf("untrusted key: %v", err)
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
	_, err := second.AppendIf(ctx, func(es []ledger.Entry) error {
		seen = append(seen, len(es))
		if len(es) >= 1 {
			return errFull
		}
		return nil
	}, f.event(2))
	if !errors.Is(err, errFull) {
		t.Fatalf("AppendIf = %v, want the precondition's error", err)
	}
	if len(seen) != 2 || seen[0] != 0 || seen[1] != 1 {
		t.Errorf("precondition saw %v entries per attempt, want [0 1]", seen)
	}
	_, l := f.ledger(t, nil)
	if es, _ := l.Entries(ctx); len(es) != 1 {
		t.Errorf("ledger has %d entries, want 1", len(es))
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
	if err != nil || string(b) != `{"version":1}` || e.Seq != 1 {
		t.Fatalf("Transcript = %q, %d, %v", b, e.Seq, err)
	}
	if _, _, err := l.Transcript(ctx, "000000000000"); !errors.Is(err, gitstore.ErrNotFound) {
		t.Errorf("missing transcript: %v", err)
	}
	if _, err := ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Edit the transcript in a rewrite of the same commit: verify names the entry.
	work := gittest.Clone(t, f.bare)
	gittest.Git(t, work, "checkout", "-q", ledger.Branch)
	os.WriteFile(filepath.Join(work, "transcripts/3f2a9c0d41be.json"), []byte(`{"version":1,"edited":true}`), 0o644)
	gittest.Git(t, work, "commit", "-q", "--amend", "-a", "--no-edit")
	gittest.Git(t, work, "push", "-q", "--force", "origin", ledger.Branch)
	_, err = ledger.Verify(ctx, f.open(t), f.verifier(t), ledger.VerifyOptions{})
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 1 || !strings.Contains(err.Error(), "does not match the transcript digest") {
		t.Fatalf("Verify after editing the transcript = %v", err)
	}
	_, l2 := f.ledger(t, nil)
	if _, _, err := l2.Transcript(ctx, "3f2a9c0d41be"); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("Transcript of an edited file = %v, want ErrInvalid", err)
	}
}
