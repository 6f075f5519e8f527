package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is what became of a delivery.
type result int

const (
	// delivered: the receiver answered 2xx.
	delivered result = iota
	// refused: the receiver answered another 4xx; retrying would not help.
	refused
	// failed: a network error, 5xx or 429 past the retries, or the
	// notifier closing; the notification is tried again later.
	failed
)

// userAgent names the sender to receivers.
const userAgent = "agentgitops-reconciler-notify/1"

// deliver posts j.body, retrying network errors, 5xx and 429 with
// exponential backoff (honouring Retry-After) up to MaxAttempts. On
// failed it also returns when the next try may start.
func (n *Notifier) deliver(ctx context.Context, j *job) (result, time.Time) {
	for attempt := 1; ; attempt++ {
		status, retryAfter, detail, err := n.post(ctx, j.body)
		switch {
		case err == nil && status/100 == 2:
			n.log.LogAttrs(ctx, slog.LevelDebug, "notification delivered", j.attrs(slog.Int("attempt", attempt), slog.Int("status", status))...)
			return delivered, time.Time{}
		case err == nil && status != http.StatusTooManyRequests && status/100 != 5:
			// Logged once: it is not retried, and marked handled.
			n.log.LogAttrs(ctx, slog.LevelError, "notification refused by the receiver; not retried",
				j.attrs(slog.Int("status", status), slog.String("response", detail))...)
			return refused, time.Time{}
		}
		if ctx.Err() != nil {
			return failed, time.Time{}
		}
		wait := n.backoff(attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		if attempt >= n.maxAttempts || wait > n.maxRetryWait {
			attrs := j.attrs(slog.Int("attempt", attempt), errAttr(err, status, detail))
			next := n.now().Add(max(wait, n.maxBackoff))
			attrs = append(attrs, slog.String("next_try", next.UTC().Format(time.RFC3339)))
			n.log.LogAttrs(ctx, slog.LevelWarn, "notification not delivered; tried again after the next pass", attrs...)
			return failed, next
		}
		n.log.LogAttrs(ctx, slog.LevelDebug, "notification delivery failed; retrying",
			j.attrs(slog.Int("attempt", attempt), errAttr(err, status, detail), slog.String("wait", wait.String()))...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return failed, time.Time{}
		case <-t.C:
		}
	}
}

// backoff is the wait after the attempt-th failure: MinBackoff doubled
// each time, at most MaxBackoff, less up to a fifth at random so that
// reconcilers do not retry in step.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.minBackoff
	for i := 1; i < attempt && d < n.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.maxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// post sends body once. It returns the status and, for 429 and 5xx, the
// Retry-After wait; detail is the start of the response body, cleaned. A
// transport error is returned scrubbed of the URL.
func (n *Notifier) post(ctx context.Context, body []byte) (status int, retryAfter time.Duration, detail string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", n.scrub(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, 0, "", n.scrub(err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5 {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), n.now())
	}
	return resp.StatusCode, retryAfter, n.clean(string(head), 200), nil
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date. It returns 0 when there is none or it does not parse.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redactedURL replaces the webhook URL wherever it would be shown.
const redactedURL = "<notify-url>"

// scrub returns err with the webhook URL, its path and its query taken
// out of the text: net/http reports a failed request as a *url.Error
// whose text holds the URL, and the URL of a Slack webhook is its secret.
// The result unwraps to the cause (a *net.OpError, context.Canceled...)
// but not to the *url.Error.
func (n *Notifier) scrub(err error) error {
	if err == nil {
		return nil
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	return &scrubbedError{text: n.redact(err.Error()), cause: cause}
}

// redact takes the webhook URL, and the parts of it that are secret, out
// of s.
func (n *Notifier) redact(s string) string {
	for _, secret := range n.secrets {
		s = strings.ReplaceAll(s, secret, redactedURL)
	}
	return s
}

// secretParts are the strings of the webhook URL that must never be shown:
// the URL itself (as given and as Go quotes it), its path, query and user
// information, escaped and not.
func secretParts(u *url.URL, raw string) []string {
	parts := []string{raw, u.String(), strconv.Quote(raw)[1 : len(strconv.Quote(raw))-1]}
	add := func(s string) {
		if len(s) >= 4 && s != "/" {
			parts = append(parts, s)
		}
	}
	add(u.EscapedPath())
	add(u.Path)
	add(u.RawQuery)
	if q, err := url.QueryUnescape(u.RawQuery); err == nil {
		add(q)
	}
	if u.User != nil {
		add(u.User.String())
		add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			add(p)
		}
	}
	// Each path segment of a Slack URL (T…/B…/token) is part of the
	// secret; redact the longer ones on their own too.
	for seg := range strings.SplitSeq(strings.Trim(u.Path, "/"), "/") {
		if len(seg) >= 8 {
			parts = append(parts, seg)
		}
	}
	// Longest first, so that a part inside another is not replaced first.
	slices.SortStableFunc(parts, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(parts)
}

// scrubbedError is an error whose text had the webhook URL taken out.
type scrubbedError struct {
	text  string
	cause error
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.cause }

func errAttr(err error, status int, detail string) slog.Attr {
	if err != nil {
		return slog.String("err", err.Error())
	}
	return slog.String("err", fmt.Sprintf("HTTP %d: %s", status, detail))
}
