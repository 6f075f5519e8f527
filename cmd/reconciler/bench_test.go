//go:build unix

package main

// End-to-end benchmarks of what users see: a no-op `reconciler once` on a
// warm and on a cold cache, ledger appends, and the daemon's time to ready,
// each against a reference measured in the same run (plain git doing the
// equivalent work) and reported beside it as ref-ms and ratio.
//
// The fixtures are desired-state repositories with the example spec plus
// 10,000 small files, whose ledgers have N entries (ledger/ledgergen). They
// are built once and kept in os.TempDir()/reconciler-bench-e2e/<N>. The
// N=100000 cases need RECONCILER_BENCH_LARGE=1: building that fixture takes
// minutes. See docs/performance.md.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/examples"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/ledger/ledgergen"
	"github.com/agentgitops/reconciler/signing"
)

// benchFixtureVersion names the layout of the cached fixtures; bump it when
// the fixture changes so that stale ones are rebuilt.
const benchFixtureVersion = "v1"

// benchExtraFiles is the number of small files added to the example spec.
const benchExtraFiles = 10000

// e2eSizes are the ledger lengths of the benchmarks.
var e2eSizes = []int{10, 10000, 100000}

func skipLargeE2E(b *testing.B, n int) {
	b.Helper()
	if n >= 100000 && os.Getenv("RECONCILER_BENCH_LARGE") == "" {
		b.Skip("set RECONCILER_BENCH_LARGE=1 to run the 100000-entry case (its fixture takes minutes to build the first time)")
	}
}

// benchEnv is the environment of every subprocess: no GIT_* variables and
// no user or system git configuration.
func benchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return append(env, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Platform Team", "GIT_AUTHOR_EMAIL=platform@example.com",
		"GIT_COMMITTER_NAME=Platform Team", "GIT_COMMITTER_EMAIL=platform@example.com")
}

// runCmd runs name with args and returns its stdout; it fails with stderr.
func runCmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = benchEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func mustRun(b *testing.B, name string, args ...string) string {
	b.Helper()
	out, err := runCmd(name, args...)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// reconcilerBin builds the reconciler once per process into the bench
// directory.
func reconcilerBin(b *testing.B) string {
	b.Helper()
	binOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), "reconciler-bench-e2e", "bin")
		if binErr = os.MkdirAll(dir, 0o755); binErr != nil {
			return
		}
		// Built under a temporary name and renamed into place, so that
		// concurrent benchmark processes never run a half-written binary.
		binPath = filepath.Join(dir, "reconciler")
		tmp := fmt.Sprintf("%s.tmp-%d", binPath, os.Getpid())
		if _, binErr = runCmd("go", "build", "-o", tmp, "."); binErr != nil {
			return
		}
		// The sandbox helper is installed next to the reconciler, as
		// `make build` and the image install it: without it every
		// sandbox start (the status's probe in each pass too) is a
		// second start of the reconciler itself.
		helper := filepath.Join(dir, "reconciler-sandbox")
		htmp := fmt.Sprintf("%s.tmp-%d", helper, os.Getpid())
		if _, binErr = runCmd("go", "build", "-o", htmp, "../reconciler-sandbox"); binErr != nil {
			return
		}
		if binErr = os.Rename(htmp, helper); binErr != nil {
			return
		}
		binErr = os.Rename(tmp, binPath)
	})
	if binErr != nil {
		b.Fatal(binErr)
	}
	return binPath
}

// e2eFixture is a cached benchmark fixture.
type e2eFixture struct {
	n      int
	dir    string
	origin string // the bare desired-state repository
	key    string // the signing key, trusted by the genesis entry
	warm   string // a warm --cache-dir
	mirror string // a `git clone --mirror` of origin, for the git fetch reference
}

func (f *e2eFixture) once(b *testing.B, cacheDir string) {
	b.Helper()
	out, err := runCmd(reconcilerBin(b), "once", "--repo", f.origin, "--key", f.key, "--cache-dir", cacheDir)
	if err != nil {
		b.Fatal(err)
	}
	if !strings.Contains(out, "Ready=True") {
		b.Fatalf("reconciler once is not Ready:\n%s", out)
	}
}

