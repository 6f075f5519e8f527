package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// observe records what happened to open proposals: moved (decided again
// on the new head), merged into the protected branch (approved by the
// approvals the forge proves for the decided head, or a policy violation),
// or closed without merge (rejected).
func (r *Reconciler) observe(ctx context.Context, p *pass) error {
	var events []ledger.Event
	var errs []error
	for _, agentName := range slices.Sorted(slices.Values(p.state.Agents())) {
		for _, rn := range p.state.OpenRuns(agentName) {
			if err := ctx.Err(); err != nil {
				return err
			}
			// One proposal that cannot be observed (a branch pushed with
			// a broken history, say) must not stop the others.
			evs, err := r.observeProposal(ctx, p, rn)
			if errors.Is(err, forge.ErrMergeNotMirrored) {
				// The forge merged it, the mirror has not fetched the
				// merge yet: judged by a later pass, on the mirror.
				r.log.Info("proposal merged on the forge, waiting for the merge to be fetched", "agent", rn.Agent, "run", rn.ID)
				continue
			}
			if err != nil {
				r.log.Error("observe proposal", "agent", rn.Agent, "run", rn.ID, "err", err)
				errs = append(errs, fmt.Errorf("proposal %s %s: %w", rn.Agent, rn.ID, err))
				continue
			}
			events = append(events, evs...)
		}
	}
	if len(events) > 0 {
		if _, err := r.append(ctx, p, events...); err != nil {
			return err
		}
		errs = append(errs, r.reopenUpdated(ctx, p, events)...)
		errs = append(errs, r.commentViolations(ctx, events)...)
	}
	errs = append(errs, r.rebaseStale(ctx, p)...)
	// The pass goes on (runs, other proposals) and fails at its end.
	p.failed = append(p.failed, errs...)
	return nil
}

