package forge_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/internal/giteatest"
	"github.com/agentgitops/reconciler/ledger"
)

// staleE2E is a real Gitea whose first pass opened both proposals, and
// the image pinner's pull request.
func staleE2E(t *testing.T) (*e2e, ledger.Entry, ledger.Entry, giteatest.PullRequest) {
	t.Helper()
	e := newE2E(t)
	r := e.reconciler()
	e.pass(r)
	es := e.entries()
	pinner, ok := findEntry(es, ledger.ProposalOpened, "image-pinner")
	envn, ok2 := findEntry(es, ledger.ProposalOpened, "env-normaliser")
	if !ok || !ok2 {
		t.Fatalf("proposals not opened: %v", types(es))
	}
	var pr giteatest.PullRequest
	for _, p := range e.r.PullRequests() {
		if p.Head.Ref == pinner.Proposal.Branch {
			pr = p
		}
	}
	if pr.Number == 0 {
		t.Fatalf("no pull request of %s", pinner.Proposal.Branch)
	}
	return e, pinner, envn, pr
}

// pushAs commits, in a clone made as u, text appended to file on branch
// and pushes it as u.
func (e *e2e) pushAs(u giteatest.User, branch, file, text string) {
	e.t.Helper()
	dir := e.r.Clone(u)
	e.r.Git(dir, "checkout", "--quiet", branch)
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	e.r.Git(dir, "add", file)
	e.r.Git(dir, "commit", "--quiet", "-m", "edit "+file)
	e.r.Push(u, dir, branch)
}

func hasLabel(pr giteatest.PullRequest, name string) bool {
	return slices.ContainsFunc(pr.Labels, func(l giteatest.Label) bool { return l.Name == name })
}

func staleComments(e *e2e, n int64) int {
	c := 0
	for _, cm := range e.r.Comments(n) {
		if strings.Contains(cm.Body, "reconciler:stale") {
			c++
		}
	}
	return c
}

func updatesOf(es []ledger.Entry, agent string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range es {
		if en.Type == ledger.ProposalUpdated && en.Agent == agent {
			out = append(out, en)
		}
	}
	return out
}

// TestGiteaEndToEndCleanRebase: Rita approves the image pinner's pull
// request, then Sam adds a file to deploy/ (the agent's scope) on main. The reconciler rebases
// the proposal onto main with a force-with-lease push (the pull request's
// head is the rebased commit, whose parent is main), records
// proposal.updated, and the approval of the old head no longer counts (the
// status of the new head is pending again). No stale label.
func TestGiteaEndToEndCleanRebase(t *testing.T) {
	e, pinner, _, pr := staleE2E(t)
	r := e.reconciler()
	e.r.Review(e.s.Rita, pr.Number, "APPROVED", pinner.Proposal.Head, "pins look right")
	e.pass(r)
	if st := e.r.CombinedStatus(pinner.Proposal.Head); st["reconciler/e2e"] != "success" {
		t.Fatalf("status after rita's approval: %v, want success", st)
	}
	e.pushAs(e.s.Sam, "main", "deploy/NOTES.md", "rota reviewed\n")
	main := e.r.BranchHead("main")
	e.pass(r)
	head := e.r.BranchHead(pinner.Proposal.Branch)
	if head == pinner.Proposal.Head {
		t.Fatalf("%s not rebased", pinner.Proposal.Branch)
	}
	dir := e.r.Clone(e.s.Sam)
	if p := strings.TrimSpace(e.r.Git(dir, "rev-parse", head+"^")); p != main {
		t.Fatalf("rebased head's parent %s, want main %s", p, main)
	}
	if got := e.r.Pull(pr.Number).Head.Sha; got != head {
		t.Fatalf("pull request head %s, want the rebased %s", got, head)
	}
	ups := updatesOf(e.entries(), "image-pinner")
	if len(ups) != 1 || ups[0].Proposal.Head != head || ups[0].Proposal.PreviousHead != pinner.Proposal.Head ||
		!strings.Contains(ups[0].Summary, "rebased by the reconciler onto main "+main[:12]) {
		t.Fatalf("proposal.updated %d: %+v", len(ups), ups)
	}
	e.pass(r)
	if st := e.r.CombinedStatus(head); st["reconciler/e2e"] != "pending" {
		t.Errorf("status of the rebased head: %v, want pending (rita approved the old head)", st)
	}
	if got := e.r.Pull(pr.Number); hasLabel(got, forge.StaleLabel) || staleComments(e, pr.Number) != 0 {
		t.Errorf("a rebased pull request is labelled stale: %+v", got.Labels)
	}
	if n := len(updatesOf(e.entries(), "image-pinner")); n != 1 {
		t.Errorf("%d proposal.updated after a quiet pass, want 1", n)
	}
}

