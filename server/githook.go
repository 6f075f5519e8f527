package server

import (
	"net/http"
	"strings"
)

// GitEvent is the answer to a git hook: the sender and event understood,
// and whether it woke the loop.
type GitEvent struct {
	Sender    string `json:"sender"`
	Event     string `json:"event"`
	Reconcile bool   `json:"reconcile"`
}

// gitHook takes GitHub, Gitea and GitLab webhooks. A sender is known by
// its authentication header: Gitea's X-Gitea-Signature (hex HMAC-SHA256
// of the body), GitHub's X-Hub-Signature-256 ("sha256=" and the hex
// HMAC-SHA256), GitLab's X-Gitlab-Token (the secret itself). A push wakes
// the loop (202); a ping or any other event is answered 200 and does
// nothing.
func (s *Server) gitHook(w http.ResponseWriter, r *hookRequest) {
	var sender, event string
	h := r.Header
	switch {
	case h.Get("X-Gitea-Signature") != "":
		sender, event = "gitea", h.Get("X-Gitea-Event")
		if !s.cfg.Secret.VerifyHMAC(r.body, h.Get("X-Gitea-Signature")) {
			writeError(w, http.StatusUnauthorized, "X-Gitea-Signature: %v", errSignature)
			return
		}
	case h.Get("X-Hub-Signature-256") != "":
		sender, event = "github", h.Get("X-GitHub-Event")
		sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		if !ok || !s.cfg.Secret.VerifyHMAC(r.body, sig) {
			writeError(w, http.StatusUnauthorized, "X-Hub-Signature-256: %v", errSignature)
			return
		}
	case h.Get("X-Gitlab-Token") != "":
		sender, event = "gitlab", h.Get("X-Gitlab-Event")
		if !s.cfg.Secret.Equal(h.Get("X-Gitlab-Token")) {
			writeError(w, http.StatusUnauthorized, "X-Gitlab-Token is not the webhook secret")
			return
		}
	default:
		writeError(w, http.StatusUnauthorized, "no X-Hub-Signature-256 (GitHub), X-Gitea-Signature (Gitea) or X-Gitlab-Token (GitLab): set the webhook's secret to the reconciler's --webhook-secret-file")
		return
	}
	// The body is the sender's JSON event; one that does not decode is
	// refused, whatever the event.
	var payload map[string]any
	if err := decodeStrict(r.body, &payload, false); err != nil {
		writeError(w, http.StatusBadRequest, "%s event body: %v", sender, err)
		return
	}
	push := event == "push" || (sender == "gitlab" && (event == "Push Hook" || event == "Tag Push Hook"))
	if !push {
		if event == "" {
			event = "unknown"
		}
		writeJSON(w, http.StatusOK, GitEvent{Sender: sender, Event: event})
		return
	}
	s.Wake()
	writeJSON(w, http.StatusAccepted, GitEvent{Sender: sender, Event: event, Reconcile: true})
}
