package gitstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// snapshot describes the files under dir, skipping .git: path -> "file:",
// "exec:" or "link:" followed by the content or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link:" + target
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			kind := "file:"
			if info.Mode()&0o100 != 0 {
				kind = "exec:"
			}
			out[rel] = kind + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckout(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "absent", "work") // created with its parents
	if err := r.Checkout(context.Background(), main, dir); err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	got, want := snapshot(t, dir), snapshot(t, gittest.Clone(t, bare))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Checkout differs from git clone:\n got %q\nwant %q", got, want)
	}
	if got["scripts/deploy.sh"] != "exec:#!/bin/sh\necho deploy\n" || got["link"] != "link:README.md" {
		t.Errorf("executable bit or symlink lost: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, ".git")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Checkout wrote .git: %v", err)
	}

	t.Run("empty existing directory", func(t *testing.T) {
		if err := r.Checkout(context.Background(), main, t.TempDir()); err != nil {
			t.Error(err)
		}
	})
	t.Run("non-empty directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "keep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.Checkout(context.Background(), main, dir); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("Checkout into non-empty dir: %v", err)
		}
	})
	t.Run("missing commit", func(t *testing.T) {
		err := r.Checkout(context.Background(), plumbing.NewHash(strings.Repeat("ab", 20)), t.TempDir())
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("error = %v, want ErrNotFound", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := r.Checkout(ctx, main, t.TempDir()); !errors.Is(err, context.Canceled) {
			t.Errorf("error = %v, want context.Canceled", err)
		}
	})
}

