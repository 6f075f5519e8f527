package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/reconcile"
)

// Route names, for rate limits.
const (
	routeAlertmanager = "alertmanager"
	routeGit          = "git"
	routeForge        = "forge"
	routeRuns         = "runs"
)

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s: use %s", r.Method, path, method)
		})
	}
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	handle("GET", "/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	handle("GET", "/readyz", s.readyz)
	handle("GET", "/api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.r.Status())
	})
	handle("POST", "/hooks/alertmanager", s.guard(routeAlertmanager, true, s.alertmanager))
	// A git hook's signature is over the body: it is checked once read.
	handle("POST", "/hooks/git", s.guard(routeGit, false, s.gitHook))
	handle("POST", "/hooks/forge", s.guard(routeForge, false, s.forgeHook))
	handle("POST", "/api/v1/agents/{name}/runs", s.guard(routeRuns, true, s.manualRun))
	handle("POST", "/api/v1/runs/{run_id}/revert", s.guard(routeRuns, true, s.revertRun)) // revert.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route %s", r.URL.Path)
	})
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ready, cause := s.Ready()
	if !ready {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", cause)
		return
	}
	io.WriteString(w, "ok\n")
}

// hookRequest is an authenticated-route request with its body read.
type hookRequest struct {
	*http.Request
	body []byte
}

// guard is what every hook and API route shares: the route's rate limit,
// a secret configured, with bearer the bearer token (see bearer), a JSON
// body if any, bounded, read whole.
func (s *Server) guard(route string, bearer bool, h func(http.ResponseWriter, *hookRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if res := s.lim[route].Reserve(); res.Delay() > 0 {
			res.Cancel()
			w.Header().Set("Retry-After", retryAfter(res.Delay()))
			writeError(w, http.StatusTooManyRequests, "too many requests on %s: retry later", r.URL.Path)
			return
		}
		if s.cfg.Secret.IsZero() {
			writeError(w, http.StatusForbidden, "webhooks and the API are disabled: start the reconciler with --webhook-secret-file FILE")
			return
		}
		if bearer && !s.bearer(w, r) {
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil || mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, "content type %q: send application/json (for a GitHub webhook, set its content type to application/json)", ct)
				return
			}
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.Limits.MaxBody))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeError(w, http.StatusRequestEntityTooLarge, "request body over %d bytes", tooLarge.Limit)
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, "read request body: %v", err)
			return
		}
		h(w, &hookRequest{Request: r, body: body})
	}
}

// bearer checks Authorization: Bearer <secret>, answering 401 when it
// is absent or wrong.
func (s *Server) bearer(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(auth, " ")
	switch {
	case auth == "":
		w.Header().Set("WWW-Authenticate", `Bearer realm="reconciler"`)
		writeError(w, http.StatusUnauthorized, "no Authorization header: send Authorization: Bearer <the webhook secret>")
		return false
	case !ok || !strings.EqualFold(scheme, "Bearer") || !s.cfg.Secret.Equal(strings.TrimSpace(token)):
		w.Header().Set("WWW-Authenticate", `Bearer realm="reconciler", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "the bearer token is not the webhook secret")
		return false
	}
	return true
}

// enqueue queues req and wakes the loop, answering the refusals: 503 when
// the queue is full, 409 on a different request with the same id, 500
// when it cannot be persisted. It reports whether the caller may answer
// 202.
func (s *Server) enqueue(w http.ResponseWriter, req reconcile.Request) bool {
	_, err := s.queue.add(req)
	switch {
	case errors.Is(err, ErrQueueFull):
		w.Header().Set("Retry-After", retryAfter(min(s.cfg.Interval, time.Minute)))
		writeError(w, http.StatusServiceUnavailable, "%v", err)
		return false
	case errors.Is(err, ErrRequestConflict):
		writeError(w, http.StatusConflict, "%v: use another id", err)
		return false
	case err != nil:
		s.log.Error("queue a request", "request", req.ID, "err", err)
		writeError(w, http.StatusInternalServerError, "the request could not be queued: %v", err)
		return false
	}
	s.Wake()
	return true
}

// targetsError answers an error of Reconciler.Targets.
func (s *Server) targetsError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, reconcile.ErrNoSpec):
		w.Header().Set("Retry-After", retryAfter(s.cfg.RetryMin))
		writeError(w, http.StatusServiceUnavailable, "no spec has loaded yet: retry once the reconciler has completed a pass")
	case errors.Is(err, reconcile.ErrUnknownAgent):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, reconcile.ErrNoManualTrigger):
		writeError(w, http.StatusConflict, "%v", err)
	default:
		writeError(w, http.StatusInternalServerError, "%v", err)
	}
}

// runRequest is the body of POST /api/v1/agents/{name}/runs.
type runRequest struct {
	ID     string `json:"id"`
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// RunAccepted is the answer to an accepted manual run request.
type RunAccepted struct {
	Request string `json:"request"`
	Agent   string `json:"agent"`
}

// runBody decodes and checks the body of a manual run or revert request,
// giving it a random id when it has none; it answers 400 when the body is
// bad.
func runBody(w http.ResponseWriter, r *hookRequest) (runRequest, bool) {
	var body runRequest
	if len(bytes.TrimSpace(r.body)) > 0 {
		if err := decodeStrict(r.body, &body, true); err != nil {
			writeError(w, http.StatusBadRequest, "request body: %v", err)
			return body, false
		}
	}
	if err := body.check(); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return body, false
	}
	if body.ID == "" {
		body.ID = newID()
	}
	return body, true
}

func (s *Server) manualRun(w http.ResponseWriter, r *hookRequest) {
	body, ok := runBody(w, r)
	if !ok {
		return
	}
	req := reconcile.Request{ID: body.ID, Agent: r.PathValue("name"), By: body.By, Reason: body.Reason, Received: s.cfg.Now().UTC()}
	targets, err := s.r.Targets(req)
	if err != nil {
		s.targetsError(w, err)
		return
	}
	req.Agent = targets[0]
	if !s.enqueue(w, req) {
		return
	}
	writeJSON(w, http.StatusAccepted, RunAccepted{Request: req.ID, Agent: req.Agent})
}

func (b runRequest) check() error {
	if len(b.ID) > 128 {
		return errors.New("id: at most 128 characters")
	}
	for _, c := range b.ID {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._:-", c)) {
			return fmt.Errorf("id %q: use letters, digits and . _ : - only", b.ID)
		}
	}
	if len(b.By) > 256 || strings.ContainsFunc(b.By, isControl) {
		return errors.New("by: at most 256 characters, no control characters")
	}
	if len(b.Reason) > 4096 || strings.ContainsFunc(b.Reason, func(c rune) bool { return isControl(c) && c != '\n' && c != '\t' }) {
		return errors.New("reason: at most 4096 characters, no control characters but newlines and tabs")
	}
	return nil
}

func isControl(c rune) bool { return c < 0x20 || c == 0x7f }

// newID returns a random request id.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return "req-" + hex.EncodeToString(b[:])
}

// decodeStrict decodes exactly one JSON value from b into v: nothing may
// follow it, and with known, no field v lacks.
func decodeStrict(b []byte, v any, known bool) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if known {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorBody is the body of every refusal.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

// retryAfter is the Retry-After of a duration, in whole seconds.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