func (f *e2eFixture) evidenceHead(b *testing.B) string {
	b.Helper()
	return strings.TrimSpace(mustRun(b, "git", "--git-dir", f.origin, "rev-parse", "refs/heads/"+ledger.Branch))
}

// settle runs passes on the warm cache until one appends nothing (at most
// three), so that the timed passes are no-ops: a scheduled trigger of the
// example's image-pinner can come due between runs of the benchmark.
func (f *e2eFixture) settle(b *testing.B) {
	b.Helper()
	for range 3 {
		before := f.evidenceHead(b)
		f.once(b, f.warm)
		if f.evidenceHead(b) == before {
			return
		}
	}
	b.Fatalf("reconciler once keeps appending to %s of %s: the fixture's passes are not no-ops", ledger.Branch, f.origin)
}

// checkUnchanged fails the benchmark if agent-evidence moved from before.
func (f *e2eFixture) checkUnchanged(b *testing.B, before string) {
	b.Helper()
	if after := f.evidenceHead(b); after != before {
		b.Fatalf("%s moved from %s to %s during the timed passes: they were not no-ops", ledger.Branch, before, after)
	}
}

var fixtureMu sync.Mutex

// fixture returns the fixture of a ledger of n entries, building it the
// first time.
func fixture(b *testing.B, n int) *e2eFixture {
	b.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	dir := filepath.Join(os.TempDir(), "reconciler-bench-e2e", strconv.Itoa(n))
	f := &e2eFixture{
		n: n, dir: dir,
		origin: filepath.Join(dir, "origin.git"),
		key:    filepath.Join(dir, "bench.key"),
		warm:   filepath.Join(dir, "cache-warm"),
		mirror: filepath.Join(dir, "mirror.git"),
	}
	done := filepath.Join(dir, "complete-"+benchFixtureVersion)
	if _, err := os.Stat(done); err == nil {
		return f
	}
	// Other benchmark processes may be building the same fixture.
	unlock := lockFixture(b, dir)
	defer unlock()
	if _, err := os.Stat(done); err == nil {
		return f
	}
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	signer, err := signing.GenerateKey(f.key)
	if err != nil {
		b.Fatal(err)
	}
	mustRun(b, "git", "init", "-q", "--bare", "-b", "main", f.origin)
	if err := writeSpec(f.origin, signer.PublicKeyPEM()); err != nil {
		b.Fatal(err)
	}
	pub, err := signing.ParsePublicKeyPEM(signer.PublicKeyPEM(), "main:.reconciler/keys/bench.pub")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ledgergen.Generate(context.Background(), f.origin, signer, n, ledgergen.Options{RepoKeys: []signing.PublicKey{pub}}); err != nil {
		b.Fatal(err)
	}
	generated := time.Since(start)
	// One real pass records spec.loaded and runs the example's agents;
	// the next must append nothing.
	f.once(b, f.warm)
	before := f.evidenceHead(b)
	f.once(b, f.warm)
	if after := f.evidenceHead(b); after != before {
		b.Fatalf("the second reconciler once moved %s from %s to %s; the fixture's passes must be no-ops", ledger.Branch, before, after)
	}
	mustRun(b, "git", "clone", "-q", "--mirror", f.origin, f.mirror)
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("built the N=%d fixture in %s (ledger generated in %s) in %s", n, time.Since(start).Round(time.Millisecond), generated.Round(time.Millisecond), dir)
	return f
}

// lockFixture takes an exclusive lock on dir+".lock" across processes.
func lockFixture(b *testing.B, dir string) func() {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		b.Fatal(err)
	}
	lf, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		b.Fatal(err)
	}
	return func() { lf.Close() }
}

