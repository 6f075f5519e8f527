package reconcile_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// countingForge is the git-native forge, counting what the loop asks of it.
type countingForge struct {
	*forge.Git
	mu    sync.Mutex
	opens int
}

func (c *countingForge) Open(ctx context.Context, p forge.Proposal) error {
	c.mu.Lock()
	c.opens++
	c.mu.Unlock()
	return c.Git.Open(ctx, p)
}

func withForgeBlock(block string) func(dir string) {
	return func(dir string) {
		f, err := os.OpenFile(filepath.Join(dir, "providers.hcl"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		f.WriteString("\n" + block + "\n")
	}
}

const giteaBlock = `forge "gitea" {
  base_url   = "https://gitea.example.com"
  repository = "platform/desired-state"
  token_env  = "GITEA_TOKEN"
}`

// A forge block is pushed by whoever can push: the reconciler never builds
// the forge (so never resolves nor sends its token) for a base URL its
// operator did not allow, and proposes nothing on another flow instead.
func TestForgeBlockNeedsTheOperatorsAllowance(t *testing.T) {
	e := newEnv(t, false, withForgeBlock(giteaBlock))
	built := 0
	factory := func(f *hclspec.Forge, repo *gitstore.Repo) (reconcile.Forge, error) {
		built++
		return forge.NewGit(repo), nil
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.ForgeFactory, c.ForgeAllowed = factory, []string{"https://gitea.other.example/"}
	})
	err := r.Reconcile(context.Background())
	var stalled *reconcile.StalledError
	if !errors.As(err, &stalled) || stalled.Reason != reconcile.ReasonForgeNotAllowed {
		t.Fatalf("pass = %v, want stalled %s", err, reconcile.ReasonForgeNotAllowed)
	}
	if built != 0 {
		t.Fatalf("the forge was built %d times for a base URL nobody allowed", built)
	}
	if b := e.branches(); len(b) != 0 {
		t.Fatalf("proposals pushed while the forge is refused: %v", b)
	}
	if st := r.Status(); !st.Stalled() {
		t.Fatalf("status not stalled: %+v", st.Conditions)
	}
}

func TestForgeBlockBuildsTheForgeOnce(t *testing.T) {
	e := newEnv(t, false, withForgeBlock(giteaBlock))
	var made []*countingForge
	var blocks []hclspec.Forge
	factory := func(f *hclspec.Forge, repo *gitstore.Repo) (reconcile.Forge, error) {
		blocks = append(blocks, *f)
		c := &countingForge{Git: forge.NewGit(repo)}
		made = append(made, c)
		return c, nil
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.ForgeFactory, c.ForgeAllowed = factory, []string{"HTTPS://Gitea.Example.com"}
	})
	e.pass(r)
	e.pass(r)
	if len(made) != 1 || blocks[0].Owner != "platform" || blocks[0].TokenEnv != "GITEA_TOKEN" {
		t.Fatalf("forge built %d times (%+v), want once", len(made), blocks)
	}
	if made[0].opens == 0 || made[0].opens != len(e.branches()) {
		t.Fatalf("the spec's forge opened %d proposals, %d branches pushed", made[0].opens, len(e.branches()))
	}
}

func TestForgeAllowed(t *testing.T) {
	for _, tt := range []struct {
		allowed []string
		url     string
		want    bool
	}{
		{[]string{"https://gitea.example.com"}, "https://gitea.example.com/", true},
		{[]string{"HTTPS://GITEA.example.com/"}, "https://gitea.example.com/", true},
		{[]string{"https://gitea.example.com/"}, "https://gitea.example.com.evil.example/", false},
		{[]string{"https://gitea.example.com/"}, "http://gitea.example.com/", false},
		{[]string{"https://gitea.example.com/a/"}, "https://gitea.example.com/A/", false},
		{nil, "https://api.github.com/", false},
	} {
		if got := reconcile.ForgeAllowed(tt.allowed, tt.url); got != tt.want {
			t.Errorf("ForgeAllowed(%v, %q) = %v, want %v", tt.allowed, tt.url, got, tt.want)
		}
	}
}

