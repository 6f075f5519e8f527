package giteatest

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// Repo is a repository of the server.
type Repo struct {
	Owner, Name string
	s           *Server
}

// CreateRepo creates an empty public repository name owned by owner, its
// default branch main.
func (s *Server) CreateRepo(owner User, name string) *Repo {
	s.t.Helper()
	in := map[string]any{"name": name, "private": false, "auto_init": false, "default_branch": "main"}
	s.API(owner, "POST", "/user/repos", in, nil)
	return &Repo{Owner: owner.Login, Name: name, s: s}
}

// Path is the repository's API path, /repos/OWNER/NAME.
func (r *Repo) Path() string {
	return "/repos/" + url.PathEscape(r.Owner) + "/" + url.PathEscape(r.Name)
}

// CloneURL is the repository's http URL with u's login and token as basic
// auth credentials (Gitea accepts a token as the password).
func (r *Repo) CloneURL(u User) string {
	base, _ := url.Parse(r.s.URL)
	base.User = url.UserPassword(u.Login, u.Token)
	base.Path = "/" + r.Owner + "/" + r.Name + ".git"
	return base.String()
}

// PublicURL is the repository's http URL without credentials.
func (r *Repo) PublicURL() string { return r.s.URL + "/" + r.Owner + "/" + r.Name + ".git" }

// Git runs the git CLI in dir as gittest.Git does (hermetic configuration,
// fixed identity and dates).
func (r *Repo) Git(dir string, args ...string) string {
	r.s.t.Helper()
	return gittest.Git(r.s.t, dir, args...)
}

// Push pushes refspecs from the work tree dir to the repository as u, with
// the git CLI over http.
func (r *Repo) Push(u User, dir string, refspecs ...string) {
	r.s.t.Helper()
	r.Git(dir, append([]string{"push", "--quiet", r.CloneURL(u)}, refspecs...)...)
}

// Clone clones the repository as u into a fresh temporary directory.
func (r *Repo) Clone(u User) string {
	r.s.t.Helper()
	dir := r.s.t.TempDir()
	r.Git("", "clone", "--quiet", r.CloneURL(u), dir)
	return dir
}

// AddCollaborator gives login permission (read, write or admin) on the
// repository.
func (r *Repo) AddCollaborator(login, permission string) {
	r.s.t.Helper()
	r.s.API(r.s.Admin, "PUT", r.Path()+"/collaborators/"+url.PathEscape(login), map[string]any{"permission": permission}, nil)
}

// PullRequest is what the tests read of a pull request.
type PullRequest struct {
	Number    int64   `json:"number"`
	Title     string  `json:"title"`
	Body      string  `json:"body"`
	State     string  `json:"state"`
	Merged    bool    `json:"merged"`
	MergeSHA  *string `json:"merge_commit_sha"`
	HTMLURL   string  `json:"html_url"`
	User      *Person `json:"user"`
	Labels    []Label `json:"labels"`
	Head      Branch  `json:"head"`
	Base      Branch  `json:"base"`
	Mergeable bool    `json:"mergeable"`
}

// Person is a Gitea user as the API shows it.
type Person struct {
	Login string `json:"login"`
	Email string `json:"email"`
}

// Label is a label as the API shows it.
type Label struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// Branch is a pull request's head or base.
type Branch struct {
	Ref string `json:"ref"`
	Sha string `json:"sha"`
}

// PullRequests lists every pull request of the repository, open and closed.
func (r *Repo) PullRequests() []PullRequest {
	r.s.t.Helper()
	var all []PullRequest
	for page := 1; ; page++ {
		var prs []PullRequest
		r.s.API(r.s.Admin, "GET", fmt.Sprintf("%s/pulls?state=all&limit=50&page=%d", r.Path(), page), nil, &prs)
		all = append(all, prs...)
		if len(prs) < 50 {
			return all
		}
	}
}

// Pull returns pull request number n.
func (r *Repo) Pull(n int64) PullRequest {
	r.s.t.Helper()
	var pr PullRequest
	r.s.API(r.s.Admin, "GET", fmt.Sprintf("%s/pulls/%d", r.Path(), n), nil, &pr)
	return pr
}

// OpenPull opens a pull request of head into base as u and returns it.
func (r *Repo) OpenPull(u User, head, base, title string) PullRequest {
	r.s.t.Helper()
	var pr PullRequest
	r.s.API(u, "POST", r.Path()+"/pulls", map[string]any{"head": head, "base": base, "title": title}, &pr)
	return pr
}

