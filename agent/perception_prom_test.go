package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/promtest"
)

// latencyExporter serves the payments API's p99 latency as a test
// exporter would.
func latencyExporter(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# HELP payments_latency_p99_seconds p99 request latency.\n# TYPE payments_latency_p99_seconds gauge\n"+
			"payments_latency_p99_seconds{service=\"payments-api\",namespace=\"payments-staging\"} 2.5\n"+
			"payments_latency_p99_seconds{service=\"ledger-api\",namespace=\"payments-staging\"} 0.12\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// prometheus_query against a real Prometheus that scraped a test
// exporter: instant and range queries, errors from the server, and a
// bearer token sent through a proxy that requires it.
func TestPrometheusQuery(t *testing.T) {
	exp := latencyExporter(t)
	base, _ := promtest.Start(t, "payments", strings.TrimPrefix(exp.URL, "http://"), "payments_latency_p99_seconds")

	const token = "prom-token-0123456789abcdef"
	upstream, _ := url.Parse(base)
	var sawToken bool
	var mu sync.Mutex
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		sawToken = true
		mu.Unlock()
		httputil.NewSingleHostReverseProxy(upstream).ServeHTTP(w, r)
	}))
	defer proxy.Close()

	agentFor := func(url, tokenEnv string) *hclspec.Agent {
		a := loopAgent(hclspec.ToolPrometheusQuery)
		a.Perception.Prometheus = &hclspec.Prometheus{Name: "main", URL: url, BearerTokenEnv: tokenEnv}
		return a
	}
	t.Setenv("RECONCILER_TEST_PROM_TOKEN", token)
	tests := []struct {
		name, url, tokenEnv, args string
		want                      []string // substrings, in order
		wantErr                   bool
	}{
		{name: "instant", url: base, args: `{"query":"payments_latency_p99_seconds{service=\"payments-api\"}"}`,
			want: []string{"prometheus main, instant query at ", "vector, 1 series:\n", `payments_latency_p99_seconds{instance="` + strings.TrimPrefix(exp.URL, "http://") + `", job="payments", namespace="payments-staging", service="payments-api"} => 2.5 @ `}},
		{name: "instant sorted", url: base, args: `{"query":"sort_desc(payments_latency_p99_seconds)","time":"now"}`,
			want: []string{"vector, 2 series:\n", `service="ledger-api"} => 0.12`, `service="payments-api"} => 2.5`}},
		{name: "scalar", url: base, args: `{"query":"max(payments_latency_p99_seconds) > bool 1"}`, want: []string{`{} => 1 @ `}},
		{name: "range", url: base, args: `{"query":"max(payments_latency_p99_seconds)","start":"now-10s","end":"now","step":"2s"}`,
			want: []string{"range query from ", ", step 2s\nmatrix, 1 series:\n{}: 2.5@"}},
		{name: "bad promql", url: base, args: `{"query":"rate(payments_latency_p99_seconds"}`, want: []string{"error: prometheus main: bad_data: invalid parameter \"query\": "}, wantErr: true},
		{name: "bad range promql", url: base, args: `{"query":"sum(","start":"now-10s","end":"now"}`, want: []string{"error: prometheus main: bad_data: ", "parse error"}, wantErr: true},
		{name: "range too fine", url: base, args: `{"query":"up","start":"now-1d","end":"now","step":"1s"}`, want: []string{"error: the range has 86400 points of step 1s; at most 1100 are allowed"}, wantErr: true},
		{name: "time and range", url: base, args: `{"query":"up","time":"now","start":"now-1m","end":"now"}`, want: []string{"error: give either time"}, wantErr: true},
		{name: "bad time", url: base, args: `{"query":"up","time":"yesterday"}`, want: []string{`error: time: "yesterday" is not a time`}, wantErr: true},
		{name: "token", url: proxy.URL, tokenEnv: "RECONCILER_TEST_PROM_TOKEN", args: `{"query":"count(payments_latency_p99_seconds)"}`, want: []string{"{} => 2 @ "}},
		{name: "no token", url: proxy.URL, args: `{"query":"up"}`, want: []string{"error: prometheus main: "}, wantErr: true},
		{name: "token unset", url: proxy.URL, tokenEnv: "RECONCILER_TEST_PROM_UNSET", args: `{"query":"up"}`, want: []string{"error: prometheus \"main\": the variable RECONCILER_TEST_PROM_UNSET (bearer_token_env) is not set"}, wantErr: true},
		{name: "no url", url: "", args: `{"query":"up"}`, want: []string{`error: prometheus "main" has an empty url: its url attribute in providers.hcl evaluated to ""`}, wantErr: true},
		{name: "down", url: "http://127.0.0.1:1", args: `{"query":"up"}`, want: []string{"error: prometheus main: Post http://127.0.0.1:1/api/v1/query: dial tcp 127.0.0.1:1: connect: connection refused"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := senseToolbox(t, agentFor(tt.url, tt.tokenEnv))
			res, err := tb.run(context.Background(), hclspec.ToolPrometheusQuery, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			rest := res.Text
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("result %q lacks %q (in order)", res.Text, w)
				}
				rest = rest[i+len(w):]
			}
			if res.IsErr != tt.wantErr {
				t.Errorf("IsErr = %v, want %v: %q", res.IsErr, tt.wantErr, res.Text)
			}
			if strings.Contains(res.Text, token) {
				t.Errorf("the token is in the result: %q", res.Text)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if !sawToken {
		t.Error("the proxy never saw the bearer token")
	}
}
