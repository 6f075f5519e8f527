package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/server"
)

// RequestsAnnotation holds an AgentRepository's pending requests (alert
// notifications and manual runs) as a JSON array, between the replica that
// received them and the leader that runs them. Like Flux's requestedAt it
// lives on the object: Kubernetes is the only store every replica shares,
// and git and the ledger stay the record of what ran (a request that ran is
// its run's trigger id in the ledger, so one handled twice runs once).
const RequestsAnnotation = "agents.reconciler.dev/requests"

// Bounds of the pending requests of one object: Kubernetes caps all of an
// object's annotations at 256 KiB together.
const (
	maxPendingRequests = 64
	maxRequestsBytes   = 128 << 10
)

// wireRequest is a reconcile.Request as the annotation stores it.
type wireRequest struct {
	ID     string        `json:"id"`
	Agent  string        `json:"agent,omitempty"`
	By     string        `json:"by,omitempty"`
	Reason string        `json:"reason,omitempty"`
	Alert  *ledger.Alert `json:"alert,omitempty"`
	// Revert is the run whose merged change a revert request reverts.
	Revert   string    `json:"revert,omitempty"`
	Received time.Time `json:"received"`
}

func (w wireRequest) request() reconcile.Request {
	return reconcile.Request{ID: w.ID, Agent: w.Agent, By: w.By, Reason: w.Reason, Alert: w.Alert, Revert: w.Revert, Received: w.Received}
}

// pendingRequests decodes obj's requests annotation. A value that does not
// decode is reported and treated as empty (whoever wrote it can patch the
// object anyway; the next request replaces it).
func pendingRequests(obj *agentsv1.AgentRepository) ([]wireRequest, error) {
	v := obj.GetAnnotations()[RequestsAnnotation]
	if v == "" {
		return nil, nil
	}
	var out []wireRequest
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf("annotation %s does not decode: %v", RequestsAnnotation, err)
	}
	return out, nil
}

func setPending(obj *agentsv1.AgentRepository, reqs []wireRequest) error {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	if len(reqs) == 0 {
		delete(ann, RequestsAnnotation)
		obj.SetAnnotations(ann)
		return nil
	}
	b, err := json.Marshal(reqs)
	if err != nil {
		return err
	}
	if len(b) > maxRequestsBytes {
		return errQueueFull
	}
	ann[RequestsAnnotation] = string(b)
	obj.SetAnnotations(ann)
	return nil
}

var errQueueFull = errors.New("the object's pending requests are full: retry after its next pass")

// RequestHook receives, in controller mode, what the daemon receives at
// /hooks/alertmanager and POST /api/v1/agents/{name}/runs, for one
// AgentRepository named in the path:
//
//	POST /hooks/alertmanager/{namespace}/{name}
//	POST /api/v1/namespaces/{namespace}/agentrepositories/{name}/agents/{agent}/runs
//
// Any replica may receive a request: it adds it to the object's
// RequestsAnnotation (with an optimistic lock, so two replicas never drop
// each other's) and sets reconcile.fluxcd.io/requestedAt, and the leader's
// next pass runs it and removes it. Both routes need the webhook secret as
// a bearer token (Alertmanager's http_config authorization), compared in
// constant time.
type RequestHook struct {
	Client client.Client
	// Secret returns the shared secret; a zero one refuses every request.
	Secret func() server.Secret
	Logger *slog.Logger
	// Now is the clock of received times and the requestedAt annotation;
	// nil means time.Now.
	Now func() time.Time
}

// Register adds the hook's routes to mux.
func (h *RequestHook) Register(mux *http.ServeMux) {
	mux.HandleFunc("/hooks/alertmanager/{namespace}/{name}", h.guard(h.alert))
	mux.HandleFunc("/api/v1/namespaces/{namespace}/agentrepositories/{name}/agents/{agent}/runs", h.guard(h.run))
	mux.HandleFunc("/api/v1/namespaces/{namespace}/agentrepositories/{name}/runs/{run_id}/revert", h.guard(h.revert))
}

func (h *RequestHook) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *RequestHook) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// guard checks the method, the bearer token and the body's size before f.
func (h *RequestHook) guard(f func(http.ResponseWriter, *http.Request, []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		secret := server.Secret{}
		if h.Secret != nil {
			secret = h.Secret()
		}
		if secret.IsZero() {
			http.Error(w, "no webhook secret is configured (--webhook-secret-file)", http.StatusForbidden)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "an Authorization: Bearer <webhook secret> header is required", http.StatusUnauthorized)
			return
		}
		if !secret.Equal(strings.TrimSpace(token)) {
			http.Error(w, "the bearer token is not the webhook secret", http.StatusUnauthorized)
			return
		}
		body, ok := readHookBody(w, r)
		if !ok {
			return
		}
		f(w, r, body)
	}
}

func (h *RequestHook) alert(w http.ResponseWriter, r *http.Request, body []byte) {
	al, err := server.ParseAlertmanager(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.add(w, r, wireRequest{ID: server.AlertRequestID(al), Alert: al, Received: h.now().UTC()})
}

// runBody is the caller's part of a manual run or revert request.
type runBody struct {
	ID     string `json:"id"`
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// decodeRunBody decodes and checks body as the daemon does, answering the
// caller when it is bad.
func decodeRunBody(w http.ResponseWriter, body []byte) (runBody, bool) {
	var in runBody
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			http.Error(w, "request body: "+err.Error(), http.StatusBadRequest)
			return in, false
		}
	}
	if err := server.CheckRunRequest(in.ID, in.By, in.Reason); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return in, false
	}
	if in.ID == "" {
		in.ID = server.NewRequestID()
	}
	return in, true
}

