package gitstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// holdLockEnv makes the test binary a child that opens the repository
// "<url>\n<cache dir>" with a disk cache, prints "locked" and waits for its
// standard input to close (see TestMain).
const holdLockEnv = "GITSTORE_TEST_HOLD_LOCK"

// holdLock is the child process of TestCacheLocked.
func holdLock(spec string) int {
	url, cacheDir, _ := strings.Cut(spec, "\n")
	r, err := Open(context.Background(), url, Options{CacheDir: cacheDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n')
	r.Close()
	return 0
}

func openCached(t *testing.T, url, cacheDir string) *Repo {
	t.Helper()
	r, err := Open(context.Background(), url, Options{CacheDir: cacheDir})
	if err != nil {
		t.Fatalf("Open(%q, CacheDir %q): %v", url, cacheDir, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// packs returns the object count of each pack of the mirror, by pack hash.
func packs(t *testing.T, r *Repo) map[plumbing.Hash]int {
	t.Helper()
	hs, err := r.disk.st.ObjectPacks()
	if err != nil {
		t.Fatal(err)
	}
	out := map[plumbing.Hash]int{}
	for _, h := range hs {
		n, err := r.disk.packObjects(h)
		if err != nil {
			t.Fatal(err)
		}
		out[h] = n
	}
	return out
}

// TestCacheIncrementalFetch opens a remote of 300 commits into a disk cache,
// closes it, adds commits to the remote and opens it again: the second Open
// reuses the mirror and receives a pack of only the new objects.
func TestCacheIncrementalFetch(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := chainRepo(t, t.TempDir(), 300)
			url := tr.url(t, bare)
			cacheDir := t.TempDir()

			r := openCached(t, url, cacheDir)
			first := packs(t, r)
			if len(first) != 1 {
				t.Fatalf("first Open wrote %d packs, want 1", len(first))
			}
			for _, n := range first {
				if n < 5*300 {
					t.Errorf("first pack has %d objects, want at least %d", n, 5*300)
				}
			}
			state := r.StateDir()
			if fi, err := os.Stat(state); err != nil || !fi.IsDir() || !strings.HasPrefix(state, cacheDir) {
				t.Errorf("StateDir() = %q (%v), want a directory in %q", state, err, cacheDir)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := r.Fetch(context.Background()); err == nil {
				t.Error("Fetch after Close succeeded")
			}

			const added = 4
			work := gittest.Clone(t, url)
			for i := 301; i <= 300+added; i++ {
				p := filepath.Join(work, filepath.FromSlash(ledgerPath(i)))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(strconv.Itoa(i)), 0o644); err != nil {
					t.Fatal(err)
				}
				gittest.Git(t, work, "add", ".")
				gittest.Git(t, work, "commit", "--quiet", "-m", "entry")
			}
			gittest.Git(t, work, "push", "--quiet", "origin", "main")

			r2 := openCached(t, url, cacheDir)
			if r2.StateDir() != state {
				t.Errorf("second StateDir() = %q, want %q", r2.StateDir(), state)
			}
			second := packs(t, r2)
			var newPacks []int
			for h, n := range second {
				if _, ok := first[h]; !ok {
					newPacks = append(newPacks, n)
				}
			}
			// Each commit brings itself, its blob, and the root, ledger and
			// directory trees.
			if len(newPacks) != 1 || newPacks[0] > 5*added {
				t.Errorf("second Open fetched packs of %v objects, want one of at most %d", newPacks, 5*added)
			}
			if got, want := r2.mustBranch(t, "main"), remoteHead(t, bare, "main"); got != want {
				t.Errorf("main = %s, want %s", got, want)
			}
			if _, err := r2.ReadFile(r2.mustBranch(t, "main"), ledgerPath(300+added)); err != nil {
				t.Error(err)
			}

			// Up to date: nothing is fetched.
			fetch(t, r2)
			if got := packs(t, r2); !maps.Equal(got, second) {
				t.Errorf("no-op Fetch changed the packs: %v, was %v", got, second)
			}
		})
	}
}

func TestCacheKey(t *testing.T) {
	t.Parallel()
	a := cacheKey("https://user:token@example.com/org/repo.git")
	if a != cacheKey("https://example.com/org/repo.git") || a != cacheKey("https://other@example.com/org/repo.git") {
		t.Errorf("credentials change the key: %q", a)
	}
	if strings.Contains(a, "token") || strings.Contains(a, "user") {
		t.Errorf("key %q contains credentials", a)
	}
	if !strings.HasPrefix(a, "example.com-org-repo.git-") || len(a) != len("example.com-org-repo.git-")+16 {
		t.Errorf("key = %q, want example.com-org-repo.git-<16 hex digits>", a)
	}
	if a == cacheKey("https://example.com/org/repo2.git") || cacheKey("/a/b") == cacheKey("/a-b") {
		t.Error("different repositories share a key")
	}
	if k := cacheKey("/" + strings.Repeat("x/", 100)); len(k) > 64+17 {
		t.Errorf("key of a long path is %d bytes long", len(k))
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/somewhere")
	if got, err := DefaultCacheDir(); err != nil || got != "/somewhere/agentgitops-reconciler" {
		t.Errorf("DefaultCacheDir() = %q, %v", got, err)
	}
}

// TestCacheCorrupt breaks a mirror in the ways disks and crashes do: Open,
// or Fetch on an open Repo, must fail with ErrCacheUnusable naming the
// mirror, never panic; deleting the mirror fixes it.
func TestCacheCorrupt(t *testing.T) {
	t.Parallel()
	onePack := func(t *testing.T, mirror string) string {
		t.Helper()
		m, err := filepath.Glob(filepath.Join(mirror, "objects", "pack", "pack-*.pack"))
		if err != nil || len(m) != 1 {
			t.Fatalf("packs: %v, %v", m, err)
		}
		return m[0]
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T, mirror string)
	}{{
		name: "garbage pack and index",
		corrupt: func(t *testing.T, mirror string) {
			base := filepath.Join(mirror, "objects", "pack", "pack-"+strings.Repeat("1", 40))
			os.WriteFile(base+".pack", []byte("garbage garbage garbage garbage garbage"), 0o644)
			os.WriteFile(base+".idx", []byte("garbage"), 0o644)
		},
	}, {
		name: "garbage index of a real pack",
		corrupt: func(t *testing.T, mirror string) {
			idx := strings.TrimSuffix(onePack(t, mirror), ".pack") + ".idx"
			b, _ := os.ReadFile(idx)
			for i := 8; i < len(b)-40; i++ {
				b[i] = 0xff
			}
			os.WriteFile(idx, b, 0o644)
		},
	}, {
		name: "truncated pack",
		corrupt: func(t *testing.T, mirror string) {
			p := onePack(t, mirror)
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "pack without index",
		corrupt: func(t *testing.T, mirror string) {
			os.Remove(strings.TrimSuffix(onePack(t, mirror), ".pack") + ".idx")
		},
	}, {
		name: "broken HEAD",
		corrupt: func(t *testing.T, mirror string) {
			os.WriteFile(filepath.Join(mirror, "HEAD"), []byte("garbage\n"), 0o644)
		},
	}, {
		name: "broken config",
		corrupt: func(t *testing.T, mirror string) {
			os.WriteFile(filepath.Join(mirror, "config"), []byte("[core\n\x00\x01 = = =\n"), 0o644)
		},
	}, {
		name: "missing config",
		corrupt: func(t *testing.T, mirror string) {
			os.Remove(filepath.Join(mirror, "config"))
		},
	}, {
		name: "branch at a missing commit",
		corrupt: func(t *testing.T, mirror string) {
			p := filepath.Join(mirror, "refs", "heads", "main")
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(strings.Repeat("ab", 20)+"\n"), 0o644)
			os.Remove(filepath.Join(mirror, "packed-refs"))
		},
	}, {
		name: "empty mirror directory",
		corrupt: func(t *testing.T, mirror string) {
			os.RemoveAll(mirror)
			os.Mkdir(mirror, 0o755)
		},
	}}
	bare := chainRepo(t, t.TempDir(), 50)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cacheDir := t.TempDir()
			r := openCached(t, bare, cacheDir)
			mirror := r.disk.mirror
			r.Close()
			tt.corrupt(t, mirror)

			_, err := Open(context.Background(), bare, Options{CacheDir: cacheDir})
			t.Logf("Open: %v", err)
			if !errors.Is(err, ErrCacheUnusable) || !strings.Contains(err.Error(), mirror) || !strings.Contains(err.Error(), "delete it") {
				t.Errorf("Open error = %v, want ErrCacheUnusable naming %q and how to fix it", err, mirror)
			}
			if err := os.RemoveAll(mirror); err != nil {
				t.Fatal(err)
			}
			openCached(t, bare, cacheDir).Close()
		})
	}

	t.Run("fetch after the pack was truncated", func(t *testing.T) {
		t.Parallel()
		bare := chainRepo(t, t.TempDir(), 50)
		r := openCached(t, bare, t.TempDir())
		pushFiles(t, bare, "main", "main", map[string]string{"x.txt": "x\n"}, "more")
		p := onePack(t, r.disk.mirror)
		fi, _ := os.Stat(p)
		os.Truncate(p, fi.Size()-100)
		err := r.Fetch(context.Background())
		t.Logf("Fetch: %v", err)
		if !errors.Is(err, ErrCacheUnusable) || !strings.Contains(err.Error(), r.disk.mirror) {
			t.Errorf("Fetch error = %v, want ErrCacheUnusable naming %q", err, r.disk.mirror)
		}
	})
}

