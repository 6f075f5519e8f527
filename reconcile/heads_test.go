package reconcile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// A person force-pushes a commit with no history in common with main onto
// a proposal branch: the pass does not fail, the head is decided on
// everything it would bring in (which touches protected files: denied), and
// a pass that finds it again records nothing more.
func TestUnrelatedHistoryOnAProposalBranch(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	work := e.clone()
	e.gitAs("Mallory", "mallory@example.com", work, "checkout", "--quiet", "--orphan", "orphan")
	e.gitAs("Mallory", "mallory@example.com", work, "rm", "-rf", "--quiet", ".")
	if err := os.MkdirAll(filepath.Join(work, "agents"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "agents/x.hcl"), []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.gitAs("Mallory", "mallory@example.com", work, "add", "--all")
	e.gitAs("Mallory", "mallory@example.com", work, "commit", "--quiet", "-m", "unrelated")
	e.gitAs("Mallory", "mallory@example.com", work, "push", "--quiet", "--force", "origin", "orphan:"+opened.Proposal.Branch)
	e.pass(r)
	upd, ok := find(e.entries(), ledger.ProposalUpdated, "image-pinner")
	if !ok {
		t.Fatalf("no proposal.updated: %q", e.events())
	}
	var d policy.Decision
	if err := json.Unmarshal(upd.Decision, &d); err != nil {
		t.Fatal(err)
	}
	if d.Outcome != policy.Deny || upd.Proposal.PreviousHead != opened.Proposal.Head {
		t.Errorf("proposal.updated decision %q (previous head %s), want a deny after %s", d.Summary, upd.Proposal.PreviousHead, opened.Proposal.Head)
	}
	n := len(e.entries())
	e.pass(r)
	if got := len(e.entries()); got != n {
		t.Errorf("a pass that found the same head again added %d entries: %q", got-n, e.events()[n:])
	}
	e.verify()
}