// writeSpec commits, as main's only commit, examples/repo-layout plus
// benchExtraFiles small files and .reconciler/keys/bench.pub, with git
// fast-import.
func writeSpec(bare string, pub []byte) error {
	cmd := exec.Command("git", "--git-dir", bare, "fast-import", "--quiet", "--done")
	cmd.Env = benchEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	msg := "Add payments platform desired state\n"
	fmt.Fprintf(w, "commit refs/heads/main\nauthor Platform Team <platform@example.com> 1735689600 +0000\ncommitter Platform Team <platform@example.com> 1735689600 +0000\ndata %d\n%s", len(msg), msg)
	file := func(p string, mode string, content []byte) {
		fmt.Fprintf(w, "M %s inline %s\ndata %d\n", mode, p, len(content))
		w.Write(content)
		w.WriteString("\n")
	}
	werr := fs.WalkDir(examples.RepoLayout(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(examples.RepoLayout(), p)
		if err != nil {
			return err
		}
		mode := "100644"
		if path.Ext(p) == ".sh" {
			mode = "100755"
		}
		file(p, mode, b)
		return nil
	})
	if werr == nil {
		file(".reconciler/keys/bench.pub", "100644", pub)
		for i := range benchExtraFiles {
			file(fmt.Sprintf("services/svc-%03d/config-%02d.yaml", i/100, i%100), "100644",
				fmt.Appendf(nil, "# service %03d, config %02d\nname: svc-%03d-%02d\nreplicas: %d\nimage: registry.example.com/svc-%03d:1.%d.%d\n", i/100, i%100, i/100, i%100, 1+i%3, i/100, i%7, i%13))
		}
		_, werr = w.WriteString("done\n")
	}
	if err := w.Flush(); werr == nil {
		werr = err
	}
	if err := stdin.Close(); werr == nil {
		werr = err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %w: %s", err, stderr.String())
	}
	return werr
}

// timed runs fn and returns how long it took.
func timed(b *testing.B, fn func()) time.Duration {
	b.Helper()
	start := time.Now()
	fn()
	return time.Since(start)
}

// report sets ns/op to ours (without the reference's time, which the
// benchmark loop also spent) and reports both in milliseconds and their
// ratio.
func report(b *testing.B, ours, ref time.Duration, refName string) {
	b.Helper()
	n := float64(b.N)
	b.ReportMetric(float64(ours.Nanoseconds())/n, "ns/op")
	b.ReportMetric(float64(ours.Microseconds())/1000/n, "ms")
	b.ReportMetric(float64(ref.Microseconds())/1000/n, refName+"-ms")
	if ref > 0 {
		b.ReportMetric(float64(ours)/float64(ref), "ratio")
	}
}

// BenchmarkOnceNoopWarm times `reconciler once` as a subprocess on a warm
// --cache-dir when there is nothing to do, against `git fetch` (a no-op)
// into a `git clone --mirror` of the same repository. Target: within 2x.
func BenchmarkOnceNoopWarm(b *testing.B) {
	for _, n := range e2eSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLargeE2E(b, n)
			f := fixture(b, n)
			bin := reconcilerBin(b)
			f.settle(b)
			before := f.evidenceHead(b)
			var ours, ref, oursCPU, refCPU time.Duration
			b.ResetTimer()
			for b.Loop() {
				ours += timed(b, cpuTimed(b, &oursCPU, func() {
					if _, err := runCmd(bin, "once", "--repo", f.origin, "--key", f.key, "--cache-dir", f.warm); err != nil {
						b.Fatal(err)
					}
				}))
				ref += timed(b, cpuTimed(b, &refCPU, func() { mustRun(b, "git", "--git-dir", f.mirror, "fetch", "--quiet") }))
			}
			b.StopTimer()
			f.checkUnchanged(b, before)
			report(b, ours, ref, "ref")
			reportCPU(b, oursCPU, refCPU, "ref")
		})
	}
}

