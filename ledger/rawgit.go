package ledger

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
)

// objectSource is what the ledger reads git objects through: a
// *gitstore.Repo, or the *gitstore.ObjectReader a long scan reads with.
type objectSource interface {
	RawObject(h plumbing.Hash) (plumbing.ObjectType, []byte, error)
}

// rawCommit is what Verify reads of a commit.
type rawCommit struct {
	tree    plumbing.Hash
	parent  plumbing.Hash // the first
	parents int
	message string
}

func readCommit(repo objectSource, h plumbing.Hash) (rawCommit, error) {
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

func readTree(repo objectSource, h plumbing.Hash) ([]byte, error) {
	typ, b, err := repo.RawObject(h)
	if err != nil {
		return nil, err
	}
	if typ != plumbing.TreeObject {
		return nil, fmt.Errorf("object %s is a %s, not a tree", h, typ)
	}
	return b, nil
}

func readBlob(repo objectSource, h plumbing.Hash) ([]byte, error) {
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
