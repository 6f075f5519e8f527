package gitstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// A Stage's trees and commits are exactly Repo.WriteTree's and
// CreateCommit's (same hashes, same refusals), whatever the change: adds in
// new and existing directories, modifications, deletions that empty a
// directory, modes, names that sort around a directory ("a" < "a-b" < "a/"
// < "a0" in git's order).
func TestStageWriteTreeMatchesWriteTree(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	base := pushFiles(t, bare, "main", "main", map[string]string{
		"a/x.txt": "x\n", "a-b": "ab\n", "a0": "a0\n", "only/one.txt": "one\n", "deep/er/f": "f\n",
	}, "layout")
	r := open(t, bare)
	add := func(p, c string) FileChange {
		return FileChange{Path: p, Status: StatusAdded, Mode: filemode.Regular, Content: []byte(c)}
	}
	cases := []struct {
		name    string
		base    plumbing.Hash
		changes []FileChange
	}{
		{"empty base", plumbing.ZeroHash, []FileChange{add("x/y/z.txt", "z\n"), add("top", "t\n")}},
		{"add at every place", base, []FileChange{add("a/0.txt", "0\n"), add("a/zz.txt", "z\n"), add("a.", "dot\n"), add("a", "file a\n"), add("b/new/n.txt", "n\n")}},
		{"modify and mode", base, []FileChange{{Path: "a-b", Status: StatusModified, Mode: filemode.Executable, Content: []byte("#!/bin/sh\n")}, {Path: "a0", Status: StatusModified, Mode: filemode.Symlink, Content: []byte("a/x.txt")}}},
		{"delete empties a directory", base, []FileChange{{Path: "only/one.txt", Status: StatusDeleted}, {Path: "deep/er/f", Status: StatusDeleted}, add("only/two.txt", "2\n")}},
		{"no changes", base, nil},
		{"already exists", base, []FileChange{add("a/x.txt", "again\n")}},
		{"modify missing", base, []FileChange{{Path: "nope/x", Status: StatusModified, Content: []byte("x")}}},
		{"delete missing", base, []FileChange{{Path: "a/nope", Status: StatusDeleted}}},
		{"file as directory", base, []FileChange{add("a0/x", "x\n")}},
		{"twice", base, []FileChange{add("n", "1"), add("n", "2")}},
		{"bad path", base, []FileChange{add("../x", "x")}},
		{"bad mode", base, []FileChange{{Path: "m", Status: StatusAdded, Mode: filemode.Submodule, Content: []byte("x")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, werr := r.WriteTree(tc.base, tc.changes)
			s := r.NewStage()
			got, gerr := s.WriteTree(tc.base, tc.changes)
			if (werr == nil) != (gerr == nil) || errors.Is(werr, ErrNotFound) != errors.Is(gerr, ErrNotFound) {
				t.Fatalf("Stage.WriteTree error %v, Repo.WriteTree %v", gerr, werr)
			}
			if werr != nil {
				return
			}
			if got != want {
				t.Fatalf("Stage tree %s, Repo tree %s", got, want)
			}
			var parents []plumbing.Hash
			if !tc.base.IsZero() {
				parents = []plumbing.Hash{tc.base}
			}
			nc := NewCommit{Tree: got, Parents: parents, Author: testSig(), Message: tc.name + "\n"}
			wantC, err := r.CreateCommit(nc)
			if err != nil {
				t.Fatal(err)
			}
			gotC, err := s.CreateCommit(nc)
			if err != nil || gotC != wantC {
				t.Fatalf("Stage commit %s (%v), Repo commit %s", gotC, err, wantC)
			}
		})
	}
	s := r.NewStage()
	if _, err := s.CreateCommit(NewCommit{Tree: plumbing.NewHash(strings.Repeat("ab", 20)), Author: testSig()}); !errors.Is(err, ErrNotFound) {
		t.Errorf("commit of a missing tree: %v", err)
	}
}

// A chain of ledger-like commits built in Stages (each on the one before,
// the next built before the previous is pushed) is pushed with one pack per
// Stage over a local path and smart HTTP, from an in-memory and an on-disk
// mirror: the remote passes git fsck, has every entry, and a new Repo on
// the on-disk mirror reads them from the packs Seal wrote.
func TestStagePushChain(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		for _, storage := range []string{"memory", "disk"} {
			t.Run(tr.name+"/"+storage, func(t *testing.T) {
				t.Parallel()
				bare := gittest.NewBare(t, desiredState)
				url := tr.url(t, bare)
				opts := Options{}
				if storage == "disk" {
					opts.CacheDir = t.TempDir()
				}
				r, err := Open(context.Background(), url, opts)
				if err != nil {
					t.Fatal(err)
				}
				head, err := r.Branch("main")
				if err != nil {
					t.Fatal(err)
				}
				old := head
				var prev *Stage
				var prevTip plumbing.Hash
				seq := 0
				for batch := 0; batch < 6; batch++ {
					s := r.NewStage()
					if prev != nil {
						s = prev.Next()
					}
					for i := 0; i < 1+batch*3; i++ {
						seq++
						tree, err := s.WriteTree(head, []FileChange{{Path: ledgerPath(seq), Status: StatusAdded, Content: fmt.Appendf(nil, "{\"seq\":%d}\n", seq)}})
						if err != nil {
							t.Fatal(err)
						}
						head, err = s.CreateCommit(NewCommit{Tree: tree, Parents: []plumbing.Hash{head}, Author: testSig(), Message: fmt.Sprintf("entry %d\n", seq)})
						if err != nil {
							t.Fatal(err)
						}
					}
					if prev != nil {
						// The previous Stage is pushed after this one was built on it.
						if err := r.PushStage(context.Background(), prev, RefUpdate{Branch: "main", Old: old, New: prevTip}); err != nil {
							t.Fatal(err)
						}
						old = prevTip
					}
					prev, prevTip = s, head
				}
				if err := r.PushStage(context.Background(), prev, RefUpdate{Branch: "main", Old: old, New: prevTip}); err != nil {
					t.Fatal(err)
				}
				if got := remoteHead(t, bare, "main"); got != head {
					t.Fatalf("remote main %s, want %s", got, head)
				}
				gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
				if n := gittest.Git(t, bare, "rev-list", "--count", old.String()+"~5.."+head.String()); n == "" {
					t.Fatal("no history")
				}
				for i := 1; i <= seq; i++ {
					b, err := r.ReadFile(head, ledgerPath(i))
					if err != nil || string(b) != fmt.Sprintf("{\"seq\":%d}\n", i) {
						t.Fatalf("entry %d: %q, %v", i, b, err)
					}
				}
				// A stale Stage is refused with ErrStale and moves nothing.
				s := r.NewStage()
				tree, err := s.WriteTree(old, []FileChange{{Path: "stale.txt", Status: StatusAdded, Content: []byte("x")}})
				if err != nil {
					t.Fatal(err)
				}
				c, err := s.CreateCommit(NewCommit{Tree: tree, Parents: []plumbing.Hash{old}, Author: testSig(), Message: "stale\n"})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.PushStage(context.Background(), s, RefUpdate{Branch: "main", Old: old, New: c}); !errors.Is(err, ErrStale) {
					t.Fatalf("stale push: %v", err)
				}
				if got, _ := r.Branch("main"); got != head {
					t.Fatalf("local main moved to %s", got)
				}
				r.Close()
				if storage == "disk" {
					packs, _ := filepath.Glob(filepath.Join(opts.CacheDir, "*", "objects", "pack", "*.pack"))
					if len(packs) < 2 {
						t.Errorf("packs in the mirror: %v", packs)
					}
					r2, err := Open(context.Background(), url, Options{CacheDir: opts.CacheDir, NoFetch: true})
					if err != nil {
						t.Fatal(err)
					}
					defer r2.Close()
					if b, err := r2.ReadFile(head, ledgerPath(seq)); err != nil || !strings.Contains(string(b), fmt.Sprint(seq)) {
						t.Fatalf("reopened mirror: %q, %v", b, err)
					}
				}
			})
		}
	}
}

