package ledger

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/signing"
)

// chainCommit is a commit of the evidence branch, as Verify reads it.
type chainCommit struct {
	hash plumbing.Hash
	rawCommit
}

// chainSince returns the first-parent chain from tip back to, not
// including, from (the root when fromSeq is 0), oldest first. It holds each
// commit's tree and message, not its content. When from is not on the
// chain, the branch no longer extends it: the error wraps ErrRewritten.
func chainSince(ctx context.Context, objs *scanObjects, tip, from plumbing.Hash, fromSeq uint64) ([]chainCommit, error) {
	var chain []chainCommit
	for h := tip; fromSeq == 0 || h != from; {
		if len(chain)%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if len(chain) == readerAfter {
			objs.upgrade()
		}
		c, err := readCommit(objs, h)
		if err != nil {
			return nil, fmt.Errorf("read ledger: %w", err)
		}
		chain = append(chain, chainCommit{h, c})
		if c.parents == 0 {
			if fromSeq > 0 {
				return nil, fmt.Errorf("read ledger: %w: %s no longer contains entry %d (commit %s) that was read before: entries were cut off or the branch was replaced", ErrRewritten, Branch, fromSeq, short(from.String()))
			}
			break
		}
		h = c.parent
	}
	slices.Reverse(chain)
	return chain, nil
}

// job is one entry on its way through Verify's pipeline: read by the walker,
// verified by a worker (or by the walker, for entries that may change the
// trusted keys), checked in order by the checker.
type job struct {
	seq         uint64
	commit      plumbing.Hash
	message     string
	bundle      []byte
	parts       *dsseParts
	transcripts []addedFile
	// trust is what the bundle is verified against and trustSeq the seq of
	// the genesis or keys.changed entry it comes from (0 before entry 1).
	trust    *trustAt
	trustSeq uint64
	// err is a failure of the commit's shape: the walk stopped here.
	err error

	ready chan struct{} // closed once the fields below are set
	p     Predicate
	key   string
	vErr  error
	// advanceErr is set when a verified genesis or keys.changed entry names
	// keys that cannot be used.
	advanceErr error
	digest     string
}

// addedFile is a transcript a commit adds, with the sha256 of its content.
type addedFile struct {
	path, digest string
}

// trustAt is the trust in force at a position, with the ECDSA keys of its
// verifier by key ID for the fast path (see verifyEntry).
type trustAt struct {
	t    trust
	fast map[string]fastKey
}

type fastKey struct {
	pub signing.PublicKey
	key *ecdsa.PublicKey
}

func newTrustAt(t trust) *trustAt {
	ta := &trustAt{t: t, fast: map[string]fastKey{}}
	pks, err := publicKeys(t.keys)
	if err != nil {
		return ta // advance parsed the same keys; the slow path decides
	}
	for _, pk := range pks {
		if k, ok := pk.Key.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
			ta.fast[pk.ID] = fastKey{pub: pk, key: k}
		}
	}
	return ta
}

// position is where a scan starts: after the entry seq, added by commit
// head, whose bundle has sha256 digest, with the trust in force after it
// (from the genesis or keys.changed entry keysSeq). The zero position is
// before the first entry.
type position struct {
	seq     uint64
	head    plumbing.Hash
	digest  string
	keysSeq uint64
	trust   trust
}

// scanOptions choose the checks a scan makes beyond those every reader
// makes.
type scanOptions struct {
	// commits checks that the spec and merge commits entries name exist.
	commits bool
}

