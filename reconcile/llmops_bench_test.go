package reconcile

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/ledger/ledgergen"
	"github.com/agentgitops/reconciler/policy"
)

// What the reconciler's LLMOps steps cost as the ledger grows
// (docs/performance.md, "LLMOps at scale"). N counts runs (5 entries
// each, 3 for a denied one): "own" gives all N to the measured agent,
// "others" gives it the last 10 and the rest to other agents. Run
// histories are folded straight into a ledger.State (ledgergen.History);
// recall reads real transcripts from a real git repository, whose
// evidence branch stores one transcript per run as the ledger does
// (transcripts/<run-id>.json; the newest 100 one commit each, older ones
// 1000 to a commit, so the fixture builds in seconds), kept in
// $TMPDIR/reconciler-bench-recall/<N>. The 100000 case builds in about a
// minute the first time.
//
//	go test -run '^$' -bench 'Memory|ReviewGate|RevertCheck' -benchmem ./reconcile/

var llmopsRuns = []int{10, 10_000, 100_000}

const benchTuner = "tuner"

type recallFixture struct {
	repo    *gitstore.Repo
	commits []plumbing.Hash // of transcript i
	digests []string
}

var (
	benchMu       sync.Mutex
	benchFixtures = map[int]*recallFixture{}
	benchStates   = map[string]*ledger.State{}
)

