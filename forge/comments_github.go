package forge

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-github/v88/github"

	"github.com/agentgitops/reconciler/ledger"
)

// ReviewComments returns what people wrote on the proposal's pull request,
// oldest first: its reviews (GET /repos/{o}/{r}/pulls/{n}/reviews) with
// their state and body, and the comments on its conversation (GET
// /repos/{o}/{r}/issues/{n}/comments). The reconciler's own comments (its
// login, or carrying a reconciler marker), pending reviews and COMMENTED
// reviews without a body are left out; inline code comments are not
// read. Bodies are as written: the caller bounds and redacts them. None,
// without error, when the branch has no pull request. It makes three API
// calls for a pull request with up to 100 reviews and 100 comments (its
// number and the reconciler's login are known from Observe).
func (g *GitHub) ReviewComments(ctx context.Context, p Proposal) ([]Comment, error) {
	pr, err := g.find(ctx, p.Branch)
	if err != nil || pr == nil {
		return nil, err
	}
	self, err := g.selfLogin(ctx)
	if err != nil {
		return nil, err
	}
	n := pr.GetNumber()
	reviews, err := g.reviews(ctx, n)
	if err != nil {
		return nil, err
	}
	var out []Comment
	for _, r := range reviews {
		login := r.GetUser().GetLogin()
		if login == "" || ownComment(login, self, r.GetBody()) {
			continue
		}
		state := ghReviewState(r.GetState())
		if !keepReview(state, r.GetBody()) {
			continue
		}
		out = append(out, Comment{Kind: ledger.CommentReview, State: state, Login: login, Time: r.GetSubmittedAt().Time, Body: r.GetBody(), ID: r.GetID()})
	}
	opts := &github.IssueListCommentsOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for page := 0; page < maxCommentPages; page++ {
		cs, resp, err := g.client.Issues.ListComments(ctx, g.owner, g.name, n, opts)
		if err != nil {
			return nil, ghError(fmt.Sprintf("list the comments of pull request #%d", n), err)
		}
		for _, c := range cs {
			login := c.GetUser().GetLogin()
			if login == "" || strings.TrimSpace(c.GetBody()) == "" || ownComment(login, self, c.GetBody()) {
				continue
			}
			out = append(out, Comment{Kind: ledger.CommentConversation, Login: login, Time: c.GetCreatedAt().Time, Body: c.GetBody(), ID: c.GetID()})
		}
		if resp.NextPage == 0 || resp.NextPage <= opts.Page {
			break
		}
		opts.Page = resp.NextPage
	}
	return sortComments(out), nil
}

// ghReviewState is the ledger's state of a GitHub review: "" for a
// pending one.
func ghReviewState(s string) string {
	switch s {
	case "APPROVED":
		return ledger.ReviewApproved
	case "CHANGES_REQUESTED":
		return ledger.ReviewRequestChanges
	case "COMMENTED":
		return ledger.ReviewCommented
	case "DISMISSED":
		return ledger.ReviewDismissed
	}
	return ""
}
