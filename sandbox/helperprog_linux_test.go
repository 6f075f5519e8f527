package sandbox_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/sandbox"
)

// buildHelper builds cmd/reconciler-sandbox into dir, with extra go build
// arguments, and returns its path.
func buildHelper(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out := filepath.Join(dir, sandbox.HelperName)
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, args...), "../cmd/reconciler-sandbox")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the helper: %v\n%s", err, b)
	}
	return out
}

// TestSeparateHelper runs every other test of this package again, with a
// reconciler-sandbox built from this tree as the helper instead of the
// test binary itself: the confinement is the same whichever program
// builds it.
func TestSeparateHelper(t *testing.T) {
	if os.Getenv(helperEnvVar) != "" {
		t.Skip("already running with a separate helper")
	}
	requireAll(t)
	h := buildHelper(t, t.TempDir())
	cmd := exec.Command(os.Args[0], "-test.run", "^Test[^S]|^TestS[^e]", "-test.count", "1")
	cmd.Env = append(os.Environ(), helperEnvVar+"="+h)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests with %s as the helper failed: %v\n%s", h, err, out)
	}
	if !bytes.Contains(out, []byte("PASS")) {
		t.Fatalf("no test ran:\n%s", out)
	}
}

// TestHelperReported: with a helper in use, Probe names it and commands run
// through it.
func TestHelperReported(t *testing.T) {
	p := os.Getenv(helperEnvVar)
	if p == "" {
		t.Skip("runs under TestSeparateHelper")
	}
	if got := sandbox.Probe().Helper; got != p {
		t.Fatalf("Probe().Helper = %q, want %q", got, p)
	}
	dir := t.TempDir()
	var out bytes.Buffer
	if _, err := (sandbox.Config{}).Run(context.Background(), sandbox.Command{Path: "/bin/sh", Args: []string{"sh", "-c", "echo ok"}, Dir: dir, Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ok\n" {
		t.Fatalf("output %q", out.String())
	}
}

// TestHelperRefused: a helper that is not safe to run, or that speaks
// another protocol (an old reconciler-sandbox left next to a new
// reconciler), is refused with a line that says why, and the program in
// use does not change.
func TestHelperRefused(t *testing.T) {
	requireAll(t)
	dir := t.TempDir()
	good := buildHelper(t, dir)
	other := filepath.Join(t.TempDir(), sandbox.HelperName)
	buildHelper(t, filepath.Dir(other), "-ldflags=-X github.com/agentgitops/reconciler/sandbox.protocol=0")

	writable := filepath.Join(t.TempDir(), "writable")
	copyFile(t, good, writable, 0o755)
	os.Chmod(writable, 0o777)
	plain := filepath.Join(t.TempDir(), "plain")
	copyFile(t, good, plain, 0o644)

	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "absent"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"not executable", plain, "not executable"},
		{"writable by others", writable, "writable by its group or others"},
		{"another protocol", other, `speaks protocol "0"`},
		{"not a helper", "/bin/true", "no sandbox helper answers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := sandbox.Probe().Helper
			err := sandbox.UseHelper(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("UseHelper(%s) = %v, want an error with %q", tc.path, err, tc.want)
			}
			if after := sandbox.Probe().Helper; after != before {
				t.Fatalf("the helper changed from %q to %q", before, after)
			}
		})
	}
	if os.Getuid() == 0 {
		t.Run("owned by another user", func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "theirs")
			copyFile(t, good, p, 0o755)
			if err := os.Chown(p, 4242, 4242); err != nil {
				t.Fatal(err)
			}
			err := sandbox.UseHelper(p)
			if err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
				t.Fatalf("UseHelper = %v", err)
			}
		})
	}
}

// TestHelperPinned: the helper is run from the file UseHelper opened, so
// replacing it afterwards (with anything) changes nothing.
func TestHelperPinned(t *testing.T) {
	if os.Getenv(helperEnvVar) != "" {
		t.Skip("would replace the suite's helper")
	}
	requireAll(t)
	dir := t.TempDir()
	h := buildHelper(t, dir)
	if err := sandbox.UseHelper(h); err != nil {
		t.Fatal(err)
	}
	defer sandbox.UseHelper("")
	if err := os.Remove(h); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(h, []byte("#!/bin/sh\necho replaced\n"), 0o755)
	var out bytes.Buffer
	if _, err := (sandbox.Config{}).Run(context.Background(), sandbox.Command{Path: "/bin/sh", Args: []string{"sh", "-c", "echo ok"}, Dir: t.TempDir(), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ok\n" {
		t.Fatalf("output %q: the replaced file ran", out.String())
	}
}

// TestHelperNextToExecutable: a reconciler-sandbox next to the program is
// its helper without a flag; one that is not safe is passed over with a
// line on stderr, and the program is its own helper.
func TestHelperNextToExecutable(t *testing.T) {
	if os.Getenv("RECONCILER_TEST_PRINT_HELPER") != "" {
		os.Stdout.WriteString("helper=" + sandbox.Probe().Helper + "\n")
		return
	}
	requireAll(t)
	for _, tc := range []struct {
		name      string
		mode      os.FileMode
		want, err string
	}{
		{"installed", 0o755, "", ""},
		{"unsafe", 0o777, "this program", "not using"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := buildHelper(t, dir)
			os.Chmod(h, tc.mode)
			prog := filepath.Join(dir, "reconciler")
			copyFile(t, os.Args[0], prog, 0o755)
			cmd := exec.Command(prog, "-test.run", "^TestHelperNextToExecutable$")
			cmd.Env = []string{"RECONCILER_TEST_PRINT_HELPER=1", "PATH=" + os.Getenv("PATH")}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v\n%s%s", err, out, stderr.String())
			}
			want := tc.want
			if want == "" {
				want = h
			}
			if !strings.Contains(string(out), "helper="+want+"\n") {
				t.Fatalf("want helper=%s, got:\n%s", want, out)
			}
			if !strings.Contains(stderr.String(), tc.err) {
				t.Fatalf("stderr %q, want %q", stderr.String(), tc.err)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(to, mode)
}
