// Package forge is where the evidence of a proposal's review comes from.
// The reconciler's loop (package reconcile) consumes it through its Forge
// interface: open a pushed proposal for review, observe what became of it
// (its branch head, the commit that merged it), collect the approvals of
// one head, close it. Git is the git-native forge: the branch is the
// proposal, a signed merge commit or signed tag is the review. Pull-request
// forges (Gitea, GitHub) implement the same four steps.
//
// A forge reports evidence; it never decides. Whether the approvals satisfy
// the decision, whether the merged head is the one decided, and whether the
// merge is a violation are the loop's to judge.
package forge

import (
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Proposal is an open proposal as the ledger knows it.
type Proposal struct {
	Agent, RunID string
	// Branch is agents/<agent>/<run-id>.
	Branch string
	// Head is the last head decided on (proposal.opened, or the last
	// proposal.updated).
	Head plumbing.Hash
	// Decision is the decision in force for Head.
	Decision policy.Decision
	// Summary, Body and Risk describe the change for a pull request.
	Summary, Body, Risk string
	// LedgerEntry is the seq of the entry holding the decision.
	LedgerEntry uint64
}

// Observation is what became of a proposal.
type Observation struct {
	// Head is the branch's current head: zero when the branch is gone.
	Head plumbing.Hash
	// Merge is the commit of the protected branch that brought the
	// proposal in, nil while it is not merged.
	Merge *object.Commit
	// MergedHead is the proposal commit the merge brought in: Head when
	// merged by a merge commit or a fast-forward; zero for a squash or
	// rebase found by its Agent-Run trailer.
	MergedHead plumbing.Hash
	// Squash marks a merge found only by its Agent-Run trailer (a squash
	// or rebase): its content must be checked against the proposal's.
	Squash bool
	// FastForward marks a head that reached the protected branch without
	// a merge commit of its own.
	FastForward bool
	// Closed is set when the proposal was closed (its branch deleted)
	// without merge.
	Closed bool
}

// Approval is one reviewer's proven approval of a proposal head.
type Approval struct {
	// Approver is what policy.Check counts.
	Approver policy.Approver
	// Reviewer says who, for people and the ledger's reviewer field.
	Reviewer string
	// Record is the proof as the ledger records it (Satisfies is filled by
	// the loop, which knows the decision).
	Record ledger.Approval
	// Subject is the git object carrying the approval (the merge commit,
	// or the approved head for a tag).
	Subject plumbing.Hash
}
