package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// StaleMarker is a forge that can mark an open proposal stale: the
// protected branch moved in a way that needs the proposal brought up to
// date, and the reconciler will not do it (the change conflicts, or a
// person pushed to the branch), so it is left to people. A pull-request
// forge labels the pull request; the git-native forge has no such
// capability (the log line is all).
type StaleMarker interface {
	MarkStale(ctx context.Context, p forge.Proposal, why string) error
}

// staleKey is the r.shown key remembering, per run, the head last marked
// stale, so that a proposal is marked (and logged) once per head. Run ids
// hold no NUL, so it never collides with approvalStatus's keys.
func staleKey(runID string) string { return runID + "\x00stale" }

// rebaseStale brings open proposals up to date with the protected branch
// where that is needed and safe (see staleProposal), at most one rebase
// per agent in a pass: a push to the protected branch never sets off a
// storm of force-pushes, each of which voids the approvals given so far.
// It runs after observe recorded what became of every proposal, so the
// heads it compares against are the decided ones.
func (r *Reconciler) rebaseStale(ctx context.Context, p *pass) []error {
	var errs []error
	for _, agentName := range slices.Sorted(slices.Values(p.state.Agents())) {
		rebased := false
		for _, rn := range p.state.OpenRuns(agentName) {
			if err := ctx.Err(); err != nil {
				return append(errs, err)
			}
			did, err := r.staleProposal(ctx, p, rn, rebased)
			rebased = rebased || did
			if err != nil {
				r.log.Error("stale proposal", "agent", rn.Agent, "run", rn.ID, "err", err)
				errs = append(errs, fmt.Errorf("proposal %s %s: %w", rn.Agent, rn.ID, err))
			}
		}
	}
	return errs
}

// staleProposal handles one open proposal. It is stale when the protected
// branch moved past its decided head's base and, since that base, changed
// one of the proposal's files or another file in its agent's scope (what
// the agent works on: its change was made, and is reviewed, against that).
// A move that touches neither leaves it alone: the merge is clean as it
// stands, and rebasing would only void its approvals. (A change of the
// spec is not a reason: it re-decides open proposals by itself, on the
// same head, when it starts the agent again.)
//
// A stale proposal is rebased only when the change applies cleanly (none
// of its files changed on the protected branch since its base: a
// file-level check), its decided head is one the reconciler made (the
// opened head or its rebase: see ownHead; a person's commit is never
// force-pushed over), and the agent had no rebase yet this pass
// (budgetUsed). Anything else is marked stale, once per head, and left to
// people. Rebased reports whether it pushed a rebase.
func (r *Reconciler) staleProposal(ctx context.Context, p *pass, rn *ledger.Run, budgetUsed bool) (rebased bool, err error) {
	fp, err := forgeProposal(rn)
	if err != nil {
		return false, err
	}
	if fp.Branch == "" || fp.Head.IsZero() || p.head.IsZero() || rn.Opened == nil || rn.Opened.Proposal == nil {
		return false, nil
	}
	base, err := r.repo.MergeBase(fp.Head, p.head)
	if errors.Is(err, gitstore.ErrNotFound) {
		// No history in common (decided on everything it would bring
		// in): nothing to rebase onto.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if base == p.head {
		return false, nil
	}
	moved, err := r.repo.Diff(ctx, base, p.head)
	if err != nil {
		return false, err
	}
	own, err := r.repo.Diff(ctx, base, fp.Head)
	if err != nil {
		return false, err
	}
	ownPaths := make(map[string]bool, len(own))
	for _, c := range own {
		ownPaths[c.Path] = true
	}
	var scope []string
	if r.spec != nil {
		if a := r.spec.Agent(rn.Agent); a != nil {
			scope = a.Scope
		}
	}
	var conflicts, scoped []string
	for _, c := range moved {
		switch {
		case ownPaths[c.Path]:
			conflicts = append(conflicts, c.Path)
		case inScope(scope, c.Path):
			scoped = append(scoped, c.Path)
		}
	}
	if len(conflicts) == 0 && len(scoped) == 0 {
		return false, nil
	}
	ours, err := r.ownHead(ctx, rn, fp.Head)
	if err != nil {
		return false, err
	}
	var why string
	switch {
	case len(conflicts) > 0:
		why = fmt.Sprintf("%s changed %s since %s, which the proposal changes too: it does not apply cleanly, so the reconciler leaves it to people",
			r.cfg.Branch, strings.Join(conflicts, ", "), short(base.String()))
	case !ours:
		why = fmt.Sprintf("%s changed %s since %s and a person pushed to %s: the reconciler never rebases over a person's commit",
			r.cfg.Branch, strings.Join(scoped, ", "), short(base.String()), fp.Branch)
	case budgetUsed:
		r.log.Info("stale proposal waits for a later pass (one rebase per agent per pass)", "agent", rn.Agent, "run", rn.ID, "branch", fp.Branch)
		return false, nil
	default:
		return r.rebase(ctx, p, rn, fp, scoped)
	}
	return false, r.markStale(ctx, rn, fp, why)
}

