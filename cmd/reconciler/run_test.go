package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// syncBuffer is a bytes.Buffer safe for the daemon goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The daemon reconciles, serves its endpoints, and stops cleanly when its
// context ends (main turns SIGTERM into that).
func TestRunDaemon(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	var out, errb syncBuffer
	if code := run(context.Background(), []string{"keygen", "--out", key}, &out, &errb); code != exitOK {
		t.Fatalf("keygen: %s", errb.String())
	}
	bare := gittest.NewBare(t, "../../examples/repo-layout")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"run", "--repo", bare, "--key", key, "--interval", "1s", "--listen", "127.0.0.1:0", "--cache-dir", filepath.Join(dir, "cache")}, &out, &errb)
	}()
	var base string
	deadline := time.Now().Add(30 * time.Second)
	for base == "" && time.Now().Before(deadline) {
		if m := regexp.MustCompile(`serving on (http://\S+)`).FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if base == "" {
		t.Fatalf("daemon did not start: %s", errb.String())
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	for time.Now().Before(deadline) {
		if code, _ := get("/readyz"); code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s; stderr %s", code, body, errb.String())
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`reconciler_proposals_open{agent="image-pinner"} 1`,
		`reconciler_agent_runs_total{agent="env-normaliser",outcome="changed"} 1`,
		`reconciler_ledger_entries_total 10`,
		`reconciler_reconcile_duration_seconds_count`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, status := get("/api/v1/status"); !strings.Contains(status, `"type": "Ready"`) || !strings.Contains(status, `"status": "True"`) {
		t.Errorf("/api/v1/status = %s", status)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("daemon exited %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop after cancellation")
	}
	if _, err := os.Stat(bare); err != nil {
		t.Fatal(err)
	}
}
