package reconcile

import (
	"context"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// Forge is what the loop needs from wherever proposals are reviewed: the
// git-native forge (forge.Git, the default) or a pull-request forge. It
// reports evidence; the loop judges it against the decision.
type Forge interface {
	// Open publishes a proposal whose branch was pushed (for a
	// pull-request forge, opens or updates its pull request). It must be
	// idempotent: after a crash it is called again for the same proposal.
	Open(ctx context.Context, p forge.Proposal) error
	// Observe reports the proposal's current head and whether, and how,
	// it reached the protected branch at protected; heads are every head
	// decided on, oldest first.
	Observe(ctx context.Context, p forge.Proposal, protected plumbing.Hash, heads []plumbing.Hash) (forge.Observation, error)
	// Approvals returns the approvals of head (the decided head) that o's
	// merge and any further reviews prove, verified against reviewers:
	// the spec as it was before the merge.
	Approvals(ctx context.Context, p forge.Proposal, o forge.Observation, head plumbing.Hash, reviewers *hclspec.Spec) ([]forge.Approval, error)
	// Close ends a proposal that will not be merged (superseded): the
	// git-native forge deletes its branch if it is still at p.Head.
	Close(ctx context.Context, p forge.Proposal, why string) error
}

var _ Forge = (*forge.Git)(nil)

// forgeProposal describes the open proposal of rn for the forge: its
// branch, the head and decision in force.
func forgeProposal(rn *ledger.Run) (forge.Proposal, error) {
	fp := forge.Proposal{Agent: rn.Agent, RunID: rn.ID, Head: plumbing.NewHash(rn.DecidedHead())}
	if rn.Opened != nil && rn.Opened.Proposal != nil {
		fp.Branch = rn.Opened.Proposal.Branch
	}
	if rn.Decision != nil {
		d, err := parsedDecision(rn)
		if err != nil {
			return fp, err
		}
		fp.Decision, fp.LedgerEntry = d, rn.Decision.Seq
	}
	return fp, nil
}

// proposalHeads are the heads of rn's proposal decided on, oldest first.
func proposalHeads(rn *ledger.Run) []plumbing.Hash {
	out := make([]plumbing.Hash, 0, len(rn.Heads))
	for _, h := range rn.Heads {
		out = append(out, plumbing.NewHash(h))
	}
	return out
}

// newForge returns the configured forge, or the git-native one.
func newForge(cfg Config, repo *gitstore.Repo) Forge {
	if cfg.Forge != nil {
		return cfg.Forge(repo)
	}
	return forge.NewGit(repo)
}