// markStale logs and marks fp stale on the forge, once per head.
func (r *Reconciler) markStale(ctx context.Context, rn *ledger.Run, fp forge.Proposal, why string) error {
	key := staleKey(rn.ID)
	if r.shown[key] == fp.Head.String() {
		return nil
	}
	r.log.Warn("proposal stale", "agent", rn.Agent, "run", rn.ID, "branch", fp.Branch, "head", fp.Head.String(), "why", why)
	if sm, ok := r.forge.(StaleMarker); ok {
		if err := sm.MarkStale(ctx, fp, why); err != nil {
			return fmt.Errorf("mark %s stale: %w", fp.Branch, err)
		}
	}
	r.shown[key] = fp.Head.String()
	return nil
}

// rebase writes the proposal's change over the protected branch's head,
// pushes it with a compare-and-swap against the decided head (a
// force-with-lease: a branch that moved since is not touched) and records
// proposal.updated with the new head's decision (approvals of the old head
// no longer count, as for any new head).
//
// The push and the entry are two steps. A crash between them leaves the
// branch at a head the ledger does not know; the next pass's observe
// records it as any moved head (proposal.updated, decided again), and
// ownHead still knows it for the reconciler's own, so it is never taken
// for a person's push and the proposal can be rebased again later.
func (r *Reconciler) rebase(ctx context.Context, p *pass, rn *ledger.Run, fp forge.Proposal, why []string) (bool, error) {
	cur, err := r.repo.Commit(fp.Head)
	if err != nil {
		return false, err
	}
	head, err := r.rebaseCommit(ctx, cur, p.head)
	if err != nil {
		return false, err
	}
	err = r.pushBranch(ctx, p, gitstore.RefUpdate{Branch: fp.Branch, Old: fp.Head, New: head})
	if errors.Is(err, gitstore.ErrStale) {
		// Someone pushed since the fetch: the next pass observes it.
		r.log.Info("proposal branch moved before its rebase; not rebased", "agent", rn.Agent, "run", rn.ID, "branch", fp.Branch)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("push the rebase of %s: %w", fp.Branch, err)
	}
	ev, err := r.updated(ctx, p, rn, fp, head)
	if err != nil {
		return true, err
	}
	ev.Summary = oneLine(fmt.Sprintf("proposal.updated %s %s: %s rebased by the reconciler onto %s %s (%s changed %s); approvals of %s no longer count; %s",
		rn.Agent, rn.ID, fp.Branch, r.cfg.Branch, short(p.head.String()), r.cfg.Branch, strings.Join(why, ", "), short(fp.Head.String()), decisionSummary(ev)))
	_, err = r.appendIf(ctx, p, func(st *ledger.State) error {
		cur := st.Run(rn.ID)
		if cur == nil || !cur.ProposalOpen() || cur.DecidedHead() != fp.Head.String() {
			return errRecorded
		}
		return nil
	}, ev)
	if errors.Is(err, errRecorded) {
		// Another reconciler recorded the branch's move meanwhile.
		p.state = r.ledger.State()
		return true, nil
	}
	if err != nil {
		return true, err
	}
	r.log.Info("proposal rebased", "agent", rn.Agent, "run", rn.ID, "branch", fp.Branch, "head", head.String(), "onto", p.head.String())
	return true, errors.Join(r.reopenUpdated(ctx, p, []ledger.Event{ev})...)
}

