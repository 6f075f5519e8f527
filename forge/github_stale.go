package forge

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-github/v88/github"
)

// MarkStale labels p's open pull request stale and comments why, once per
// head (a comment of the reconciler's own login holding the head's marker
// is never posted twice, also across restarts). A pull request that is not
// open, or none, is left as it is.
func (g *GitHub) MarkStale(ctx context.Context, p Proposal, why string) error {
	if err := ghCheckProposal(p); err != nil {
		return err
	}
	pr, err := g.find(ctx, p.Branch)
	if err != nil || pr == nil || pr.GetState() != "open" || pr.GetMerged() {
		return err
	}
	n := pr.GetNumber()
	if !slices.ContainsFunc(pr.Labels, func(l *github.Label) bool { return l.GetName() == StaleLabel }) {
		if _, _, err := g.client.Issues.AddLabelsToIssue(ctx, g.owner, g.name, n, []string{StaleLabel}); err != nil {
			return ghError(fmt.Sprintf("label pull request #%d stale", n), err)
		}
	}
	self, err := g.selfLogin(ctx)
	if err != nil {
		return err
	}
	marker := staleMarker(p.Head)
	opts := &github.IssueListCommentsOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for {
		cs, resp, err := g.client.Issues.ListComments(ctx, g.owner, g.name, n, opts)
		if err != nil {
			return ghError(fmt.Sprintf("list the comments of #%d", n), err)
		}
		for _, c := range cs {
			if strings.EqualFold(c.GetUser().GetLogin(), self) && strings.Contains(c.GetBody(), marker) {
				return nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	body := marker + "\nStale: " + ghLine(why) + ".\n\n" + staleAdvice
	if _, _, err := g.client.Issues.CreateComment(ctx, g.owner, g.name, n, &github.IssueComment{Body: github.Ptr(body)}); err != nil {
		return ghError(fmt.Sprintf("comment on #%d", n), err)
	}
	return nil
}
