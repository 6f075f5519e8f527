package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/server"
	"github.com/agentgitops/reconciler/signing"
)

// testSecret is the webhook secret of the test servers.
const testSecret = "s3cret-for-tests"

// The spec of the test repository: paged runs on the captured
// ServiceHighErrorRate alerts of frontend and checkoutservice, on-demand
// when asked, and steady on spec changes only (no manual trigger).
var specFiles = map[string]string{
	"providers.hcl": `provider "exec" "local" {
  timeout = "1m"
}
`,
	"reviewers.hcl": `group "sre" {
  accept_unsigned = true
  member "rita" {
    email = "rita@example.com"
  }
}
`,
	"agents/paged.hcl": `agent "paged" {
  provider = provider.exec.local
  command  = ["sh", "tools/note.sh", "paged"]
  trigger {
    on_alert {
      match    = { alertname = "ServiceHighErrorRate" }
      match_re = { service_name = "frontend|checkoutservice" }
    }
  }
  scope {
    paths = ["notes/**"]
  }
}
`,
	"agents/on-demand.hcl": `agent "on-demand" {
  provider = provider.exec.local
  command  = ["sh", "tools/note.sh", "on-demand"]
  trigger {
    manual = true
  }
  scope {
    paths = ["notes/**"]
  }
}
`,
	"agents/steady.hcl": `agent "steady" {
  provider = provider.exec.local
  command  = ["sh", "tools/note.sh", "steady"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["notes/**"]
  }
}
`,
	"tools/note.sh": `#!/bin/sh
set -eu
mkdir -p notes
date +%s%N > "notes/$1.md"
echo "Note from $1"
`,
	".reconciler/keys/.gitkeep": "",
}

// env is a desired-state repository (a bare repository on a local path)
// with a ledger key it trusts.
type env struct {
	t    *testing.T
	bare string
	url  string // the repository's URL: bare, unless a test changes it
	// passes counts the passes of the env's reconcilers.
	passes passCounter
	signer *signing.Signer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: these tests run real git repositories")
	}
	dir := t.TempDir()
	for name, body := range specFiles {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".reconciler/keys/ledger.pub"), signer.PublicKeyPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := gittest.NewBare(t, dir)
	return &env{t: t, bare: bare, url: bare, signer: signer}
}

// reconciler returns a reconciler on the repository with cacheDir ("" in
// memory), logging to log (nil discards). It is closed when the test ends
// unless the test closes it first.
func (e *env) reconciler(cacheDir string, log *slog.Logger) *reconcile.Reconciler {
	e.t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := reconcile.New(context.Background(), reconcile.Config{
		Repo: e.url, Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"},
		Signer: e.signer, WorkDir: e.t.TempDir(), CacheDir: cacheDir, Logger: log,
		Recorder: &e.passes,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var once sync.Once
	e.t.Cleanup(func() { once.Do(func() { r.Close() }) })
	return r
}

// passCounter is a reconcile.Recorder that counts passes.
type passCounter struct{ n atomic.Int64 }

func (c *passCounter) Observe(*ledger.State)     {}
func (c *passCounter) Pass(time.Duration, error) { c.n.Add(1) }
func (c *passCounter) count() int64              { return c.n.Load() }

// entries reads the ledger's entries from the repository.
func (e *env) entries() []ledger.Entry {
	e.t.Helper()
	repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer repo.Close()
	es, err := ledger.New(repo, ledger.Options{}).Entries(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

// runs returns the run.started entries of agent with trigger id.
func (e *env) runs(agent, trigger string) []ledger.Entry {
	var out []ledger.Entry
	for _, en := range e.entries() {
		if en.Type == ledger.RunStarted && en.Agent == agent && en.Trigger == trigger {
			out = append(out, en)
		}
	}
	return out
}

// serve serves h on 127.0.0.1 until the test ends and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// running is a server whose Run runs until stop.
type running struct {
	*server.Server
	url  string
	stop func() error
}

// start runs a server with cfg (its Listener on 127.0.0.1) until the
// test ends or stop is called.
func start(t *testing.T, cfg server.Config) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return &running{Server: s, url: "http://" + ln.Addr().String(), stop: stop}
}

// response is an HTTP answer.
type response struct {
	code   int
	header http.Header
	body   string
}

// post posts body to url with headers (name, value pairs).
func post(t *testing.T, url string, body []byte, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

func get(t *testing.T, url string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// decode decodes a JSON answer.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("answer %d %q: %v", r.code, r.body, err)
	}
}

// jsonError checks that the answer has a JSON error body and returns it.
func (r response) jsonError(t *testing.T) string {
	t.Helper()
	var b struct{ Error string }
	if err := json.Unmarshal([]byte(r.body), &b); err != nil || b.Error == "" {
		t.Errorf("answer %d has no JSON error body: %q", r.code, r.body)
	}
	return b.Error
}

// eventually polls cond every 50ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shared returns the path of a file in ../shared/conformance, skipping
// the test when ../shared is absent.
func shared(t *testing.T, path string) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", "conformance", path)
	if _, err := os.Stat(filepath.Join("..", "..", "shared")); err != nil {
		t.Skipf("../shared is absent (%v): the captured webhook deliveries live in ../shared/conformance", err)
	}
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the log lines that contain every one of subs.
func lines(log string, subs ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(log, "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}
