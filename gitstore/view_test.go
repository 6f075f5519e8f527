package gitstore

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestLiteralDir(t *testing.T) {
	for g, want := range map[string]string{
		"**": "", "deploy/**": "deploy/", "deploy/prod/*.yaml": "deploy/prod/", "a/b/c.txt": "a/b/",
		"*.md": "", "docs/{a,b}/x": "docs/", "x": "",
	} {
		if got := literalDir(g); got != want {
			t.Errorf("literalDir(%q) = %q, want %q", g, got, want)
		}
	}
}

// A view's checkout holds exactly its files; Changes against the same view
// sees no deletion of what it left out, an edit inside it, and a file
// created outside it as added.
func TestCheckoutView(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := open(t, gittest.NewBare(t, desiredState))
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	view := &View{Globs: []string{"agents/*.hcl"}, Files: []string{"scripts/deploy.sh"}}
	dir := filepath.Join(t.TempDir(), "ws")
	if err := r.CheckoutView(ctx, main, dir, view); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(got)
	if want := []string{"agents/fixer.hcl", "agents/reviewer.hcl", "scripts/deploy.sh"}; !slices.Equal(got, want) {
		t.Fatalf("view checkout holds %q, want %q", got, want)
	}
	if ch, err := r.ChangesView(ctx, main, dir, view); err != nil || len(ch) != 0 {
		t.Fatalf("ChangesView right after CheckoutView = %+v, %v; want none", ch, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agents/fixer.hcl"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ch, err := r.ChangesView(ctx, main, dir, view)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, c := range ch {
		summary = append(summary, c.Status+" "+c.Path)
	}
	if want := []string{StatusAdded + " README.md", StatusModified + " agents/fixer.hcl"}; !slices.Equal(summary, want) {
		t.Errorf("ChangesView = %q, want %q", summary, want)
	}
	// The whole-tree comparison of the same work tree sees the files the
	// view left out as deleted: the view is what makes the difference.
	if all, _ := r.Changes(ctx, main, dir); len(all) <= len(ch) {
		t.Errorf("Changes of the whole tree = %d changes, want more than the view's %d", len(all), len(ch))
	}
}
