package gitstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestMergeBase(t *testing.T) {
	t.Parallel()
	r, c1, c2, f1, f2, m := history(t)
	for _, tt := range []struct {
		name       string
		a, b, want plumbing.Hash
	}{
		{"branches", f2, c2, c1},
		{"ancestor", c1, m, c1},
		{"merged branch", f1, m, f1},
		{"same", c2, c2, c2},
	} {
		got, err := r.MergeBase(tt.a, tt.b)
		if err != nil || got != tt.want {
			t.Errorf("%s: MergeBase = %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}
	if _, err := r.MergeBase(plumbing.NewHash(strings.Repeat("12", 20)), m); !errors.Is(err, ErrNotFound) {
		t.Errorf("MergeBase(missing) error = %v, want ErrNotFound", err)
	}
}

// TestDiffMatchesChangesAndGit checks Diff of two commits made by the git
// CLI against Changes of the same edit in a work tree and against git's
// own name-status.
func TestDiffMatchesChangesAndGit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bare := gittest.NewBare(t, desiredState)
	work := gittest.Clone(t, bare)
	base := plumbing.NewHash(gittest.Git(t, work, "rev-parse", "HEAD"))
	write := func(p, content string, perm os.FileMode) {
		full := filepath.Join(work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), perm); err != nil {
			t.Fatal(err)
		}
	}
	files := strings.Fields(gittest.Git(t, work, "ls-files"))
	if len(files) < 2 {
		t.Fatalf("desired state has %d files, want at least 2", len(files))
	}
	write(files[0], "changed\nlines\n", 0o644)
	if err := os.Remove(filepath.Join(work, files[1])); err != nil {
		t.Fatal(err)
	}
	write("deep/new/dir/file.txt", "one\ntwo\nthree\n", 0o644)
	write("tools/run.sh", "#!/bin/sh\n", 0o755)
	if err := os.Symlink("deep/new/dir/file.txt", filepath.Join(work, "new-link")); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, work, "add", "--all")
	gittest.Git(t, work, "commit", "--quiet", "-m", "edit")
	head := plumbing.NewHash(gittest.Git(t, work, "rev-parse", "HEAD"))
	gittest.Git(t, work, "push", "--quiet", "origin", "HEAD")
	nameStatus := gittest.Git(t, work, "diff", "--no-renames", "--name-status", base.String(), head.String())

	r := open(t, bare)
	got, err := r.Diff(ctx, base, head)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		lines = append(lines, map[string]string{StatusAdded: "A", StatusModified: "M", StatusDeleted: "D"}[c.Status]+"\t"+c.Path)
	}
	if strings.Join(lines, "\n") != strings.TrimSpace(nameStatus) {
		t.Errorf("Diff:\n%s\ngit diff --name-status:\n%s", strings.Join(lines, "\n"), nameStatus)
	}
	dir := filepath.Join(t.TempDir(), "ws")
	if err := r.Checkout(ctx, head, dir); err != nil {
		t.Fatal(err)
	}
	want, err := r.Changes(ctx, base, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("Diff has %d changes, Changes %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Path != g.Path || w.Status != g.Status || w.Mode != g.Mode || string(w.Content) != string(g.Content) ||
			w.Added != g.Added || w.Removed != g.Removed {
			t.Errorf("change %d: Diff %+v, Changes %+v", i, g, w)
		}
	}
	for _, c := range got {
		if c.Path == "tools/run.sh" && c.Mode != filemode.Executable {
			t.Errorf("tools/run.sh mode = %v, want executable", c.Mode)
		}
		if c.Path == "new-link" && c.Mode != filemode.Symlink {
			t.Errorf("new-link mode = %v, want symlink", c.Mode)
		}
	}
	if same, err := r.Diff(ctx, head, head); err != nil || len(same) != 0 {
		t.Errorf("Diff(head, head) = %v, %v; want nothing", same, err)
	}
}
