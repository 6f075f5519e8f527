package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/google/go-github/v88/github"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// GitHubConfig says which GitHub repository proposals are reviewed on and
// how the reconciler authenticates there: with a token, or as a GitHub App
// installation (AppID, InstallationID and PrivateKeyPEM; its installation
// tokens are minted and renewed by ghinstallation). Its String, GoString
// and LogValue never show the token or the key.
type GitHubConfig struct {
	// BaseURL is the REST API root: "" is https://api.github.com/; GitHub
	// Enterprise Server's is https://HOST/api/v3/.
	BaseURL string
	// Owner and Name name the repository.
	Owner, Name string
	// Base is the protected branch pull requests target: "" is the
	// repository's default branch, read once.
	Base string
	// Token authenticates as a user or a machine account.
	Token string
	// AppID, InstallationID and PrivateKeyPEM authenticate as a GitHub
	// App installation instead.
	AppID, InstallationID int64
	PrivateKeyPEM         []byte
	// Instance names this reconciler: the commit status context is
	// "reconciler/<Instance>", so two installations never overwrite each
	// other's status.
	Instance string
	// HTTPClient is used for every request (nil: one with a 30 s timeout).
	HTTPClient *http.Client
	// Labels are put on every pull request opened.
	Labels []string
}

func (c GitHubConfig) String() string {
	auth := "no credentials"
	switch {
	case c.Token != "":
		auth = "token <secret>"
	case c.AppID != 0:
		auth = fmt.Sprintf("app %d installation %d, key <secret>", c.AppID, c.InstallationID)
	}
	return fmt.Sprintf("github %s/%s at %s (%s, instance %q)", c.Owner, c.Name, c.BaseURL, auth, c.Instance)
}

// GoString is String: %#v shows no secret either.
func (c GitHubConfig) GoString() string { return c.String() }

