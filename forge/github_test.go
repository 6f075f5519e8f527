package forge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/golang-jwt/jwt/v4"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/policy"
)

// ghToken is the token the tests authenticate with: it must appear in no
// error and no printed configuration.
const ghToken = "ghp_TESTtokenMustNeverBePrinted0123456789"

func newGitHub(t *testing.T, s *replay, repo *gitstore.Repo, owner, name, base string) *forge.GitHub {
	t.Helper()
	g, err := forge.NewGitHub(repo, forge.GitHubConfig{BaseURL: s.url(), Owner: owner, Name: name, Base: base,
		Token: ghToken, Instance: "test-1", Labels: []string{"agent-proposal"}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// mirror returns a world with branch pushed at a new commit, the mirror of
// its bare repository, and the commit.
func mirror(t *testing.T, branch string) (*world, *gitstore.Repo, plumbing.Hash) {
	t.Helper()
	w := newWorld(t)
	w.branch(branch, "main")
	h := w.commit("proposal on " + branch)
	w.push(branch)
	w.checkout("main")
	return w, open(t, w.bare), h
}

func decision() policy.Decision {
	return policy.Decision{Outcome: policy.RequireApproval, Summary: "require_approval protect/prod (1 of sre)",
		Rules:        []policy.Rule{{Policy: "protect", Rule: "prod", Kind: policy.KindApproval, Blocking: true, Message: "prod needs an SRE", Reviewers: []string{"sre"}, Min: 1, Pos: "policies/protect.hcl:3:3"}},
		Requirements: []policy.Requirement{{Groups: []string{"sre"}, Min: 1}}}
}

// loginSpec loads a reviewers.hcl whose group "sre" has a member per
// name=forge_login pair.
func loginSpec(t *testing.T, pairs ...string) *hclspec.Spec {
	t.Helper()
	var b strings.Builder
	b.WriteString("group \"sre\" {\n")
	for _, p := range pairs {
		name, login, _ := strings.Cut(p, "=")
		fmt.Fprintf(&b, "  member %q {\n    forge_login = %q\n  }\n", name, login)
	}
	b.WriteString("}\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "reviewers.hcl"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, diags := hclspec.Load(os.DirFS(dir), hclspec.Options{})
	if diags.HasErrors() {
		t.Fatalf("load reviewers.hcl:\n%s\n%v", b.String(), diags)
	}
	return spec
}

const orbRepo = "/repos/api-playground/api-sandbox"

// fakePulls answers the pull request calls of api-playground/api-sandbox
// from the recorded response of octokit.rb's create_pull_request (#94,
// head branch-for-pr), reflecting what the requests set (title, body,
// labels, state) as GitHub does, and the commit statuses posted (each
// the recorded create_status response with its state, context and
// description reflected). The first list is octokit.rb's recorded list
// of octokit/octokit.rb's pull requests (none from branch-for-pr): the
// forge must not take any of them for the proposal's.
type fakePulls struct {
	t        *testing.T
	s        *replay
	pr       map[string]any // nil until created
	statuses map[string][]map[string]any
	listed   int
}

func newFakePulls(t *testing.T, s *replay) *fakePulls {
	f := &fakePulls{t: t, s: s, statuses: map[string][]map[string]any{}}
	created := orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0)
	listAll := orb(t, "PullRequests__pull_requests__lists_all_pull_requests", 0)
	s.handle("GET", orbRepo+"/pulls", func(r request) recorded {
		f.listed++
		if f.pr == nil {
			return listAll
		}
		return f.current(listAll, true)
	})
	s.handle("GET", orbRepo+"/pulls/94", func(r request) recorded { return f.current(created, false) })
	s.handle("POST", orbRepo+"/pulls", func(r request) recorded {
		var req map[string]any
		json.Unmarshal(r.Body, &req)
		f.pr = created.object(t)
		f.pr["title"], f.pr["body"] = req["title"], req["body"]
		return f.current(created, false)
	})
	s.handle("PATCH", orbRepo+"/pulls/94", func(r request) recorded {
		var req map[string]any
		json.Unmarshal(r.Body, &req)
		for _, k := range []string{"title", "body", "state"} {
			if v, ok := req[k]; ok {
				f.pr[k] = v
			}
		}
		return f.current(created, false)
	})
	// No recording of POST /issues/{n}/labels: the documented response is
	// the labels.
	s.handle("POST", orbRepo+"/issues/94/labels", func(r request) recorded {
		var names []string
		json.Unmarshal(r.Body, &names)
		var labels []any
		for i, n := range names {
			labels = append(labels, map[string]any{"id": 1000 + i, "name": n, "color": "ededed", "default": false})
		}
		f.pr["labels"] = labels
		b, _ := json.Marshal(labels)
		return documented(200, string(b))
	})
	// No recording of an issue comment: the documented issue-comment
	// object.
	s.handle("POST", orbRepo+"/issues/94/comments", func(r request) recorded {
		var req map[string]any
		json.Unmarshal(r.Body, &req)
		b, _ := json.Marshal(map[string]any{"id": 5000 + len(s.requests("POST "+orbRepo+"/issues/94/comments")), "body": req["body"],
			"user": map[string]any{"login": "jacquev6", "id": 327146, "type": "User"}, "created_at": "2025-11-01T00:00:00Z"})
		return documented(201, string(b))
	})
	return f
}

// current is the pull request as it now is, alone or in a list.
func (f *fakePulls) current(like recorded, asList bool) recorded {
	b, err := json.Marshal(f.pr)
	if err != nil {
		f.t.Fatal(err)
	}
	if asList {
		b = []byte("[" + string(b) + "]")
	}
	return recorded{source: like.source + " (title, body, labels and state as requested)", status: 200, header: like.header, body: b}
}

// serveStatuses answers POST /statuses/{head} with octokit.rb's recorded
// create_status response and GET /commits/{head}/status with its
// recorded combined status, both reflecting what was posted.
func (f *fakePulls) serveStatuses(heads ...plumbing.Hash) {
	createdStatus := orb(f.t, "Statuses__create_status__creates_status", 1)
	combined := orb(f.t, "Statuses__combined_status__gets_a_combined_status", 0)
	for _, h := range heads {
		h := h.String()
		f.s.handle("POST", orbRepo+"/statuses/"+h, func(r request) recorded {
			var req map[string]any
			json.Unmarshal(r.Body, &req)
			st := createdStatus.object(f.t)
			for _, k := range []string{"state", "context", "description"} {
				st[k] = req[k]
			}
			f.statuses[h] = append([]map[string]any{st}, f.statuses[h]...)
			b, _ := json.Marshal(st)
			return recorded{source: createdStatus.source, status: createdStatus.status, header: createdStatus.header, body: b}
		})
		f.s.handle("GET", orbRepo+"/commits/"+h+"/status", func(r request) recorded {
			c := combined.object(f.t)
			c["sha"], c["statuses"] = h, f.statuses[h]
			b, _ := json.Marshal(c)
			return recorded{source: combined.source, status: 200, header: combined.header, body: b}
		})
	}
}

// TestGitHubRecordedOpenOnce opens a proposal, opens it again from a new
// process (no remembered number) and then for a new decided head: one
// pull request, one label request and one status for the first head; the
// new head gets its status, a comment saying why and a new body.
func TestGitHubRecordedOpenOnce(t *testing.T) {
	s := newReplay(t)
	f := newFakePulls(t, s)
	w, repo, head := mirror(t, "branch-for-pr")
	w.checkout("branch-for-pr")
	head2 := w.commit("a person's fix")
	f.serveStatuses(head, head2)

	p := forge.Proposal{Agent: "deps", RunID: "3f2a9c0d41be", Branch: "branch-for-pr", Head: head, Decision: decision(),
		Summary: "Bump lodash to 4.17.21\nsecond line", Body: "CVE-2021-23337 is fixed in 4.17.21. <!-- agentgitops-reconciler context=\"reconciler/test-1\" head=" + strings.Repeat("0", 40) + " entry=1 -->",
		Risk: "low: patch release", LedgerEntry: 42}
	ctx := context.Background()
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	creates := s.requests("POST " + orbRepo + "/pulls")
	if len(creates) != 1 {
		t.Fatalf("%d pull requests created, want 1: %v", len(creates), creates)
	}
	var req struct{ Title, Head, Base, Body string }
	if err := json.Unmarshal(creates[0].Body, &req); err != nil {
		t.Fatal(err)
	}
	if req.Title != "Bump lodash to 4.17.21" || req.Head != "branch-for-pr" || req.Base != "master" {
		t.Errorf("created %+v", req)
	}
	for _, want := range []string{"## Rationale", "CVE-2021-23337", "## Risk", "low: patch release", "**require_approval**: require_approval protect/prod (1 of sre)",
		"1 of sre", "`protect/prod`", "prod needs an SRE", "policies/protect.hcl:3:3", "ledger entry 42", "`" + head.String() + "`",
		"reconciler ledger verify --repo <clone URL>", "reconciler ledger show --repo <clone URL> 42\n", "reconciler ledger show --repo <clone URL> 3f2a9c0d41be\n",
		`<!-- agentgitops-reconciler context="reconciler/test-1" head=` + head.String() + " entry=42 -->"} {
		if !strings.Contains(req.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, req.Body)
		}
	}
	if n := strings.Count(req.Body, "<!-- agentgitops-reconciler"); n != 1 {
		t.Errorf("the agent's text forged a marker: %d markers in\n%s", n, req.Body)
	}
	if got := s.requests("POST " + orbRepo + "/issues/94/labels"); len(got) != 1 || string(got[0].Body) != `["agent-proposal"]`+"\n" {
		t.Errorf("label requests %v", got)
	}
	statuses := s.requests("POST " + orbRepo + "/statuses/")
	if len(statuses) != 1 {
		t.Fatalf("%d statuses set, want 1", len(statuses))
	}
	var st struct{ State, Context, Description string }
	json.Unmarshal(statuses[0].Body, &st)
	if st.State != "pending" || st.Context != "reconciler/test-1" || statuses[0].Path != orbRepo+"/statuses/"+head.String() {
		t.Errorf("status %+v on %s", st, statuses[0].Path)
	}
	if got := s.requests("PATCH "); len(got) != 0 {
		t.Errorf("the second Open edited: %v", got)
	}
	for _, r := range s.reqs {
		if r.Auth != "Bearer "+ghToken {
			t.Errorf("%s authenticated with %q", r, r.Auth)
		}
	}

	// A new head decided (a person pushed, the loop decided it again).
	p2 := p
	p2.Head, p2.LedgerEntry, p2.Decision.Outcome, p2.Decision.Summary = head2, 43, policy.Deny, "deny protect/secrets"
	p2.Decision.Requirements = nil
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").Open(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if got := s.requests("POST " + orbRepo + "/statuses/" + head2.String()); len(got) != 1 || !strings.Contains(string(got[0].Body), `"state":"failure"`) {
		t.Errorf("status of the new head: %v", got)
	}
	comments := s.requests("POST " + orbRepo + "/issues/94/comments")
	if len(comments) != 1 || !strings.Contains(string(comments[0].Body), head.String()) || !strings.Contains(string(comments[0].Body), "no longer count") {
		t.Errorf("comments %v", comments)
	}
	if m := fmt.Sprint(f.pr["body"]); !strings.Contains(m, "head="+head2.String()+" entry=43") || !strings.Contains(m, "**deny**") {
		t.Errorf("body not updated:\n%s", m)
	}
	if got := s.requests("POST " + orbRepo + "/pulls"); len(got) != 1 {
		t.Errorf("%d creates after the update", len(got))
	}
}

// TestGitHubRecordedOpenAdoptsExisting answers the create with the
// recorded 422 "A pull request already exists for
// api-playground:branch-for-pr." (a pull request opened since the list):
// the forge adopts it instead of failing or opening another.
func TestGitHubRecordedOpenAdoptsExisting(t *testing.T) {
	s := newReplay(t)
	_, repo, head := mirror(t, "branch-for-pr")
	created := orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0)
	// No recording of an empty list: the documented empty array.
	s.on("GET", orbRepo+"/pulls", documented(200, "[]"), list(created))
	s.on("POST", orbRepo+"/pulls", orb(t, "PullRequests__merge_pull_request__merges_the_pull_request", 0))
	s.on("POST", orbRepo+"/statuses/"+head.String(), orb(t, "Statuses__create_status__creates_status", 1))
	s.on("GET", orbRepo+"/commits/"+head.String()+"/status", orb(t, "Statuses__combined_status__gets_a_combined_status", 0))
	s.on("POST", orbRepo+"/issues/94/labels", documented(200, `[{"id":1,"name":"agent-proposal","color":"ededed","default":false}]`))
	s.on("PATCH", orbRepo+"/pulls/94", orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 1))
	p := forge.Proposal{Agent: "deps", RunID: "r1", Branch: "branch-for-pr", Head: head, Decision: decision(), Summary: "s", LedgerEntry: 7}
	if err := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master").Open(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := s.requests("PATCH " + orbRepo + "/pulls/94"); len(got) != 1 || !strings.Contains(string(got[0].Body), "head="+head.String()) {
		t.Errorf("the adopted pull request's body was not written: %v", got)
	}
	if got := s.requests("POST " + orbRepo + "/pulls"); len(got) != 1 {
		t.Errorf("%d creates", len(got))
	}
}

