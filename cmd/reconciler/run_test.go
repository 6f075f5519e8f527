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
	if !regexp.MustCompile(`reconciler_ledger_head_info\{commit="[0-9a-f]{40}"\} 1`).MatchString(metrics) {
		t.Errorf("/metrics lacks reconciler_ledger_head_info")
	}

	// Cut the last two entries off the ledger: the running daemon stalls
	// (LedgerRewritten), /readyz goes back to 503, it logs the cause at
	// error level, and it appends nothing on top.
	cut := gittest.Git(t, "", "--git-dir", bare, "rev-parse", "agent-evidence~2")
	gittest.Git(t, "", "--git-dir", bare, "update-ref", "refs/heads/agent-evidence", cut)
	var status string
	for time.Now().Before(time.Now().Add(20 * time.Second)) {
		_, status = get("/api/v1/status")
		if strings.Contains(status, `"reason": "LedgerRewritten"`) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(status, `"type": "Stalled"`) || !strings.Contains(status, `"reason": "LedgerRewritten"`) {
		t.Fatalf("status after truncation = %s", status)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after truncation = %d, want 503", code)
	}
	if !strings.Contains(errb.String(), "level=ERROR") || !strings.Contains(errb.String(), "evidence branch was rewritten") {
		t.Errorf("the stall was not logged at error level: %s", errb.String())
	}
	if head := gittest.Git(t, "", "--git-dir", bare, "rev-parse", "agent-evidence"); head != cut {
		t.Errorf("the daemon appended on top of a truncated ledger: %s, want %s", head, cut)
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