// BenchmarkOnceCold times `reconciler once` as a subprocess on an empty
// --cache-dir (it fetches the whole repository and reads the whole
// ledger) against `git clone --bare` of the same repository into an empty
// directory (ref: a local clone, which hardlinks the objects; nolocal:
// `--no-local`, which packs them as a remote would). Target: within 2x of
// ref.
func BenchmarkOnceCold(b *testing.B) {
	for _, n := range e2eSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLargeE2E(b, n)
			f := fixture(b, n)
			bin := reconcilerBin(b)
			f.settle(b)
			before := f.evidenceHead(b)
			scratch := b.TempDir()
			var ours, ref, noLocal time.Duration
			i := 0
			b.ResetTimer()
			for b.Loop() {
				i++
				cache := filepath.Join(scratch, fmt.Sprintf("cache-%d", i))
				clone := filepath.Join(scratch, fmt.Sprintf("clone-%d.git", i))
				clone2 := filepath.Join(scratch, fmt.Sprintf("clone-nolocal-%d.git", i))
				ours += timed(b, func() {
					if _, err := runCmd(bin, "once", "--repo", f.origin, "--key", f.key, "--cache-dir", cache); err != nil {
						b.Fatal(err)
					}
				})
				ref += timed(b, func() { mustRun(b, "git", "clone", "-q", "--bare", f.origin, clone) })
				noLocal += timed(b, func() { mustRun(b, "git", "clone", "-q", "--bare", "--no-local", f.origin, clone2) })
				b.StopTimer()
				for _, d := range []string{cache, clone, clone2} {
					if err := os.RemoveAll(d); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.StopTimer()
			f.checkUnchanged(b, before)
			report(b, ours, ref, "ref")
			b.ReportMetric(float64(noLocal.Microseconds())/1000/float64(b.N), "ref-nolocal-ms")
			if noLocal > 0 {
				b.ReportMetric(float64(ours)/float64(noLocal), "ratio-nolocal")
			}
		})
	}
}

// appendTarget is a copy of a fixture's repository to append to (so the
// fixture keeps its length) and a Ledger over it, read to its end, on a
// warm on-disk cache.
type appendTarget struct {
	repo    *gitstore.Repo
	ledger  *ledger.Ledger
	subject string
}

func newAppendTarget(b *testing.B, f *e2eFixture) *appendTarget {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	origin := filepath.Join(dir, "origin.git")
	mustRun(b, "git", "clone", "-q", "--bare", f.origin, origin)
	// git-receive-pack starts `git gc --auto` in the background after a
	// large push, as on a real server; let it finish before the directory
	// is removed (cleanups run last registered first).
	b.Cleanup(func() { waitForGC(origin) })
	repo, err := gitstore.Open(ctx, origin, gitstore.Options{CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { repo.Close() })
	signer, err := signing.LoadSigner(f.key)
	if err != nil {
		b.Fatal(err)
	}
	l := ledger.New(repo, ledger.Options{
		Signer: signer, Identity: object.Signature{Name: "Reconciler", Email: "reconciler@localhost"},
		TrustedKeys: []signing.PublicKey{signer.PublicKey()},
	})
	if _, err := l.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	main, err := repo.Branch("main")
	if err != nil {
		b.Fatal(err)
	}
	return &appendTarget{repo: repo, ledger: l, subject: main.String()}
}

// waitForGC waits, for at most a minute, while a `git gc` holds the
// repository's gc.pid lock.
func waitForGC(gitDir string) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(gitDir, "gc.pid")); os.IsNotExist(err) {
			return
		}
	}
}

// append appends k small valid events in one Append.
func (t *appendTarget) append(b *testing.B, k int) {
	events := make([]ledger.Event, k)
	for i := range events {
		msg := fmt.Sprintf("benchmark append %d of %d at %s", i+1, k, time.Now().UTC().Format(time.RFC3339Nano))
		events[i] = ledger.Event{Type: ledger.PolicyViolation, Subject: t.subject, SubjectName: "main", Error: msg, Summary: "policy.violation: " + msg}
	}
	stored, err := t.ledger.Append(context.Background(), events...)
	if err != nil {
		b.Fatal(err)
	}
	if len(stored) != k {
		b.Fatalf("Append stored %d of %d entries", len(stored), k)
	}
}

