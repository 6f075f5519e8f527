package gitstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// TestMain makes the git processes go-git's file transport starts
// (git-upload-pack, git-receive-pack) as hermetic as the ones gittest runs.
// With holdLockEnv set, the test binary is TestCacheLocked's child instead.
func TestMain(m *testing.M) {
	os.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	if spec := os.Getenv(holdLockEnv); spec != "" {
		os.Exit(holdLock(spec))
	}
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

const desiredState = "testdata/desired-state"

func testSig() object.Signature {
	return object.Signature{Name: "Reconciler", Email: "reconciler@example.com", When: time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)}
}

func open(t *testing.T, url string) *Repo {
	t.Helper()
	r, err := Open(context.Background(), url, Options{})
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	return r
}

// pushFiles commits files (path -> content; "" deletes the path) on branch of
// the remote at url with the git CLI, starting from start (a branch or commit
// of the remote; "" for an orphan branch), and returns the new commit.
func pushFiles(t *testing.T, url, branch, start string, files map[string]string, msg string) plumbing.Hash {
	t.Helper()
	dir := gittest.Clone(t, url)
	if start == "" {
		gittest.Git(t, dir, "checkout", "--quiet", "--orphan", branch)
		gittest.Git(t, dir, "rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
	} else {
		if !plumbing.IsHash(start) {
			start = "origin/" + start
		}
		gittest.Git(t, dir, "checkout", "--quiet", "-B", branch, start)
	}
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if content == "" {
			gittest.Git(t, dir, "rm", "--quiet", p)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		gittest.Git(t, dir, "add", p)
	}
	gittest.Git(t, dir, "commit", "--quiet", "--allow-empty", "-m", msg)
	gittest.Git(t, dir, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/"+branch)
	return plumbing.NewHash(gittest.Git(t, dir, "rev-parse", "HEAD"))
}

// remoteHead returns a branch of the bare repository, ZeroHash if absent.
func remoteHead(t *testing.T, bare, branch string) plumbing.Hash {
	t.Helper()
	out := gittest.Git(t, bare, "for-each-ref", "--format=%(objectname)", "refs/heads/"+branch)
	if out == "" {
		return plumbing.ZeroHash
	}
	return plumbing.NewHash(out)
}

// lines splits trimmed git output into lines, none for "".
func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