// LogValue is String.
func (c GitHubConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// GitHub is the pull-request forge on GitHub: a proposal is a pull request
// from its branch to the protected branch, approved by reviews in state
// APPROVED on the decided head by members matched through forge_login. The
// branches, heads and merge commits it reports are read from the local
// mirror (repo), never taken on GitHub's word alone.
type GitHub struct {
	repo   *gitstore.Repo
	git    *Git
	client *github.Client
	owner  string
	name   string
	// context is the commit status context, unique per instance.
	context string
	labels  []string
	// whoami returns the login the reconciler acts as on GitHub: the
	// token's user, or the App's bot.
	whoami func(context.Context) (string, error)

	mu      sync.Mutex
	base    string
	self    string
	numbers map[string]int // branch -> pull request number
}

// ErrMergeNotMirrored is returned by Observe for a pull request GitHub
// reports merged whose merge commit the mirror does not have on the
// protected branch yet: fetch and observe again; it is never judged on
// GitHub's word alone.
var ErrMergeNotMirrored = errors.New("the merge commit is not in the mirror's protected branch yet (fetch, then observe again)")

// Status context prefix; the instance completes it.
const ghContextPrefix = "reconciler/"

var (
	ghOwnerRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
	ghRepoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// NewGitHub returns the GitHub forge of the repository cfg names, whose
// mirror is repo. It checks the configuration and builds the client; it
// makes no request. It fails when the repository name is not one GitHub
// allows, when neither or both of a token and an App are given, when the
// App's key does not parse, or when Instance is empty.
func NewGitHub(repo *gitstore.Repo, cfg GitHubConfig) (*GitHub, error) {
	if repo == nil {
		return nil, errors.New("github forge: no repository mirror")
	}
	if !ghOwnerRE.MatchString(cfg.Owner) {
		return nil, fmt.Errorf("github forge: owner %q is not a GitHub user or organization name (letters, digits and hyphens)", cfg.Owner)
	}
	if !ghRepoRE.MatchString(cfg.Name) || cfg.Name == "." || cfg.Name == ".." {
		return nil, fmt.Errorf("github forge: repository name %q is not one GitHub allows (letters, digits, '.', '-', '_')", cfg.Name)
	}
	if cfg.Instance == "" {
		return nil, errors.New("github forge: no instance name: the commit status context must be unique per reconciler instance")
	}
	if strings.ContainsFunc(cfg.Instance, func(r rune) bool { return r < ' ' || r == 0x7f }) || len(ghContextPrefix+cfg.Instance) > 255 {
		return nil, fmt.Errorf("github forge: instance name %q must be printable and at most %d bytes", cfg.Instance, 255-len(ghContextPrefix))
	}
	if cfg.Base != "" && !ghValidBranch(cfg.Base) {
		return nil, fmt.Errorf("github forge: base branch %q is not a branch name", cfg.Base)
	}
	apiURL, err := ghAPIRoot(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	transport := hc.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	opts := []github.ClientOptionsFunc{github.WithHTTPClient(hc), github.WithURLs(&apiURL, &apiURL), github.WithUserAgent("agentgitops-reconciler")}
	g := &GitHub{repo: repo, git: NewGit(repo), owner: cfg.Owner, name: cfg.Name, base: cfg.Base,
		context: ghContextPrefix + cfg.Instance, labels: slices.Clone(cfg.Labels), numbers: map[string]int{}}
	app := cfg.AppID != 0 || cfg.InstallationID != 0 || len(cfg.PrivateKeyPEM) > 0
	switch {
	case cfg.Token != "" && app:
		return nil, errors.New("github forge: both a token and a GitHub App are configured: give one")
	case cfg.Token != "":
		if strings.ContainsAny(cfg.Token, " \t\r\n") {
			return nil, errors.New("github forge: the token contains white space (a stray newline from its file?)")
		}
		opts = append(opts, github.WithAuthToken(cfg.Token))
		client, err := github.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("github forge: %w", err)
		}
		g.client = client
		g.whoami = func(ctx context.Context) (string, error) {
			u, _, err := client.Users.Get(ctx, "")
			if err != nil {
				return "", ghError("read the token's user", err)
			}
			return u.GetLogin(), nil
		}
	case app:
		var missing []string
		if cfg.AppID == 0 {
			missing = append(missing, "app id")
		}
		if cfg.InstallationID == 0 {
			missing = append(missing, "installation id")
		}
		if len(cfg.PrivateKeyPEM) == 0 {
			missing = append(missing, "private key")
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("github forge: the GitHub App lacks its %s", strings.Join(missing, " and "))
		}
		root := strings.TrimSuffix(apiURL, "/")
		itr, err := ghinstallation.New(transport, cfg.AppID, cfg.InstallationID, cfg.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("github forge: app %d: the private key does not load (an RSA key in PEM, as GitHub issues it): %w", cfg.AppID, err)
		}
		itr.BaseURL = root
		atr, err := ghinstallation.NewAppsTransport(transport, cfg.AppID, cfg.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("github forge: app %d: the private key does not load: %w", cfg.AppID, err)
		}
		atr.BaseURL = root
		client, err := github.NewClient(append(opts, github.WithTransport(itr))...)
		if err != nil {
			return nil, fmt.Errorf("github forge: %w", err)
		}
		appClient, err := github.NewClient(append(opts, github.WithTransport(atr))...)
		if err != nil {
			return nil, fmt.Errorf("github forge: %w", err)
		}
		g.client = client
		g.whoami = func(ctx context.Context) (string, error) {
			a, _, err := appClient.Apps.Get(ctx, "")
			if err != nil {
				return "", ghError(fmt.Sprintf("read app %d", cfg.AppID), err)
			}
			if a.GetSlug() == "" {
				return "", fmt.Errorf("github: app %d has no slug, so its bot login is unknown", cfg.AppID)
			}
			return a.GetSlug() + "[bot]", nil
		}
	default:
		return nil, errors.New("github forge: no credentials: give a token, or a GitHub App's id, installation id and private key")
	}
	return g, nil
}

// apiRoot returns the API root of base with a trailing slash.
func ghAPIRoot(base string) (string, error) {
	if base == "" {
		return "https://api.github.com/", nil
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("github forge: the base URL must be an http(s) URL of the API root, e.g. https://github.example.com/api/v3/")
	}
	if u.User != nil {
		// Credentials in a URL end up in logs and errors.
		return "", errors.New("github forge: the base URL must not carry credentials: give a token or an App")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("github forge: the base URL must have no query or fragment")
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String(), nil
}

// Context returns the commit status context this instance sets.
func (g *GitHub) Context() string { return g.context }

// Open opens the proposal's pull request, or brings the one already there
// up to date: it never opens a second one for the branch, and never
// re-opens one that was closed. A new pull request gets the labels, the
// body (summary, rationale, risk, decision and rules, ledger entry and how
// to verify it) and a commit status on p.Head; an open one whose body was
// written for another head gets the status on p.Head, a comment saying
// why, and the new body. The status is written before the body records the
// head, so a crash in between is repaired by the next call.
func (g *GitHub) Open(ctx context.Context, p Proposal) error {
	if err := ghCheckProposal(p); err != nil {
		return err
	}
	pr, err := g.find(ctx, p.Branch)
	if err != nil {
		return err
	}
	if pr == nil {
		return g.create(ctx, p)
	}
	if pr.GetState() != "open" {
		// Closed (or merged): Observe reports it; it is never re-opened.
		return nil
	}
	return g.refresh(ctx, pr, p)
}

func ghCheckProposal(p Proposal) error {
	if !ghValidBranch(p.Branch) {
		return fmt.Errorf("github: proposal %s %s has no valid branch (%q)", p.Agent, p.RunID, p.Branch)
	}
	if p.Head.IsZero() {
		return fmt.Errorf("github: proposal %s has no head", p.Branch)
	}
	return nil
}

// validBranch accepts what git check-ref-format accepts for a branch, as
// far as a pull request's head or base can need it.
func ghValidBranch(b string) bool {
	if b == "" || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".lock") ||
		strings.Contains(b, "..") || strings.Contains(b, "//") || strings.Contains(b, "@{") || strings.HasPrefix(b, "-") {
		return false
	}
	return !strings.ContainsFunc(b, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune("~^:?*[\\", r)
	})
}

func (g *GitHub) create(ctx context.Context, p Proposal) error {
	base, err := g.baseBranch(ctx)
	if err != nil {
		return err
	}
	// The status first: the pull request shows it from the start.
	if err := g.setStatus(ctx, p.Head, ghStatusOf(p.Decision)); err != nil {
		return err
	}
	pr, _, err := g.client.PullRequests.Create(ctx, g.owner, g.name, &github.NewPullRequest{
		Title: github.Ptr(ghTitle(p)), Head: github.Ptr(p.Branch), Base: github.Ptr(base), Body: github.Ptr(g.body(p)),
	})
	if err != nil {
		var er *github.ErrorResponse
		if errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusUnprocessableEntity && ghAlreadyExists(er) {
			// Opened since we looked (another instance, or a request
			// that succeeded before a crash): adopt it.
			found, ferr := g.find(ctx, p.Branch)
			if ferr != nil {
				return ferr
			}
			if found == nil {
				return ghError("open a pull request for "+p.Branch, err)
			}
			if found.GetState() != "open" {
				return nil
			}
			return g.refresh(ctx, found, p)
		}
		return ghError("open a pull request for "+p.Branch, err)
	}
	g.remember(p.Branch, pr.GetNumber())
	return g.ensureLabels(ctx, pr)
}

// alreadyExists tells a 422 "A pull request already exists for ..." apart
// from other validation failures.
func ghAlreadyExists(er *github.ErrorResponse) bool {
	for _, e := range er.Errors {
		if strings.Contains(strings.ToLower(e.Message), "already exists") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(er.Message), "already exists")
}

// refresh brings an open pull request up to date with p.
func (g *GitHub) refresh(ctx context.Context, pr *github.PullRequest, p Proposal) error {
	if err := g.ensureLabels(ctx, pr); err != nil {
		return err
	}
	m, ok := ghReadMarker(pr.GetBody())
	current := ok && m.head == p.Head.String() && m.entry == p.LedgerEntry && m.context == g.context
	// On the head the body already records, a status is only repaired
	// when missing: SetApprovalStatus may have moved it on since.
	if err := g.ensureStatus(ctx, p.Head, ghStatusOf(p.Decision), current); err != nil {
		return err
	}
	if current {
		return nil
	}
	if ok && m.head != p.Head.String() {
		note := fmt.Sprintf("The branch moved to %s and was decided again (ledger entry %d): %s\n\nApprovals of %s no longer count; review the new head.",
			p.Head, p.LedgerEntry, ghLine(p.Decision.Summary), m.head)
		if _, _, err := g.client.Issues.CreateComment(ctx, g.owner, g.name, pr.GetNumber(), &github.IssueComment{Body: github.Ptr(note)}); err != nil {
			return ghError(fmt.Sprintf("comment on pull request #%d", pr.GetNumber()), err)
		}
	}
	_, _, err := g.client.PullRequests.Edit(ctx, g.owner, g.name, pr.GetNumber(), &github.PullRequest{Title: github.Ptr(ghTitle(p)), Body: github.Ptr(g.body(p))})
	if err != nil {
		return ghError(fmt.Sprintf("update pull request #%d", pr.GetNumber()), err)
	}
	return nil
}

func (g *GitHub) ensureLabels(ctx context.Context, pr *github.PullRequest) error {
	var missing []string
	for _, l := range g.labels {
		if !slices.ContainsFunc(pr.Labels, func(have *github.Label) bool { return strings.EqualFold(have.GetName(), l) }) {
			missing = append(missing, l)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, _, err := g.client.Issues.AddLabelsToIssue(ctx, g.owner, g.name, pr.GetNumber(), missing); err != nil {
		return ghError(fmt.Sprintf("label pull request #%d %q", pr.GetNumber(), missing), err)
	}
	return nil
}

// status is a commit status to set.
type ghStatus struct{ state, description string }

// statusOf is the commit status of a decision: failure when denied,
// pending while approvals are required, success when allowed.
func ghStatusOf(d policy.Decision) ghStatus {
	switch {
	case d.Outcome == policy.Deny:
		return ghStatus{"failure", "denied: " + d.Summary}
	case len(d.Requirements) > 0:
		var needs []string
		for _, r := range d.Requirements {
			needs = append(needs, r.String())
		}
		return ghStatus{"pending", "needs approval by " + strings.Join(needs, ", ")}
	default:
		return ghStatus{"success", "allowed: " + d.Summary}
	}
}

// SetApprovalStatus sets the commit status of p.Head after its approvals
// were judged: success when nothing is unmet, otherwise pending with what
// is still needed (failure for a denied decision). The loop calls it when
// the approvals of an open proposal change.
func (g *GitHub) SetApprovalStatus(ctx context.Context, p Proposal, unmet []string) error {
	if err := ghCheckProposal(p); err != nil {
		return err
	}
	st := ghStatusOf(p.Decision)
	if st.state == "pending" {
		if len(unmet) == 0 {
			st = ghStatus{"success", "approved as the decision requires"}
		} else {
			st.description = strings.Join(unmet, "; ")
		}
	}
	return g.ensureStatus(ctx, p.Head, st, false)
}

// ensureStatus sets st on head unless this instance's latest status there
// already says it (or, with ifAbsent, says anything).
func (g *GitHub) ensureStatus(ctx context.Context, head plumbing.Hash, st ghStatus, ifAbsent bool) error {
	combined, _, err := g.client.Repositories.GetCombinedStatus(ctx, g.owner, g.name, head.String(), &github.ListOptions{PerPage: 100})
	if err != nil {
		return ghError("read the commit status of "+head.String(), err)
	}
	for _, s := range combined.Statuses {
		if s.GetContext() == g.context && (ifAbsent || (s.GetState() == st.state && s.GetDescription() == ghTruncate(st.description, 140))) {
			return nil
		}
	}
	return g.setStatus(ctx, head, st)
}

func (g *GitHub) setStatus(ctx context.Context, head plumbing.Hash, st ghStatus) error {
	_, _, err := g.client.Repositories.CreateStatus(ctx, g.owner, g.name, head.String(), github.RepoStatus{
		State: github.Ptr(st.state), Context: github.Ptr(g.context), Description: github.Ptr(ghTruncate(st.description, 140)),
	})
	if err != nil {
		return ghError(fmt.Sprintf("set status %s on %s", st.state, head), err)
	}
	return nil
}

// Observe reports the proposal's head in the mirror and what became of
// its pull request. A merge the mirror shows (through Git's observation of
// the protected branch) is reported as Git reports it. A merge GitHub
// reports counts only once its merge commit is in the mirror and reachable
// from protected; until then Observe fails with ErrMergeNotMirrored. A pull
// request merged into another branch is Closed. MergedHead is
// then the head GitHub merged: its merge commit's second parent for a
// merge, the commit itself for a fast-forward, and for a squash or rebase
// (Squash set) the pull request's head, whose change the loop compares
// with the decided one. A pull request closed unmerged, or a branch gone,
// is Closed.
func (g *GitHub) Observe(ctx context.Context, p Proposal, protected plumbing.Hash, heads []plumbing.Hash) (Observation, error) {
	o, err := g.git.Observe(ctx, p, protected, heads)
	if err != nil || o.Merge != nil {
		return o, err
	}
	pr, err := g.find(ctx, p.Branch)
	if err != nil || pr == nil {
		return o, err
	}
	if !pr.GetMerged() && pr.MergedAt == nil {
		if pr.GetState() == "closed" {
			o.Closed = true
		}
		return o, nil
	}
	sha := pr.GetMergeCommitSHA()
	if !plumbing.IsHash(sha) {
		return o, fmt.Errorf("github: pull request #%d is merged but its merge commit %q is not a commit id", pr.GetNumber(), sha)
	}
	merge, err := g.repo.Commit(plumbing.NewHash(sha))
	if errors.Is(err, gitstore.ErrNotFound) {
		// Merged on GitHub after the mirror's last fetch: judged once the
		// mirror has it, never before.
		return Observation{}, fmt.Errorf("github: pull request #%d was merged as %s, %w", pr.GetNumber(), sha, ErrMergeNotMirrored)
	}
	if err != nil {
		return o, fmt.Errorf("github: merge commit %s of pull request #%d: %w", sha, pr.GetNumber(), err)
	}
	on, err := g.repo.IsAncestor(merge.Hash, protected)
	if err != nil {
		return o, fmt.Errorf("github: merge commit %s of pull request #%d: %w", sha, pr.GetNumber(), err)
	}
	if !on {
		base, err := g.baseBranch(ctx)
		if err != nil {
			return o, err
		}
		if pr.GetBase().GetRef() != base {
			// Merged into another branch: it never reaches the protected
			// branch through this pull request.
			o.Closed = true
			return o, nil
		}
		return Observation{}, fmt.Errorf("github: pull request #%d was merged into %s as %s, which is not on it at %s: %w", pr.GetNumber(), base, sha, ghShort(protected), ErrMergeNotMirrored)
	}
	merged := plumbing.NewHash(pr.GetHead().GetSHA())
	o.Closed = false
	o.Merge = merge
	switch {
	case merge.Hash == merged:
		o.MergedHead, o.FastForward = merged, true
	case len(merge.ParentHashes) >= 2 && merge.ParentHashes[1] == merged:
		o.MergedHead = merged
	default:
		o.MergedHead, o.Squash = merged, true
	}
	return o, nil
}

// Approvals returns the approvals GitHub's reviews give head: per
// reviewer, the latest review that approved, requested changes or was
// dismissed counts, and only when it approved head itself (a review of an
// older head never counts, whatever the repository's "dismiss stale
// reviews" setting). The reconciler's own login (the token's user or the
// App's bot) never counts. Reviewers are matched to members of reviewers
// by forge_login, case-insensitively as GitHub logins are; a reviewer
// matching no member is returned with no Member, so the loop reports the
// review as not counted.
func (g *GitHub) Approvals(ctx context.Context, p Proposal, o Observation, head plumbing.Hash, reviewers *hclspec.Spec) ([]Approval, error) {
	pr, err := g.find(ctx, p.Branch)
	if err != nil || pr == nil {
		return nil, err
	}
	self, err := g.selfLogin(ctx)
	if err != nil {
		return nil, err
	}
	reviews, err := g.reviews(ctx, pr.GetNumber())
	if err != nil {
		return nil, err
	}
	latest := ghLatestReviews(reviews)
	var out []Approval
	for _, r := range latest {
		login := r.GetUser().GetLogin()
		if r.GetState() != "APPROVED" || !strings.EqualFold(r.GetCommitID(), head.String()) || strings.EqualFold(login, self) {
			continue
		}
		a := Approval{
			Approver: policy.Approver{Login: login},
			Record:   ledger.Approval{Method: "forge", Via: "review", Ref: fmt.Sprint(r.GetID()), Login: login, Head: head.String()},
			Subject:  head,
		}
		if m := ghMember(reviewers, login); m != nil {
			// policy matches forge_login as written in reviewers.hcl.
			a.Approver.Login, a.Record.Member = m.ForgeLogin, m.Name
			a.Reviewer = fmt.Sprintf("%s (GitHub @%s, review %d)", m.Name, login, r.GetID())
		} else {
			a.Reviewer = fmt.Sprintf("GitHub @%s (review %d; no member of reviewers.hcl has this forge_login)", login, r.GetID())
		}
		out = append(out, a)
	}
	return out, nil
}

// maxReviewPages bounds the reviews read: more than this many pages of
// 100 is an error, since an unread page could hold a later review that
// voids an approval.
const ghMaxReviewPages = 30

func (g *GitHub) reviews(ctx context.Context, number int) ([]*github.PullRequestReview, error) {
	var all []*github.PullRequestReview
	opts := &github.ListOptions{PerPage: 100}
	for page := 0; ; page++ {
		if page == ghMaxReviewPages {
			return nil, fmt.Errorf("github: pull request #%d has more than %d reviews; not judged on a partial list", number, ghMaxReviewPages*100)
		}
		rs, resp, err := g.client.PullRequests.ListReviews(ctx, g.owner, g.name, number, opts)
		if err != nil {
			return nil, ghError(fmt.Sprintf("list the reviews of pull request #%d", number), err)
		}
		all = append(all, rs...)
		if resp.NextPage == 0 || resp.NextPage <= opts.Page {
			return all, nil
		}
		opts.Page = resp.NextPage
	}
}

// latestReviews returns, per reviewer (logins compared as GitHub does,
// case-insensitively), the latest review that decided something:
// APPROVED, CHANGES_REQUESTED or DISMISSED. A COMMENTED or PENDING review
// changes nothing, as on GitHub. Reviews are ordered by submission time,
// then id; the result by login.
func ghLatestReviews(reviews []*github.PullRequestReview) []*github.PullRequestReview {
	ordered := slices.Clone(reviews)
	slices.SortStableFunc(ordered, func(a, b *github.PullRequestReview) int {
		if c := a.GetSubmittedAt().Compare(b.GetSubmittedAt().Time); c != 0 {
			return c
		}
		return int(a.GetID() - b.GetID())
	})
	latest := map[string]*github.PullRequestReview{}
	for _, r := range ordered {
		if r == nil || r.GetUser().GetLogin() == "" {
			continue // a deleted account
		}
		switch r.GetState() {
		case "APPROVED", "CHANGES_REQUESTED", "DISMISSED":
			latest[strings.ToLower(r.GetUser().GetLogin())] = r
		}
	}
	out := make([]*github.PullRequestReview, 0, len(latest))
	for _, k := range slices.Sorted(ghKeys(latest)) {
		out = append(out, latest[k])
	}
	return out
}

func ghKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// memberByLogin returns the member of any group of spec whose forge_login
// is login, compared case-insensitively.
func ghMember(spec *hclspec.Spec, login string) *hclspec.Member {
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

// RequiredChecks returns the status checks the protected branch requires
// that are not successful on head, each as a sentence: a context without
// a commit status or check run, or with one that did not succeed. None
// when the branch is not protected. It fails when the protection cannot
// be read (a token without administration read access): required checks
// are then unknown, not absent.
func (g *GitHub) RequiredChecks(ctx context.Context, head plumbing.Hash) ([]string, error) {
	base, err := g.baseBranch(ctx)
	if err != nil {
		return nil, err
	}
	prot, _, err := g.client.Repositories.GetBranchProtection(ctx, g.owner, g.name, base)
	if errors.Is(err, github.ErrBranchNotProtected) {
		return nil, nil
	}
	if err != nil {
		return nil, ghError(fmt.Sprintf("read the protection of %s (required status checks need administration read access)", base), err)
	}
	rsc := prot.GetRequiredStatusChecks()
	if rsc == nil {
		return nil, nil
	}
	type required struct {
		context string
		appID   int64 // 0 or -1: any
	}
	var want []required
	if rsc.Checks != nil {
		for _, c := range *rsc.Checks {
			want = append(want, required{c.Context, c.GetAppID()})
		}
	}
	if len(want) == 0 && rsc.Contexts != nil {
		for _, c := range *rsc.Contexts {
			want = append(want, required{context: c})
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	combined, _, err := g.client.Repositories.GetCombinedStatus(ctx, g.owner, g.name, head.String(), &github.ListOptions{PerPage: 100})
	if err != nil {
		return nil, ghError("read the commit status of "+head.String(), err)
	}
	runs, _, err := g.client.Checks.ListCheckRunsForRef(ctx, g.owner, g.name, head.String(), &github.ListCheckRunsOptions{ListOptions: github.ListOptions{PerPage: 100}})
	if err != nil {
		return nil, ghError("read the check runs of "+head.String(), err)
	}
	var unmet []string
	for _, w := range want {
		state := ""
		for _, s := range combined.Statuses { // the latest per context
			if s.GetContext() == w.context {
				state = s.GetState()
			}
		}
		for _, r := range runs.CheckRuns {
			if r.GetName() != w.context || (w.appID > 0 && r.GetApp().GetID() != w.appID) {
				continue
			}
			state = r.GetStatus()
			if state == "completed" {
				state = r.GetConclusion()
			}
			if state == "neutral" || state == "skipped" {
				state = "success"
			}
		}
		switch state {
		case "success":
		case "":
			unmet = append(unmet, fmt.Sprintf("required status check %q has not run on %s", w.context, ghShort(head)))
		default:
			unmet = append(unmet, fmt.Sprintf("required status check %q is %s on %s", w.context, state, ghShort(head)))
		}
	}
	return unmet, nil
}

// Close comments why on the proposal's pull request and closes it, then
// deletes its branch if it is still at p.Head (a compare-and-swap push, so
// a person's commit pushed since is never deleted).
func (g *GitHub) Close(ctx context.Context, p Proposal, why string) error {
	if !ghValidBranch(p.Branch) {
		return fmt.Errorf("github: close %s %s: no valid branch (%q)", p.Agent, p.RunID, p.Branch)
	}
	pr, err := g.find(ctx, p.Branch)
	if err != nil {
		return err
	}
	if pr != nil && pr.GetState() == "open" {
		note := "Closed by the reconciler: " + ghText(why, 2000)
		if _, _, err := g.client.Issues.CreateComment(ctx, g.owner, g.name, pr.GetNumber(), &github.IssueComment{Body: github.Ptr(note)}); err != nil {
			return ghError(fmt.Sprintf("comment on pull request #%d", pr.GetNumber()), err)
		}
		if _, _, err := g.client.PullRequests.Edit(ctx, g.owner, g.name, pr.GetNumber(), &github.PullRequest{State: github.Ptr("closed")}); err != nil {
			return ghError(fmt.Sprintf("close pull request #%d", pr.GetNumber()), err)
		}
	}
	if p.Head.IsZero() {
		return nil
	}
	return g.git.Close(ctx, p, why)
}

// find returns the pull request of branch (from this repository, not a
// fork), open or closed, or nil. Several: the oldest open one, else the
// newest.
func (g *GitHub) find(ctx context.Context, branch string) (*github.PullRequest, error) {
	g.mu.Lock()
	n, ok := g.numbers[branch]
	g.mu.Unlock()
	if ok {
		pr, _, err := g.client.PullRequests.Get(ctx, g.owner, g.name, n)
		if err != nil {
			return nil, ghError(fmt.Sprintf("read pull request #%d", n), err)
		}
		if g.ours(pr, branch) {
			return pr, nil
		}
	}
	opts := &github.PullRequestListOptions{State: "all", Head: g.owner + ":" + branch, ListOptions: github.ListOptions{PerPage: 100}}
	var open, closed *github.PullRequest
	for page := 0; page < 10; page++ {
		prs, resp, err := g.client.PullRequests.List(ctx, g.owner, g.name, opts)
		if err != nil {
			return nil, ghError("list the pull requests of "+branch, err)
		}
		for _, pr := range prs {
			// GitHub ignores a head filter it cannot parse and lists every
			// pull request: check each.
			if !g.ours(pr, branch) {
				continue
			}
			if pr.GetState() == "open" {
				if open == nil || pr.GetNumber() < open.GetNumber() {
					open = pr
				}
			} else if closed == nil || pr.GetNumber() > closed.GetNumber() {
				closed = pr
			}
		}
		if resp.NextPage == 0 || resp.NextPage <= opts.Page {
			break
		}
		opts.Page = resp.NextPage
	}
	pr := open
	if pr == nil {
		pr = closed
	}
	if pr != nil {
		g.remember(branch, pr.GetNumber())
	}
	return pr, nil
}

// ours tells whether pr is a pull request from branch of the repository
// it targets (a fork's branch of the same name is not the proposal).
func (g *GitHub) ours(pr *github.PullRequest, branch string) bool {
	if pr == nil || pr.GetHead().GetRef() != branch {
		return false
	}
	head, base := pr.GetHead().GetRepo(), pr.GetBase().GetRepo()
	if head == nil || base == nil {
		return false // the head repository was deleted: a fork's
	}
	if head.GetID() != 0 && base.GetID() != 0 {
		return head.GetID() == base.GetID()
	}
	return strings.EqualFold(head.GetFullName(), base.GetFullName())
}

func (g *GitHub) remember(branch string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.numbers[branch] = n
}

func (g *GitHub) baseBranch(ctx context.Context) (string, error) {
	g.mu.Lock()
	base := g.base
	g.mu.Unlock()
	if base != "" {
		return base, nil
	}
	r, _, err := g.client.Repositories.Get(ctx, g.owner, g.name)
	if err != nil {
		return "", ghError(fmt.Sprintf("read repository %s/%s", g.owner, g.name), err)
	}
	if !ghValidBranch(r.GetDefaultBranch()) {
		return "", fmt.Errorf("github: repository %s/%s has no default branch; configure the base branch", g.owner, g.name)
	}
	g.mu.Lock()
	g.base = r.GetDefaultBranch()
	g.mu.Unlock()
	return r.GetDefaultBranch(), nil
}

func (g *GitHub) selfLogin(ctx context.Context) (string, error) {
	g.mu.Lock()
	self := g.self
	g.mu.Unlock()
	if self != "" {
		return self, nil
	}
	login, err := g.whoami(ctx)
	if err != nil {
		return "", err
	}
	if login == "" {
		// Fail closed: an unknown own login cannot be excluded.
		return "", errors.New("github: the reconciler's own login is unknown, so its reviews cannot be excluded")
	}
	g.mu.Lock()
	g.self = login
	g.mu.Unlock()
	return login, nil
}

// apiError names the operation and says what a status usually means. The
// errors of go-github name the method and URL (with credentials in the
// query redacted), never the Authorization header.
func ghError(op string, err error) error {
	var (
		rl    *github.RateLimitError
		abuse *github.AbuseRateLimitError
		er    *github.ErrorResponse
	)
	switch {
	case errors.As(err, &rl):
		return fmt.Errorf("github %s: rate limit exhausted until %s: %w", op, rl.Rate.Reset.UTC().Format(time.RFC3339), err)
	case errors.As(err, &abuse):
		wait := "later"
		if abuse.RetryAfter != nil {
			wait = "in " + abuse.RetryAfter.String()
		}
		return fmt.Errorf("github %s: secondary rate limit, retry %s: %w", op, wait, err)
	case errors.As(err, &er) && er.Response != nil:
		hint := ""
		switch er.Response.StatusCode {
		case http.StatusUnauthorized:
			hint = " (the credentials were refused: expired, revoked or mistyped)"
		case http.StatusForbidden:
			hint = " (the credentials lack a permission this needs)"
		case http.StatusNotFound:
			hint = " (not found: check the owner, the repository and that the credentials can read it; GitHub answers 404 to a request it does not allow)"
		case http.StatusUnprocessableEntity:
			hint = " (GitHub refused the request as invalid)"
		}
		return fmt.Errorf("github %s%s: %w", op, hint, err)
	}
	return fmt.Errorf("github %s: %w", op, err)
}

func ghShort(h plumbing.Hash) string { return h.String()[:7] }

func ghTruncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
