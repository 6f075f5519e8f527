// Package gittest makes real git repositories for tests with the git CLI, in a
// hermetic environment: no global or system configuration, a fixed identity
// and fixed dates, so that tests of every package see the same repositories
// whatever the machine's git configuration.
//
// Helpers fail the test (t.Fatal) on error, so call them from the test's
// goroutine only.
package gittest

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Default identity of Git and NewBare commits.
const (
	Name  = "Platform Team"
	Email = "platform@example.com"
	// Date is the author and committer date of every commit made by Git.
	Date = "2025-01-01T00:00:00Z"
)

// Env returns the hermetic environment for git commands: the process
// environment without GIT_* variables, with global and system configuration
// disabled, no terminal prompts, the C locale, and name and email as author
// and committer with fixed dates.
func Env(name, email string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
		"GIT_AUTHOR_NAME="+name,
		"GIT_AUTHOR_EMAIL="+email,
		"GIT_AUTHOR_DATE="+Date,
		"GIT_COMMITTER_NAME="+name,
		"GIT_COMMITTER_EMAIL="+email,
		"GIT_COMMITTER_DATE="+Date,
	)
}

// Git runs git with args in dir (the current directory if "") as
// "Platform Team <platform@example.com>" and returns its trimmed standard
// output. It fails the test with git's standard error on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := run(dir, Env(Name, Email), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func run(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s (in %q): %w\n%s", strings.Join(args, " "), dir, err, stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// NewBare creates a bare repository in a fresh t.TempDir() and returns its
// path (ending in "repo.git"). HEAD points to "main". Unless src is "", main
// holds one commit, "Initial commit" by "Platform Team
// <platform@example.com>", with a copy of the files under the directory src:
// executable bits and symbolic links are preserved, empty directories are not
// (git does not track them).
func NewBare(t testing.TB, src string) string {
	t.Helper()
	bare := filepath.Join(t.TempDir(), "repo.git")
	Git(t, "", "init", "--quiet", "--bare", "--initial-branch=main", bare)
	if src == "" {
		return bare
	}
	work := t.TempDir()
	Git(t, work, "init", "--quiet", "--initial-branch=main")
	if err := copyTree(src, work); err != nil {
		t.Fatalf("copy %q: %v", src, err)
	}
	Git(t, work, "add", "--all")
	Git(t, work, "commit", "--quiet", "--allow-empty", "-m", "Initial commit")
	Git(t, work, "push", "--quiet", bare, "main")
	return bare
}

// copyTree copies the regular files, directories and symbolic links under src
// into dst, keeping permissions.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if rel == "." {
				return nil
			}
			return os.Mkdir(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			content, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, content, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		}
		return nil
	})
}

// Clone clones url into a fresh t.TempDir() working copy with the git CLI and
// returns its path.
func Clone(t testing.TB, url string) string {
	t.Helper()
	dir := t.TempDir()
	Git(t, "", "clone", "--quiet", url, dir)
	return dir
}

// ServeHTTP serves the bare repository bareDir over smart HTTP with
// `git http-backend` under net/http/cgi, fetch and push enabled, and returns
// the repository's URL. The server is closed at test cleanup; http-backend's
// standard error goes to the test log.
func ServeHTTP(t testing.TB, bareDir string) string {
	t.Helper()
	abs, err := filepath.Abs(bareDir)
	if err != nil {
		t.Fatal(err)
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("serve %q over http: %v", bareDir, err)
	}
	logw := &testWriter{t: t}
	h := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env: append(Env(Name, Email),
			"GIT_PROJECT_ROOT="+filepath.Dir(abs),
			"GIT_HTTP_EXPORT_ALL=1",
			// The CGI handler sets no REMOTE_USER, so receive-pack must be
			// enabled explicitly.
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http.receivepack",
			"GIT_CONFIG_VALUE_0=true",
		),
		Stderr: logw,
		Logger: log.New(logw, "cgi: ", 0),
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(abs)
}

// testWriter writes to the test log.
type testWriter struct{ t testing.TB }

var _ io.Writer = (*testWriter)(nil)

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("git http-backend: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
