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

// gitHook takes GitHub, Gitea and GitLab webhooks (see signedEvent). A
// push wakes the loop (202); a ping or any other event is answered 200 and
// does nothing.
func (s *Server) gitHook(w http.ResponseWriter, r *hookRequest) {
	sender, event, ok := s.signedEvent(w, r, true)
	if !ok {
		return
	}
	s.answerEvent(w, sender, event, GitEventWakes(sender, event))
}

// forgeEvents are the forge events that change what a proposal's review
// shows: its pull request opened, edited, closed or merged, a review
// submitted or dismissed, a push to its branch. Gitea names review
// events after their verdict.
var forgeEvents = map[string]map[string]bool{
	"github": {"pull_request": true, "pull_request_review": true, "push": true},
	"gitea": {"pull_request": true, "pull_request_approved": true, "pull_request_rejected": true,
		"pull_request_review": true, "pull_request_review_approved": true, "pull_request_review_rejected": true,
		"pull_request_review_comment": true, "pull_request_sync": true, "push": true},
}

// forgeHook takes Gitea's and GitHub's pull request, review and push
// events (signed as on /hooks/git): one wakes the loop, whose pass
// observes every open proposal's pull request, so the affected one is
// judged at once; polling at the interval stays the fallback. Nothing in
// the event is believed: the pass reads the forge's API and the mirror.
func (s *Server) forgeHook(w http.ResponseWriter, r *hookRequest) {
	sender, event, ok := s.signedEvent(w, r, false)
	if !ok {
		return
	}
	s.answerEvent(w, sender, event, ForgeEventWakes(sender, event))
}

// answerEvent wakes the loop for an event that needs a pass (202), and
// answers any other 200.
func (s *Server) answerEvent(w http.ResponseWriter, sender, event string, wake bool) {
	if !wake {
		if event == "" {
			event = "unknown"
		}
		writeJSON(w, http.StatusOK, GitEvent{Sender: sender, Event: event})
		return
	}
	s.Wake()
	writeJSON(w, http.StatusAccepted, GitEvent{Sender: sender, Event: event, Reconcile: true})
}

// signedEvent authenticates a git host's webhook and decodes its body,
// answering the request when it fails. A sender is known by its
// authentication header: Gitea's X-Gitea-Signature (hex HMAC-SHA256 of the
// body), GitHub's X-Hub-Signature-256 ("sha256=" and the hex HMAC-SHA256),
// and, where gitlab is true, GitLab's X-Gitlab-Token (the secret itself).
func (s *Server) signedEvent(w http.ResponseWriter, r *hookRequest, gitlab bool) (sender, event string, ok bool) {
	h := r.Header
	switch {
	case h.Get("X-Gitea-Signature") != "":
		sender, event = "gitea", h.Get("X-Gitea-Event")
		if !s.cfg.Secret.VerifyHMAC(r.body, h.Get("X-Gitea-Signature")) {
			writeError(w, http.StatusUnauthorized, "X-Gitea-Signature: %v", errSignature)
			return "", "", false
		}
	case h.Get("X-Hub-Signature-256") != "":
		sender, event = "github", h.Get("X-GitHub-Event")
		sig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		if !ok || !s.cfg.Secret.VerifyHMAC(r.body, sig) {
			writeError(w, http.StatusUnauthorized, "X-Hub-Signature-256: %v", errSignature)
			return "", "", false
		}
	case gitlab && h.Get("X-Gitlab-Token") != "":
		sender, event = "gitlab", h.Get("X-Gitlab-Event")
		if !s.cfg.Secret.Equal(h.Get("X-Gitlab-Token")) {
			writeError(w, http.StatusUnauthorized, "X-Gitlab-Token is not the webhook secret")
			return "", "", false
		}
	case gitlab:
		writeError(w, http.StatusUnauthorized, "no X-Hub-Signature-256 (GitHub), X-Gitea-Signature (Gitea) or X-Gitlab-Token (GitLab): set the webhook's secret to the reconciler's --webhook-secret-file")
		return "", "", false
	default:
		writeError(w, http.StatusUnauthorized, "no X-Hub-Signature-256 (GitHub) or X-Gitea-Signature (Gitea): set the forge webhook's secret to the reconciler's --webhook-secret-file")
		return "", "", false
	}
	// The body is the sender's JSON event; one that does not decode is
	// refused, whatever the event.
	var payload map[string]any
	if err := decodeStrict(r.body, &payload, false); err != nil {
		writeError(w, http.StatusBadRequest, "%s event body: %v", sender, err)
		return "", "", false
	}
	return sender, event, true
}
