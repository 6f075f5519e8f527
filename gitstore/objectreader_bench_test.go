package gitstore

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

// BenchmarkObjectReaderLedger reads every object of the ledger benchmark's
// mirror (ledger/verify_bench_test.go builds it; set
// RECONCILER_BENCH_LEDGER to its directory, e.g.
// $TMPDIR/reconciler-bench/10000) through an ObjectReader, in the order of
// their offsets in the pack: what Verify reads, without the rest of it.
func BenchmarkObjectReaderLedger(b *testing.B) {
	dir := os.Getenv("RECONCILER_BENCH_LEDGER")
	if dir == "" {
		b.Skip("set RECONCILER_BENCH_LEDGER to a ledger benchmark fixture")
	}
	ctx := context.Background()
	r, err := Open(ctx, dir+"/ledger.git", Options{CacheDir: dir + "/cache"})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	rd, err := r.NewObjectReader()
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	var hs []plumbing.Hash
	// git cat-file --unordered lists a pack's objects in pack order.
	out, err := exec.Command("git", "-C", r.disk.mirror, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)", "--unordered").Output()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Fields(string(out)) {
		hs = append(hs, plumbing.NewHash(line))
	}
	if len(hs) == 0 || !strings.Contains(dir, "reconciler-bench") {
		b.Fatalf("no objects in %s", dir)
	}
	b.ResetTimer()
	for b.Loop() {
		rd.cache = newObjectCache(readerCacheSize)
		for _, h := range hs {
			if _, _, err := rd.RawObject(h); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(hs)), "ns/object")
}
