package forge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// TestMain makes the git processes go-git's file transport starts
// (git-upload-pack, git-receive-pack) as hermetic as the ones gittest runs.
func TestMain(m *testing.M) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	os.Exit(m.Run())
}

// transports serve a bare repository to the code under test.
var transports = []struct {
	name string
	url  func(t *testing.T, bare string) string
}{
	{"local", func(t *testing.T, bare string) string { return bare }},
	{"http", func(t *testing.T, bare string) string { return gittest.ServeHTTP(t, bare) }},
}

// world is a bare repository, the remote the forge reads, and a working
// clone of it where people commit, merge, sign and push with the git CLI.
type world struct {
	t          *testing.T
	bare, work string
}

// newWorld returns a bare repository whose main holds one commit, and a
// clone of it with main checked out.
func newWorld(t *testing.T) *world {
	t.Helper()
	bare := gittest.NewBare(t, t.TempDir())
	return &world{t: t, bare: bare, work: gittest.Clone(t, bare)}
}

// git runs git in the clone as gittest's identity.
func (w *world) git(args ...string) string {
	w.t.Helper()
	return gittest.Git(w.t, w.work, args...)
}

// gitAs runs git in the clone as name <email>.
func (w *world) gitAs(name, email string, args ...string) string {
	w.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = w.work
	cmd.Env = gittest.Env(name, email)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit commits a new file named after msg's first line on the
// checked-out branch, with message msg (one paragraph per element), and
// returns the commit.
func (w *world) commit(msg ...string) plumbing.Hash {
	w.t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, msg[0])
	if err := os.WriteFile(filepath.Join(w.work, name), []byte(msg[0]+"\n"), 0o644); err != nil {
		w.t.Fatal(err)
	}
	w.git("add", name)
	args := []string{"commit", "--quiet"}
	for _, m := range msg {
		args = append(args, "-m", m)
	}
	w.git(args...)
	return w.rev("HEAD")
}

// branch creates branch name at from and checks it out.
func (w *world) branch(name, from string) {
	w.t.Helper()
	w.git("checkout", "--quiet", "-b", name, from)
}

func (w *world) checkout(name string) { w.t.Helper(); w.git("checkout", "--quiet", name) }

// merge merges rev into the checked-out branch with a merge commit and
// returns it.
func (w *world) merge(rev string) plumbing.Hash {
	w.t.Helper()
	w.git("merge", "--quiet", "--no-ff", "-m", "Merge "+rev, rev)
	return w.rev("HEAD")
}

func (w *world) rev(rev string) plumbing.Hash {
	w.t.Helper()
	return plumbing.NewHash(w.git("rev-parse", rev))
}

// push pushes refspecs to the bare repository, forcing.
func (w *world) push(refspecs ...string) {
	w.t.Helper()
	w.git(append([]string{"push", "--quiet", "--force", "origin"}, refspecs...)...)
}

// remoteBranch returns branch of the bare repository as git ls-remote
// lists it, ZeroHash if absent.
func (w *world) remoteBranch(branch string) plumbing.Hash {
	w.t.Helper()
	out := gittest.Git(w.t, "", "ls-remote", w.bare, "refs/heads/"+branch)
	if out == "" {
		return plumbing.ZeroHash
	}
	return plumbing.NewHash(strings.Fields(out)[0])
}

// open mirrors the bare repository in memory through url.
func open(t *testing.T, url string) *gitstore.Repo {
	t.Helper()
	r, err := gitstore.Open(context.Background(), url, gitstore.Options{})
	if err != nil {
		t.Fatalf("open %q: %v", url, err)
	}
	return r
}

