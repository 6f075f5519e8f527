package gittest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNewBare(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "scripts"), 0o755))
	must(os.WriteFile(filepath.Join(src, "README.md"), []byte("hi\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "scripts", "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Symlink("README.md", filepath.Join(src, "link")))

	bare := NewBare(t, src)
	if got := Git(t, bare, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Errorf("HEAD = %q", got)
	}
	tree := strings.Split(Git(t, bare, "ls-tree", "-r", "--format=%(objectmode) %(path)", "main"), "\n")
	want := []string{"100644 README.md", "120000 link", "100755 scripts/run.sh"}
	if !slices.Equal(tree, want) {
		t.Errorf("tree = %q, want %q", tree, want)
	}
	if got := Git(t, bare, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "main"); got != "Platform Team <platform@example.com>|Platform Team <platform@example.com>|Initial commit" {
		t.Errorf("commit = %q", got)
	}

	empty := NewBare(t, "")
	if got := Git(t, empty, "for-each-ref"); got != "" {
		t.Errorf("empty repository has refs: %q", got)
	}
}

func TestServeHTTP(t *testing.T) {
	bare := NewBare(t, "")
	url := ServeHTTP(t, bare)
	work := Clone(t, url)
	if err := os.WriteFile(filepath.Join(work, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	Git(t, work, "add", "a.txt")
	Git(t, work, "commit", "--quiet", "-m", "over http")
	Git(t, work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
	if got := Git(t, bare, "log", "-1", "--format=%s", "main"); got != "over http" {
		t.Errorf("pushed commit = %q", got)
	}
	if got := Git(t, Clone(t, url), "show", "HEAD:a.txt"); got != "a" {
		t.Errorf("cloned a.txt = %q", got)
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("GIT_DIR", "/nonexistent")
	env := Env("Someone", "someone@example.com")
	for _, kv := range env {
		if strings.HasPrefix(kv, "GIT_DIR=") {
			t.Errorf("Env keeps %s", kv)
		}
	}
	for _, want := range []string{"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=Someone", "GIT_COMMITTER_EMAIL=someone@example.com"} {
		if !slices.Contains(env, want) {
			t.Errorf("Env lacks %s", want)
		}
	}
}
