package ledger

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/agentgitops/reconciler/gitstore"
)

// BenchmarkWalk is the part of Verify that is not the signatures, on one
// goroutine: chainSince and the walker's read of every commit (the tree
// checks, reading the entry file, parsing the bundle) and the statement's
// decoding, on the ledger BenchmarkVerify built (set
// RECONCILER_BENCH_LEDGER to its directory, e.g.
// $TMPDIR/reconciler-bench/10000). On one goroutine and without the
// signatures its time is steadier than Verify's on a shared machine.
func BenchmarkWalk(b *testing.B) {
	dir := os.Getenv("RECONCILER_BENCH_LEDGER")
	if dir == "" {
		b.Skip("set RECONCILER_BENCH_LEDGER to a BenchmarkVerify fixture")
	}
	ctx := context.Background()
	entries := 0
	var cpu int64
	for b.Loop() {
		b.StopTimer()
		repo, err := gitstore.Open(ctx, filepath.Join(dir, "ledger.git"), gitstore.Options{CacheDir: filepath.Join(dir, "cache")})
		if err != nil {
			b.Fatal(err)
		}
		head, err := repo.Branch(Branch)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := walkCPU()
		objs := &scanObjects{repo: repo}
		chain, err := chainSince(ctx, objs, head, head, 0)
		if err != nil {
			b.Fatal(err)
		}
		w := walker{repo: objs, trust: newTrustAt(trust{})}
		w.fast = newFastShape(&w, chain[len(chain)-1].tree)
		for i, c := range chain {
			j := w.read(uint64(i+1), c)
			if j.err != nil {
				b.Fatal(j.err)
			}
			if j.parts != nil {
				if _, err := parseStatementOnce(j.parts.payload); err != nil {
					b.Fatal(err)
				}
			}
		}
		entries = len(chain)
		b.StopTimer()
		cpu += walkCPU() - start
		objs.close()
		repo.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries), "ns/entry")
	b.ReportMetric(float64(cpu)/float64(b.N)/float64(entries), "cpu-ns/entry")
}

// walkCPU is the process's CPU time (all threads) in nanoseconds.
func walkCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
