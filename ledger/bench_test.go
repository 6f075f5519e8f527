package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
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
// on-disk mirror (gitstore.Options.CacheDir) as the daemon reads it.
// peak-RSS-MB is the process's high-water resident set (VmHWM) after the
// runs; run one size per process for a clean number.
func BenchmarkVerify(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			skipLarge(b, n)
			bl := benchLedger(b, n)
			ctx := context.Background()
			repo, err := gitstore.Open(ctx, bl.url, gitstore.Options{CacheDir: bl.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer repo.Close()
			opts := VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{bl.key}}
			b.ResetTimer()
			for b.Loop() {
				rep, err := Verify(ctx, repo, opts)
				if err != nil {
					b.Fatal(err)
				}
				if rep.Entries != n {
					b.Fatalf("verified %d entries, want %d", rep.Entries, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
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
		})
	}
}

// benchStatementSize is about the size of the benchmark ledger's statements
// (see benchEvent).
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
	if err := generateLedger(bl.url, s, n); err != nil {
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
// repository at bare: a main branch with one commit (the spec commit the
// entries name) and agent-evidence with a genesis entry and n-1 run.started
// entries. Each entry's prev is the digest of the previous signed bundle, so
// signing is a chain; statements are built and signed on one goroutine while
// git fast-import writes the objects and the previous entries are encoded
// concurrently.
func generateLedger(bare string, s *signing.Signer, n int) error {
	env := gittest.Env(gittest.Name, gittest.Email)
	git := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	if _, err := git(nil, "init", "-q", "--bare", "-b", "main", bare); err != nil {
		return err
	}
	empty, err := git(nil, "--git-dir", bare, "hash-object", "-w", "-t", "tree", "--stdin")
	if err != nil {
		return err
	}
	spec, err := git(nil, "--git-dir", bare, "commit-tree", empty, "-m", "desired state")
	if err != nil {
		return err
	}
	if _, err := git(nil, "--git-dir", bare, "update-ref", "refs/heads/main", spec); err != nil {
		return err
	}

	cmd := exec.Command("git", "--git-dir", bare, "fast-import", "--quiet", "--done")
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	type entry struct {
		seq            uint64
		summary        string
		bundle         []byte
		unixTime       int64
		transcriptPath string
	}
	entries := make(chan entry, 256)
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(stdin, 1<<20)
		for e := range entries {
			fmt.Fprintf(w, "commit refs/heads/%s\nmark :%d\ncommitter Reconciler <reconciler@example.com> %d +0000\ndata %d\n%s\n",
				Branch, e.seq, e.unixTime, len(e.summary)+1, e.summary)
			if e.seq > 1 {
				fmt.Fprintf(w, "from :%d\n", e.seq-1)
			}
			fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n", EntryPath(e.seq), len(e.bundle))
			w.Write(e.bundle)
			w.WriteString("\n\n")
		}
		w.WriteString("done\n")
		err := w.Flush()
		if cerr := stdin.Close(); err == nil {
			err = cerr
		}
		werr <- err
	}()

	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	key := s.PublicKey()
	key.Source = "reconciler"
	prev := ""
	var genErr error
	for seq := uint64(1); seq <= uint64(n); seq++ {
		ev := benchEvent(seq, spec, key)
		p := Predicate{Seq: seq, Prev: prev, Time: t0.Add(time.Duration(seq) * time.Second), Event: ev}
		st, err := newStatement(p)
		if err != nil {
			genErr = err
			break
		}
		bundle, err := s.SignStatement(ctx, st)
		if err != nil {
			genErr = err
			break
		}
		entries <- entry{seq: seq, summary: ev.Summary, bundle: bundle, unixTime: p.Time.Unix()}
		prev = digest(bundle)
	}
	close(entries)
	if err := <-werr; err != nil && genErr == nil {
		genErr = err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %w: %s", err, stderr.String())
	}
	return genErr
}

// benchEvent is entry seq of the benchmark ledger: the genesis entry, then
// run.started entries with statements of about benchStatementSize bytes.
func benchEvent(seq uint64, spec string, key signing.PublicKey) Event {
	if seq == 1 {
		keys := KeySet(key)
		return Event{Type: Genesis, Subject: spec, SubjectName: "main", Keys: keys,
			Summary: fmt.Sprintf("ledger.genesis: 1 trusted key(s): %s", keys[0].ID)}
	}
	run := fmt.Sprintf("%012x", seq)
	agent := fmt.Sprintf("agent-%02d", seq%17)
	return Event{
		Type: RunStarted, Subject: spec, SubjectName: "main",
		Agent: agent, RunID: run, SpecCommit: spec, Trigger: "schedule: 0 */6 * * * (every 6 hours)",
		SpecDigest:  fmt.Sprintf("%x", sha256.Sum256([]byte(run))),
		Model:       "gpt-4.1-mini-2025-04-14",
		ReservedUSD: 0.25,
		WorkUnit:    &WorkUnit{Kind: "dependency-bump", HumanMinutes: 20},
		Summary:     fmt.Sprintf("run.started %s %s (trigger schedule, spec %s, reserves $0.25 of the daily budget of $10.00)", agent, run, spec[:12]),
	}
}

// TestBenchEventSize keeps the benchmark's statements near the message size
// BenchmarkECDSAVerify signs, so that the two stay comparable. It does not
// build a ledger.
func TestBenchEventSize(t *testing.T) {
	key, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	spec := strings.Repeat("ab", 20)
	st, err := newStatement(Predicate{Seq: 12345, Prev: strings.Repeat("0", 64), Time: time.Now(), Event: benchEvent(12345, spec, key.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st); n < benchStatementSize*3/4 || n > benchStatementSize*5/4 {
		t.Errorf("a benchmark statement has %d bytes, want about %d", n, benchStatementSize)
	}
	if _, err := parseStatement(st); err != nil {
		t.Fatal(err)
	}
}
