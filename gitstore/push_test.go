package gitstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// commitOn stores a commit adding file p to parent's tree (the empty tree for
// ZeroHash) and returns it.
func commitOn(t testing.TB, r *Repo, parent plumbing.Hash, p, content string) plumbing.Hash {
	t.Helper()
	h, err := tryCommitOn(r, parent, p, content)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func tryCommitOn(r *Repo, parent plumbing.Hash, p, content string) (plumbing.Hash, error) {
	tree, err := r.WriteTree(parent, []FileChange{{Path: p, Status: StatusAdded, Content: []byte(content)}})
	if err != nil {
		return plumbing.ZeroHash, err
	}
	var parents []plumbing.Hash
	if !parent.IsZero() {
		parents = []plumbing.Hash{parent}
	}
	return r.CreateCommit(NewCommit{Tree: tree, Parents: parents, Author: testSig(), Message: "add " + p + "\n"})
}

func TestPush(t *testing.T) {
	t.Parallel()
	zero := plumbing.ZeroHash
	type env struct {
		bare, url string
		r         *Repo
		main      plumbing.Hash // remote main before the case
	}
	// A case returns the updates to push and the remote branches it then
	// expects (ZeroHash: absent).
	tests := []struct {
		name      string
		prepare   func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash)
		wantStale bool
		wantErr   string // for other errors
	}{{
		name: "create",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "a.txt", "a\n")
			return []RefUpdate{{Branch: "agents/a/run-1", Old: zero, New: c}},
				map[string]plumbing.Hash{"agents/a/run-1": c, "main": e.main}
		},
	}, {
		name: "create refused when the branch exists",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "b.txt", "b\n")
			return []RefUpdate{{Branch: "main", Old: zero, New: c}}, map[string]plumbing.Hash{"main": e.main}
		},
		wantStale: true,
	}, {
		name: "create refused even as a fast-forward",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "b2.txt", "b\n")
			return []RefUpdate{{Branch: "main", Old: zero, New: c}}, map[string]plumbing.Hash{"main": e.main}
		},
		wantStale: true,
	}, {
		name: "fast-forward update",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "c.txt", "c\n")
			return []RefUpdate{{Branch: "main", Old: e.main, New: c}}, map[string]plumbing.Hash{"main": c}
		},
	}, {
		name: "update with a stale old value",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			parent := e.r.mustCommit(t, e.main).ParentHashes[0]
			c := commitOn(t, e.r, e.main, "d.txt", "d\n")
			return []RefUpdate{{Branch: "main", Old: parent, New: c}}, map[string]plumbing.Hash{"main": e.main}
		},
		wantStale: true,
	}, {
		name: "non-fast-forward update with the right old value",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			a := pushFiles(t, e.url, "agents/b/run-1", "main", map[string]string{"e.txt": "e\n"}, "proposal")
			fetch(t, e.r)
			rebased := commitOn(t, e.r, e.main, "e.txt", "e, rebased\n")
			return []RefUpdate{{Branch: "agents/b/run-1", Old: a, New: rebased}}, map[string]plumbing.Hash{"agents/b/run-1": rebased}
		},
	}, {
		name: "delete with the right old value",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			h := pushFiles(t, e.url, "agents/c/run-1", "main", map[string]string{"f.txt": "f\n"}, "to delete")
			fetch(t, e.r)
			return []RefUpdate{{Branch: "agents/c/run-1", Old: h, New: zero}}, map[string]plumbing.Hash{"agents/c/run-1": zero}
		},
	}, {
		name: "delete with a stale old value",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			h := pushFiles(t, e.url, "agents/d/run-1", "main", map[string]string{"g.txt": "g\n"}, "kept")
			return []RefUpdate{{Branch: "agents/d/run-1", Old: e.main, New: zero}}, map[string]plumbing.Hash{"agents/d/run-1": h}
		},
		wantStale: true,
	}, {
		name: "delete of a missing branch",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "agents/none", Old: e.main, New: zero}}, map[string]plumbing.Hash{"agents/none": zero}
		},
		wantStale: true,
	}, {
		name: "check only",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "main", Old: e.main, New: e.main}, {Branch: "agents/none", Old: zero, New: zero}},
				map[string]plumbing.Hash{"main": e.main}
		},
	}, {
		name: "check only, stale",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "agents/none", Old: e.main, New: e.main}}, map[string]plumbing.Hash{"main": e.main}
		},
		wantStale: true,
	}, {
		name: "one stale update blocks the others",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "h.txt", "h\n")
			return []RefUpdate{
					{Branch: "agents/e/run-1", Old: zero, New: c},
					{Branch: "main", Old: zero, New: c},
				},
				map[string]plumbing.Hash{"agents/e/run-1": zero, "main": e.main}
		},
		wantStale: true,
	}, {
		name: "several updates at once",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			c := commitOn(t, e.r, e.main, "i.txt", "i\n")
			ledger := commitOn(t, e.r, zero, "ledger/000000000/000000000001.json", "{}\n")
			return []RefUpdate{
					{Branch: "main", Old: e.main, New: c},
					{Branch: "agent-evidence", Old: zero, New: ledger},
					{Branch: "agents/a/run-1", Old: e.r.mustBranch(t, "agents/a/run-1"), New: zero},
				},
				map[string]plumbing.Hash{"main": c, "agent-evidence": ledger, "agents/a/run-1": zero}
		},
	}, {
		name: "remote moved since the last fetch",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			moved := pushFiles(t, e.url, "main", "main", map[string]string{"j.txt": "j\n"}, "someone else")
			c := commitOn(t, e.r, e.main, "k.txt", "k\n")
			return []RefUpdate{{Branch: "main", Old: e.main, New: c}}, map[string]plumbing.Hash{"main": moved}
		},
		wantStale: true,
	}, {
		name: "new commit not in the repository",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "x", New: plumbing.NewHash(strings.Repeat("ab", 20))}}, map[string]plumbing.Hash{"x": zero}
		},
		wantErr: "not found",
	}, {
		name: "invalid branch name",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "refs/heads/x", New: e.main}}, nil
		},
		wantErr: "invalid branch name",
	}, {
		name: "branch twice",
		prepare: func(t *testing.T, e env) ([]RefUpdate, map[string]plumbing.Hash) {
			return []RefUpdate{{Branch: "x", New: e.main}, {Branch: "x", New: e.main}}, map[string]plumbing.Hash{"x": zero}
		},
		wantErr: "twice",
	}}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := gittest.NewBare(t, desiredState)
			url := tr.url(t, bare)
			pushFiles(t, url, "main", "main", map[string]string{"second.txt": "2\n"}, "second commit")
			r := open(t, url)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					fetch(t, r)
					e := env{bare: bare, url: url, r: r, main: remoteHead(t, bare, "main")}
					updates, want := tt.prepare(t, e)
					err := r.Push(context.Background(), updates...)
					t.Logf("Push: %v", err)
					switch {
					case tt.wantStale:
						if !errors.Is(err, ErrStale) {
							t.Errorf("Push error = %v, want ErrStale", err)
						}
					case tt.wantErr != "":
						if err == nil || errors.Is(err, ErrStale) || !strings.Contains(err.Error(), tt.wantErr) {
							t.Errorf("Push error = %v, want %q (not ErrStale)", err, tt.wantErr)
						}
					case err != nil:
						t.Fatalf("Push: %v", err)
					}
					for branch, h := range want {
						if got := remoteHead(t, bare, branch); got != h {
							t.Errorf("remote %s = %s, want %s", branch, got, h)
						}
						if tt.wantStale || tt.wantErr != "" {
							continue
						}
						got, err := r.Branch(branch)
						if h.IsZero() && !errors.Is(err, ErrNotFound) || !h.IsZero() && got != h {
							t.Errorf("local %s = %s, %v; want %s", branch, got, err, h)
						}
					}
				})
			}
			gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
		})
	}
}