func (r *Reconciler) observeProposal(ctx context.Context, p *pass, rn *ledger.Run) ([]ledger.Event, error) {
	fp, err := forgeProposal(rn)
	if err != nil {
		return nil, err
	}
	o, err := r.forge.Observe(ctx, fp, p.head, proposalHeads(rn))
	if err != nil {
		return nil, fmt.Errorf("observe %s: %w", fp.Branch, err)
	}
	base := ledger.Event{Agent: rn.Agent, RunID: rn.ID, SpecCommit: p.head.String(), Trigger: rn.Trigger, SpecDigest: rn.SpecDigest}
	if o.Merge == nil {
		switch {
		case o.Closed:
			ev := base
			ev.Type = ledger.ProposalRejected
			ev.Subject, ev.SubjectName = fp.Head.String(), fp.Branch
			ev.Proposal = &ledger.Proposal{Branch: fp.Branch, Head: fp.Head.String(), ChangeID: rn.DecidedChangeID()}
			ev.Summary = fmt.Sprintf("proposal.rejected %s %s: %s deleted without merge; never proposed again", rn.Agent, rn.ID, fp.Branch)
			ev.Comments = r.reviewComments(ctx, rn, fp) // comments.go: read once, for this entry
			return []ledger.Event{ev}, nil
		case o.Head != fp.Head:
			ev, err := r.updated(ctx, p, rn, fp, o.Head)
			if err != nil {
				return nil, err
			}
			return []ledger.Event{ev}, nil
		}
		return nil, r.approvalStatus(ctx, rn, fp, o)
	}
	if slices.Contains(rn.Violations, o.Merge.Hash.String()) {
		// Judged before (a squash whose content was not the proposal's):
		// the proposal stays open.
		return nil, nil
	}
	d := fp.Decision
	merged := o.MergedHead
	if o.Squash {
		// A squash or rebase counts as the merge only when its change is
		// the decided head's change (the patch-id idea: same files, same
		// contents).
		id, err := r.commitChangeID(ctx, o.Merge)
		if err != nil {
			return nil, err
		}
		if id != rn.DecidedChangeID() {
			v := base
			v.Type = ledger.PolicyViolation
			v.Subject, v.SubjectName = o.Merge.Hash.String(), r.cfg.Branch
			v.Proposal = &ledger.Proposal{Branch: fp.Branch, Head: fp.Head.String(), ChangeID: rn.DecidedChangeID(), MergeCommit: o.Merge.Hash.String()}
			v.Decision = rn.Decision.Decision
			v.Error = fmt.Sprintf("commit %s carries Agent-Run: %s but its change differs from the proposal's decided change (content id %s, not %s): a squash counts as the merge only when its change is the proposal's",
				o.Merge.Hash.String()[:12], rn.ID, id, rn.DecidedChangeID())
			v.Summary = oneLine(fmt.Sprintf("policy.violation %s %s: %s", rn.Agent, rn.ID, v.Error))
			return []ledger.Event{v}, nil
		}
		merged = fp.Head
	}

	merger := o.Merge.Committer
	var unmet []string
	switch {
	case o.FastForward:
		// Judged below, once the approvals are known: a fast-forward
		// proves nothing by itself, a pull request's reviews still can.
	case isMachine(r.cfg.Identity, merger.Email):
		unmet = append(unmet, fmt.Sprintf("merged by the reconciler or an agent (%s), which never counts as a reviewer", merger.Email))
	}
	// Approvals count only for the head that was decided: a merge of any
	// other head (an older one, or one pushed since the last decision)
	// approves nothing.
	var approvals []forge.Approval
	reviewers := r.specBefore(o.Merge)
	if merged != fp.Head {
		unmet = append(unmet, fmt.Sprintf("merged head %s is not the last decided head %s (entry %d); a merge counts only for the head that was decided",
			short(merged.String()), short(fp.Head.String()), fp.LedgerEntry))
	} else {
		all, err := r.forge.Approvals(ctx, fp, o, fp.Head, reviewers)
		if err != nil {
			return nil, fmt.Errorf("approvals of %s: %w", fp.Branch, err)
		}
		for _, a := range all {
			// A merge by the reconciler or an agent proves nothing (the
			// forge gives no merge approval for a fast-forward).
			if a.Record.Via == "merge" && isMachine(r.cfg.Identity, merger.Email) {
				continue
			}
			if isMachine(r.cfg.Identity, a.Approver.Email) {
				continue
			}
			approvals = append(approvals, a)
		}
	}

	if o.FastForward && !slices.ContainsFunc(approvals, func(a forge.Approval) bool { return a.Record.Via == "review" }) {
		unmet = append(unmet, "fast-forwarded without a reviewer's merge commit")
	}
	var ignored []string
	var approved []ledger.Event
	var approvers []policy.Approver
	for _, a := range approvals {
		counted := policy.Counts(reviewers, d, a.Approver)
		if len(counted) == 0 {
			ignored = append(ignored, a.Reviewer)
			continue
		}
		approvers = append(approvers, a.Approver)
		rec := a.Record
		for _, c := range counted {
			rec.Satisfies = append(rec.Satisfies, ledger.Satisfied{Group: c.Group, Rules: c.Rules})
		}
		ev := base
		ev.Type = ledger.ProposalApproved
		ev.Subject, ev.SubjectName = a.Subject.String(), r.cfg.Branch
		if rec.Via == "tag" {
			ev.SubjectName = rec.Ref
		}
		ev.Reviewer, ev.Approval = a.Reviewer, &rec
		ev.Proposal = &ledger.Proposal{Branch: fp.Branch, Head: fp.Head.String(), ChangeID: rn.DecidedChangeID(), MergeCommit: o.Merge.Hash.String()}
		how := ""
		if rec.Via == "tag" {
			how = " (tag " + rec.Ref + ")"
		}
		ev.Summary = oneLine(fmt.Sprintf("proposal.approved %s %s by %s%s", rn.Agent, rn.ID, a.Reviewer, how))
		approved = append(approved, ev)
	}
	if reviewers == nil {
		unmet = append(unmet, "the spec before the merge did not load, so no reviewer could be verified")
	} else {
		unmet = append(unmet, policy.Check(reviewers, d, approvers)...)
		unmet = append(unmet, r.requiredChecks(ctx, merged)...)
		// Trailers as git reads them: any key case, "Key : value". The
		// override is the merger's: it counts as their approval does.
		named := gitstore.TrailerValues(o.Merge.Message, policy.OverrideTrailer)
		overrider := policy.Approver{Email: merger.Email, Unsigned: true}
		for _, a := range approvals {
			if a.Record.Via == "merge" {
				overrider = a.Approver
			}
		}
		unmet = append(unmet, policy.CheckOverrides(reviewers, d, overrider, named)...)
		if len(d.Overrides) > 0 && len(approved) > 0 && approved[0].Approval.Via == "merge" {
			approved[0].Overrides = named
		}
	}
	if len(ignored) > 0 && len(unmet) > 0 {
		unmet = append(unmet, "not counted: "+strings.Join(ignored, "; "))
	}

	mergedEv := base
	mergedEv.Type = ledger.ProposalMerged
	mergedEv.Subject, mergedEv.SubjectName = o.Merge.Hash.String(), r.cfg.Branch
	mergedEv.Proposal = &ledger.Proposal{Branch: fp.Branch, Head: merged.String(), ChangeID: rn.DecidedChangeID(), MergeCommit: o.Merge.Hash.String()}
	if fin := rn.Finished; fin != nil && fin.WorkUnit != nil {
		mergedEv.WorkUnit = fin.WorkUnit
	}
	mergedEv.Summary = fmt.Sprintf("proposal.merged %s %s into %s at %s", rn.Agent, rn.ID, r.cfg.Branch, o.Merge.Hash.String()[:12])
	mergedEv.Comments = r.reviewComments(ctx, rn, fp) // comments.go: read once, for this entry
	out := append(approved, mergedEv)
	if len(unmet) > 0 {
		v := base
		v.Type = ledger.PolicyViolation
		v.Subject, v.SubjectName = o.Merge.Hash.String(), r.cfg.Branch
		v.Decision = rn.Decision.Decision
		v.Error = strings.Join(unmet, "; ")
		v.Proposal = mergedEv.Proposal
		v.Summary = oneLine(fmt.Sprintf("policy.violation %s %s: merged at %s by %s; %s", rn.Agent, rn.ID, o.Merge.Hash.String()[:12], merger.Email, v.Error))
		out = append(out, v)
	}
	return out, nil
}

