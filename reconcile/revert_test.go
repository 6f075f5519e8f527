package reconcile_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// revertEnv is the example repository whose image-pinner proposal Rita
// merged with a merge commit signed by her reviewers.hcl key (unsigned
// merges do not count), as recorded by a pass.
type revertEnv struct {
	*env
	r       *reconcile.Reconciler
	ritaKey string
	merged  ledger.Entry // proposal.merged of the image-pinner run
}

func newRevertEnv(t *testing.T, merge func(e *env, branch, ritaKey string)) *revertEnv {
	t.Helper()
	ritaKey, ritaPub := sshReviewerKey(t, "rita")
	e := newEnv(t, false, func(dir string) {
		withSigningKey("rita", ritaPub)(dir)
		p := filepath.Join(dir, "reviewers.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "accept_unsigned = true", "accept_unsigned = false")), 0o644)
	})
	rv := &revertEnv{env: e, r: e.reconciler(nil), ritaKey: ritaKey}
	e.pass(rv.r)
	opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatalf("no image-pinner proposal: %q", e.events())
	}
	if merge == nil {
		e.mergeSigned("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, ritaKey)
	} else {
		merge(e, opened.Proposal.Branch, ritaKey)
	}
	e.pass(rv.r)
	es := e.entries()
	if rv.merged, ok = find(es, ledger.ProposalMerged, "image-pinner"); !ok {
		t.Fatalf("image-pinner's proposal not recorded as merged: %q", e.events())
	}
	if v, bad := find(es, ledger.PolicyViolation, "image-pinner"); bad {
		t.Fatalf("the original merge is a violation: %s", v.Error)
	}
	return rv
}

// revert runs a pass with a revert request of run and returns its outcome.
func (rv *revertEnv) revert(r *reconcile.Reconciler, id, run string) reconcile.RequestOutcome {
	rv.t.Helper()
	res, err := r.Pass(context.Background(), []reconcile.Request{{ID: id, Revert: run, By: "oncall@example.com", Reason: "the pinned digest crashes on start", Received: rv.now}})
	if err != nil {
		rv.t.Fatalf("pass: %v", err)
	}
	for _, o := range res.Requests {
		if o.Request == id {
			return o
		}
	}
	rv.t.Fatalf("request %s has no outcome: %+v", id, res.Requests)
	return reconcile.RequestOutcome{}
}

// files lists the paths that differ between two revisions.
func (rv *revertEnv) files(from, to string) []string {
	return strings.Fields(rv.git("", "--git-dir", rv.bare, "diff", "--name-only", from, to))
}

func (rv *revertEnv) show(rev, path string) string {
	return rv.git("", "--git-dir", rv.bare, "show", rev+":"+path)
}

func decisionOf(t *testing.T, en ledger.Entry) policy.Decision {
	t.Helper()
	var d policy.Decision
	if err := json.Unmarshal(en.Decision, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// A revert of a merged proposal is a proposal of the same agent whose tree
// is main's with the original change's files as they were before the
// merge; it is decided as the original was, linked to it in the ledger,
// and recorded as approved when a reviewer's signed merge brings it in.
func TestRevertMergedProposal(t *testing.T) {
	rv := newRevertEnv(t, nil)
	orig, merge := rv.merged.RunID, rv.merged.Proposal.MergeCommit
	origFiles := rv.files(merge+"^1", merge)
	if len(origFiles) == 0 {
		t.Fatal("the original merge changed nothing")
	}

	o := rv.revert(rv.r, "rollback-1", orig)
	if o.State != reconcile.RequestStarted || o.Agent != "image-pinner" || o.RunID == "" || o.Trigger != "revert:"+orig+":rollback-1" {
		t.Fatalf("revert request outcome = %+v", o)
	}
	es := rv.entries()
	run := runEntries(es, o.RunID)
	var types []string
	for _, en := range run {
		types = append(types, en.Type)
		if en.Reverts != orig {
			t.Errorf("%s of the revert run has reverts %q, want %q", en.Type, en.Reverts, orig)
		}
	}
	if want := []string{ledger.RunStarted, ledger.RunFinished, ledger.PolicyDecision, ledger.ProposalOpened}; !slices.Equal(types, want) {
		t.Fatalf("revert run entries = %v, want %v", types, want)
	}
	if q := run[0].Request; q == nil || q.By != "oncall@example.com" || q.ID != "rollback-1" {
		t.Errorf("run.started request = %+v", q)
	}
	// The same policies decide: the same files need the same approval.
	origDecision, _ := find(es, ledger.PolicyDecision, "image-pinner")
	if got, want := decisionOf(t, run[2]).Summary, decisionOf(t, origDecision).Summary; got != want || !strings.Contains(got, "protect-prod/production") {
		t.Errorf("revert decision %q, want the original's %q", got, want)
	}
	branch := run[3].Proposal.Branch
	if branch != "agents/image-pinner/"+o.RunID || !slices.Contains(rv.branches(), branch) {
		t.Fatalf("revert branch %q not pushed: %v", branch, rv.branches())
	}
	head := run[3].Proposal.Head
	// It touches exactly the original's files, each as before the merge.
	if got := rv.files("main", head); !slices.Equal(got, origFiles) {
		t.Errorf("revert changes %v, want the original's files %v", got, origFiles)
	}
	for _, f := range origFiles {
		if got, want := rv.show(head, f), rv.show(merge+"^1", f); got != want {
			t.Errorf("%s in the revert:\n%s\nwant it as before the merge:\n%s", f, got, want)
		}
	}
	msg := rv.git("", "--git-dir", rv.bare, "log", "-1", "--format=%an <%ae>%n%B", head)
	for _, want := range []string{"image-pinner (agent)", "Revert run " + orig + " of image-pinner", "Requested by oncall@example.com.", "Agent-Run: " + o.RunID} {
		if !strings.Contains(msg, want) {
			t.Errorf("revert commit lacks %q:\n%s", want, msg)
		}
	}

	// Asked again with the same id: the same run. With another id: one
	// revert is open already.
	if again := rv.revert(rv.r, "rollback-1", orig); again.State != reconcile.RequestStarted || again.RunID != o.RunID {
		t.Errorf("repeated request = %+v, want the started run %s", again, o.RunID)
	}
	if other := rv.revert(rv.r, "rollback-2", orig); other.State != reconcile.RequestDropped || !strings.Contains(other.Reason, "already reverted") || !strings.Contains(other.Reason, branch) {
		t.Errorf("second request = %+v, want dropped: already reverted, naming %s", other, branch)
	}
	if n := count(rv.entries(), ledger.ProposalOpened); n != 3 && n != 2 {
		t.Errorf("%d proposal.opened entries", n)
	}

	// Rita's signed merge approves it.
	rv.mergeSigned("Rita Reviewer", "rita@example.com", branch, rv.ritaKey)
	rv.pass(rv.r)
	es = rv.entries()
	var approved, merged bool
	for _, en := range runEntries(es, o.RunID) {
		switch en.Type {
		case ledger.ProposalApproved:
			approved = en.Approval != nil && en.Approval.Method == ledger.ApprovalSSH && en.Approval.Member == "rita"
		case ledger.ProposalMerged:
			merged = true
			if en.WorkUnit != nil {
				t.Errorf("the revert's merge counts as a work unit %+v: ROI would count undoing work as value", en.WorkUnit)
			}
		case ledger.RunFinished:
			if en.WorkUnit != nil {
				t.Errorf("the revert run is for a work unit %+v", en.WorkUnit)
			}
		case ledger.PolicyViolation:
			t.Errorf("the revert's merge is a violation: %s", en.Error)
		}
	}
	if !approved || !merged {
		t.Fatalf("revert not recorded as approved by rita's signed merge and merged: %q", rv.events())
	}
	// A revert run has no transcript: replay computes the revert again
	// and gets the proposal's tree.
	rep, err := rv.r.Replay(context.Background(), o.RunID, agent.Replay)
	if err != nil {
		t.Fatalf("replay of the revert run: %v", err)
	}
	if !rep.Match() || rep.Err != nil {
		t.Errorf("replay of the revert run = %+v, want the proposal's tree", rep)
	}
	for _, f := range origFiles {
		if got, want := rv.show("main", f), rv.show(merge+"^1", f); got != want {
			t.Errorf("%s on main after the revert's merge differs from before the original merge", f)
		}
	}
	if gone := rv.revert(rv.r, "rollback-3", orig); gone.State != reconcile.RequestDropped || !strings.Contains(gone.Reason, "already reverted: by run "+o.RunID+", merged") {
		t.Errorf("request after the revert merged = %+v", gone)
	}
	rv.verify()
}

// A revert request that cannot be answered is dropped with one line
// saying why; nothing is recorded and no branch is pushed.
func TestRevertRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup changes the repository after the merge and returns the
		// run to revert.
		setup func(rv *revertEnv) string
		want  []string
	}{
		{"unknown run id", func(*revertEnv) string { return "0123456789ab" }, []string{`no such run in the ledger "0123456789ab"`}},
		{"a person's commit on main", func(rv *revertEnv) string {
			rv.commitAs("Sam", "sam@example.com", "tune replicas", func(w string) { atkAppend(rv.t, w, "deploy/staging/payments-api.yaml", "# tuned") })
			return strings.TrimSpace(rv.git("", "--git-dir", rv.bare, "rev-parse", "main"))
		}, []string{"no such run in the ledger"}},
		{"an open proposal", func(rv *revertEnv) string {
			en, ok := find(rv.entries(), ledger.ProposalOpened, "env-normaliser")
			if !ok {
				rv.t.Fatal("no env-normaliser proposal")
			}
			return en.RunID
		}, []string{"not merged", "is still open"}},
		{"a rejected proposal", func(rv *revertEnv) string {
			en, _ := find(rv.entries(), ledger.ProposalOpened, "env-normaliser")
			rv.git("", "--git-dir", rv.bare, "branch", "-D", en.Proposal.Branch)
			rv.pass(rv.r)
			return en.RunID
		}, []string{"not merged", "was rejected"}},
		{"the agent was removed", func(rv *revertEnv) string {
			rv.commitAs("Sam", "sam@example.com", "retire the image pinner", func(w string) { os.Remove(filepath.Join(w, "agents/image-pinner.hcl")) })
			rv.pass(rv.r)
			return rv.merged.RunID
		}, []string{`agent "image-pinner"`, "no longer in the spec"}},
		{"a file changed since the merge", func(rv *revertEnv) string {
			rv.commitAs("Sam", "sam@example.com", "bump replicas", func(w string) { atkAppend(rv.t, w, "deploy/prod/payments-api.yaml", "# replicas: 4") })
			return rv.merged.RunID
		}, []string{"conflicts", "deploy/prod/payments-api.yaml was changed since the merge by commit", `"bump replicas", by sam@example.com`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rv := newRevertEnv(t, nil)
			run := tc.setup(rv)
			before := len(rv.entries())
			branches := rv.branches()
			o := rv.revert(rv.r, "rb", run)
			if o.State != reconcile.RequestDropped {
				t.Fatalf("outcome %+v, want dropped", o)
			}
			for _, w := range tc.want {
				if !strings.Contains(o.Reason, w) {
					t.Errorf("reason %q lacks %q", o.Reason, w)
				}
			}
			if strings.Contains(o.Reason, "\n") {
				t.Errorf("reason is not one line: %q", o.Reason)
			}
			if es := rv.entries(); len(es) != before {
				t.Errorf("a refused revert recorded %d entries: %q", len(es)-before, rv.events()[before:])
			}
			if got := rv.branches(); !slices.Equal(got, branches) {
				t.Errorf("branches %v, were %v", got, branches)
			}
			// The daemon's check before queueing says the same.
			if _, err := rv.r.RevertTarget(context.Background(), run); err == nil || !strings.Contains(err.Error(), tc.want[len(tc.want)-1]) {
				t.Errorf("RevertTarget = %v, want an error with %q", err, tc.want[len(tc.want)-1])
			}
		})
	}
}

// The attack: a reviewer's merge commit that brings in more than the
// proposal (here a file in the agent's scope and one outside it) does not
// let a revert touch those files: the revert restores exactly the files
// the proposal changed, and leaves the merge's own additions as they are.
func TestRevertTouchesOnlyTheProposalsFiles(t *testing.T) {
	rv := newRevertEnv(t, func(e *env, branch, ritaKey string) {
		work := e.clone()
		e.gitAs("Rita Reviewer", "rita@example.com", work, "merge", "-q", "--no-ff", "--no-commit", "origin/"+branch)
		atkAppend(e.t, work, "deploy/images.lock", "# reviewed")
		atkAppend(e.t, work, "README.md", "extra line in the merge")
		e.git(work, "add", "-A")
		e.gitAs("Rita Reviewer", "rita@example.com", work, "-c", "gpg.format=ssh", "-c", "user.signingKey="+ritaKey, "commit", "-q", "-S", "-m", "Merge "+branch)
		e.git(work, "push", "-q", "origin", "main")
	})
	merge := rv.merged.Proposal.MergeCommit
	head := rv.merged.Proposal.Head
	proposalFiles := rv.files(head+"^1", head)
	mergeFiles := rv.files(merge+"^1", merge)
	if !slices.Contains(mergeFiles, "README.md") || !slices.Contains(mergeFiles, "deploy/images.lock") || slices.Contains(proposalFiles, "README.md") {
		t.Fatalf("merge changed %v, proposal %v: the test's merge is not the attack", mergeFiles, proposalFiles)
	}
	o := rv.revert(rv.r, "rb", rv.merged.RunID)
	if o.State != reconcile.RequestStarted {
		t.Fatalf("revert outcome %+v", o)
	}
	opened, ok := find(runEntries(rv.entries(), o.RunID), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatalf("no revert proposal: %q", rv.events())
	}
	if got := rv.files("main", opened.Proposal.Head); !slices.Equal(got, proposalFiles) {
		t.Errorf("the revert changes %v; want exactly the proposal's files %v", got, proposalFiles)
	}
	for _, f := range []string{"README.md", "deploy/images.lock"} {
		if rv.show(opened.Proposal.Head, f) != rv.show("main", f) {
			t.Errorf("the revert changed %s, which the merge commit (not the proposal) changed", f)
		}
	}
}

// A revert run claimed by a process that died before it finished is
// resumed by the next one once the claim's lease ran out, without the
// request: it is in the ledger. The request offered again is answered with
// that run, so there is one revert proposal.
func TestRevertResumesAfterACrash(t *testing.T) {
	rv := newRevertEnv(t, nil)
	orig := rv.merged.RunID
	crashing := rv.reconciler(&failingSigner{Signer: rv.signer, word: `"run.finished"`})
	_, err := crashing.Pass(context.Background(), []reconcile.Request{{ID: "rb", Revert: orig, By: "oncall@example.com"}})
	if err == nil || !strings.Contains(err.Error(), errCrash.Error()) {
		t.Fatalf("crash not reported: %v", err)
	}
	started, ok := find(rv.entries(), ledger.RunStarted, "image-pinner")
	for _, en := range rv.entries() {
		if en.Type == ledger.RunStarted && en.Reverts == orig {
			started, ok = en, true
		}
	}
	if !ok || started.Reverts != orig {
		t.Fatalf("no revert run.started before the crash: %q", rv.events())
	}
	rv.now = rv.now.Add(10 * time.Minute) // past the claim's lease
	fresh := rv.reconciler(nil)
	rv.pass(fresh)
	run := runEntries(rv.entries(), started.RunID)
	var types []string
	for _, en := range run {
		types = append(types, en.Type)
	}
	if want := []string{ledger.RunStarted, ledger.RunAbandoned, ledger.RunFinished, ledger.PolicyDecision, ledger.ProposalOpened}; !slices.Equal(types, want) {
		t.Fatalf("revert run after the restart: %v, want %v", types, want)
	}
	if again := rv.revert(fresh, "rb", orig); again.State != reconcile.RequestStarted || again.RunID != started.RunID {
		t.Errorf("request offered again = %+v, want run %s", again, started.RunID)
	}
	n := 0
	for _, en := range rv.entries() {
		if en.Type == ledger.ProposalOpened && en.Reverts == orig {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d revert proposals, want 1", n)
	}
	rv.verify()
}

// TestRevertedChangeNotProposedAgain: once a revert of an agent's merged
// change is merged, the agent's next run that comes to the same change
// does not propose it again, as with a rejected one.
func TestRevertedChangeNotProposedAgain(t *testing.T) {
	rv := newRevertEnv(t, nil)
	orig := rv.merged.RunID
	if o := rv.revert(rv.r, "rollback-1", orig); o.State != reconcile.RequestStarted {
		t.Fatalf("revert request = %+v, want started", o)
	}
	var revert ledger.Entry
	for _, en := range rv.entries() {
		if en.Type == ledger.ProposalOpened && en.Reverts == orig {
			revert = en
		}
	}
	if revert.RunID == "" {
		t.Fatalf("no revert proposal: %q", rv.events())
	}
	rv.mergeSigned("Rita Reviewer", "rita@example.com", revert.Proposal.Branch, rv.ritaKey)
	rv.pass(rv.r)
	// A person edits the agent's block: its next run (on_spec_change)
	// makes the same change again.
	rv.commitAs("Rita Reviewer", "rita@example.com", "describe the pinner", func(work string) {
		p := filepath.Join(work, "agents/image-pinner.hcl")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), "description", "# pins images by digest\n  description", 1)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	rv.pass(rv.r)
	var again *ledger.Entry
	es := rv.entries()
	for i := range es {
		en := es[i]
		if en.Type == ledger.RunFinished && en.Agent == "image-pinner" && en.RunID != orig && en.RunID != revert.RunID {
			again = &es[i]
		}
	}
	if again == nil {
		t.Fatalf("the agent did not run again after its spec changed: %q", rv.events())
	}
	if again.Outcome != reconcile.OutcomeDuplicateRejected || !strings.Contains(again.Summary, "reverted by run "+revert.RunID) {
		t.Errorf("run.finished after the revert = %s %q, want %s naming the revert", again.Outcome, again.Summary, reconcile.OutcomeDuplicateRejected)
	}
	for _, en := range es {
		if en.Type == ledger.ProposalOpened && en.RunID == again.RunID {
			t.Errorf("the reverted change was proposed again on %s", en.Proposal.Branch)
		}
	}
}
