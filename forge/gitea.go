package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"code.gitea.io/sdk/gitea"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// GiteaConfig says which Gitea repository proposals are reviewed on.
type GiteaConfig struct {
	// BaseURL is the Gitea server's root URL, e.g. https://gitea.example.com.
	BaseURL string
	// Owner and Name name the repository (Owner/Name).
	Owner, Name string
	// Token is the API token of the reconciler's account. It needs the
	// write:repository and write:issue scopes, and read:user.
	Token string
	// Instance makes the commit status context of this reconciler unique,
	// reconciler/<Instance>, so that two reconcilers on one repository
	// never overwrite each other's status. "" gives "reconciler".
	Instance string
	// HTTPClient makes the API calls; nil means a client with a 30s
	// timeout.
	HTTPClient *http.Client
	// Labels are added to every pull request, besides agent-proposal and
	// agent:<name>.
	Labels []string
	// Base is the protected branch pull requests target; "" means the
	// repository's default branch.
	Base string
}

// String prints the configuration without its token.
func (c GiteaConfig) String() string {
	return fmt.Sprintf("gitea %s/%s at %s (instance %q)", c.Owner, c.Name, c.BaseURL, c.Instance)
}

// LogValue keeps the token out of logs.
func (c GiteaConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Gitea is the pull-request forge of a Gitea repository: a proposal is a
// pull request of its branch into the protected branch, labelled, with the
// decision and the ledger entry in its body and the policy result as a
// commit status on its head; an approving review of the decided head by a
// reviewer whose forge_login reviewers.hcl names is an approval. The
// branch heads and merge commits it reports are the local mirror's (what
// the loop verifies), never only the API's word.
type Gitea struct {
	cfg    GiteaConfig
	git    *Git
	repo   *gitstore.Repo
	client *gitea.Client

	// mu serializes API calls: the client carries one context at a time.
	mu sync.Mutex
	// base and bot are learned from the API on first use.
	base, bot string
	labels    map[string]int64 // label name -> id
	prs       map[string]int64 // branch -> pull request number
}

// NewGitea returns the Gitea forge of repo (the reconciler's mirror of the
// same repository) configured by cfg. It makes no API call; an incomplete
// configuration is an error saying what is missing.
func NewGitea(repo *gitstore.Repo, cfg GiteaConfig) (*Gitea, error) {
	var missing []string
	if repo == nil {
		missing = append(missing, "the repository mirror")
	}
	if cfg.BaseURL == "" {
		missing = append(missing, "base URL")
	}
	if cfg.Owner == "" || cfg.Name == "" {
		missing = append(missing, "repository owner/name")
	}
	if cfg.Token == "" {
		missing = append(missing, "token")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("gitea forge: missing %s", strings.Join(missing, ", "))
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gitea forge: base URL %q: want http(s)://host[/path]", cfg.BaseURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("gitea forge: base URL of %s/%s carries credentials: give the token as the token, not in the URL", cfg.Owner, cfg.Name)
	}
	for _, l := range cfg.Labels {
		if strings.TrimSpace(l) == "" || strings.Contains(l, ",") {
			return nil, fmt.Errorf("gitea forge: label %q: want a non-empty name without commas", l)
		}
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	// The server's version is asked once, on the first call that needs it,
	// not here: NewGitea works while Gitea is unreachable.
	client, err := gitea.NewClient(strings.TrimSuffix(cfg.BaseURL, "/"), gitea.SetToken(cfg.Token), gitea.SetHTTPClient(hc),
		gitea.SetUserAgent("agentgitops-reconciler"), gitea.SetGiteaVersion(""))
	if err != nil {
		return nil, fmt.Errorf("gitea forge: %w", err)
	}
	return &Gitea{cfg: cfg, git: NewGit(repo), repo: repo, client: client,
		labels: map[string]int64{}, prs: map[string]int64{}}, nil
}

// StatusContext is the commit status context this instance sets.
func (g *Gitea) StatusContext() string {
	if g.cfg.Instance == "" {
		return "reconciler"
	}
	return "reconciler/" + g.cfg.Instance
}

// lock takes g.mu and points the client at ctx.
func (g *Gitea) lock(ctx context.Context) func() {
	g.mu.Lock()
	g.client.SetContext(ctx)
	return func() {
		g.client.SetContext(context.Background())
		g.mu.Unlock()
	}
}

// apiErr names the operation and the repository; the SDK's errors carry
// Gitea's message and never the token.
func (g *Gitea) apiErr(op string, err error) error {
	return fmt.Errorf("gitea %s/%s: %s: %w", g.cfg.Owner, g.cfg.Name, op, err)
}

func notFound(resp *gitea.Response) bool {
	return resp != nil && resp.StatusCode == http.StatusNotFound
}

// setup learns the protected branch (cfg.Base or the repository's default
// branch) and the token's login, once.
func (g *Gitea) setup() error {
	if g.base == "" {
		if g.cfg.Base != "" {
			g.base = g.cfg.Base
		} else {
			r, _, err := g.client.GetRepo(g.cfg.Owner, g.cfg.Name)
			if err != nil {
				return g.apiErr("read repository", err)
			}
			if r.DefaultBranch == "" {
				return g.apiErr("read repository", errors.New("no default branch: set the forge's base branch"))
			}
			g.base = r.DefaultBranch
		}
	}
	if g.bot == "" {
		u, _, err := g.client.GetMyUserInfo()
		if err != nil {
			return g.apiErr("read the token's user", err)
		}
		if u.UserName == "" {
			return g.apiErr("read the token's user", errors.New("empty login"))
		}
		g.bot = u.UserName
	}
	return nil
}

// maxScan bounds the pull requests find lists when the branch's pull
// request is not found by its base and head (it was retargeted).
const maxScan = 500

// find returns the pull request of branch, open, closed or merged, or nil
// when there is none: the one remembered, else the one Gitea finds by base
// and head, else the most recently updated one whose head is branch among
// the last maxScan.
func (g *Gitea) find(branch string) (*gitea.PullRequest, error) {
	if n, ok := g.prs[branch]; ok {
		pr, resp, err := g.client.GetPullRequest(g.cfg.Owner, g.cfg.Name, n)
		if err == nil && pr.Head != nil && pr.Head.Ref == branch {
			return pr, nil
		}
		if err != nil && !notFound(resp) {
			return nil, g.apiErr(fmt.Sprintf("read pull request #%d", n), err)
		}
		delete(g.prs, branch)
	}
	pr, resp, err := g.client.GetPullRequestByBaseHead(g.cfg.Owner, g.cfg.Name, g.base, branch)
	switch {
	case err == nil && pr != nil && pr.Index > 0:
		g.prs[branch] = pr.Index
		return pr, nil
	case err != nil && !notFound(resp):
		return nil, g.apiErr("find the pull request of "+branch, err)
	}
	const pageSize = 50
	for page := 1; page <= maxScan/pageSize; page++ {
		prs, _, err := g.client.ListRepoPullRequests(g.cfg.Owner, g.cfg.Name, gitea.ListPullRequestsOptions{
			ListOptions: gitea.ListOptions{Page: page, PageSize: pageSize}, State: gitea.StateAll, Sort: "recentupdate"})
		if err != nil {
			return nil, g.apiErr("list pull requests", err)
		}
		for _, pr := range prs {
			if pr.Head != nil && pr.Head.Ref == branch {
				g.prs[branch] = pr.Index
				return pr, nil
			}
		}
		if len(prs) < pageSize {
			break
		}
	}
	return nil, nil
}

// Open opens the proposal's pull request, or brings the open one up to
// date: a pull request of the branch that exists in any state is never
// opened again, and one that was closed is never re-opened. When the open
// pull request's body names another head (the proposal moved and was
// decided again), the body is rewritten and a comment says why. The
// commit status of p.Head is set in every case while it is open.
func (g *Gitea) Open(ctx context.Context, p Proposal) error {
	if p.Branch == "" || p.Head.IsZero() {
		return fmt.Errorf("gitea open: proposal %s %s has no branch or head", p.Agent, p.RunID)
	}
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return err
	}
	pr, err := g.find(p.Branch)
	if err != nil {
		return err
	}
	if pr == nil {
		if pr, err = g.create(p); err != nil {
			return err
		}
	}
	if pr.State != gitea.StateOpen || pr.HasMerged {
		return nil
	}
	if err := g.refresh(pr, p); err != nil {
		return err
	}
	if err := g.label(pr, p); err != nil {
		return err
	}
	return g.status(pr, p)
}

// label adds the proposal's labels pr lacks (a pull request a person
// opened for the branch before the reconciler did).
func (g *Gitea) label(pr *gitea.PullRequest, p Proposal) error {
	var missing []string
	for _, n := range g.labelNames(p) {
		if !slices.ContainsFunc(pr.Labels, func(l *gitea.Label) bool { return l != nil && l.Name == n }) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ids, err := g.ensureLabels(missing)
	if err != nil {
		return err
	}
	ls, _, err := g.client.AddIssueLabels(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.IssueLabelsOption{Labels: ids})
	if err != nil {
		return g.apiErr(fmt.Sprintf("label pull request #%d", pr.Index), err)
	}
	pr.Labels = ls
	return nil
}

// create opens the pull request of p, labelled.
func (g *Gitea) create(p Proposal) (*gitea.PullRequest, error) {
	ids, err := g.ensureLabels(g.labelNames(p))
	if err != nil {
		return nil, err
	}
	title := oneLineTitle(p.Summary)
	if title == "" {
		title = fmt.Sprintf("%s: proposal of run %s", p.Agent, p.RunID)
	}
	pr, resp, err := g.client.CreatePullRequest(g.cfg.Owner, g.cfg.Name, gitea.CreatePullRequestOption{
		Head: p.Branch, Base: g.base, Title: title, Body: g.body(p, ""), Labels: ids})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusConflict {
			// Opened meanwhile (another reconciler, or a person): use it.
			if found, ferr := g.find(p.Branch); ferr == nil && found != nil {
				return found, nil
			}
		}
		return nil, g.apiErr("open the pull request of "+p.Branch, err)
	}
	g.prs[p.Branch] = pr.Index
	return pr, nil
}

// labelNames are the labels of p's pull request.
func (g *Gitea) labelNames(p Proposal) []string {
	names := []string{"agent-proposal"}
	if p.Agent != "" {
		names = append(names, "agent:"+p.Agent)
	}
	for _, l := range g.cfg.Labels {
		if !slices.Contains(names, l) {
			names = append(names, l)
		}
	}
	return names
}

// ensureLabels returns the ids of the repository labels names, creating
// those that are missing.
func (g *Gitea) ensureLabels(names []string) ([]int64, error) {
	var missing []string
	for _, n := range names {
		if _, ok := g.labels[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		for page := 1; ; page++ {
			ls, _, err := g.client.ListRepoLabels(g.cfg.Owner, g.cfg.Name, gitea.ListLabelsOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: 50}})
			if err != nil {
				return nil, g.apiErr("list labels", err)
			}
			for _, l := range ls {
				g.labels[l.Name] = l.ID
			}
			if len(ls) < 50 {
				break
			}
		}
	}
	ids := make([]int64, 0, len(names))
	for _, n := range names {
		id, ok := g.labels[n]
		if !ok {
			color := "#5319e7"
			if n == "agent-proposal" {
				color = "#0e8a16"
			}
			l, _, err := g.client.CreateLabel(g.cfg.Owner, g.cfg.Name, gitea.CreateLabelOption{
				Name: n, Color: color, Description: "opened by the reconciler"})
			if err != nil {
				return nil, g.apiErr(fmt.Sprintf("create label %q", n), err)
			}
			id = l.ID
			g.labels[n] = id
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// refresh rewrites the body of the open pull request pr when it does not
// describe p (another head or ledger entry), after a comment saying why
// (once per head: a comment already carrying the head's marker is not
// made again).
func (g *Gitea) refresh(pr *gitea.PullRequest, p Proposal) error {
	m, ok := parseMarker(pr.Body)
	if ok && m.head == p.Head.String() && m.entry == p.LedgerEntry {
		return nil
	}
	if ok && m.head != p.Head.String() {
		if err := g.commentOnce(pr.Index, updatedMarker(p.Head), g.updatedComment(m.head, p)); err != nil {
			return err
		}
	}
	body := g.body(p, pr.Body)
	if _, _, err := g.client.EditPullRequest(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.EditPullRequestOption{Body: &body}); err != nil {
		return g.apiErr(fmt.Sprintf("update pull request #%d", pr.Index), err)
	}
	pr.Body = body
	return nil
}

func (g *Gitea) updatedComment(old string, p Proposal) string {
	return fmt.Sprintf("%s\nThe proposal moved from `%s` to `%s` and was decided again (ledger entry %d): %s\n\n"+
		"Approvals of `%s` no longer count: only reviews of `%s` do.",
		updatedMarker(p.Head), short(old), short(p.Head.String()), p.LedgerEntry, decisionLine(p.Decision), short(old), short(p.Head.String()))
}

// Comment says something once on the proposal's pull request: a comment
// holding marker is never posted twice (reconcile.Commenter). Without a
// pull request for the branch it does nothing.
func (g *Gitea) Comment(ctx context.Context, p Proposal, marker, body string) error {
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return err
	}
	pr, err := g.find(p.Branch)
	if err != nil || pr == nil {
		return err
	}
	return g.commentOnce(pr.Index, "<!-- "+marker+" -->", escapeText(body)+"\n\n<!-- "+marker+" -->")
}

// commentOnce comments body on pull request n unless a comment holding
// marker is there already.
func (g *Gitea) commentOnce(n int64, marker, body string) error {
	for page := 1; ; page++ {
		cs, _, err := g.client.ListIssueComments(g.cfg.Owner, g.cfg.Name, n, gitea.ListIssueCommentOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return g.apiErr(fmt.Sprintf("list comments of #%d", n), err)
		}
		for _, c := range cs {
			if c.Poster != nil && c.Poster.UserName == g.bot && strings.Contains(c.Body, marker) {
				return nil
			}
		}
		if len(cs) < 50 {
			break
		}
	}
	if _, _, err := g.client.CreateIssueComment(g.cfg.Owner, g.cfg.Name, n, gitea.CreateIssueCommentOption{Body: body}); err != nil {
		return g.apiErr(fmt.Sprintf("comment on #%d", n), err)
	}
	return nil
}

// status sets this instance's commit status of p.Head to the policy
// result, unless its latest status there says so already: failure when
// denied, pending while approvals are required, success otherwise.
func (g *Gitea) status(pr *gitea.PullRequest, p Proposal) error {
	state, desc := statusOf(p.Decision)
	return g.setStatus(pr.HTMLURL, p, state, desc)
}

// SetApprovalStatus sets this instance's commit status of p.Head after its
// approvals were judged: success when nothing is unmet, otherwise pending
// with what is still needed (failure for a denied decision). The loop
// calls it when what is unmet changes (reconcile.ApprovalStatuser).
func (g *Gitea) SetApprovalStatus(ctx context.Context, p Proposal, unmet []string) error {
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return err
	}
	pr, err := g.find(p.Branch)
	if err != nil {
		return err
	}
	if pr == nil || pr.State != gitea.StateOpen {
		return nil
	}
	state, desc := statusOf(p.Decision)
	if state == gitea.StatusPending {
		if len(unmet) == 0 {
			state, desc = gitea.StatusSuccess, "approved as the decision requires"
		} else if desc = oneLineTitle("needs: " + strings.Join(unmet, "; ")); len(desc) > 140 {
			desc = desc[:137] + "..."
		}
	}
	return g.setStatus(pr.HTMLURL, p, state, desc)
}

// setStatus sets this instance's commit status of p.Head unless its latest
// status there says so already.
func (g *Gitea) setStatus(target string, p Proposal, state gitea.StatusState, desc string) error {
	cs, resp, err := g.client.GetCombinedStatus(g.cfg.Owner, g.cfg.Name, p.Head.String())
	if err != nil && !notFound(resp) {
		return g.apiErr("read the status of "+short(p.Head.String()), err)
	}
	if cs != nil {
		for _, s := range cs.Statuses {
			if s.Context == g.StatusContext() && s.State == state && s.Description == desc {
				return nil
			}
		}
	}
	_, _, err = g.client.CreateStatus(g.cfg.Owner, g.cfg.Name, p.Head.String(), gitea.CreateStatusOption{
		State: state, Description: desc, Context: g.StatusContext(), TargetURL: target})
	if err != nil {
		return g.apiErr("set the status of "+short(p.Head.String()), err)
	}
	return nil
}

// statusOf is the commit status of a decision.
func statusOf(d policy.Decision) (gitea.StatusState, string) {
	var state gitea.StatusState
	var desc string
	switch {
	case d.Outcome == policy.Deny:
		state, desc = gitea.StatusFailure, "denied: "+d.Summary
	case len(d.Requirements) > 0 || d.Outcome == policy.RequireApproval:
		var reqs []string
		for _, r := range d.Requirements {
			reqs = append(reqs, r.String())
		}
		state, desc = gitea.StatusPending, "needs "+strings.Join(reqs, ", ")
		if len(reqs) == 0 {
			desc = "needs approval: " + d.Summary
		}
	default:
		state, desc = gitea.StatusSuccess, "allowed: "+d.Summary
	}
	desc = oneLineTitle(desc)
	if len(desc) > 140 {
		desc = desc[:137] + "..."
	}
	return state, desc
}

// Observe reports what became of the proposal. A merge into the protected
// branch is what the mirror shows (a merge commit or fast-forward bringing
// in one of heads or the branch's head, or a squash by its Agent-Run
// trailer, found as the git-native forge finds them), or the merge commit
// the API names for the pull request once the mirror has it on the
// protected branch (a squash or rebase: its change is for the loop to
// compare). A pull request closed without merge, or a deleted branch, is
// Closed. Otherwise Head is the mirror's head of the branch.
func (g *Gitea) Observe(ctx context.Context, p Proposal, protected plumbing.Hash, heads []plumbing.Hash) (Observation, error) {
	o, err := g.git.Observe(ctx, p, protected, heads)
	if err != nil || o.Merge != nil {
		return o, err
	}
	unlock := g.lock(ctx)
	err = g.setup()
	var pr *gitea.PullRequest
	if err == nil {
		pr, err = g.find(p.Branch)
	}
	unlock()
	if err != nil {
		return o, err
	}
	switch {
	case pr == nil:
		// Never opened (or not yet): the branch is the proposal.
		return o, nil
	case pr.HasMerged:
		return g.mergedObservation(ctx, o, pr, protected)
	case pr.State == gitea.StateClosed:
		o.Closed = true
		return o, nil
	}
	return o, nil
}

// mergedObservation reports the merge the API names for pr, which the
// mirror found no merge of the proposal's heads for: a squash or rebase
// commit on the protected branch. A pull request merged into another
// branch never reaches the protected one through this pull request: it is
// Closed. A merge the mirror does not have on the protected branch yet is
// an error (the next pass, after its fetch, sees it).
func (g *Gitea) mergedObservation(ctx context.Context, o Observation, pr *gitea.PullRequest, protected plumbing.Hash) (Observation, error) {
	if pr.Base != nil && pr.Base.Ref != g.base {
		o.Closed = true
		return o, nil
	}
	if pr.MergedCommitID == nil || !plumbing.IsHash(*pr.MergedCommitID) {
		return o, fmt.Errorf("gitea pull request #%d is merged but names no merge commit", pr.Index)
	}
	sha := plumbing.NewHash(*pr.MergedCommitID)
	c, err := g.repo.Commit(sha)
	if errors.Is(err, gitstore.ErrNotFound) {
		if ferr := g.repo.Fetch(ctx); ferr != nil {
			return o, ferr
		}
		c, err = g.repo.Commit(sha)
	}
	if err != nil {
		return o, fmt.Errorf("gitea pull request #%d merged at %s: %w", pr.Index, short(sha.String()), err)
	}
	in, err := g.repo.IsAncestor(sha, protected)
	if err != nil {
		return o, err
	}
	if !in {
		return o, fmt.Errorf("gitea pull request #%d merged at %s, which the protected branch at %s does not contain (yet)",
			pr.Index, short(sha.String()), short(protected.String()))
	}
	return Observation{Head: o.Head, Merge: c, Squash: true}, nil
}

// Approvals returns the approving reviews of head on the proposal's pull
// request: each reviewer's latest review that approves or requests
// changes counts when it approves, is of head (its commit_id; a review of
// any other head counts for nothing), and is neither dismissed nor stale.
// The token's own account never counts. Reviewers are matched to the
// members of reviewers (the spec before the merge) by forge_login; a
// reviewer no member names is returned with the login alone, which
// satisfies nothing.
func (g *Gitea) Approvals(ctx context.Context, p Proposal, o Observation, head plumbing.Hash, reviewers *hclspec.Spec) ([]Approval, error) {
	defer g.lock(ctx)()
	if err := g.setup(); err != nil {
		return nil, err
	}
	pr, err := g.find(p.Branch)
	if err != nil || pr == nil {
		return nil, err
	}
	latest := map[string]*gitea.PullReview{}
	var order []string
	for page := 1; ; page++ {
		rs, _, err := g.client.ListPullReviews(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.ListPullReviewsOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, g.apiErr(fmt.Sprintf("list reviews of #%d", pr.Index), err)
		}
		for _, r := range rs {
			if r.Reviewer == nil || r.Reviewer.UserName == "" || r.Dismissed {
				continue
			}
			if r.State != gitea.ReviewStateApproved && r.State != gitea.ReviewStateRequestChanges {
				continue
			}
			login := strings.ToLower(r.Reviewer.UserName)
			if prev, ok := latest[login]; !ok || r.ID > prev.ID {
				if !ok {
					order = append(order, login)
				}
				latest[login] = r
			}
		}
		if len(rs) < 50 {
			break
		}
	}
	var out []Approval
	for _, login := range order {
		r := latest[login]
		if r.State != gitea.ReviewStateApproved || r.Stale || r.CommitID != head.String() || strings.EqualFold(r.Reviewer.UserName, g.bot) {
			continue
		}
		out = append(out, reviewApproval(r, head, reviewers))
	}
	return out, nil
}

// reviewApproval is what review r proves: the approval of head by the
// reviewers.hcl member whose forge_login is its author's login.
func reviewApproval(r *gitea.PullReview, head plumbing.Hash, spec *hclspec.Spec) Approval {
	login := r.Reviewer.UserName
	member := memberByLogin(spec, login)
	a := Approval{
		Approver: policy.Approver{Login: login},
		Reviewer: fmt.Sprintf("%s (no reviewers.hcl member has this forge_login)", login),
		Record: ledger.Approval{Method: ledger.ApprovalForge, Via: "review", Ref: strconv.FormatInt(r.ID, 10),
			Login: login, Head: head.String()},
		Subject: head,
	}
	if member != nil {
		// The spelling reviewers.hcl uses: Gitea logins are case-insensitive.
		a.Approver.Login = member.ForgeLogin
		a.Reviewer = fmt.Sprintf("%s (%s)", member.Name, login)
		a.Record.Member = member.Name
	}
	return a
}

// memberByLogin returns the member of a reviewer group of spec whose
// forge_login is login (Gitea logins are case-insensitive), or nil.
func memberByLogin(spec *hclspec.Spec, login string) *hclspec.Member {
	if spec == nil || login == "" {
		return nil
	}
	for _, g := range spec.Groups {
		for _, m := range g.Members {
			if m.ForgeLogin != "" && strings.EqualFold(m.ForgeLogin, login) {
				return m
			}
		}
	}
	return nil
}

// Close comments why on the proposal's open pull request and closes it,
// then deletes the branch if it is still at p.Head (a compare-and-swap
// push: a branch a person pushed to is left). A pull request already
// closed or merged is left as it is.
func (g *Gitea) Close(ctx context.Context, p Proposal, why string) error {
	unlock := g.lock(ctx)
	err := g.closePull(p, why)
	unlock()
	if err != nil {
		return err
	}
	return g.git.Close(ctx, p, why)
}

func (g *Gitea) closePull(p Proposal, why string) error {
	if err := g.setup(); err != nil {
		return err
	}
	pr, err := g.find(p.Branch)
	if err != nil || pr == nil || pr.State != gitea.StateOpen || pr.HasMerged {
		return err
	}
	text := "Closed by the reconciler: " + oneLineTitle(why) + "."
	if id, ok := strings.CutPrefix(why, "superseded by "); ok && p.Agent != "" {
		// The loop names the superseding run: link its pull request.
		if next, err := g.find("agents/" + p.Agent + "/" + strings.TrimSpace(id)); err == nil && next != nil {
			text = fmt.Sprintf("Closed by the reconciler: superseded by #%d (%s).", next.Index, next.HTMLURL)
		}
	}
	if err := g.commentOnce(pr.Index, closedMarker, closedMarker+"\n"+text); err != nil {
		return err
	}
	closed := gitea.StateClosed
	if _, _, err := g.client.EditPullRequest(g.cfg.Owner, g.cfg.Name, pr.Index, gitea.EditPullRequestOption{State: &closed}); err != nil {
		return g.apiErr(fmt.Sprintf("close pull request #%d", pr.Index), err)
	}
	return nil
}

const closedMarker = "<!-- reconciler:closed -->"

func updatedMarker(head plumbing.Hash) string {
	return "<!-- reconciler:updated head=" + head.String() + " -->"
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