// updated decides a moved proposal again: on the new head's whole change
// against its merge base with the protected branch (human commits
// included), under the spec in force, and records proposal.updated.
func (r *Reconciler) updated(ctx context.Context, p *pass, rn *ledger.Run, fp forge.Proposal, head plumbing.Hash) (ledger.Event, error) {
	d, changes, err := r.decideHead(ctx, p, rn, head)
	if err != nil {
		return ledger.Event{}, err
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return ledger.Event{}, fmt.Errorf("encode decision: %w", err)
	}
	who := "unknown"
	if c, err := r.repo.Commit(head); err == nil {
		who = c.Committer.Email
	}
	ev := ledger.Event{
		Type: ledger.ProposalUpdated, Agent: rn.Agent, RunID: rn.ID, Trigger: rn.Trigger, SpecDigest: rn.SpecDigest,
		SpecCommit: p.head.String(), Subject: head.String(), SubjectName: fp.Branch, Decision: raw,
		Change:   changeSummary(changes),
		Proposal: &ledger.Proposal{Branch: fp.Branch, Head: head.String(), ChangeID: ChangeID(changes), PreviousHead: fp.Head.String()},
	}
	spendReviews(&ev, d.Reviews)
	ev.Summary = oneLine(fmt.Sprintf("proposal.updated %s %s: %s moved to %s (by %s); %s", rn.Agent, rn.ID, fp.Branch, head.String()[:12], who, d.Summary))
	return ev, nil
}

