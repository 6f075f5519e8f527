package forge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// Shape of the benchmark repository's main: benchMain first-parent
// commits, every benchMergeEvery-th a --no-ff merge of a side branch of
// benchSide commits.
const (
	benchMain       = forge.MergeScanDepth
	benchMergeEvery = 10
	benchSide       = 3
)

// benchSizes are the numbers of open proposals; 100000 only with
// RECONCILER_BENCH_LARGE=1 (building it takes a while, once).
func benchSizes() []int {
	sizes := []int{10, 1000, 10000}
	if os.Getenv("RECONCILER_BENCH_LARGE") == "1" {
		sizes = append(sizes, 100000)
	}
	return sizes
}

// benchRepo returns the bare repository with open proposals, built once
// under os.TempDir() and reused by later runs: main as the constants say,
// and branches agents/a/<i> for i < open, each one commit (with its
// Agent-Run trailer) on a random commit of main, none merged.
func benchRepo(b *testing.B, open int) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("reconciler-bench-forge-%d", open))
	bare := filepath.Join(dir, "repo.git")
	ready := filepath.Join(dir, "ready")
	if _, err := os.Stat(ready); err == nil {
		return bare
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	gittest.Git(b, "", "init", "--quiet", "--bare", "--initial-branch=main", bare)
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = bare
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	writeBenchStream(bufio.NewWriterSize(stdin, 1<<20), open)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("git fast-import: %v\n%s", err, stderr.Bytes())
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return bare
}

// writeBenchStream writes benchRepo's history as a git fast-import stream.
func writeBenchStream(w *bufio.Writer, open int) {
	mark := 0
	when := int64(1735689600)
	commit := func(ref, msg, file string, from int, merge ...int) int {
		mark++
		when++
		fmt.Fprintf(w, "commit %s\nmark :%d\ncommitter %s <%s> %d +0000\ndata %d\n%s\n",
			ref, mark, gittest.Name, gittest.Email, when, len(msg)+1, msg)
		if from > 0 {
			fmt.Fprintf(w, "from :%d\n", from)
		}
		for _, m := range merge {
			fmt.Fprintf(w, "merge :%d\n", m)
		}
		content := strconv.Itoa(mark) + "\n"
		fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n%s\n", file, len(content), content)
		return mark
	}
	mains := make([]int, 0, benchMain)
	prev := 0
	for i := range benchMain {
		if i > 0 && i%benchMergeEvery == 0 {
			tip := prev
			for j := range benchSide {
				tip = commit("refs/bench/side", fmt.Sprintf("side %d.%d", i, j), fmt.Sprintf("side/%d", j), tip)
			}
			prev = commit("refs/heads/main", fmt.Sprintf("Merge side %d", i), "merges", prev, tip)
		} else {
			prev = commit("refs/heads/main", fmt.Sprintf("main %d", i), fmt.Sprintf("main/%d", i%100), prev)
		}
		mains = append(mains, prev)
	}
	rng := rand.New(rand.NewPCG(1, uint64(open)))
	for i := range open {
		commit(fmt.Sprintf("refs/heads/agents/a/%d", i),
			fmt.Sprintf("Proposal %d\n\nAgent-Run: %d", i, i), fmt.Sprintf("proposals/%d", i), mains[rng.IntN(len(mains))])
	}
	fmt.Fprintf(w, "done\n")
	if err := w.Flush(); err != nil {
		panic(err) // fast-import died: its error is in stderr
	}
}

// benchProposals opens the benchmark repository of size open with an
// on-disk mirror and returns it, main's head and the open proposals.
func benchProposals(b *testing.B, open int) (*gitstore.Repo, plumbing.Hash, []forge.Proposal) {
	b.Helper()
	bare := benchRepo(b, open)
	repo, err := gitstore.Open(context.Background(), bare, gitstore.Options{CacheDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { repo.Close() })
	main, err := repo.Branch("main")
	if err != nil {
		b.Fatal(err)
	}
	branches, err := repo.Branches("agents/a/")
	if err != nil {
		b.Fatal(err)
	}
	if len(branches) != open {
		b.Fatalf("%d proposal branches, want %d", len(branches), open)
	}
	ps := make([]forge.Proposal, 0, open)
	for i := range open {
		id := strconv.Itoa(i)
		ps = append(ps, forge.Proposal{Agent: "a", RunID: id, Branch: "agents/a/" + id, Head: branches["agents/a/"+id]})
	}
	return repo, main, ps
}

// observeAll is one pass of the loop's observe step over ps.
func observeAll(b *testing.B, g *forge.Git, protected plumbing.Hash, ps []forge.Proposal) {
	ctx := context.Background()
	for _, p := range ps {
		o, err := g.Observe(ctx, p, protected, []plumbing.Hash{p.Head})
		if err != nil {
			b.Fatal(err)
		}
		if o.Merge != nil || o.Head != p.Head {
			b.Fatalf("%s observed as %+v, want open at %s", p.Branch, o, p.Head)
		}
	}
}

// BenchmarkObserve is one observe pass after the protected branch moved:
// a fresh Git (its index rebuilt) observes every open proposal.
func BenchmarkObserve(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("open=%d", n), func(b *testing.B) {
			repo, main, ps := benchProposals(b, n)
			for b.Loop() {
				observeAll(b, forge.NewGit(repo), main, ps)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/proposal")
		})
	}
}

// BenchmarkObserveWarm is a pass with the index already built (the
// protected branch did not move): what remains is the lookups.
func BenchmarkObserveWarm(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("open=%d", n), func(b *testing.B) {
			repo, main, ps := benchProposals(b, n)
			g := forge.NewGit(repo)
			observeAll(b, g, main, ps[:1])
			for b.Loop() {
				observeAll(b, g, main, ps)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/proposal")
		})
	}
}
