package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// counterAgent is an exec agent that does nothing; countingExec counts
// its executions (the sandbox lets no agent write outside its workspace).
func counterAgent(description string) string {
	return fmt.Sprintf(`agent "counter" {
  description = %q
  provider    = provider.exec.local
  command     = ["sh", "-c", "true"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["counted/**"]
  }
}
`, description)
}

// countingExec is the exec runner, counting the counter agent's runs.
type countingExec struct {
	agent.Exec
	n *atomic.Int64
}

func (c countingExec) Run(ctx context.Context, t agent.Task) (agent.Result, error) {
	if t.Agent.Name == "counter" {
		c.n.Add(1)
	}
	return c.Exec.Run(ctx, t)
}

// Reconcilers racing on one repository never run the same run twice: every
// run id has exactly one run.started, the agent ran once per run, at most
// one proposal.opened per run, no pass fails for having lost a race, and
// the ledger verifies.
func TestClaimsAcrossConcurrentReconcilers(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d reconcilers", n), func(t *testing.T) {
			var executed atomic.Int64
			runners := map[string]agent.Runner{"exec": countingExec{n: &executed}}
			e := newEnv(t, true, func(dir string) {
				os.WriteFile(filepath.Join(dir, "agents/counter.hcl"), []byte(counterAgent("round 0")), 0o644)
			})
			const rounds = 4
			for round := 0; round < rounds; round++ {
				if round > 0 {
					e.commitAs("Sam", "sam@example.com", fmt.Sprintf("round %d", round), func(work string) {
						os.WriteFile(filepath.Join(work, "agents/counter.hcl"), []byte(counterAgent(fmt.Sprintf("round %d", round))), 0o644)
					})
				}
				rs := make([]*reconcile.Reconciler, n)
				for i := range rs {
					rs[i] = e.reconcilerWith(runners)
				}
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for _, r := range rs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- r.Reconcile(context.Background())
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("round %d: a pass failed: %v", round, err)
					}
				}
			}
			es := e.entries()
			started := map[string]int{}
			opened := map[string]int{}
			for _, en := range es {
				switch en.Type {
				case ledger.RunStarted:
					started[en.RunID]++
				case ledger.ProposalOpened:
					opened[en.RunID]++
				}
			}
			for id, c := range started {
				if c != 1 {
					t.Errorf("run %s has %d run.started entries", id, c)
				}
			}
			for id, c := range opened {
				if c != 1 {
					t.Errorf("run %s has %d proposal.opened entries", id, c)
				}
			}
			counterRuns := 0
			for _, en := range es {
				if en.Type == ledger.RunStarted && en.Agent == "counter" {
					counterRuns++
				}
			}
			if n := int(executed.Load()); n != counterRuns || counterRuns != rounds {
				t.Errorf("the counter agent ran %d times for %d runs (want %d, one per round): %q", n, counterRuns, rounds, e.events())
			}
			e.verify()
		})
	}
}

// A supersede interrupted after its proposal.superseded entry and before
// the old branch's deletion is finished by the next pass; a superseded
// branch a person pushed to since is left alone.
func TestSupersedeIsResumable(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("moved=%v", moved), func(t *testing.T) {
			e := newEnv(t, false, func(dir string) {
				os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
				os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
				writeAgent(dir, "churner", `"config/**"`, "echo one > config/churn.env")
			})
			r := e.reconciler(nil)
			e.pass(r)
			first := e.branches()
			if len(first) != 1 {
				t.Fatalf("branches = %v", first)
			}
			head := e.git("", "--git-dir", e.bare, "rev-parse", first[0])
			e.commitAs("Sam", "sam@example.com", "churn differently", func(work string) {
				os.WriteFile(filepath.Join(work, "tools/churner.sh"), []byte("#!/bin/sh\nset -e\necho two > config/churn.env\n"), 0o755)
			})
			e.pass(r)
			if _, ok := find(e.entries(), ledger.ProposalSuperseded, "churner"); !ok {
				t.Fatalf("no supersede: %q", e.events())
			}
			// As if the process died before deleting the old branch.
			e.git("", "--git-dir", e.bare, "update-ref", "refs/heads/"+first[0], head)
			if moved {
				work := e.clone()
				e.git(work, "checkout", "-q", first[0])
				e.gitAs("Sam", "sam@example.com", work, "commit", "-q", "--allow-empty", "-m", "keep working on it")
				e.git(work, "push", "-q", "origin", first[0])
			}
			e.pass(e.reconciler(nil))
			has := false
			for _, b := range e.branches() {
				has = has || b == first[0]
			}
			if has != moved {
				t.Errorf("superseded branch present = %v after a pass, want %v", has, moved)
			}
			e.verify()
		})
	}
}