// decideHead decides a proposal head's whole change against its merge base
// with the protected branch under the spec in force.
func (r *Reconciler) decideHead(ctx context.Context, p *pass, rn *ledger.Run, head plumbing.Hash) (policy.Reviewed, []gitstore.FileChange, error) {
	mb, err := r.repo.MergeBase(head, p.head)
	if errors.Is(err, gitstore.ErrNotFound) {
		// A head with no history in common with the protected branch:
		// merging it would bring in everything that differs.
		mb, err = p.head, nil
	}
	if err != nil {
		return policy.Reviewed{}, nil, fmt.Errorf("decide %s: %w", head, err)
	}
	changes, err := r.repo.Diff(ctx, mb, head)
	if err != nil {
		return policy.Reviewed{}, nil, fmt.Errorf("decide %s: %w", head, err)
	}
	a := r.spec.Agent(rn.Agent)
	if a == nil {
		// The agent was removed: its proposal is still judged, by the
		// policies that apply to every agent.
		a = &hclspec.Agent{Name: rn.Agent}
	}
	in := hclspec.ConditionInput{
		Agent:  a,
		Run:    hclspec.RunInfo{ID: rn.ID, Trigger: rn.Trigger, Model: a.Model, SpecCommit: r.specCommit.String()},
		Change: conditionChanges(changes),
		Evals:  recordedEvals(rn), // evals.go
	}
	d, err := r.denySecrets(policy.Decide(r.spec, in), changes)
	if err != nil {
		return policy.Reviewed{}, nil, err
	}
	rv, err := r.reviewHead(ctx, p, rn, head, mb, in, changes, d) // second-model review (review.go)
	return rv, changes, err
}

// commitChangeID is the content id of a commit's change against its first
// parent.
func (r *Reconciler) commitChangeID(ctx context.Context, c *object.Commit) (string, error) {
	if len(c.ParentHashes) == 0 {
		return "", nil
	}
	changes, err := r.repo.Diff(ctx, c.ParentHashes[0], c.Hash)
	if err != nil {
		return "", err
	}
	return ChangeID(changes), nil
}

// specBefore returns the spec at the merge's first parent: the protected
// branch as it was before the merge, whose reviewers.hcl a merge is
// verified against (a merge cannot admit its own reviewers). Nil when it
// does not load.
func (r *Reconciler) specBefore(merge *object.Commit) *hclspec.Spec {
	if len(merge.ParentHashes) == 0 {
		return nil
	}
	at := merge.ParentHashes[0]
	if at == r.specCommit && r.spec != nil {
		return r.spec
	}
	if s, ok := r.specs[at]; ok {
		return s
	}
	spec, diags, err := r.loadAt(at)
	if err != nil || diags.HasErrors() {
		spec = nil
	}
	if len(r.specs) >= 16 {
		clear(r.specs)
	}
	r.specs[at] = spec
	return spec
}

// reopenUpdated publishes again the proposals whose heads moved: a
// pull-request forge rewrites the body and sets the status for the new
// decision (Open is idempotent; the git-native forge does nothing). A
// crash before it leaves the old body; the next proposal.updated, or a
// restart's Open of the same proposal, brings it up to date.
func (r *Reconciler) reopenUpdated(ctx context.Context, p *pass, events []ledger.Event) []error {
	var errs []error
	for _, ev := range events {
		if ev.Type != ledger.ProposalUpdated {
			continue
		}
		rn := p.state.Run(ev.RunID)
		if rn == nil || !rn.ProposalOpen() {
			continue
		}
		fp, err := forgeProposal(rn)
		if err == nil {
			fp.Summary, fp.Body, fp.Risk = r.proposalWords(rn)
			err = r.forge.Open(ctx, fp)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("publish the update of proposal %s %s: %w", rn.Agent, rn.ID, err))
		}
	}
	return errs
}

// riskPrefix starts the risk line of a proposal commit (commitProposal).
const riskPrefix = "Risk (the agent's own assessment): "

// proposalWords are the agent's summary, rationale and risk as its
// proposal commit (the opened head, which the reconciler made) holds them.
func (r *Reconciler) proposalWords(rn *ledger.Run) (summary, body, risk string) {
	if rn.Opened == nil || rn.Opened.Proposal == nil {
		return "", "", ""
	}
	// The opened commit, or (a fresh mirror after a rebase no longer has
	// it) the decided head, which a rebase made with the same message.
	c, err := r.repo.Commit(plumbing.NewHash(rn.Opened.Proposal.Head))
	if err != nil {
		if c, err = r.repo.Commit(plumbing.NewHash(rn.DecidedHead())); err != nil {
			return "", "", ""
		}
	}
	paras := strings.Split(strings.TrimSpace(c.Message), "\n\n")
	summary = paras[0]
	var rest []string
	for _, para := range paras[1:] {
		switch {
		case strings.HasPrefix(para, riskPrefix):
			risk = strings.TrimPrefix(para, riskPrefix)
		case strings.HasPrefix(para, "Agent: "):
			// The trailers.
		default:
			rest = append(rest, para)
		}
	}
	return summary, strings.Join(rest, "\n\n"), risk
}

