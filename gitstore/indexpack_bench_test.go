package gitstore

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) of this process and of the
// children it waited for.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	d := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return d(self) + d(kids)
}

// BenchmarkIndexPack indexes the pack a cold fetch of a ledger of N entries
// receives (git pack-objects of a chainRepo, as upload-pack sends it) with
// go-git's PackWriter, with the packIndexer, and with git index-pack, back
// to back, and reports each one's CPU time (all goroutines and threads).
// N=100000 runs only with RECONCILER_BENCH_LARGE=1.
func BenchmarkIndexPack(b *testing.B) {
	for _, n := range []int{10, 10000, 100000} {
		if n > 10000 && os.Getenv("RECONCILER_BENCH_LARGE") == "" {
			continue
		}
		dir := b.TempDir()
		var pack []byte
		for _, impl := range []string{"go-git", "packIndexer", "git-index-pack"} {
			b.Run(fmt.Sprintf("N=%d/%s", n, impl), func(b *testing.B) {
				if pack == nil {
					pack = packOf(b, chainRepo(b, dir, n), "--delta-base-offset")
				}
				cpu := cpuTime()
				b.ResetTimer()
				for b.Loop() {
					switch impl {
					case "go-git":
						if _, err := goGitPackIndex(b, pack); err != nil {
							b.Fatal(err)
						}
					case "packIndexer":
						if _, _, err := ourIndex(b, pack, 1); err != nil {
							b.Fatal(err)
						}
					case "git-index-pack":
						out := filepath.Join(b.TempDir(), "x.pack")
						cmd := exec.Command("git", "index-pack", "--stdin", out)
						cmd.Stdin = bytes.NewReader(pack)
						if msg, err := cmd.CombinedOutput(); err != nil {
							b.Fatalf("git index-pack: %v\n%s", err, msg)
						}
					}
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
				b.ReportMetric(float64(len(pack))/1e6, "pack-MB")
			})
		}
	}
}
