package gitstore

import (
	"fmt"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// treeCache holds the entries of the trees a Repo read or wrote last, by
// hash: a tree is immutable, so an entry never goes stale. Writing a tree
// on a base (a proposal on the protected branch, a ledger entry on the
// one before) reads the same large trees again and again: a pass of 100
// agents on a 10,000-file repository decoded its 1,000-entry directories
// 100 times, and every ledger entry the directory of its predecessor.
// Entries slices are shared: never modify one.
type treeCache struct {
	mu      sync.Mutex
	m       map[plumbing.Hash][]object.TreeEntry
	order   []plumbing.Hash // oldest first
	entries int
}

// maxCachedTreeEntries bounds the cache: about 25 MB of entries at most.
const maxCachedTreeEntries = 1 << 18

func (c *treeCache) get(h plumbing.Hash) ([]object.TreeEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[h]
	return e, ok
}

func (c *treeCache) put(h plumbing.Hash, entries []object.TreeEntry) {
	n := max(len(entries), 1)
	if n > maxCachedTreeEntries/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[plumbing.Hash][]object.TreeEntry)
	}
	if _, ok := c.m[h]; ok {
		return
	}
	for c.entries+n > maxCachedTreeEntries && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.entries -= max(len(c.m[old]), 1)
		delete(c.m, old)
	}
	c.m[h] = entries
	c.order = append(c.order, h)
	c.entries += n
}

// treeEntries returns the entries of tree h, from the cache or the
// object store; r.mu must be held.
func (r *Repo) treeEntries(h plumbing.Hash) ([]object.TreeEntry, error) {
	if e, ok := r.trees.get(h); ok {
		return e, nil
	}
	t, err := object.GetTree(r.repo.Storer, h)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, classify(err))
	}
	r.trees.put(h, t.Entries)
	return t.Entries, nil
}
