package gitstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := gittest.NewBare(t, desiredState)
			url := tr.url(t, bare)
			want := map[string]plumbing.Hash{"main": remoteHead(t, bare, "main")}
			want["agents/reviewer/run-1"] = pushFiles(t, url, "agents/reviewer/run-1", "main", map[string]string{"a.txt": "a\n"}, "proposal 1")
			want["agents/fixer/run-2"] = pushFiles(t, url, "agents/fixer/run-2", "main", map[string]string{"b.txt": "b\n"}, "proposal 2")
			want["agent-evidence"] = pushFiles(t, url, "agent-evidence", "", map[string]string{"ledger/1.json": "{}\n"}, "ledger")
			gittest.Git(t, bare, "tag", "v1", "main") // tags are not mirrored

			r := open(t, url)
			got, err := r.Branches("")
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Errorf("Branches(\"\") = %v, want %v", got, want)
			}
			agents, err := r.Branches("agents/")
			if err != nil {
				t.Fatal(err)
			}
			if len(agents) != 2 || agents["agents/fixer/run-2"] != want["agents/fixer/run-2"] {
				t.Errorf("Branches(\"agents/\") = %v", agents)
			}
			for name, h := range want {
				if got, err := r.Branch(name); err != nil || got != h {
					t.Errorf("Branch(%q) = %s, %v; want %s", name, got, err, h)
				}
			}
			if _, err := r.Branch("missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Branch(missing) error = %v, want ErrNotFound", err)
			}
			if _, err := r.Branch("bad..name"); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Branch(bad..name) error = %v, want invalid name", err)
			}
			if c, err := r.Commit(want["main"]); err != nil || c.Author.Email != gittest.Email {
				t.Errorf("Commit(main) = %v, %v", c, err)
			}
			if _, err := r.Commit(plumbing.NewHash(strings.Repeat("ab", 20))); !errors.Is(err, ErrNotFound) {
				t.Errorf("Commit(missing) error = %v, want ErrNotFound", err)
			}
			if refs, _ := r.Git().References(); refs != nil {
				refs.ForEach(func(ref *plumbing.Reference) error {
					if ref.Name().IsTag() {
						t.Errorf("tag %s was fetched", ref.Name())
					}
					return nil
				})
			}
		})
	}
}