func benchTranscript(i int) []byte {
	t := agent.Transcript{Version: agent.TranscriptVersion, Agent: benchTuner, RunID: ledgergen.RunID("bench", i), Model: "gpt-4o-mini",
		Steps: []agent.TranscriptStep{}, Start: "2026-11-01T00:00:00Z",
		Result: &agent.TranscriptResult{Summary: fmt.Sprintf("Transcript summary %d: raise POOL_SIZE of svc-%03d", i, i%1000),
			Rationale: strings.Repeat(fmt.Sprintf("The pool of svc-%03d saturates at peak. ", i%1000), 30), Risk: "low"}}
	b, err := t.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// fixture returns the repository of n transcripts, built once per
// process and kept in $TMPDIR.
func fixture(b testing.TB, n int) *recallFixture {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if f := benchFixtures[n]; f != nil {
		return f
	}
	f := buildFixture(b, filepath.Join(os.TempDir(), "reconciler-bench-recall", fmt.Sprint(n)), n)
	benchFixtures[n] = f
	return f
}

// buildFixture builds (unless dir holds it already) and opens the
// repository of n transcripts in dir.
func buildFixture(b testing.TB, dir string, n int) *recallFixture {
	b.Helper()
	origin := filepath.Join(dir, "origin.git")
	marks := filepath.Join(dir, "marks")
	if _, err := os.Stat(filepath.Join(dir, "complete-v1")); err != nil {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		git := func(stdin func(io.Writer) error, args ...string) {
			cmd := exec.Command("git", args...)
			cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
			var in io.WriteCloser
			if stdin != nil {
				in, _ = cmd.StdinPipe()
			}
			out := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			if stdin != nil {
				w := bufio.NewWriterSize(in, 1<<20)
				if err := stdin(w); err != nil {
					b.Fatal(err)
				}
				w.Flush()
				in.Close()
			}
			if err := cmd.Wait(); err != nil {
				b.Fatalf("git %v: %v\n%s", args, err, out)
			}
		}
		git(nil, "init", "--bare", "-q", origin)
		git(func(w io.Writer) error {
			mark, t := 0, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := 0; i < n; {
				batch := 1000
				if i >= n-100 {
					batch = 1
				}
				batch = min(batch, n-i)
				mark++
				fmt.Fprintf(w, "commit refs/heads/%s\nmark :%d\ncommitter Reconciler <reconciler@localhost> %d +0000\n", ledger.Branch, mark, t.Unix())
				msg := fmt.Sprintf("transcripts %d..%d", i, i+batch-1)
				fmt.Fprintf(w, "data %d\n%s\n", len(msg), msg)
				if mark > 1 {
					fmt.Fprintf(w, "from :%d\n", mark-1)
				}
				for j := i; j < i+batch; j++ {
					tr := benchTranscript(j)
					fmt.Fprintf(w, "M 100644 inline %s\ndata %d\n%s\n", ledger.TranscriptPath(ledgergen.RunID("bench", j)), len(tr), tr)
				}
				i += batch
				t = t.Add(time.Minute)
			}
			return nil
		}, "--git-dir="+origin, "fast-import", "--quiet", "--export-marks="+marks)
		if err := os.WriteFile(filepath.Join(dir, "complete-v1"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	byMark := map[int]plumbing.Hash{}
	raw, err := os.ReadFile(marks)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m int
		var h string
		if _, err := fmt.Sscanf(line, ":%d %s", &m, &h); err != nil {
			b.Fatalf("marks: %q: %v", line, err)
		}
		byMark[m] = plumbing.NewHash(h)
	}
	f := &recallFixture{}
	for i, mark := 0, 0; i < n; {
		batch := 1000
		if i >= n-100 {
			batch = 1
		}
		batch = min(batch, n-i)
		mark++
		for range batch {
			sum := sha256.Sum256(benchTranscript(i))
			f.commits = append(f.commits, byMark[mark])
			f.digests = append(f.digests, hex.EncodeToString(sum[:]))
			i++
		}
	}
	repo, err := gitstore.Open(context.Background(), origin, gitstore.Options{CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	f.repo = repo
	return f
}

// runsState returns the state of n runs of the kind, built once; with f,
// each run's transcript is f's.
func runsState(b testing.TB, kind string, n int, f *recallFixture) *ledger.State {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	key := fmt.Sprintf("%s%d%p", kind, n, f)
	if st := benchStates[key]; st != nil {
		return st
	}
	h := ledgergen.NewHistory(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ends := []string{ledgergen.EndMerged, ledgergen.EndRejected, ledgergen.EndDenied, ledgergen.EndOpen}
	for i := range n {
		name := benchTuner
		if kind == "others" && i < n-10 {
			name = fmt.Sprintf("gen-%03d", i%100)
		}
		r := ledgergen.Run{Agent: name, ID: ledgergen.RunID("bench", i), N: i, End: ends[i%len(ends)]}
		if i%len(ends) == len(ends)-1 && i < n-10 {
			r.End = ledgergen.EndMerged // few proposals stay open
		}
		if f != nil {
			r.TranscriptDigest, r.TranscriptCommit = f.digests[i], f.commits[i]
		}
		if _, err := h.Run(r); err != nil {
			b.Fatal(err)
		}
	}
	benchStates[key] = h.State
	return h.State
}

// BenchmarkMemory: building a recall agent's Task.Memory (reconcile's
// memory: its outcomes from the fold, the newest 50 with their
// transcripts' summaries), once per run of the agent, with the pass's
// lock held.
func BenchmarkMemory(b *testing.B) {
	for _, kind := range []string{"own", "others"} {
		for _, n := range llmopsRuns {
			b.Run(fmt.Sprintf("%s=%d", kind, n), func(b *testing.B) {
				f := fixture(b, n)
				st := runsState(b, kind, n, f)
				p := &pass{state: st}
				a := &hclspec.Agent{Name: benchTuner, Tools: []string{hclspec.ToolRecall}}
				want := min(n, maxMemory)
				if kind == "others" {
					want = min(n, 10)
				}
				// cold: the process's first run of the agent (a new
				// reconciler each time, on a mirror whose pack index this
				// process has read already: the cost of any first read,
				// not recall's); warm: the next run in a daemon.
				if _, err := f.repo.ReadDir(st.Head, "transcripts"); err != nil {
					b.Fatal(err)
				}
				for _, warm := range []bool{false, true} {
					b.Run(map[bool]string{false: "cold", true: "warm"}[warm], func(b *testing.B) {
						r := &Reconciler{repo: f.repo, log: slog.New(slog.DiscardHandler)}
						b.ReportAllocs()
						for range b.N {
							if !warm {
								r = &Reconciler{repo: f.repo, log: slog.New(slog.DiscardHandler)}
							}
							out := r.memory(p, a, "ffffffffffff")
							if len(out) != want || !strings.HasPrefix(out[0].Summary, fmt.Sprintf("Transcript summary %d:", n-1)) ||
								!strings.HasPrefix(out[len(out)-1].Summary, fmt.Sprintf("Transcript summary %d:", n-len(out))) {
								b.Fatalf("memory of %d outcomes, the newest %+v; want %d, the newest from run %d's transcript", len(out), out[0], want, n-1)
							}
						}
					})
				}
			})
		}
	}
}

const benchReviewSpec = `
provider "exec" "local" {}
provider "openai" "second" {
  base_url    = "http://127.0.0.1:1/v1"
  api_key_env = "OPENAI_API_KEY"
  price "gpt-4o" {
    input_per_mtok  = 2.5
    output_per_mtok = 10
  }
}
`

const benchReviewPolicy = `policy "review" {
  applies_to = ["*"]
  require_review "second-opinion" {
    condition = anytrue([for f in change.files : glob(f.path, "config/**")])
    models    = ["second/gpt-4o"]
    on_disagreement = "deny"
  }
  budget {
    max_cost_usd_per_day   = 1000
    max_cost_usd_per_month = 10000
  }
}
`

// BenchmarkReviewGate: the second-model review gate of one proposal
// (reconcile's review: the pending rules, the diff, the request, the
// reuse check against the decision in force and the money budgets'
// room), up to the call to the model, which this reconciler cannot make
// (it has no model runner), so no model is asked. Then what deciding an
// open proposal again reads of its evals (recordedEvals).
func BenchmarkReviewGate(b *testing.B) {
	fsys := fstest.MapFS{
		"providers.hcl":       {Data: []byte(benchReviewSpec)},
		"policies/review.hcl": {Data: []byte(benchReviewPolicy)},
		"tools/tuner.sh":      {Data: []byte("#!/bin/sh\necho POOL_SIZE=500 > config/a.env\n"), Mode: 0o755},
		"agents/tuner.hcl": {Data: []byte(`agent "tuner" {
  provider = provider.exec.local
  command  = ["sh", "tools/tuner.sh"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
}
`)},
	}
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: func(string) (string, bool) { return "", false }})
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	for _, kind := range []string{"own", "others"} {
		for _, n := range llmopsRuns {
			b.Run(fmt.Sprintf("%s=%d", kind, n), func(b *testing.B) {
				st := runsState(b, kind, n, nil)
				now := st.Time
				r := &Reconciler{spec: spec, log: slog.New(slog.DiscardHandler), cfg: Config{Now: func() time.Time { return now }}}
				p := &pass{state: st}
				a := spec.Agent(benchTuner)
				changes := []gitstore.FileChange{{Path: "config/a.env", Status: gitstore.StatusAdded, Content: []byte("POOL_SIZE=500\n"), Added: 1}}
				last := st.AgentRuns(benchTuner)[len(st.AgentRuns(benchTuner))-1]
				d := policy.Decision{Outcome: policy.RequireApproval, Summary: "require_approval review/second-opinion"}
				in := reviewInput{cond: hclspec.ConditionInput{Agent: a, Run: hclspec.RunInfo{ID: "ffffffffffff", Model: "gpt-4o"}, Change: conditionChanges(changes)},
					changes: changes, summary: "Raise the pool size", body: "It saturates.", prior: priorReviews(last)}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					in.prior = priorReviews(last)
					rv, err := r.review(context.Background(), p, d, in)
					if err != nil {
						b.Fatal(err)
					}
					if len(rv.Reviews) != 1 || !strings.Contains(rv.Reviews[0].Error, "runs no model agents") {
						b.Fatalf("reviews = %+v, want one that reached the model call", rv.Reviews)
					}
					_ = recordedEvals(last)
				}
			})
		}
	}
}

// BenchmarkRevertCheck: what a revert run checks before it inverts the
// change (checkRevert on the facts of the pass's state), as revertable,
// revertWork and replay do once per run and request ("check"); and the
// refresh, after a pass that appended one more run, of the facts the
// daemon's revert API reads ("refresh").
func BenchmarkRevertCheck(b *testing.B) {
	for _, kind := range []string{"own", "others"} {
		for _, n := range llmopsRuns {
			b.Run(fmt.Sprintf("%s=%d", kind, n), func(b *testing.B) {
				st := runsState(b, kind, n, nil)
				var merged string
				for _, rn := range st.AgentRuns(benchTuner) {
					if rn.Closed != nil && rn.Closed.Type == ledger.ProposalMerged {
						merged = rn.ID
					}
				}
				b.Run("check", func(b *testing.B) {
					b.ReportAllocs()
					for range b.N {
						if _, err := checkRevert(revertFactsFor(st, merged), merged, ""); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run("refresh", func(b *testing.B) {
					h := ledgergen.NewHistory(st.Time.Add(time.Minute))
					h.State = st.Clone()
					r := &Reconciler{}
					r.refreshRevertView(h.State)
					b.ReportAllocs()
					b.ResetTimer()
					for i := range b.N {
						b.StopTimer()
						id, err := h.Run(ledgergen.Run{Agent: benchTuner, N: 1_000_000 + i, End: ledgergen.EndMerged, Reverts: merged})
						if err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
						r.refreshRevertView(h.State)
						if f, ok := r.revertView.runs[id]; !ok || f.closed != ledger.ProposalMerged {
							b.Fatalf("the view has %+v for the new run", f)
						}
					}
				})
			})
		}
	}
}