// TestGitHubRecordedClosedNotReopened finds the proposal's pull request
// closed (octokit.rb's recorded close response): Open neither re-opens it
// nor opens another, nor sets a status.
func TestGitHubRecordedClosedNotReopened(t *testing.T) {
	s := newReplay(t)
	_, repo, head := mirror(t, "branch-for-pr")
	closed := orb(t, "PullRequests__close_pull_request__closes_a_pull_request", 1)
	if !strings.Contains(string(closed.body), `"state":"closed"`) {
		t.Fatalf("%s is not a closed pull request", closed.source)
	}
	s.on("GET", orbRepo+"/pulls", list(closed))
	s.on("GET", orbRepo+"/pulls/102", closed)
	g := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master")
	p := forge.Proposal{Agent: "deps", RunID: "r1", Branch: "branch-for-pr", Head: head, Decision: decision()}
	for range 2 {
		if err := g.Open(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range s.reqs {
		if r.Method != "GET" {
			t.Errorf("Open of a closed proposal sent %s", r)
		}
	}
	o, err := g.Observe(context.Background(), p, branchHead(t, repo, "main"), []plumbing.Hash{head})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Closed || o.Merge != nil || o.Head != head {
		t.Errorf("observed %v, want closed at %s", seenOf(o), head)
	}
}

// Reviews as GitHub recorded them (PyGithub): jzelinskie APPROVED
// 7a0fcb27 (2017-03-22), the same review after its dismissal (DISMISSED),
// sfdye COMMENTED 2f0e4e55 (2018-03-20), Ferada APPROVED 8492120a
// (2019-07-15).
const (
	jzHead     = "7a0fcb27b7cd6c346fc3f76216ccb6e0f4ca3bcc"
	feradaHead = "8492120a51c13d713c8a9121f079de2220190ce5"
)

func jzApproved(t *testing.T) recorded  { return pyg(t, "PullRequestReview.setUp", 1) }
func jzDismissed(t *testing.T) recorded { return pyg(t, "PullRequestReview.testDismiss", 0) }
func sfdyeCommented(t *testing.T) recorded {
	return pyg(t, "PullRequestReview.setUp", 0)
}
func feradaApproved(t *testing.T) recorded {
	return pyg(t, "PullRequest1169.testReviewApproveWithoutBody", 0)
}

// reviewOf is a review built from the documented pull-request-review
// schema: no recording has a CHANGES_REQUESTED review, nor one by the
// token's own user or an App's bot.
func reviewOf(id int64, login, state, commit, submitted string) recorded {
	b, _ := json.Marshal(map[string]any{"id": id, "node_id": fmt.Sprintf("PRR_%d", id),
		"user": map[string]any{"login": login, "id": id + 7, "type": "User"}, "body": "", "state": state,
		"html_url": fmt.Sprintf("https://github.com/o/r/pull/94#pullrequestreview-%d", id), "pull_request_url": "https://api.github.com/repos/o/r/pulls/94",
		"author_association": "MEMBER", "submitted_at": submitted, "commit_id": commit})
	return documented(200, string(b))
}

// approvalsOn serves the open pull request #94 of branch-for-pr and its
// reviews, and returns the forge.
func approvalsOn(t *testing.T, reviews recorded) (*forge.GitHub, *replay, forge.Proposal) {
	t.Helper()
	s := newReplay(t)
	_, repo, head := mirror(t, "branch-for-pr")
	s.on("GET", orbRepo+"/pulls", list(orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0)))
	s.on("GET", orbRepo+"/pulls/94/reviews", reviews)
	// GET /user as PyGithub recorded it: the token is jacquev6's.
	s.on("GET", "/user", pyg(t, "SpecificExceptions.testUnknownObject", 0))
	return newGitHub(t, s, repo, "api-playground", "api-sandbox", "master"), s, forge.Proposal{Agent: "deps", RunID: "r1", Branch: "branch-for-pr", Head: head, Decision: decision()}
}

// TestGitHubRecordedApprovals counts the recorded reviews for a head: an
// allowed login's approval of the head counts (matched through forge_login
// whatever its case); a login no member has, the token's own user, an
// approval of another head, an approval dismissed or followed by a
// request for changes do not; a later comment does not void an approval.
func TestGitHubRecordedApprovals(t *testing.T) {
	spec := loginSpec(t, "jz=JZelinskie", "ferada=Ferada", "sam=sfdye", "jacques=jacquev6")
	cases := []struct {
		name    string
		reviews func(t *testing.T) recorded
		head    string
		spec    *hclspec.Spec
		want    []string // members counted
		logins  []string // approvals returned, counted or not
	}{
		{"allowed login on the head", func(t *testing.T) recorded { return list(jzApproved(t), sfdyeCommented(t), feradaApproved(t)) }, jzHead, spec, []string{"jz"}, []string{"JZelinskie"}},
		{"login outside reviewers.hcl", func(t *testing.T) recorded { return list(feradaApproved(t)) }, feradaHead, loginSpec(t, "jz=jzelinskie"), nil, []string{"Ferada"}},
		{"approval of an older head", func(t *testing.T) recorded { return list(jzApproved(t), feradaApproved(t)) }, strings.Repeat("ab", 20), spec, nil, nil},
		{"dismissed approval", func(t *testing.T) recorded { return list(jzDismissed(t)) }, jzHead, spec, nil, nil},
		{"approved then changes requested", func(t *testing.T) recorded {
			return list(jzApproved(t), reviewOf(28482099, "jzelinskie", "CHANGES_REQUESTED", jzHead, "2017-03-23T08:00:00Z"))
		}, jzHead, spec, nil, nil},
		{"changes requested then approved", func(t *testing.T) recorded {
			return list(reviewOf(28482000, "jzelinskie", "CHANGES_REQUESTED", jzHead, "2017-03-21T08:00:00Z"), jzApproved(t))
		}, jzHead, spec, []string{"jz"}, []string{"JZelinskie"}},
		{"approved then commented", func(t *testing.T) recorded {
			return list(jzApproved(t), reviewOf(28482100, "jzelinskie", "COMMENTED", jzHead, "2017-03-24T08:00:00Z"))
		}, jzHead, spec, []string{"jz"}, []string{"JZelinskie"}},
		{"the token's own user", func(t *testing.T) recorded {
			return list(reviewOf(28482101, "jacquev6", "APPROVED", jzHead, "2017-03-24T08:00:00Z"))
		}, jzHead, spec, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, _, p := approvalsOn(t, c.reviews(t))
			head := plumbing.NewHash(c.head)
			got, err := g.Approvals(context.Background(), p, forge.Observation{}, head, c.spec)
			if err != nil {
				t.Fatal(err)
			}
			var logins, members []string
			var approvers []policy.Approver
			for _, a := range got {
				logins = append(logins, a.Approver.Login)
				approvers = append(approvers, a.Approver)
				if a.Record.Method != "forge" || a.Record.Via != "review" || a.Record.Head != c.head || a.Record.Ref == "" || a.Record.Login == "" {
					t.Errorf("record %+v", a.Record)
				}
				if len(policy.Counts(c.spec, p.Decision, a.Approver)) > 0 {
					members = append(members, a.Record.Member)
				}
			}
			if fmt.Sprint(logins) != fmt.Sprint(c.logins) || fmt.Sprint(members) != fmt.Sprint(c.want) {
				t.Errorf("approvals %v counted %v, want %v counted %v (%+v)", logins, members, c.logins, c.want, got)
			}
			unmet := policy.Check(c.spec, p.Decision, approvers)
			if (len(unmet) == 0) != (len(c.want) > 0) {
				t.Errorf("policy.Check = %v with counted %v", unmet, members)
			}
			if len(got) == 1 && c.want != nil && got[0].Record.Ref != "28482091" {
				t.Errorf("review id %q, want 28482091", got[0].Record.Ref)
			}
		})
	}
}

