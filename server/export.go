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