func branchHead(t *testing.T, r *gitstore.Repo, name string) plumbing.Hash {
	t.Helper()
	h, err := r.Branch(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// proposal is run's proposal by agent "a", decided at head.
func proposal(run string, head plumbing.Hash) forge.Proposal {
	return forge.Proposal{Agent: "a", RunID: run, Branch: "agents/a/" + run, Head: head}
}

// seen is an Observation with its merge as a hash, to compare with ==.
type seen struct {
	Head, Merge, MergedHead     plumbing.Hash
	Squash, FastForward, Closed bool
}

func seenOf(o forge.Observation) seen {
	s := seen{Head: o.Head, MergedHead: o.MergedHead, Squash: o.Squash, FastForward: o.FastForward, Closed: o.Closed}
	if o.Merge != nil {
		s.Merge = o.Merge.Hash
	}
	return s
}

func (s seen) String() string {
	short := func(h plumbing.Hash) string {
		if h.IsZero() {
			return "-"
		}
		return h.String()[:8]
	}
	return fmt.Sprintf("{Head:%s Merge:%s MergedHead:%s Squash:%t FastForward:%t Closed:%t}",
		short(s.Head), short(s.Merge), short(s.MergedHead), s.Squash, s.FastForward, s.Closed)
}

// squashed squashes branch into main with a commit whose message is
// paragraphs, and returns it.
func (w *world) squashed(branch string, paragraphs ...string) plumbing.Hash {
	w.t.Helper()
	w.checkout("main")
	w.git("merge", "--quiet", "--squash", branch)
	args := []string{"commit", "--quiet"}
	for _, p := range paragraphs {
		args = append(args, "-m", p)
	}
	w.git(args...)
	return w.rev("HEAD")
}

// squashCase is a proposal squashed into main with a commit of message
// paragraphs; merged says whether that is its merge.
func squashCase(merged bool, paragraphs ...string) func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
	return func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
		w.branch("agents/a/r1", "main")
		h := w.commit("proposal")
		sq := w.squashed("agents/a/r1", paragraphs...)
		w.push("main", "agents/a/r1")
		if !merged {
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h}
		}
		return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h, Merge: sq, Squash: true}
	}
}

