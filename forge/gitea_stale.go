package forge

import (
	"context"
	"fmt"
	"slices"

	"code.gitea.io/sdk/gitea"
	"github.com/go-git/go-git/v5/plumbing"
)

// StaleLabel is the label of a pull request the protected branch moved
// under and the reconciler will not rebase (its change conflicts, or a
// person pushed to its branch): left to people.
const StaleLabel = "stale"

// MarkStale labels p's open pull request stale and comments why, once per
// head. A pull request that is not open, or none, is left as it is.
func (g *Gitea) MarkStale(ctx context.Context, p Proposal, why string) error {
	if p.Branch == "" || p.Head.IsZero() {
		return fmt.Errorf("gitea mark stale: proposal %s %s has no branch or head", p.Agent, p.RunID)
	}
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return err
	}
	pr, err := g.find(p.Branch)
	if err != nil || pr == nil || pr.State != gitea.StateOpen || pr.HasMerged {
		return err
	}
	if !slices.ContainsFunc(pr.Labels, func(l *gitea.Label) bool { return l != nil && l.Name == StaleLabel }) {
		ids, err := g.ensureLabels([]string{StaleLabel})
		if err != nil {
			return err
		}
		ls, _, err := g.client.AddIssueLabels(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.IssueLabelsOption{Labels: ids})
		if err != nil {
			return g.apiErr(fmt.Sprintf("label pull request #%d stale", pr.Index), err)
		}
		pr.Labels = ls
	}
	marker := staleMarker(p.Head)
	body := marker + "\nStale: " + oneLineTitle(why) + ".\n\n" + staleAdvice
	return g.commentOnce(pr.Index, marker, body)
}

// staleAdvice ends the comment on a stale pull request, on either forge.
const staleAdvice = "The reconciler does not rebase this pull request; bring it up to date by hand. Approvals count only for the head the reconciler decides on, so the new head needs them again."

func staleMarker(head plumbing.Hash) string {
	return "<!-- reconciler:stale head=" + head.String() + " -->"
}