// TestGiteaEndToEndConflictingRebase: Sam changes, on main, a file the
// image pinner's proposal changes: its branch is not touched, its pull
// request is labelled stale with one comment saying why however many
// passes see it, and nothing is recorded for it. The env normaliser's pull
// request (nothing in its scope changed) is neither rebased nor labelled.
func TestGiteaEndToEndConflictingRebase(t *testing.T) {
	e, pinner, envn, pr := staleE2E(t)
	r := e.reconciler()
	file := "deploy/prod/payments-api.yaml"
	e.pushAs(e.s.Sam, "main", file, "# pinned by hand\n")
	e.pass(r)
	e.pass(e.reconciler()) // a fresh process too: the comment is once per head
	if got := e.r.BranchHead(pinner.Proposal.Branch); got != pinner.Proposal.Head {
		t.Fatalf("the conflicting proposal moved to %s", got)
	}
	got := e.r.Pull(pr.Number)
	if !hasLabel(got, forge.StaleLabel) || staleComments(e, pr.Number) != 1 {
		t.Fatalf("labels %+v, %d stale comments, want the stale label and one comment", got.Labels, staleComments(e, pr.Number))
	}
	for _, c := range e.r.Comments(pr.Number) {
		if strings.Contains(c.Body, "reconciler:stale") && !strings.Contains(c.Body, file) {
			t.Errorf("the stale comment does not name %s: %s", file, c.Body)
		}
	}
	if ups := updatesOf(e.entries(), "image-pinner"); len(ups) != 0 {
		t.Errorf("conflicting proposal updated: %q", ups[0].Summary)
	}
	if got := e.r.BranchHead(envn.Proposal.Branch); got != envn.Proposal.Head {
		t.Errorf("the env normaliser's proposal moved on an unrelated change")
	}
	for _, p := range e.r.PullRequests() {
		if p.Head.Ref == envn.Proposal.Branch && hasLabel(p, forge.StaleLabel) {
			t.Errorf("the env normaliser's pull request is labelled stale")
		}
	}
}

// TestGiteaEndToEndHumanCommitBeforeRebase: Rita pushes a commit to the
// image pinner's branch, then Sam adds files to both agents' scopes on
// main: the branch stays at Rita's commit (never force-pushed over) and
// its pull request is labelled stale; the env normaliser's, still the
// reconciler's own, is rebased.
func TestGiteaEndToEndHumanCommitBeforeRebase(t *testing.T) {
	e, pinner, envn, pr := staleE2E(t)
	r := e.reconciler()
	e.pushAs(e.s.Rita, pinner.Proposal.Branch, "deploy/NOTES", "checked by rita\n")
	ritas := e.r.BranchHead(pinner.Proposal.Branch)
	e.pass(r)
	e.pushAs(e.s.Sam, "main", "deploy/NOTES.md", "rota reviewed\n")
	e.pushAs(e.s.Sam, "main", "config/extra.env", "KEY=one\n")
	e.pass(r)
	e.pass(r)
	if got := e.r.BranchHead(pinner.Proposal.Branch); got != ritas {
		t.Fatalf("the branch with rita's commit moved to %s", got)
	}
	if ups := updatesOf(e.entries(), "image-pinner"); len(ups) != 1 || ups[0].Proposal.Head != ritas {
		t.Fatalf("updates of the image pinner: %+v, want one for rita's push", ups)
	}
	if got := e.r.Pull(pr.Number); !hasLabel(got, forge.StaleLabel) || staleComments(e, pr.Number) != 1 {
		t.Fatalf("labels %+v, %d stale comments", got.Labels, staleComments(e, pr.Number))
	}
	if got := e.r.BranchHead(envn.Proposal.Branch); got == envn.Proposal.Head {
		t.Errorf("the env normaliser's proposal was not rebased")
	}
}