// TestObserve builds each history with the git CLI and observes the
// proposal agents/a/r1 at main, through a local path and smart HTTP.
func TestObserve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// build makes the history and returns the proposal, the heads
		// decided on (oldest first) and what Observe must see.
		build func(w *world) (forge.Proposal, []plumbing.Hash, seen)
	}{
		{"open, not merged", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.checkout("main")
			w.commit("unrelated")
			w.push("main", "agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h}
		}},
		{"branch deleted without merge", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.push("agents/a/r1")
			w.checkout("main")
			w.commit("unrelated")
			w.push("main", ":agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Closed: true}
		}},
		{"merged with --no-ff", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.checkout("main")
			w.commit("unrelated")
			m := w.merge("agents/a/r1")
			w.commit("after")
			w.push("main", "agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h, Merge: m, MergedHead: h}
		}},
		{"merged with --no-ff, then the branch deleted", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.push("agents/a/r1")
			w.checkout("main")
			m := w.merge("agents/a/r1")
			w.push("main", ":agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Merge: m, MergedHead: h}
		}},
		{"fast-forward of main to the head", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.checkout("main")
			w.git("merge", "--quiet", "--ff-only", "agents/a/r1")
			w.commit("after")
			w.push("main", "agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h, Merge: h, MergedHead: h, FastForward: true}
		}},
		{"fast-forward past the decided head, branch deleted", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			// A fast-forward leaves no record of where it stopped: the
			// decided head is on main's first-parent chain, so that is
			// what is reported (the loop cannot tell H2 came along).
			w.branch("agents/a/r1", "main")
			h1 := w.commit("decided")
			w.commit("pushed by a person")
			w.push("agents/a/r1")
			w.checkout("main")
			w.git("merge", "--quiet", "--ff-only", "agents/a/r1")
			w.push("main", ":agents/a/r1")
			return proposal("r1", h1), []plumbing.Hash{h1}, seen{Merge: h1, MergedHead: h1, FastForward: true}
		}},
		{"moved by a person to H2, H2 merged, branch deleted", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h1 := w.commit("decided")
			w.push("agents/a/r1")
			h2 := w.commit("pushed by a person")
			w.checkout("main")
			m := w.merge("agents/a/r1")
			w.push("main", ":agents/a/r1")
			return proposal("r1", h1), []plumbing.Hash{h1}, seen{Merge: m, MergedHead: h2}
		}},
		{"H1 merged after the branch moved to H2", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h1 := w.commit("decided")
			h2 := w.commit("pushed by a person")
			w.checkout("main")
			m := w.merge(h1.String())
			w.push("main", "agents/a/r1")
			return proposal("r1", h1), []plumbing.Hash{h1}, seen{Head: h2, Merge: m, MergedHead: h1}
		}},
		{"H1 then H2 decided, H1 merged", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h1 := w.commit("first")
			h2 := w.commit("second")
			w.checkout("main")
			m := w.merge(h1.String())
			w.push("main", "agents/a/r1")
			return proposal("r1", h2), []plumbing.Hash{h1, h2}, seen{Head: h2, Merge: m, MergedHead: h1}
		}},
		{"merged into staging, staging merged into main", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.branch("staging", "main")
			w.commit("staged before")
			w.merge("agents/a/r1")
			tip := w.commit("staged after")
			w.checkout("main")
			w.commit("unrelated")
			m := w.merge("staging")
			w.push("main", "staging", "agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h, Merge: m, MergedHead: tip}
		}},
		{"merged into staging only", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.branch("staging", "main")
			w.merge("agents/a/r1")
			w.push("main", "staging", "agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h}
		}},
		{"another proposal merged", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.branch("agents/a/r2", "main")
			w.commit("other proposal", "Agent-Run: r2")
			w.checkout("main")
			w.merge("agents/a/r2")
			w.push("main", "agents/a/r1", "agents/a/r2")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Head: h}
		}},
		{"squash with Agent-Run trailer", squashCase(true, "Squashed proposal", "Agent-Run: r1")},
		{"squash with lower-case trailer key", squashCase(true, "Squashed proposal", "agent-run : r1")},
		{"squash with trailer among Signed-off-by", squashCase(true, "Squashed proposal", "Some words about it.",
			"Signed-off-by: Rita Reviewer <rita@example.com>\nAgent-Run: r1\nReviewed-by: Sam <sam@example.com>")},
		{"squash with trailer, then the branch deleted", func(w *world) (forge.Proposal, []plumbing.Hash, seen) {
			w.branch("agents/a/r1", "main")
			h := w.commit("proposal")
			w.push("agents/a/r1")
			sq := w.squashed("agents/a/r1", "Squashed", "Agent-Run: r1")
			w.push("main", ":agents/a/r1")
			return proposal("r1", h), []plumbing.Hash{h}, seen{Merge: sq, Squash: true}
		}},
		{"trailer naming another run", squashCase(false, "Squashed proposal", "Agent-Run: r2")},
		{"trailer naming a run the id prefixes", squashCase(false, "Squashed proposal", "Agent-Run: r10")},
		{"Agent-Run in the subject", squashCase(false, "Agent-Run: r1")},
		{"Agent-Run in a paragraph that is not the last", squashCase(false, "Squashed proposal", "Agent-Run: r1", "Just prose.")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			p, heads, want := tc.build(w)
			for _, tr := range transports {
				t.Run(tr.name, func(t *testing.T) {
					repo := open(t, tr.url(t, w.bare))
					protected := branchHead(t, repo, "main")
					o, err := forge.NewGit(repo).Observe(context.Background(), p, protected, heads)
					if err != nil {
						t.Fatalf("Observe: %v", err)
					}
					if got := seenOf(o); got != want {
						t.Errorf("Observe:\n got %v\nwant %v", got, want)
					}
					if o.Merge != nil && o.Merge.Hash != want.Merge {
						t.Errorf("Merge commit is %s, want %s", o.Merge.Hash, want.Merge)
					}
				})
			}
		})
	}
}