// A branch pushed ahead of the reconciler on a run's name (run ids are
// printed by plan) is never adopted or decided on: it is recorded once as
// branch squatting, and the run proposes nothing.
func TestBranchSquattingIsNotAdopted(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, transport == "http", nil)
			r := e.reconciler(nil)
			plan, err := r.Plan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var runID string
			for _, ap := range plan.Agents {
				if ap.Agent == "image-pinner" {
					runID = ap.RunID
				}
			}
			if runID == "" {
				t.Fatalf("plan = %+v", plan)
			}
			branch := reconcile.ProposalBranch("image-pinner", runID)
			work := e.clone()
			e.git(work, "checkout", "-q", "-b", branch)
			os.WriteFile(filepath.Join(work, "policies/protect-prod.hcl"), []byte("# gone\n"), 0o644)
			e.git(work, "add", "-A")
			e.gitAs("Mallory", "mallory@example.com", work, "commit", "-q", "-m", "Pin images")
			e.git(work, "push", "-q", "origin", branch)
			squat := e.git("", "--git-dir", e.bare, "rev-parse", branch)
			e.pass(r)
			e.pass(e.reconciler(nil))
			es := e.entries()
			n := 0
			for _, en := range es {
				if en.Type == ledger.PolicyViolation && en.RunID == runID {
					n++
					if !strings.Contains(en.Error, "branch squatting") || !strings.Contains(en.Error, "mallory@example.com") {
						t.Errorf("violation = %q", en.Error)
					}
				}
				if en.Type == ledger.ProposalOpened && en.RunID == runID {
					t.Errorf("the squatted branch was adopted: %s", en.Summary)
				}
			}
			if n != 1 {
				t.Errorf("%d branch-squatting violations, want 1: %q", n, e.events())
			}
			if got := e.git("", "--git-dir", e.bare, "rev-parse", branch); got != squat {
				t.Errorf("the squatted branch moved: %s -> %s", squat, got)
			}
			if _, ok := find(es, ledger.ProposalOpened, "env-normaliser"); !ok {
				t.Errorf("the other agent's proposal is missing: %q", e.events())
			}
			st := r.Status().Agents["image-pinner"]
			found := false
			for _, c := range st.Conditions {
				found = found || (c.Type == "PolicyViolation" && c.Reason == "BranchSquatting")
			}
			if !found {
				t.Errorf("image-pinner's status does not say its branch was squatted: %+v", st.Conditions)
			}
			e.verify()
		})
	}
}

// mergeSigned merges a proposal branch into main as a person, signing the
// merge commit with SSH key signKey ("" for an unsigned merge).
func (e *env) mergeSigned(name, email, branch, signKey string) {
	e.t.Helper()
	work := e.clone()
	args := []string{"merge", "-q", "--no-ff", "-m", "Merge " + branch, "origin/" + branch}
	if signKey != "" {
		args = append([]string{"-c", "gpg.format=ssh", "-c", "user.signingKey=" + signKey, "merge", "-S"}, args[1:]...)
	}
	e.gitAs(name, email, work, args...)
	e.git(work, "push", "-q", "origin", "main")
}

