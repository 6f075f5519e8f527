package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

const testKey = "sk-test-7f3a9c1e5b2d4a6f8e0c"

func testLookup(name string) (string, bool) {
	if name == "OPENAI_API_KEY" {
		return testKey, true
	}
	return "", false
}

// newTestProvider is provider "openai" "default" at baseURL with the key in
// OPENAI_API_KEY.
func newTestProvider(t testing.TB, baseURL string, opts ProviderOptions) *Provider {
	t.Helper()
	if opts.LookupEnv == nil {
		opts.LookupEnv = testLookup
	}
	p, err := NewProvider(&hclspec.Provider{Kind: "openai", Name: "default", BaseURL: baseURL, APIKeyEnv: "OPENAI_API_KEY"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func chatRequest() openai.ChatCompletionRequest {
	return openai.ChatCompletionRequest{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "hi"}},
	}
}

const chatOK = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}`

func writeChatOK(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, chatOK)
}

func writeError(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

// scripted serves steps in order, one per request, and fails the test on
// any further request. count reports the requests served.
func scripted(t *testing.T, steps ...http.HandlerFunc) (srv *httptest.Server, count func() int) {
	t.Helper()
	var n atomic.Int32
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if i >= len(steps) {
			t.Errorf("unexpected request %d", i+1)
			w.WriteHeader(http.StatusTeapot)
			return
		}
		steps[i](w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { return int(n.Load()) }
}

// hang answers when the client hangs up. The server notices only once the
// request body has been read.
func hang(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// sleepRecorder stands in for the provider's sleep.
type sleepRecorder struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *sleepRecorder) sleeps() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.d)
}

func TestNewProvider(t *testing.T) {
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	tests := []struct {
		name    string
		p       hclspec.Provider
		env     map[string]string
		wantErr string // exact message, or "" for success
		baseURL string
		key     bool
	}{{
		name:    "key variable unset",
		p:       hclspec.Provider{Kind: "openai", Name: "default", APIKeyEnv: "OPENAI_API_KEY"},
		wantErr: "provider openai.default: environment variable OPENAI_API_KEY is not set",
	}, {
		name:    "key variable empty",
		p:       hclspec.Provider{Kind: "openai", Name: "default", BaseURL: "http://127.0.0.1:11434/v1", APIKeyEnv: "OPENAI_API_KEY"},
		env:     map[string]string{"OPENAI_API_KEY": " \n"},
		wantErr: "provider openai.default: environment variable OPENAI_API_KEY is not set",
	}, {
		name:    "OpenAI by default",
		p:       hclspec.Provider{Kind: "openai", Name: "default", APIKeyEnv: "OPENAI_API_KEY"},
		env:     map[string]string{"OPENAI_API_KEY": testKey + "\n"},
		baseURL: "https://api.openai.com/v1",
		key:     true,
	}, {
		name:    "OpenAI without api_key_env",
		p:       hclspec.Provider{Kind: "openai", Name: "hosted"},
		wantErr: `provider openai.hosted: api_key_env is not set; the OpenAI API needs a key: set api_key_env to the name of the variable holding it, such as "OPENAI_API_KEY", or set base_url to an OpenAI-compatible server such as "http://127.0.0.1:11434/v1"`,
	}, {
		name:    "Ollama needs no key",
		p:       hclspec.Provider{Kind: "openai", Name: "local", BaseURL: "http://127.0.0.1:11434/v1/"},
		baseURL: "http://127.0.0.1:11434/v1",
	}, {
		name:    "base_url not http",
		p:       hclspec.Provider{Kind: "openai", Name: "local", BaseURL: "127.0.0.1:11434/v1"},
		wantErr: `provider openai.local: base_url must be an http(s) URL of the API root including /v1, such as "http://127.0.0.1:11434/v1"`,
	}, {
		name:    "credentials in base_url",
		p:       hclspec.Provider{Kind: "openai", Name: "local", BaseURL: "https://user:hunter2@example.com/v1"},
		wantErr: "provider openai.local: base_url must not carry credentials; name the variable holding the key in api_key_env",
	}, {
		name:    "query in base_url",
		p:       hclspec.Provider{Kind: "openai", Name: "local", BaseURL: "https://example.com/v1?key=abc"},
		wantErr: `provider openai.local: base_url must be the API root without a query or fragment, such as "http://127.0.0.1:11434/v1"`,
	}, {
		name:    "exec provider",
		p:       hclspec.Provider{Kind: "exec", Name: "x"},
		wantErr: `provider exec.x: kind "exec" is not an OpenAI-compatible provider; use provider "openai"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProvider(&tt.p, ProviderOptions{LookupEnv: env(tt.env)})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.baseURL != tt.baseURL || (*p.key != "") != tt.key {
				t.Errorf("base URL %q, key set %v", p.baseURL, *p.key != "")
			}
			if tt.key && string(*p.key) != testKey {
				t.Errorf("key not trimmed")
			}
		})
	}

	t.Run("os.LookupEnv by default", func(t *testing.T) {
		t.Setenv("RECONCILER_TEST_KEY", testKey)
		p, err := NewProvider(&hclspec.Provider{Kind: "openai", Name: "default", APIKeyEnv: "RECONCILER_TEST_KEY"}, ProviderOptions{})
		if err != nil || string(*p.key) != testKey {
			t.Fatalf("err %v", err)
		}
		if p.maxRetries != 4 || p.timeout != 2*time.Minute || p.sleep == nil {
			t.Errorf("defaults: %d retries, timeout %s", p.maxRetries, p.timeout)
		}
	})
}

