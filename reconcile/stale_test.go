package reconcile_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// The tests of stale proposals run on the git-native forge, which has no
// stale label: what is left to people is the log line (captured here) and
// the branch left as it is.

// lockedBuffer is a log sink the reconciler's goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// staleEnv is an env whose first pass opened both agents' proposals, with
// the reconciler's log captured.
func staleEnv(t *testing.T) (*env, *reconcile.Reconciler, *lockedBuffer, map[string]ledger.Entry) {
	t.Helper()
	e := newEnv(t, false, nil)
	logs := &lockedBuffer{}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	e.pass(r)
	opened := map[string]ledger.Entry{}
	for _, a := range []string{"image-pinner", "env-normaliser"} {
		en, ok := find(e.entries(), ledger.ProposalOpened, a)
		if !ok {
			t.Fatalf("no proposal of %s: %q", a, e.events())
		}
		opened[a] = en
	}
	return e, r, logs, opened
}

// rev resolves a revision in the bare repository.
func (e *env) rev(r string) string {
	e.t.Helper()
	return strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", r))
}

// appendTo commits, as Sam, text appended to file on main.
func (e *env) appendTo(file, text string) {
	e.t.Helper()
	e.commitAs("Sam", "sam@example.com", "edit "+file, func(w string) {
		f, err := os.OpenFile(filepath.Join(w, file), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			e.t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			e.t.Fatal(err)
		}
	})
}

// scopeFiles are, per agent, a file in its scope that neither proposal
// changes.
var scopeFiles = map[string]string{"image-pinner": "deploy/NOTES.md", "env-normaliser": "config/extra.env"}

// touchScopes commits, as Sam, one change of main to a file in each
// agent's scope that its proposal does not change.
func (e *env) touchScopes(line string) {
	e.t.Helper()
	e.commitAs("Sam", "sam@example.com", "notes", func(w string) {
		for _, f := range scopeFiles {
			fh, err := os.OpenFile(filepath.Join(w, f), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				e.t.Fatal(err)
			}
			if _, err := fh.WriteString(line + "\n"); err != nil {
				e.t.Fatal(err)
			}
			fh.Close()
		}
	})
}

// updates are the proposal.updated entries of agent.
func updates(es []ledger.Entry, agent string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range es {
		if en.Type == ledger.ProposalUpdated && en.Agent == agent {
			out = append(out, en)
		}
	}
	return out
}

// checkRebased checks that branch's head is opened's proposal commit
// rewritten onto main: parent main, the same change, message, author and
// committer (dates included).
func (e *env) checkRebased(branch, openedHead string) string {
	e.t.Helper()
	head, main := e.rev(branch), e.rev("main")
	if head == openedHead {
		e.t.Fatalf("%s is still at the opened head %s", branch, openedHead)
	}
	if p := e.rev(head + "^"); p != main {
		e.t.Fatalf("%s: parent %s, want main %s", branch, p, main)
	}
	if got, want := e.git("", "--git-dir", e.bare, "diff", main, head), e.git("", "--git-dir", e.bare, "diff", openedHead+"^", openedHead); got != want || want == "" {
		e.t.Fatalf("%s: rebased change\n%s\nwant the opened change\n%s", branch, got, want)
	}
	meta := "--format=%an <%ae> %ad%n%cn <%ce> %cd%n%B"
	if got, want := e.git("", "--git-dir", e.bare, "log", "-1", meta, head), e.git("", "--git-dir", e.bare, "log", "-1", meta, openedHead); got != want {
		e.t.Fatalf("%s: rebased commit\n%s\nwant the opened commit's\n%s", branch, got, want)
	}
	return head
}

