package gitstore

import (
	"crypto/sha1"
	"encoding/binary"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TestTreeCacheBounded: the cache never holds more than its bound, drops
// the oldest trees first, and keeps no tree larger than a quarter of it.
func TestTreeCacheBounded(t *testing.T) {
	var c treeCache
	hash := func(i int) plumbing.Hash {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		return plumbing.Hash(sha1.Sum(b[:]))
	}
	const per = 1000
	entries := make([]object.TreeEntry, per)
	n := 2 * maxCachedTreeEntries / per
	for i := range n {
		c.put(hash(i), entries)
		if c.entries > maxCachedTreeEntries {
			t.Fatalf("after %d trees the cache holds %d entries, more than %d", i+1, c.entries, maxCachedTreeEntries)
		}
	}
	if _, ok := c.get(hash(0)); ok {
		t.Fatal("the oldest tree is still cached")
	}
	if e, ok := c.get(hash(n - 1)); !ok || len(e) != per {
		t.Fatal("the newest tree is not cached")
	}
	c.put(hash(-1), make([]object.TreeEntry, maxCachedTreeEntries/4+1))
	if _, ok := c.get(hash(-1)); ok {
		t.Fatal("a tree larger than a quarter of the bound was cached")
	}
}