func fetch(t *testing.T, r *Repo) {
	t.Helper()
	if err := r.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (r *Repo) mustCommit(t *testing.T, h plumbing.Hash) *object.Commit {
	t.Helper()
	c, err := r.Commit(h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *Repo) mustBranch(t *testing.T, name string) plumbing.Hash {
	t.Helper()
	h, err := r.Branch(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPushLosesRace makes the server move the branch after go-git has read
// the advertised refs and before the update applies (in a pre-receive hook),
// the window no client-side check can close: the server's compare-and-swap
// must refuse the update and Push must report ErrStale.
func TestPushLosesRace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		branch    string
		hook      string // %s: the commit the hook moves the branch to
		old       func(main plumbing.Hash) plumbing.Hash
		wantStale bool
	}{
		{name: "update", branch: "main", hook: "git update-ref refs/heads/main %s", old: func(m plumbing.Hash) plumbing.Hash { return m }, wantStale: true},
		{name: "create", branch: "agent-evidence", hook: "git update-ref refs/heads/agent-evidence %s", old: func(plumbing.Hash) plumbing.Hash { return plumbing.ZeroHash }, wantStale: true},
		{name: "hook declines", branch: "main", hook: "echo 'policy says no' >&2; exit 1", old: func(m plumbing.Hash) plumbing.Hash { return m }},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				bare := gittest.NewBare(t, desiredState)
				url := tr.url(t, bare)
				main := remoteHead(t, bare, "main")
				other := pushFiles(t, url, "other", "main", map[string]string{"o.txt": "o\n"}, "other writer")
				hook := "#!/bin/sh\nunset GIT_QUARANTINE_PATH\n"
				if strings.Contains(tt.hook, "%s") {
					hook += fmt.Sprintf(tt.hook, other) + "\n"
				} else {
					hook += tt.hook + "\n"
				}
				if err := os.WriteFile(filepath.Join(bare, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
					t.Fatal(err)
				}
				r := open(t, url)
				c := commitOn(t, r, main, "mine.txt", "mine\n")
				err := r.Push(context.Background(), RefUpdate{Branch: tt.branch, Old: tt.old(main), New: c})
				t.Logf("Push: %v", err)
				if err == nil {
					t.Fatal("Push succeeded")
				}
				if errors.Is(err, ErrStale) != tt.wantStale {
					t.Errorf("errors.Is(err, ErrStale) = %v, want %v", !tt.wantStale, tt.wantStale)
				}
				if tt.wantStale {
					if got := remoteHead(t, bare, tt.branch); got != other {
						t.Errorf("remote %s = %s, want the other writer's %s", tt.branch, got, other)
					}
				}
			})
		}
	}
}

