package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/agentgitops/reconciler/sandbox"
)

func TestMain(m *testing.M) {
	// The test binary, as the reconciler of scripts too, runs exec agents
	// in the sandbox, whose helper is this binary re-executed.
	sandbox.Init()
	testscript.Main(m, map[string]func(){
		"reconciler": func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	examples, err := filepath.Abs("../../examples/repo-layout")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", examples)
			env.Setenv("XDG_CACHE_HOME", filepath.Join(env.WorkDir, ".cache"))
			env.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
			env.Setenv("GIT_CONFIG_NOSYSTEM", "1")
			env.Setenv("GIT_AUTHOR_NAME", "Mallory")
			env.Setenv("GIT_AUTHOR_EMAIL", "mallory@example.com")
			env.Setenv("GIT_COMMITTER_NAME", "Mallory")
			env.Setenv("GIT_COMMITTER_EMAIL", "mallory@example.com")
			return nil
		},
	})
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
		err  string
	}{
		{nil, exitUsage, "Usage: reconciler"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"once"}, exitUsage, "--repo is required"},
		{[]string{"once", "--repo", "."}, exitUsage, "--key is required"},
		{[]string{"once", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"once", "--repo", ".", "--key", "/nonexistent/key"}, exitFail, "/nonexistent/key"},
		{[]string{"keygen"}, exitUsage, "--out is required"},
		{[]string{"validate", "a", "b"}, exitUsage, "one directory"},
		{[]string{"validate", "--format", "xml", "."}, exitUsage, "use text or json"},
		{[]string{"ledger"}, exitUsage, "verify|log"},
		{[]string{"ledger", "verify"}, exitUsage, "--repo is required"},
		{[]string{"once", "-h"}, exitOK, "Usage: reconciler once"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), tt.code, tt.err)
			}
		})
	}
}