// In a group without accept_unsigned, only a merge signed by a member's
// signing_key approves: the committer's name and email prove nothing.
func TestSignedMergeApproval(t *testing.T) {
	for _, tc := range []struct {
		name, sign string // sign: "rita", "mallory" or "" (unsigned)
		approved   bool
	}{
		{"merge signed by the member's key", "rita", true},
		{"unsigned merge with the member's name and email", "", false},
		{"merge signed by a key in no reviewers.hcl, as the member", "mallory", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ritaKey, ritaPub := sshReviewerKey(t, "rita")
			malloryKey, _ := sshReviewerKey(t, "mallory")
			e := newEnv(t, false, func(dir string) {
				withSigningKey("rita", ritaPub)(dir)
				p := filepath.Join(dir, "reviewers.hcl")
				b, _ := os.ReadFile(p)
				os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")), 0o644)
			})
			r := e.reconciler(nil)
			e.pass(r)
			opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
			if !ok {
				t.Fatalf("no proposal: %q", e.events())
			}
			key := map[string]string{"rita": ritaKey, "mallory": malloryKey}[tc.sign]
			e.mergeSigned("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, key)
			e.pass(r)
			es := e.entries()
			approved, _ := find(es, ledger.ProposalApproved, "image-pinner")
			v, violated := find(es, ledger.PolicyViolation, "image-pinner")
			if tc.approved {
				out, _ := exec.Command("ssh-keygen", "-lf", ritaKey+".pub").Output()
				fpr := strings.Fields(string(out))[1]
				if violated || !strings.Contains(approved.Reviewer, "signed by rita (sre) ssh "+fpr) {
					t.Errorf("approval = %q, violation = %q; want an approval signed with %s", approved.Reviewer, v.Error, fpr)
				}
				a := approved.Approval
				if a == nil || a.Method != ledger.ApprovalSSH || a.Via != "merge" || a.Member != "rita" || a.Fingerprint != fpr ||
					a.Head != opened.Proposal.Head || len(a.Satisfies) != 1 || a.Satisfies[0].Group != "sre" ||
					!slices.Equal(a.Satisfies[0].Rules, []string{"protect-prod/production"}) {
					t.Errorf("approval record = %+v, want ssh merge by rita with %s on %s satisfying sre for protect-prod/production", a, fpr, opened.Proposal.Head)
				}
			} else {
				// A merge that proves nothing is no approval: it is named
				// in the violation, never recorded as proposal.approved.
				if !violated || !strings.Contains(v.Error, "needs 1 of sre, has 0") || !strings.Contains(v.Error, "not counted: Rita Reviewer <rita@example.com> (unsigned") {
					t.Errorf("violation = %+v, want \"needs 1 of sre, has 0\" naming the unsigned merge", v.Event)
				}
				if n := count(es, ledger.ProposalApproved); n != 0 {
					t.Errorf("%d proposal.approved entries, want none", n)
				}
			}
			e.verify()
		})
	}
}

