package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A store does not walk the cache: it counts what this process stored
// since its last walk, so its own stores take the cache over the cap
// exactly when a walk would, and the least recently used go. What another
// process stored is seen at the next walk, at most cacheRescan later:
// until then the cache may hold more than the cap; after it, the cap
// holds again.
func TestCacheCountsStores(t *testing.T) {
	dir := t.TempDir()
	c := NewResponseCache(dir, 0)
	clock := time.Unix(100_000, 0)
	c.now = func() time.Time { return clock }
	resp := loopText(strings.Repeat("x", 1000))
	request := func(i int) ([]byte, string) {
		r := cacheRequest()
		r.Messages[1].Content = fmt.Sprintf("request %03d", i)
		b, k, _ := CacheKey(r)
		return b, k
	}
	put := func(i int) {
		t.Helper()
		b, k := request(i)
		if err := c.put(b, k, resp, nil); err != nil {
			t.Fatal(err)
		}
		// Stored in this order, oldest first.
		os.Chtimes(c.path(k), time.Unix(int64(1000+i), 0), time.Unix(int64(1000+i), 0))
	}
	exists := func(i int) bool {
		_, k := request(i)
		_, err := os.Stat(c.path(k))
		return err == nil
	}
	put(0)
	_, k0 := request(0)
	fi, err := os.Stat(c.path(k0))
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	c.maxBytes = size*10 + size/2
	for i := 1; i < 10; i++ {
		put(i)
	}
	if c.scanned != clock || c.size != 10*size {
		t.Fatalf("after 10 stores in one minute: scanned %v, size %d; want one walk, at %v, and %d bytes counted", c.scanned, c.size, clock, 10*size)
	}
	// The eleventh takes the count over the cap: the walk evicts the two
	// oldest, to nine tenths of the cap.
	put(10)
	for i := range 11 {
		if exists(i) != (i >= 2) {
			t.Errorf("after the eleventh store: entry %d exists %v", i, exists(i))
		}
	}
	// Another process stores five entries the count does not know of.
	for i := 100; i < 105; i++ {
		b, k := request(i)
		other := NewResponseCache(dir, 1<<30)
		other.now = c.now
		if err := other.put(b, k, resp, nil); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(c.path(k), time.Unix(int64(2000+i), 0), time.Unix(int64(2000+i), 0))
	}
	put(11)
	if n := countEntries(t, dir); n != 15 {
		t.Fatalf("within a minute of the walk: %d entries, want 15 (9 + 5 of the other process + 1): the store must not walk", n)
	}
	// A minute later the next store walks, sees them, and evicts the
	// oldest down to nine tenths of the cap: 9 entries.
	clock = clock.Add(cacheRescan)
	put(12)
	if n := countEntries(t, dir); n != 9 {
		t.Errorf("after the rescan: %d entries, want 9", n)
	}
	for _, i := range []int{2, 3, 4, 5, 6, 7} {
		if exists(i) {
			t.Errorf("entry %d, among the oldest, survived the rescan", i)
		}
	}
	for _, i := range []int{100, 104, 11, 12} {
		if !exists(i) {
			t.Errorf("entry %d, among the newest, was evicted", i)
		}
	}
}

// ForEndpoint returns the same part for the same endpoint, so that its
// count of what it stored is kept across requests.
func TestCacheEndpointPartShared(t *testing.T) {
	c := NewResponseCache(t.TempDir(), 0)
	a, b := c.ForEndpoint("http://127.0.0.1:1/v1"), c.ForEndpoint("http://127.0.0.1:1/v1")
	if a != b {
		t.Error("two parts for one endpoint")
	}
	if c.ForEndpoint("http://127.0.0.1:2/v1") == a {
		t.Error("one part for two endpoints")
	}
	if c.ForEndpoint("") != c {
		t.Error("the default endpoint is not the cache itself")
	}
}

func countEntries(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
