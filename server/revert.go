package server

import (
	"errors"
	"net/http"

	"github.com/agentgitops/reconciler/reconcile"
)

// RevertAccepted is the answer to an accepted revert request.
type RevertAccepted struct {
	Request string `json:"request"`
	Agent   string `json:"agent"`
	// Reverts is the run whose merged change the request reverts.
	Reverts string `json:"reverts"`
}

// revertRun answers POST /api/v1/runs/{run_id}/revert: a request for a
// proposal reverting the run's merged change, with the body of a manual
// run (id, by, reason). It is checked against the ledger as the last
// pass left it (404 unknown run; 409 not merged, already reverted, the
// agent removed, a conflicting later change; 503 before a spec loaded)
// and queued for the next pass, which checks again and runs it as the
// run's agent.
func (s *Server) revertRun(w http.ResponseWriter, r *hookRequest) {
	body, ok := runBody(w, r)
	if !ok {
		return
	}
	runID := r.PathValue("run_id")
	agent, err := s.r.RevertTarget(r.Context(), runID)
	switch {
	case errors.Is(err, reconcile.ErrNoSpec):
		w.Header().Set("Retry-After", retryAfter(s.cfg.RetryMin))
		writeError(w, http.StatusServiceUnavailable, "no spec has loaded yet: retry once the reconciler has completed a pass")
		return
	case errors.Is(err, reconcile.ErrUnknownRun):
		writeError(w, http.StatusNotFound, "%v", err)
		return
	case errors.Is(err, reconcile.ErrNotMerged), errors.Is(err, reconcile.ErrAlreadyReverted),
		errors.Is(err, reconcile.ErrAgentRemoved), errors.Is(err, reconcile.ErrRevertConflict):
		writeError(w, http.StatusConflict, "%v", err)
		return
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	req := reconcile.Request{ID: body.ID, Agent: agent, Revert: runID, By: body.By, Reason: body.Reason, Received: s.cfg.Now().UTC()}
	if !s.enqueue(w, req) {
		return
	}
	writeJSON(w, http.StatusAccepted, RevertAccepted{Request: req.ID, Agent: agent, Reverts: runID})
}
