package forge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/internal/giteatest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/signing"
)

// init lets the test binary be the sandbox's helper, so that the example's
// exec agents run sandboxed as in production (the package's TestMain, in
// git_test.go, does not call sandbox.Init; init runs before it).
func init() { sandbox.Init() }

// e2e is the example repository (examples/repo-layout) hosted on a real
// Gitea, and a reconciler whose forge is that Gitea.
type e2e struct {
	t      *testing.T
	s      *giteatest.Server
	r      *giteatest.Repo
	signer *signing.Signer
	now    time.Time
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	s := giteatest.Start(t)
	r := s.CreateRepo(s.Bot, "desired")
	r.AddCollaborator(giteatest.RitaLogin, "write")
	r.AddCollaborator(giteatest.SamLogin, "write")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/repo-layout")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tools/pin-images.sh", "tools/normalise-env.sh"} {
		if err := os.Chmod(filepath.Join(dir, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".reconciler/keys/ledger.pub"), signer.PublicKeyPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Git(dir, "init", "--quiet", "--initial-branch=main")
	r.Git(dir, "add", "-A")
	r.Git(dir, "commit", "--quiet", "-m", "Initial commit")
	r.Push(s.Bot, dir, "main")
	// A Tuesday morning in Berlin, after the example's weekday schedule slot.
	return &e2e{t: t, s: s, r: r, signer: signer, now: time.Date(2026, 11, 17, 9, 30, 0, 0, time.UTC)}
}

func (e *e2e) reconciler() *reconcile.Reconciler {
	e.t.Helper()
	cfg := reconcile.Config{
		Repo:     e.r.CloneURL(e.s.Bot),
		Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"},
		Signer:   e.signer, WorkDir: e.t.TempDir(),
		Now:    func() time.Time { return e.now },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Forge: func(repo *gitstore.Repo) reconcile.Forge {
			g, err := forge.NewGitea(repo, forge.GiteaConfig{BaseURL: e.s.URL, Owner: e.r.Owner, Name: e.r.Name,
				Token: e.s.Bot.Token, Instance: "e2e"})
			if err != nil {
				e.t.Fatal(err)
			}
			return g
		},
	}
	r, err := reconcile.New(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { r.Close() })
	return r
}

func (e *e2e) pass(r *reconcile.Reconciler) {
	e.t.Helper()
	if err := r.Reconcile(context.Background()); err != nil {
		e.t.Fatalf("reconcile: %v", err)
	}
}

func (e *e2e) entries() []ledger.Entry {
	e.t.Helper()
	repo := open(e.t, e.r.CloneURL(e.s.Bot))
	es, err := ledger.New(repo, ledger.Options{}).Entries(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

func findEntry(es []ledger.Entry, typ, agent string) (ledger.Entry, bool) {
	for _, en := range es {
		if en.Type == typ && en.Agent == agent {
			return en, true
		}
	}
	return ledger.Entry{}, false
}

// TestGiteaEndToEnd runs the reconciler on the example repository hosted
// on a real Gitea: a pass opens one pull request per proposal; Rita
// approves the image pinner's on Gitea and Sam merges it there; Sam closes
// the env normaliser's. The next pass records the approval (method forge,
// login rita, the review's id), the merge, and the rejection, without a
// violation; passes after that open nothing again.
func TestGiteaEndToEnd(t *testing.T) {
	e := newE2E(t)
	r := e.reconciler()
	e.pass(r)
	es := e.entries()
	pinner, ok := findEntry(es, ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatalf("no proposal.opened for image-pinner: %v", types(es))
	}
	envn, ok := findEntry(es, ledger.ProposalOpened, "env-normaliser")
	if !ok {
		t.Fatalf("no proposal.opened for env-normaliser: %v", types(es))
	}
	decision, _ := findEntry(es, ledger.PolicyDecision, "image-pinner")
	prs := e.r.PullRequests()
	if len(prs) != 2 {
		t.Fatalf("%d pull requests after the first pass, want 2", len(prs))
	}
	var pr, envPR giteatest.PullRequest
	for _, p := range prs {
		switch p.Head.Ref {
		case pinner.Proposal.Branch:
			pr = p
		case envn.Proposal.Branch:
			envPR = p
		}
	}
	if pr.Number == 0 || envPR.Number == 0 {
		t.Fatalf("pull requests %+v, want one of %s and one of %s", prs, pinner.Proposal.Branch, envn.Proposal.Branch)
	}
	seq := jsonNum(decision.Seq)
	for _, want := range []string{"head=" + pinner.Proposal.Head, "- Ledger entry: " + seq,
		"reconciler ledger show " + seq + " --repo " + e.r.PublicURL(), "protect-prod/production", "1 of sre"} {
		if !strings.Contains(pr.Body, want) {
			t.Errorf("pull request body lacks %q:\n%s", want, pr.Body)
		}
	}
	if !strings.HasPrefix(pr.Title, "Pin 4 container image(s)") {
		t.Errorf("title %q", pr.Title)
	}
	if st := e.r.CombinedStatus(pinner.Proposal.Head); st["reconciler/e2e"] != "pending" {
		t.Errorf("status of the proposal head: %v", st)
	}

	// A quiet pass changes nothing on Gitea.
	e.pass(r)
	if n := len(e.r.PullRequests()); n != 2 {
		t.Errorf("%d pull requests after a quiet pass", n)
	}

	reviewID := e.r.Review(e.s.Rita, pr.Number, "APPROVED", pinner.Proposal.Head, "pins look right")
	// Before the merge, a pass shows on the pull request that its
	// approvals now satisfy the decision (a protected branch may require
	// this status); an outsider's approval of the other changes nothing.
	e.r.Review(e.s.Outsider, envPR.Number, "APPROVED", envn.Proposal.Head, "lgtm")
	e.pass(r)
	if st := e.r.CombinedStatus(pinner.Proposal.Head); st["reconciler/e2e"] != "success" {
		t.Errorf("status after rita's approval: %v, want success", st)
	}
	if st := e.r.CombinedStatus(envn.Proposal.Head); st["reconciler/e2e"] != "pending" {
		t.Errorf("status after an outsider's approval: %v, want pending", st)
	}
	e.r.Merge(e.s.Sam, pr.Number, "merge")
	e.r.Close(e.s.Sam, envPR.Number)
	e.pass(e.reconciler()) // a fresh process: nothing remembered but the ledger
	es = e.entries()
	approved, ok := findEntry(es, ledger.ProposalApproved, "image-pinner")
	if !ok {
		t.Fatalf("no proposal.approved: %v", types(es))
	}
	a := approved.Approval
	if a == nil || a.Method != ledger.ApprovalForge || a.Via != "review" || a.Login != "rita" || a.Member != "rita" ||
		a.Ref != jsonNum(uint64(reviewID)) || a.Head != pinner.Proposal.Head || len(a.Satisfies) != 1 || a.Satisfies[0].Group != "sre" {
		t.Errorf("approval %+v (reviewer %q)", a, approved.Reviewer)
	}
	merged, ok := findEntry(es, ledger.ProposalMerged, "image-pinner")
	if !ok || merged.Proposal.Head != pinner.Proposal.Head || merged.Proposal.MergeCommit != *e.r.Pull(pr.Number).MergeSHA {
		t.Errorf("merge %+v, want the merge of %s at %v", merged.Proposal, pinner.Proposal.Head, e.r.Pull(pr.Number).MergeSHA)
	}
	if _, ok := findEntry(es, ledger.ProposalRejected, "env-normaliser"); !ok {
		t.Errorf("the closed pull request is not a rejection: %v", types(es))
	}
	for _, en := range es {
		if en.Type == ledger.PolicyViolation {
			t.Errorf("violation: %s", en.Error)
		}
	}
	n := len(es)
	e.pass(r)
	if got := e.entries(); len(got) != n {
		t.Errorf("a quiet pass after the merge wrote %v", types(got[n:]))
	}
	if got := e.r.PullRequests(); len(got) != 2 || e.r.Pull(envPR.Number).State != "closed" {
		t.Errorf("pull requests after the merge: %d, env-normaliser's %s", len(got), e.r.Pull(envPR.Number).State)
	}
}

// TestGiteaEndToEndMergeWithoutApproval: Sam merges the image pinner's
// pull request on Gitea without any approving review: the reconciler
// records the merge and a policy.violation, and no approval.
func TestGiteaEndToEndMergeWithoutApproval(t *testing.T) {
	e := newE2E(t)
	r := e.reconciler()
	e.pass(r)
	pinner, ok := findEntry(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatal("no proposal.opened for image-pinner")
	}
	var number int64
	for _, p := range e.r.PullRequests() {
		if p.Head.Ref == pinner.Proposal.Branch {
			number = p.Number
		}
	}
	// An approval of nobody in sre, and a comment, prove nothing.
	e.r.Review(e.s.Outsider, number, "COMMENT", "", "drive-by")
	e.r.Merge(e.s.Sam, number, "merge")
	e.pass(r)
	es := e.entries()
	if _, ok := findEntry(es, ledger.ProposalMerged, "image-pinner"); !ok {
		t.Fatalf("merge not recorded: %v", types(es))
	}
	if _, ok := findEntry(es, ledger.ProposalApproved, "image-pinner"); ok {
		t.Error("an approval was recorded")
	}
	v, ok := findEntry(es, ledger.PolicyViolation, "image-pinner")
	if !ok || !strings.Contains(v.Error, "needs 1 of sre, has 0") {
		t.Errorf("violation %q, want needs 1 of sre, has 0", v.Error)
	}
	// The people who merged are told, once, on the pull request.
	e.pass(r)
	said := 0
	for _, c := range e.r.Comments(number) {
		if strings.Contains(c.Body, "Policy violation") && strings.Contains(c.Body, "needs 1 of sre, has 0") && strings.Contains(c.Body, "ledger log --run "+pinner.RunID) {
			said++
		}
	}
	if said != 1 {
		t.Errorf("%d comments on the violation, want 1: %+v", said, e.r.Comments(number))
	}
}

// TestGiteaEndToEndFastForwardWithReview: Sam merges the image pinner's
// pull request on Gitea with the fast-forward-only style after Rita's
// approving review: no merge commit, but the review proves the approval,
// so the merge is approved, not a violation. The same fast-forward without
// a review is one.
func TestGiteaEndToEndFastForwardWithReview(t *testing.T) {
	for _, reviewed := range []bool{true, false} {
		t.Run(fmt.Sprintf("reviewed=%v", reviewed), func(t *testing.T) {
			e := newE2E(t)
			r := e.reconciler()
			e.pass(r)
			pinner, ok := findEntry(e.entries(), ledger.ProposalOpened, "image-pinner")
			if !ok {
				t.Fatal("no proposal.opened for image-pinner")
			}
			var number int64
			for _, p := range e.r.PullRequests() {
				if p.Head.Ref == pinner.Proposal.Branch {
					number = p.Number
				}
			}
			if reviewed {
				e.r.Review(e.s.Rita, number, "APPROVED", pinner.Proposal.Head, "ok")
			}
			e.r.Merge(e.s.Sam, number, "fast-forward-only")
			if got := e.r.BranchHead("main"); got != pinner.Proposal.Head {
				t.Fatalf("main at %s after a fast-forward, want the proposal head %s", got, pinner.Proposal.Head)
			}
			e.pass(r)
			es := e.entries()
			if _, ok := findEntry(es, ledger.ProposalMerged, "image-pinner"); !ok {
				t.Fatalf("merge not recorded: %v", types(es))
			}
			_, approved := findEntry(es, ledger.ProposalApproved, "image-pinner")
			v, violated := findEntry(es, ledger.PolicyViolation, "image-pinner")
			if reviewed && (!approved || violated) {
				t.Errorf("reviewed fast-forward: approved %v, violation %q", approved, v.Error)
			}
			if !reviewed && (approved || !violated || !strings.Contains(v.Error, "fast-forwarded")) {
				t.Errorf("unreviewed fast-forward: approved %v, violation %q", approved, v.Error)
			}
		})
	}
}

func types(es []ledger.Entry) []string {
	var out []string
	for _, en := range es {
		out = append(out, en.Type+" "+en.Agent)
	}
	return out
}

func jsonNum(n uint64) string { return strconv.FormatUint(n, 10) }

// TestGiteaEndToEndApprovalOfOldHead: Rita approves the image pinner's
// pull request, then Sam pushes a commit to its branch: the next pass
// decides the new head (proposal.updated), and Sam's merge of it on Gitea
// is a violation: Rita's approval was of the old head and counts for
// nothing.
func TestGiteaEndToEndApprovalOfOldHead(t *testing.T) {
	e := newE2E(t)
	r := e.reconciler()
	e.pass(r)
	pinner, ok := findEntry(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatal("no proposal.opened for image-pinner")
	}
	var number int64
	for _, p := range e.r.PullRequests() {
		if p.Head.Ref == pinner.Proposal.Branch {
			number = p.Number
		}
	}
	e.r.Review(e.s.Rita, number, "APPROVED", pinner.Proposal.Head, "")
	work := e.r.Clone(e.s.Sam)
	e.r.Git(work, "checkout", "--quiet", pinner.Proposal.Branch)
	if err := os.WriteFile(filepath.Join(work, "NOTES.md"), []byte("sam was here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.r.Git(work, "add", "-A")
	e.r.Git(work, "commit", "--quiet", "-m", "a note")
	e.r.Push(e.s.Sam, work, pinner.Proposal.Branch)
	moved := e.r.Git(work, "rev-parse", "HEAD")
	e.pass(r)
	up, ok := findEntry(e.entries(), ledger.ProposalUpdated, "image-pinner")
	if !ok || up.Proposal.Head != moved {
		t.Fatalf("proposal.updated %+v, want the new head %s", up.Proposal, moved)
	}
	e.r.Merge(e.s.Sam, number, "merge")
	e.pass(r)
	es := e.entries()
	if _, ok := findEntry(es, ledger.ProposalApproved, "image-pinner"); ok {
		t.Error("the approval of the old head was recorded")
	}
	merged, ok := findEntry(es, ledger.ProposalMerged, "image-pinner")
	if !ok || merged.Proposal.Head != moved {
		t.Fatalf("merge %+v, want of %s: %v", merged.Proposal, moved, types(es))
	}
	v, ok := findEntry(es, ledger.PolicyViolation, "image-pinner")
	if !ok || !strings.Contains(v.Error, "needs 1 of sre, has 0") {
		t.Errorf("violation %q, want needs 1 of sre, has 0", v.Error)
	}
	// The people who merged are told, once, on the pull request.
	e.pass(r)
	said := 0
	for _, c := range e.r.Comments(number) {
		if strings.Contains(c.Body, "Policy violation") && strings.Contains(c.Body, "needs 1 of sre, has 0") && strings.Contains(c.Body, "ledger log --run "+pinner.RunID) {
			said++
		}
	}
	if said != 1 {
		t.Errorf("%d comments on the violation, want 1: %+v", said, e.r.Comments(number))
	}
}

// TestGiteaEndToEndSupersedeAndDelete: the image pinner's spec and the
// digests it pins change on main, so its next run proposes another change:
// the new pull request supersedes the old, which is closed on Gitea with a
// comment naming the new run and branch, and never re-opened. Then Sam
// deletes the env normaliser's branch: its pull request is a rejection.
func TestGiteaEndToEndSupersedeAndDelete(t *testing.T) {
	e := newE2E(t)
	r := e.reconciler()
	e.pass(r)
	first, ok := findEntry(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatal("no proposal for image-pinner")
	}
	envn, _ := findEntry(e.entries(), ledger.ProposalOpened, "env-normaliser")
	var oldNumber int64
	for _, pr := range e.r.PullRequests() {
		if pr.Head.Ref == first.Proposal.Branch {
			oldNumber = pr.Number
		}
	}
	work := e.r.Clone(e.s.Sam)
	lock := filepath.Join(work, "deploy/images.lock")
	b, err := os.ReadFile(lock)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(lock, []byte(strings.Replace(string(b), "sha256:5b0c2a8e", "sha256:6b0c2a8e", 1)), 0o644)
	hcl := filepath.Join(work, "agents/image-pinner.hcl")
	b, _ = os.ReadFile(hcl)
	os.WriteFile(hcl, []byte(strings.Replace(string(b), "Pin container images", "Pin the container images", 1)), 0o644)
	e.r.Git(work, "commit", "--quiet", "-am", "new payments-api digest")
	e.r.Push(e.s.Sam, work, "main")
	e.pass(r)
	es := e.entries()
	var second ledger.Entry
	for _, en := range es {
		if en.Type == ledger.ProposalOpened && en.Agent == "image-pinner" && en.RunID != first.RunID {
			second = en
		}
	}
	if second.RunID == "" {
		t.Fatalf("no second proposal: %v", types(es))
	}
	if _, ok := findEntry(es, ledger.ProposalSuperseded, "image-pinner"); !ok {
		t.Fatalf("the first proposal was not superseded: %v", types(es))
	}
	old := e.r.Pull(oldNumber)
	if oldNumber == 0 || old.State != "closed" || old.Merged {
		t.Fatalf("the superseded pull request is %+v, want closed unmerged", old)
	}
	linked := false
	for _, c := range e.r.Comments(old.Number) {
		if strings.Contains(c.Body, second.RunID) && strings.Contains(c.Body, second.Proposal.Branch) {
			linked = true
		}
	}
	if !linked {
		t.Errorf("no comment on #%d names the new run %s and branch %s: %+v", old.Number, second.RunID, second.Proposal.Branch, e.r.Comments(old.Number))
	}

	e.r.DeleteBranch(e.s.Sam, envn.Proposal.Branch)
	e.pass(r)
	if _, ok := findEntry(e.entries(), ledger.ProposalRejected, "env-normaliser"); !ok {
		t.Errorf("a deleted branch is not a rejection: %v", types(e.entries()))
	}
	n := len(e.entries())
	e.pass(r)
	if got := e.entries(); len(got) != n {
		t.Errorf("a quiet pass wrote %v", types(got[n:]))
	}
	open := 0
	for _, pr := range e.r.PullRequests() {
		if pr.State == "open" {
			open++
		}
	}
	if open != 1 {
		t.Errorf("%d open pull requests, want only the new proposal's", open)
	}
}
