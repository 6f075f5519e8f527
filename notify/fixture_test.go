package notify_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/notify"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/signing"
)

// chain is a real signed ledger: a bare git repository whose evidence
// branch the ledger package appends to with a real ECDSA key, each entry
// verified and folded as the reconciler does.
type chain struct {
	t    *testing.T
	l    *ledger.Ledger
	spec string
}

func newChain(t *testing.T) *chain {
	t.Helper()
	ctx := context.Background()
	bare := gittest.NewBare(t, t.TempDir())
	spec := gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main")
	repo, err := gitstore.Open(ctx, bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(repo, ledger.Options{Signer: signer, Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"}})
	if _, err := l.Init(ctx, spec, "main", nil); err != nil {
		t.Fatal(err)
	}
	return &chain{t: t, l: l, spec: spec}
}

func (c *chain) state() *ledger.State { return c.l.State() }

// append signs and stores the events as the next entries.
func (c *chain) append(events ...ledger.Event) []ledger.Entry {
	c.t.Helper()
	for i := range events {
		ev := &events[i]
		if ev.Subject == "" {
			ev.Subject = c.spec
		}
		if ev.Summary == "" {
			ev.Summary = strings.TrimSpace(fmt.Sprintf("%s %s %s", ev.Type, ev.Agent, ev.RunID))
		}
	}
	stored, err := c.l.Append(context.Background(), events...)
	if err != nil {
		c.t.Fatalf("append: %v", err)
	}
	return stored
}

func commitID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:20])
}

// runID is a valid run id derived from name.
func runID(name string) string { return commitID("run " + name)[:12] }

func branch(agent, run string) string { return "agents/" + agent + "/" + run }

var sreDecision = policy.Decision{
	Outcome:      policy.RequireApproval,
	Summary:      "require_approval deps/needs-sre (2 of sre); override deps/no-major-bumps",
	Requirements: []policy.Requirement{{Groups: []string{"sre"}, Min: 2}},
	Overrides:    []string{"deps/no-major-bumps"},
}

// propose records a run of agent that finished with a change, was decided
// on and opened a proposal; it returns the run id and the opened entry.
func (c *chain) propose(agent, name string) (string, ledger.Entry) {
	c.t.Helper()
	id := runID(name)
	d, err := json.Marshal(sreDecision)
	if err != nil {
		c.t.Fatal(err)
	}
	run := ledger.Event{Agent: agent, RunID: id, Trigger: "spec", SpecCommit: c.spec, SpecDigest: "sha256:" + agent}
	started, finished, decided, opened := run, run, run, run
	started.Type, started.Claimant, started.LeaseUntil = ledger.RunStarted, "test", time.Now().Add(time.Hour)
	finished.Type, finished.Outcome = ledger.RunFinished, ledger.OutcomeChanged
	finished.Change = &ledger.Change{ID: "change-" + id, Files: []string{"go.mod"}, Added: 1, Removed: 1}
	decided.Type, decided.Decision = ledger.PolicyDecision, d
	decided.Summary = fmt.Sprintf("policy.decision %s %s: %s", agent, id, sreDecision.Summary)
	opened.Type = ledger.ProposalOpened
	opened.Proposal = &ledger.Proposal{Branch: branch(agent, id), Head: commitID("head " + id), ChangeID: "change-" + id}
	opened.Subject, opened.SubjectName = opened.Proposal.Head, opened.Proposal.Branch
	opened.Summary = fmt.Sprintf("proposal.opened %s %s -> %s (deps/needs-sre (2 of sre); override deps/no-major-bumps)", agent, id, opened.Proposal.Branch)
	stored := c.append(started, finished, decided, opened)
	return id, stored[len(stored)-1]
}