// scan reads the entries after from up to tip, checks that each commit adds
// exactly its entry (comparing raw trees with its parent's), verifies the
// signatures on runtime.NumCPU() workers, checks each entry in order (seq,
// prev, summary, the trust in force, transcripts), and hands each to fn,
// oldest first, holding a bounded number of bundles at a time. It stops at
// the first entry that fails, after fn has seen every entry before it, and
// returns a *VerifyError naming it (or what fn returned). Genesis and
// keys.changed entries advance t, the caller's trust, as fn sees them.
func scan(ctx context.Context, repo *gitstore.Repo, tip plumbing.Hash, from position, t *trust, opts scanOptions, fn func(Entry) error) error {
	objs := &scanObjects{repo: repo}
	defer objs.close()
	var ahead *verifyAhead
	if from.seq == 0 {
		ahead = startAhead(ctx, objs, tip, from.trust)
		defer ahead.finish()
	}
	chain, err := chainSince(ctx, objs, tip, from.head, from.seq)
	ahead.finish()
	if err != nil {
		return err
	}
	if len(chain) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := walker{repo: objs, trust: newTrustAt(from.trust), trustSeq: from.keysSeq, ahead: ahead}
	w.fast = newFastShape(&w, chain[len(chain)-1].tree)
	if from.seq > 0 {
		if err := w.start(from.head); err != nil {
			return &VerifyError{Seq: from.seq, Path: EntryPath(from.seq), Commit: from.head, Reason: "cannot read the last entry read before", Err: err}
		}
	}
	workers := runtime.NumCPU()
	ordered := make(chan *job, 8*workers)
	work := make(chan *job, 2*workers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ordered)
		defer close(work)
		for i, c := range chain {
			j := w.read(from.seq+uint64(i+1), c)
			select {
			case ordered <- j:
			case <-ctx.Done():
				return
			}
			if j.err != nil {
				return
			}
			if j.ready == nil {
				continue
			}
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				if ctx.Err() != nil {
					return
				}
				j.verify()
				close(j.ready)
			}
		}()
	}
	err = check(ctx, repo, ordered, from, t, opts, fn)
	cancel()
	wg.Wait()
	return err
}

// verify verifies j's bundle against the trust in force at its position.
func (j *job) verify() {
	var key signing.PublicKey
	j.p, key, j.vErr = verifyEntry(j.trust, j.seq, j.bundle, j.parts)
	j.key = key.ID
	j.digest = digest(j.bundle)
}

