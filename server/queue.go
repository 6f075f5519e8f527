package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/agentgitops/reconciler/internal/atomicfile"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// QueueFile is the name of the persisted trigger queue in the
// reconciler's state directory.
const QueueFile = "triggers.json"

// Errors of the queue.
var (
	// ErrQueueFull: the queue holds its maximum of requests.
	ErrQueueFull = errors.New("the trigger queue is full")
	// ErrRequestConflict: a queued request has the same id and asks for
	// something else.
	ErrRequestConflict = errors.New("a different request with this id is queued")
)

// queue is the trigger queue: the requests accepted and not yet answered,
// in the order they came, persisted to path (when not "") before add
// returns so that an accepted request survives a crash.
type queue struct {
	mu   sync.Mutex
	path string
	max  int
	reqs []reconcile.Request
}

// queueFile is the on-disk form of the queue.
type queueFile struct {
	Version  int             `json:"version"`
	Requests []storedRequest `json:"requests"`
}

type storedRequest struct {
	ID       string        `json:"id"`
	Agent    string        `json:"agent,omitempty"`
	By       string        `json:"by,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	Alert    *ledger.Alert `json:"alert,omitempty"`
	Received time.Time     `json:"received"`
	// Revert is the run a revert request reverts (reconcile.Request).
	Revert string `json:"revert,omitempty"`
}

const queueVersion = 1

// openQueue loads the queue persisted at path; a missing file is an empty
// queue, and path "" keeps the queue in memory. A file that does not
// decode is an error (the caller sets it aside).
func openQueue(path string, max int) (*queue, error) {
	q := &queue{path: path, max: max}
	if path == "" {
		return q, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return q, nil
	}
	if err != nil {
		return q, fmt.Errorf("read trigger queue: %w", err)
	}
	var f queueFile
	if err := json.Unmarshal(b, &f); err != nil {
		return q, fmt.Errorf("trigger queue %s: %w", path, err)
	}
	if f.Version != queueVersion {
		return q, fmt.Errorf("trigger queue %s: version %d, want %d", path, f.Version, queueVersion)
	}
	for _, s := range f.Requests {
		if s.ID == "" || (s.Agent == "") == (s.Alert == nil) {
			return q, fmt.Errorf("trigger queue %s: request %q is neither a manual run nor a notification", path, s.ID)
		}
		q.reqs = append(q.reqs, reconcile.Request{ID: s.ID, Agent: s.Agent, By: s.By, Reason: s.Reason, Alert: s.Alert, Received: s.Received, Revert: s.Revert})
	}
	return q, nil
}

// add queues req and persists the queue. A queued request with the same
// id is the same request: add returns false and queues nothing (or
// ErrRequestConflict when it asks for another agent). It fails with
// ErrQueueFull when the queue is full, and when the queue cannot be
// persisted (then nothing is queued).
func (q *queue) add(req reconcile.Request) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.reqs {
		if r.ID == req.ID {
			if r.Agent != req.Agent || (r.Alert == nil) != (req.Alert == nil) || r.Revert != req.Revert {
				return false, fmt.Errorf("%w: %q", ErrRequestConflict, req.ID)
			}
			return false, nil
		}
	}
	if len(q.reqs) >= q.max {
		return false, fmt.Errorf("%w (%d requests): retry later", ErrQueueFull, len(q.reqs))
	}
	q.reqs = append(q.reqs, req)
	if err := q.save(); err != nil {
		q.reqs = q.reqs[:len(q.reqs)-1]
		return false, err
	}
	return true, nil
}

// pending returns the queued requests, in order.
func (q *queue) pending() []reconcile.Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.reqs)
}

// len returns how many requests are queued.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.reqs)
}

// answer drops the requests a pass answered: those with at least one
// outcome and none pending. A request without an outcome stays queued. It
// returns how many it dropped, and an error when the queue could not be
// persisted (the requests are dropped all the same: the ledger answers a
// request offered again, so a crash before the next save repeats nothing).
func (q *queue) answer(outs []reconcile.RequestOutcome) (int, error) {
	answered := map[string]bool{}
	for _, o := range outs {
		if o.State == reconcile.RequestPending {
			answered[o.Request] = false
		} else if _, seen := answered[o.Request]; !seen {
			answered[o.Request] = true
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.reqs)
	q.reqs = slices.DeleteFunc(q.reqs, func(r reconcile.Request) bool { return answered[r.ID] })
	dropped := n - len(q.reqs)
	if dropped == 0 {
		return 0, nil
	}
	return dropped, q.save()
}

// save writes the queue to its file atomically: a temporary file in the
// same directory, synced, renamed over the file, and the directory synced.
// q.mu must be held.
func (q *queue) save() error {
	if q.path == "" {
		return nil
	}
	f := queueFile{Version: queueVersion, Requests: make([]storedRequest, 0, len(q.reqs))}
	for _, r := range q.reqs {
		f.Requests = append(f.Requests, storedRequest{ID: r.ID, Agent: r.Agent, By: r.By, Reason: r.Reason, Alert: r.Alert, Received: r.Received, Revert: r.Revert})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("save trigger queue: %w", err)
	}
	if err := atomicfile.Write(q.path, append(b, '\n')); err != nil {
		return fmt.Errorf("save trigger queue: %w", err)
	}
	return nil
}
