package ledger

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
)

// fastShape lets the walker check that a commit adds exactly its entry
// without reading the commit's ledger trees. Entry names are increasing
// fixed-width numbers and git sorts tree entries by name, so the
// ledger/<dir> tree of the commit adding entry seq is the prefix, through
// that entry, of the directory's tree at the tip; and its ledger tree is
// the tip's up to that directory's entry, followed by that directory with
// the prefix's hash. The walker computes those two trees from the tip's
// (read once per directory) and compares their hash with the ledger tree
// the commit's root names: equal hashes mean equal trees, so the commit
// changes ledger/ exactly by adding entry seq. When they differ (an entry
// modified after it was added, a stray file), the walker reads the
// commit's trees as before and names the change.
type fastShape struct {
	ledger []byte // the tip's ledger tree
	// dir is the tip's tree of the directory the walker is in, and ends
	// the offset in it just past each entry, by name.
	dirName string
	dir     []byte
	ends    map[string]int
	hashes  map[string]plumbing.Hash
	// prefix is ledger up to dirName's entry.
	prefix []byte
	// bufs hold the expected ledger trees of the commit being checked and
	// of its parent (the walker's), alternately, so that the walk does not
	// allocate one per entry.
	bufs [2][]byte
	// roots are the expected root trees, alternately likewise.
	roots [2][]byte
	next  int
}

// newFastShape reads the tip's ledger tree; nil when it has none (the
// walker then reads every commit's trees).
func newFastShape(w *walker, tipTree plumbing.Hash) *fastShape {
	root, err := readTree(w.repo, tipTree)
	if err != nil {
		return nil
	}
	le, ok := findEntry(root, "ledger")
	if !ok || !le.isDir() {
		return nil
	}
	ledger, err := readTree(w.repo, le.hash)
	if err != nil {
		return nil
	}
	return &fastShape{ledger: ledger}
}

// enter loads the tip's tree of directory name; false when the tip has no
// such directory.
func (f *fastShape) enter(w *walker, name string) bool {
	if f.dirName == name && f.dir != nil {
		return true
	}
	f.dirName, f.dir, f.ends, f.hashes, f.prefix = name, nil, nil, nil, nil
	off := 0
	for rest := f.ledger; len(rest) > 0; {
		e, next, err := nextEntry(rest)
		if err != nil {
			return false
		}
		if string(e.name) == name {
			if !e.isDir() {
				return false
			}
			dir, err := readTree(w.repo, e.hash)
			if err != nil {
				return false
			}
			f.prefix = f.ledger[:off]
			f.dir = dir
			f.ends, f.hashes = map[string]int{}, map[string]plumbing.Hash{}
			pos := 0
			for drest := dir; len(drest) > 0; {
				de, dnext, err := nextEntry(drest)
				if err != nil {
					return false
				}
				pos += len(drest) - len(dnext)
				if string(de.mode) == "100644" {
					f.ends[string(de.name)] = pos
					f.hashes[string(de.name)] = de.hash
				}
				drest = dnext
			}
			return true
		}
		off += len(rest) - len(next)
		rest = next
	}
	return false
}