// BenchmarkAppend appends entries with ledger.Ledger.Append over a local
// path on a warm on-disk cache, one or ten events per Append, to a copy of
// the N-entry fixture, and as the reference to a copy of the 10-entry one,
// alternately in the same loop. cpu-ms/entry and server-cpu-ms/entry are
// as in BenchmarkAppendConcurrent. Targets: at least 500 entries/s, and at
// N=100000 within 1.5x of the rate at N=10.
func BenchmarkAppend(b *testing.B) {
	for _, n := range e2eSizes {
		for _, k := range []int{1, 10} {
			b.Run(fmt.Sprintf("N=%d/events=%d", n, k), func(b *testing.B) {
				skipLargeE2E(b, n)
				t := newAppendTarget(b, fixture(b, n))
				var ref *appendTarget
				if n != 10 {
					ref = newAppendTarget(b, fixture(b, 10))
				}
				var ours, refTime, cpu, server time.Duration
				b.ResetTimer()
				for b.Loop() {
					self, children := rusage(b)
					ours += timed(b, func() { t.append(b, k) })
					self2, children2 := rusage(b)
					cpu, server = cpu+self2-self, server+children2-children
					if ref != nil {
						refTime += timed(b, func() { ref.append(b, k) })
					}
				}
				b.StopTimer()
				reportAppend(b, b.N*k, ours, refTime, cpu, server, ref != nil)
			})
		}
	}
}

// appendRound appends total one-event entries from w goroutines at once
// (group commit shares their pushes) and returns how long that took and
// the CPU time of this process and of the git processes it waited for
// (the local transport's receive-packs) meanwhile.
func (t *appendTarget) appendRound(b *testing.B, w, total int) (wall, cpu, server time.Duration) {
	var next sync.WaitGroup
	var mu sync.Mutex
	left := total
	selfBefore, childBefore := rusage(b)
	start := time.Now()
	for i := 0; i < w; i++ {
		next.Add(1)
		go func() {
			defer next.Done()
			for {
				mu.Lock()
				if left == 0 {
					mu.Unlock()
					return
				}
				left--
				mu.Unlock()
				msg := fmt.Sprintf("benchmark concurrent append at %s", time.Now().UTC().Format(time.RFC3339Nano))
				ev := ledger.Event{Type: ledger.PolicyViolation, Subject: t.subject, SubjectName: "main", Error: msg, Summary: "policy.violation: " + msg}
				stored, err := t.ledger.Append(context.Background(), ev)
				if err != nil {
					b.Error(err)
					return
				}
				if len(stored) != 1 {
					b.Errorf("Append stored %d of 1 entries", len(stored))
					return
				}
			}
		}()
	}
	next.Wait()
	wall = time.Since(start)
	selfAfter, childAfter := rusage(b)
	if b.Failed() {
		b.FailNow()
	}
	return wall, selfAfter - selfBefore, childAfter - childBefore
}

