package gitstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// treeListing returns `git ls-tree -r` of a tree as "mode path" lines.
func treeListing(t *testing.T, r *Repo, tree plumbing.Hash) []string {
	t.Helper()
	tr, err := object.GetTree(r.repo.Storer, tree)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = r.walkTree(tr, func(p string, e object.TreeEntry) error {
		if e.Mode != filemode.Dir {
			out = append(out, e.Mode.String()+" "+p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteTree(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	add := func(p, content string) FileChange {
		return FileChange{Path: p, Status: StatusAdded, Content: []byte(content)}
	}
	tests := []struct {
		name     string
		base     plumbing.Hash
		changes  []FileChange
		want     []string // ls-tree listing
		wantErr  string
		notFound bool
	}{
		{
			name:    "empty tree",
			base:    plumbing.ZeroHash,
			changes: nil,
			want:    nil,
		},
		{
			name:    "nested paths on the empty tree",
			base:    plumbing.ZeroHash,
			changes: []FileChange{add("ledger/000000000/000000000001.json", "{}\n"), add("ledger/000000000/000000000002.json", "{}\n"), add("README", "x")},
			want:    []string{"0100644 README", "0100644 ledger/000000000/000000000001.json", "0100644 ledger/000000000/000000000002.json"},
		},
		{
			name: "modes",
			base: plumbing.ZeroHash,
			changes: []FileChange{
				{Path: "run.sh", Status: StatusAdded, Mode: filemode.Executable, Content: []byte("#!/bin/sh\n")},
				{Path: "link", Status: StatusAdded, Mode: filemode.Symlink, Content: []byte("run.sh")},
				{Path: "plain", Status: StatusAdded, Mode: filemode.Regular, Content: []byte("x")},
			},
			want: []string{"0120000 link", "0100644 plain", "0100755 run.sh"},
		},
		{
			name: "delete prunes empty directories, add replaces a file by a directory",
			base: main,
			changes: []FileChange{
				{Path: "agents/fixer.hcl", Status: StatusDeleted},
				{Path: "agents/reviewer.hcl", Status: StatusDeleted},
				add("config.yaml/replicas", "2\n"),
				{Path: "config.yaml", Status: StatusDeleted},
				{Path: "scripts/deploy.sh", Status: StatusModified, Mode: filemode.Regular, Content: []byte("echo\n")},
			},
			want: []string{"0100644 README.md", "0100644 config.yaml/replicas", "0100644 data.bin", "0100644 docs/guide.md", "0120000 link", "0100644 scripts/deploy.sh"},
		},
		{name: "add existing", base: main, changes: []FileChange{add("README.md", "x")}, wantErr: "already exists"},
		{name: "add below a file", base: main, changes: []FileChange{add("README.md/x", "x")}, wantErr: "not a directory"},
		{name: "modify missing", base: main, changes: []FileChange{{Path: "nope", Status: StatusModified, Content: []byte("x")}}, notFound: true},
		{name: "modify a directory", base: main, changes: []FileChange{{Path: "agents", Status: StatusModified, Content: []byte("x")}}, notFound: true},
		{name: "delete missing", base: main, changes: []FileChange{{Path: "agents/nope.hcl", Status: StatusDeleted}}, notFound: true},
		{name: "delete a directory", base: main, changes: []FileChange{{Path: "agents", Status: StatusDeleted}}, notFound: true},
		{name: "twice", base: main, changes: []FileChange{add("x", "1"), add("x", "2")}, wantErr: "twice"},
		{name: "unknown status", base: main, changes: []FileChange{{Path: "x", Status: "renamed"}}, wantErr: "unknown status"},
		{name: "bad mode", base: main, changes: []FileChange{{Path: "x", Status: StatusAdded, Mode: filemode.Submodule}}, wantErr: "unsupported mode"},
		{name: "empty symlink", base: main, changes: []FileChange{{Path: "x", Status: StatusAdded, Mode: filemode.Symlink}}, wantErr: "symlink"},
		{name: "dot-dot", base: main, changes: []FileChange{add("../x", "1")}, wantErr: "unsafe path"},
		{name: "absolute", base: main, changes: []FileChange{add("/x", "1")}, wantErr: "unsafe path"},
		{name: ".git", base: main, changes: []FileChange{add(".git/hooks/pre-commit", "1")}, wantErr: "unsafe path"},
		{name: "trailing slash", base: main, changes: []FileChange{add("dir/", "1")}, wantErr: "unsafe path"},
		{name: "missing base", base: plumbing.NewHash(strings.Repeat("ab", 20)), notFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := r.WriteTree(tt.base, tt.changes)
			switch {
			case tt.notFound:
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("error = %v, want ErrNotFound", err)
				}
				return
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want %q", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got := treeListing(t, r, tree); !slices.Equal(got, tt.want) {
				t.Errorf("tree = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("no changes keeps the tree", func(t *testing.T) {
		tree, err := r.WriteTree(main, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := r.TreeOf(main); tree != want {
			t.Errorf("WriteTree(main, nil) = %s, want %s", tree, want)
		}
	})
}

func TestCreateCommit(t *testing.T) {
	t.Parallel()
	r := open(t, gittest.NewBare(t, desiredState))
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := r.TreeOf(main)
	if err != nil {
		t.Fatal(err)
	}
	author := testSig()
	committer := object.Signature{Name: "Bot", Email: "bot@example.com", When: author.When.Add(time.Hour)}
	tests := []struct {
		name    string
		c       NewCommit
		wantErr string
	}{
		{name: "orphan", c: NewCommit{Tree: tree, Author: author, Message: "root\n"}},
		{name: "child with committer", c: NewCommit{Tree: tree, Parents: []plumbing.Hash{main}, Author: author, Committer: committer, Message: "child\n\nKey: value\n"}},
		{name: "missing tree", c: NewCommit{Tree: plumbing.NewHash(strings.Repeat("ab", 20)), Author: author}, wantErr: "not found"},
		{name: "missing parent", c: NewCommit{Tree: tree, Parents: []plumbing.Hash{plumbing.NewHash(strings.Repeat("ab", 20))}, Author: author}, wantErr: "not found"},
		{name: "no author", c: NewCommit{Tree: tree}, wantErr: "author"},
		{name: "no time", c: NewCommit{Tree: tree, Author: object.Signature{Name: "a", Email: "a@example.com"}}, wantErr: "time is required"},
		{name: "header injection", c: NewCommit{Tree: tree, Author: object.Signature{Name: "a\nparent x", Email: "a@example.com", When: author.When}}, wantErr: "control character"},
		{name: "partial committer", c: NewCommit{Tree: tree, Author: author, Committer: object.Signature{Name: "x"}}, wantErr: "committer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := r.CreateCommit(tt.c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, err := r.Commit(h)
			if err != nil {
				t.Fatal(err)
			}
			wantCommitter := tt.c.Committer
			if wantCommitter.Name == "" {
				wantCommitter = tt.c.Author
			}
			if c.TreeHash != tt.c.Tree || !slices.Equal(c.ParentHashes, tt.c.Parents) || c.Message != tt.c.Message ||
				c.Author.Name != tt.c.Author.Name || !c.Author.When.Equal(tt.c.Author.When) ||
				c.Committer.Email != wantCommitter.Email || !c.Committer.When.Equal(wantCommitter.When) {
				t.Errorf("stored commit %+v does not match %+v", c, tt.c)
			}
		})
	}
}

// TestOrphanBranch builds a ledger branch in the object store and pushes it.
func TestOrphanBranch(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := context.Background()
			bare := gittest.NewBare(t, desiredState)
			r := open(t, tr.url(t, bare))
			var head plumbing.Hash
			for i, entry := range []string{"000000000001", "000000000002", "000000000003"} {
				p := "ledger/000000000/" + entry + ".json"
				tree, err := r.WriteTree(head, []FileChange{{Path: p, Status: StatusAdded, Content: []byte(`{"seq":` + entry + "}\n")}})
				if err != nil {
					t.Fatal(err)
				}
				var parents []plumbing.Hash
				if !head.IsZero() {
					parents = []plumbing.Hash{head}
				}
				sig := testSig()
				sig.When = sig.When.Add(time.Duration(i) * time.Minute)
				c, err := r.CreateCommit(NewCommit{Tree: tree, Parents: parents, Author: sig, Message: "ledger: entry " + entry + "\n\nLedger-Seq: " + entry + "\n"})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Push(ctx, RefUpdate{Branch: "agent-evidence", Old: head, New: c}); err != nil {
					t.Fatalf("Push entry %s: %v", entry, err)
				}
				head = c
			}
			if got := remoteHead(t, bare, "agent-evidence"); got != head {
				t.Fatalf("remote agent-evidence = %s, want %s", got, head)
			}
			if got, err := r.Branch("agent-evidence"); err != nil || got != head {
				t.Errorf("local agent-evidence = %s, %v; want %s", got, err, head)
			}
			gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
			log := lines(gittest.Git(t, bare, "log", "--format=%H %P|%s", "agent-evidence"))
			if len(log) != 3 || log[0] != head.String()+" "+log[1][:40]+"|ledger: entry 000000000003" {
				t.Errorf("git log agent-evidence = %q", log)
			}
			if len(log) == 3 && !strings.HasSuffix(log[2], " |ledger: entry 000000000001") {
				t.Errorf("first ledger commit has parents: %q", log[2])
			}
			if roots := lines(gittest.Git(t, bare, "rev-list", "--max-parents=0", "agent-evidence")); len(roots) != 1 {
				t.Errorf("agent-evidence roots = %q", roots)
			}
			if got := gittest.Git(t, bare, "log", "-1", "--format=%(trailers:key=Ledger-Seq,valueonly)", "agent-evidence"); got != "000000000003" {
				t.Errorf("git reads trailer Ledger-Seq = %q", got)
			}
			files := lines(gittest.Git(t, bare, "ls-tree", "-r", "--name-only", "agent-evidence"))
			want := []string{"ledger/000000000/000000000001.json", "ledger/000000000/000000000002.json", "ledger/000000000/000000000003.json"}
			if !slices.Equal(files, want) {
				t.Errorf("agent-evidence files = %q, want %q", files, want)
			}
			if got := gittest.Git(t, bare, "show", "agent-evidence:ledger/000000000/000000000002.json"); got != `{"seq":000000000002}` {
				t.Errorf("entry 2 = %q", got)
			}
		})
	}
}
