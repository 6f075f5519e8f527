package gitstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// ledgerPath is the path of ledger entry seq, as the ledger lays it out.
func ledgerPath(seq int) string {
	return fmt.Sprintf("ledger/%09d/%012d.json", seq/1000, seq)
}

// chainRepo creates a bare repository in dir whose main branch is a chain of
// n commits, commit i adding ledgerPath(i), with git fast-import.
func chainRepo(tb testing.TB, dir string, n int) string {
	tb.Helper()
	bare := filepath.Join(dir, fmt.Sprintf("chain-%d.git", n))
	gittest.Git(tb, "", "init", "--quiet", "--bare", "--initial-branch=main", bare)
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = bare
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr bufferWriter
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(stdin, 1<<20)
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf("entry %d\n", i)
		content := fmt.Sprintf("{\"seq\":%d}\n", i)
		fmt.Fprintf(w, "commit refs/heads/main\nmark :%d\ncommitter %s <%s> %d +0000\ndata %d\n%s", i, gittest.Name, gittest.Email, 1735689600+i, len(msg), msg)
		if i > 1 {
			fmt.Fprintf(w, "from :%d\n", i-1)
		}
		fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n%s\n", ledgerPath(i), len(content), content)
	}
	fmt.Fprintf(w, "done\n")
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("git fast-import: %v\n%s", err, stderr)
	}
	return bare
}

type bufferWriter []byte

func (b *bufferWriter) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
func (b bufferWriter) String() string               { return string(b) }

// appendEntry commits ledger entry seq on top of head and pushes it to main.
func appendEntry(tb testing.TB, r *Repo, head plumbing.Hash, seq int) plumbing.Hash {
	tb.Helper()
	c, err := tryCommitOn(r, head, ledgerPath(seq), fmt.Sprintf("{\"seq\":%d}\n", seq))
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: head, New: c}); err != nil {
		tb.Fatal(err)
	}
	return c
}

func benchSizes() []int {
	if testing.Short() {
		return []int{10, 10000}
	}
	return []int{10, 10000, 100000}
}

// BenchmarkAppendPush appends one ledger entry to a chain of N commits and
// pushes it over a local path, from an on-disk mirror ("disk") and, for the
// smaller chains, from an in-memory one ("memory"). The chains are built
// once; every run appends to the same remote.
func BenchmarkAppendPush(b *testing.B) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	dir := b.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	chains := map[int]string{}
	for _, n := range benchSizes() {
		for _, storage := range []string{"disk", "memory"} {
			if storage == "memory" && n > 10000 {
				continue
			}
			b.Run(fmt.Sprintf("%s/N=%d", storage, n), func(b *testing.B) {
				bare, ok := chains[n]
				if !ok {
					bare = chainRepo(b, dir, n)
					chains[n] = bare
				}
				opts := Options{}
				if storage == "disk" {
					opts.CacheDir = cacheDir
				}
				r, err := Open(context.Background(), bare, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				head, err := r.Branch("main")
				if err != nil {
					b.Fatal(err)
				}
				seq := len(lines(gittest.Git(b, bare, "rev-list", "--first-parent", "main")))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					seq++
					head = appendEntry(b, r, head, seq)
				}
			})
		}
	}
}

// BenchmarkFetchNoop fetches an unchanged remote of 10000 commits into a warm
// on-disk mirror.
func BenchmarkFetchNoop(b *testing.B) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	dir := b.TempDir()
	bare := chainRepo(b, dir, 10000)
	r, err := Open(context.Background(), bare, Options{CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Fetch(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendPack does the client's side of BenchmarkAppendPush without
// the session: build the commit, list the objects to send and encode the
// pack. git-receive-pack's connectivity check on the server (a rev-list of
// the new commit against every ref, which walks the whole tip tree) is what
// remains of a push.
func BenchmarkAppendPack(b *testing.B) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	dir := b.TempDir()
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("disk/N=%d", n), func(b *testing.B) {
			bare := chainRepo(b, dir, n)
			r, err := Open(context.Background(), bare, Options{CacheDir: filepath.Join(dir, "cache")})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			head := r.mustBranchB(b, "main")
			seq := n
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq++
				c, err := tryCommitOn(r, head, ledgerPath(seq), fmt.Sprintf("{\"seq\":%d}\n", seq))
				if err != nil {
					b.Fatal(err)
				}
				r.mu.Lock()
				objs, err := r.pendingFrom([]plumbing.Hash{c})
				if err == nil {
					_, err = packfile.NewEncoder(io.Discard, r.repo.Storer, false).Encode(objs, packWindow)
				}
				for _, h := range objs { // delivered, as after a Push
					delete(r.pending, h)
				}
				if err == nil {
					err = r.maintain()
				}
				r.mu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				head = c
			}
		})
	}
}

func (r *Repo) mustBranchB(b *testing.B, name string) plumbing.Hash {
	b.Helper()
	h, err := r.Branch(name)
	if err != nil {
		b.Fatal(err)
	}
	return h
}
