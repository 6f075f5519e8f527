package ledger_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/ledger/ledgergen"
	"github.com/agentgitops/reconciler/signing"
)

// benchSizes are the ledger lengths of BenchmarkVerify and
// BenchmarkECDSAVerify. The 100000 case needs RECONCILER_BENCH_100K=1: its
// ledger takes a few minutes to build the first time (it is then kept in
// os.TempDir()/reconciler-bench/100000) and one verify takes seconds, so
// run it alone with -benchtime=1x.
var benchSizes = []int{10, 10000, 100000}

func skipLarge(b *testing.B, n int) {
	if n >= 100000 && os.Getenv("RECONCILER_BENCH_100K") == "" {
		b.Skip("set RECONCILER_BENCH_100K=1 to run the 100000-entry case (run it alone with -benchtime=1x)")
	}
}

// BenchmarkVerify verifies a ledger of N real signed entries, read from an
// on-disk mirror (gitstore.Options.CacheDir) as the daemon reads it, opened
// anew (outside the timer) for each run, as `reconciler ledger verify` does
// in its own process: no run finds objects go-git cached in the one
// before. peak-RSS-MB is the process's high-water resident set (VmHWM)
// from just before the runs (reset after the ledger is built, which may
// have been in this process) to after them. cpu-ms/op
// is the CPU time of each verify (all goroutines).
func BenchmarkVerify(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLarge(b, n)
			bl := benchLedger(b, n)
			resetPeakRSS(b)
			ctx := context.Background()
			opts := ledger.VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{bl.key}}
			var cpu int64
			defer ledger.LimitMemoryForVerify()() // as reconciler ledger verify runs
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				repo, err := gitstore.Open(ctx, bl.url, gitstore.Options{CacheDir: bl.cache})
				if err != nil {
					b.Fatal(err)
				}
				start := cpuTime()
				b.StartTimer()
				rep, err := ledger.Verify(ctx, repo, opts)
				b.StopTimer()
				cpu += cpuTime() - start
				repo.Close()
				if err != nil {
					b.Fatal(err)
				}
				if rep.Entries != n {
					b.Fatalf("verified %d entries, want %d", rep.Entries, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			b.ReportMetric(float64(cpu)/float64(b.N)/1e6, "cpu-ms/op")
			b.ReportMetric(peakRSSMB(), "peak-RSS-MB")
		})
	}
}

// BenchmarkECDSAVerify is the floor BenchmarkVerify is measured against:
// ecdsa.VerifyASN1 of N P-256 signatures over messages of the size of the
// benchmark ledger's statements (sha256 included), on a pool of
// runtime.NumCPU() workers, as Verify uses.
func BenchmarkECDSAVerify(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLarge(b, n)
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			type signed struct{ msg, sig []byte }
			items := make([]signed, n)
			parallel(n, func(i int) {
				msg := bytes.Repeat([]byte{byte('a' + i%26)}, benchStatementSize)
				h := sha256.Sum256(msg)
				sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
				if err != nil {
					panic(err)
				}
				items[i] = signed{msg, sig}
			})
			b.ResetTimer()
			cpu := cpuTime()
			for b.Loop() {
				var bad sync.Once
				parallel(n, func(i int) {
					h := sha256.Sum256(items[i].msg)
					if !ecdsa.VerifyASN1(&key.PublicKey, h[:], items[i].sig) {
						bad.Do(func() { b.Error("signature does not verify") })
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// benchStatementSize is about the size of the benchmark ledger's statements
// (ledgergen's bundles are 1.3-1.5 kB, their statements about 1 kB).
const benchStatementSize = 1024

// parallel calls fn(0..n-1) on runtime.NumCPU() workers fed by a channel.
func parallel(n int, fn func(int)) {
	work := make(chan int, 2*runtime.NumCPU())
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				fn(i)
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// cpuTime is the CPU time (user and system) the process has used, in
// nanoseconds: with other jobs on the machine's cores, a steadier measure of
// the work done than the wall time.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// resetPeakRSS returns the heap's free memory to the system and resets the
// process's high-water resident set to what it holds now (Linux 4.0+:
// writing 5 to /proc/self/clear_refs), so that peakRSSMB measures what
// follows.
func resetPeakRSS(b *testing.B) {
	b.Helper()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset (%v): peak-RSS-MB includes what ran before", err)
	}
}

func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// benchLedgerRepo is a generated ledger: a bare repository (url) whose
// agent-evidence branch holds n entries signed by key, and the cache
// directory of its on-disk mirror.
type benchLedgerRepo struct {
	url, cache string
	key        signing.PublicKey
}

// benchLedger returns the ledger of n entries in
// os.TempDir()/reconciler-bench/<n>, building it first when it is not
// complete there. Only benchmarks call it.
func benchLedger(b *testing.B, n int) benchLedgerRepo {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "reconciler-bench", strconv.Itoa(n))
	bl := benchLedgerRepo{url: filepath.Join(dir, "ledger.git"), cache: filepath.Join(dir, "cache")}
	keyFile := filepath.Join(dir, "ledger.key")
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err == nil {
		s, err := signing.LoadSigner(keyFile)
		if err != nil {
			b.Fatal(err)
		}
		bl.key = s.PublicKey()
		return bl
	}
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	s, err := signing.GenerateKey(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	bl.key = s.PublicKey()
	if err := generateLedger(b, bl.url, s, n); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	// The first open fetches everything into the on-disk mirror.
	repo, err := gitstore.Open(context.Background(), bl.url, gitstore.Options{CacheDir: bl.cache})
	if err != nil {
		b.Fatal(err)
	}
	repo.Close()
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated a ledger of %d entries in %s (mirrored in %s more) in %s", n, built.Round(time.Millisecond), (time.Since(start) - built).Round(time.Millisecond), dir)
	return bl
}

// generateLedger writes a ledger of n entries signed by s into a new bare
// repository at bare, with ledgergen: a main branch with one commit (the
// spec commit the entries name) and agent-evidence.
func generateLedger(b *testing.B, bare string, s *signing.Signer, n int) error {
	src := b.TempDir()
	gittest.Git(b, src, "init", "-q", "-b", "main")
	gittest.Git(b, src, "commit", "-q", "--allow-empty", "-m", "desired state")
	gittest.Git(b, "", "init", "-q", "--bare", "-b", "main", bare)
	gittest.Git(b, src, "push", "-q", bare, "main")
	_, err := ledgergen.Generate(context.Background(), bare, s, n, ledgergen.Options{})
	return err
}