// check checks the jobs in order: the walker's shape errors, then the
// signature, seq, prev, summary and keys of each entry, its transcripts and,
// with opts.commits, the commits it names; then hands it to fn.
func check(ctx context.Context, repo *gitstore.Repo, ordered <-chan *job, from position, t *trust, opts scanOptions, fn func(Entry) error) error {
	prev := from.digest
	keysSeq := from.keysSeq
	exists := map[string]bool{}
	for j := range ordered {
		if j.err != nil {
			return j.err
		}
		if j.ready != nil {
			select {
			case <-j.ready:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		fail := func(reason string, err error) error {
			return &VerifyError{Seq: j.seq, Path: EntryPath(j.seq), Commit: j.commit, Reason: reason, Err: err}
		}
		if j.trustSeq != keysSeq {
			// The walker read the keys in force from the entries as it
			// verified them; it cannot have missed one that verified.
			return fail(fmt.Sprintf("was verified against the keys of entry %d, but those of entry %d are in force", j.trustSeq, keysSeq), ErrUntrusted)
		}
		if j.vErr != nil {
			return fail("does not verify", j.vErr)
		}
		p := j.p
		if p.Seq != j.seq {
			return fail(fmt.Sprintf("statement says seq %d at position %d: entries were removed, reordered or moved", p.Seq, j.seq), nil)
		}
		if p.Prev != prev {
			return fail(fmt.Sprintf("prev is %q but the previous entry's digest is %q: the chain is broken", short(p.Prev), short(prev)), nil)
		}
		if msg := strings.TrimRight(j.message, "\n"); msg != p.Summary {
			return fail(fmt.Sprintf("commit message %q differs from the signed summary %q", msg, p.Summary), nil)
		}
		if j.advanceErr != nil {
			return fail("names keys that cannot be used", j.advanceErr)
		}
		if err := checkTranscripts(repo, j, fail); err != nil {
			return err
		}
		if opts.commits {
			if p.SpecCommit != "" && !commitExists(repo, exists, p.SpecCommit) {
				return fail(fmt.Sprintf("spec commit %s does not exist: the protected branch was rewritten", p.SpecCommit), nil)
			}
			if p.Type == ProposalMerged && p.Proposal != nil && p.Proposal.MergeCommit != "" && !commitExists(repo, exists, p.Proposal.MergeCommit) {
				return fail(fmt.Sprintf("merge commit %s does not exist: the protected branch was rewritten", p.Proposal.MergeCommit), nil)
			}
		}
		if p.Type == Genesis || p.Type == KeysChanged {
			if err := t.advance(p); err != nil {
				return fail("names keys that cannot be used", err)
			}
			keysSeq = j.seq
		}
		e := Entry{Predicate: p, Path: EntryPath(j.seq), Commit: j.commit, Bundle: j.bundle, Digest: j.digest, Signer: j.key}
		if err := fn(e); err != nil {
			return err
		}
		prev = j.digest
	}
	return ctx.Err()
}

// checkTranscripts checks that the transcripts j's commit adds are the one
// its entry signs, and that the signed transcript has the signed digest.
func checkTranscripts(repo *gitstore.Repo, j *job, fail func(string, error) error) error {
	p := j.p
	want := ""
	if p.TranscriptDigest != "" {
		want = AttemptTranscriptPath(p.RunID, p.Attempt)
	}
	got := ""
	for _, t := range j.transcripts {
		if t.path != want {
			return fail(fmt.Sprintf("commit adds %s, which the entry does not sign", t.path), nil)
		}
		got = t.digest
	}
	if want == "" {
		return nil
	}
	if got == "" {
		// Added by an earlier commit: read it at this one.
		b, err := repo.ReadFile(j.commit, want)
		if err != nil {
			return fail("transcript missing", err)
		}
		got = digest(b)
	}
	if got != p.TranscriptDigest {
		return fail(fmt.Sprintf("%s does not match the transcript digest the entry signed", want), nil)
	}
	return nil
}

// commitExists reports whether the commit hex names exists, remembering
// those that do in seen.
func commitExists(repo *gitstore.Repo, seen map[string]bool, hex string) bool {
	if seen[hex] {
		return true
	}
	if _, err := repo.Commit(plumbing.NewHash(hex)); err != nil {
		return false
	}
	seen[hex] = true
	return true
}

// walker reads the evidence commits in order, checking that each adds
// exactly its entry by comparing the raw trees on the entry's path with its
// parent's, which it keeps from the previous commit.
type walker struct {
	repo  objectSource
	trust *trustAt
	// trustSeq is the seq of the entry trust comes from.
	trustSeq uint64

	root, ledger []byte        // the parent's root and ledger trees
	ledgerLast   int           // offset of the last entry in ledger
	ledgerHash   plumbing.Hash // ledger's hash
	dirName      string        // the parent's last ledger/<dir>
	dir          []byte        // and its tree
	dirHash      plumbing.Hash // and that tree's hash
	trHash       plumbing.Hash
	tr           []byte // the parent's transcripts tree, when read
	// fast, when set, checks most commits from the tip's trees (see
	// fastShape); fastParent says it took the last commit.
	fast       *fastShape
	fastParent bool
	// ahead holds the entries verified while chainSince ran, against the
	// trust of the genesis entry with file genesisBlob (see verifyAhead).
	ahead       *verifyAhead
	genesisBlob plumbing.Hash
}

// start sets the walker at the commit that added the last entry read
// before, as if it had walked there: its root, ledger and last directory
// trees, and its transcripts tree's hash.
func (w *walker) start(head plumbing.Hash) error {
	c, err := readCommit(w.repo, head)
	if err != nil {
		return err
	}
	if w.root, err = readTree(w.repo, c.tree); err != nil {
		return err
	}
	le, ok := findEntry(w.root, "ledger")
	if !ok || !le.isDir() {
		return errors.New("its tree has no ledger directory")
	}
	if w.ledger, err = readTree(w.repo, le.hash); err != nil {
		return err
	}
	w.ledgerHash = le.hash
	var last treeEntry
	for rest, off := w.ledger, 0; len(rest) > 0; {
		e, next, err := nextEntry(rest)
		if err != nil {
			return err
		}
		last, w.ledgerLast = e, off
		off += len(rest) - len(next)
		rest = next
	}
	if last.raw == nil || !last.isDir() {
		return errors.New("its ledger directory has no entries")
	}
	w.dirName = string(last.name)
	if w.dir, err = readTree(w.repo, last.hash); err != nil {
		return err
	}
	w.dirHash = last.hash
	if te, ok := findEntry(w.root, "transcripts"); ok && te.isDir() {
		w.trHash = te.hash
	}
	return nil
}

// read reads the commit adding entry seq and returns its job: failed when
// the commit's shape is wrong, already verified when the entry may change
// the trusted keys (so the next entries are verified against the right
// ones), otherwise with ready set for a worker.
func (w *walker) read(seq uint64, c chainCommit) *job {
	h := c.hash
	path := EntryPath(seq)
	j := &job{seq: seq, commit: h, trust: w.trust, trustSeq: w.trustSeq}
	fail := func(reason string, err error) *job {
		j.err = &VerifyError{Seq: seq, Path: path, Commit: h, Reason: reason, Err: err}
		return j
	}
	if c.parents > 1 {
		return fail(fmt.Sprintf("commit %s is a merge; the evidence branch must be a single chain", h), ErrInvalid)
	}
	j.message = c.message
	blob, ok := plumbing.ZeroHash, false
	if w.fast != nil {
		blob, ok = w.fast.step(w, c.tree, seq)
	}
	w.fastParent = ok
	if !ok {
		var reason string
		var err error
		blob, reason, err = w.step(c.tree, seq)
		if reason != "" || err != nil {
			return fail(reason, err)
		}
	}
	var err error
	if j.transcripts, err = w.transcripts(); err != nil {
		var se *shapeError
		if errors.As(err, &se) {
			return fail(notExactly, se)
		}
		return fail("cannot read transcripts", err)
	}
	if j.bundle, err = readBlob(w.repo, blob); err != nil {
		return fail("cannot read entry file", err)
	}
	if r, ok := w.ahead.take(seq, blob, w.genesisBlob); ok && w.trustSeq == 1 {
		j.p, j.key, j.digest = r.p, r.key, digest(j.bundle)
		return j
	}
	if parts, ok := parseCanonical(j.bundle); ok {
		j.parts = &parts
		if seq > 1 && !mayChangeKeys(parts.payload) {
			j.ready = make(chan struct{})
			return j
		}
	}
	// Entry 1, a keys.changed entry, or a bundle the walker cannot read
	// without verifying it: verify it now, so that the entries after it
	// are verified against the keys it leaves in force.
	j.verify()
	if j.vErr == nil && (j.p.Type == Genesis || j.p.Type == KeysChanged) {
		next := w.trust.t
		if err := next.advance(j.p); err != nil {
			j.advanceErr = err
		} else {
			w.trust, w.trustSeq = newTrustAt(next), seq
			if seq == 1 {
				w.genesisBlob = blob
			}
		}
	}
	return j
}

// mayChangeKeys reports whether a statement may be a genesis or keys.changed
// entry: whether it holds one of those names, or any \u escape that could
// spell one.
func mayChangeKeys(payload []byte) bool {
	return bytes.Contains(payload, []byte(`\u`)) ||
		bytes.Contains(payload, []byte(`"`+KeysChanged+`"`)) ||
		bytes.Contains(payload, []byte(`"`+Genesis+`"`))
}

const notExactly = "commit does not add exactly this entry"

// shapeError says how a commit changes the evidence tree besides adding its
// entry: "removes ledger/000000000/000000000001.json".
type shapeError struct {
	verb, path string
}

func (e *shapeError) Error() string { return e.verb + " " + e.path }

// step checks commit tree against the parent's trees (kept from the previous
// step) and returns the hash of the entry file seq. A wrong shape returns
// the reason; an error without a reason is a read failure.
func (w *walker) step(tree plumbing.Hash, seq uint64) (plumbing.Hash, string, error) {
	expDir := fmt.Sprintf("%09d", seq/1000)
	expFile := fmt.Sprintf("%012d.json", seq)
	missing := "entry file missing: entries were removed, reordered or moved"
	shape := func(err error) (plumbing.Hash, string, error) {
		var se *shapeError
		if errors.As(err, &se) {
			return plumbing.ZeroHash, notExactly, se
		}
		return plumbing.ZeroHash, "cannot read tree", err
	}
	root, err := readTree(w.repo, tree)
	if err != nil {
		return shape(err)
	}
	var ledgerEntry, prevLedger *treeEntry
	err = diffTrees(w.root, root, func(p, c *treeEntry) error {
		name := entryName(p, c)
		switch name {
		case "ledger":
			// p and c are reused for the next entries: copy them.
			if p != nil {
				prevLedger = new(*p)
			}
			if c != nil {
				ledgerEntry = new(*c)
			}
			return nil
		case "transcripts":
			return nil // see transcripts
		}
		return changeError(p, c, name)
	})
	if err != nil {
		return shape(err)
	}
	if ledgerEntry == nil && prevLedger == nil {
		// Unchanged (or absent in both).
		if e, ok := findEntry(root, "ledger"); ok && e.isDir() {
			return w.noEntry(root, seq, expDir, expFile, missing)
		}
		return plumbing.ZeroHash, missing, nil
	}
	if ledgerEntry == nil {
		return shape(&shapeError{"removes", "ledger"})
	}
	if !ledgerEntry.isDir() {
		return shape(&shapeError{"replaces", "ledger"})
	}
	ledger, err := readTree(w.repo, ledgerEntry.hash)
	if err != nil {
		return shape(err)
	}
	// Fast path: the parent's ledger tree up to its last entry is a prefix,
	// then either that last directory changed, or it is kept and one new
	// directory follows.
	var head []byte
	var last *treeEntry
	if w.ledger != nil {
		head = w.ledger[:w.ledgerLast]
		e, _, err := nextEntry(w.ledger[w.ledgerLast:])
		if err != nil {
			return shape(err)
		}
		last = &e
	}
	var touched *treeEntry
	var parentDir []byte
	lastOff := len(head)
	if bytes.HasPrefix(ledger, head) {
		rest := ledger[len(head):]
		e1, rest, err1 := nextEntry(rest)
		var e2 treeEntry
		var err2 error
		if err1 == nil && len(rest) > 0 {
			e2, rest, err2 = nextEntry(rest)
		}
		switch {
		case err1 != nil || err2 != nil:
		case last != nil && bytes.Equal(e1.raw, last.raw) && e2.raw != nil && len(rest) == 0 && e2.isDir():
			touched, lastOff = &e2, len(head)+len(e1.raw)
		case last != nil && e2.raw == nil && e1.isDir() && bytes.Equal(e1.name, last.name) && e1.hash != last.hash:
			touched, parentDir = &e1, w.dir
		case last == nil && e2.raw == nil && e1.isDir():
			touched = &e1
		}
	}
	if touched == nil {
		if err := describe(w.repo, "ledger", w.ledger, ledger, expDir+"/"+expFile); err != nil {
			return shape(err)
		}
		return plumbing.ZeroHash, missing, nil
	}
	dirName := string(touched.name)
	dir, err := readTree(w.repo, touched.hash)
	if err != nil {
		return shape(err)
	}
	want := ""
	if dirName == expDir {
		want = expFile
	}
	file, err := checkDir(w.repo, "ledger/"+dirName, parentDir, dir, want)
	if err != nil {
		return shape(err)
	}
	if file == nil || string(file.name) != expFile || dirName != expDir {
		reason := missing
		if file != nil {
			reason += fmt.Sprintf(" (the commit adds ledger/%s/%s instead)", dirName, file.name)
		}
		return plumbing.ZeroHash, reason, nil
	}
	if string(file.mode) != "100644" {
		return plumbing.ZeroHash, fmt.Sprintf("entry file has mode %s, not a regular file's 100644", file.mode), nil
	}
	w.root, w.ledger, w.ledgerLast, w.ledgerHash = root, ledger, lastOff, ledgerEntry.hash
	w.dirName, w.dir, w.dirHash = dirName, dir, touched.hash
	return file.hash, "", nil
}

// noEntry is the failure of a commit that leaves the ledger as it was.
func (w *walker) noEntry(root []byte, seq uint64, expDir, expFile, missing string) (plumbing.Hash, string, error) {
	if w.dirName == expDir {
		if _, ok := findEntry(w.dir, expFile); ok {
			return plumbing.ZeroHash, "the parent commit already has this entry: the branch was rewritten", nil
		}
	}
	return plumbing.ZeroHash, missing, nil
}

// checkDir checks that dir is parent (nil for a new directory) plus
// entries appended at its end, and returns the first appended entry (nil
// when none is). want, when not empty, is the one entry that may be added.
func checkDir(repo objectSource, path string, parent, dir []byte, want string) (*treeEntry, error) {
	if !bytes.HasPrefix(dir, parent) {
		if err := describe(repo, path, parent, dir, want); err != nil {
			return nil, err
		}
		return nil, &shapeError{"rewrites", path}
	}
	rest := dir[len(parent):]
	if len(rest) == 0 {
		return nil, nil
	}
	first, rest, err := nextEntry(rest)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 && string(first.name) == want {
		second, _, err := nextEntry(rest)
		if err != nil {
			return nil, err
		}
		return nil, &shapeError{"adds", path + "/" + string(second.name)}
	}
	return &first, nil
}

// describe returns the first change from prev to cur (raw trees at path)
// other than adding want (a path relative to them, "" for nothing), naming
// the deepest path that changed; nil when there is none.
func describe(repo objectSource, path string, prev, cur []byte, want string) error {
	first, rest, _ := strings.Cut(want, "/")
	return diffTrees(prev, cur, func(p, c *treeEntry) error {
		name := entryName(p, c)
		sub := path + "/" + name
		wanted := first != "" && name == first
		switch {
		case p == nil && wanted && rest == "" && !c.isDir():
			return nil
		case (p == nil || p.isDir()) && c != nil && c.isDir():
			var pt []byte
			if p != nil {
				var err error
				if pt, err = readTree(repo, p.hash); err != nil {
					return err
				}
			}
			ct, err := readTree(repo, c.hash)
			if err != nil {
				return err
			}
			next := ""
			if wanted {
				next = rest
			}
			if err := describe(repo, sub, pt, ct, next); err != nil {
				return err
			}
			if p == nil && len(ct) == 0 {
				return &shapeError{"adds", sub}
			}
			return nil
		case p != nil && p.isDir() && c == nil:
			return &shapeError{"removes", sub}
		}
		return changeError(p, c, sub)
	})
}

// transcripts returns the files the commit whose root tree step just read
// adds under transcripts/, which may only gain files.
func (w *walker) transcripts() ([]addedFile, error) {
	e, ok := findEntry(w.root, "transcripts")
	var h plumbing.Hash
	if ok {
		if !e.isDir() {
			return nil, &shapeError{"adds", "transcripts"}
		}
		h = e.hash
	}
	if h == w.trHash {
		return nil, nil
	}
	if h.IsZero() {
		return nil, &shapeError{"removes", "transcripts"}
	}
	if w.tr == nil && !w.trHash.IsZero() {
		var err error
		if w.tr, err = readTree(w.repo, w.trHash); err != nil {
			return nil, err
		}
	}
	cur, err := readTree(w.repo, h)
	if err != nil {
		return nil, err
	}
	var added []addedFile
	err = diffTrees(w.tr, cur, func(p, c *treeEntry) error {
		name := "transcripts/" + entryName(p, c)
		if p != nil || c.isDir() {
			return changeError(p, c, name)
		}
		b, err := readBlob(w.repo, c.hash)
		if err != nil {
			return err
		}
		added = append(added, addedFile{path: name, digest: digest(b)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	w.trHash, w.tr = h, cur
	return added, nil
}

func entryName(p, c *treeEntry) string {
	if c != nil {
		return string(c.name)
	}
	return string(p.name)
}

// changeError names a change: the entry was added (p nil), removed (c nil)
// or modified.
func changeError(p, c *treeEntry, path string) error {
	switch {
	case p == nil:
		return &shapeError{"adds", path}
	case c == nil:
		return &shapeError{"removes", path}
	}
	return &shapeError{"modifies", path}
}
