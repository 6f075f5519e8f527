package forge_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/giteatest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// These tests run against a real Gitea (internal/giteatest), with real
// pushes by the git CLI and real reviews, merges and closes by Gitea users
// through its API. They skip when the Gitea binary is not built (.ci/gitea)
// and fail then under CI=true.

// gworld is a Gitea repository whose main holds one commit, a working copy
// of it, and the reconciler's mirror.
type gworld struct {
	t      *testing.T
	s      *giteatest.Server
	r      *giteatest.Repo
	work   string
	mirror *gitstore.Repo
}

func newGWorld(t *testing.T) *gworld {
	t.Helper()
	s := giteatest.Start(t)
	r := s.CreateRepo(s.Bot, "desired")
	for _, l := range []string{giteatest.RitaLogin, giteatest.SamLogin, giteatest.OutsiderLogin} {
		r.AddCollaborator(l, "write")
	}
	w := &gworld{t: t, s: s, r: r, work: t.TempDir()}
	w.git("init", "--quiet", "--initial-branch=main")
	w.write("app.yaml", "replicas: 1\n")
	w.git("add", "-A")
	w.git("commit", "--quiet", "-m", "initial")
	r.Push(s.Bot, w.work, "main")
	w.mirror = open(t, r.CloneURL(s.Bot))
	return w
}

func (w *gworld) git(args ...string) string { w.t.Helper(); return w.r.Git(w.work, args...) }