// step is walker.step's fast path for the commit with root tree tree adding
// entry seq: the entry's blob hash and true when the commit changes
// nothing but ledger/ (by adding exactly this entry) and transcripts/;
// false when the walker must read the commit's trees to tell.
func (f *fastShape) step(w *walker, tree plumbing.Hash, seq uint64) (plumbing.Hash, bool) {
	dirName := fmt.Sprintf("%09d", seq/1000)
	file := fmt.Sprintf("%012d.json", seq)
	if !f.enter(w, dirName) {
		return plumbing.ZeroHash, false
	}
	end, ok := f.ends[file]
	if !ok {
		return plumbing.ZeroHash, false
	}
	// The commit's ledger trees, if they are the expected ones, add exactly
	// entry seq to the parent's only if the parent's are the expected ones
	// too: known when the fast path took the parent, else compared (first:
	// it computes the parent's in the buffer the commit's go to).
	if !w.fastParent && !f.parentMatches(w, seq) {
		return plumbing.ZeroHash, false
	}
	if !f.enter(w, dirName) { // parentMatches may have moved to another directory
		return plumbing.ZeroHash, false
	}
	if root, ledger, ledgerHash, dirHash, ok := f.byDelta(w, tree, dirName, end); ok {
		w.root, w.ledger, w.ledgerLast, w.ledgerHash = root, ledger, len(f.prefix), ledgerHash
		w.dirName, w.dir, w.dirHash = dirName, f.dir[:end], dirHash
		f.next = 1 - f.next // keep this one as the next commit's parent
		return f.hashes[file], true
	}
	dir, ledger, dirHash := f.expected(dirName, end)
	ledgerHash := treeHash(ledger)
	// Most commits change nothing at the root but the ledger tree: then the
	// root is the parent's with the expected ledger tree, and its hash is
	// the commit's tree. Otherwise (the commit adds a transcript, or is not
	// what it should be) the walker reads the root.
	root := f.expectedRoot(w.root, ledgerHash)
	if root == nil || treeHash(root) != tree {
		var err error
		if root, err = readTree(w.repo, tree); err != nil {
			return plumbing.ZeroHash, false
		}
		le, ok := findEntry(root, "ledger")
		if !ok || !le.isDir() || le.hash != ledgerHash {
			return plumbing.ZeroHash, false
		}
		// Nothing but ledger and transcripts changes at the root.
		if !onlyLedgerChanges(w.root, root) {
			return plumbing.ZeroHash, false
		}
	}
	w.root, w.ledger, w.ledgerLast, w.ledgerHash = root, ledger, len(f.prefix), ledgerHash
	w.dirName, w.dir, w.dirHash = dirName, dir, dirHash
	f.next = 1 - f.next // keep this one as the next commit's parent
	return f.hashes[file], true
}

// expectedRoot returns, in the buffer the commit's trees go to, the root
// tree parent (raw) with its ledger entry's hash replaced by ledger (or
// just that ledger entry when parent is empty); nil when parent has
// entries but no ledger directory.
func (f *fastShape) expectedRoot(parent []byte, ledger plumbing.Hash) []byte {
	out := f.roots[f.next][:0]
	if len(parent) == 0 {
		out = append(out, "40000 ledger\x00"...)
		out = append(out, ledger[:]...)
		f.roots[f.next] = out
		return out
	}
	found := false
	for rest := parent; len(rest) > 0; {
		e, next, err := nextEntry(rest)
		if err != nil {
			return nil
		}
		out = append(out, e.raw...)
		if string(e.name) == "ledger" && e.isDir() {
			copy(out[len(out)-len(ledger):], ledger[:])
			found = true
		}
		rest = next
	}
	f.roots[f.next] = out
	if !found {
		return nil
	}
	return out
}

// expected returns the ledger/<dir> and ledger trees of the commit whose
// directory dirName (the one entered) ends at end, and the hash of the
// first.
func (f *fastShape) expected(dirName string, end int) (dir, ledger []byte, dirHash plumbing.Hash) {
	dir = f.dir[:end]
	dirHash = treeHash(dir)
	ledger = f.bufs[f.next][:0]
	ledger = append(ledger, f.prefix...)
	ledger = append(ledger, "40000 "...)
	ledger = append(ledger, dirName...)
	ledger = append(ledger, 0)
	ledger = append(ledger, dirHash[:]...)
	f.bufs[f.next] = ledger
	return dir, ledger, dirHash
}

// parentMatches reports whether the walker's trees of the parent of the
// commit adding seq (read by the slow path, or at the start of an
// incremental read) are the ones the tip's trees give for entry seq-1.
func (f *fastShape) parentMatches(w *walker, seq uint64) bool {
	if seq == 1 {
		return w.ledger == nil
	}
	p := seq - 1
	dirName := fmt.Sprintf("%09d", p/1000)
	if !f.enter(w, dirName) {
		return false
	}
	end, ok := f.ends[fmt.Sprintf("%012d.json", p)]
	if !ok {
		return false
	}
	dir, ledger, _ := f.expected(dirName, end)
	return w.dirName == dirName && bytes.Equal(w.dir, dir) && bytes.Equal(w.ledger, ledger)
}

