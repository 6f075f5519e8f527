package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/signing"
)

// reconciledStatus runs one real pass over a copy of src (edited by edit
// when not nil) and returns the reconciler's status, and the head of main.
func reconciledStatus(t *testing.T, src string, edit func(dir string)) (reconcile.Status, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"tools/pin-images.sh", "tools/normalise-env.sh"} {
		os.Chmod(filepath.Join(dir, s), 0o755)
	}
	if edit != nil {
		edit(dir)
	}
	bare := gittest.NewBare(t, dir)
	key, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 17, 9, 30, 0, 0, time.UTC)
	r, err := reconcile.New(context.Background(), reconcile.Config{
		Repo: bare, Signer: key, WorkDir: t.TempDir(), Now: func() time.Time { return now },
		Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	_ = r.Reconcile(context.Background()) // its status says how it went
	return r.Status(), strings.TrimSpace(gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main"))
}

// serve serves body at /api/v1/status with code, on loopback.
func serve(t *testing.T, code int, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/v1/status" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestStatusCommand(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	good, head := reconciledStatus(t, "../../examples/repo-layout", nil)
	goodJSON, err := json.MarshalIndent(good, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := reconciledStatus(t, "../../examples/repo-layout", func(dir string) {
		os.WriteFile(filepath.Join(dir, "agents/broken.hcl"), []byte("agent \"broken\" {\n"), 0o644)
	})
	badJSON, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	okURL, badURL := serve(t, http.StatusOK, goodJSON), serve(t, http.StatusOK, badJSON)

	// An address nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string // regexps
		stderr string
	}{
		{name: "ready text", args: []string{"--addr", okURL}, code: exitOK, stdout: []string{
			`(?m)^  Ready=True Succeeded: applied revision main@sha1:` + head + ` \(since 2026-11-17T09:30:00Z\)$`,
			`(?m)^applied +main@sha1:` + head + `$`,
			`(?m)^attempted +main@sha1:` + head + `$`,
			`(?m)^ledger +entry \d+ at [0-9a-f]{12}$`,
			`(?m)^next run +2026-11-18T06:00:00Z image-pinner \(schedule 0 7 \* \* MON-FRI\)$`,
			`(?m)^AGENT +READY +REASON +LAST RUN +OPEN +NEXT RUN$`,
			`(?m)^image-pinner +True +Succeeded +[0-9a-f]{12} proposal_open 2026-11-17T09:30:00Z +1 +2026-11-18T06:00:00Z \(schedule 0 7 \* \* MON-FRI\)$`,
			`(?m)^env-normaliser +True +Succeeded +[0-9a-f]{12} proposal_open \S+ +1 +-$`,
			`(?m)^incident-responder +True +Succeeded +- +0 +-$`,
		}},
		{name: "ready json, flags after", args: []string{"--format", "json", "--addr", okURL + "/"}, code: exitOK},
		{name: "spec invalid", args: []string{"--addr", badURL}, code: exitFail, stdout: []string{
			`(?m)^  Stalled=True SpecInvalid: fix the spec and push: agents/broken.hcl:`,
			`(?m)^  Ready=False SpecInvalid: `,
			`(?m)^diagnostics:\n  agents/broken.hcl:`,
		}, stderr: "reconciler: status: not ready: Ready=False SpecInvalid: the spec at main@sha1:"},
		{name: "spec invalid json", args: []string{"--addr", badURL, "--format", "json"}, code: exitFail, stderr: "not ready: Ready=False SpecInvalid"},
		{name: "unreachable", args: []string{"--addr", closed}, code: exitFail, stderr: "status: cannot reach the daemon (is 'reconciler run' serving there? --addr names another): Get \"" + closed + "/api/v1/status\""},
		{name: "daemon error", args: []string{"--addr", serve(t, http.StatusInternalServerError, []byte("boom\nmore"))}, code: exitFail, stderr: "/api/v1/status: 500 Internal Server Error: boom\n"},
		{name: "not a status", args: []string{"--addr", serve(t, http.StatusOK, []byte("<html>"))}, code: exitFail, stderr: "not a status document"},
		{name: "no pass yet", args: []string{"--addr", serve(t, http.StatusOK, []byte(`{"observedGeneration":0,"conditions":[],"ledger":{"seq":0}}`))}, code: exitFail, stdout: []string{`no pass has ended yet`}, stderr: "no Ready condition yet"},
		{name: "bad format", args: []string{"--format", "yaml"}, code: exitUsage, stderr: `--format "yaml": use text or json`},
		{name: "bad addr", args: []string{"--addr", "127.0.0.1:8080"}, code: exitUsage, stderr: "want a URL such as http://127.0.0.1:8080"},
		{name: "argument", args: []string{"extra"}, code: exitUsage, stderr: "status takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"status"}, tt.args...), &out, &errb)
			t.Logf("stdout:\n%s", out.String())
			if code != tt.code || !strings.Contains(errb.String(), tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q\nstdout:\n%s", code, errb.String(), tt.code, tt.stderr, out.String())
			}
			for _, re := range tt.stdout {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("stdout does not match %s:\n%s", re, out.String())
				}
			}
			if tt.code == exitOK && errb.Len() != 0 {
				t.Errorf("stderr on success: %q", errb.String())
			}
		})
	}

	// json prints the document as served, byte for byte.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"status", "--format", "json", "--addr", okURL}, &out, &errb); code != exitOK {
		t.Fatalf("status --format json: exit %d: %s", code, errb.String())
	}
	if want := append(goodJSON, '\n'); !bytes.Equal(out.Bytes(), want) {
		t.Errorf("json output differs from the served document:\n%s\nwant:\n%s", out.Bytes(), want)
	}
}
