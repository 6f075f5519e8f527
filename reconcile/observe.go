package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/approval"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// mergeScanDepth bounds how far back the protected branch is searched for
// the commit that merged a proposal.
const mergeScanDepth = 2000

// observe records what happened to open proposals: merged into the
// protected branch (approved by the merger, or a policy violation), or
// deleted without merge (rejected).
func (r *Reconciler) observe(ctx context.Context, p *pass) error {
	var events []ledger.Event
	for _, agentName := range slices.Sorted(slices.Values(p.state.Agents())) {
		for _, rn := range p.state.OpenRuns(agentName) {
			if err := ctx.Err(); err != nil {
				return err
			}
			evs, err := r.observeProposal(p, rn)
			if err != nil {
				return err
			}
			events = append(events, evs...)
		}
	}
	if len(events) == 0 {
		return nil
	}
	_, err := r.append(ctx, p, events...)
	return err
}

func (r *Reconciler) observeProposal(p *pass, rn *ledger.Run) ([]ledger.Event, error) {
	prop := rn.Opened.Proposal
	head := plumbing.NewHash(prop.Head)
	// The branch may have been updated by a person after it was opened:
	// what gets merged is the branch's current head.
	if cur, err := r.repo.Branch(prop.Branch); err == nil {
		head = cur
	}
	merge, err := r.findMerge(p.head, head, rn.ID)
	if err != nil {
		return nil, err
	}
	base := ledger.Event{Agent: rn.Agent, RunID: rn.ID, SpecCommit: p.head.String(), Trigger: rn.Trigger, SpecDigest: rn.SpecDigest}
	if merge == nil {
		if _, err := r.repo.Branch(prop.Branch); errors.Is(err, gitstore.ErrNotFound) {
			ev := base
			ev.Type = ledger.ProposalRejected
			ev.Subject, ev.SubjectName = prop.Head, prop.Branch
			ev.Proposal = &ledger.Proposal{Branch: prop.Branch, Head: prop.Head, ChangeID: prop.ChangeID}
			ev.Summary = fmt.Sprintf("proposal.rejected %s %s: %s deleted without merge; never proposed again", rn.Agent, rn.ID, prop.Branch)
			return []ledger.Event{ev}, nil
		}
		return nil, nil
	}

	var events []ledger.Event
	merger := merge.Committer
	var approvers []policy.Approver
	fastForward := merge.Hash == head
	if !fastForward && !isMachine(r.cfg.Identity, merger.Email) {
		approver, who := r.mergeApprover(merge)
		approvers = append(approvers, approver)
		ev := base
		ev.Type = ledger.ProposalApproved
		ev.Subject, ev.SubjectName = merge.Hash.String(), r.cfg.Branch
		ev.Reviewer = who
		ev.Proposal = &ledger.Proposal{Branch: prop.Branch, Head: head.String(), ChangeID: prop.ChangeID, MergeCommit: merge.Hash.String()}
		ev.Summary = fmt.Sprintf("proposal.approved %s %s by %s", rn.Agent, rn.ID, ev.Reviewer)
		events = append(events, ev)
	}
	// Approvals beyond the merge: signed tags approve/<run-id>/<member> on
	// the head that was merged.
	for _, ta := range r.tagApprovals(rn.ID, head) {
		approvers = append(approvers, ta.approver)
		ev := base
		ev.Type = ledger.ProposalApproved
		ev.Subject, ev.SubjectName = head.String(), prop.Branch
		ev.Reviewer = ta.who
		ev.Proposal = &ledger.Proposal{Branch: prop.Branch, Head: head.String(), ChangeID: prop.ChangeID, MergeCommit: merge.Hash.String()}
		ev.Summary = oneLine(fmt.Sprintf("proposal.approved %s %s by %s (tag %s)", rn.Agent, rn.ID, ta.who, ta.tag))
		events = append(events, ev)
	}
	ev := base
	ev.Type = ledger.ProposalMerged
	ev.Subject, ev.SubjectName = merge.Hash.String(), r.cfg.Branch
	ev.Proposal = &ledger.Proposal{Branch: prop.Branch, Head: head.String(), ChangeID: prop.ChangeID, MergeCommit: merge.Hash.String()}
	if fin := rn.Finished; fin != nil && fin.WorkUnit != nil {
		ev.WorkUnit = fin.WorkUnit
	}
	ev.Summary = fmt.Sprintf("proposal.merged %s %s into %s at %s", rn.Agent, rn.ID, r.cfg.Branch, merge.Hash.String()[:12])
	events = append(events, ev)

	d, err := parsedDecision(rn)
	if err != nil {
		return nil, err
	}
	var unmet []string
	if fastForward {
		unmet = append(unmet, "fast-forwarded without a reviewer's merge commit")
	} else if isMachine(r.cfg.Identity, merger.Email) {
		unmet = append(unmet, fmt.Sprintf("merged by the reconciler or an agent (%s), which never counts as a reviewer", merger.Email))
	}
	if r.spec != nil {
		unmet = append(unmet, policy.Check(r.spec, d, approvers)...)
		// Trailers as git reads them: any key case, "Key : value".
		named := gitstore.TrailerValues(merge.Message, policy.OverrideTrailer)
		// The override is the merger's: it counts as their approval does.
		overrider := policy.Approver{Email: merger.Email, Unsigned: true}
		if len(approvers) > 0 {
			overrider = approvers[0]
		}
		unmet = append(unmet, policy.CheckOverrides(r.spec, d, overrider, named)...)
		if len(d.Overrides) > 0 && len(events) > 0 && events[0].Type == ledger.ProposalApproved {
			events[0].Overrides = named
		}
	}
	if len(unmet) > 0 {
		v := base
		v.Type = ledger.PolicyViolation
		v.Subject, v.SubjectName = merge.Hash.String(), r.cfg.Branch
		v.Decision = rn.Decision.Decision
		v.Error = strings.Join(unmet, "; ")
		v.Proposal = ev.Proposal
		v.Summary = oneLine(fmt.Sprintf("policy.violation %s %s: merged at %s by %s; %s", rn.Agent, rn.ID, merge.Hash.String()[:12], merger.Email, v.Error))
		events = append(events, v)
	}
	return events, nil
}