func (w *gworld) write(name, content string) {
	w.t.Helper()
	if err := os.WriteFile(filepath.Join(w.work, name), []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// propose commits a change on a new proposal branch of agent "bumper" and
// run, pushes it as the bot, fetches the mirror and returns the proposal
// decided at its head.
func (w *gworld) propose(run string) forge.Proposal {
	w.t.Helper()
	branch := "agents/bumper/" + run
	w.git("checkout", "--quiet", "-B", branch, "main")
	w.write("app.yaml", "replicas: "+run+"\n")
	w.git("commit", "--quiet", "-am", "bump replicas\n\nAgent-Run: "+run)
	w.r.Push(w.s.Bot, w.work, branch)
	w.fetch()
	return forge.Proposal{Agent: "bumper", RunID: run, Branch: branch, Head: w.head(branch),
		Decision: needsSRE(), Summary: "Bump replicas to " + run, Body: "Load grew 40% this week.", Risk: "low: one deployment",
		LedgerEntry: 42}
}

// pushAs commits change on branch as a person and pushes it.
func (w *gworld) pushAs(u giteatest.User, branch, file, content string) plumbing.Hash {
	w.t.Helper()
	w.git("checkout", "--quiet", branch)
	w.write(file, content)
	w.git("add", "-A")
	w.git("commit", "--quiet", "-m", "fix by "+u.Login)
	w.r.Push(u, w.work, branch)
	w.fetch()
	return w.head(branch)
}

func (w *gworld) head(branch string) plumbing.Hash {
	w.t.Helper()
	return plumbing.NewHash(w.git("rev-parse", branch))
}

func (w *gworld) fetch() {
	w.t.Helper()
	if err := w.mirror.Fetch(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

func (w *gworld) protected() plumbing.Hash {
	w.t.Helper()
	w.fetch()
	return branchHead(w.t, w.mirror, "main")
}

func (w *gworld) forge(instance string) *forge.Gitea {
	w.t.Helper()
	g, err := forge.NewGitea(w.mirror, forge.GiteaConfig{BaseURL: w.s.URL, Owner: w.r.Owner, Name: w.r.Name,
		Token: w.s.Bot.Token, Instance: instance, Labels: []string{"automerge-never"}})
	if err != nil {
		w.t.Fatal(err)
	}
	return g
}

// pull returns the only pull request of branch, failing when there are
// none or several.
func (w *gworld) pull(branch string) giteatest.PullRequest {
	w.t.Helper()
	var found []giteatest.PullRequest
	for _, pr := range w.r.PullRequests() {
		if pr.Head.Ref == branch {
			found = append(found, pr)
		}
	}
	if len(found) != 1 {
		w.t.Fatalf("%d pull requests of %s, want 1: %+v", len(found), branch, found)
	}
	return found[0]
}

func needsSRE() policy.Decision {
	return policy.Decision{Outcome: policy.RequireApproval, Summary: "needs 1 of sre (protect-prod/replicas)",
		Rules: []policy.Rule{{Policy: "protect-prod", Rule: "replicas", Kind: policy.KindApproval, Enforcement: "hard",
			Blocking: true, Message: "replica changes need an SRE", Reviewers: []string{"sre"}, Min: 1, Pos: "policies/prod.hcl:4:3"}},
		Requirements: []policy.Requirement{{Groups: []string{"sre"}, Min: 1}}, PolicyDigest: "sha256:abc"}
}

// giteaReviewers is reviewers.hcl with rita and sam in sre by forge login,
// and extra members as name=login.
func giteaReviewers(t *testing.T, extra ...string) *hclspec.Spec {
	t.Helper()
	var b strings.Builder
	b.WriteString("group \"sre\" {\n")
	members := append([]string{"rita=rita", "sam=Sam"}, extra...)
	for _, m := range members {
		name, login, _ := strings.Cut(m, "=")
		fmt.Fprintf(&b, "  member %q {\n    email       = %q\n    forge_login = %q\n  }\n", name, name+"@example.com", login)
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

// logins are the forge logins of approvals.
func logins(as []forge.Approval) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Approver.Login)
	}
	return out
}

func TestGiteaOpen(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	g := w.forge("eu-1")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	// Again, and from a new process that remembers nothing (a restart).
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := w.forge("eu-1").Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	pr := w.pull(p.Branch)
	if pr.State != "open" || pr.Base.Ref != "main" || pr.Title != "Bump replicas to run1" || pr.User.Login != giteatest.BotLogin {
		t.Errorf("pull request: state %q base %q title %q by %q", pr.State, pr.Base.Ref, pr.Title, pr.User.Login)
	}
	var labels []string
	for _, l := range pr.Labels {
		labels = append(labels, l.Name)
	}
	slices.Sort(labels)
	if want := []string{"agent-proposal", "agent:bumper", "automerge-never"}; !slices.Equal(labels, want) {
		t.Errorf("labels %v, want %v", labels, want)
	}
	for _, want := range []string{
		"**Bump replicas to run1**", "Load grew 40% this week.", "**Risk:** low: one deployment",
		"**require_approval**: needs 1 of sre (protect-prod/replicas)",
		"`protect-prod/replicas` (require_approval, hard, blocking): replica changes need an SRE at `policies/prod.hcl:4:3`",
		"Needs approving reviews: 1 of sre. Only reviews of `" + p.Head.String() + "`",
		"- Head: `" + p.Head.String() + "`", "- Ledger entry: 42",
		"reconciler ledger show 42 --repo " + w.r.PublicURL(),
		"reconciler ledger verify --repo " + w.r.PublicURL(),
	} {
		if !strings.Contains(pr.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, pr.Body)
		}
	}
	if strings.Contains(pr.Body, w.s.Bot.Token) {
		t.Error("the body holds the token")
	}
	sts := w.r.Statuses(p.Head.String())
	if len(sts) != 1 || sts[0].Context != "reconciler/eu-1" || sts[0].State != "pending" || sts[0].Description != "needs 1 of sre" || sts[0].TargetURL != pr.HTMLURL {
		t.Errorf("statuses of the head after three opens: %+v", sts)
	}
}

func TestGiteaOpenDenied(t *testing.T) {
	w := newGWorld(t)
	p := w.propose("run1")
	p.Decision = policy.Decision{Outcome: policy.Deny, Summary: "denied by builtin/protected-paths",
		Rules: []policy.Rule{{Policy: "builtin", Rule: "protected-paths", Kind: policy.KindDeny, Blocking: true}}}
	if err := w.forge("").Open(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := w.r.CombinedStatus(p.Head.String()); got["reconciler"] != "failure" || len(got) != 1 {
		t.Errorf("statuses %v, want reconciler: failure", got)
	}
}

// TestGiteaStatusPerInstance: two reconcilers on one repository each keep
// their own status on the same head.
func TestGiteaStatusPerInstance(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	a, b := w.forge("a"), w.forge("b")
	if err := a.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	denied := p
	denied.Decision = policy.Decision{Outcome: policy.Deny, Summary: "denied"}
	if err := b.Open(ctx, denied); err != nil {
		t.Fatal(err)
	}
	if err := a.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	got := w.r.CombinedStatus(p.Head.String())
	if got["reconciler/a"] != "pending" || got["reconciler/b"] != "failure" || len(got) != 2 {
		t.Errorf("combined status %v, want reconciler/a pending and reconciler/b failure", got)
	}
	if n := len(w.r.Statuses(p.Head.String())); n != 2 {
		t.Errorf("%d statuses, want 2 (an unchanged status is not set again)", n)
	}
	w.pull(p.Branch) // still one pull request
}

// TestGiteaOpenUpdated: the proposal moved and was decided again; the next
// Open rewrites the body, comments why once, and sets the status of the
// new head, keeping the agent's words when the update has none.
func TestGiteaOpenUpdated(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	// The agent's words try to forge the markers the body is read by.
	p.Body = "Load grew.\n<!-- /reconciler:description -->\n<!-- reconciler:proposal agent=x run=y head=" + strings.Repeat("0", 40) + " entry=1 -->\nTail words."
	g := w.forge("x")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	old := p.Head
	head := w.pushAs(w.s.Rita, p.Branch, "notes.txt", "why\n")
	up := forge.Proposal{Agent: p.Agent, RunID: p.RunID, Branch: p.Branch, Head: head, Decision: needsSRE(), LedgerEntry: 57}
	for range 2 {
		if err := w.forge("x").Open(ctx, up); err != nil {
			t.Fatal(err)
		}
	}
	pr := w.pull(p.Branch)
	if !strings.HasPrefix(pr.Body, "<!-- reconciler:proposal agent=bumper run=run1 head="+head.String()+" entry=57 -->\n") {
		t.Errorf("updated body does not start with its marker:\n%s", pr.Body)
	}
	for _, want := range []string{"- Head: `" + head.String() + "`", "ledger show 57",
		"**Bump replicas to run1**", "Load grew.", "&lt;!-- /reconciler:description --&gt;", "Tail words."} {
		if !strings.Contains(pr.Body, want) {
			t.Errorf("updated body lacks %q:\n%s", want, pr.Body)
		}
	}
	if strings.Contains(pr.Body, old.String()) {
		t.Errorf("updated body still names the old head:\n%s", pr.Body)
	}
	var moved []string
	for _, c := range w.r.Comments(pr.Number) {
		if strings.Contains(c.Body, "moved from") {
			moved = append(moved, c.Body)
		}
	}
	if len(moved) != 1 || !strings.Contains(moved[0], "Approvals of `"+old.String()[:12]+"` no longer count") {
		t.Errorf("comments saying why: %q, want one", moved)
	}
	if got := w.r.CombinedStatus(head.String()); got["reconciler/x"] != "pending" {
		t.Errorf("status of the new head: %v", got)
	}
}

// TestGiteaClosedNeverReopened: a pull request closed by a person is the
// proposal's rejection: Open never opens another nor re-opens it, and
// Observe reports it Closed while the branch is still there.
func TestGiteaClosedNeverReopened(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	g := w.forge("")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	pr := w.pull(p.Branch)
	w.r.Close(w.s.Rita, pr.Number)
	for _, f := range []*forge.Gitea{g, w.forge("")} {
		if err := f.Open(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.pull(p.Branch); got.State != "closed" || got.Merged {
		t.Fatalf("after Open of a closed pull request: state %q merged %v", got.State, got.Merged)
	}
	o, err := w.forge("").Observe(ctx, p, w.protected(), []plumbing.Hash{p.Head})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Closed || o.Merge != nil || o.Head != p.Head {
		t.Errorf("observed %+v, want closed with the branch at its head", seenOf(o))
	}
}

// TestGiteaBranchDeleted: a person deletes the branch of an open pull
// request: Closed, head zero.
func TestGiteaBranchDeleted(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	g := w.forge("")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	w.r.DeleteBranch(w.s.Sam, p.Branch)
	o, err := g.Observe(ctx, p, w.protected(), []plumbing.Hash{p.Head})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Closed || o.Merge != nil || !o.Head.IsZero() {
		t.Errorf("observed %+v, want closed, head zero", seenOf(o))
	}
}

// TestGiteaObserveOpen: an open pull request reports the mirror's head of
// the branch, also after a person pushed to it.
func TestGiteaObserveOpen(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	g := w.forge("")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	o, err := g.Observe(ctx, p, w.protected(), []plumbing.Hash{p.Head})
	if err != nil {
		t.Fatal(err)
	}
	if (seenOf(o) != seen{Head: p.Head}) {
		t.Errorf("observed %+v, want open at %s", seenOf(o), p.Head)
	}
	moved := w.pushAs(w.s.Sam, p.Branch, "extra.txt", "x\n")
	o, err = g.Observe(ctx, p, w.protected(), []plumbing.Hash{p.Head})
	if err != nil {
		t.Fatal(err)
	}
	if (seenOf(o) != seen{Head: moved}) {
		t.Errorf("observed %+v after a push, want open at %s", seenOf(o), moved)
	}
}

// TestGiteaApprovals: only approving reviews of the decided head by the
// reviewers.hcl members matched by forge_login count; a login outside the
// groups satisfies nothing; the reconciler's own account, reviews of an
// older head, dismissed reviews and approvals withdrawn by a later request
// for changes never count.
func TestGiteaApprovals(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	// A person opens the pull request first, so that the reconciler's
	// account is not its poster and Gitea lets it approve: the forge must
	// drop that approval itself. Open adopts the pull request.
	hank := w.s.CreateUser("hank")
	w.r.AddCollaborator(hank.Login, "write")
	sams := w.r.OpenPull(hank, p.Branch, "main", "opened by hand")
	g := w.forge("")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	got := w.pull(p.Branch)
	if got.Number != sams.Number {
		t.Fatalf("Open made pull request #%d beside #%d", got.Number, sams.Number)
	}
	if len(got.Labels) != 3 || !strings.Contains(got.Body, "- Ledger entry: 42") {
		t.Errorf("the adopted pull request has labels %v and body:\n%s", got.Labels, got.Body)
	}
	// reviewers.hcl even names the bot: its own approval still never counts.
	spec := giteaReviewers(t, "bot="+giteatest.BotLogin)
	head := p.Head.String()
	w.r.Review(w.s.Bot, sams.Number, "APPROVED", head, "")
	w.r.Review(w.s.Outsider, sams.Number, "APPROVED", head, "")
	ritaID := w.r.Review(w.s.Rita, sams.Number, "APPROVED", head, "lgtm")
	w.r.Review(w.s.Sam, sams.Number, "COMMENT", head, "looking")

	as, err := g.Approvals(ctx, p, forge.Observation{Head: p.Head}, p.Head, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := logins(as); !slices.Equal(got, []string{giteatest.OutsiderLogin, "rita"}) {
		t.Fatalf("approvals by %v, want outsider and rita", got)
	}
	rita := as[1]
	wantRec := ledger.Approval{Method: ledger.ApprovalForge, Via: "review", Ref: fmt.Sprint(ritaID), Member: "rita", Login: "rita", Head: head}
	if !equalApproval(rita.Record, wantRec) || rita.Reviewer != "rita (rita)" || rita.Subject != p.Head {
		t.Errorf("rita's approval %+v, want record %+v, reviewer \"rita (rita)\"", rita, wantRec)
	}
	d := needsSRE()
	if c := policy.Counts(spec, d, as[0].Approver); len(c) != 0 {
		t.Errorf("the outsider's approval counts for %v", c)
	}
	if unmet := policy.Check(spec, d, []policy.Approver{as[0].Approver}); len(unmet) == 0 {
		t.Error("the outsider's approval alone satisfies the decision")
	}
	if unmet := policy.Check(spec, d, []policy.Approver{rita.Approver}); len(unmet) != 0 {
		t.Errorf("rita's approval leaves %v unmet", unmet)
	}

	// Sam's login is "Sam" in reviewers.hcl: Gitea's logins ignore case.
	w.r.Review(w.s.Sam, sams.Number, "APPROVED", head, "")
	as, err = g.Approvals(ctx, p, forge.Observation{Head: p.Head}, p.Head, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := logins(as); !slices.Equal(got, []string{giteatest.OutsiderLogin, "rita", "Sam"}) {
		t.Fatalf("approvals by %v, want outsider, rita, Sam", got)
	}

	// Rita withdraws hers; the administrator dismisses Sam's.
	w.r.Review(w.s.Rita, sams.Number, "REQUEST_CHANGES", head, "wait")
	samID := reviewID(t, w, sams.Number, giteatest.SamLogin, "APPROVED")
	w.r.DismissReview(sams.Number, samID, "not now")
	as, err = g.Approvals(ctx, p, forge.Observation{Head: p.Head}, p.Head, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := logins(as); !slices.Equal(got, []string{giteatest.OutsiderLogin}) {
		t.Fatalf("approvals by %v after rita's request for changes and sam's dismissal, want the outsider's alone", got)
	}

	// Rita approves again, then someone pushes: her approval is of the old
	// head and never counts for the new one.
	w.r.Review(w.s.Rita, sams.Number, "APPROVED", head, "")
	moved := w.pushAs(w.s.Outsider, p.Branch, "sneaky.txt", "x\n")
	as, err = g.Approvals(ctx, p, forge.Observation{Head: moved}, moved, spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 0 {
		t.Fatalf("approvals of the new head %s: %v, want none", moved, logins(as))
	}
}

func equalApproval(a, b ledger.Approval) bool {
	return a.Method == b.Method && a.Via == b.Via && a.Ref == b.Ref && a.Member == b.Member && a.Login == b.Login &&
		a.Head == b.Head && a.Email == b.Email && a.Fingerprint == b.Fingerprint && len(a.Satisfies) == 0
}

// reviewID finds the id of login's latest review in state of pull
// request n through the API.
func reviewID(t *testing.T, w *gworld, n int64, login, state string) int64 {
	t.Helper()
	var rs []struct {
		ID    int64  `json:"id"`
		State string `json:"state"`
		User  struct {
			Login string `json:"login"`
		} `json:"user"`
	}
	w.s.API(w.s.Admin, "GET", fmt.Sprintf("%s/pulls/%d/reviews", w.r.Path(), n), nil, &rs)
	var id int64
	for _, r := range rs {
		if r.User.Login == login && r.State == state && r.ID > id {
			id = r.ID
		}
	}
	if id == 0 {
		t.Fatalf("no %s review by %s on #%d", state, login, n)
	}
	return id
}

// TestGiteaMerged: merges through Gitea's API, with and without approvals
// and by each style, are observed from the mirror; the loop judges them.
func TestGiteaMerged(t *testing.T) {
	for _, tc := range []struct {
		style   string
		approve bool
	}{
		{"merge", true},
		{"merge", false},
		{"squash", true},
		{"rebase-merge", true},
	} {
		t.Run(fmt.Sprintf("%s/approved=%v", tc.style, tc.approve), func(t *testing.T) {
			w := newGWorld(t)
			ctx := context.Background()
			p := w.propose("run1")
			// main moves, so that every style makes new commits.
			w.git("checkout", "--quiet", "main")
			w.write("other.txt", "x\n")
			w.git("add", "-A")
			w.git("commit", "--quiet", "-m", "unrelated")
			w.r.Push(w.s.Sam, w.work, "main")
			g := w.forge("")
			if err := g.Open(ctx, p); err != nil {
				t.Fatal(err)
			}
			pr := w.pull(p.Branch)
			if tc.approve {
				w.r.Review(w.s.Rita, pr.Number, "APPROVED", p.Head.String(), "")
			}
			w.r.Merge(w.s.Sam, pr.Number, tc.style)
			merged := w.r.Pull(pr.Number)
			main := w.protected()
			if merged.MergeSHA == nil || *merged.MergeSHA != main.String() {
				t.Fatalf("gitea merged at %v, main is at %s", merged.MergeSHA, main)
			}
			o, err := g.Observe(ctx, p, main, []plumbing.Hash{p.Head})
			if err != nil {
				t.Fatal(err)
			}
			got := seenOf(o)
			want := seen{Head: p.Head, Merge: main}
			switch tc.style {
			case "merge":
				want.MergedHead = p.Head
			default:
				want.Squash = true
			}
			if got != want {
				t.Fatalf("observed %+v, want %+v", got, want)
			}
			if o.Merge.Committer.Email != w.s.Sam.Email && tc.style == "merge" {
				t.Errorf("merge committed by %s, want sam's email %s", o.Merge.Committer.Email, w.s.Sam.Email)
			}
			as, err := g.Approvals(ctx, p, o, p.Head, giteaReviewers(t))
			if err != nil {
				t.Fatal(err)
			}
			want1 := []string(nil)
			if tc.approve {
				want1 = []string{"rita"}
			}
			if !slices.Equal(logins(as), want1) {
				t.Errorf("approvals %v, want %v", logins(as), want1)
			}
		})
	}
}

// TestGiteaMergedNotFetched: a merge the mirror has not fetched yet is
// fetched, and one the protected branch the loop saw does not contain is
// an error for this pass, never a rejection or an update.
func TestGiteaMergedNotFetched(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	p := w.propose("run1")
	g := w.forge("")
	if err := g.Open(ctx, p); err != nil {
		t.Fatal(err)
	}
	before := w.protected()
	pr := w.pull(p.Branch)
	w.r.Merge(w.s.Sam, pr.Number, "squash")
	w.r.DeleteBranch(w.s.Sam, p.Branch)
	_, err := g.Observe(ctx, p, before, []plumbing.Hash{p.Head})
	if err == nil || !strings.Contains(err.Error(), "does not contain") {
		t.Fatalf("Observe against the old protected head: %v, want an error", err)
	}
	o, err := g.Observe(ctx, p, branchHead(t, w.mirror, "main"), []plumbing.Hash{p.Head})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Squash || o.Merge == nil || o.Closed {
		t.Errorf("observed %+v, want the squash merge", seenOf(o))
	}
}

// TestGiteaClose: a superseded proposal's pull request is commented with a
// link to the new one and closed; its branch is deleted only while it is
// at the proposal's head.
func TestGiteaClose(t *testing.T) {
	w := newGWorld(t)
	ctx := context.Background()
	old := w.propose("run1")
	w.git("checkout", "--quiet", "main")
	next := w.propose("run2")
	g := w.forge("")
	for _, p := range []forge.Proposal{old, next} {
		if err := g.Open(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pr, np := w.pull(old.Branch), w.pull(next.Branch)
	for range 2 {
		if err := g.Close(ctx, old, "superseded by run2"); err != nil {
			t.Fatal(err)
		}
	}
	pr = w.r.Pull(pr.Number)
	if pr.State != "closed" || pr.Merged {
		t.Errorf("superseded pull request: state %q merged %v", pr.State, pr.Merged)
	}
	var closing []string
	for _, c := range w.r.Comments(pr.Number) {
		if strings.Contains(c.Body, "Closed by the reconciler") {
			closing = append(closing, c.Body)
		}
	}
	if len(closing) != 1 || !strings.Contains(closing[0], fmt.Sprintf("superseded by #%d (%s)", np.Number, np.HTMLURL)) {
		t.Errorf("closing comments %q, want one linking #%d", closing, np.Number)
	}
	if h := w.r.BranchHead(old.Branch); h != "" {
		t.Errorf("superseded branch still at %s", h)
	}

	// A person pushed to the next one: closing it keeps the branch.
	moved := w.pushAs(w.s.Rita, next.Branch, "mine.txt", "mine\n")
	if err := g.Close(ctx, next, "superseded"); err != nil {
		t.Fatal(err)
	}
	if h := w.r.BranchHead(next.Branch); h != moved.String() {
		t.Errorf("a branch a person pushed to is at %q after close, want %s", h, moved)
	}
	if got := w.r.Pull(np.Number); got.State != "closed" {
		t.Errorf("pull request #%d is %s after close", np.Number, got.State)
	}
}

func TestNewGiteaErrors(t *testing.T) {
	repo := open(t, gittest.NewBare(t, t.TempDir()))
	for _, tc := range []struct {
		cfg  forge.GiteaConfig
		want string
	}{
		{forge.GiteaConfig{}, "missing base URL, repository owner/name, token"},
		{forge.GiteaConfig{BaseURL: "ftp://x", Owner: "o", Name: "n", Token: "t"}, `base URL "ftp://x"`},
		{forge.GiteaConfig{BaseURL: "https://u:p@x", Owner: "o", Name: "n", Token: "t"}, "carries credentials"},
		{forge.GiteaConfig{BaseURL: "https://x", Owner: "o", Name: "n", Token: "t", Labels: []string{"a,b"}}, `label "a,b"`},
	} {
		_, err := forge.NewGitea(repo, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewGitea(%v) = %v, want %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "u:p") {
			t.Errorf("error shows the credentials: %v", err)
		}
	}
	cfg := forge.GiteaConfig{BaseURL: "https://x", Owner: "o", Name: "n", Token: "s3cret-token"}
	if s := fmt.Sprint(cfg) + fmt.Sprintf("%v %+v", cfg, cfg); strings.Contains(s, "s3cret") {
		t.Errorf("the config prints its token: %s", s)
	}
}