// ApprovalStatuser is a forge that shows, on an open proposal, whether its
// approvals satisfy its decision yet (a pull request's commit status, which
// a protected branch may require before the merge button works).
type ApprovalStatuser interface {
	SetApprovalStatus(ctx context.Context, p forge.Proposal, unmet []string) error
}

// approvalStatus judges the approvals an open proposal's decided head has
// so far, under the spec in force, and tells the forge when what is unmet
// changed. It only shows progress: the merge is judged again, on the spec
// before it, when it happens.
func (r *Reconciler) approvalStatus(ctx context.Context, rn *ledger.Run, fp forge.Proposal, o forge.Observation) error {
	as, ok := r.forge.(ApprovalStatuser)
	if !ok || r.spec == nil || fp.Decision.Outcome == policy.Deny {
		return nil
	}
	all, err := r.forge.Approvals(ctx, fp, o, fp.Head, r.spec)
	if err != nil {
		return fmt.Errorf("approvals of open %s: %w", fp.Branch, err)
	}
	var approvers []policy.Approver
	for _, a := range all {
		if isMachine(r.cfg.Identity, a.Approver.Email) {
			continue
		}
		approvers = append(approvers, a.Approver)
	}
	unmet := policy.Check(r.spec, fp.Decision, approvers)
	key := fp.Head.String() + "\x00" + strings.Join(unmet, "\x00")
	if r.shown[rn.ID] == key {
		return nil
	}
	if err := as.SetApprovalStatus(ctx, fp, unmet); err != nil {
		return fmt.Errorf("approval status of %s: %w", fp.Branch, err)
	}
	r.shown[rn.ID] = key
	return nil
}

// Commenter is a forge that can say something on a proposal's pull
// request, once per marker.
type Commenter interface {
	Comment(ctx context.Context, p forge.Proposal, marker, text string) error
}

// commentViolations says on the pull request why a merge of it was a
// policy violation, once per violating commit, with how to read the entry.
// The ledger is the record; the comment only tells the people who merged.
func (r *Reconciler) commentViolations(ctx context.Context, events []ledger.Event) []error {
	c, ok := r.forge.(Commenter)
	if !ok {
		return nil
	}
	var errs []error
	for _, ev := range events {
		if ev.Type != ledger.PolicyViolation || ev.Proposal == nil || ev.Proposal.Branch == "" {
			continue
		}
		fp := forge.Proposal{Agent: ev.Agent, RunID: ev.RunID, Branch: ev.Proposal.Branch, Head: plumbing.NewHash(ev.Proposal.Head)}
		text := fmt.Sprintf("**Policy violation** recorded by the reconciler on its ledger: %s\n\nRead it with `reconciler ledger log --run %s --event %s`; the merge stays in git's history, and the violation in the ledger's.",
			ev.Error, ev.RunID, ledger.PolicyViolation)
		if err := c.Comment(ctx, fp, "reconciler-violation "+ev.Subject, text); err != nil {
			errs = append(errs, fmt.Errorf("comment the violation on %s: %w", fp.Branch, err))
		}
	}
	return errs
}

// RequiredChecker is a forge whose protected branch can require status
// checks (GitHub's branch protection): a merge of a head that had not
// passed them, by an administrator's bypass, is not the merge the team
// set up.
type RequiredChecker interface {
	RequiredChecks(ctx context.Context, head plumbing.Hash) ([]string, error)
}

// requiredChecks are the protected branch's required checks the merged
// head had not passed, as unmet requirements. Checks that cannot be read
// are unmet too: failing closed, since the merge cannot be shown to have
// honoured them.
func (r *Reconciler) requiredChecks(ctx context.Context, head plumbing.Hash) []string {
	rc, ok := r.forge.(RequiredChecker)
	if !ok {
		return nil
	}
	failing, err := rc.RequiredChecks(ctx, head)
	if err != nil {
		return []string{"the protected branch's required status checks could not be read: " + err.Error()}
	}
	out := make([]string, 0, len(failing))
	for _, f := range failing {
		out = append(out, "required status check not passed: "+f)
	}
	return out
}