// Review submits a review of pull request n as u: event APPROVED,
// REQUEST_CHANGES or COMMENT, on commit (the pull request's head when "").
// It returns the review's id.
func (r *Repo) Review(u User, n int64, event, commit, body string) int64 {
	r.s.t.Helper()
	id, err := r.TryReview(u, n, event, commit, body)
	if err != nil {
		r.s.t.Fatal(err)
	}
	return id
}

// TryReview is Review returning the error.
func (r *Repo) TryReview(u User, n int64, event, commit, body string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	in := map[string]any{"event": event, "body": body}
	if commit != "" {
		in["commit_id"] = commit
	}
	err := r.s.Do(u, "POST", fmt.Sprintf("%s/pulls/%d/reviews", r.Path(), n), in, &out)
	return out.ID, err
}

// DismissReview dismisses review id of pull request n as the administrator.
func (r *Repo) DismissReview(n, id int64, why string) {
	r.s.t.Helper()
	r.s.API(r.s.Admin, "POST", fmt.Sprintf("%s/pulls/%d/reviews/%d/dismissals", r.Path(), n, id), map[string]any{"message": why}, nil)
}

// Merge merges pull request n as u with style (merge, rebase,
// rebase-merge, squash, fast-forward-only), retrying while Gitea is still
// checking whether it merges cleanly. It does not delete the branch.
func (r *Repo) Merge(u User, n int64, style string) {
	r.s.t.Helper()
	if err := r.TryMerge(u, n, style); err != nil {
		r.s.t.Fatal(err)
	}
}

// TryMerge is Merge returning the error.
func (r *Repo) TryMerge(u User, n int64, style string) error {
	in := map[string]any{"Do": style, "delete_branch_after_merge": false}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := r.s.Do(u, "POST", fmt.Sprintf("%s/pulls/%d/merge", r.Path(), n), in, nil)
		var ae *APIError
		if err == nil || !errors.As(err, &ae) || ae.Status != http.StatusMethodNotAllowed ||
			!strings.Contains(ae.Body, "try again later") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close closes pull request n without merging it, as u.
func (r *Repo) Close(u User, n int64) {
	r.s.t.Helper()
	r.s.API(u, "PATCH", fmt.Sprintf("%s/pulls/%d", r.Path(), n), map[string]any{"state": "closed"}, nil)
}

// DeleteBranch deletes branch as u through the API.
func (r *Repo) DeleteBranch(u User, branch string) {
	r.s.t.Helper()
	r.s.API(u, "DELETE", r.Path()+"/branches/"+escapeBranch(branch), nil, nil)
}

// BranchHead returns the head of branch as the API shows it, "" when it
// does not exist.
func (r *Repo) BranchHead(branch string) string {
	r.s.t.Helper()
	var b struct {
		Commit struct {
			ID string `json:"id"`
		} `json:"commit"`
	}
	err := r.s.Do(r.s.Admin, "GET", r.Path()+"/branches/"+escapeBranch(branch), nil, &b)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return ""
	}
	if err != nil {
		r.s.t.Fatal(err)
	}
	return b.Commit.ID
}

// Status is a commit status as the API shows it.
type Status struct {
	ID          int64  `json:"id"`
	State       string `json:"status"`
	Context     string `json:"context"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url"`
	Creator     Person `json:"creator"`
}

// Statuses lists the commit statuses of ref, newest first.
func (r *Repo) Statuses(ref string) []Status {
	r.s.t.Helper()
	var out []Status
	r.s.API(r.s.Admin, "GET", r.Path()+"/statuses/"+url.PathEscape(ref)+"?limit=50", nil, &out)
	return out
}

// CombinedStatus returns the latest status of each context of ref,
// context -> state.
func (r *Repo) CombinedStatus(ref string) map[string]string {
	r.s.t.Helper()
	var out struct {
		Statuses []Status `json:"statuses"`
	}
	r.s.API(r.s.Admin, "GET", r.Path()+"/commits/"+url.PathEscape(ref)+"/status", nil, &out)
	m := map[string]string{}
	for _, st := range out.Statuses {
		m[st.Context] = st.State
	}
	return m
}

// Comment is an issue comment as the API shows it.
type Comment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User Person `json:"user"`
}

// Comments lists the comments of pull request n, oldest first.
func (r *Repo) Comments(n int64) []Comment {
	r.s.t.Helper()
	var out []Comment
	r.s.API(r.s.Admin, "GET", fmt.Sprintf("%s/issues/%d/comments", r.Path(), n), nil, &out)
	return out
}

// escapeBranch escapes each segment of a branch name for a path.
func escapeBranch(b string) string {
	parts := strings.Split(b, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
