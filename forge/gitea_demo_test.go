package forge_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/ledger"
)

// TestGiteaDemo is `make demo-gitea`: the example repository on a real
// Gitea started for it, a pass that opens its proposals as pull requests,
// Rita's approving review and Sam's merge through Gitea's API, and the
// pass that records them; it prints each step and the ledger. It runs only
// when RECONCILER_DEMO is set (make demo-gitea sets it), and checks what
// it shows, so a broken demo fails.
func TestGiteaDemo(t *testing.T) {
	if os.Getenv("RECONCILER_DEMO") == "" {
		t.Skip("the Gitea demo runs with make demo-gitea (RECONCILER_DEMO=1)")
	}
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	e := newE2E(t)
	say("==> Gitea %s is up; the example repository is %s", e.s.URL, e.r.PublicURL())
	r := e.reconciler()
	say("\n==> Pass 1: the agents run; each proposal becomes a pull request")
	e.pass(r)
	opened, ok := findEntry(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatal("no proposal for image-pinner")
	}
	var number int64
	for _, pr := range e.r.PullRequests() {
		say("  #%d %s  %s\n      %s  status %v", pr.Number, pr.Title, pr.HTMLURL, pr.Head.Ref, e.r.CombinedStatus(pr.Head.Sha))
		if pr.Head.Ref == opened.Proposal.Branch {
			number = pr.Number
		}
	}
	say("\n==> Rita (sre) approves #%d on Gitea; the next pass shows it on the status", number)
	e.r.Review(e.s.Rita, number, "APPROVED", opened.Proposal.Head, "Pins look right.")
	e.pass(r)
	say("  status %v", e.r.CombinedStatus(opened.Proposal.Head))
	say("\n==> Sam merges #%d on Gitea; a restarted reconciler records the approval and the merge", number)
	e.r.Merge(e.s.Sam, number, "merge")
	e.pass(e.reconciler())
	say("\n==> The ledger (agent-evidence)")
	es := e.entries()
	for _, en := range es {
		say("  %3d %s", en.Seq, en.Summary)
	}
	approved, ok := findEntry(es, ledger.ProposalApproved, "image-pinner")
	if !ok || approved.Approval == nil || approved.Approval.Login != "rita" || !strings.Contains(approved.Summary, "rita") {
		t.Fatalf("the demo's approval was not recorded: %+v", approved)
	}
	if _, ok := findEntry(es, ledger.ProposalMerged, "image-pinner"); !ok {
		t.Fatal("the demo's merge was not recorded")
	}
	say("\nDone: pull request #%d was reviewed and merged on Gitea, and the ledger proves who approved which head.", number)
}