// TestCacheNotWritable points CacheDir where no directory can be made, even
// by root.
func TestCacheNotWritable(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(readOnly, 0o555)
	for _, tt := range []struct{ name, dir string }{
		{"a regular file", file},
		{"under a regular file", filepath.Join(file, "cache")},
		{"under /proc", "/proc/self/gitstore-cache"},
		{"read-only directory", readOnly},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.dir == readOnly && os.Geteuid() == 0 {
				t.Skip("root can write to a read-only directory")
			}
			_, err := Open(context.Background(), bare, Options{CacheDir: tt.dir})
			t.Logf("Open: %v", err)
			if !errors.Is(err, ErrCacheUnusable) || !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("Open error = %v, want ErrCacheUnusable naming %q", err, tt.dir)
			}
		})
	}
}

// TestCacheLocked has a child process hold the mirror: Open waits for
// LockTimeout, then fails with ErrCacheLocked naming the mirror and the
// child; once the child is gone Open succeeds.
func TestCacheLocked(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	cacheDir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), holdLockEnv+"="+bare+"\n"+cacheDir)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("child said %q, %v", line, err)
	}

	start := time.Now()
	_, err = Open(context.Background(), bare, Options{CacheDir: cacheDir, LockTimeout: 300 * time.Millisecond})
	t.Logf("Open: %v", err)
	if !errors.Is(err, ErrCacheLocked) {
		t.Fatalf("Open error = %v, want ErrCacheLocked", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Open gave up after %s, before LockTimeout", d)
	}
	for _, want := range []string{cacheDir, fmt.Sprintf("pid %d", child.Process.Pid), "--cache-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// Released while we wait: Open succeeds.
	time.AfterFunc(200*time.Millisecond, func() { stdin.Close() })
	r, err := Open(context.Background(), bare, Options{CacheDir: cacheDir, LockTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("Open after the child released the lock: %v", err)
	}
	r.Close()
	if err := child.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
}

// TestCacheRepack accumulates loose objects and packs in a mirror past the
// thresholds: maintenance packs them, and every object stays readable.
func TestCacheRepack(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := openCached(t, bare, t.TempDir())
	head := r.mustBranch(t, "main")

	// Loose objects: each commit writes a blob, two trees and the commit.
	var commits []plumbing.Hash
	for i := 1; r.disk.loose <= maxLooseObjects; i++ {
		head = commitOn(t, r, head, ledgerPath(i), strconv.Itoa(i))
		commits = append(commits, head)
	}
	before := len(packs(t, r))
	if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: r.mustBranch(t, "main"), New: head}); err != nil {
		t.Fatal(err)
	}
	if n, err := r.disk.countLoose(); err != nil || n != 0 || r.disk.loose != 0 {
		t.Errorf("after Push: %d loose objects (counted %d), %v; want 0", n, r.disk.loose, err)
	}
	if got := len(packs(t, r)); got != before+1 {
		t.Errorf("%d packs, want %d", got, before+1)
	}
	for i, c := range commits {
		if b, err := r.ReadFile(c, ledgerPath(i+1)); err != nil || string(b) != strconv.Itoa(i+1) {
			t.Fatalf("ReadFile(%s) = %q, %v", ledgerPath(i+1), b, err)
		}
	}

	// Packs: one per fetch.
	work := gittest.Clone(t, bare)
	for i := range maxPacks + 5 {
		os.WriteFile(filepath.Join(work, "f.txt"), []byte(strconv.Itoa(i)), 0o644)
		gittest.Git(t, work, "add", ".")
		gittest.Git(t, work, "commit", "--quiet", "-m", "more")
		gittest.Git(t, work, "push", "--quiet", "origin", "main")
		fetch(t, r)
		if n := len(packs(t, r)); n > maxPacks {
			t.Fatalf("fetch %d: %d packs, want at most %d", i, n, maxPacks)
		}
	}
	main := r.mustBranch(t, "main")
	if got, want := main, remoteHead(t, bare, "main"); got != want {
		t.Errorf("main = %s, want %s", got, want)
	}
	if b, err := r.ReadFile(main, "f.txt"); err != nil || string(b) != strconv.Itoa(maxPacks+4) {
		t.Errorf("ReadFile(f.txt) = %q, %v", b, err)
	}
	if _, err := r.FirstParents(main, 0); err != nil {
		t.Error(err)
	}
	gittest.Git(t, r.disk.mirror, "fsck", "--strict", "--no-dangling")
}

func TestGeometricSplit(t *testing.T) {
	t.Parallel()
	sizes := func(ns ...int) []packSize {
		var out []packSize
		for _, n := range ns {
			out = append(out, packSize{objects: n})
		}
		return out
	}
	for _, tt := range []struct {
		sizes []int
		want  int
	}{
		{[]int{1, 2, 4, 8, 16}, 0},
		{[]int{1, 1, 1, 1, 1000}, 4},
		{[]int{5, 5, 5, 5, 30}, 5},
		{[]int{1, 1, 8, 100}, 2},
	} {
		if got := geometricSplit(sizes(tt.sizes...)); got != tt.want {
			t.Errorf("geometricSplit(%v) = %d, want %d", tt.sizes, got, tt.want)
		}
	}
}