// Approvals beyond the merge are signed tags approve/<run-id>/<member> on
// the merged head: a signed merge plus a member's signed tag satisfy "2 of
// sre"; a tag on another head, or one named for a member but signed by
// someone else, counts for nothing.
func TestSignedTagApprovals(t *testing.T) {
	for _, tc := range []struct {
		name string
		tag  func(e *env, work, tagName, oldHead, samKey, ritaKey string)
		ok   bool
	}{
		{"signed tag by the member on the head", func(e *env, work, tagName, _, samKey, _ string) {
			e.gitAs("Sam", "sam@example.com", work, "-c", "gpg.format=ssh", "-c", "user.signingKey="+samKey, "tag", "-s", "-m", "approve", tagName, "HEAD")
		}, true},
		{"signed tag on another head", func(e *env, work, tagName, oldHead, samKey, _ string) {
			e.gitAs("Sam", "sam@example.com", work, "-c", "gpg.format=ssh", "-c", "user.signingKey="+samKey, "tag", "-s", "-m", "approve", tagName, oldHead)
		}, false},
		{"tag for sam signed by rita", func(e *env, work, tagName, _, _, ritaKey string) {
			e.gitAs("Rita", "rita@example.com", work, "-c", "gpg.format=ssh", "-c", "user.signingKey="+ritaKey, "tag", "-s", "-m", "approve", tagName, "HEAD")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ritaKey, ritaPub := sshReviewerKey(t, "rita")
			samKey, samPub := sshReviewerKey(t, "sam")
			e := newEnv(t, false, func(dir string) {
				withSigningKey("rita", ritaPub)(dir)
				withSigningKey("sam", samPub)(dir)
				for _, f := range []struct{ file, old, new string }{
					{"reviewers.hcl", "accept_unsigned = true", "accept_unsigned = false"},
					{"policies/protect-prod.hcl", "reviewers = [\"sre\"]\n    min       = 1", "reviewers = [\"sre\"]\n    min       = 2"},
				} {
					p := filepath.Join(dir, f.file)
					b, _ := os.ReadFile(p)
					os.WriteFile(p, []byte(strings.ReplaceAll(string(b), f.old, f.new)), 0o644)
				}
			})
			r := e.reconciler(nil)
			e.pass(r)
			opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
			if !ok || !strings.Contains(opened.Summary, "2 of sre") {
				t.Fatalf("proposal = %q", opened.Summary)
			}
			// Sam tags the proposal head (or another commit) and pushes the tag.
			work := e.clone()
			e.git(work, "checkout", "-q", opened.Proposal.Branch)
			oldHead := e.git(work, "rev-parse", "HEAD~1")
			tagName := "approve/" + opened.RunID + "/sam"
			tc.tag(e, work, tagName, oldHead, samKey, ritaKey)
			e.git(work, "push", "-q", "origin", "refs/tags/"+tagName)
			e.mergeSigned("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, ritaKey)
			e.pass(r)
			es := e.entries()
			v, violated := find(es, ledger.PolicyViolation, "image-pinner")
			tagged := false
			for _, en := range es {
				tagged = tagged || (en.Type == ledger.ProposalApproved && strings.Contains(en.Summary, "(tag "+tagName+")"))
			}
			if tc.ok && (violated || !tagged) {
				t.Errorf("tag approval recorded = %v, violation = %q; want the tag to count", tagged, v.Error)
			}
			if !tc.ok && (!violated || tagged || !strings.Contains(v.Error, "needs 2 of sre, has 1")) {
				t.Errorf("tag approval recorded = %v, violation = %q; want \"needs 2 of sre, has 1\"", tagged, v.Error)
			}
			e.verify()
		})
	}
}

// A superseded proposal merged later (from a copy of its branch) is a
// policy.violation, recorded once.
func TestMergedSupersededIsAViolation(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		writeAgent(dir, "churner", `"config/**"`, "echo one > config/churn.env")
	})
	r := e.reconciler(nil)
	e.pass(r)
	first := e.branches()[0]
	keep := e.clone()
	e.git(keep, "fetch", "-q", "origin", first+":old-proposal")
	e.commitAs("Sam", "sam@example.com", "churn differently", func(work string) {
		os.WriteFile(filepath.Join(work, "tools/churner.sh"), []byte("#!/bin/sh\nset -e\necho two > config/churn.env\n"), 0o755)
	})
	e.pass(r)
	if _, ok := find(e.entries(), ledger.ProposalSuperseded, "churner"); !ok {
		t.Fatalf("no supersede: %q", e.events())
	}
	e.git(keep, "pull", "-q", "--no-rebase", "origin", "main")
	e.gitAs("Rita Reviewer", "rita@example.com", keep, "merge", "-q", "--no-ff", "-m", "Merge the old one", "old-proposal")
	e.git(keep, "push", "-q", "origin", "HEAD:main")
	e.pass(r)
	e.pass(e.reconciler(nil))
	n := 0
	for _, en := range e.entries() {
		if en.Type == ledger.PolicyViolation && strings.Contains(en.Error, "merged superseded proposal") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d violations for the merged superseded proposal, want 1: %q", n, e.events())
	}
	e.verify()
}