// TestGitHubRecordedReviewsPaginated spreads the reviews over five pages
// linked by the Link headers api.github.com sent for octokit/fixtures'
// paginate-issues (verbatim): every page is read, so a request for
// changes on the last page voids the approval on the first.
func TestGitHubRecordedReviewsPaginated(t *testing.T) {
	for _, voided := range []bool{false, true} {
		t.Run(fmt.Sprintf("voided=%t", voided), func(t *testing.T) {
			last := list(reviewOf(3, "someone", "COMMENTED", jzHead, "2020-01-01T00:00:00Z"))
			if voided {
				last = list(reviewOf(4, "jzelinskie", "CHANGES_REQUESTED", jzHead, "2020-01-01T00:00:00Z"))
			}
			pages := []recorded{list(jzApproved(t)), list(sfdyeCommented(t)), list(feradaApproved(t)), documented(200, "[]"), last}
			g, s, p := approvalsOn(t, pages[0])
			s.on("GET", orbRepo+"/pulls/94/reviews", pages[0].withHeader("Link", nock(t, "paginate-issues", 14)))
			for i, page := range pages {
				s.on("GET", fmt.Sprintf("%s/pulls/94/reviews?page=%d", orbRepo, i+1), page.withHeader("Link", nock(t, "paginate-issues", 14+i)))
			}
			got, err := g.Approvals(context.Background(), p, forge.Observation{}, plumbing.NewHash(jzHead), loginSpec(t, "jz=jzelinskie"))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(s.requests("GET " + orbRepo + "/pulls/94/reviews")); n != 5 {
				t.Errorf("%d review pages read, want 5", n)
			}
			if voided != (len(got) == 0) {
				t.Errorf("voided=%t: approvals %+v", voided, got)
			}
		})
	}
}

