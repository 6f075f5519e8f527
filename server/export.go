package server

// CheckRunRequest checks the caller's fields of a manual run request (the
// body of POST /api/v1/agents/{name}/runs) as the daemon does: for the
// controller's route of the same request.
func CheckRunRequest(id, by, reason string) error {
	return runRequest{ID: id, By: by, Reason: reason}.check()
}

// NewRequestID returns a random request id, as the daemon gives a manual run
// whose caller named none.
func NewRequestID() string { return newID() }

// GitEventWakes reports whether an event on /hooks/git needs a pass: a
// push (GitLab's "Push Hook" or "Tag Push Hook"). sender is github, gitea
// or gitlab; event is its X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event.
func GitEventWakes(sender, event string) bool {
	return event == "push" || (sender == "gitlab" && (event == "Push Hook" || event == "Tag Push Hook"))
}

// ForgeEventWakes reports whether an event on /hooks/forge needs a pass
// (see forgeEvents).
func ForgeEventWakes(sender, event string) bool { return forgeEvents[sender][event] }