func TestOpenEmpty(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := gittest.NewBare(t, "")
			url := tr.url(t, bare)
			r := open(t, url)
			if got, err := r.Branches(""); err != nil || len(got) != 0 {
				t.Fatalf("Branches = %v, %v; want none", got, err)
			}
			if _, err := r.Branch("main"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Branch(main) error = %v, want ErrNotFound", err)
			}
			if err := r.Fetch(context.Background()); err != nil {
				t.Errorf("Fetch on empty remote: %v", err)
			}
			// The first branch of an empty remote is created with Push.
			tree, err := r.WriteTree(plumbing.ZeroHash, []FileChange{{Path: "README.md", Status: StatusAdded, Content: []byte("hi\n")}})
			if err != nil {
				t.Fatal(err)
			}
			c, err := r.CreateCommit(NewCommit{Tree: tree, Author: testSig(), Message: "first\n"})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Push(context.Background(), RefUpdate{Branch: "main", New: c}); err != nil {
				t.Fatalf("Push to empty remote: %v", err)
			}
			if got := remoteHead(t, bare, "main"); got != c {
				t.Errorf("remote main = %s, want %s", got, c)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	notRepo := t.TempDir()
	missingHTTP := gittest.ServeHTTP(t, filepath.Join(t.TempDir(), "missing.git"))
	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", code)
		}))
		t.Cleanup(srv.Close)
		return strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1) + "/repo.git"
	}
	tests := []struct {
		name     string
		url      string
		notFound bool   // errors.Is(err, ErrNotFound)
		is       error  // errors.Is(err, is) if not nil
		contains string // in the message
	}{
		{name: "empty", url: "", contains: "empty url"},
		{name: "missing path", url: filepath.Join(t.TempDir(), "nope.git"), notFound: true, contains: "nope.git"},
		{name: "missing relative path", url: "./does-not-exist", notFound: true, contains: "does-not-exist"},
		{name: "missing file url", url: "file://" + filepath.Join(t.TempDir(), "nope.git"), notFound: true, contains: "nope.git"},
		{name: "not a repository", url: notRepo, notFound: true, is: transport.ErrRepositoryNotFound, contains: notRepo},
		{name: "unsupported scheme", url: "ftp://example.com/repo.git", contains: "unsupported scheme"},
		{name: "unreachable http", url: "http://user:s3cret@127.0.0.1:1/repo.git", contains: "http://user:xxxxx@127.0.0.1:1/repo.git"},
		{name: "http 401", url: status(http.StatusUnauthorized), is: transport.ErrAuthenticationRequired, contains: "user:xxxxx@"},
		{name: "http 403", url: status(http.StatusForbidden), is: transport.ErrAuthorizationFailed, contains: "user:xxxxx@"},
		{name: "http 500", url: status(http.StatusInternalServerError), contains: "500"},
		{name: "http repository not found", url: missingHTTP, notFound: true, is: transport.ErrRepositoryNotFound, contains: missingHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := Open(ctx, tt.url, Options{})
			if err == nil {
				t.Fatalf("Open(%q) = %v, want error", tt.url, r)
			}
			t.Logf("error: %v", err)
			if errors.Is(err, ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v", !tt.notFound, tt.notFound)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestOpenWorkingCopy(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	work := gittest.Clone(t, bare)
	rel, err := filepath.Rel(mustGetwd(t), work)
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{work, rel, "file://" + work, "file://" + bare} {
		r := open(t, url)
		if got, err := r.Branch("main"); err != nil || got != remoteHead(t, bare, "main") {
			t.Errorf("Open(%q).Branch(main) = %s, %v", url, got, err)
		}
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func TestFetch(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := context.Background()
			bare := gittest.NewBare(t, desiredState)
			url := tr.url(t, bare)
			doomed := pushFiles(t, url, "agents/x/doomed", "main", map[string]string{"x": "x\n"}, "doomed")
			rebased := pushFiles(t, url, "agents/x/rebased", "main", map[string]string{"y": "y\n"}, "before rebase")
			r := open(t, url)

			newMain := pushFiles(t, url, "main", "main", map[string]string{"new.txt": "new\n"}, "new commit")
			newBranch := pushFiles(t, url, "agents/y/new", "main", map[string]string{"z": "z\n"}, "new branch")
			// Rewrite a branch: the mirror follows non-fast-forward updates.
			rewritten := pushFiles(t, url, "agents/x/rebased", newMain.String(), map[string]string{"y": "y2\n"}, "after rebase")
			gittest.Git(t, bare, "branch", "-D", "agents/x/doomed")

			if got, _ := r.Branch("agents/x/doomed"); got != doomed {
				t.Fatalf("before Fetch, doomed = %s, want %s", got, doomed)
			}
			if err := r.Fetch(ctx); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			want := map[string]plumbing.Hash{"main": newMain, "agents/y/new": newBranch, "agents/x/rebased": rewritten}
			got, err := r.Branches("")
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Errorf("after Fetch, Branches = %v, want %v", got, want)
			}
			if rewritten == rebased {
				t.Fatal("test setup: rebase did not change the commit")
			}
			if b, err := r.ReadFile(newMain, "new.txt"); err != nil || string(b) != "new\n" {
				t.Errorf("ReadFile(new.txt) = %q, %v", b, err)
			}
			if err := r.Fetch(ctx); err != nil {
				t.Errorf("second Fetch (up to date): %v", err)
			}

			// A remote whose branches are all deleted is empty: nothing left.
			for name := range want {
				gittest.Git(t, bare, "update-ref", "-d", "refs/heads/"+name)
			}
			if err := r.Fetch(ctx); err != nil {
				t.Fatalf("Fetch of emptied remote: %v", err)
			}
			if got, err := r.Branches(""); err != nil || len(got) != 0 {
				t.Errorf("after emptying the remote, Branches = %v, %v", got, err)
			}
		})
	}
}

func TestFetchCanceled(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, gittest.ServeHTTP(t, bare))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Fetch(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch(canceled) = %v, want context.Canceled", err)
	}
}