// decisionSummary is the summary of ev's decision.
func decisionSummary(ev ledger.Event) string {
	var d policy.Decision
	if err := json.Unmarshal(ev.Decision, &d); err != nil {
		return "decision unreadable"
	}
	return d.Summary
}

// rebaseCommit is the proposal commit src (the opened head, or its
// rebase) rewritten onto onto: its change against its parent written over
// onto's tree, with the same message, author and committer. It depends on
// nothing else, so the same rebase is the same commit in every process,
// and a rebase of a rebase is the rebase of the opened head.
func (r *Reconciler) rebaseCommit(ctx context.Context, src *object.Commit, onto plumbing.Hash) (plumbing.Hash, error) {
	if len(src.ParentHashes) != 1 {
		return plumbing.ZeroHash, fmt.Errorf("proposal commit %s has %d parents, want 1", short(src.Hash.String()), len(src.ParentHashes))
	}
	changes, err := r.repo.Diff(ctx, src.ParentHashes[0], src.Hash)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tree, err := r.repo.WriteTree(onto, changes)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("rebase tree: %w", err)
	}
	h, err := r.repo.CreateCommit(gitstore.NewCommit{Tree: tree, Parents: []plumbing.Hash{onto},
		Author: src.Author, Committer: src.Committer, Message: src.Message})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("rebase commit: %w", err)
	}
	return h, nil
}

// ownHead reports whether head, rn's decided head, is one the reconciler
// made: the opened head, or that commit rebased (rebaseCommit), recognised
// by what a rebase keeps: one parent, the run's change exactly (its
// content id), the agent as author and the reconciler as committer at the
// run's finish time, the run's Agent-Run trailer and, when this mirror
// still has the opened commit (a rebase leaves it unreachable, and a fresh
// mirror does not fetch it), the opened commit's message. So a rebase
// pushed before a crash, whose entry observe then recorded as a moved
// head, is still known as the reconciler's own. A person's commit changes
// the content or the committer: the branch is theirs from then on (a
// person who resets the branch to the reconciler's commit gives it back).
func (r *Reconciler) ownHead(ctx context.Context, rn *ledger.Run, head plumbing.Hash) (bool, error) {
	if head.String() == rn.Opened.Proposal.Head {
		return true, nil
	}
	if rn.Finished == nil {
		return false, nil
	}
	c, err := r.repo.Commit(head)
	if err != nil {
		return false, err
	}
	if len(c.ParentHashes) != 1 {
		return false, nil
	}
	author := AgentIdentity(r.cfg.Identity, rn.Agent)
	when := rn.Finished.Time.Unix()
	if c.Author.Name != author.Name || c.Author.Email != author.Email || c.Committer.Name != r.cfg.Identity.Name ||
		c.Committer.Email != r.cfg.Identity.Email || c.Author.When.Unix() != when || c.Committer.When.Unix() != when ||
		!slices.Contains(gitstore.TrailerValues(c.Message, "Agent-Run"), rn.ID) {
		return false, nil
	}
	if opened, err := r.repo.Commit(plumbing.NewHash(rn.Opened.Proposal.Head)); err == nil && opened.Message != c.Message {
		return false, nil
	}
	changes, err := r.repo.Diff(ctx, c.ParentHashes[0], head)
	if err != nil {
		return false, err
	}
	return ChangeID(changes) == rn.ChangeID(), nil
}

// inScope reports whether p matches one of the agent's scope patterns.
func inScope(scope []string, p string) bool {
	for _, g := range scope {
		if ok, _ := doublestar.Match(g, p); ok {
			return true
		}
	}
	return false
}

var _ StaleMarker = (*forge.Gitea)(nil)