// byDelta is step's check of a commit whose parent's trees are the
// expected ones and in the same ledger/<dir> (whose hash the walker
// keeps), without hashing that directory's tree, which holds up to 1000
// entries: it reads the commit's root and ledger trees, which must be the
// parent's with the new ledger tree and the expected ledger tree but for
// the directory's hash; and the pack must store the directory's tree as a
// delta against the parent's that gives exactly the expected tree (the
// parent's plus entry seq), which deltaYields checks against the delta's
// few bytes. A pack's index maps each hash to the object with that hash
// (see gitstore.ObjectReader.Delta), so the directory the commit's ledger
// tree names is the expected one. It returns the commit's root and ledger
// trees and their hashes; false when any of it does not hold, for step to
// check the commit by hashing the expected trees.
func (f *fastShape) byDelta(w *walker, tree plumbing.Hash, dirName string, end int) (root, ledger []byte, ledgerHash, dirHash plumbing.Hash, ok bool) {
	fail := func() ([]byte, []byte, plumbing.Hash, plumbing.Hash, bool) {
		return nil, nil, plumbing.ZeroHash, plumbing.ZeroHash, false
	}
	ds, isDS := w.repo.(deltaSource)
	if !isDS || !ds.hasDeltas() || w.dirName != dirName || w.dirHash.IsZero() || len(w.dir) == 0 || len(w.dir) >= end {
		return fail()
	}
	root, err := readTree(w.repo, tree)
	if err != nil {
		return fail()
	}
	le, found := findEntry(root, "ledger")
	if !found || !le.isDir() {
		return fail()
	}
	// The ledger tree must be f.prefix, then "40000 <dirName>\x00<hash>":
	// the parent's (w.ledger, the expected one) with another hash at its
	// end. That is learnt from its delta against the parent's when the
	// pack stores it so (deltaTail), else by reading it.
	head := len(f.prefix) + len("40000 ") + len(dirName) + 1
	isHead := func(t []byte) bool {
		return len(t) == head+len(dirHash) && bytes.HasPrefix(t, f.prefix) && string(t[len(f.prefix):head-1]) == "40000 "+dirName && t[head-1] == 0
	}
	ledger = nil
	if isHead(w.ledger) && !w.ledgerHash.IsZero() {
		buf := append(f.bufs[f.next][:0], w.ledger...)
		if delta, isDelta := ds.Delta(le.hash, w.ledgerHash); isDelta && deltaTail(delta, w.ledger, buf[head:]) {
			ledger = buf
			f.bufs[f.next] = buf
		}
	}
	if ledger == nil {
		if ledger, err = readTree(w.repo, le.hash); err != nil || !isHead(ledger) {
			return fail()
		}
	}
	copy(dirHash[:], ledger[head:])
	delta, isDelta := ds.Delta(dirHash, w.dirHash)
	// The parent's directory tree is f.dir[:len(w.dir)] (the expected one,
	// as step made sure), which makes it want's prefix in memory.
	if !isDelta || !deltaYields(delta, f.dir[:len(w.dir)], f.dir[:end]) {
		return fail()
	}
	// Nothing but ledger and transcripts changes at the root.
	if exp := f.expectedRoot(w.root, le.hash); exp == nil || !bytes.Equal(exp, root) {
		if !onlyLedgerChanges(w.root, root) {
			return fail()
		}
	}
	deltaTaken.Add(1)
	return root, ledger, le.hash, dirHash, true
}

// onlyLedgerChanges reports whether raw root tree root differs from parent
// in nothing but its ledger and transcripts entries.
func onlyLedgerChanges(parent, root []byte) bool {
	return diffTrees(parent, root, func(p, c *treeEntry) error {
		switch entryName(p, c) {
		case "ledger", "transcripts":
			return nil
		}
		return errNotFast
	}) == nil
}

// deltaTaken counts the commits byDelta checked, for the tests.
var deltaTaken atomic.Int64

var errNotFast = errors.New("not the fast path's shape")

// treeHash is git's object id of a tree with raw content b.
func treeHash(b []byte) plumbing.Hash {
	h := sha1.New()
	h.Write([]byte("tree " + strconv.Itoa(len(b)) + "\x00"))
	h.Write(b)
	var out plumbing.Hash
	copy(out[:], h.Sum(nil))
	return out
}