// recordingForge is the git-native forge, keeping every proposal the loop
// opens.
type recordingForge struct {
	*forge.Git
	mu     sync.Mutex
	opened []forge.Proposal
}

func (f *recordingForge) Open(ctx context.Context, p forge.Proposal) error {
	f.mu.Lock()
	f.opened = append(f.opened, p)
	f.mu.Unlock()
	return f.Git.Open(ctx, p)
}

// A person pushes to a proposal branch: after proposal.updated the loop
// publishes the proposal again (a pull request's body and status follow
// the new head and decision), with the agent's words from its commit.
func TestUpdatedProposalIsPublishedAgain(t *testing.T) {
	e := newEnv(t, false, nil)
	rec := &recordingForge{}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.Forge = func(repo *gitstore.Repo) reconcile.Forge { rec.Git = forge.NewGit(repo); return rec }
	})
	e.pass(r)
	opened, ok := find(e.entries(), ledger.ProposalOpened, "image-pinner")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	var first forge.Proposal
	for _, p := range rec.opened {
		if p.RunID == opened.RunID {
			first = p
		}
	}
	if first.Summary == "" || first.Body == "" {
		t.Fatalf("the first Open had no summary or rationale: %+v", first)
	}
	work := e.clone()
	e.gitAs("Rita", "rita@example.com", work, "checkout", "--quiet", opened.Proposal.Branch)
	os.WriteFile(filepath.Join(work, "deploy/images.lock"), []byte("# reviewed by rita\n"), 0o644)
	e.gitAs("Rita", "rita@example.com", work, "commit", "--quiet", "-am", "tweak")
	e.gitAs("Rita", "rita@example.com", work, "push", "--quiet", "origin", opened.Proposal.Branch)
	n := len(rec.opened)
	e.pass(r)
	upd, ok := find(e.entries(), ledger.ProposalUpdated, "image-pinner")
	if !ok {
		t.Fatalf("no proposal.updated: %q", e.events())
	}
	if len(rec.opened) != n+1 {
		t.Fatalf("Open called %d times after the update, want once", len(rec.opened)-n)
	}
	again := rec.opened[n]
	if again.Head.String() != upd.Proposal.Head || again.LedgerEntry != upd.Seq || again.Summary != first.Summary || again.Body != first.Body || again.Risk != first.Risk {
		t.Fatalf("published again as %+v, want head %s, entry %d and the words of %+v", again, upd.Proposal.Head, upd.Seq, first)
	}
}

// checkingForge is the git-native forge with required status checks that
// the merged head had not passed.
type checkingForge struct {
	*forge.Git
	failing []string
	err     error
}

func (c *checkingForge) RequiredChecks(context.Context, plumbing.Hash) ([]string, error) {
	return c.failing, c.err
}

// A reviewed merge that bypassed the protected branch's required status
// checks is a violation naming them; checks that cannot be read fail
// closed.
func TestRequiredChecksAreHonoured(t *testing.T) {
	for _, tt := range []struct {
		name    string
		failing []string
		err     error
		want    string
	}{
		{"failing", []string{"ci/build: failure"}, nil, "required status check not passed: ci/build: failure"},
		{"unreadable", nil, errors.New("403 Resource not accessible by integration"), "required status checks could not be read: 403"},
		{"passed", nil, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			cf := &checkingForge{failing: tt.failing, err: tt.err}
			r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
				c.Forge = func(repo *gitstore.Repo) reconcile.Forge { cf.Git = forge.NewGit(repo); return cf }
			})
			e.pass(r)
			opened, ok := find(e.entries(), ledger.ProposalOpened, "env-normaliser")
			if !ok {
				t.Fatalf("no proposal: %q", e.events())
			}
			e.mergeAs("Rita Reviewer", "rita@example.com", opened.Proposal.Branch, "--no-ff")
			e.pass(r)
			v, violated := find(e.entries(), ledger.PolicyViolation, "env-normaliser")
			if tt.want == "" {
				if violated {
					t.Fatalf("violation without failing checks: %s", v.Error)
				}
				return
			}
			if !violated || !strings.Contains(v.Error, tt.want) {
				t.Fatalf("violation %q, want %q", v.Error, tt.want)
			}
		})
	}
}