// TestPushConcurrentWriters has writers, each with its own Repo, append
// commits to one branch over smart HTTP, fetching and retrying on ErrStale:
// every commit must end up in the history, none overwritten.
func TestPushConcurrentWriters(t *testing.T) {
	t.Parallel()
	const writers, perWriter = 4, 5
	bare := gittest.NewBare(t, desiredState)
	url := gittest.ServeHTTP(t, bare)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	repos := make([]*Repo, writers)
	for i := range repos {
		repos[i] = open(t, url)
	}
	var (
		mu      sync.Mutex
		commits []plumbing.Hash
		stale   int
		wg      sync.WaitGroup
	)
	for w, r := range repos {
		wg.Go(func() {
			for n := range perWriter {
				for attempt := 0; ; attempt++ {
					if attempt == 100 {
						t.Errorf("writer %d: gave up on commit %d", w, n)
						return
					}
					if err := r.Fetch(ctx); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					head, err := r.Branch("main")
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					c, err := tryCommitOn(r, head, fmt.Sprintf("writers/%d/%d.txt", w, n), "x\n")
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					err = r.Push(ctx, RefUpdate{Branch: "main", Old: head, New: c})
					if errors.Is(err, ErrStale) {
						mu.Lock()
						stale++
						mu.Unlock()
						continue
					}
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					mu.Lock()
					commits = append(commits, c)
					mu.Unlock()
					break
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d commits, %d stale pushes retried", len(commits), stale)
	if len(commits) != writers*perWriter {
		t.Fatalf("%d commits pushed, want %d", len(commits), writers*perWriter)
	}
	history := lines(gittest.Git(t, bare, "rev-list", "main"))
	if len(history) != writers*perWriter+1 {
		t.Errorf("main has %d commits, want %d", len(history), writers*perWriter+1)
	}
	for _, c := range commits {
		if !slices.Contains(history, c.String()) {
			t.Errorf("commit %s was lost", c)
		}
	}
	files := lines(gittest.Git(t, bare, "ls-tree", "-r", "--name-only", "main", "writers"))
	if len(files) != writers*perWriter {
		t.Errorf("main has %d writer files, want %d: %q", len(files), writers*perWriter, files)
	}
	gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
}

// TestPushRemoteVanishes moves the remote away between building commits and
// pushing: Push fails (not ErrStale, no panic), nothing local moves, and once
// the remote is back the next Fetch and Push deliver the objects the failed
// push did not.
func TestPushRemoteVanishes(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		for _, cached := range []bool{false, true} {
			name := tr.name + "/memory"
			if cached {
				name = tr.name + "/disk"
			}
			t.Run(name, func(t *testing.T) {
				bare := gittest.NewBare(t, desiredState)
				url := tr.url(t, bare)
				var r *Repo
				if cached {
					r = openCached(t, url, t.TempDir())
				} else {
					r = open(t, url)
				}
				main := r.mustBranch(t, "main")
				c1 := commitOn(t, r, main, "one.txt", "1\n")
				c2 := commitOn(t, r, c1, "two.txt", "2\n")
				pending := len(r.pending)

				away := bare + ".away"
				if err := os.Rename(bare, away); err != nil {
					t.Fatal(err)
				}
				err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: main, New: c2})
				t.Logf("Push: %v", err)
				if err == nil || errors.Is(err, ErrStale) {
					t.Fatalf("Push to a vanished remote: %v, want an error other than ErrStale", err)
				}
				if got := r.mustBranch(t, "main"); got != main {
					t.Errorf("local main moved to %s", got)
				}
				if len(r.pending) != pending {
					t.Errorf("%d objects pending after the failed push, want %d", len(r.pending), pending)
				}

				if err := os.Rename(away, bare); err != nil {
					t.Fatal(err)
				}
				fetch(t, r)
				if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: main, New: c2}); err != nil {
					t.Fatalf("Push after the remote came back: %v", err)
				}
				if got := remoteHead(t, bare, "main"); got != c2 {
					t.Errorf("remote main = %s, want %s", got, c2)
				}
				if len(r.pending) != 0 {
					t.Errorf("%d objects still pending", len(r.pending))
				}
				gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
			})
		}
	}
}

