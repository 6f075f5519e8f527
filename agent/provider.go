package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

// Retry defaults of a Provider.
const (
	defaultMaxRetries     = 4
	defaultRequestTimeout = 2 * time.Minute
	retryBase             = time.Second
	retryCap              = 30 * time.Second
	// maxRetryAfter is the longest Retry-After a Provider waits for; a
	// longer one (a spent quota) ends the call with the error, since the
	// caller is better placed to come back later.
	maxRetryAfter = 5 * time.Minute
	// streamEmptyLineLimit replaces go-openai's default of 300 consecutive
	// non-data SSE lines, which keep-alive comments from slow
	// OpenAI-compatible servers can reach.
	streamEmptyLineLimit = 100_000
)

// ErrInvalidChatResponse is wrapped when an endpoint answers 200 with a body
// that is not a chat completion (no choices), typically because base_url
// points at something other than an OpenAI-compatible API root.
var ErrInvalidChatResponse = errors.New("response is not a chat completion")

// ErrIncompleteStream is wrapped when a stream ends before a choice has a
// finish_reason: the connection dropped or the server gave up. A Provider
// retries it like a transport error.
var ErrIncompleteStream = errors.New("stream ended before finish_reason")

// ProviderOptions tune a Provider; zero values are sensible defaults.
type ProviderOptions struct {
	// HTTPClient sends the requests. Default: a client with no global
	// timeout; per-request timeouts come from RequestTimeout.
	HTTPClient *http.Client
	// LookupEnv resolves the provider's api_key_env. Default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// MaxRetries is the number of retries after the first attempt.
	// Default 4; a negative value disables retries.
	MaxRetries int
	// RequestTimeout bounds each attempt, a stream's body included.
	// Default 2m.
	RequestTimeout time.Duration
	// Stream makes the provider stream responses and reassemble them with
	// Accumulate.
	Stream bool
	// Sleep waits between attempts. Default: a timer honouring ctx; tests
	// inject a recorder.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Provider is a Model for a `provider "openai"` block: any
// OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama).
// It retries rate limits, server errors and transport failures, and never
// logs. It is safe for concurrent use.
type Provider struct {
	name       string // kind.name, as in errors
	baseURL    string
	key        *secret // a pointer, so that printing a Provider shows no key
	client     *openai.Client
	stream     bool
	maxRetries int
	timeout    time.Duration
	sleep      func(context.Context, time.Duration) error
}

var _ Model = (*Provider)(nil)

// NewProvider returns the Model for p, an openai provider block. An empty
// base_url means the OpenAI API (https://api.openai.com/v1); otherwise it
// must be an http(s) URL of the API root including /v1 (Ollama:
// http://127.0.0.1:11434/v1). The key is read from the variable named by
// api_key_env; NewProvider fails when that variable is unset or empty, and
// when the OpenAI API is used without api_key_env. Endpoints given by
// base_url without api_key_env (local servers) get no key. Errors name the
// provider and what to set, never the key.
func NewProvider(p *hclspec.Provider, opts ProviderOptions) (*Provider, error) {
	if p == nil {
		return nil, errors.New("new provider: no provider block")
	}
	name := p.Kind + "." + p.Name
	if p.Kind != hclspec.ProviderOpenAI {
		return nil, fmt.Errorf("provider %s: kind %q is not an OpenAI-compatible provider; use provider \"openai\"", name, p.Kind)
	}
	baseURL := strings.TrimRight(p.BaseURL, "/")
	if baseURL == "" {
		if p.APIKeyEnv == "" {
			return nil, fmt.Errorf("provider %s: api_key_env is not set; the OpenAI API needs a key: set api_key_env to the name of the variable holding it, such as \"OPENAI_API_KEY\", or set base_url to an OpenAI-compatible server such as \"http://127.0.0.1:11434/v1\"", name)
		}
		baseURL = "https://api.openai.com/v1"
	} else {
		u, err := url.Parse(baseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("provider %s: base_url must be an http(s) URL of the API root including /v1, such as \"http://127.0.0.1:11434/v1\"", name)
		}
		if u.User != nil {
			return nil, fmt.Errorf("provider %s: base_url must not carry credentials; name the variable holding the key in api_key_env", name)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("provider %s: base_url must be the API root without a query or fragment, such as \"http://127.0.0.1:11434/v1\"", name)
		}
	}
	var key string
	if p.APIKeyEnv != "" {
		lookup := opts.LookupEnv
		if lookup == nil {
			lookup = os.LookupEnv
		}
		v, ok := lookup(p.APIKeyEnv)
		key = strings.TrimSpace(v)
		if !ok || key == "" {
			return nil, fmt.Errorf("provider %s: environment variable %s is not set", name, p.APIKeyEnv)
		}
	}

	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = baseURL
	cfg.HTTPClient = attemptDoer{hc}
	cfg.EmptyMessagesLimit = streamEmptyLineLimit

	pr := &Provider{
		name:       name,
		baseURL:    baseURL,
		key:        new(secret(key)),
		client:     openai.NewClientWithConfig(cfg),
		stream:     opts.Stream,
		maxRetries: opts.MaxRetries,
		timeout:    opts.RequestTimeout,
		sleep:      opts.Sleep,
	}
	switch {
	case pr.maxRetries == 0:
		pr.maxRetries = defaultMaxRetries
	case pr.maxRetries < 0:
		pr.maxRetries = 0
	}
	if pr.timeout <= 0 {
		pr.timeout = defaultRequestTimeout
	}
	if pr.sleep == nil {
		pr.sleep = sleepContext
	}
	return pr, nil
}

// String names the provider; it never shows the key.
func (p *Provider) String() string { return "provider " + p.name }

// GoString is String, so that %#v does not print the key either.
func (p *Provider) GoString() string { return p.String() }

// CreateChatCompletion sends req, streaming when the provider was built
// with Stream or req.Stream is set (the stream is reassembled with
// Accumulate, and usage is requested with stream_options.include_usage).
//
// It retries HTTP 408, 409, 429 and 5xx answers, transport errors,
// attempts that exceed RequestTimeout and truncated streams, up to
// MaxRetries times, waiting with exponential backoff plus jitter (base 1s,
// cap 30s) or as long as the server's retry-after-ms or Retry-After
// (seconds or HTTP date) header says. Other 4xx answers, error events in a
// stream and invalid bodies are not retried. ctx bounds the whole call: it
// stops waiting when ctx ends, and gives up at once when the server asks
// for a wait beyond ctx's deadline.
//
// Errors name the provider and the number of attempts, and wrap the last
// attempt's error: *openai.APIError or *openai.RequestError (with
// HTTPStatusCode) for HTTP errors, ErrInvalidChatResponse,
// ErrIncompleteStream, or ctx's error. They never contain the API key.
// The response carries Usage as the server reported it.
func (p *Provider) CreateChatCompletion(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	stream := p.stream || req.Stream
	for attempt := 1; ; attempt++ {
		resp, wait, err := p.attempt(ctx, req, stream)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return openai.ChatCompletionResponse{}, p.fail(attempt, fmt.Errorf("%w (last error: %w)", context.Cause(ctx), err))
		}
		if !retryable(err) || attempt > p.maxRetries {
			return openai.ChatCompletionResponse{}, p.fail(attempt, err)
		}
		d := backoff(attempt)
		if wait >= 0 {
			if wait > maxRetryAfter {
				return openai.ChatCompletionResponse{}, p.fail(attempt, fmt.Errorf("server asks to retry in %s: %w", wait.Round(time.Second), err))
			}
			d = wait
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
			return openai.ChatCompletionResponse{}, p.fail(attempt, fmt.Errorf("next attempt in %s would pass the deadline: %w", d.Round(time.Millisecond), err))
		}
		if serr := p.sleep(ctx, d); serr != nil {
			return openai.ChatCompletionResponse{}, p.fail(attempt, fmt.Errorf("%w (last error: %w)", serr, err))
		}
	}
}

