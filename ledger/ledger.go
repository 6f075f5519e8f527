package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/signing"
)

// Signer signs a statement into a Sigstore bundle with the key it names.
type Signer interface {
	SignStatement(ctx context.Context, statement []byte) ([]byte, error)
	PublicKey() signing.PublicKey
}

// ErrRewritten is wrapped when the evidence branch no longer extends what
// this Ledger has seen (or a saved state says was seen): someone truncated,
// rewrote or deleted the audit trail.
var ErrRewritten = errors.New("evidence branch was rewritten")

// Ledger reads and appends the entries of one repository's evidence branch.
// Every entry it reads is verified against the trust history (the keys of
// the genesis entry, then of each keys.changed entry) before it is folded
// into the State; reading is incremental, so only entries after the last
// one read are fetched, verified and applied. Append, AppendIf and
// AppendBatch may be called from many goroutines at once: callers that
// append while a push is in flight share the next one (group commit, see
// AppendIf). No other method may run while any of them does.
type Ledger struct {
	repo     *gitstore.Repo
	signer   Signer
	identity object.Signature
	now      func() time.Time

	stateFile string
	loaded    bool // stateFile was tried
	savedSeq  uint64

	trust trust
	state *State

	group committer // the group commit of appends (group.go)
}

// Options configure a Ledger.
type Options struct {
	// Signer signs appended entries; a Ledger without one is read-only.
	Signer Signer
	// Identity is the committer of evidence commits.
	Identity object.Signature
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TrustedKeys pins the keys the genesis entry must be signed by; empty
	// means trust on first use (the genesis entry's own keys).
	TrustedKeys []signing.PublicKey
	// StateFile, when set, is where Save keeps the fold between processes
	// (in the repository's cache), so a new process reads only the entries
	// appended since. A missing or unreadable file means reading from the
	// first entry.
	StateFile string
}

// New returns a Ledger over repo's evidence branch.
func New(repo *gitstore.Repo, opts Options) *Ledger {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Ledger{
		repo: repo, signer: opts.Signer, identity: opts.Identity, now: now,
		stateFile: opts.StateFile,
		trust:     trust{pinned: opts.TrustedKeys},
		state:     NewState(),
	}
}

// State returns the fold of every entry read so far. It is the Ledger's
// own: callers must not modify it (Clone it to experiment).
func (l *Ledger) State() *State { return l.state }

// Sync reads, verifies and applies the entries appended to the evidence
// branch of the local mirror since the last read, and returns them. It
// fails, applying nothing from the bad entry on, with an error wrapping
// ErrRewritten when the branch does not extend what was read before
// (truncated, rewritten or deleted), and with a *VerifyError wrapping
// ErrUntrusted or ErrInvalid when an entry does not verify. The entries
// returned hold their bundles: use Update where they are not needed, as a
// first read of a long ledger would hold them all.
func (l *Ledger) Sync(ctx context.Context) ([]Entry, error) {
	var fresh []Entry
	err := l.update(ctx, func(e Entry) { fresh = append(fresh, e) })
	return fresh, err
}

// Update is Sync without returning the entries: it returns how many were
// applied.
func (l *Ledger) Update(ctx context.Context) (int, error) {
	n := 0
	err := l.update(ctx, func(Entry) { n++ })
	return n, err
}

// Load continues from the state saved in Options.StateFile, if there is a
// usable one, without reading the repository: a restarted process reports
// what it knew (metrics, status) before its first fetch. The first Sync or
// Update loads it otherwise; both verify every entry after it.
func (l *Ledger) Load() {
	if !l.loaded {
		l.loaded = true
		l.load()
	}
}