// revert queues the revert of a run's merged change; the leader's pass
// checks it against the ledger (only it has one) and drops it, with a
// RequestDropped event naming why, when it cannot be reverted.
func (h *RequestHook) revert(w http.ResponseWriter, r *http.Request, body []byte) {
	in, ok := decodeRunBody(w, body)
	if !ok {
		return
	}
	runID := r.PathValue("run_id")
	if !ledger.ValidRunID(runID) {
		http.Error(w, fmt.Sprintf("%q is not a run id", runID), http.StatusBadRequest)
		return
	}
	h.add(w, r, wireRequest{ID: in.ID, Revert: runID, By: in.By, Reason: in.Reason, Received: h.now().UTC()})
}

func (h *RequestHook) run(w http.ResponseWriter, r *http.Request, body []byte) {
	in, ok := decodeRunBody(w, body)
	if !ok {
		return
	}
	agent := r.PathValue("agent")
	if !hclspec.ValidAgentName(agent) {
		http.Error(w, fmt.Sprintf("%q is not an agent name", agent), http.StatusBadRequest)
		return
	}
	h.add(w, r, wireRequest{ID: in.ID, Agent: agent, By: in.By, Reason: in.Reason, Received: h.now().UTC()})
}

// add stores req on the object the path names and answers the caller.
func (h *RequestHook) add(w http.ResponseWriter, r *http.Request, req wireRequest) {
	nn := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	queued, err := h.enqueue(r.Context(), nn, req)
	switch {
	case apierrors.IsNotFound(err):
		http.Error(w, fmt.Sprintf("no AgentRepository %s in this controller's shard", nn), http.StatusNotFound)
		return
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "30")
		http.Error(w, fmt.Sprintf("AgentRepository %s: %v", nn, err), http.StatusTooManyRequests)
		return
	case err != nil:
		h.log().Error("queue request", "object", nn.String(), "request", req.ID, "err", err)
		http.Error(w, "could not queue the request", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"request": req.ID, "object": nn.String(), "queued": queued})
}

// enqueue adds req to the object's pending requests unless one with its id
// is there (queued reports which), and requests a reconcile.
func (h *RequestHook) enqueue(ctx context.Context, nn types.NamespacedName, req wireRequest) (queued bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := &agentsv1.AgentRepository{}
		if err := h.Client.Get(ctx, nn, obj); err != nil {
			return err
		}
		pending, err := pendingRequests(obj)
		if err != nil {
			h.log().Warn("dropping undecodable pending requests", "object", nn.String(), "err", err)
		}
		for _, p := range pending {
			if p.ID == req.ID {
				queued = false
				return nil
			}
		}
		if len(pending) >= maxPendingRequests {
			return errQueueFull
		}
		orig := obj.DeepCopy()
		if err := setPending(obj, append(pending, req)); err != nil {
			return err
		}
		obj.Annotations[meta.ReconcileRequestAnnotation] = h.now().UTC().Format(time.RFC3339Nano)
		queued = true
		return h.Client.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
	return queued, err
}

// answerRequests removes from the object's pending requests those a pass
// answered (any state but pending), with an optimistic lock so requests
// added meanwhile stay; with invalid, a value that does not decode goes
// too.
func answerRequests(ctx context.Context, c client.Client, nn types.NamespacedName, outs []reconcile.RequestOutcome, invalid bool) error {
	done := map[string]bool{}
	waiting := map[string]bool{}
	for _, o := range outs {
		if o.State == reconcile.RequestPending {
			waiting[o.Request] = true
		} else {
			done[o.Request] = true
		}
	}
	for id := range waiting {
		delete(done, id) // pending for one agent: offered again
	}
	if len(done) == 0 && !invalid {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj := &agentsv1.AgentRepository{}
		if err := c.Get(ctx, nn, obj); err != nil {
			return client.IgnoreNotFound(err)
		}
		pending, err := pendingRequests(obj)
		var keep []wireRequest
		for _, p := range pending {
			if !done[p.ID] {
				keep = append(keep, p)
			}
		}
		if err == nil && len(keep) == len(pending) {
			return nil
		}
		orig := obj.DeepCopy()
		if err := setPending(obj, keep); err != nil {
			return err
		}
		return c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
}

// SecretFile is a webhook secret read from a file that may appear, change
// or go away while the controller runs (a Secret mounted as a volume with
// optional: true): Get re-reads it when its modification time or size
// changed, and returns the zero Secret (every hook refuses) while it is
// missing or invalid.
type SecretFile struct {
	Path   string
	Logger *slog.Logger

	mu   sync.Mutex
	mod  time.Time
	size int64
	s    server.Secret
	err  string
}

// Get returns the current secret.
func (f *SecretFile) Get() server.Secret {
	if f == nil || f.Path == "" {
		return server.Secret{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.Path)
	if err != nil {
		f.s, f.mod, f.size = server.Secret{}, time.Time{}, 0
		f.report(err)
		return f.s
	}
	if fi.ModTime().Equal(f.mod) && fi.Size() == f.size && !f.s.IsZero() {
		return f.s
	}
	s, err := server.LoadSecret(f.Path)
	f.s, f.mod, f.size = s, fi.ModTime(), fi.Size()
	f.report(err)
	return f.s
}

// report logs a change of the secret file's state once.
func (f *SecretFile) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == f.err {
		return
	}
	f.err = msg
	if f.Logger == nil {
		return
	}
	if err != nil {
		f.Logger.Warn("webhooks refuse requests until the secret file is valid", "err", err)
	} else {
		f.Logger.Info("webhook secret loaded", "file", f.Path)
	}
}