// reportAppend reports an append benchmark's figures for its entries: our
// time, rate and CPU per entry (ours and the git-receive-pack processes'),
// and with a reference its rate and the ratio of the times.
func reportAppend(b *testing.B, entries int, ours, ref, cpu, server time.Duration, withRef bool) {
	n := float64(entries)
	b.ReportMetric(float64(ours.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(n/ours.Seconds(), "entries/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/n, "cpu-ms/entry")
	b.ReportMetric(float64(server.Microseconds())/1000/n, "server-cpu-ms/entry")
	if withRef {
		b.ReportMetric(n/ref.Seconds(), "ref-entries/s")
		b.ReportMetric(float64(ours)/float64(ref), "ratio")
	}
}

// rusage returns the CPU time (user and system) of this process and of its
// waited-for children so far.
func rusage(b *testing.B) (self, children time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return self, time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendConcurrent is the throughput of ledger.Ledger.Append with
// W goroutines appending one event each per Append at once (as a daemon's
// agents do), a round of 8W entries per iteration, on the same fixtures and
// warm caches as BenchmarkAppend, with the N=10 fixture as the reference
// in the same loop. cpu-ms/entry is this process's CPU, server-cpu-ms/entry
// that of the git-receive-pack processes it ran. Targets: at least 500
// entries/s at every N, and at N=100000 within 1.5x of N=10.
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, w := range []int{64, 256, 1024} {
		for _, n := range e2eSizes {
			b.Run(fmt.Sprintf("W=%d/N=%d", w, n), func(b *testing.B) {
				skipLargeE2E(b, n)
				// A round adds 8W entries: an N=10 ledger (ours at N=10,
				// the reference) is a fresh copy each round, so that it
				// stays within 10 to 8W+10 entries and does not become a
				// long one over the rounds.
				small := fixture(b, 10)
				t := newAppendTarget(b, fixture(b, n))
				total := 8 * w
				var ours, refTime, cpu, server time.Duration
				b.ResetTimer()
				for b.Loop() {
					if n == 10 {
						t = newAppendTarget(b, small)
					}
					wall, c, s := t.appendRound(b, w, total)
					ours, cpu, server = ours+wall, cpu+c, server+s
					if n != 10 {
						wall, _, _ := newAppendTarget(b, small).appendRound(b, w, total)
						refTime += wall
					}
				}
				b.StopTimer()
				reportAppend(b, b.N*total, ours, refTime, cpu, server, n != 10)
			})
		}
	}
}

// BenchmarkRunReady times `reconciler run` on a warm --cache-dir from the
// start of the process to the first 200 from /readyz (polled every 10 ms),
// against the no-op `git fetch` of BenchmarkOnceNoopWarm. serving-ms is
// when it printed its address. Target: under 2 s.
func BenchmarkRunReady(b *testing.B) {
	for _, n := range e2eSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLargeE2E(b, n)
			f := fixture(b, n)
			bin := reconcilerBin(b)
			f.settle(b)
			before := f.evidenceHead(b)
			var ours, serving, ref time.Duration
			b.ResetTimer()
			for b.Loop() {
				s, r := runReady(b, bin, f)
				ours += r
				serving += s
				ref += timed(b, func() { mustRun(b, "git", "--git-dir", f.mirror, "fetch", "--quiet") })
			}
			b.StopTimer()
			f.checkUnchanged(b, before)
			report(b, ours, ref, "ref")
			b.ReportMetric(float64(serving.Microseconds())/1000/float64(b.N), "serving-ms")
		})
	}
}

// runReady starts the daemon and returns when it printed its address and
// when /readyz first answered 200, from the process's start.
func runReady(b *testing.B, bin string, f *e2eFixture) (serving, ready time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--repo", f.origin, "--key", f.key, "--cache-dir", f.warm,
		"--listen", "127.0.0.1:0", "--interval", "1h")
	cmd.Env = benchEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			b.Errorf("reconciler run: %v\n%s", err, stderr.String())
		}
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "reconciler: serving on "); ok {
				addr <- a
			}
		}
		close(addr)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	url, ok := <-addr
	if !ok {
		b.Fatalf("reconciler run printed no address:\n%s", stderr.String())
	}
	serving = time.Since(start)
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get(url + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return serving, time.Since(start)
			}
		}
		if ctx.Err() != nil {
			b.Fatalf("reconciler run never became ready:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBenchFixtureSmall builds a 10-entry fixture the way the benchmarks
// do, in a temporary directory, and checks that it is a no-op for a second
// pass; it keeps the benchmark fixture code working without -bench.
func TestBenchFixtureSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the reconciler and a repository of 10,000 files")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	bare := filepath.Join(dir, "origin.git")
	if _, err := runCmd("git", "init", "-q", "--bare", "-b", "main", bare); err != nil {
		t.Fatal(err)
	}
	signer, err := signing.GenerateKey(filepath.Join(dir, "bench.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSpec(bare, signer.PublicKeyPEM()); err != nil {
		t.Fatal(err)
	}
	head, err := ledgergen.Generate(context.Background(), bare, signer, 10, ledgergen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gitstore.Open(context.Background(), bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	files, err := repo.ListFiles(mustBranch(t, repo, "main"), "services/*/*.yaml")
	if err != nil || len(files) != benchExtraFiles {
		t.Fatalf("main has %d extra files (%v), want %d", len(files), err, benchExtraFiles)
	}
	if got := mustBranch(t, repo, ledger.Branch); got != head {
		t.Fatalf("%s is at %s, Generate returned %s", ledger.Branch, got, head)
	}
}

func mustBranch(t *testing.T, repo *gitstore.Repo, name string) plumbing.Hash {
	t.Helper()
	h, err := repo.Branch(name)
	if errors.Is(err, gitstore.ErrNotFound) || err != nil {
		t.Fatalf("branch %s: %v", name, err)
	}
	return h
}