// attempt sends req once under its own timeout. wait is the delay the
// server asked for before a retry, or -1.
func (p *Provider) attempt(ctx context.Context, req openai.ChatCompletionRequest, stream bool) (openai.ChatCompletionResponse, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	rec := &attemptRecord{}
	ctx = context.WithValue(ctx, attemptKey{}, rec)

	var (
		resp openai.ChatCompletionResponse
		err  error
	)
	if stream {
		resp, err = p.createStream(ctx, req)
	} else {
		resp, err = p.client.CreateChatCompletion(ctx, req)
		if err == nil && len(resp.Choices) == 0 {
			err = fmt.Errorf("%w: HTTP %d with no choices; check that base_url %q is the API root including /v1", ErrInvalidChatResponse, rec.status, p.baseURL)
		}
	}
	if err == nil {
		return resp, -1, nil
	}
	if rec.status == http.StatusNotFound {
		err = fmt.Errorf("%w (check that base_url %q is the API root including /v1)", err, p.baseURL)
	}
	return resp, retryAfter(rec.header, time.Now()), err
}

// fail wraps err with the provider's name, with the key scrubbed.
func (p *Provider) fail(attempts int, err error) error {
	return &providerError{name: p.name, attempts: attempts, err: scrub(err, string(*p.key))}
}