// TestGitHubRecordedReviewsUndecodable replays octokit.rb's recorded
// review list, whose submitted_at VCR's placeholder substitution broke
// ("2016-11-29T17:59:<GITHUB_TEST_INTEGRATION>Z"): a clear error, no
// approval, no panic.
func TestGitHubRecordedReviewsUndecodable(t *testing.T) {
	g, _, p := approvalsOn(t, orb(t, "Reviews__pull_request_reviews__returns_a_list_of_all_pull_request_reviews", 0))
	got, err := g.Approvals(context.Background(), p, forge.Observation{}, plumbing.NewHash(jzHead), loginSpec(t, "jz=jzelinskie"))
	if err == nil || got != nil || !strings.Contains(err.Error(), "list the reviews of pull request #94") {
		t.Errorf("Approvals = %v, %v", got, err)
	}
}

// TestGitHubRecordedObserve observes pull requests as GitHub's webhook
// deliveries recorded them (the pull_request object is the REST one)
// against a mirror built with the git CLI.
func TestGitHubRecordedObserve(t *testing.T) {
	const cogni = "/repos/derekg1729/test-repo"
	cogniPR := func(t *testing.T, file string) recorded {
		var d struct {
			Body string `json:"body_raw_base64"`
		}
		readJSON(t, filepath.Join(ghData, "webhooks", "cogni", file), &d)
		var ev struct {
			PullRequest json.RawMessage `json:"pull_request"`
		}
		raw := mustB64(t, d.Body)
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		return recorded{source: "cogni " + file + " pull_request", status: 200, header: nil, body: ev.PullRequest}
	}
	const branch = "cogni-e2e-1759155366275" // the recorded head.ref
	setup := func(t *testing.T, pr recorded) (*forge.GitHub, *replay, *world, *gitstore.Repo, plumbing.Hash) {
		s := newReplay(t)
		w, repo, head := mirror(t, branch)
		s.on("GET", cogni+"/pulls", list(pr))
		return newGitHub(t, s, repo, "derekg1729", "test-repo", "main"), s, w, repo, head
	}
	ctx := context.Background()

	t.Run("open", func(t *testing.T) {
		g, _, _, repo, head := setup(t, cogniPR(t, "pull_request.opened.json"))
		p := forge.Proposal{Branch: branch, Head: head}
		o, err := g.Observe(ctx, p, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Head: head}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
	t.Run("branch deleted", func(t *testing.T) {
		g, _, w, repo, head := setup(t, cogniPR(t, "pull_request.opened.json"))
		w.git("push", "--quiet", "origin", "--delete", branch)
		if err := repo.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
		o, err := g.Observe(ctx, forge.Proposal{Branch: branch, Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Closed: true}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
	t.Run("merged on GitHub, not in the mirror", func(t *testing.T) {
		// Verbatim: merge_commit_sha 18cc785e is no commit of the mirror.
		g, _, _, repo, head := setup(t, cogniPR(t, "pull_request.closed.json"))
		o, err := g.Observe(ctx, forge.Proposal{Branch: branch, Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if !errors.Is(err, forge.ErrMergeNotMirrored) || o.Merge != nil || o.Closed {
			t.Errorf("Observe = %v, %v; want ErrMergeNotMirrored", seenOf(o), err)
		}
		if err != nil && !strings.Contains(err.Error(), "#315") {
			t.Errorf("error does not name the pull request: %v", err)
		}
	})
	t.Run("squash merged on GitHub", func(t *testing.T) {
		// Derived: the recorded merged pull request with head.sha and
		// merge_commit_sha replaced by the mirror's commits.
		s := newReplay(t)
		w, _, head := mirror(t, branch)
		sq := w.squashed(branch, "Squashed proposal (#315)")
		w.push("main")
		w.git("push", "--quiet", "origin", "--delete", branch) // GitHub deletes merged branches
		repo := open(t, w.bare)
		s.on("GET", cogni+"/pulls", list(cogniPR(t, "pull_request.closed.json").set(t, map[string]any{"head.sha": head.String(), "merge_commit_sha": sq.String()})))
		g := newGitHub(t, s, repo, "derekg1729", "test-repo", "main")
		o, err := g.Observe(ctx, forge.Proposal{Branch: branch, Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Merge: sq, MergedHead: head, Squash: true}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
	t.Run("merge commit", func(t *testing.T) {
		s := newReplay(t)
		w, _, head := mirror(t, branch)
		m := w.merge(branch)
		w.push("main")
		repo := open(t, w.bare)
		s.on("GET", cogni+"/pulls", list(cogniPR(t, "pull_request.closed.json").set(t, map[string]any{"head.sha": head.String(), "merge_commit_sha": m.String()})))
		g := newGitHub(t, s, repo, "derekg1729", "test-repo", "main")
		o, err := g.Observe(ctx, forge.Proposal{Branch: branch, Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Head: head, Merge: m, MergedHead: head}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
	t.Run("merged into another branch", func(t *testing.T) {
		s := newReplay(t)
		w, _, head := mirror(t, branch)
		w.branch("release", "main")
		m := w.merge(branch)
		w.push("release")
		repo := open(t, w.bare)
		s.on("GET", cogni+"/pulls", list(cogniPR(t, "pull_request.closed.json").set(t, map[string]any{"head.sha": head.String(), "merge_commit_sha": m.String(), "base.ref": "release"})))
		g := newGitHub(t, s, repo, "derekg1729", "test-repo", "main")
		o, err := g.Observe(ctx, forge.Proposal{Branch: branch, Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Head: head, Closed: true}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
	t.Run("closed unmerged", func(t *testing.T) {
		// octokit/webhooks' pull_request.closed (merged: false), verbatim.
		var ev struct {
			PullRequest json.RawMessage `json:"pull_request"`
		}
		readJSON(t, filepath.Join(ghData, "webhooks", "octokit", "pull_request.closed.payload.json"), &ev)
		s := newReplay(t)
		_, repo, head := mirror(t, "changes")
		s.on("GET", "/repos/Codertocat/Hello-World/pulls", list(recorded{source: "octokit/webhooks closed", body: ev.PullRequest}))
		g := newGitHub(t, s, repo, "Codertocat", "Hello-World", "master")
		o, err := g.Observe(ctx, forge.Proposal{Branch: "changes", Head: head}, branchHead(t, repo, "main"), []plumbing.Hash{head})
		if err != nil || seenOf(o) != (seen{Head: head, Closed: true}) {
			t.Errorf("Observe = %v, %v", seenOf(o), err)
		}
	})
}

// TestGitHubRecordedClose comments and closes the open pull request (the
// recorded close response) and deletes the branch when still at the
// proposal's head, by a compare-and-swap push; a branch a person pushed to
// since is kept.
func TestGitHubRecordedClose(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("moved=%t", moved), func(t *testing.T) {
			s := newReplay(t)
			f := newFakePulls(t, s)
			w, repo, head := mirror(t, "branch-for-pr")
			f.pr = orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0).object(t)
			if moved {
				w.checkout("branch-for-pr")
				w.commit("a person's commit")
				w.push("branch-for-pr")
				if err := repo.Fetch(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			g := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master")
			p := forge.Proposal{Agent: "deps", RunID: "r1", Branch: "branch-for-pr", Head: head}
			if err := g.Close(context.Background(), p, "superseded by 9c0d41be3f2a"); err != nil {
				t.Fatal(err)
			}
			if c := s.requests("POST " + orbRepo + "/issues/94/comments"); len(c) != 1 || !strings.Contains(string(c[0].Body), "superseded by 9c0d41be3f2a") {
				t.Errorf("comments %v", c)
			}
			if c := s.requests("PATCH " + orbRepo + "/pulls/94"); len(c) != 1 || string(c[0].Body) != `{"state":"closed"}`+"\n" {
				t.Errorf("edits %v", c)
			}
			if gone := w.remoteBranch("branch-for-pr").IsZero(); gone == moved {
				t.Errorf("moved=%t: branch deleted=%t", moved, gone)
			}
			// Closing again changes nothing on GitHub.
			if err := g.Close(context.Background(), p, "again"); err != nil {
				t.Fatal(err)
			}
			if c := s.requests("POST " + orbRepo + "/issues/94/comments"); len(c) != 1 {
				t.Errorf("%d comments after a second close", len(c))
			}
		})
	}
}

// TestGitHubRecordedErrors replays recorded failures: each gives an error
// naming the operation and what the status means, and none carries the
// token.
func TestGitHubRecordedErrors(t *testing.T) {
	cases := []struct {
		name string
		on   func(s *replay, head plumbing.Hash)
		call func(g *forge.GitHub, p forge.Proposal) error
		want []string
	}{
		{"404 repository", func(s *replay, _ plumbing.Hash) {
			s.on("GET", orbRepo+"/pulls", pyg(t, "SpecificExceptions.testUnknownObject", 1))
		}, func(g *forge.GitHub, p forge.Proposal) error { return g.Open(context.Background(), p) },
			[]string{"list the pull requests of branch-for-pr", "404", "Not Found", "check the owner"}},
		{"422 labels", func(s *replay, head plumbing.Hash) {
			s.on("GET", orbRepo+"/pulls", documented(200, "[]"))
			s.on("POST", orbRepo+"/statuses/"+head.String(), orb(t, "Statuses__create_status__creates_status", 1))
			s.on("POST", orbRepo+"/pulls", orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0))
			s.on("POST", orbRepo+"/issues/94/labels", nock(t, "errors", 1))
		}, func(g *forge.GitHub, p forge.Proposal) error { return g.Open(context.Background(), p) },
			[]string{"label pull request #94", "422", "Validation Failed", "color"}},
		{"401 bad credentials", func(s *replay, _ plumbing.Hash) {
			s.on("GET", orbRepo+"/pulls", list(orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0)))
			s.on("GET", "/user", pyg(t, "SpecificExceptions.testBadCredentials", 0))
		}, func(g *forge.GitHub, p forge.Proposal) error {
			_, err := g.Approvals(context.Background(), p, forge.Observation{}, p.Head, nil)
			return err
		}, []string{"read the token's user", "401", "Bad credentials", "refused"}},
		{"403 rate limit", func(s *replay, _ plumbing.Hash) {
			s.on("GET", orbRepo+"/pulls", pyg(t, "SpecificExceptions.testRateLimitExceeded", 1))
		}, func(g *forge.GitHub, p forge.Proposal) error { return g.Close(context.Background(), p, "x") },
			[]string{"rate limit exhausted until", "API Rate Limit Exceeded"}},
		{"403 secondary rate limit", func(s *replay, _ plumbing.Hash) {
			s.on("GET", orbRepo+"/pulls", pyg(t, "SpecificExceptions.testAuthenticatedRateLimitExceeded", 1))
		}, func(g *forge.GitHub, p forge.Proposal) error { return g.Open(context.Background(), p) },
			[]string{"secondary rate limit, retry in 1m0s", "abuse detection"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newReplay(t)
			_, repo, head := mirror(t, "branch-for-pr")
			c.on(s, head)
			g := newGitHub(t, s, repo, "api-playground", "api-sandbox", "master")
			err := c.call(g, forge.Proposal{Agent: "deps", RunID: "r1", Branch: "branch-for-pr", Head: head, Decision: decision()})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), ghToken) || strings.Contains(fmt.Sprintf("%+v", err), ghToken) {
				t.Errorf("error carries the token: %v", err)
			}
		})
	}
}

// TestGitHubRecordedRequiredChecks reads the protected branch's required
// checks: none when GitHub answers 404 "Branch not protected" (recorded);
// with contexts required, the recorded commit statuses (example/1
// failure, example/2 success) and check run (completed_check_run,
// success) decide.
func TestGitHubRecordedRequiredChecks(t *testing.T) {
	head := plumbing.NewHash("2a6c97f6f5dc9166cc2e5d0d95415a386805ca07")
	const fx = "/repos/octokit-fixture-org/branch-protection"
	t.Run("not protected", func(t *testing.T) {
		s := newReplay(t)
		_, repo, _ := mirror(t, "p")
		s.on("GET", fx+"/branches/main/protection", nock(t, "branch-protection", 3))
		g := newGitHub(t, s, repo, "octokit-fixture-org", "branch-protection", "main")
		if unmet, err := g.RequiredChecks(context.Background(), head); err != nil || unmet != nil {
			t.Errorf("RequiredChecks = %v, %v", unmet, err)
		}
	})
	t.Run("required", func(t *testing.T) {
		s := newReplay(t)
		_, repo, _ := mirror(t, "p")
		// The protection object as GitHub documents it (the recorded PUT
		// response requires only foo/bar, which no recording reports).
		s.on("GET", fx+"/branches/main/protection", documented(200, `{"url":"https://api.github.com/repos/octokit-fixture-org/branch-protection/branches/main/protection",
			"required_status_checks":{"strict":true,"contexts":["example/1","example/2","completed_check_run","ci/absent"],
			"checks":[{"context":"example/1","app_id":null},{"context":"example/2","app_id":null},{"context":"completed_check_run","app_id":85429},{"context":"ci/absent","app_id":null}]}}`))
		s.on("GET", fx+"/commits/"+head.String()+"/status", nock(t, "create-status", 5))
		run := pyg(t, "CheckRun.testCreateCheckRunCompleted", 0)
		s.on("GET", fx+"/commits/"+head.String()+"/check-runs", recorded{source: run.source, status: 200, body: []byte(`{"total_count":1,"check_runs":[` + string(run.body) + `]}`)})
		g := newGitHub(t, s, repo, "octokit-fixture-org", "branch-protection", "main")
		unmet, err := g.RequiredChecks(context.Background(), head)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{`required status check "example/1" is failure on 2a6c97f`, `required status check "ci/absent" has not run on 2a6c97f`}
		if fmt.Sprint(unmet) != fmt.Sprint(want) {
			t.Errorf("unmet = %q, want %q", unmet, want)
		}
	})
}

// TestGitHubAppInstallationToken authenticates as a GitHub App: the
// installation token is minted with an RS256 JWT the server verifies with
// the App's public key, and used for the API; the App's bot login
// (<slug>[bot]) never counts as a reviewer. No recording of the App
// endpoints exists: their responses are built from GitHub's documented
// schema.
func TestGitHubAppInstallationToken(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	s := newReplay(t)
	_, repo, head := mirror(t, "branch-for-pr")
	verifyJWT := func(r request) error {
		tok, ok := strings.CutPrefix(r.Auth, "Bearer ")
		if !ok {
			return fmt.Errorf("no bearer JWT: %q", r.Auth)
		}
		claims := jwt.RegisteredClaims{}
		_, err := jwt.ParseWithClaims(tok, &claims, func(tk *jwt.Token) (any, error) {
			if tk.Method != jwt.SigningMethodRS256 {
				return nil, fmt.Errorf("signed with %v", tk.Method.Alg())
			}
			return &key.PublicKey, nil
		})
		if err == nil && claims.Issuer != "123" {
			err = fmt.Errorf("issuer %q", claims.Issuer)
		}
		return err
	}
	minted := 0
	s.handle("POST", "/app/installations/456/access_tokens", func(r request) recorded {
		if err := verifyJWT(r); err != nil {
			t.Errorf("access token request: %v", err)
			return documented(401, `{"message":"A JSON web token could not be decoded"}`)
		}
		minted++
		return documented(201, fmt.Sprintf(`{"token":"ghs_installationTOKEN","expires_at":%q,"permissions":{"pull_requests":"write","statuses":"write"},"repository_selection":"selected"}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	})
	s.handle("GET", "/app", func(r request) recorded {
		if err := verifyJWT(r); err != nil {
			t.Errorf("GET /app: %v", err)
		}
		return documented(200, `{"id":123,"slug":"agent-reconciler","node_id":"A_1","name":"Agent Reconciler","owner":{"login":"acme","id":1,"type":"Organization"}}`)
	})
	s.on("GET", orbRepo+"/pulls", list(orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0)))
	s.on("GET", orbRepo+"/pulls/94", orb(t, "PullRequests__create_pull_request__creates_a_pull_request", 0))
	s.on("GET", orbRepo+"/pulls/94/reviews", list(reviewOf(1, "agent-reconciler[bot]", "APPROVED", head.String(), "2025-01-01T00:00:00Z"),
		reviewOf(2, "rita", "APPROVED", head.String(), "2025-01-01T00:01:00Z")))
	g, err := forge.NewGitHub(repo, forge.GitHubConfig{BaseURL: s.url(), Owner: "api-playground", Name: "api-sandbox", Base: "master",
		AppID: 123, InstallationID: 456, PrivateKeyPEM: keyPEM, Instance: "test-1"})
	if err != nil {
		t.Fatal(err)
	}
	p := forge.Proposal{Branch: "branch-for-pr", Head: head, Decision: decision()}
	got, err := g.Approvals(context.Background(), p, forge.Observation{}, head, loginSpec(t, "rita=rita", "bot=agent-reconciler[bot]"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Record.Member != "rita" {
		t.Errorf("approvals %+v, want rita's only", got)
	}
	if _, err := g.Approvals(context.Background(), p, forge.Observation{}, head, nil); err != nil {
		t.Fatal(err)
	}
	if minted != 1 {
		t.Errorf("%d installation tokens minted, want 1 (reused until it expires)", minted)
	}
	for _, r := range s.requests("GET " + orbRepo) {
		if r.Auth != "token ghs_installationTOKEN" {
			t.Errorf("%s authenticated with %q", r, r.Auth)
		}
	}
}

// TestNewGitHubRefuses checks the configuration, with errors that never
// print a credential.
func TestNewGitHubRefuses(t *testing.T) {
	_, repo, _ := mirror(t, "p")
	ok := forge.GitHubConfig{Owner: "acme", Name: "infra", Token: ghToken, Instance: "prod-1"}
	cases := []struct {
		name string
		edit func(c *forge.GitHubConfig)
		want string
	}{
		{"owner", func(c *forge.GitHubConfig) { c.Owner = "acme/../x" }, "owner"},
		{"name", func(c *forge.GitHubConfig) { c.Name = ".." }, "repository name"},
		{"no instance", func(c *forge.GitHubConfig) { c.Instance = "" }, "instance"},
		{"no credentials", func(c *forge.GitHubConfig) { c.Token = "" }, "no credentials"},
		{"token and app", func(c *forge.GitHubConfig) { c.AppID = 1 }, "both a token and a GitHub App"},
		{"incomplete app", func(c *forge.GitHubConfig) { c.Token, c.AppID = "", 1 }, "installation id and private key"},
		{"bad key", func(c *forge.GitHubConfig) {
			c.Token, c.AppID, c.InstallationID, c.PrivateKeyPEM = "", 1, 2, []byte("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
		}, "private key does not load"},
		{"token with newline", func(c *forge.GitHubConfig) { c.Token += "\n" }, "white space"},
		{"credentials in URL", func(c *forge.GitHubConfig) { c.BaseURL = "https://x:" + ghToken + "@github.example.com/api/v3" }, "must not carry credentials"},
		{"base", func(c *forge.GitHubConfig) { c.Base = "main..x" }, "base branch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.edit(&cfg)
			_, err := forge.NewGitHub(repo, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewGitHub = %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), ghToken) || strings.Contains(err.Error(), "not a key") {
				t.Errorf("error carries a secret: %v", err)
			}
		})
	}
	if _, err := forge.NewGitHub(nil, ok); err == nil {
		t.Error("no error without a mirror")
	}
	if _, err := forge.NewGitHub(repo, ok); err != nil {
		t.Errorf("valid configuration refused: %v", err)
	}
	var buf bytes.Buffer
	cfg := ok
	cfg.PrivateKeyPEM = []byte("PRIVATE KEY BYTES")
	slog.New(slog.NewTextHandler(&buf, nil)).Info("configured", "forge", cfg)
	for _, printed := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), buf.String()} {
		if strings.Contains(printed, ghToken) || strings.Contains(printed, "KEY BYTES") || !strings.Contains(printed, "<secret>") {
			t.Errorf("printed configuration: %s", printed)
		}
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
