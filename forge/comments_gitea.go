package forge

import (
	"context"
	"fmt"
	"strings"

	"code.gitea.io/sdk/gitea"

	"github.com/agentgitops/reconciler/ledger"
)

// ReviewComments returns what people wrote on the proposal's pull request,
// oldest first: its reviews (GET /repos/{o}/{r}/pulls/{n}/reviews) with
// their state and body, and the comments on its conversation (GET
// /repos/{o}/{r}/issues/{n}/comments). The reconciler's own comments (the
// token's account, or carrying a reconciler marker), pending reviews,
// review requests and comment reviews without a body are left out;
// inline code comments are not read. Bodies are as written: the caller
// bounds and redacts them. None, without error, when the branch has no
// pull request. It makes three API calls for a pull request with up to 50
// reviews and 50 comments (its number is known from Observe).
func (g *Gitea) ReviewComments(ctx context.Context, p Proposal) ([]Comment, error) {
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return nil, err
	}
	pr, err := g.find(p.Branch)
	if err != nil || pr == nil {
		return nil, err
	}
	const pageSize = 50
	var out []Comment
	for page := 1; page <= maxCommentPages; page++ {
		rs, _, err := g.client.ListPullReviews(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.ListPullReviewsOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: pageSize}})
		if err != nil {
			return nil, g.apiErr(fmt.Sprintf("list reviews of #%d", pr.Index), err)
		}
		for _, r := range rs {
			if r == nil || r.Reviewer == nil || r.Reviewer.UserName == "" || ownComment(r.Reviewer.UserName, g.bot, r.Body) {
				continue
			}
			state := giteaReviewState(r)
			if !keepReview(state, r.Body) {
				continue
			}
			out = append(out, Comment{Kind: ledger.CommentReview, State: state, Login: r.Reviewer.UserName, Time: r.Submitted, Body: r.Body, ID: r.ID})
		}
		if len(rs) < pageSize {
			break
		}
	}
	for page := 1; page <= maxCommentPages; page++ {
		cs, _, err := g.client.ListIssueComments(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.ListIssueCommentOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: pageSize}})
		if err != nil {
			return nil, g.apiErr(fmt.Sprintf("list comments of #%d", pr.Index), err)
		}
		for _, c := range cs {
			if c == nil || c.Poster == nil || c.Poster.UserName == "" || strings.TrimSpace(c.Body) == "" || ownComment(c.Poster.UserName, g.bot, c.Body) {
				continue
			}
			out = append(out, Comment{Kind: ledger.CommentConversation, Login: c.Poster.UserName, Time: c.Created, Body: c.Body, ID: c.ID})
		}
		if len(cs) < pageSize {
			break
		}
	}
	return sortComments(out), nil
}

// giteaReviewState is the ledger's state of a Gitea review: "" for one
// that is not a submitted review (pending, a review request).
func giteaReviewState(r *gitea.PullReview) string {
	var s string
	switch r.State {
	case gitea.ReviewStateApproved:
		s = ledger.ReviewApproved
	case gitea.ReviewStateRequestChanges:
		s = ledger.ReviewRequestChanges
	case gitea.ReviewStateComment:
		s = ledger.ReviewCommented
	default:
		return ""
	}
	if r.Dismissed {
		return ledger.ReviewDismissed
	}
	return s
}