// merge records the proposal of run id merged, and a violation when
// violated is set.
func (c *chain) merge(agent, id string, violated bool) {
	c.t.Helper()
	p := &ledger.Proposal{Branch: branch(agent, id), Head: commitID("head " + id), MergeCommit: commitID("merge " + id)}
	evs := []ledger.Event{{Type: ledger.ProposalMerged, Agent: agent, RunID: id, Proposal: p, Subject: p.MergeCommit}}
	if violated {
		evs = append(evs, ledger.Event{Type: ledger.PolicyViolation, Agent: agent, RunID: id, Proposal: p, Subject: p.MergeCommit,
			Error: "needs 2 of sre, has 1", Summary: fmt.Sprintf("policy.violation %s %s: merged at %s by alice@example.com; needs 2 of sre, has 1", agent, id, p.MergeCommit[:12])})
	}
	c.append(evs...)
}

// receiver is a webhook receiver on 127.0.0.1 that records what it gets
// and answers as respond says (200 when nil).
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	url string

	mu       sync.Mutex
	respond  func(attempt int, w http.ResponseWriter, r *http.Request)
	attempts []time.Time
	got      []notice
	arrived  chan struct{}
}

// notice is a notification as a receiver decodes it.
type notice struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text *struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
		Elements []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"elements"`
	} `json:"blocks"`
	contentType string
}

// token is the secret part of the test webhook URLs, as in Slack's
// https://hooks.slack.com/services/T…/B…/<token>.
const token = "Zq8SECRETwebhookTOKEN41x"

const hookPath = "/services/T0TEST1/B0TEST2/" + token

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{t: t, arrived: make(chan struct{}, 1000)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	rc.url = rc.srv.URL + hookPath
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != hookPath || r.Method != http.MethodPost {
		http.Error(w, "no such hook", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	rc.attempts = append(rc.attempts, time.Now())
	attempt := len(rc.attempts)
	respond := rc.respond
	rc.mu.Unlock()
	rec := httptest.NewRecorder()
	if respond != nil {
		respond(attempt, rec, r)
	}
	if rec.Code/100 == 2 {
		var n notice
		if err := json.Unmarshal(body, &n); err != nil {
			rc.t.Errorf("receiver: body is not JSON: %v\n%s", err, body)
		}
		n.contentType = r.Header.Get("Content-Type")
		rc.mu.Lock()
		rc.got = append(rc.got, n)
		rc.mu.Unlock()
		rc.arrived <- struct{}{}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (rc *receiver) setRespond(f func(attempt int, w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	rc.respond = f
	rc.mu.Unlock()
}

// wait waits for the n-th notification delivered and returns all so far.
func (rc *receiver) wait(n int) []notice {
	rc.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		rc.mu.Lock()
		got := append([]notice(nil), rc.got...)
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-rc.arrived:
		case <-deadline:
			rc.t.Fatalf("%d notification(s) delivered after 20s, want %d", len(got), n)
		}
	}
}

func (rc *receiver) delivered() []notice {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]notice(nil), rc.got...)
}

func (rc *receiver) attemptTimes() []time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]time.Time(nil), rc.attempts...)
}

// logs is a JSON slog handler's output, safe for concurrent writes.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// records returns the log records with message msg.
func (l *logs) records(msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(l.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitLog waits until n records with message msg are logged.
func (l *logs) waitLog(t *testing.T, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if recs := l.records(msg); len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d time(s) after 20s, want %d; log:\n%s", msg, len(l.records(msg)), n, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertNoSecret fails if s holds the webhook URL or its token.
func assertNoSecret(t *testing.T, what, s, url string) {
	t.Helper()
	for _, secret := range []string{token, url, strings.TrimPrefix(hookPath, "/")} {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("%s contains the webhook secret %q:\n%s", what, secret, s)
		}
	}
}

// start returns a notifier posting to url with a debug-level log that is
// checked, when the test ends, never to hold the URL or its token.
func start(t *testing.T, cfg notify.Config) (*notify.Notifier, *logs) {
	t.Helper()
	lg := &logs{}
	cfg.Logger = slog.New(slog.NewJSONHandler(lg, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 5 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 20 * time.Millisecond
	}
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		assertNoSecret(t, "the log", lg.String(), cfg.URL)
	})
	return n, lg
}