// Main changes a file in each agent's scope that its proposal does not
// change: each proposal is rebased onto it once, with proposal.updated
// naming the new head, the previous one and why, and a pass that finds
// nothing new does nothing. A second such change, seen by a fresh process
// (whose mirror lacks the opened commits, unreachable since the rebase),
// rebases the rebased proposals again: the reconciler knows its own rebase
// commit.
func TestStaleProposalRebasedOnAScopeChange(t *testing.T) {
	e, r, _, opened := staleEnv(t)
	e.touchScopes("KEY=one")
	e.pass(r)
	es := e.entries()
	main := e.rev("main")
	heads := map[string]string{}
	for a, op := range opened {
		head := e.checkRebased(op.Proposal.Branch, op.Proposal.Head)
		ups := updates(es, a)
		if len(ups) != 1 {
			t.Fatalf("%s: %d proposal.updated, want 1: %q", a, len(ups), e.events())
		}
		u := ups[0]
		if u.Proposal.Head != head || u.Proposal.PreviousHead != op.Proposal.Head || u.SpecCommit != main ||
			!strings.Contains(u.Summary, "rebased by the reconciler onto main "+main[:12]) || !strings.Contains(u.Summary, scopeFiles[a]) {
			t.Fatalf("%s: proposal.updated %+v (summary %q), want head %s after %s on main %s", a, u.Proposal, u.Summary, head, op.Proposal.Head, main)
		}
		if want := e.changedFiles(op.Proposal.Head); u.Change == nil || !slices.Equal(u.Change.Files, want) {
			t.Fatalf("%s: updated change %+v, want the files %q", a, u.Change, want)
		}
		heads[a] = head
	}
	n := len(es)
	e.pass(r)
	if got := len(e.entries()); got != n {
		t.Fatalf("a quiet pass added %q", e.events()[n:])
	}
	for a, op := range opened {
		if got := e.rev(op.Proposal.Branch); got != heads[a] {
			t.Fatalf("%s moved on a quiet pass: %s, want %s", a, got, heads[a])
		}
	}

	e.touchScopes("KEY=two")
	e.pass(e.reconciler(nil))
	for a, op := range opened {
		head := e.checkRebased(op.Proposal.Branch, op.Proposal.Head)
		ups := updates(e.entries(), a)
		if len(ups) != 2 || ups[1].Proposal.PreviousHead != heads[a] || ups[1].Proposal.Head != head {
			t.Fatalf("%s: after a second scope change, updates %d (last %+v), want a second from %s to %s", a, len(ups), ups[len(ups)-1].Proposal, heads[a], head)
		}
	}
	e.verify()
}

// changedFiles are the files commit changes against its parent.
func (e *env) changedFiles(commit string) []string {
	e.t.Helper()
	return strings.Fields(e.git("", "--git-dir", e.bare, "diff", "--name-only", commit+"^", commit))
}

