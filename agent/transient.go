package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
)

// TransientError marks a run's failure as one that can pass when the run
// is attempted again: the model provider was unavailable (HTTP 5xx or 429,
// after the Provider's own retries), a request timed out, or the
// connection to it failed. Runners return it; the reconciler retries the
// run with backoff, up to the agent's limits { retries }. It unwraps to
// the cause.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient returns err marked as a *TransientError, or nil for nil.
func Transient(err error) error {
	if err == nil || Retryable(err) {
		return err
	}
	return &TransientError{Err: err}
}

// Retryable reports whether err is, or wraps, a *TransientError: whether
// the failed run may succeed when attempted again. Every other failure is
// final: an HTTP 4xx other than 429, the run's own limits (max_steps,
// max_tokens, timeout), a change outside the agent's scope, an exec
// agent's non-zero exit, a cancelled run.
func Retryable(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// transientModelError reports whether a model call that failed with err,
// while the run's own context was still live, can pass on retry: an HTTP
// 5xx or 429 answer; a request's own timeout; a connection refused, reset
// or closed before an answer, a network timeout, a stream cut short. A
// certificate that does not verify, a host that does not resolve and
// every other HTTP answer are not.
func transientModelError(err error) bool {
	if status := httpStatus(err); status != 0 {
		return status == http.StatusTooManyRequests || status >= 500
	}
	var (
		certErr *tls.CertificateVerificationError
		dnsErr  *net.DNSError
		urlErr  *url.Error
		netErr  net.Error
		opErr   *net.OpError
	)
	switch {
	case errors.As(err, &certErr):
		return false
	case errors.As(err, &dnsErr):
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	case errors.Is(err, ErrIncompleteStream),
		errors.Is(err, io.ErrUnexpectedEOF),
		// The request's timeout: the caller checks that the run's own
		// context is live first.
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &urlErr) && errors.Is(urlErr.Err, io.EOF):
		// The server closed the connection before answering.
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	}
	return errors.As(err, &opErr)
}
