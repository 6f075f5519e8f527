package giteatest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServer starts a real Gitea, pushes a branch to a new repository
// with the git CLI, opens a pull request as the bot, approves it as rita
// on its head, merges it as sam and deletes the branch, checking what the
// API shows at each step.
func TestServer(t *testing.T) {
	Start(t) // the template, once
	start := time.Now()
	s := Start(t)
	took := time.Since(start)
	t.Logf("gitea started in %s", took)

	var me Person
	s.API(s.Bot, "GET", "/user", nil, &me)
	if me.Login != BotLogin {
		t.Fatalf("the bot's token is %q's, want %q", me.Login, BotLogin)
	}

	repo := s.CreateRepo(s.Bot, "demo")
	repo.AddCollaborator(RitaLogin, "write")
	repo.AddCollaborator(SamLogin, "write")
	work := t.TempDir()
	repo.Git(work, "init", "--quiet", "--initial-branch=main")
	if err := os.WriteFile(filepath.Join(work, "a.txt"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo.Git(work, "add", "-A")
	repo.Git(work, "commit", "--quiet", "-m", "initial")
	repo.Push(s.Bot, work, "main")
	repo.Git(work, "checkout", "--quiet", "-b", "topic")
	if err := os.WriteFile(filepath.Join(work, "a.txt"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo.Git(work, "commit", "--quiet", "-am", "change")
	head := repo.Git(work, "rev-parse", "HEAD")
	repo.Push(s.Bot, work, "topic")
	if got := repo.BranchHead("topic"); got != head {
		t.Fatalf("topic is at %q on gitea, pushed %q", got, head)
	}

	pr := repo.OpenPull(s.Bot, "topic", "main", "a change")
	if _, err := repo.TryReview(s.Bot, pr.Number, "APPROVED", head, ""); err == nil || !strings.Contains(err.Error(), "approve your own pull is not allowed") {
		t.Fatalf("the poster's own approval: %v, want Gitea's refusal", err)
	}
	if id := repo.Review(s.Rita, pr.Number, "APPROVED", head, "lgtm"); id == 0 {
		t.Fatal("review id 0")
	}
	repo.Merge(s.Sam, pr.Number, "merge")
	got := repo.Pull(pr.Number)
	if !got.Merged || got.MergeSHA == nil || got.State != "closed" {
		t.Fatalf("after merge: merged %v, merge sha %v, state %q", got.Merged, got.MergeSHA, got.State)
	}
	clone := repo.Clone(s.Rita)
	parents := repo.Git(clone, "log", "-1", "--format=%P", "main")
	if !strings.Contains(parents, head) || repo.Git(clone, "rev-parse", "main") != *got.MergeSHA {
		t.Fatalf("main's head %s (parents %s) is not the merge of %s", *got.MergeSHA, parents, head)
	}
	repo.DeleteBranch(s.Sam, "topic")
	if h := repo.BranchHead("topic"); h != "" {
		t.Fatalf("topic still at %s after deletion", h)
	}
}

// TestBinaryMissing checks the message a machine without the cache gets.
func TestBinaryMissing(t *testing.T) {
	t.Setenv("RECONCILER_GITEA", filepath.Join(t.TempDir(), "gitea"))
	_, _, err := Binary()
	if err == nil || !strings.Contains(err.Error(), ".ci/gitea") {
		t.Fatalf("Binary() = %v, want an error naming .ci/gitea", err)
	}
}