// rawTree stores a tree exactly as given, bypassing WriteTree's checks, the
// way a hostile remote could.
func rawTree(t *testing.T, r *Repo, entries ...object.TreeEntry) plumbing.Hash {
	t.Helper()
	tree := &object.Tree{Entries: entries}
	obj := r.repo.Storer.NewEncodedObject()
	if err := tree.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := r.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func rawBlob(t *testing.T, r *Repo, content string) plumbing.Hash {
	t.Helper()
	h, err := r.storeBlob([]byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCheckoutRefusesUnsafeTrees(t *testing.T) {
	t.Parallel()
	r := open(t, gittest.NewBare(t, ""))
	outside := t.TempDir()
	blob := rawBlob(t, r, "pwned\n")
	link := rawBlob(t, r, outside)
	escape := rawTree(t, r, object.TreeEntry{Name: "escape", Mode: filemode.Regular, Hash: blob})
	hook := rawTree(t, r, object.TreeEntry{Name: "post-checkout", Mode: filemode.Executable, Hash: blob})
	hooks := rawTree(t, r, object.TreeEntry{Name: "hooks", Mode: filemode.Dir, Hash: hook})
	file := func(name string) object.TreeEntry {
		return object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: blob}
	}
	dir := func(name string, h plumbing.Hash) object.TreeEntry {
		return object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
	}
	tests := []struct {
		name    string
		entries []object.TreeEntry
	}{
		{"dot-dot file", []object.TreeEntry{file("..")}},
		{"dot-dot directory", []object.TreeEntry{dir("..", escape)}},
		{"dot directory", []object.TreeEntry{dir(".", escape)}},
		{"slash in name", []object.TreeEntry{file("../../escape")}},
		{"absolute name", []object.TreeEntry{file("/tmp/escape")}},
		{"backslash in name", []object.TreeEntry{file(`..\escape`)}},
		{"newline in name", []object.TreeEntry{file("a\nb")}},
		{".git directory", []object.TreeEntry{dir(".git", hooks)}},
		{".GIT directory", []object.TreeEntry{dir(".GIT", hooks)}},
		{"NTFS short name", []object.TreeEntry{dir("git~1", hooks)}},
		{"NTFS trailing dot", []object.TreeEntry{dir(".git.", hooks)}},
		{"HFS ignorable code point", []object.TreeEntry{dir(".g\u200cit", hooks)}},
		{"nested .git", []object.TreeEntry{dir("sub", rawTree(t, r, dir(".git", hooks)))}},
		{"nested dot-dot", []object.TreeEntry{dir("sub", rawTree(t, r, dir("..", rawTree(t, r, dir("..", escape)))))}},
		// A crafted tree may repeat a name: a symlink to outside, then a
		// directory or file of the same name written through it.
		{"directory through symlink", []object.TreeEntry{
			{Name: "a", Mode: filemode.Symlink, Hash: link},
			dir("a", escape),
		}},
		{"file through symlink", []object.TreeEntry{
			{Name: "escape", Mode: filemode.Symlink, Hash: rawBlob(t, r, filepath.Join(outside, "escape"))},
			file("escape"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := rawTree(t, r, tt.entries...)
			c, err := r.CreateCommit(NewCommit{Tree: tree, Author: testSig(), Message: "hostile\n"})
			if err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			target := filepath.Join(parent, "work")
			err = r.Checkout(context.Background(), c, target)
			if err == nil {
				t.Fatal("Checkout succeeded")
			}
			t.Logf("error: %v", err)
			for _, d := range []string{outside, parent} {
				entries, _ := os.ReadDir(d)
				for _, e := range entries {
					if e.Name() != "work" {
						t.Errorf("Checkout wrote %s outside its directory", filepath.Join(d, e.Name()))
					}
				}
			}
			if _, err := os.Stat(filepath.Join(target, ".git")); err == nil {
				t.Error("Checkout wrote a .git directory")
			}
		})
	}
}

func TestChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "work")
	if err := r.Checkout(ctx, main, dir); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Changes(ctx, main, dir); err != nil || len(got) != 0 {
		t.Fatalf("Changes right after Checkout = %+v, %v; want none", got, err)
	}

	outside := t.TempDir()
	write := func(p, content string, perm os.FileMode) {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), perm); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write("README.md", "line1\nline two\nline3\nline4\n", 0o644)
	must(os.Chmod(filepath.Join(dir, "scripts/deploy.sh"), 0o644))
	must(os.Remove(filepath.Join(dir, "agents/reviewer.hcl")))
	write("new/nested/file.txt", "a\nb", 0o644)
	write("bin/run.sh", "#!/bin/sh\n", 0o755)
	must(os.Symlink(outside, filepath.Join(dir, "escape")))
	must(os.WriteFile(filepath.Join(outside, "secret"), nil, 0o644)) // never read through the link
	must(os.Remove(filepath.Join(dir, "link")))
	must(os.Symlink("docs/guide.md", filepath.Join(dir, "link")))
	must(os.Remove(filepath.Join(dir, "config.yaml")))
	must(os.Symlink("README.md", filepath.Join(dir, "config.yaml")))
	write("data.bin", "BIN\x00\x03", 0o644)
	must(os.RemoveAll(filepath.Join(dir, "docs")))
	write("docs/guide.md", "# Guide\n\nHello.\n", 0o644) // rewritten, same content
	must(os.MkdirAll(filepath.Join(dir, "empty/dir"), 0o755))
	write(".git/config", "[core]\n", 0o644)
	write("vendor/lib/.git/HEAD", "ref: refs/heads/main\n", 0o644)

	got, err := r.Changes(ctx, main, dir)
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	want := []FileChange{
		{Path: "README.md", Status: StatusModified, Mode: filemode.Regular, Content: []byte("line1\nline two\nline3\nline4\n"), Added: 2, Removed: 1},
		{Path: "agents/reviewer.hcl", Status: StatusDeleted, Removed: 4},
		{Path: "bin/run.sh", Status: StatusAdded, Mode: filemode.Executable, Content: []byte("#!/bin/sh\n"), Added: 1},
		{Path: "config.yaml", Status: StatusModified, Mode: filemode.Symlink, Content: []byte("README.md"), Added: 1, Removed: 1},
		{Path: "data.bin", Status: StatusModified, Mode: filemode.Regular, Content: []byte("BIN\x00\x03"), Binary: true},
		{Path: "escape", Status: StatusAdded, Mode: filemode.Symlink, Content: []byte(outside), Added: 1},
		{Path: "link", Status: StatusModified, Mode: filemode.Symlink, Content: []byte("docs/guide.md"), Added: 1, Removed: 1},
		{Path: "new/nested/file.txt", Status: StatusAdded, Mode: filemode.Regular, Content: []byte("a\nb"), Added: 2},
		{Path: "scripts/deploy.sh", Status: StatusModified, Mode: filemode.Regular, Content: []byte("#!/bin/sh\necho deploy\n")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Changes mismatch")
		for i := range max(len(got), len(want)) {
			var g, w FileChange
			if i < len(got) {
				g = got[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("  got  %+v\n  want %+v", g, w)
			}
		}
	}

	// The changes applied to the commit's tree give the tree git itself
	// computes from the directory (git also skips nested .git directories).
	tree, err := r.WriteTree(main, got)
	if err != nil {
		t.Fatalf("WriteTree: %v", err)
	}
	must(os.RemoveAll(filepath.Join(dir, ".git")))
	gitDir := "--git-dir=" + bare
	gittest.Git(t, "", gitDir, "--work-tree="+dir, "read-tree", main.String())
	gittest.Git(t, "", gitDir, "--work-tree="+dir, "add", "--all")
	if wantTree := gittest.Git(t, "", gitDir, "write-tree"); tree.String() != wantTree {
		t.Errorf("WriteTree(Changes) = %s, git write-tree = %s\n%s", tree, wantTree,
			gittest.Git(t, "", gitDir, "diff-tree", "-r", tree.String(), wantTree))
	}
	// git counts lines the same way.
	numstat := gittest.Git(t, "", gitDir, "diff", "--numstat", "--no-renames", main.String(), tree.String())
	for _, l := range lines(numstat) {
		f := strings.Fields(l)
		for _, c := range got {
			if c.Path != f[2] {
				continue
			}
			wantAdded, wantRemoved := f[0], f[1]
			if c.Binary && (wantAdded != "-" || wantRemoved != "-") || !c.Binary && (wantAdded != strconv.Itoa(c.Added) || wantRemoved != strconv.Itoa(c.Removed)) {
				t.Errorf("%s: +%d -%d binary=%v; git diff --numstat: %s", c.Path, c.Added, c.Removed, c.Binary, l)
			}
		}
	}

	t.Run("missing directory", func(t *testing.T) {
		if _, err := r.Changes(ctx, main, filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrNotFound) {
			t.Errorf("error = %v, want ErrNotFound", err)
		}
	})
	t.Run("name git cannot store", func(t *testing.T) {
		d := t.TempDir()
		must(r.Checkout(ctx, main, filepath.Join(d, "w")))
		must(os.WriteFile(filepath.Join(d, "w", `back\slash`), nil, 0o644))
		if _, err := r.Changes(ctx, main, filepath.Join(d, "w")); err == nil {
			t.Error("Changes accepted a name with a backslash")
		}
	})
}