// findMerge returns the commit of the protected branch that brought the
// proposal in: the first-parent commit whose history first contains head
// (a merge, or head itself for a fast-forward), or, for squash and rebase
// merges, a commit carrying the run's Agent-Run trailer. Nil when the
// proposal is not merged.
func (r *Reconciler) findMerge(protected, head plumbing.Hash, runID string) (*object.Commit, error) {
	// A head we do not have (its branch was deleted before this process
	// fetched it) cannot be in the protected branch's history, which we
	// have whole.
	in := false
	if _, err := r.repo.Commit(head); err == nil {
		if in, err = r.repo.IsAncestor(head, protected); err != nil {
			return nil, err
		}
	}
	chain, err := r.repo.FirstParents(protected, mergeScanDepth)
	if err != nil {
		return nil, err
	}
	if in {
		for i, c := range chain {
			if c.Hash == head {
				return c, nil
			}
			if i+1 < len(chain) {
				before, err := r.repo.IsAncestor(head, chain[i+1].Hash)
				if err != nil {
					return nil, err
				}
				if before {
					continue
				}
			}
			return c, nil
		}
	}
	for _, c := range chain {
		if c.Hash == head {
			continue
		}
		if v, ok := gitstore.TrailerValue(c.Message, "Agent-Run"); ok && strings.TrimSpace(v) == runID {
			return c, nil
		}
	}
	return nil, nil
}

