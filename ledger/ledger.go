package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
)

// Signer signs a statement into a Sigstore bundle.
type Signer interface {
	SignStatement(ctx context.Context, statement []byte) ([]byte, error)
}

// ErrRewritten is returned when the evidence branch no longer descends from
// the head this Ledger last saw: someone rewrote the audit trail.
var ErrRewritten = errors.New("evidence branch was rewritten")

// Ledger reads and appends the entries of one repository's evidence branch.
// It caches what it has read; entries are immutable, so only new commits are
// read on later calls. A Ledger is not safe for concurrent use.
type Ledger struct {
	repo     *gitstore.Repo
	signer   Signer
	identity object.Signature
	now      func() time.Time

	head    plumbing.Hash
	entries []Entry
}

// Options configure a Ledger.
type Options struct {
	// Signer signs appended entries; a Ledger without one is read-only.
	Signer Signer
	// Identity is the committer of evidence commits.
	Identity object.Signature
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New returns a Ledger over repo's evidence branch.
func New(repo *gitstore.Repo, opts Options) *Ledger {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Ledger{repo: repo, signer: opts.Signer, identity: opts.Identity, now: now}
}

// Entries returns every entry on the evidence branch of the local mirror, in
// order, decoded without verifying signatures (Verify does that). It returns
// ErrRewritten when the branch no longer descends from what was read before.
func (l *Ledger) Entries(ctx context.Context) ([]Entry, error) {
	if err := l.refresh(ctx); err != nil {
		return nil, err
	}
	return l.entries, nil
}

// Head returns the last entry, or false when the ledger is empty.
func (l *Ledger) Head(ctx context.Context) (Entry, bool, error) {
	es, err := l.Entries(ctx)
	if err != nil || len(es) == 0 {
		return Entry{}, false, err
	}
	return es[len(es)-1], true, nil
}

func (l *Ledger) refresh(ctx context.Context) error {
	head, err := l.repo.Branch(Branch)
	if errors.Is(err, gitstore.ErrNotFound) {
		if !l.head.IsZero() {
			return fmt.Errorf("read ledger: %w: branch %s was deleted", ErrRewritten, Branch)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	if head == l.head {
		return nil
	}
	if !l.head.IsZero() {
		ok, err := l.repo.IsAncestor(l.head, head)
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		if !ok {
			return fmt.Errorf("read ledger: %w: %s no longer contains %s", ErrRewritten, Branch, l.head)
		}
	}
	// Walk back from the new head to the cached one, then decode forward.
	var fresh []*object.Commit
	for h := head; h != l.head; {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := l.repo.Commit(h)
		if err != nil {
			return fmt.Errorf("read ledger: %w", err)
		}
		fresh = append(fresh, c)
		if len(c.ParentHashes) == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	entries := l.entries
	for i := len(fresh) - 1; i >= 0; i-- {
		c := fresh[i]
		seq := uint64(len(entries) + 1)
		e, err := l.readEntry(c, seq)
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}
	l.entries, l.head = entries, head
	return nil
}

func (l *Ledger) readEntry(c *object.Commit, seq uint64) (Entry, error) {
	path := EntryPath(seq)
	b, err := l.repo.ReadFile(c.Hash, path)
	if err != nil {
		return Entry{}, fmt.Errorf("read ledger entry %d at %s: %w", seq, c.Hash, err)
	}
	payload, err := unverifiedPayload(b)
	if err != nil {
		return Entry{}, fmt.Errorf("read ledger entry %d (%s): %w", seq, path, err)
	}
	p, subject, err := parseStatement(payload)
	if err != nil {
		return Entry{}, fmt.Errorf("read ledger entry %d (%s): %w", seq, path, err)
	}
	return Entry{Predicate: p, Subject: subject, Path: path, Commit: c.Hash, Bundle: b, Digest: digest(b)}, nil
}

// Append signs the events and commits them, one commit per entry, to the
// evidence branch, then pushes the branch with a compare-and-swap. When
// another writer moved the branch first, Append fetches, drops the events
// the other writer already recorded (same type, run and subject) and
// retries. It returns the entries it stored. On error nothing is stored.
func (l *Ledger) Append(ctx context.Context, events ...Event) ([]Entry, error) {
	return l.AppendIf(ctx, nil, events...)
}

// AppendIf is Append with a precondition: check sees every entry on the
// branch, freshly read on each attempt, and a non-nil error from it aborts
// the append and is returned. Together with the compare-and-swap this makes
// read-decide-append a transaction: a budget reservation is checked
// against exactly the entries it is appended after.
func (l *Ledger) AppendIf(ctx context.Context, check func([]Entry) error, events ...Event) ([]Entry, error) {
	if l.signer == nil {
		return nil, fmt.Errorf("append to ledger: no signing key configured")
	}
	const attempts = 10
	base := len(l.entries)
	for attempt := 1; ; attempt++ {
		if err := l.refresh(ctx); err != nil {
			return nil, err
		}
		pending := l.withoutRecorded(events, l.entries[min(base, len(l.entries)):])
		if len(pending) == 0 {
			return nil, nil
		}
		if check != nil {
			if err := check(l.entries); err != nil {
				return nil, err
			}
		}
		stored, newHead, err := l.build(ctx, pending)
		if err != nil {
			return nil, err
		}
		err = l.repo.Push(ctx, gitstore.RefUpdate{Branch: Branch, Old: l.head, New: newHead})
		if err == nil {
			l.entries = append(l.entries, stored...)
			l.head = newHead
			return stored, nil
		}
		if !errors.Is(err, gitstore.ErrStale) || attempt == attempts {
			return nil, fmt.Errorf("append to ledger: %w", err)
		}
		// Back off with jitter so racing writers do not collide again.
		backoff := time.Duration(attempt) * time.Duration(10+rand.IntN(40)) * time.Millisecond
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		if err := l.repo.Fetch(ctx); err != nil {
			return nil, fmt.Errorf("append to ledger: %w", err)
		}
	}
}

// withoutRecorded drops events that already appear among recent entries.
func (l *Ledger) withoutRecorded(events []Event, recent []Entry) []Event {
	var out []Event
	for _, ev := range events {
		dup := false
		for _, e := range recent {
			if e.Type == ev.Type && e.RunID == ev.RunID && e.Agent == ev.Agent && e.Subject == ev.Subject {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, ev)
		}
	}
	return out
}

// build signs and commits events on top of the current head without moving
// any ref.
func (l *Ledger) build(ctx context.Context, events []Event) ([]Entry, plumbing.Hash, error) {
	parent := l.head
	prev := ""
	if n := len(l.entries); n > 0 {
		prev = l.entries[n-1].Digest
	}
	seq := uint64(len(l.entries))
	var out []Entry
	for _, ev := range events {
		seq++
		if strings.ContainsAny(ev.Summary, "\r\n") || ev.Summary == "" {
			return nil, plumbing.ZeroHash, fmt.Errorf("append %s: summary must be one non-empty line", ev.Type)
		}
		files := []gitstore.FileChange{}
		if ev.Transcript != nil {
			if !validRunID(ev.RunID) {
				return nil, plumbing.ZeroHash, fmt.Errorf("append %s: a transcript needs the run id it belongs to, got %q", ev.Type, ev.RunID)
			}
			ev.TranscriptDigest = digest(ev.Transcript)
			files = append(files, gitstore.FileChange{Path: TranscriptPath(ev.RunID), Status: "added", Mode: filemode.Regular, Content: ev.Transcript})
		}
		p := Predicate{Seq: seq, Prev: prev, Time: l.now().UTC().Truncate(time.Millisecond), Event: ev}
		st, err := newStatement(p)
		if err != nil {
			return nil, plumbing.ZeroHash, err
		}
		bundle, err := l.signer.SignStatement(ctx, st)
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("sign ledger entry %d: %w", seq, err)
		}
		path := EntryPath(seq)
		files = append(files, gitstore.FileChange{Path: path, Status: "added", Mode: filemode.Regular, Content: bundle})
		tree, err := l.repo.WriteTree(parent, files)
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("write ledger entry %d: %w", seq, err)
		}
		var parents []plumbing.Hash
		if !parent.IsZero() {
			parents = []plumbing.Hash{parent}
		}
		sig := l.identity
		sig.When = p.Time
		commit, err := l.repo.CreateCommit(gitstore.NewCommit{Tree: tree, Parents: parents, Author: sig, Committer: sig, Message: ev.Summary + "\n"})
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("commit ledger entry %d: %w", seq, err)
		}
		out = append(out, Entry{Predicate: p, Subject: ev.Subject, Path: path, Commit: commit, Bundle: bundle, Digest: digest(bundle)})
		parent, prev = commit, digest(bundle)
	}
	return out, parent, nil
}

// validRunID reports whether s can name a transcript file.
func validRunID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r == '-') {
			return false
		}
	}
	return true
}

// Transcript returns the transcript of a run, checked against the digest
// its signed entry records. ErrNotFound-wrapping errors mean the run has no
// transcript.
func (l *Ledger) Transcript(ctx context.Context, runID string) ([]byte, Entry, error) {
	es, err := l.Entries(ctx)
	if err != nil {
		return nil, Entry{}, err
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if e.RunID != runID || e.TranscriptDigest == "" {
			continue
		}
		b, err := l.repo.ReadFile(e.Commit, TranscriptPath(runID))
		if err != nil {
			return nil, e, fmt.Errorf("transcript of run %s: %w", runID, err)
		}
		if digest(b) != e.TranscriptDigest {
			return nil, e, fmt.Errorf("transcript of run %s: %w: its sha256 differs from the one entry %d signed", runID, ErrInvalid, e.Seq)
		}
		return b, e, nil
	}
	return nil, Entry{}, fmt.Errorf("run %s: %w: no transcript on %s", runID, gitstore.ErrNotFound, Branch)
}
