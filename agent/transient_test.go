package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// closedURL is the API root of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/v1"
}

// A model run against a real endpoint fails with a *TransientError exactly
// when the failure can pass on retry.
func TestRunFailureRetryable(t *testing.T) {
	answer := func(status int) http.HandlerFunc {
		return writeError(status, fmt.Sprintf(`{"error":{"message":"status %d","type":"server_error"}}`, status))
	}
	tests := []struct {
		name string
		// handler answers every request; nil means no server (a closed
		// port).
		handler   http.HandlerFunc
		opts      ProviderOptions
		timeout   time.Duration // the agent's limits.timeout; 0 is a minute
		cancel    bool          // the caller cancels the run
		retryable bool
		wantMsg   string
	}{
		{name: "500", handler: answer(500), retryable: true, wantMsg: "500"},
		{name: "502", handler: answer(502), retryable: true, wantMsg: "502"},
		{name: "503", handler: answer(503), retryable: true, wantMsg: "503"},
		{name: "429", handler: answer(429), retryable: true, wantMsg: "429"},
		{name: "400", handler: answer(400), wantMsg: "400"},
		{name: "401", handler: answer(401), wantMsg: "401"},
		{name: "404", handler: answer(404), wantMsg: "404"},
		{name: "connection refused", retryable: true, wantMsg: "connection refused"},
		{name: "request timeout", handler: hang, opts: ProviderOptions{RequestTimeout: 50 * time.Millisecond}, retryable: true,
			wantMsg: "deadline exceeded"},
		{name: "run timeout", handler: hang, timeout: 100 * time.Millisecond, wantMsg: "limits.timeout"},
		{name: "run cancelled", handler: hang, cancel: true, wantMsg: "run cancelled"},
		{name: "not a chat completion", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"object":"list","data":[]}`)
		}, wantMsg: "not a chat completion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := closedURL(t)
			if tt.handler != nil {
				srv := httptest.NewServer(tt.handler)
				t.Cleanup(srv.Close)
				base = srv.URL + "/v1"
			}
			if tt.opts.MaxRetries == 0 {
				tt.opts.MaxRetries = -1 // the Provider's own retries are tested in provider_test.go
			}
			p := newTestProvider(t, base, tt.opts)
			dir := t.TempDir()
			seedTree(t, dir, map[string]string{"services/a.txt": "a\n"})
			a := loopAgent()
			if tt.timeout > 0 {
				a.Limits.Timeout = tt.timeout
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			_, err := loopRunner(p).Run(ctx, loopTask(a, dir))
			if err == nil {
				t.Fatal("the run succeeded")
			}
			if got := Retryable(err); got != tt.retryable {
				t.Errorf("Retryable(%q) = %v, want %v", err, got, tt.retryable)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("the error shows the key: %q", err)
			}
		})
	}
}

// go-openai's own client, without a Provider, is classified the same way.
func TestRunFailureRetryableOpenAIClient(t *testing.T) {
	for _, tc := range []struct {
		status    int
		retryable bool
	}{{503, true}, {429, true}, {403, false}} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(writeError(tc.status, `{"error":{"message":"no","type":"x"}}`))
			t.Cleanup(srv.Close)
			cfg := openai.DefaultConfig("")
			cfg.BaseURL = srv.URL + "/v1"
			dir := t.TempDir()
			seedTree(t, dir, map[string]string{"services/a.txt": "a\n"})
			_, err := loopRunner(openai.NewClientWithConfig(cfg)).Run(context.Background(), loopTask(loopAgent(), dir))
			if err == nil || Retryable(err) != tc.retryable {
				t.Errorf("HTTP %d: err = %v, Retryable = %v, want %v", tc.status, err, Retryable(err), tc.retryable)
			}
		})
	}
}

// The run's own limits, its confinement and an exec agent's exit are
// final.
func TestFinalFailures(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/a.txt": "a\n"})
	a := loopAgent()
	a.Limits.MaxSteps = 1
	listing := &loopScript{respond: func(context.Context, int) (openai.ChatCompletionResponse, error) {
		return loopTools(loopCall{"list_files", `{}`}), nil
	}}
	_, err := loopRunner(listing).Run(context.Background(), loopTask(a, dir))
	if !errors.Is(err, ErrStepLimit) || Retryable(err) {
		t.Errorf("step limit: err = %v, Retryable = %v", err, Retryable(err))
	}

	scope := Confine(&hclspec.Agent{Name: "x", Scope: []string{"deploy/**"}}, []gitstore.FileChange{{Path: "config/a.env"}})
	if scope == nil || Retryable(scope) {
		t.Errorf("scope: err = %v, Retryable = %v", scope, Retryable(scope))
	}

	execAgent := &hclspec.Agent{Name: "exiter", Provider: &hclspec.Provider{Kind: hclspec.ProviderExec, Name: "local"},
		Command: []string{"sh", "-c", "exit 3"}, Limits: hclspec.Limits{Timeout: time.Minute}}
	_, err = Exec{}.Run(context.Background(), Task{Agent: execAgent, RunID: "3f2a9c0d41be", Dir: t.TempDir()})
	if err == nil || Retryable(err) {
		t.Errorf("exec exit: err = %v, Retryable = %v", err, Retryable(err))
	}
}

func TestRetryableWrapping(t *testing.T) {
	cause := errors.New("provider openai.default: HTTP 503")
	tr := Transient(cause)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", cause, false},
		{"transient", tr, true},
		{"wrapped", fmt.Errorf("run x: %w", tr), true},
		{"joined", errors.Join(tr, errors.New("append run.failed: stale")), true},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !errors.Is(tr, cause) || tr.Error() != cause.Error() {
		t.Errorf("Transient(%q) = %q, does not unwrap to its cause", cause, tr)
	}
	if Transient(nil) != nil || Transient(tr) != tr {
		t.Error("Transient wraps nil or a transient error again")
	}
}