// providerError is what CreateChatCompletion returns; it unwraps to the
// last attempt's error.
type providerError struct {
	name     string
	attempts int
	err      error
}

func (e *providerError) Error() string {
	n := "1 attempt"
	if e.attempts != 1 {
		n = strconv.Itoa(e.attempts) + " attempts"
	}
	return fmt.Sprintf("provider %s: chat completion failed after %s: %v", e.name, n, e.err)
}

func (e *providerError) Unwrap() error { return e.err }

// scrub removes key from the error values go-openai builds from response
// bodies (an endpoint may echo the key back), and replaces any other error
// whose text contains it.
func scrub(err error, key string) error {
	if key == "" || err == nil {
		return err
	}
	const redacted = "<redacted>"
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		apiErr.Message = strings.ReplaceAll(apiErr.Message, key, redacted)
		if apiErr.Param != nil && strings.Contains(*apiErr.Param, key) {
			s := strings.ReplaceAll(*apiErr.Param, key, redacted)
			apiErr.Param = &s
		}
		if c, ok := apiErr.Code.(string); ok {
			apiErr.Code = strings.ReplaceAll(c, key, redacted)
		}
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		reqErr.Body = []byte(strings.ReplaceAll(string(reqErr.Body), key, redacted))
	}
	if msg := err.Error(); strings.Contains(msg, key) {
		return errors.New(strings.ReplaceAll(msg, key, redacted))
	}
	return err
}

// retryable reports whether an attempt that failed with err may succeed
// when repeated.
func retryable(err error) bool {
	if errors.Is(err, ErrWorkLimit) {
		return false // a reply over MaxResponseBytes is as large again
	}
	if status := httpStatus(err); status != 0 {
		return status == http.StatusRequestTimeout || status == http.StatusConflict ||
			status == http.StatusTooManyRequests || status >= 500
	}
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &certErr):
		return false
	case errors.Is(err, ErrIncompleteStream),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded), // the attempt's timeout; the caller's is checked first
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return true // the request did not get an HTTP answer
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// httpStatus is the status of an HTTP error answer, or 0.
func httpStatus(err error) int {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatusCode
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		return reqErr.HTTPStatusCode
	}
	return 0
}

// backoff is the wait before retry n (1-based): base·2^(n-1) plus up to a
// quarter of that in jitter, at most retryCap.
func backoff(n int) time.Duration {
	d := retryCap
	if n-1 < 16 {
		d = min(retryBase<<(n-1), retryCap)
	}
	d += rand.N(d/4 + 1)
	return min(d, retryCap)
}

// retryAfter reads the delay a server asks for: retry-after-ms
// (milliseconds, as OpenAI sends), else Retry-After in seconds or as an
// HTTP date. It returns -1 when there is none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return -1
	}
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < float64(24*time.Hour/time.Millisecond) {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return -1
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s < 0 || s > (24*time.Hour).Seconds() {
			return -1
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return -1
}

// sleepContext waits for d or until ctx ends.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// attemptKey carries an *attemptRecord in a request's context, so that the
// doer can note the answer's status and headers, which go-openai's errors
// drop.
type attemptKey struct{}

type attemptRecord struct {
	status int
	header http.Header
}

// attemptDoer is the openai.HTTPDoer of a Provider.
type attemptDoer struct{ c *http.Client }

func (d attemptDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.c.Do(req)
	if rec, ok := req.Context().Value(attemptKey{}).(*attemptRecord); ok && resp != nil {
		rec.status = resp.StatusCode
		rec.header = resp.Header
	}
	if resp != nil && resp.Body != nil {
		// go-openai decodes a reply whole: bound what it may read, so
		// that one reply (a 100 MB tool call, say) cannot take the
		// reconciler's memory.
		resp.Body = &cappedBody{ReadCloser: resp.Body, left: MaxResponseBytes}
	}
	return resp, err
}

// MaxResponseBytes bounds one reply of a provider. A model's legitimate
// reply is far smaller (a write_file of the largest file a tool accepts
// is 4 MiB of arguments); a larger one fails the run with
// limit max_response_bytes, never retried.
const MaxResponseBytes = 64 << 20

// cappedBody fails a read past left bytes with a *LimitError.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, limitErrorf("max_response_bytes", MaxResponseBytes, "the provider's reply is larger than %d bytes; it was not read", MaxResponseBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// secret is an API key; it prints as <secret>.
type secret string

func (secret) String() string   { return "<secret>" }
func (secret) GoString() string { return "<secret>" }

// LogValue keeps the key out of slog output.
func (secret) LogValue() slog.Value { return slog.StringValue("<secret>") }