// TestPushObjectsFromAnotherRepo pushes a commit whose parent was created by
// another Repo and never pushed: the server reports missing objects, and
// Push falls back to a full pack.
func TestPushObjectsFromAnotherRepo(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := gittest.NewBare(t, desiredState)
			url := tr.url(t, bare)
			cacheDir := t.TempDir()
			r := openCached(t, url, cacheDir)
			main := r.mustBranch(t, "main")
			c1 := commitOn(t, r, main, "one.txt", "1\n")
			r.Close()

			// A later process: c1 is in the mirror but not pending.
			r2 := openCached(t, url, cacheDir)
			if len(r2.pending) != 0 {
				t.Fatalf("%d objects pending in a fresh Repo", len(r2.pending))
			}
			c2 := commitOn(t, r2, c1, "two.txt", "2\n")
			if err := r2.Push(context.Background(), RefUpdate{Branch: "main", Old: main, New: c2}); err != nil {
				t.Fatalf("Push: %v", err)
			}
			if got := remoteHead(t, bare, "main"); got != c2 {
				t.Errorf("remote main = %s, want %s", got, c2)
			}
			gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
		})
	}
}

// TestPushSendsOnlyCreatedObjects checks the pack Push sends: the objects of
// the new commit only, not the history under it.
func TestPushSendsOnlyCreatedObjects(t *testing.T) {
	t.Parallel()
	bare := chainRepo(t, t.TempDir(), 200)
	r := open(t, bare)
	main := r.mustBranch(t, "main")
	other := commitOn(t, r, main, "unrelated.txt", "not pushed\n")
	c := commitOn(t, r, main, ledgerPath(201), "{}\n")
	objs, err := r.pendingFrom([]plumbing.Hash{c})
	if err != nil {
		t.Fatal(err)
	}
	// The commit, its blob, and the root, ledger/ and ledger/000000000 trees.
	if len(objs) != 5 {
		t.Errorf("pack of %d objects, want 5: %v", len(objs), objs)
	}
	if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: main, New: c}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.pending[other]; !ok {
		t.Error("an unpushed commit was dropped from the pending objects")
	}
	if _, ok := r.pending[c]; ok {
		t.Error("a pushed commit is still pending")
	}
	gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
}