func (l *Ledger) update(ctx context.Context, applied func(Entry)) error {
	l.Load()
	tip, err := l.repo.Branch(Branch)
	if errors.Is(err, gitstore.ErrNotFound) {
		if l.state.Seq > 0 {
			return fmt.Errorf("read ledger: %w: branch %s was deleted, but entry %d (commit %s) was seen", ErrRewritten, Branch, l.state.Seq, short(l.state.Head.String()))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	if tip == l.state.Head {
		return nil
	}
	return l.read(ctx, tip, l.state, &l.trust, func(e Entry) error {
		if err := l.state.Apply(e); err != nil {
			return &VerifyError{Seq: e.Seq, Path: e.Path, Commit: e.Commit, Reason: "cannot be folded", Err: err}
		}
		applied(e)
		return nil
	})
}

// Entries returns every entry on the evidence branch of the local mirror,
// in order, each verified as Sync verifies. It reads the whole branch:
// use Sync and State, or Each, where the ledger may be long.
func (l *Ledger) Entries(ctx context.Context) ([]Entry, error) {
	var out []Entry
	err := l.Each(ctx, func(e Entry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// Each calls fn with every entry of the evidence branch in order, each
// verified against the trust history first, holding one entry at a time.
// It stops at the first entry that does not verify, after fn has seen
// every entry before it, and returns the error naming it.
func (l *Ledger) Each(ctx context.Context, fn func(Entry) error) error {
	tip, err := l.repo.Branch(Branch)
	if errors.Is(err, gitstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	t := trust{pinned: l.trust.pinned}
	return l.read(ctx, tip, NewState(), &t, fn)
}

// read verifies the entries after from up to tip and hands each to fn,
// oldest first (see scan); t is the trust in force after from, advanced as
// entries change it.
func (l *Ledger) read(ctx context.Context, tip plumbing.Hash, from *State, t *trust, fn func(Entry) error) error {
	pos := position{seq: from.Seq, head: from.Head, digest: from.Digest, keysSeq: from.KeysSeq, trust: *t}
	return scan(ctx, l.repo, tip, pos, t, scanOptions{}, fn)
}

// CheckSigner returns an error wrapping ErrUntrusted unless the ledger's
// signer may append: its key is among the keys trusted now. An empty
// ledger trusts whoever writes its genesis entry.
func (l *Ledger) CheckSigner() error {
	if l.signer == nil {
		return errors.New("append to ledger: no signing key configured")
	}
	if l.state.Seq == 0 {
		return nil
	}
	k := l.signer.PublicKey()
	if !HasKey(l.state.Keys, k.ID) {
		return fmt.Errorf("%w: signing key %s is not trusted by the ledger (trusted since entry %d: %s); admit its .pub under .reconciler/keys/ through an approved merge, or use a trusted key",
			ErrUntrusted, k.ID, l.state.KeysSeq, keyIDs(l.state.Keys))
	}
	return nil
}

func keyIDs(keys []Key) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ", ")
}

// Init writes the genesis entry of an empty ledger: it trusts the signer's
// key and keys (the repository's .reconciler/keys/*.pub at subject, the
// protected branch's head). It does nothing and returns false when the
// ledger already has entries.
func (l *Ledger) Init(ctx context.Context, subject, subjectName string, keys []signing.PublicKey) (bool, error) {
	return l.InitOver(ctx, subject, subjectName, keys, "")
}

// InitOver is Init for a ledger that starts over: reason, when not empty,
// says why (a previous ledger is gone, say) and is signed into the genesis
// entry's error field and summary, so that the audit trail starts with it.
func (l *Ledger) InitOver(ctx context.Context, subject, subjectName string, keys []signing.PublicKey, reason string) (bool, error) {
	if l.signer == nil {
		return false, errors.New("start ledger: no signing key configured")
	}
	own := l.signer.PublicKey()
	own.Source = "reconciler"
	set := KeySet(append([]signing.PublicKey{own}, keys...)...)
	ev := Event{
		Type: Genesis, Subject: subject, SubjectName: subjectName, Keys: set, Error: reason,
		Summary: fmt.Sprintf("ledger.genesis: %d trusted key(s): %s", len(set), keyIDs(set)),
	}
	if reason != "" {
		ev.Summary = oneLine(fmt.Sprintf("ledger.genesis (started over: %s): %d trusted key(s): %s", reason, len(set), keyIDs(set)))
	}
	stored, err := l.Append(ctx, ev)
	return len(stored) > 0, err
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimRight(line, "\r")
}

// Append signs the events and commits them, one commit per entry, to the
// evidence branch, then pushes the branch with a compare-and-swap. When
// another writer moved the branch first, Append fetches, drops the events
// the other writer already recorded (same type, run and subject) and
// retries. It returns the entries it stored. On error nothing is stored.
func (l *Ledger) Append(ctx context.Context, events ...Event) ([]Entry, error) {
	return l.AppendIf(ctx, nil, events...)
}

// AppendIf is Append with a precondition: check sees the state of every
// entry on the branch, freshly read on each attempt, and a non-nil error
// from it aborts the append and is returned. Together with the
// compare-and-swap this makes read-decide-append a transaction: a budget
// reservation is checked against exactly the entries it is appended after.
// check must not modify the state.
//
// Appends from several goroutines are pushed together: those queued while
// a push is in flight are built on top of it, each check seeing every
// entry queued or in flight before it, and pushed with one
// compare-and-swap as soon as it returns; each call returns once its own
// entries are pushed, with exactly those.
//
// AppendIf refuses, wrapping ErrUntrusted or ErrRewritten, to append after
// an entry that does not verify, on a branch that no longer extends what
// was read, or with a signer the ledger does not trust.
func (l *Ledger) AppendIf(ctx context.Context, check func(*State) error, events ...Event) ([]Entry, error) {
	part := &Batch{Check: check, Events: events}
	if err := l.appendParts(ctx, []*Batch{part}); err != nil {
		return nil, err
	}
	return part.Stored, part.Err
}

// Batch is one caller's part of an AppendBatch: a precondition and the
// events it guards, and what became of them.
type Batch struct {
	Check  func(*State) error
	Events []Event
	// Stored holds the entries appended for this part; Err is its
	// check's error or why its events could not be built, when the rest
	// of the batch was appended without them.
	Stored []Entry
	Err    error
}

// AppendBatch appends the events of several callers in one push: each
// part's check sees the state as the parts before it leave it (so a claim
// two parts both make lands once), a part whose check fails is left out
// with its error, and the rest are committed as one chain and pushed with
// one compare-and-swap, retried as AppendIf retries. It is AppendIf for
// many, at the cost of one append: what a pass of many agents writes
// costs a few pushes, not one per entry. Genesis and keys.changed, which
// change who may sign, are appended alone (AppendIf).
func (l *Ledger) AppendBatch(ctx context.Context, parts []*Batch) error {
	for _, b := range parts {
		for _, ev := range b.Events {
			if ev.Type == Genesis || ev.Type == KeysChanged {
				return fmt.Errorf("append to ledger: %s is appended alone, not in a batch", ev.Type)
			}
		}
	}
	return l.appendParts(ctx, parts)
}

// appendParts is AppendIf and AppendBatch: the parts go to the group
// committer (group.go), which reads what was appended since, checks and
// builds every part on the state the parts before it leave (those of other
// callers queued or in flight included), and pushes them with one
// compare-and-swap, retried with backoff when another writer moved the
// branch. A lone part with nothing in flight is built on the ledger's
// state itself (its check must not modify it); otherwise on a speculative
// copy the committer keeps, so appends do not copy the state each time.
func (l *Ledger) appendParts(ctx context.Context, parts []*Batch) error {
	if l.signer == nil {
		return fmt.Errorf("append to ledger: no signing key configured")
	}
	return l.submit(ctx, parts)
}

// withoutRecorded drops events that already appear among recent entries,
// and a genesis event once the ledger has one.
func withoutRecorded(events []Event, recent []Entry, seq uint64) []Event {
	var out []Event
	for _, ev := range events {
		dup := ev.Type == Genesis && seq > 0
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

// buildOn signs and commits events in stage on top of at without moving
// any ref; st, the state the events are built on (at is its end, or the
// end of entries built on it), is read for the attempt of a transcript's
// run and may be nil when no event holds one.
func (l *Ledger) buildOn(ctx context.Context, stage *gitstore.Stage, at tip, st *State, events []Event) ([]Entry, error) {
	parent := at.head
	prev := at.digest
	seq := at.seq
	key := l.signer.PublicKey().ID
	var out []Entry
	for _, ev := range events {
		seq++
		files := []gitstore.FileChange{}
		if ev.Transcript != nil {
			if !validRunID(ev.RunID) {
				return nil, fmt.Errorf("append %s: a transcript needs the run id it belongs to, got %q", ev.Type, ev.RunID)
			}
			if st == nil {
				return nil, fmt.Errorf("append %s: internal error: no state for a transcript's attempt", ev.Type)
			}
			if rn := st.Run(ev.RunID); ev.Attempt == 0 && rn != nil && rn.Attempt > 1 {
				// A retry's transcript is stored apart from the earlier
				// attempts', at a path the signed attempt names.
				ev.Attempt = rn.Attempt
			}
			ev.TranscriptDigest = digest(ev.Transcript)
			files = append(files, gitstore.FileChange{Path: AttemptTranscriptPath(ev.RunID, ev.Attempt), Status: "added", Mode: filemode.Regular, Content: ev.Transcript})
		}
		if _, err := ev.Typed(); err != nil {
			return nil, fmt.Errorf("append %s: %w", ev.Type, err)
		}
		if ev.Type == Genesis && seq != 1 {
			return nil, fmt.Errorf("append %s: only entry 1 may be one", Genesis)
		}
		p := Predicate{Seq: seq, Prev: prev, Time: l.now().UTC().Truncate(time.Millisecond), Event: ev}
		statement, err := newStatement(p)
		if err != nil {
			return nil, err
		}
		bundle, err := l.signer.SignStatement(ctx, statement)
		if err != nil {
			return nil, fmt.Errorf("sign ledger entry %d: %w", seq, err)
		}
		path := EntryPath(seq)
		files = append(files, gitstore.FileChange{Path: path, Status: "added", Mode: filemode.Regular, Content: bundle})
		tree, err := stage.WriteTree(parent, files)
		if err != nil {
			return nil, fmt.Errorf("write ledger entry %d: %w", seq, err)
		}
		var parents []plumbing.Hash
		if !parent.IsZero() {
			parents = []plumbing.Hash{parent}
		}
		sig := l.identity
		sig.When = p.Time
		commit, err := stage.CreateCommit(gitstore.NewCommit{Tree: tree, Parents: parents, Author: sig, Committer: sig, Message: ev.Summary + "\n"})
		if err != nil {
			return nil, fmt.Errorf("commit ledger entry %d: %w", seq, err)
		}
		p.Event.Transcript = nil
		d := digest(bundle)
		out = append(out, Entry{Predicate: p, Path: path, Commit: commit, Bundle: bundle, Digest: d, Signer: key})
		parent, prev = commit, d
	}
	return out, nil
}

// ValidRunID reports whether s is a well-formed run id (lower-case
// letters, digits and '-', at most 64): for callers that check an id
// before it reaches the ledger.
func ValidRunID(s string) bool { return validRunID(s) }

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

// Transcript returns the transcript of a run (of its last attempt that
// stored one), checked against the digest its signed entry records.
// ErrNotFound-wrapping errors mean the run has no transcript.
func (l *Ledger) Transcript(ctx context.Context, runID string) ([]byte, Entry, error) {
	if _, err := l.Update(ctx); err != nil {
		return nil, Entry{}, err
	}
	var e *Entry
	if r := l.state.Run(runID); r != nil {
		e = r.Transcript
	}
	if e == nil {
		return nil, Entry{}, fmt.Errorf("run %s: %w: no transcript on %s", runID, gitstore.ErrNotFound, Branch)
	}
	b, err := l.repo.ReadFile(e.Commit, AttemptTranscriptPath(runID, e.Attempt))
	if err != nil {
		return nil, *e, fmt.Errorf("transcript of run %s: %w", runID, err)
	}
	if digest(b) != e.TranscriptDigest {
		return nil, *e, fmt.Errorf("transcript of run %s: %w: its sha256 differs from the one entry %d signed", runID, ErrInvalid, e.Seq)
	}
	return b, *e, nil
}
