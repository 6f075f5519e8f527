package reconcile_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
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