// TestObserveProtectedMoved observes with one Git before and after main
// moves: the index of the new head sees the new merge, and the old head's
// still does not.
func TestObserveProtectedMoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	w.branch("agents/a/r1", "main")
	h := w.commit("proposal")
	w.push("agents/a/r1")
	repo := open(t, w.bare)
	g := forge.NewGit(repo)
	p := proposal("r1", h)
	before := branchHead(t, repo, "main")
	observe := func(protected plumbing.Hash, want seen) {
		t.Helper()
		o, err := g.Observe(ctx, p, protected, []plumbing.Hash{h})
		if err != nil {
			t.Fatalf("Observe: %v", err)
		}
		if got := seenOf(o); got != want {
			t.Errorf("Observe at %s:\n got %v\nwant %v", protected, got, want)
		}
	}
	observe(before, seen{Head: h})

	w.checkout("main")
	m := w.merge("agents/a/r1")
	w.push("main")
	if err := repo.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	after := branchHead(t, repo, "main")
	if after != m {
		t.Fatalf("main is %s after fetch, want the merge %s", after, m)
	}
	observe(after, seen{Head: h, Merge: m, MergedHead: h})
	observe(before, seen{Head: h})
}

// TestObserveCanceled returns the context's error once it is done.
func TestObserveCanceled(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.branch("agents/a/r1", "main")
	h := w.commit("proposal")
	w.push("agents/a/r1")
	repo := open(t, w.bare)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := forge.NewGit(repo).Observe(ctx, proposal("r1", h), branchHead(t, repo, "main"), []plumbing.Hash{h})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Observe with a canceled context: %v, want context.Canceled", err)
	}
}

// reviewer is a member of reviewers.hcl with an SSH key made by ssh-keygen.
type reviewer struct {
	name, email string
	key         string // private key file, for user.signingkey
	pub         string // public key line
	fingerprint string // as ssh-keygen -lf prints it
}

func newReviewer(t *testing.T, dir, name string) reviewer {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skipf("ssh-keygen not installed: %v", err)
	}
	file := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file).CombinedOutput(); err != nil {
		t.Skipf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-lf", file+".pub").Output()
	if err != nil {
		t.Fatalf("ssh-keygen -lf: %v", err)
	}
	// "256 SHA256:... rita (ED25519)"
	return reviewer{name: name, email: name + "@example.com", key: file,
		pub: strings.TrimSpace(string(pub)), fingerprint: strings.Fields(string(out))[1]}
}

// sign returns the git options that sign with r's key.
func (r reviewer) sign() []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + r.key}
}

