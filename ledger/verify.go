package ledger

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/signing"
)

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("ledger verification failed")

// VerifyError names the first bad entry.
type VerifyError struct {
	Seq    uint64
	Path   string
	Commit plumbing.Hash
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "entry %d", e.Seq)
	if e.Path != "" {
		fmt.Fprintf(&b, " (%s", e.Path)
		if !e.Commit.IsZero() {
			fmt.Fprintf(&b, ", commit %s", e.Commit.String()[:12])
		}
		b.WriteString(")")
	}
	b.WriteString(": " + e.Reason)
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *VerifyError) Unwrap() []error {
	if errors.Is(e.Err, ErrUntrusted) || errors.Is(e.Err, ErrInvalid) {
		return []error{e.Err}
	}
	return []error{ErrInvalid, e.Err}
}

// Report is the result of a successful verification.
type Report struct {
	Entries int
	Head    plumbing.Hash
	// Signers counts entries per verifying key ID.
	Signers map[string]int
	// Keys are the keys trusted after the last entry; GenesisKeys those
	// the genesis entry named.
	Keys, GenesisKeys []Key
	// Pinned reports whether the genesis signer was checked against
	// VerifyOptions.TrustedKeys; otherwise the genesis keys were trusted
	// on first use.
	Pinned bool
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Protected is the protected branch whose commits (and those of every
	// agents/* proposal branch) may reference entries through Ledger-Entry
	// trailers; a reference past the end of the ledger means it was cut.
	Protected string
	// MaxTrailerScan bounds how many commits of the protected branch are
	// scanned for trailers; 0 means 10000.
	MaxTrailerScan int
	// TrustedKeys pins the keys the genesis entry must be signed by;
	// empty means trusting the genesis entry's own keys on first use.
	TrustedKeys []signing.PublicKey
}

// Verify checks the evidence branch of repo: the branch is a single chain of
// commits from a root, each adding exactly the next entry file (and nothing
// that changes an earlier file; transcripts/ only gains the files the entries
// sign); entry 1 is a genesis entry and every bundle verifies against the
// keys trusted at its position (the genesis keys, then those of each
// keys.changed entry, which a key trusted before it signed); each statement
// is a ledger statement whose seq is its position and whose prev is the
// sha256 of the previous bundle's bytes; each commit's message is the
// entry's summary; the spec commits entries name exist; and no commit on the
// protected or proposal branches references an entry the ledger does not
// have. The error is a *VerifyError naming the first bad entry, wrapping
// ErrInvalid, ErrUntrusted or (for a cut ledger) ErrRewritten.
//
// Verify reads each commit's trees on the entry's path only, comparing them
// with its parent's (so it is linear in the ledger's length), verifies
// signatures on runtime.NumCPU() workers, and holds a bounded number of
// bundles at a time.
func Verify(ctx context.Context, repo *gitstore.Repo, opts VerifyOptions) (*Report, error) {
	rep := &Report{Signers: map[string]int{}, Pinned: len(opts.TrustedKeys) > 0}
	head, err := repo.Branch(Branch)
	switch {
	case errors.Is(err, gitstore.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("verify ledger: %w", err)
	default:
		rep.Head = head
		chain, err := firstParentChain(ctx, repo, head)
		if err != nil {
			return nil, err
		}
		if err := verifyChain(ctx, repo, chain, opts, rep); err != nil {
			return nil, err
		}
	}
	if err := checkReferences(repo, uint64(rep.Entries), opts); err != nil {
		return nil, err
	}
	return rep, nil
}

// chainCommit is a commit of the evidence branch, as Verify reads it.
type chainCommit struct {
	hash plumbing.Hash
	rawCommit
}

// firstParentChain returns the first-parent chain from tip to the root,
// oldest first. It holds each commit's tree and message, not its content.
func firstParentChain(ctx context.Context, repo *gitstore.Repo, tip plumbing.Hash) ([]chainCommit, error) {
	var chain []chainCommit
	for h := tip; ; {
		if len(chain)%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		c, err := readCommit(repo, h)
		if err != nil {
			return nil, fmt.Errorf("verify ledger: %w", err)
		}
		chain = append(chain, chainCommit{h, c})
		if c.parents == 0 {
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

// verifyChain verifies the entries added by chain, oldest first.
func verifyChain(ctx context.Context, repo *gitstore.Repo, chain []chainCommit, opts VerifyOptions, rep *Report) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := runtime.NumCPU()
	ordered := make(chan *job, 8*workers)
	work := make(chan *job, 2*workers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ordered)
		defer close(work)
		w := walker{repo: repo, trust: newTrustAt(trust{pinned: opts.TrustedKeys})}
		for i, c := range chain {
			j := w.read(uint64(i+1), c)
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
	err := check(ctx, repo, ordered, rep)
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

// check checks the jobs in order: the walker's shape errors, then what
// Ledger.read checks of each entry (signature, seq, prev, summary, keys),
// then its transcripts and the commits it names.
func check(ctx context.Context, repo *gitstore.Repo, ordered <-chan *job, rep *Report) error {
	prev := ""
	var keysSeq uint64
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
		if p.SpecCommit != "" && !commitExists(repo, exists, p.SpecCommit) {
			return fail(fmt.Sprintf("spec commit %s does not exist: the protected branch was rewritten", p.SpecCommit), nil)
		}
		if p.Type == ProposalMerged && p.Proposal != nil && p.Proposal.MergeCommit != "" && !commitExists(repo, exists, p.Proposal.MergeCommit) {
			return fail(fmt.Sprintf("merge commit %s does not exist: the protected branch was rewritten", p.Proposal.MergeCommit), nil)
		}
		if p.Type == Genesis {
			rep.GenesisKeys = p.Keys
		}
		if p.Type == Genesis || p.Type == KeysChanged {
			rep.Keys = p.Keys
			keysSeq = j.seq
		}
		rep.Signers[j.key]++
		rep.Entries++
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
		want = TranscriptPath(p.RunID)
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
	repo  *gitstore.Repo
	trust *trustAt
	// trustSeq is the seq of the entry trust comes from.
	trustSeq uint64

	root, ledger []byte // the parent's root and ledger trees
	ledgerLast   int    // offset of the last entry in ledger
	dirName      string // the parent's last ledger/<dir>
	dir          []byte // and its tree
	trHash       plumbing.Hash
	tr           []byte // the parent's transcripts tree, when read
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
	blob, reason, err := w.step(c.tree, seq)
	if reason != "" || err != nil {
		return fail(reason, err)
	}
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
	w.root, w.ledger, w.ledgerLast = root, ledger, lastOff
	w.dirName, w.dir = dirName, dir
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
func checkDir(repo *gitstore.Repo, path string, parent, dir []byte, want string) (*treeEntry, error) {
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
func describe(repo *gitstore.Repo, path string, prev, cur []byte, want string) error {
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

// rawCommit is what Verify reads of a commit.
type rawCommit struct {
	tree    plumbing.Hash
	parent  plumbing.Hash // the first
	parents int
	message string
}

func readCommit(repo *gitstore.Repo, h plumbing.Hash) (rawCommit, error) {
	typ, b, err := repo.RawObject(h)
	if err != nil {
		return rawCommit{}, err
	}
	if typ != plumbing.CommitObject {
		return rawCommit{}, fmt.Errorf("object %s is a %s, not a commit", h, typ)
	}
	var c rawCommit
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok {
			rest = nil
		}
		b = rest
		if len(line) == 0 {
			c.message = string(b)
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("tree ")); ok {
			if c.tree, err = parseHex(v); err != nil {
				return rawCommit{}, fmt.Errorf("commit %s: tree: %w", h, err)
			}
		} else if v, ok := bytes.CutPrefix(line, []byte("parent ")); ok {
			p, err := parseHex(v)
			if err != nil {
				return rawCommit{}, fmt.Errorf("commit %s: parent: %w", h, err)
			}
			if c.parents == 0 {
				c.parent = p
			}
			c.parents++
		}
	}
	if c.tree.IsZero() {
		return rawCommit{}, fmt.Errorf("commit %s has no tree", h)
	}
	return c, nil
}

func parseHex(b []byte) (plumbing.Hash, error) {
	var h plumbing.Hash
	if len(b) != 2*len(h) {
		return h, fmt.Errorf("%q is not an object id", b)
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return h, fmt.Errorf("%q is not an object id", b)
	}
	return h, nil
}

func readTree(repo *gitstore.Repo, h plumbing.Hash) ([]byte, error) {
	typ, b, err := repo.RawObject(h)
	if err != nil {
		return nil, err
	}
	if typ != plumbing.TreeObject {
		return nil, fmt.Errorf("object %s is a %s, not a tree", h, typ)
	}
	return b, nil
}

func readBlob(repo *gitstore.Repo, h plumbing.Hash) ([]byte, error) {
	typ, b, err := repo.RawObject(h)
	if err != nil {
		return nil, err
	}
	if typ != plumbing.BlobObject {
		return nil, fmt.Errorf("object %s is a %s, not a file", h, typ)
	}
	return b, nil
}

// treeEntry is one entry of a raw tree: "<mode> <name>\x00<20-byte hash>".
type treeEntry struct {
	mode, name []byte
	hash       plumbing.Hash
	raw        []byte
}

func (e *treeEntry) isDir() bool { return string(e.mode) == "40000" }

// nextEntry parses the first entry of a raw tree.
func nextEntry(tree []byte) (treeEntry, []byte, error) {
	sp := bytes.IndexByte(tree, ' ')
	if sp < 0 {
		return treeEntry{}, nil, errors.New("malformed tree: entry without a mode")
	}
	nul := bytes.IndexByte(tree[sp+1:], 0)
	if nul < 0 || len(tree) < sp+1+nul+1+20 {
		return treeEntry{}, nil, errors.New("malformed tree: truncated entry")
	}
	end := sp + 1 + nul + 1 + 20
	e := treeEntry{mode: tree[:sp], name: tree[sp+1 : sp+1+nul], raw: tree[:end]}
	copy(e.hash[:], tree[end-20:end])
	return e, tree[end:], nil
}

// findEntry returns the entry called name of a raw tree.
func findEntry(tree []byte, name string) (treeEntry, bool) {
	for len(tree) > 0 {
		e, rest, err := nextEntry(tree)
		if err != nil {
			return treeEntry{}, false
		}
		if string(e.name) == name {
			return e, true
		}
		tree = rest
	}
	return treeEntry{}, false
}

// gitLess orders entries as git sorts a tree: by name, a directory's name
// followed by "/".
func gitLess(a, b *treeEntry) bool {
	an, bn := a.name, b.name
	n := min(len(an), len(bn))
	if c := bytes.Compare(an[:n], bn[:n]); c != 0 {
		return c < 0
	}
	ac, bc := byte(0), byte(0)
	if len(an) > n {
		ac = an[n]
	} else if a.isDir() {
		ac = '/'
	}
	if len(bn) > n {
		bc = bn[n]
	} else if b.isDir() {
		bc = '/'
	}
	return ac < bc
}

// diffTrees calls fn, in tree order, with each entry that differs between
// the raw trees prev and cur: p is nil for an added entry, c for a removed
// one; fn must not keep p or c. It stops at fn's first error.
func diffTrees(prev, cur []byte, fn func(p, c *treeEntry) error) error {
	var a, b treeEntry
	var err error
	next := func(t *[]byte, e *treeEntry) bool {
		if len(*t) == 0 || err != nil {
			return false
		}
		*e, *t, err = nextEntry(*t)
		return err == nil
	}
	aok, bok := next(&prev, &a), next(&cur, &b)
	for (aok || bok) && err == nil {
		var ferr error
		switch {
		case aok && bok && bytes.Equal(a.name, b.name):
			if !bytes.Equal(a.raw, b.raw) {
				ferr = fn(&a, &b)
			}
			aok, bok = next(&prev, &a), next(&cur, &b)
		case !bok || aok && gitLess(&a, &b):
			ferr = fn(&a, nil)
			aok = next(&prev, &a)
		default:
			ferr = fn(nil, &b)
			bok = next(&cur, &b)
		}
		if ferr != nil {
			return ferr
		}
	}
	return err
}

// dsseParts are the parts of a bundle in the exact shape signing.Signer
// writes it.
type dsseParts struct {
	hint         string
	payload, sig []byte
}

// canonical is the shape of the bundles signing.Signer writes, as JSON
// tokens; "" stands for a base64 string.
var canonical = []string{
	`{`, `"mediaType"`, `:`, `"application/vnd.dev.sigstore.bundle.v0.3+json"`, `,`,
	`"verificationMaterial"`, `:`, `{`, `"publicKey"`, `:`, `{`, `"hint"`, `:`, ``, `}`, `}`, `,`,
	`"dsseEnvelope"`, `:`, `{`, `"payload"`, `:`, ``, `,`,
	`"payloadType"`, `:`, `"` + PayloadType + `"`, `,`,
	`"signatures"`, `:`, `[`, `{`, `"sig"`, `:`, ``, `}`, `]`, `}`, `}`,
}

// parseCanonical reads a bundle that has exactly the shape signing.Signer
// writes (any JSON whitespace between tokens, standard padded base64):
// nothing more, nothing less, no escapes. Whatever else sigstore-go may
// accept is left to it (ok is false).
func parseCanonical(b []byte) (dsseParts, bool) {
	var parts dsseParts
	var strs [3][]byte
	n := 0
	for _, tok := range canonical {
		b = skipSpace(b)
		if tok != "" {
			if !bytes.HasPrefix(b, []byte(tok)) {
				return parts, false
			}
			b = b[len(tok):]
			continue
		}
		if len(b) == 0 || b[0] != '"' {
			return parts, false
		}
		end := 1
		for end < len(b) && isBase64Char(b[end]) {
			end++
		}
		if end == len(b) || b[end] != '"' {
			return parts, false
		}
		strs[n], n = b[1:end], n+1
		b = b[end+1:]
	}
	if len(skipSpace(b)) != 0 {
		return parts, false
	}
	parts.hint = string(strs[0])
	var err error
	if parts.payload, err = base64.StdEncoding.DecodeString(string(strs[1])); err != nil {
		return parts, false
	}
	if parts.sig, err = base64.StdEncoding.DecodeString(string(strs[2])); err != nil {
		return parts, false
	}
	return parts, true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

func isBase64Char(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

// verifyEntry is t.verify(seq, bundle) with a fast path for the bundles
// signing.Signer writes: for an entry after the first whose bundle has that
// shape (parts) and whose key hint is a trusted ECDSA P-256 key's ID, it
// checks the signature over the DSSE pre-authentication encoding with
// ecdsa.VerifyASN1 (what sigstore-go ends up doing for such a bundle), then
// decodes the statement as t.verify does. Anything else, including every
// failure, goes through t.verify and sigstore-go, so that what is rejected
// and why is exactly what t.verify says.
func verifyEntry(t *trustAt, seq uint64, bundle []byte, parts *dsseParts) (Predicate, signing.PublicKey, error) {
	if seq > 1 && parts != nil {
		if p, key, ok := t.fastVerify(parts); ok {
			return p, key, nil
		}
	}
	return t.t.verify(seq, bundle)
}

// fastVerify is verifyEntry's fast path for an entry after the first; ok
// is false for whatever it does not accept.
func (t *trustAt) fastVerify(parts *dsseParts) (Predicate, signing.PublicKey, bool) {
	k, ok := t.fast[parts.hint]
	if !ok || t.t.verifier == nil {
		return Predicate{}, signing.PublicKey{}, false
	}
	h := sha256.Sum256(pae(PayloadType, parts.payload))
	if !ecdsa.VerifyASN1(k.key, h[:], parts.sig) {
		return Predicate{}, signing.PublicKey{}, false
	}
	p, err := parseStatement(parts.payload)
	if err != nil || p.Type == Genesis {
		return Predicate{}, signing.PublicKey{}, false
	}
	return p, k.pub, true
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, 32+len(payloadType)+len(payload))
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// checkReferences looks for Ledger-Entry trailers that point past the end of
// the ledger on the protected branch and on proposal branches.
func checkReferences(repo *gitstore.Repo, last uint64, opts VerifyOptions) error {
	n, commit, err := MaxReference(repo, opts.Protected, opts.MaxTrailerScan)
	if err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	if n > last {
		return &VerifyError{Seq: last + 1, Path: EntryPath(last + 1), Err: ErrRewritten,
			Reason: fmt.Sprintf("missing: commit %s references entry %d but the ledger ends at %d (entries were cut off or the branch was force-pushed)", commit.String()[:12], n, last)}
	}
	return nil
}

// MaxReference returns the highest entry number a Ledger-Entry trailer
// names, and the commit carrying it, among the last max first-parent
// commits of the protected branch (and the commits they merge) and of every
// agents/* proposal branch; 0 when there is none. max 0 means 10000.
func MaxReference(repo *gitstore.Repo, protected string, max int) (uint64, plumbing.Hash, error) {
	if max == 0 {
		max = 10000
	}
	var heads []plumbing.Hash
	if protected != "" {
		if h, err := repo.Branch(protected); err == nil {
			heads = append(heads, h)
		}
	}
	proposals, err := repo.Branches("agents/")
	if err != nil {
		return 0, plumbing.ZeroHash, err
	}
	for _, name := range slices.Sorted(maps.Keys(proposals)) {
		heads = append(heads, proposals[name])
	}
	var best uint64
	var at plumbing.Hash
	for _, h := range heads {
		commits, err := repo.FirstParents(h, max)
		if err != nil {
			return 0, plumbing.ZeroHash, err
		}
		for _, c := range commits {
			for _, parent := range append([]plumbing.Hash{c.Hash}, c.ParentHashes...) {
				pc := c
				if parent != c.Hash {
					if pc, err = repo.Commit(parent); err != nil {
						continue
					}
				}
				v, ok := gitstore.TrailerValue(pc.Message, "Ledger-Entry")
				if !ok {
					continue
				}
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil && n > best {
					best, at = n, pc.Hash
				}
			}
		}
	}
	return best, at, nil
}
