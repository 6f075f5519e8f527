package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestRawObject(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := openCached(t, bare, t.TempDir())
	main := r.mustBranch(t, "main")
	for _, h := range []string{"main", "main^{tree}", "main:README.md"} {
		want := gittest.Git(t, bare, "cat-file", "-p", h)
		typ := gittest.Git(t, bare, "cat-file", "-t", h)
		hash := plumbing.NewHash(gittest.Git(t, bare, "rev-parse", h))
		gotType, got, err := r.RawObject(hash)
		if err != nil {
			t.Fatal(err)
		}
		if gotType.String() != typ {
			t.Errorf("RawObject(%s) type = %s, want %s", h, gotType, typ)
		}
		if typ == "tree" {
			// cat-file -p pretty-prints trees: compare the raw form.
			var raw bytes.Buffer
			for _, line := range lines(gittest.Git(t, bare, "ls-tree", h)) {
				meta, name, _ := strings.Cut(line, "\t")
				f := strings.Fields(meta)
				fmt.Fprintf(&raw, "%s %s\x00", strings.TrimPrefix(f[0], "0"), name)
				eh := plumbing.NewHash(f[2])
				raw.Write(eh[:])
			}
			if !bytes.Equal(got, raw.Bytes()) {
				t.Errorf("RawObject(%s) = %q, want %q", h, got, raw.Bytes())
			}
			continue
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("RawObject(%s) = %q, want %q", h, got, want)
		}
	}
	if _, _, err := r.RawObject(plumbing.NewHash(strings.Repeat("ab", 20))); !errors.Is(err, ErrNotFound) {
		t.Errorf("RawObject(missing) error = %v, want ErrNotFound", err)
	}
	_ = main
}

func TestTreeEntry(t *testing.T) {
	t.Parallel()
	bare := chainRepo(t, t.TempDir(), 1200)
	for _, cached := range []bool{false, true} {
		var r *Repo
		if cached {
			r = openCached(t, bare, t.TempDir())
		} else {
			r = open(t, bare)
		}
		main := r.mustBranch(t, "main")
		for _, p := range []string{ledgerPath(1), ledgerPath(999), ledgerPath(1200), "ledger/000000001", "ledger", "."} {
			spec := "main:" + p
			if p == "." {
				spec = "main^{tree}"
			}
			want := plumbing.NewHash(gittest.Git(t, bare, "rev-parse", spec))
			h, mode, err := r.TreeEntry(main, p)
			if err != nil || h != want {
				t.Errorf("TreeEntry(%q) = %s, %v; want %s", p, h, err, want)
			}
			wantMode := filemode.Regular
			if !strings.HasSuffix(p, ".json") {
				wantMode = filemode.Dir
			}
			if mode != wantMode {
				t.Errorf("TreeEntry(%q) mode = %s, want %s", p, mode, wantMode)
			}
		}
		for _, p := range []string{ledgerPath(1201), "ledger/000000002", "nope", ledgerPath(1) + "/below"} {
			if _, _, err := r.TreeEntry(main, p); !errors.Is(err, ErrNotFound) {
				t.Errorf("TreeEntry(%q) error = %v, want ErrNotFound", p, err)
			}
		}
		for _, p := range []string{"", "/abs", "a/../b", "a//b"} {
			if _, _, err := r.TreeEntry(main, p); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("TreeEntry(%q) error = %v, want invalid path", p, err)
			}
		}
		if _, _, err := r.TreeEntry(plumbing.NewHash(strings.Repeat("ab", 20)), "ledger"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TreeEntry(missing commit) error = %v, want ErrNotFound", err)
		}
	}
}

// ReadDir lists a directory as git ls-tree does, reading only its path.
func TestReadDir(t *testing.T) {
	t.Parallel()
	bare := chainRepo(t, t.TempDir(), 1200)
	for _, cached := range []bool{false, true} {
		var r *Repo
		if cached {
			r = openCached(t, bare, t.TempDir())
		} else {
			r = open(t, bare)
		}
		main := r.mustBranch(t, "main")
		for _, dir := range []string{".", "ledger", "ledger/000000001"} {
			spec := "main:" + dir
			if dir == "." {
				spec = "main"
			}
			want := strings.Fields(gittest.Git(t, bare, "ls-tree", "--format=%(objectmode) %(path) %(objectname)", spec))
			es, err := r.ReadDir(main, dir)
			if err != nil {
				t.Fatalf("ReadDir(%q): %v", dir, err)
			}
			var got []string
			for _, e := range es {
				got = append(got, fmt.Sprintf("%06o", uint32(e.Mode)), e.Name, e.Hash.String())
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("ReadDir(%q) = %v, want %v", dir, got, want)
			}
		}
		for _, dir := range []string{"nope", ledgerPath(1)} {
			if _, err := r.ReadDir(main, dir); !errors.Is(err, ErrNotFound) {
				t.Errorf("ReadDir(%q) error = %v, want ErrNotFound", dir, err)
			}
		}
	}
}