// reviewersSpec loads a desired state whose only file is a reviewers.hcl
// with group "sre" of members.
func reviewersSpec(t *testing.T, members ...reviewer) *hclspec.Spec {
	t.Helper()
	var b strings.Builder
	b.WriteString("group \"sre\" {\n")
	for _, m := range members {
		fmt.Fprintf(&b, "  member %q {\n    email       = %q\n    signing_key = %q\n  }\n", m.name, m.email, m.pub)
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

// TestApprovals signs merges and tags with ssh-keygen keys through the git
// CLI and collects the approvals of the proposal's head.
func TestApprovals(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	rita := newReviewer(t, keys, "rita")
	sam := newReviewer(t, keys, "sam")
	mallory := newReviewer(t, keys, "mallory")
	spec := reviewersSpec(t, rita, sam)

	ritaMerge := func(head, subject plumbing.Hash) forge.Approval {
		return forge.Approval{
			Approver: policy.Approver{Email: rita.email},
			Reviewer: "rita <rita@example.com>, signed by rita (sre) ssh " + rita.fingerprint,
			Record: ledger.Approval{Method: ledger.ApprovalSSH, Via: "merge", Member: "rita", Email: rita.email,
				Fingerprint: rita.fingerprint, Head: head.String()},
			Subject: subject,
		}
	}
	samTag := func(head plumbing.Hash) forge.Approval {
		return forge.Approval{
			Approver: policy.Approver{Email: sam.email},
			Reviewer: "sam <sam@example.com>, signed by sam (sre) ssh " + sam.fingerprint,
			Record: ledger.Approval{Method: ledger.ApprovalSSH, Via: "tag", Ref: "approve/r1/sam", Member: "sam",
				Email: sam.email, Fingerprint: sam.fingerprint, Head: head.String()},
			Subject: head,
		}
	}
	unsigned := func(email, why string, head, subject plumbing.Hash) forge.Approval {
		return forge.Approval{
			Approver: policy.Approver{Email: email, Unsigned: true},
			Reviewer: why,
			Record:   ledger.Approval{Method: ledger.ApprovalUnsigned, Via: "merge", Email: email, Head: head.String()},
			Subject:  subject,
		}
	}
	// tag makes an annotated tag name on target, signed by by (unsigned
	// when by is nil), and pushes it.
	tag := func(w *world, by *reviewer, name string, target plumbing.Hash) {
		args := []string{"tag", "-a", "-m", "approve", name, target.String()}
		if by != nil {
			args = append(by.sign(), "tag", "-s", "-m", "approve", name, target.String())
		}
		w.git(args...)
		w.push("refs/tags/" + name)
	}

	tests := []struct {
		name string
		// build makes the history from the proposal's branch with head
		// h1 (and its earlier head h0), and returns the approvals
		// expected, whose Reviewer must be contained in what is returned.
		build func(w *world, h0, h1 plumbing.Hash) []forge.Approval
	}{
		{"merge signed by a member", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			w.gitAs("Rita Reviewer", rita.email, append(rita.sign(), "merge", "--quiet", "-S", "--no-ff", "-m", "Merge", "agents/a/r1")...)
			w.push("main")
			return []forge.Approval{ritaMerge(h1, w.rev("HEAD"))}
		}},
		{"unsigned merge", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			w.gitAs("Rita Reviewer", rita.email, "merge", "--quiet", "--no-ff", "-m", "Merge", "agents/a/r1")
			w.push("main")
			return []forge.Approval{unsigned(rita.email, "Rita Reviewer <rita@example.com> (unsigned)", h1, w.rev("HEAD"))}
		}},
		{"merge signed by a key in no group", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			w.gitAs("Rita Reviewer", rita.email, append(mallory.sign(), "merge", "--quiet", "-S", "--no-ff", "-m", "Merge", "agents/a/r1")...)
			w.push("main")
			return []forge.Approval{unsigned(rita.email, "(unsigned: verify commit: signed by a key that is not a listed signing_key (ssh "+mallory.fingerprint+")", h1, w.rev("HEAD"))}
		}},
		{"signed tag of the member it names", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &sam, "approve/r1/sam", h1)
			return []forge.Approval{samTag(h1)}
		}},
		{"signed merge and signed tag", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &sam, "approve/r1/sam", h1)
			w.gitAs("Rita Reviewer", rita.email, append(rita.sign(), "merge", "--quiet", "-S", "--no-ff", "-m", "Merge", "agents/a/r1")...)
			w.push("main")
			return []forge.Approval{ritaMerge(h1, w.rev("HEAD")), samTag(h1)}
		}},
		{"signed tag on another head", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &sam, "approve/r1/sam", h0)
			return nil
		}},
		{"tag naming one member signed by another", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &rita, "approve/r1/sam", h1)
			return nil
		}},
		{"tag signed by a key in no group", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &mallory, "approve/r1/sam", h1)
			return nil
		}},
		{"unsigned annotated tag", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, nil, "approve/r1/sam", h1)
			return nil
		}},
		{"lightweight tag", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			w.git("tag", "approve/r1/sam", h1.String())
			w.push("refs/tags/approve/r1/sam")
			return nil
		}},
		{"signed tag of another run", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			tag(w, &sam, "approve/r2/sam", h1)
			return nil
		}},
		{"fast-forward of a head signed by a member", func(w *world, h0, h1 plumbing.Hash) []forge.Approval {
			w.checkout("agents/a/r1")
			w.gitAs("Rita Reviewer", rita.email, append(rita.sign(), "rebase", "--quiet", "-S", "main")...)
			w.push("agents/a/r1")
			w.checkout("main")
			w.git("merge", "--quiet", "--ff-only", "agents/a/r1")
			w.push("main")
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w := newWorld(t)
			w.branch("agents/a/r1", "main")
			h0 := w.commit("earlier head")
			h1 := w.commit("proposal")
			w.push("agents/a/r1")
			w.checkout("main")
			w.commit("unrelated")
			w.push("main")
			want := tc.build(w, h0, h1)

			repo := open(t, w.bare)
			head := branchHead(t, repo, "agents/a/r1")
			p := proposal("r1", head)
			g := forge.NewGit(repo)
			o, err := g.Observe(ctx, p, branchHead(t, repo, "main"), []plumbing.Hash{head})
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			got, err := g.Approvals(ctx, p, o, head, spec)
			if err != nil {
				t.Fatalf("Approvals: %v", err)
			}
			if len(got) != len(want) {
				t.Fatalf("Approvals = %d (%+v), want %d (%+v)", len(got), got, len(want), want)
			}
			for i := range got {
				if !strings.Contains(got[i].Reviewer, want[i].Reviewer) {
					t.Errorf("approval %d: Reviewer %q does not contain %q", i, got[i].Reviewer, want[i].Reviewer)
				}
				got[i].Reviewer = want[i].Reviewer
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("approval %d:\n got %+v\nwant %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestApprovalsWithoutReviewers fails closed: with no reviewers spec a
// signed merge is only an unsigned one, and no tag counts.
func TestApprovalsWithoutReviewers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rita := newReviewer(t, t.TempDir(), "rita")
	w := newWorld(t)
	w.branch("agents/a/r1", "main")
	h := w.commit("proposal")
	w.git(append(rita.sign(), "tag", "-s", "-m", "approve", "approve/r1/rita", h.String())...)
	w.checkout("main")
	w.gitAs("Rita Reviewer", rita.email, append(rita.sign(), "merge", "--quiet", "-S", "--no-ff", "-m", "Merge", "agents/a/r1")...)
	w.push("main", "agents/a/r1", "refs/tags/approve/r1/rita")
	repo := open(t, w.bare)
	g := forge.NewGit(repo)
	p := proposal("r1", h)
	o, err := g.Observe(ctx, p, branchHead(t, repo, "main"), []plumbing.Hash{h})
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.Approvals(ctx, p, o, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Approver.Unsigned || got[0].Record.Method != ledger.ApprovalUnsigned {
		t.Errorf("Approvals without reviewers = %+v, want one unsigned merge", got)
	}
}

// TestClose deletes the proposal's branch only while it is at p.Head.
func TestClose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// build returns the head decided on after the branch was pushed at
		// head, and runs after the repository is mirrored (the remote
		// changing since the last fetch).
		build func(w *world, head plumbing.Hash) (decided plumbing.Hash)
		later func(w *world)
		// kept says whether the branch must remain, at what the remote has.
		kept bool
	}{
		{"at the decided head", func(w *world, head plumbing.Hash) plumbing.Hash { return head }, nil, false},
		{"moved since the decision", func(w *world, head plumbing.Hash) plumbing.Hash {
			w.commit("pushed by a person")
			w.push("agents/a/r1")
			return head
		}, nil, true},
		{"moved on the remote since the last fetch", func(w *world, head plumbing.Hash) plumbing.Hash { return head },
			func(w *world) {
				w.commit("pushed by a person")
				w.push("agents/a/r1")
			}, true},
		{"already deleted", func(w *world, head plumbing.Hash) plumbing.Hash {
			w.push(":agents/a/r1")
			return head
		}, nil, false},
		{"deleted on the remote since the last fetch", func(w *world, head plumbing.Hash) plumbing.Hash { return head },
			func(w *world) { w.push(":agents/a/r1") }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, tr := range transports {
				t.Run(tr.name, func(t *testing.T) {
					w := newWorld(t)
					w.branch("agents/a/r1", "main")
					head := w.commit("proposal")
					w.push("agents/a/r1")
					decided := tc.build(w, head)
					repo := open(t, tr.url(t, w.bare))
					if tc.later != nil {
						tc.later(w)
					}
					before := w.remoteBranch("agents/a/r1")
					if err := forge.NewGit(repo).Close(context.Background(), proposal("r1", decided), "test"); err != nil {
						t.Fatalf("Close: %v", err)
					}
					after := w.remoteBranch("agents/a/r1")
					switch {
					case tc.kept && after != before:
						t.Errorf("branch is %s after Close, want it left at %s", after, before)
					case !tc.kept && !after.IsZero():
						t.Errorf("branch is %s after Close, want it deleted", after)
					}
				})
			}
		})
	}
}

// TestObserveAfterMergeOfLongHistory merges a history longer than the
// index's walk budget (maxBrought, 100000 commits) into main, as merging
// an upstream project does, and then merges the proposal: that later
// merge is still found.
func TestObserveAfterMergeOfLongHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a history of 100001 commits")
	}
	t.Parallel()
	const long = 100001
	bare := gittest.NewBare(t, "")
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = bare
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	var stream bytes.Buffer
	commit := func(ref string, mark int, msg string, parents ...int) {
		fmt.Fprintf(&stream, "commit %s\nmark :%d\ncommitter %s <%s> %d +0000\ndata %d\n%s\n",
			ref, mark, gittest.Name, gittest.Email, 1735689600+mark, len(msg)+1, msg)
		for i, p := range parents {
			if i == 0 {
				fmt.Fprintf(&stream, "from :%d\n", p)
			} else {
				fmt.Fprintf(&stream, "merge :%d\n", p)
			}
		}
		content := strconv.Itoa(mark)
		fmt.Fprintf(&stream, "M 100644 inline %s\ndata %d\n%s\n", strings.SplitN(ref, "/", 3)[2], len(content), content)
	}
	for i := 1; i <= long; i++ {
		if i == 1 {
			commit("refs/heads/upstream", i, "upstream 1")
		} else {
			commit("refs/heads/upstream", i, fmt.Sprintf("upstream %d", i), i-1)
		}
	}
	const root, mergeUpstream, head, mergeHead = long + 1, long + 2, long + 3, long + 4
	commit("refs/heads/main", root, "root")
	commit("refs/heads/main", mergeUpstream, "Merge upstream", root, long)
	commit("refs/heads/agents/a/r1", head, "proposal", mergeUpstream)
	commit("refs/heads/main", mergeHead, "Merge agents/a/r1", mergeUpstream, head)
	stream.WriteString("done\n")
	cmd.Stdin = &stream
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git fast-import: %v\n%s", err, out)
	}
	repo := open(t, bare)
	h := branchHead(t, repo, "agents/a/r1")
	m := branchHead(t, repo, "main")
	start := time.Now()
	o, err := forge.NewGit(repo).Observe(context.Background(), proposal("r1", h), m, []plumbing.Hash{h})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first Observe (the index walking the merged history) took %v", time.Since(start))
	if got, want := seenOf(o), (seen{Head: h, Merge: m, MergedHead: h}); got != want {
		t.Errorf("Observe:\n got %v\nwant %v", got, want)
	}
}