func TestProviderAPIKey(t *testing.T) {
	// Nothing may be logged; capture the process-wide loggers to be sure.
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer log.SetOutput(log.Writer())
	log.SetOutput(&logs)

	var auth []string
	var mu sync.Mutex
	record := func(r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
	}
	echo := `{"error":{"message":"Incorrect API key provided: ` + testKey + `. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
	srv, _ := scripted(t,
		func(w http.ResponseWriter, r *http.Request) { record(r); writeChatOK(w, r) },
		func(w http.ResponseWriter, r *http.Request) {
			record(r)
			writeError(http.StatusUnauthorized, echo)(w, r)
		},
		func(w http.ResponseWriter, r *http.Request) {
			record(r)
			writeError(http.StatusBadGateway, "<html>bad gateway for Bearer "+testKey+"</html>")(w, r)
		},
	)
	p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{MaxRetries: -1})
	if _, err := p.CreateChatCompletion(context.Background(), chatRequest()); err != nil {
		t.Fatal(err)
	}

	_, err := p.CreateChatCompletion(context.Background(), chatRequest())
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
		t.Fatalf("err = %v, want a 401 *openai.APIError", err)
	}
	if strings.Contains(apiErr.Message, testKey) || !strings.Contains(apiErr.Message, "<redacted>") {
		t.Errorf("APIError message %q", apiErr.Message)
	}
	errs := []error{err}

	_, err = p.CreateChatCompletion(context.Background(), chatRequest())
	var reqErr *openai.RequestError
	if !errors.As(err, &reqErr) || reqErr.HTTPStatusCode != http.StatusBadGateway {
		t.Fatalf("err = %v, want a 502 *openai.RequestError", err)
	}
	if bytes.Contains(reqErr.Body, []byte(testKey)) {
		t.Errorf("RequestError body carries the key")
	}
	errs = append(errs, err)

	for _, err := range errs {
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(s, testKey) {
				t.Errorf("error text carries the key: %s", s)
			}
		}
	}
	for _, s := range []string{fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprintf("%v", *p), fmt.Sprint(p.key), fmt.Sprint(*p.key)} {
		if strings.Contains(s, testKey) {
			t.Errorf("formatted provider carries the key: %s", s)
		}
	}
	slog.Info("provider", "key", *p.key)
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("slog shows the key")
	}
	if got := strings.Count(logs.String(), "\n"); got != 1 {
		t.Errorf("the provider logged:\n%s", logs.String())
	}
	for i, a := range auth {
		if a != "Bearer "+testKey {
			t.Errorf("request %d: Authorization is not the bearer key from OPENAI_API_KEY", i)
		}
	}

	t.Run("no key, no header", func(t *testing.T) {
		srv, _ := scripted(t, func(w http.ResponseWriter, r *http.Request) {
			if _, ok := r.Header["Authorization"]; ok {
				t.Errorf("Authorization sent without a key")
			}
			writeChatOK(w, r)
		})
		p, err := NewProvider(&hclspec.Provider{Kind: "openai", Name: "local", BaseURL: srv.URL + "/v1"}, ProviderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.CreateChatCompletion(context.Background(), chatRequest()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProviderRetryRateLimitFixture(t *testing.T) {
	body, err := os.ReadFile(filepath.Join(conformanceDir(t, "go-openai"), "http429-rate-limit.json"))
	if err != nil {
		t.Fatal(err)
	}
	limited := func(header ...string) http.HandlerFunc {
		return writeError(http.StatusTooManyRequests, string(body), header...)
	}
	date := time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name     string
		first    http.HandlerFunc
		min, max time.Duration
	}{
		{"backoff", limited(), time.Second, 1250 * time.Millisecond},
		{"Retry-After seconds", limited("Retry-After", "7"), 7 * time.Second, 7 * time.Second},
		{"Retry-After HTTP date", limited("Retry-After", date), 3 * time.Second, 5 * time.Second},
		{"retry-after-ms", limited("Retry-After", "20", "Retry-After-Ms", "1500"), 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"Retry-After zero", limited("Retry-After", "0"), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, count := scripted(t, tt.first, writeChatOK)
			rec := &sleepRecorder{}
			p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Sleep: rec.sleep})
			resp, err := p.CreateChatCompletion(context.Background(), chatRequest())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Choices[0].Message.Content != "hello" || resp.Usage.TotalTokens != 9 {
				t.Errorf("response %+v", resp)
			}
			s := rec.sleeps()
			if count() != 2 || len(s) != 1 || s[0] < tt.min || s[0] > tt.max {
				t.Errorf("%d requests, sleeps %v; want 2 and one in [%s, %s]", count(), s, tt.min, tt.max)
			}
		})
	}

	t.Run("streaming", func(t *testing.T) {
		sse := "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"
		srv, count := scripted(t, limited("Retry-After", "3"), func(w http.ResponseWriter, r *http.Request) { serveSSE(w, []byte(sse)) })
		rec := &sleepRecorder{}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: true, Sleep: rec.sleep})
		resp, err := p.CreateChatCompletion(context.Background(), chatRequest())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Choices[0].Message.Content != "hello" || count() != 2 || !slices.Equal(rec.sleeps(), []time.Duration{3 * time.Second}) {
			t.Errorf("response %+v after %d requests, sleeps %v", resp, count(), rec.sleeps())
		}
	})

	t.Run("retries exhausted", func(t *testing.T) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			limited()(w, r)
		}))
		defer srv.Close()
		rec := &sleepRecorder{}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Sleep: rec.sleep})
		_, err := p.CreateChatCompletion(context.Background(), chatRequest())
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusTooManyRequests {
			t.Fatalf("err = %v, want a 429 *openai.APIError", err)
		}
		if apiErr.Message != "You are sending requests too quickly." || apiErr.Type != "rate_limit_reached" {
			t.Errorf("APIError %+v", apiErr)
		}
		want := "provider openai.default: chat completion failed after 5 attempts: error, status code: 429, status: 429 Too Many Requests, message: You are sending requests too quickly."
		if err.Error() != want {
			t.Errorf("err = %q\nwant %q", err, want)
		}
		s := rec.sleeps()
		if n.Load() != 5 || len(s) != 4 {
			t.Fatalf("%d requests, sleeps %v; want 5 and 4", n.Load(), s)
		}
		for i, d := range s {
			base := time.Second << i
			if d < base || d > base+base/4 {
				t.Errorf("sleep %d = %s, want in [%s, %s]", i, d, base, base+base/4)
			}
		}
	})
}

func TestProviderRetry(t *testing.T) {
	fail := func(status int) http.HandlerFunc {
		return writeError(status, `{"error":{"message":"status `+fmt.Sprint(status)+`","type":"server_error","param":null,"code":null}}`)
	}
	hangUp := func(reset bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			if reset {
				conn.(*net.TCPConn).SetLinger(0) // RST instead of FIN
			}
			conn.Close()
		}
	}
	tests := []struct {
		name     string
		steps    []http.HandlerFunc
		opts     ProviderOptions
		wantErr  bool
		status   int
		sleeps   int
		contains string
	}{
		{name: "500, 502, 503 then success", steps: []http.HandlerFunc{fail(500), fail(502), fail(503), writeChatOK}, sleeps: 3},
		{name: "HTML 502 from a proxy", steps: []http.HandlerFunc{writeError(502, "<html>Bad Gateway</html>"), writeChatOK}, sleeps: 1},
		{name: "408 and 409", steps: []http.HandlerFunc{fail(408), fail(409), writeChatOK}, sleeps: 2},
		{name: "400 not retried", steps: []http.HandlerFunc{fail(400)}, wantErr: true, status: 400},
		{name: "401 not retried", steps: []http.HandlerFunc{fail(401)}, wantErr: true, status: 401},
		{name: "422 not retried", steps: []http.HandlerFunc{fail(422)}, wantErr: true, status: 422},
		{name: "404 hints at base_url", steps: []http.HandlerFunc{writeError(404, "404 page not found")}, wantErr: true, status: 404, contains: "is the API root including /v1"},
		{name: "connection closed", steps: []http.HandlerFunc{hangUp(false), writeChatOK}, sleeps: 1},
		{name: "connection reset", steps: []http.HandlerFunc{hangUp(true), writeChatOK}, sleeps: 1},
		{name: "attempt timeout", opts: ProviderOptions{RequestTimeout: 100 * time.Millisecond}, steps: []http.HandlerFunc{
			hang,
			writeChatOK,
		}, sleeps: 1},
		{name: "MaxRetries 1", opts: ProviderOptions{MaxRetries: 1}, steps: []http.HandlerFunc{fail(500), fail(500)}, wantErr: true, status: 500, sleeps: 1, contains: "after 2 attempts"},
		{name: "retries disabled", opts: ProviderOptions{MaxRetries: -1}, steps: []http.HandlerFunc{fail(503)}, wantErr: true, status: 503, contains: "after 1 attempt:"},
		{name: "Retry-After beyond the cap", steps: []http.HandlerFunc{writeError(429, `{"error":{"message":"quota","type":"x"}}`, "Retry-After", "3600")}, wantErr: true, status: 429, contains: "server asks to retry in 1h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, count := scripted(t, tt.steps...)
			rec := &sleepRecorder{}
			tt.opts.Sleep = rec.sleep
			p := newTestProvider(t, srv.URL+"/v1", tt.opts)
			resp, err := p.CreateChatCompletion(context.Background(), chatRequest())
			if count() != len(tt.steps) || len(rec.sleeps()) != tt.sleeps {
				t.Errorf("%d requests, sleeps %v; want %d and %d", count(), rec.sleeps(), len(tt.steps), tt.sleeps)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if resp.Choices[0].Message.Content != "hello" {
					t.Errorf("response %+v", resp)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := httpStatus(err); got != tt.status {
				t.Errorf("status %d, want %d (%v)", got, tt.status, err)
			}
			if !strings.HasPrefix(err.Error(), "provider openai.default: chat completion failed after ") || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %q, want the provider and %q", err, tt.contains)
			}
		})
	}
}

func TestProviderRetryContext(t *testing.T) {
	unavailable := writeError(503, `{"error":{"message":"overloaded","type":"server_error"}}`)

	t.Run("cancellation stops retrying promptly", func(t *testing.T) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1); unavailable(w, r) }))
		defer srv.Close()
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{}) // real sleeps: the first backoff is at least 1s
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := p.CreateChatCompletion(ctx, chatRequest())
		if elapsed := time.Since(start); elapsed > 800*time.Millisecond {
			t.Errorf("returned after %s", elapsed)
		}
		if !errors.Is(err, context.Canceled) || httpStatus(err) != 503 {
			t.Errorf("err = %v, want context.Canceled and the 503", err)
		}
		if n.Load() != 1 {
			t.Errorf("%d requests", n.Load())
		}
	})

	t.Run("cancellation during a request", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(hang))
		defer srv.Close()
		rec := &sleepRecorder{}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Sleep: rec.sleep})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := p.CreateChatCompletion(ctx, chatRequest())
		if !errors.Is(err, context.DeadlineExceeded) || len(rec.sleeps()) != 0 {
			t.Errorf("err = %v, sleeps %v", err, rec.sleeps())
		}
	})

	t.Run("Retry-After past the deadline", func(t *testing.T) {
		srv, count := scripted(t, writeError(429, `{"error":{"message":"slow down","type":"rate_limit"}}`, "Retry-After", "30"))
		rec := &sleepRecorder{}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Sleep: rec.sleep})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := p.CreateChatCompletion(ctx, chatRequest())
		if httpStatus(err) != 429 || !strings.Contains(err.Error(), "next attempt in 30s would pass the deadline") {
			t.Errorf("err = %v", err)
		}
		if count() != 1 || len(rec.sleeps()) != 0 {
			t.Errorf("%d requests, sleeps %v", count(), rec.sleeps())
		}
	})
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		h    http.Header
		want time.Duration
	}{
		{nil, -1},
		{http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After": {"1.5"}}, 1500 * time.Millisecond},
		{http.Header{"Retry-After": {"Sat, 21 Nov 2026 12:00:09 GMT"}}, 9 * time.Second},
		{http.Header{"Retry-After": {"Sat, 21 Nov 2026 11:00:00 GMT"}}, 0},
		{http.Header{"Retry-After": {"soon"}}, -1},
		{http.Header{"Retry-After": {"-3"}}, -1},
		{http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"1"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"x"}, "Retry-After": {"1"}}, time.Second},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.h, now); got != tt.want {
			t.Errorf("retryAfter(%v) = %s, want %s", tt.h, got, tt.want)
		}
	}
	for n := 1; n <= 40; n++ {
		if d := backoff(n); d < min(time.Second<<min(n-1, 10), retryCap) || d > retryCap {
			t.Errorf("backoff(%d) = %s", n, d)
		}
	}
}

// cassetteTurn is one recorded exchange from pydantic-ai's VCR cassettes
// of api.openai.com and Gemini's OpenAI-compatible endpoint.
type cassetteTurn struct {
	request  []byte
	response []byte
	sse      bool
}

func loadCassettes(t *testing.T) map[string][]cassetteTurn {
	dir := conformanceDir(t, "pydantic-ai-cassettes", "extracted")
	files, err := filepath.Glob(filepath.Join(dir, "*.request.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cassettes in %s: %v", dir, err)
	}
	slices.Sort(files)
	out := map[string][]cassetteTurn{}
	name := regexp.MustCompile(`^(.*)\.(\d+)\.request\.json$`)
	for _, f := range files {
		m := name.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			t.Fatalf("unexpected cassette file %s", f)
		}
		req, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		turn := cassetteTurn{request: req}
		base := strings.TrimSuffix(f, ".request.json")
		if turn.response, err = os.ReadFile(base + ".response.json"); err != nil {
			if turn.response, err = os.ReadFile(base + ".response.sse"); err != nil {
				t.Fatal(err)
			}
			turn.sse = true
		}
		out[m[1]] = append(out[m[1]], turn)
	}
	return out
}

// normalizeJSON decodes b and drops null, false and "" values: the fields
// go-openai omits and Python clients send explicitly.
func normalizeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	var norm func(any) any
	norm = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if x == nil || x == false || x == "" {
					delete(v, k)
					continue
				}
				v[k] = norm(x)
			}
		case []any:
			for i := range v {
				v[i] = norm(v[i])
			}
		}
		return v
	}
	return norm(v)
}

func TestProviderCassettes(t *testing.T) {
	cassettes := loadCassettes(t)
	for _, name := range []string{
		"test_compatible_api_with_tool_calls_without_id",
		"test_multiple_agent_tool_calls",
		"test_openai_instructions_with_tool_calls_keep_instructions",
		"test_openai_tool_output",
		"test_run_stream_sync_streams_real_model",
	} {
		turns := cassettes[name]
		delete(cassettes, name)
		t.Run(name, func(t *testing.T) {
			if len(turns) < 2 {
				t.Fatalf("%d turns", len(turns))
			}
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				if i >= len(turns) {
					t.Errorf("unexpected request %d", i+1)
					return
				}
				var buf bytes.Buffer
				buf.ReadFrom(r.Body)
				if d := cmp.Diff(normalizeJSON(t, turns[i].request), normalizeJSON(t, buf.Bytes())); d != "" {
					t.Errorf("turn %d: request differs from the recording (-recorded +sent):\n%s", i, d)
				}
				if turns[i].sse {
					serveSSE(w, turns[i].response)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write(turns[i].response)
			}))
			defer srv.Close()
			rec := &sleepRecorder{}
			p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: turns[0].sse, Sleep: rec.sleep})

			var sent []openai.ChatCompletionMessage
			for i, turn := range turns {
				var req openai.ChatCompletionRequest
				if err := json.Unmarshal(turn.request, &req); err != nil {
					t.Fatal(err)
				}
				if i > 0 {
					// The next turn is built the way the tool loop builds
					// it: the history sent, the assistant message as the
					// provider returned it, then the recorded tool results.
					req.Messages = append(sent, req.Messages[len(sent):]...)
				}
				resp, err := p.CreateChatCompletion(context.Background(), req)
				if err != nil {
					t.Fatalf("turn %d: %v", i, err)
				}
				if !turn.sse {
					var want openai.ChatCompletionResponse
					if err := json.Unmarshal(turn.response, &want); err != nil {
						t.Fatal(err)
					}
					if d := cmp.Diff(want, resp, cmpopts.IgnoreUnexported(openai.ChatCompletionResponse{})); d != "" {
						t.Errorf("turn %d: response differs from the recording (-recorded +got):\n%s", i, d)
					}
				}
				checkCassetteTurn(t, name, i, resp)
				msg := resp.Choices[0].Message
				for j, tc := range msg.ToolCalls {
					if tc.ID == "" && i+1 < len(turns) {
						// Gemini sends tool calls without an id; pydantic-ai
						// made one up, so take the one it sent.
						var next openai.ChatCompletionRequest
						json.Unmarshal(turns[i+1].request, &next)
						msg.ToolCalls[j].ID = next.Messages[len(req.Messages)].ToolCalls[j].ID
					}
				}
				sent = append(req.Messages, msg)
			}
			if int(n.Load()) != len(turns) || len(rec.sleeps()) != 0 {
				t.Errorf("%d requests for %d turns, sleeps %v", n.Load(), len(turns), rec.sleeps())
			}
		})
	}

	t.Run("test_invalid_response", func(t *testing.T) {
		turns := cassettes["test_invalid_response"]
		delete(cassettes, "test_invalid_response")
		if len(turns) != 1 {
			t.Fatalf("%d turns", len(turns))
		}
		srv, count := scripted(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(turns[0].response)
		})
		var req openai.ChatCompletionRequest
		if err := json.Unmarshal(turns[0].request, &req); err != nil {
			t.Fatal(err)
		}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Sleep: (&sleepRecorder{}).sleep})
		resp, err := p.CreateChatCompletion(context.Background(), req)
		if !errors.Is(err, ErrInvalidChatResponse) {
			t.Fatalf("err = %v, response %+v; want ErrInvalidChatResponse", err, resp)
		}
		if !strings.Contains(err.Error(), "check that base_url") || count() != 1 {
			t.Errorf("err = %v after %d requests", err, count())
		}
	})

	for name := range cassettes {
		t.Errorf("cassette %s is not replayed", name)
	}
}

// checkCassetteTurn checks what the recordings say, independently of
// go-openai's decoding.
func checkCassetteTurn(t *testing.T, name string, turn int, resp openai.ChatCompletionResponse) {
	t.Helper()
	type want struct {
		id, fn, args, content string
		finish                openai.FinishReason
		usage                 [3]int
	}
	wants := map[string][]want{
		"test_compatible_api_with_tool_calls_without_id": {
			{id: "", fn: "get_current_time", args: "{}", finish: "tool_calls", usage: [3]int{35, 12, 109}},
			{content: "The current time is Noon.", finish: "stop", usage: [3]int{66, 6, 100}},
		},
		"test_multiple_agent_tool_calls": {
			{id: "call_SkEQ3ZGSJC8m6AvaIGNuuKdm", fn: "get_capital", args: `{"country":"England"}`, finish: "tool_calls", usage: [3]int{104, 16, 120}},
			{content: "The capital of England is London.", finish: "stop", usage: [3]int{129, 9, 138}},
		},
		"test_openai_instructions_with_tool_calls_keep_instructions": {
			{id: "call_bhZkmIKKItNGJ41whHUHB7p9", fn: "get_temperature", args: `{"city":"Tokyo"}`, finish: "tool_calls", usage: [3]int{50, 15, 65}},
			{content: "The temperature in Tokyo is currently 20.0 degrees Celsius.", finish: "stop", usage: [3]int{75, 15, 90}},
		},
		"test_openai_tool_output": {
			{id: "call_iXFttys57ap0o16JSlC8yhYo", fn: "get_user_country", args: "{}", finish: "tool_calls", usage: [3]int{68, 12, 80}},
			{id: "call_gmD2oUZUzSoCkmNmp3JPUF7R", fn: "final_result", args: `{"city": "Mexico City", "country": "Mexico"}`, finish: "tool_calls", usage: [3]int{89, 36, 125}},
		},
		"test_run_stream_sync_streams_real_model": {
			{id: "call_ZR5UUuTt3pf61kjwAJIYdVMj", fn: "get_capital", args: `{"country":"UK"}`, finish: "tool_calls", usage: [3]int{53, 15, 68}},
			{content: "The capital of the UK is London.", finish: "stop", usage: [3]int{78, 9, 87}},
		},
	}
	w := wants[name][turn]
	if len(resp.Choices) != 1 {
		t.Fatalf("turn %d: %d choices", turn, len(resp.Choices))
	}
	c := resp.Choices[0]
	var calls []openai.ToolCall
	if w.fn != "" {
		calls = []openai.ToolCall{{ID: w.id, Type: "function", Function: openai.FunctionCall{Name: w.fn, Arguments: w.args}}}
	}
	got := [3]int{resp.Usage.PromptTokens, resp.Usage.CompletionTokens, resp.Usage.TotalTokens}
	if !reflect.DeepEqual(calls, c.Message.ToolCalls) || c.Message.Content != w.content || c.FinishReason != w.finish || got != w.usage {
		t.Errorf("turn %d: tool calls %+v content %q finish %q usage %v; want %+v", turn, c.Message.ToolCalls, c.Message.Content, c.FinishReason, got, w)
	}
}

func BenchmarkCreateChatCompletion(b *testing.B) {
	stream := []byte("data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"\"}}]}}]}\n\n" +
		"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\":\\\"go.mod\\\"}\"}}]}}]}\n\n" +
		"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n" +
		"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":12,\"total_tokens\":52}}\n\n" +
		"data: [DONE]\n\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "text/event-stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write(stream)
			return
		}
		writeChatOK(w, r)
	}))
	defer srv.Close()
	for _, s := range []bool{false, true} {
		b.Run(fmt.Sprintf("stream=%v", s), func(b *testing.B) {
			p := newTestProvider(b, srv.URL+"/v1", ProviderOptions{Stream: s})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.CreateChatCompletion(ctx, chatRequest()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
