//go:build unix

package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/internal/crashpoint"
	"github.com/agentgitops/reconciler/ledger"
)

// maxCrashSteps bounds the crash steps tried per crash point: a pass that
// still dies at this step is a runaway.
const maxCrashSteps = 40

// crashScenario is a repository state in front of the pass under test.
type crashScenario struct {
	name string
	// prepare brings the fresh repository (testdata/process/crash) to the
	// state in front of the pass under test, running passes with cache.
	prepare func(t *testing.T, r *procRepo, cache string)
	// check checks the state after a pass killed at some step (killedPID;
	// 0 when the pass ran to its end) and a pass to completion, beyond
	// the checks every scenario shares.
	check func(t *testing.T, es []ledger.Entry, runs map[string]*runView, killedPID int)
}

// SIGKILL of a real `once` process after every push and every ledger
// append of a pass that supersedes a proposal, and of a pass that records
// an approval, each on a fresh copy of the state in front of the pass,
// then a pass to completion: the ledger verifies, every run has one claim
// and no event recorded twice, the branches are exactly the ledger's open
// proposals (the superseded one gone, the new one there), the approval is
// recorded once, and a further pass has nothing left to do.
func TestCrashDuringSupersedeAndApproval(t *testing.T) {
	for _, sc := range []crashScenario{
		{
			name: "supersede",
			prepare: func(t *testing.T, r *procRepo, cache string) {
				mustOnce(t, r, cache)
				// churner's run on the new spec makes a different change:
				// the pass supersedes its open proposal.
				r.commit("Churn differently", func(work string) {
					writeExec(t, filepath.Join(work, "tools", "churn.sh"), "#!/bin/sh\nset -eu\necho CHURN=two > config/churn.env\necho \"Churn the config again\"\n")
				})
			},
			check: func(t *testing.T, es []ledger.Entry, runs map[string]*runView, killedPID int) {
				checkReplaced(t, runs, "churner", killedPID)
			},
		},
		{
			name: "approval",
			prepare: func(t *testing.T, r *procRepo, cache string) {
				mustOnce(t, r, cache)
				var branch string
				for _, v := range foldRuns(r.entries()) {
					if v.agent == "churner" && v.open() {
						branch = v.opened.Proposal.Branch
					}
				}
				if branch == "" {
					t.Fatal("churner opened no proposal")
				}
				// Rita (sre, accept_unsigned) merges churner's proposal,
				// and a spec change makes scribe due again, so the pass
				// records the approval and then supersedes scribe's
				// proposal.
				work := gittest.Clone(t, r.bare)
				gitAs(t, work, "Rita Reviewer", "rita@example.com", "merge", "-q", "--no-ff", "-m", "Merge "+branch, "origin/"+branch)
				if err := os.WriteFile(filepath.Join(work, "prompts", "scribe.md"), []byte("Second version.\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				gittest.Git(t, work, "commit", "-q", "-am", "Scribe the second version")
				gittest.Git(t, work, "push", "-q", "origin", "main")
			},
			check: func(t *testing.T, es []ledger.Entry, runs map[string]*runView, killedPID int) {
				var merged, approved int
				for _, e := range es {
					if e.Agent != "churner" {
						continue
					}
					switch e.Type {
					case ledger.ProposalMerged:
						merged++
					case ledger.ProposalApproved:
						approved++
						if !strings.Contains(e.Reviewer, "rita@example.com") || !strings.Contains(e.Reviewer, "unsigned") {
							t.Errorf("approval recorded as %q, want rita's unsigned merge", e.Reviewer)
						}
					case ledger.PolicyViolation:
						t.Errorf("policy.violation: %s", e.Error)
					}
				}
				if merged != 1 || approved != 1 {
					t.Errorf("churner's proposal has %d proposal.merged and %d proposal.approved entries, want 1 and 1", merged, approved)
				}
				checkReplaced(t, runs, "scribe", killedPID)
			},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			base := newProcRepo(t, "crash", false)
			sc.prepare(t, base, filepath.Join(t.TempDir(), "cache"))
			steps := map[string]int{}
			for _, point := range []string{"push", "ledger.append"} {
				for n := 1; ; n++ {
					if n > maxCrashSteps {
						t.Fatalf("%s: the pass still died at step %d", point, n)
					}
					r := base.copy()
					cache := filepath.Join(t.TempDir(), "cache")
					at := fmt.Sprintf("%s:%d", point, n)
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					crashed := r.once(ctx, cache, crashpoint.EnvVar+"="+at)
					cancel()
					killedPID := 0
					switch {
					case crashed.killed():
						killedPID = crashed.pid
						// The next pass, in the cache the killed process
						// left, runs to completion.
						mustOnce(t, r, cache)
					case crashed.code == 0 && crashed.err == nil:
						steps[point] = n - 1
					default:
						t.Fatalf("%s=%s: want SIGKILL or exit 0, got %s", crashpoint.EnvVar, at, crashed)
					}
					t.Run(at, func(t *testing.T) {
						r.t = t
						r.verify()
						es := r.entries()
						runs := foldRuns(es)
						checkOnce(t, runs, ledger.RunFinished, ledger.PolicyDecision, ledger.ProposalOpened,
							ledger.ProposalSuperseded, ledger.ProposalMerged, ledger.ProposalApproved)
						checkBranches(t, runs, r.branches())
						sc.check(t, es, runs, killedPID)
						// Nothing is left to do: a further pass records
						// nothing and moves no branch.
						before := r.branches()
						mustOnce(t, r, cache)
						if after := r.entries(); len(after) != len(es) {
							for _, e := range after[len(es):] {
								t.Errorf("a further pass recorded %s", e.Summary)
							}
						}
						if after := r.branches(); !maps.Equal(before, after) {
							t.Errorf("a further pass moved branches: %v -> %v", before, after)
						}
					})
					if killedPID == 0 {
						break
					}
				}
			}
			t.Logf("crash steps: %d push, %d ledger.append", steps["push"], steps["ledger.append"])
			if steps["push"] == 0 || steps["ledger.append"] == 0 {
				t.Errorf("the pass has no crash steps: %v", steps)
			}
		})
	}
}

// checkReplaced checks the run of agent on the new spec (its newest run
// started): once it has an outcome, its proposal is open and every older
// proposal of the agent is superseded. The recovery pass runs on the
// killed process's cache, so it resumes that process's claim at once.
func checkReplaced(t *testing.T, runs map[string]*runView, agent string, killedPID int) {
	t.Helper()
	var newest *runView
	var newestID string
	var older []*runView
	for id, v := range runs {
		if v.agent != agent || v.started == nil {
			continue
		}
		if newest == nil || v.started.Seq > newest.started.Seq {
			if newest != nil {
				older = append(older, newest)
			}
			newest, newestID = v, id
		} else {
			older = append(older, v)
		}
	}
	if newest == nil || len(older) != 1 {
		t.Fatalf("%s has %d runs, want 2", agent, len(older)+1)
	}
	old := older[0]
	if !newest.settled() {
		// The recovery pass runs on the killed process's cache, whose
		// claims are its own (the claimant is the host and the cache,
		// held by one process at a time): it resumes them at once.
		t.Errorf("run %s of %s has no outcome after the recovery pass (claimed by %q; killed pid %d)", newestID, agent, newest.started.Claimant, killedPID)
		return
	}
	if !newest.open() {
		t.Errorf("%s's new run %s has an outcome but no open proposal", agent, newestID)
	}
	if old.closed == nil || old.closed.Type != ledger.ProposalSuperseded {
		t.Errorf("%s's older proposal is not superseded (closed by %v)", agent, old.closed)
	}
}

// copy returns a copy of the repository in a fresh directory, for a pass
// that starts from the same state.
func (r *procRepo) copy() *procRepo {
	r.t.Helper()
	c := *r
	c.bare = filepath.Join(r.t.TempDir(), "repo.git")
	if err := os.CopyFS(c.bare, os.DirFS(r.bare)); err != nil {
		r.t.Fatal(err)
	}
	c.url = c.bare
	return &c
}

// mustOnce runs a pass that must exit 0.
func mustOnce(t *testing.T, r *procRepo, cache string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if res := r.once(ctx, cache); res.code != 0 || res.err != nil {
		t.Fatalf("once: %s", res)
	}
}

// gitAs runs git in dir as a person.
func gitAs(t *testing.T, dir, name, email string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, gittest.Env(name, email)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
