package reconcile

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/internal/textcut"
	"github.com/agentgitops/reconciler/ledger"
)

// ReviewCommenter is a pull-request forge that reports what people wrote
// on a proposal's pull request: its reviews and its conversation's
// comments, the reconciler's own left out (forge.Gitea, forge.GitHub).
type ReviewCommenter interface {
	ReviewComments(ctx context.Context, p forge.Proposal) ([]forge.Comment, error)
}

// truncatedMark ends a comment body cut to ledger.MaxCommentBytes.
const truncatedMark = " […]"

// reviewComments reads, once, what people wrote on the pull request of a
// proposal whose outcome (merged or rejected) is being recorded, for the
// entry that records it: redacted with the reconciler's scrubber, control
// characters stripped, bounded (at most ledger.MaxComments, each at most
// ledger.MaxCommentBytes, ledger.MaxCommentsBytes in all: each reviewer's
// verdict first, then the newest; the rest counted as omitted). Nil for a forge without comments, a pull request
// without any, or a forge that could not be read: the outcome is recorded
// all the same, and the failure logged once.
func (r *Reconciler) reviewComments(ctx context.Context, rn *ledger.Run, fp forge.Proposal) *ledger.Comments {
	rc, ok := r.forge.(ReviewCommenter)
	if !ok {
		return nil
	}
	raw, err := rc.ReviewComments(ctx, fp)
	if err != nil {
		r.log.Warn("review comments not recorded: the forge could not be read; the outcome is recorded without them",
			"agent", rn.Agent, "run", rn.ID, "err", r.scrub(err.Error()))
		return nil
	}
	return r.boundComments(raw)
}

// boundComments turns the forge's comments into the ledger's: each
// cleaned, redacted and cut; within the bounds, each reviewer's verdict
// and then the newest are kept, recorded oldest first.
func (r *Reconciler) boundComments(raw []forge.Comment) *ledger.Comments {
	var items []ledger.Comment
	for _, c := range raw {
		login := textcut.Prefix(agent.CleanSubject(r.scrub(c.Login)), ledger.MaxCommentLogin)
		if login == "" {
			continue
		}
		it := ledger.Comment{Kind: c.Kind, State: c.State, ForgeLogin: login, Body: strings.TrimSpace(r.scrub(agent.CleanMessage(c.Body)))}
		if c.Kind != ledger.CommentReview {
			it.Kind, it.State = ledger.CommentConversation, ""
		}
		if !c.Time.IsZero() {
			it.Time = c.Time.UTC()
		}
		if len(it.Body) > ledger.MaxCommentBytes {
			it.Body = textcut.Prefix(it.Body, ledger.MaxCommentBytes-len(truncatedMark)) + truncatedMark
			it.Truncated = true
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil
	}
	slices.SortStableFunc(items, func(a, b ledger.Comment) int { return a.Time.Compare(b.Time) })
	// What is kept, while it fits: first each reviewer's verdict (their
	// latest review that approved or requested changes), then the rest,
	// newest first. Recorded oldest first.
	order := make([]int, 0, len(items))
	first := make([]bool, len(items))
	verdict := map[string]bool{}
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		login := strings.ToLower(it.ForgeLogin)
		if it.Kind == ledger.CommentReview && (it.State == ledger.ReviewApproved || it.State == ledger.ReviewRequestChanges) && !verdict[login] {
			verdict[login], first[i] = true, true
			order = append(order, i)
		}
	}
	for i := len(items) - 1; i >= 0; i-- {
		if !first[i] {
			order = append(order, i)
		}
	}
	size := len(`{"items":[],"omitted":1000000}`)
	keep := make([]bool, len(items))
	n := 0
	for _, i := range order {
		b, err := json.Marshal(items[i])
		if n == ledger.MaxComments || err != nil || size+len(b)+1 > ledger.MaxCommentsBytes {
			continue
		}
		size += len(b) + 1
		keep[i] = true
		n++
	}
	out := &ledger.Comments{Items: make([]ledger.Comment, 0, n), Omitted: len(items) - n}
	for i, it := range items {
		if keep[i] {
			out.Items = append(out.Items, it)
		}
	}
	return out
}
