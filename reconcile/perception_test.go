package reconcile_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cacheExporter serves the payments API's cache counters as the service
// would: every scrape sees 100 more requests, 38 of them hits, so the
// hit ratio over any window is 0.38.
func cacheExporter(t *testing.T) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		hits, reqs := 38*n, 100*n
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		const labels = `{namespace="payments-staging",service="payments-api"}`
		fmt.Fprintf(w, "# TYPE payments_cache_hits_total counter\npayments_cache_hits_total%s %d\n# TYPE payments_cache_requests_total counter\npayments_cache_requests_total%s %d\n", labels, hits, labels, reqs)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// startPrometheus starts Debian's prometheus on 127.0.0.1 scraping
// target every second, and returns its base URL once query has a result,
// and a func that stops it. Without the binary the test skips, except in
// CI (.ci/run installs it), where it fails.
func startPrometheus(t *testing.T, target, query string) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is not installed, and CI must run this test: .ci/run installs Debian's prometheus package (%v)", err)
		}
		t.Skipf("prometheus is not installed (apt-get install --no-install-recommends prometheus): the test with a real Prometheus is skipped")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: payments-api\n    static_configs:\n      - targets: [%q]\n", target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var log strings.Builder
	var logMu sync.Mutex
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout = writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return log.Write(p) })
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query)); err == nil {
			var body struct {
				Data struct {
					Result []json.RawMessage `json:"result"`
				} `json:"data"`
			}
			err := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && len(body.Data.Result) > 0 {
				return base, stop
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	logMu.Lock()
	defer logMu.Unlock()
	t.Fatalf("prometheus has no result for %s after 60s: %s", query, log.String())
	return "", nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// conversationQuery is the PromQL of the conversation's prometheus_query
// call.
func conversationQuery(t *testing.T, conversation string) string {
	t.Helper()
	b, err := os.ReadFile(conversation)
	if err != nil {
		t.Fatal(err)
	}
	var responses []struct {
		Choices []struct {
			Message struct {
				ToolCalls []struct {
					Function struct{ Name, Arguments string } `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &responses); err != nil {
		t.Fatal(err)
	}
	for _, r := range responses {
		for _, c := range r.Choices[0].Message.ToolCalls {
			if c.Function.Name == "prometheus_query" {
				var a struct{ Query string }
				if err := json.Unmarshal([]byte(c.Function.Arguments), &a); err != nil {
					t.Fatal(err)
				}
				return a.Query
			}
		}
	}
	t.Fatalf("%s has no prometheus_query call", conversation)
	return ""
}
