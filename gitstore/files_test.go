package gitstore

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestReadFile(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		want     string
		notFound bool
		invalid  bool
	}{
		{path: "README.md", want: "line1\nline2\nline3\n"},
		{path: "agents/fixer.hcl", want: "agent \"fixer\" {\n  model = \"large\"\n}\n"},
		{path: "link", want: "README.md"}, // a symlink reads as its target
		{path: "missing.txt", notFound: true},
		{path: "agents/missing.hcl", notFound: true},
		{path: "nodir/x", notFound: true},
		{path: "agents", notFound: true}, // a directory is not a file
		{path: "README.md/x", notFound: true},
		{path: "/README.md", invalid: true},
		{path: "agents/../README.md", invalid: true},
		{path: "", invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := r.ReadFile(main, tt.path)
			switch {
			case tt.notFound:
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("error = %v, want ErrNotFound", err)
				}
			case tt.invalid:
				if err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("error = %v, want invalid path", err)
				}
			case err != nil || string(got) != tt.want:
				t.Errorf("ReadFile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := r.ReadFile(plumbing.NewHash(strings.Repeat("ab", 20)), "README.md"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadFile(missing commit) error = %v, want ErrNotFound", err)
	}
}

func TestListFiles(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, desiredState)
	r := open(t, bare)
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"README.md", "agents/fixer.hcl", "agents/reviewer.hcl", "config.yaml", "data.bin", "docs/guide.md", "scripts/deploy.sh"}
	tests := []struct {
		name  string
		globs []string
		want  []string
	}{
		{"no globs: all regular files, no symlinks", nil, all},
		{"doublestar", []string{"**"}, all},
		{"extension anywhere", []string{"**/*.hcl"}, []string{"agents/fixer.hcl", "agents/reviewer.hcl"}},
		{"top level only", []string{"*.md"}, []string{"README.md"}},
		{"several globs", []string{"docs/**", "scripts/*.sh"}, []string{"docs/guide.md", "scripts/deploy.sh"}},
		{"alternatives", []string{"{config.yaml,data.bin}"}, []string{"config.yaml", "data.bin"}},
		{"no match", []string{"nothing/**"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.ListFiles(main, tt.globs...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListFiles(%q) = %q, want %q", tt.globs, got, tt.want)
			}
		})
	}
	if _, err := r.ListFiles(main, "[unclosed"); err == nil {
		t.Error("ListFiles(bad glob) succeeded")
	}
	if _, err := r.ListFiles(plumbing.NewHash(strings.Repeat("ab", 20))); !errors.Is(err, ErrNotFound) {
		t.Errorf("ListFiles(missing commit) error = %v, want ErrNotFound", err)
	}
	tree, err := r.TreeOf(main)
	if err != nil || tree.String() != gittest.Git(t, bare, "rev-parse", "main^{tree}") {
		t.Errorf("TreeOf(main) = %s, %v", tree, err)
	}
}