// Main changes a file the image pinner's proposal changes too: the change
// does not apply cleanly, so the proposal is not rebased (its branch is
// untouched, nothing recorded) and is reported stale once, however many
// passes find it so. The env normaliser's proposal, whose files main did
// not touch, is rebased for the change in its scope.
func TestStaleProposalWithAConflictIsLeftToPeople(t *testing.T) {
	e, r, logs, opened := staleEnv(t)
	pin := opened["image-pinner"]
	file := e.changedFiles(pin.Proposal.Head)[0]
	// A change in its scope too: the conflict wins over it.
	e.touchScopes("KEY=one")
	e.appendTo(file, "# pinned by hand\n")
	n := len(e.entries())
	e.pass(r)
	e.pass(r)
	if got := e.rev(pin.Proposal.Branch); got != pin.Proposal.Head {
		t.Fatalf("the conflicting proposal moved to %s, want it left at %s", got, pin.Proposal.Head)
	}
	if ups := updates(e.entries(), "image-pinner"); len(ups) != 0 {
		t.Fatalf("conflicting proposal updated: %q", ups[0].Summary)
	}
	if got := strings.Count(logs.String(), `msg="proposal stale" agent=image-pinner`); got != 1 {
		t.Fatalf("stale reported %d times for image-pinner, want once:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), file) {
		t.Fatalf("the stale report does not name %s:\n%s", file, logs)
	}
	// The env normaliser's proposal does not conflict: rebased for the
	// change in its scope.
	norm := opened["env-normaliser"]
	e.checkRebased(norm.Proposal.Branch, norm.Proposal.Head)
	if got := len(e.entries()) - n; got != 1 { // the env normaliser's proposal.updated
		t.Fatalf("entries after the passes: %q", e.events()[n:])
	}
	e.verify()
}

// Main moves with a change outside both proposals' files and the spec: no
// proposal is stale (each merges cleanly as it is), nothing is rebased or
// recorded, and no approval is voided.
func TestUnrelatedChangeOnMainRebasesNothing(t *testing.T) {
	e, r, logs, opened := staleEnv(t)
	e.appendTo("README.md", "\nA note.\n")
	n := len(e.entries())
	e.pass(r)
	for _, op := range opened {
		if got := e.rev(op.Proposal.Branch); got != op.Proposal.Head {
			t.Fatalf("%s moved to %s on an unrelated change of main", op.Proposal.Branch, got)
		}
	}
	if got := e.events()[n:]; len(got) != 0 {
		t.Fatalf("an unrelated change of main recorded %q", got)
	}
	if strings.Contains(logs.String(), "proposal stale") {
		t.Fatalf("reported stale:\n%s", logs)
	}
}

// A person commits to the image pinner's proposal branch, then main
// changes its scope: the branch is never rebased (never force-pushed over
// the person's commit), only reported stale; the env normaliser's
// proposal, still the reconciler's own, is rebased.
func TestStaleProposalWithAPersonsCommitIsNeverRebased(t *testing.T) {
	e, r, logs, opened := staleEnv(t)
	pin := opened["image-pinner"]
	work := e.clone()
	e.gitAs("Rita", "rita@example.com", work, "checkout", "--quiet", pin.Proposal.Branch)
	if err := os.WriteFile(filepath.Join(work, "deploy/NOTES"), []byte("checked by rita\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.gitAs("Rita", "rita@example.com", work, "add", "deploy/NOTES")
	e.gitAs("Rita", "rita@example.com", work, "commit", "--quiet", "-m", "notes")
	e.gitAs("Rita", "rita@example.com", work, "push", "--quiet", "origin", pin.Proposal.Branch)
	ritas := e.rev(pin.Proposal.Branch)
	e.pass(r)
	if ups := updates(e.entries(), "image-pinner"); len(ups) != 1 || ups[0].Proposal.Head != ritas {
		t.Fatalf("rita's push: updates %d, want one for %s: %q", len(ups), ritas, e.events())
	}
	e.touchScopes("KEY=one")
	e.pass(r)
	e.pass(r)
	if got := e.rev(pin.Proposal.Branch); got != ritas {
		t.Fatalf("the branch with rita's commit moved to %s", got)
	}
	if ups := updates(e.entries(), "image-pinner"); len(ups) != 1 {
		t.Fatalf("the branch with rita's commit was updated again: %q", ups[len(ups)-1].Summary)
	}
	if got := strings.Count(logs.String(), `msg="proposal stale" agent=image-pinner`); got != 1 || !strings.Contains(logs.String(), "a person pushed") {
		t.Fatalf("stale reported %d times for image-pinner, want once, naming the person's push:\n%s", got, logs)
	}
	norm := opened["env-normaliser"]
	e.checkRebased(norm.Proposal.Branch, norm.Proposal.Head)
	e.verify()
}

// A crash after the rebase's push and before its entry: made here by
// pushing, with the git CLI, the very commit the reconciler makes (the
// opened commit's change over main, its message, author and committer).
// The next pass records the move (proposal.updated) and, on a later change
// in the agent's scope, rebases it again: the reconciler recognises its own rebase and
// never takes it for a person's push.
func TestRebasePushedBeforeACrashIsRecognised(t *testing.T) {
	e, r, logs, opened := staleEnv(t)
	pin := opened["image-pinner"]
	e.appendTo("README.md", "\nA note.\n")
	main := e.rev("main")
	work := e.clone()
	e.git(work, "checkout", "--quiet", "--detach", main)
	e.git(work, "cherry-pick", "--no-commit", pin.Proposal.Head)
	tree := strings.TrimSpace(e.git(work, "write-tree"))
	// The message exactly as stored (e.git trims what git prints).
	rawOut, err := exec.Command("git", "--git-dir", e.bare, "cat-file", "commit", pin.Proposal.Head).Output()
	if err != nil {
		t.Fatal(err)
	}
	raw := string(rawOut)
	_, msg, _ := strings.Cut(raw, "\n\n")
	meta := strings.Split(strings.TrimSpace(e.git("", "--git-dir", e.bare, "log", "-1", "--format=%an%n%ae%n%ad%n%cn%n%ce%n%cd", "--date=raw", pin.Proposal.Head)), "\n")
	cmd := exec.Command("git", "commit-tree", tree, "-p", main, "-F", "-")
	cmd.Dir = work
	cmd.Stdin = strings.NewReader(msg)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME="+meta[0], "GIT_AUTHOR_EMAIL="+meta[1], "GIT_AUTHOR_DATE="+meta[2],
		"GIT_COMMITTER_NAME="+meta[3], "GIT_COMMITTER_EMAIL="+meta[4], "GIT_COMMITTER_DATE="+meta[5])
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("commit-tree: %v", err)
	}
	crashed := strings.TrimSpace(string(out))
	e.git(work, "push", "--quiet", "--force", "origin", crashed+":refs/heads/"+pin.Proposal.Branch)
	e.pass(r)
	if ups := updates(e.entries(), "image-pinner"); len(ups) != 1 || ups[0].Proposal.Head != crashed {
		t.Fatalf("the crashed rebase's head: updates %d, want one for %s: %q", len(ups), crashed, e.events())
	}
	e.touchScopes("KEY=one")
	e.pass(r)
	head := e.checkRebased(pin.Proposal.Branch, pin.Proposal.Head)
	ups := updates(e.entries(), "image-pinner")
	if len(ups) != 2 || ups[1].Proposal.Head != head || ups[1].Proposal.PreviousHead != crashed {
		t.Fatalf("after the scope change: %d updates, want a rebase from %s to %s: %q", len(ups), crashed, head, e.events())
	}
	if strings.Contains(logs.String(), `msg="proposal stale" agent=image-pinner`) {
		t.Fatalf("the reconciler's own rebase was taken for a person's push:\n%s", logs)
	}
	e.verify()
}

// Two open proposals of one agent (the loop supersedes an agent's older
// proposal when it opens a new one, so the second is written into the
// ledger here, as another writer could have): a change in the agent's
// scope on main makes both stale, and a pass rebases one of them, the next pass the other: at
// most one rebase per agent per pass. A pass after that changes nothing.
func TestOneRebasePerAgentPerPass(t *testing.T) {
	e, r, logs, opened := staleEnv(t)
	pin := opened["image-pinner"]
	const second = "0123456789ab"
	branch := reconcile.ProposalBranch("image-pinner", second)
	work := e.clone()
	headOut, err := exec.Command("git", "-C", work, "-c", "user.name=Image Pinner", "-c", "user.email=pinner@example.com",
		"commit-tree", pin.Proposal.Head+"^{tree}", "-p", pin.Proposal.Head+"^", "-m", "Pin again").Output()
	if err != nil {
		t.Fatalf("commit-tree: %v", err)
	}
	head := strings.TrimSpace(string(headOut))
	e.git(work, "push", "--quiet", "origin", head+":refs/heads/"+branch)

	repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(repo, ledger.Options{Signer: e.signer, Identity: identity, Now: func() time.Time { return e.now }})
	var evs []ledger.Event
	for _, en := range e.entries() {
		if en.RunID != pin.RunID || en.Agent != "image-pinner" {
			continue
		}
		ev := en.Event
		ev.RunID = second
		ev.Summary = strings.ReplaceAll(ev.Summary, pin.RunID, second)
		if ev.Type == ledger.ProposalOpened {
			p := *ev.Proposal
			p.Branch, p.Head = branch, head
			ev.Proposal, ev.Subject, ev.SubjectName = &p, head, branch
		}
		evs = append(evs, ev)
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	e.pass(r)
	if got := updates(e.entries(), "image-pinner"); len(got) != 0 {
		t.Fatalf("a pass with nothing stale updated %q", got[0].Summary)
	}

	e.touchScopes("KEY=one")
	heads := map[string]string{pin.Proposal.Branch: pin.Proposal.Head, branch: head}
	moved := func() int {
		n := 0
		for b, h := range heads {
			if e.rev(b) != h {
				n++
			}
		}
		return n
	}
	e.pass(r)
	if got, ups := moved(), updates(e.entries(), "image-pinner"); got != 1 || len(ups) != 1 {
		t.Fatalf("first pass after the scope change: %d branches moved, %d proposal.updated, want 1 and 1", got, len(ups))
	}
	if !strings.Contains(logs.String(), "one rebase per agent per pass") {
		t.Fatalf("the held-back rebase is not reported:\n%s", logs)
	}
	e.pass(r)
	if got, ups := moved(), updates(e.entries(), "image-pinner"); got != 2 || len(ups) != 2 {
		t.Fatalf("second pass: %d branches moved, %d proposal.updated, want 2 and 2", got, len(ups))
	}
	n := len(e.entries())
	e.pass(r)
	if got := len(e.entries()); got != n {
		t.Fatalf("a quiet pass added %q", e.events()[n:])
	}
}