// history builds, with the git CLI:
//
//	c1 -- c2 ------ m   main
//	  \            /
//	   f1 -- f2 --'     feature
func history(t *testing.T) (r *Repo, c1, c2, f1, f2, m plumbing.Hash) {
	t.Helper()
	bare := gittest.NewBare(t, "")
	work := gittest.Clone(t, bare)
	commit := func(msg string) plumbing.Hash {
		if err := os.WriteFile(filepath.Join(work, strings.ReplaceAll(msg, " ", "-")), []byte(msg+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		gittest.Git(t, work, "add", "--all")
		gittest.Git(t, work, "commit", "--quiet", "-m", msg)
		return plumbing.NewHash(gittest.Git(t, work, "rev-parse", "HEAD"))
	}
	gittest.Git(t, work, "checkout", "--quiet", "-b", "main")
	c1 = commit("c1")
	gittest.Git(t, work, "checkout", "--quiet", "-b", "feature")
	f1 = commit("f1")
	f2 = commit("f2")
	gittest.Git(t, work, "checkout", "--quiet", "main")
	c2 = commit("c2")
	gittest.Git(t, work, "merge", "--quiet", "--no-ff", "-m", "merge feature", "feature")
	m = plumbing.NewHash(gittest.Git(t, work, "rev-parse", "HEAD"))
	gittest.Git(t, work, "push", "--quiet", "origin", "main", "feature")
	return open(t, bare), c1, c2, f1, f2, m
}

func TestIsAncestor(t *testing.T) {
	t.Parallel()
	r, c1, c2, f1, f2, m := history(t)
	tests := []struct {
		name string
		a, b plumbing.Hash
		want bool
	}{
		{"same commit", c1, c1, true},
		{"first parent", c2, m, true},
		{"root from merge", c1, m, true},
		{"through second parent", f1, m, true},
		{"second parent itself", f2, m, true},
		{"descendant is not ancestor", m, f1, false},
		{"sibling branches", c2, f2, false},
		{"other sibling", f1, c2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.IsAncestor(tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Errorf("IsAncestor = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if _, err := r.IsAncestor(plumbing.NewHash(strings.Repeat("12", 20)), m); !errors.Is(err, ErrNotFound) {
		t.Errorf("IsAncestor(missing) error = %v, want ErrNotFound", err)
	}
}

func TestFirstParents(t *testing.T) {
	t.Parallel()
	r, c1, c2, f1, f2, m := history(t)
	tests := []struct {
		name string
		head plumbing.Hash
		max  int
		want []plumbing.Hash
	}{
		{"whole chain skips the merged branch", m, 0, []plumbing.Hash{m, c2, c1}},
		{"max", m, 2, []plumbing.Hash{m, c2}},
		{"max beyond root", m, 10, []plumbing.Hash{m, c2, c1}},
		{"root", c1, 0, []plumbing.Hash{c1}},
		{"other branch", f2, -1, []plumbing.Hash{f2, f1, c1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.FirstParents(tt.head, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			var hashes []plumbing.Hash
			for _, c := range got {
				hashes = append(hashes, c.Hash)
			}
			if !equalHashes(hashes, tt.want) {
				t.Errorf("FirstParents = %v, want %v", hashes, tt.want)
			}
		})
	}
	if _, err := r.FirstParents(plumbing.NewHash(strings.Repeat("12", 20)), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("FirstParents(missing) error = %v, want ErrNotFound", err)
	}
}

func equalHashes(a, b []plumbing.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConcurrentUse shares one Repo between readers and writers; run with
// -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	pushFiles(t, bare, "agents/x/1", "main", map[string]string{"x": "x\n"}, "x")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 5 {
				switch i {
				case 0:
					if err := r.Fetch(ctx); err != nil {
						t.Error(err)
					}
				case 1:
					c, err := tryCommitOn(r, main, fmt.Sprintf("c/%d", j), "c\n")
					if err == nil {
						err = r.Push(ctx, RefUpdate{Branch: fmt.Sprintf("agents/c/%d", j), New: c})
					}
					if err != nil {
						t.Error(err)
					}
				case 2:
					if _, err := r.Branches(""); err != nil {
						t.Error(err)
					}
					if _, err := r.ReadFile(main, "README.md"); err != nil {
						t.Error(err)
					}
				case 3:
					if err := r.Checkout(ctx, main, filepath.Join(t.TempDir(), "w")); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if got, err := r.Branches("agents/c/"); err != nil || len(got) != 5 {
		t.Errorf("Branches(agents/c/) = %v, %v", got, err)
	}
}

func TestCredentialsRedacted(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	url := strings.Replace(gittest.ServeHTTP(t, bare), "http://", "http://bot:s3cret@", 1)
	r := open(t, url)
	if got := r.URL(); strings.Contains(got, "s3cret") || !strings.Contains(got, "bot:xxxxx@") {
		t.Errorf("URL() = %q", got)
	}
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Push(context.Background(), RefUpdate{Branch: "main", Old: plumbing.ZeroHash, New: main})
	if !errors.Is(err, ErrStale) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Push error = %v, want ErrStale without the password", err)
	}
	c := commitOn(t, r, main, "x.txt", "x\n")
	if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: main, New: c}); err != nil {
		t.Errorf("Push with URL credentials: %v", err)
	}
}