// A receive-pack that dies in the middle of a push (killed from its
// pre-receive hook) fails the push, over a local path and smart HTTP
// (whose response is then empty, which go-git reads as no report at all),
// for Push and PushStage alike, and no local branch moves.
func TestPushReceivePackDies(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			bare := gittest.NewBare(t, desiredState)
			hook := "#!/bin/sh\nkill -9 $PPID\nexit 1\n"
			if err := os.WriteFile(filepath.Join(bare, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
				t.Fatal(err)
			}
			r := open(t, tr.url(t, bare))
			head, err := r.Branch("main")
			if err != nil {
				t.Fatal(err)
			}
			c, err := tryCommitOn(r, head, "x.txt", "x\n")
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Push(context.Background(), RefUpdate{Branch: "main", Old: head, New: c}); err == nil {
				t.Fatal("Push succeeded though receive-pack died")
			}
			s := r.NewStage()
			tree, err := s.WriteTree(head, []FileChange{{Path: "y.txt", Status: StatusAdded, Content: []byte("y\n")}})
			if err != nil {
				t.Fatal(err)
			}
			c2, err := s.CreateCommit(NewCommit{Tree: tree, Parents: []plumbing.Hash{head}, Author: testSig(), Message: "y\n"})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.PushStage(context.Background(), s, RefUpdate{Branch: "main", Old: head, New: c2}); err == nil {
				t.Fatal("PushStage succeeded though receive-pack died")
			}
			if got, _ := r.Branch("main"); got != head {
				t.Fatalf("local main moved to %s", got)
			}
			if got := remoteHead(t, bare, "main"); got != head {
				t.Fatalf("remote main moved to %s", got)
			}
		})
	}
}