// mergeApprover returns who a merge commit proves approved it, and how, for
// the record: the member of a reviewer group whose signing_key signed it
// (SSH or OpenPGP, verified as git verify-commit does), counted by the
// member's email from reviewers.hcl; otherwise the committer's email,
// marked unsigned, which counts only in groups with accept_unsigned (and
// for the default one-review rule).
func (r *Reconciler) mergeApprover(merge *object.Commit) (policy.Approver, string) {
	claimed := fmt.Sprintf("%s <%s>", merge.Committer.Name, merge.Committer.Email)
	unsigned := policy.Approver{Email: merge.Committer.Email, Unsigned: true}
	keys := reviewerKeys(r.spec)
	_, raw, err := r.repo.RawObject(merge.Hash)
	if err != nil {
		return unsigned, claimed + " (unsigned: cannot read the merge commit)"
	}
	signer, err := approval.VerifyCommit(raw, keys)
	switch {
	case err == nil:
		email := memberEmail(r.spec, signer)
		return policy.Approver{Email: email}, fmt.Sprintf("%s <%s>, signed by %s", signer.Member, email, signer)
	case errors.Is(err, approval.ErrUnsigned):
		return unsigned, claimed + " (unsigned)"
	}
	return unsigned, fmt.Sprintf("%s (unsigned: %v)", claimed, err)
}

// reviewerKeys returns the signing keys of every member of every reviewer
// group of spec, each naming its member and group. Keys that do not parse
// are left out: hclspec reports them where they are written.
func reviewerKeys(spec *hclspec.Spec) []approval.Key {
	if spec == nil {
		return nil
	}
	var keys []approval.Key
	for _, g := range spec.Groups {
		for _, m := range g.Members {
			if m.SigningKey == "" {
				continue
			}
			k, err := approval.ParseKey(m.SigningKey)
			if err != nil {
				continue
			}
			k.Member, k.Group = m.Name, g.Name
			keys = append(keys, k)
		}
	}
	return keys
}

// memberEmail returns the email reviewers.hcl gives the member whose key
// k is.
func memberEmail(spec *hclspec.Spec, k approval.Key) string {
	if g := spec.Group(k.Group); g != nil {
		for _, m := range g.Members {
			if m.Name == k.Member {
				return m.Email
			}
		}
	}
	return ""
}

type tagApproval struct {
	approver policy.Approver
	who, tag string
}

// tagApprovals returns the approvals that signed tags approve/<runID>/<member>
// give the proposal head: each tag must be an annotated tag object naming
// itself and pointing at head, signed by that member's signing_key (as git
// verify-tag checks it). Any other tag counts for nothing.
func (r *Reconciler) tagApprovals(runID string, head plumbing.Hash) []tagApproval {
	prefix := "approve/" + runID + "/"
	tags, err := r.repo.Tags(prefix)
	if err != nil || len(tags) == 0 {
		return nil
	}
	keys := reviewerKeys(r.spec)
	var out []tagApproval
	for _, name := range slices.Sorted(maps.Keys(tags)) {
		typ, raw, err := r.repo.RawObject(tags[name])
		if err != nil || typ != plumbing.TagObject {
			continue
		}
		target, tagName := tagHeaders(raw)
		if target != head.String() || tagName != name {
			continue // an approval of another head, or a tag renamed
		}
		signer, err := approval.VerifyTag(raw, keys)
		if err != nil || signer.Member != strings.TrimPrefix(name, prefix) {
			continue
		}
		email := memberEmail(r.spec, signer)
		out = append(out, tagApproval{approver: policy.Approver{Email: email}, who: fmt.Sprintf("%s <%s>, signed by %s", signer.Member, email, signer), tag: name})
	}
	return out
}

// tagHeaders returns the object and tag headers of a raw tag object.
func tagHeaders(raw []byte) (object, tag string) {
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "object "); ok {
			object = v
		} else if v, ok := strings.CutPrefix(line, "tag "); ok {
			tag = v
		}
	}
	return object, tag
}
