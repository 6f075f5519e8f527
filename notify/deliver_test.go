package notify

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"30", 30 * time.Second},
		{" 2 ", 2 * time.Second},
		{"999999999", 24 * time.Hour}, // bounded
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0}, // in the past
		{"soon", 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// scrub takes the URL out of the *url.Error net/http returns, in every
// form it can appear, and keeps the cause reachable with errors.Is/As.
func TestScrub(t *testing.T) {
	raw := "https://hooks.example.com/services/T0ABC/B0DEF/s3cr3tT0kenValue?key=qu3ryS3cret"
	n, err := New(Config{URL: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, err := range []error{
		&url.Error{Op: "Post", URL: raw, Err: refused},
		&url.Error{Op: "Post", URL: raw, Err: context.DeadlineExceeded},
		errors.New("parse " + strings.ReplaceAll(raw, "https://", "https:%2F%2F") + ": odd"),
		errors.New(`proxy said: "/services/T0ABC/B0DEF/s3cr3tT0kenValue" not allowed`),
	} {
		got := n.scrub(err)
		for _, secret := range []string{"s3cr3tT0kenValue", "qu3ryS3cret", "T0ABC/B0DEF"} {
			if strings.Contains(got.Error(), secret) {
				t.Errorf("scrub(%q) = %q, holds %q", err, got, secret)
			}
		}
		var ue *url.Error
		if errors.As(got, &ue) {
			t.Errorf("scrub(%q) still unwraps to the *url.Error", err)
		}
	}
	got := n.scrub(&url.Error{Op: "Post", URL: raw, Err: refused})
	if !errors.Is(got, syscall.ECONNREFUSED) || got.Error() != `Post "<notify-url>": dial tcp: connection refused` {
		t.Errorf("scrub = %q (is ECONNREFUSED: %v)", got, errors.Is(got, syscall.ECONNREFUSED))
	}
	if s := n.clean("see "+raw, 500); strings.Contains(s, "s3cr3t") {
		t.Errorf("clean kept the URL: %q", s)
	}
}

func TestBackoff(t *testing.T) {
	n := &Notifier{minBackoff: time.Second, maxBackoff: 10 * time.Second}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		got := n.backoff(attempt)
		if got > want || got < want*4/5 {
			t.Errorf("backoff(%d) = %v, want %v less at most a fifth", attempt, got, want)
		}
	}
}

func TestCleanInstance(t *testing.T) {
	for in, want := range map[string]string{
		"https://x-access-token:ghs_abc@github.com/org/repo.git": "https://github.com/org/repo.git",
		"https://ghp_tokenonly@github.com/org/repo":              "https://github.com/org/repo",
		"ssh://git:pw@git.example.com/repo.git":                  "ssh://git@git.example.com/repo.git",
		"ssh://git@git.example.com/repo.git":                     "ssh://git@git.example.com/repo.git",
		"https://git.example.com/repo.git?private_token=abc":     "https://git.example.com/repo.git",
		"/srv/git/desired-state.git":                             "/srv/git/desired-state.git",
		"git@github.com:org/repo.git":                            "git@github.com:org/repo.git",
	} {
		if got := cleanInstance(in); got != want {
			t.Errorf("cleanInstance(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"https://git.example.com/repo.git": "https://git.example.com/repo.git",
		"/srv/my repo":                     "'/srv/my repo'",
		"it's":                             `'it'\''s'`,
		"$(rm -rf ~)":                      "'$(rm -rf ~)'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrune(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := newDedup("i")
	d.Floor = 10
	d.Sent["a"] = sent{Seq: 9, At: t0}
	d.Sent["b"] = sent{Seq: 10, At: t0}
	d.Sent["c"] = sent{Seq: 11, At: t0}
	for i, k := range []string{"v1", "v2", "v3", "v4"} {
		d.Sent[k] = sent{At: t0.Add(time.Duration(i) * time.Hour)}
	}
	d.prune(2)
	var keys []string
	for k := range d.Sent {
		keys = append(keys, k)
	}
	if len(d.Sent) != 3 || d.Sent["c"].Seq != 11 || d.Sent["v3"].At.IsZero() || d.Sent["v4"].At.IsZero() {
		t.Errorf("after prune: %v", keys)
	}
}