// One pack per PushStage accumulates in an on-disk mirror past maxPacks:
// maintenance merges them by concatenation, every entry stays readable (in
// this Repo and in a new one on the mirror), and git fsck accepts the
// merged packs and their indexes.
func TestStagePacksMerged(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	cache := t.TempDir()
	r, err := Open(context.Background(), bare, Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	head, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	seq := 0
	most := 0
	for push := 0; push < 3*maxPacks; push++ {
		s := r.NewStage()
		old := head
		for i := 0; i < 1+push%3; i++ {
			seq++
			tree, err := s.WriteTree(head, []FileChange{{Path: ledgerPath(seq), Status: StatusAdded, Content: fmt.Appendf(nil, "{\"seq\":%d}\n", seq)}})
			if err != nil {
				t.Fatal(err)
			}
			if head, err = s.CreateCommit(NewCommit{Tree: tree, Parents: []plumbing.Hash{head}, Author: testSig(), Message: fmt.Sprintf("entry %d\n", seq)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.PushStage(context.Background(), s, RefUpdate{Branch: "main", Old: old, New: head}); err != nil {
			t.Fatal(err)
		}
		most = max(most, len(packs(t, r)))
	}
	if most > maxPacks {
		t.Errorf("%d packs in the mirror, want at most %d", most, maxPacks)
	}
	check := func(r *Repo) {
		t.Helper()
		for i := 1; i <= seq; i++ {
			if b, err := r.ReadFile(head, ledgerPath(i)); err != nil || string(b) != fmt.Sprintf("{\"seq\":%d}\n", i) {
				t.Fatalf("entry %d: %q, %v", i, b, err)
			}
		}
	}
	check(r)
	mirror := r.disk.mirror
	r.Close()
	gittest.Git(t, mirror, "fsck", "--strict", "--no-dangling")
	r2, err := Open(context.Background(), bare, Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	check(r2)
	gittest.Git(t, bare, "fsck", "--strict")
}
