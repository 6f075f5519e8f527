package server_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/server"
)

// The daemon serves while the remote is unreachable; /readyz follows the
// last pass (503 with the cause while passes fail, 200 again when one
// succeeds); each failure is logged once at error level however often it
// is retried, and the recovery once.
func TestRunReadinessFollowsPasses(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	r := e.reconciler("", nil)
	s := start(t, server.Config{
		Reconciler: r, Interval: 200 * time.Millisecond, RetryMin: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if res := get(t, s.url+"/healthz"); res.code != http.StatusOK {
		t.Errorf("/healthz = %d", res.code)
	}
	eventually(t, 30*time.Second, "/readyz 200", func() bool { return get(t, s.url+"/readyz").code == http.StatusOK })

	away := e.bare + ".away"
	if err := os.Rename(e.bare, away); err != nil {
		t.Fatal(err)
	}
	var res response
	eventually(t, 30*time.Second, "/readyz 503", func() bool { res = get(t, s.url+"/readyz"); return res.code == http.StatusServiceUnavailable })
	if !strings.Contains(res.body, "not ready: fetch") {
		t.Errorf("/readyz body %q lacks the cause", res.body)
	}
	// Several failed passes: the backoff doubles from 20ms to the 200ms
	// interval, so two seconds hold about ten.
	before := e.passes.count()
	time.Sleep(2 * time.Second)
	if n := e.passes.count() - before; n < 3 {
		t.Fatalf("%d passes retried in 2s, want several", n)
	}
	if get(t, s.url+"/healthz").code != http.StatusOK {
		t.Errorf("/healthz while the remote is away is not 200")
	}
	if errs := lines(logs.String(), "level=ERROR"); len(errs) != 1 || !strings.Contains(errs[0], "reconcile pass failed") || !strings.Contains(errs[0], "err=") || !strings.Contains(errs[0], "fetch") {
		t.Errorf("error-level lines after several failed passes = %q, want the failure once with its cause", errs)
	}

	if err := os.Rename(away, e.bare); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "/readyz 200 again", func() bool { return get(t, s.url+"/readyz").code == http.StatusOK })
	if got := lines(logs.String(), "level=INFO", "succeeded again"); len(got) != 1 {
		t.Errorf("recovery logged %d times: %q", len(got), logs.String())
	}
	if errs := lines(logs.String(), "level=ERROR"); len(errs) != 1 {
		t.Errorf("%d error-level lines in all, want 1: %q", len(errs), errs)
	}
	if err := s.stop(); err != nil {
		t.Errorf("Run = %v, want nil after its context ended", err)
	}
}

// A signed push reconciles at once although the next pass is an hour
// away.
func TestRunGitPushWakes(t *testing.T) {
	e := newEnv(t)
	r := e.reconciler("", nil)
	s := start(t, server.Config{Reconciler: r, Interval: time.Hour, Secret: server.NewSecret(testSecret)})
	eventually(t, 30*time.Second, "the first pass", func() bool { return get(t, s.url+"/readyz").code == http.StatusOK })
	first := e.passes.count()
	time.Sleep(200 * time.Millisecond)
	if e.passes.count() != first {
		t.Fatal("a second pass ran without a push")
	}
	body := readFile(t, shared(t, "gitea/webhooks/go-playground-webhooks/push-event.json"))
	if res := post(t, s.url+"/hooks/git", body, "X-Gitea-Event", "push", "X-Gitea-Signature", hmacHex(testSecret, body)); res.code != http.StatusAccepted {
		t.Fatalf("push: %d %s", res.code, res.body)
	}
	eventually(t, 30*time.Second, "a pass after the push", func() bool { return e.passes.count() > first })
}

// An alert runs the agent whose on_alert trigger matches it, with the
// notification's trigger id; Alertmanager's repeat runs nothing more; the
// resolved notification is recorded, not run. A manual request runs its
// agent with trigger manual:<id>. The queue is empty once they are
// answered.
func TestRunTriggersAgents(t *testing.T) {
	dir := shared(t, "alertmanager/faultline-captured/wire-bodies")
	e := newEnv(t)
	cache := t.TempDir()
	r := e.reconciler(cache, nil)
	s := start(t, server.Config{Reconciler: r, Interval: time.Hour, Secret: server.NewSecret(testSecret)})
	eventually(t, 60*time.Second, "the first pass", func() bool { return get(t, s.url+"/readyz").code == http.StatusOK })

	firing := readFile(t, filepath.Join(dir, "01-firing-frontend.json"))
	al, err := server.ParseAlertmanager(firing)
	if err != nil {
		t.Fatal(err)
	}
	if res := post(t, s.url+"/hooks/alertmanager", firing, bearer...); res.code != http.StatusAccepted {
		t.Fatalf("alert: %d %s", res.code, res.body)
	}
	res := post(t, s.url+"/api/v1/agents/on-demand/runs", []byte(`{"id":"after-deploy","by":"rita","reason":"check the notes"}`), bearer...)
	if res.code != http.StatusAccepted {
		t.Fatalf("manual run: %d %s", res.code, res.body)
	}
	eventually(t, 60*time.Second, "the queue to empty", func() bool { return len(s.Queued()) == 0 })
	if runs := e.runs("paged", al.Trigger()); len(runs) != 1 || runs[0].Alert == nil || runs[0].Alert.GroupKey != al.GroupKey {
		t.Errorf("paged's runs for %s: %+v, want one carrying the alert", al.Trigger(), runs)
	}
	if runs := e.runs("on-demand", "manual:after-deploy"); len(runs) != 1 || runs[0].Request == nil || runs[0].Request.By != "rita" {
		t.Errorf("on-demand's runs for manual:after-deploy: %+v, want one carrying the request", runs)
	}

	// Alertmanager repeats the notification (its repeat_interval): the
	// same trigger, no second run.
	if res := post(t, s.url+"/hooks/alertmanager", firing, bearer...); res.code != http.StatusAccepted {
		t.Fatalf("repeat: %d %s", res.code, res.body)
	}
	resolved := readFile(t, filepath.Join(dir, "06-resolved-frontend.json"))
	if res := post(t, s.url+"/hooks/alertmanager", resolved, bearer...); res.code != http.StatusAccepted {
		t.Fatalf("resolved: %d %s", res.code, res.body)
	}
	eventually(t, 60*time.Second, "the queue to empty again", func() bool { return len(s.Queued()) == 0 })
	if runs := e.runs("paged", al.Trigger()); len(runs) != 1 {
		t.Errorf("paged ran %d times for %s, want once", len(runs), al.Trigger())
	}
	n := 0
	for _, en := range e.entries() {
		if en.Type == ledger.AlertResolved {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d alert.resolved entries, want 1", n)
	}
	if b := readFile(t, filepath.Join(r.Repo().StateDir(), server.QueueFile)); strings.Contains(string(b), `"id"`) {
		t.Errorf("the persisted queue still holds requests: %s", b)
	}
}

// A request accepted (202) and not yet answered when the process stops
// is answered after a restart, from the persisted queue.
func TestRunRestartKeepsAcceptedRequests(t *testing.T) {
	e := newEnv(t)
	cache := t.TempDir()
	r := e.reconciler(cache, nil)
	s := start(t, server.Config{Reconciler: r, Interval: time.Hour, RetryMin: time.Hour, Secret: server.NewSecret(testSecret)})
	eventually(t, 60*time.Second, "the first pass", func() bool { return get(t, s.url+"/readyz").code == http.StatusOK })
	// The remote goes away, so no pass can answer the request: each
	// fails before it gets to requests.
	if err := os.Rename(e.bare, e.bare+".away"); err != nil {
		t.Fatal(err)
	}
	res := post(t, s.url+"/api/v1/agents/on-demand/runs", []byte(`{"id":"survives"}`), bearer...)
	if res.code != http.StatusAccepted {
		t.Fatalf("manual run: %d %s", res.code, res.body)
	}
	eventually(t, 30*time.Second, "the woken pass to fail", func() bool { return get(t, s.url+"/readyz").code == http.StatusServiceUnavailable })
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, filepath.Join(r.Repo().StateDir(), server.QueueFile)); !strings.Contains(string(b), `"survives"`) {
		t.Fatalf("the queue file lacks the accepted request: %s", b)
	}

	if err := os.Rename(e.bare+".away", e.bare); err != nil {
		t.Fatal(err)
	}
	r2 := e.reconciler(cache, nil)
	s2 := start(t, server.Config{Reconciler: r2, Interval: time.Hour, Secret: server.NewSecret(testSecret)})
	eventually(t, 60*time.Second, "the request to be answered after the restart", func() bool {
		return len(s2.Queued()) == 0 && len(e.runs("on-demand", "manual:survives")) == 1
	})
}

// A queue file that does not decode is set aside (kept for the operator)
// and the server starts with an empty queue.
func TestRunCorruptQueueIsSetAside(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, server.QueueFile), []byte(`{"version":1,"requests":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	s, err := server.New(server.Config{Reconciler: e.reconciler("", nil), Interval: time.Hour, QueueDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Queued()) != 0 {
		t.Errorf("queued %v", s.Queued())
	}
	aside, _ := filepath.Glob(filepath.Join(dir, server.QueueFile+".corrupt-*"))
	if len(aside) != 1 || len(lines(logs.String(), "level=ERROR", "set aside")) != 1 {
		t.Errorf("set aside %v; log %q", aside, logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, server.QueueFile)); !os.IsNotExist(err) {
		t.Errorf("the corrupt file is still in place: %v", err)
	}
}

// Run fails, without running a pass, when it cannot listen.
func TestRunListenFails(t *testing.T) {
	e := newEnv(t)
	r := e.reconciler("", nil)
	s, err := server.New(server.Config{Reconciler: r, Interval: time.Hour, Addr: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run = %v, want a listen error", err)
	}
	if n := e.passes.count(); n != 0 {
		t.Errorf("%d passes ran", n)
	}
}

// recordingNotifier records what the server tells it (the notifier's
// consumer-side interface; package notify has its own tests).
type recordingNotifier struct {
	mu       sync.Mutex
	observed int
	stalls   []string
}

func (n *recordingNotifier) Observe(_ context.Context, st *ledger.State) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st != nil {
		n.observed++
	}
}

func (n *recordingNotifier) Stalled(_ context.Context, reason, msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stalls = append(n.stalls, reason+": "+msg)
}

func (n *recordingNotifier) get() (int, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.observed, slices.Clone(n.stalls)
}

// The notifier sees the ledger after each pass that succeeded, and the
// stall of a pass that stalled (the ledger rewritten under the daemon),
// with its reason.
func TestRunNotifies(t *testing.T) {
	e := newEnv(t)
	n := &recordingNotifier{}
	s := start(t, server.Config{Reconciler: e.reconciler("", nil), Interval: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond, Notifier: n})
	eventually(t, 30*time.Second, "an observed pass", func() bool { o, _ := n.get(); return o > 0 })
	cut := gittest.Git(t, "", "--git-dir", e.bare, "rev-parse", "agent-evidence~1")
	gittest.Git(t, "", "--git-dir", e.bare, "update-ref", "refs/heads/agent-evidence", cut)
	eventually(t, 30*time.Second, "a stall", func() bool { _, st := n.get(); return len(st) > 0 })
	observed, stalls := n.get()
	if !strings.HasPrefix(stalls[0], reconcile.ReasonLedgerRewritten+": ") {
		t.Errorf("stall = %q", stalls[0])
	}
	time.Sleep(300 * time.Millisecond)
	if o, _ := n.get(); o != observed {
		t.Errorf("Observe called %d times while stalled", o-observed)
	}
	if res := get(t, s.url+"/readyz"); res.code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while stalled = %d", res.code)
	}
}

// An agent takes one request a pass: with two queued for it and an hour
// to the next tick, the loop runs the next pass at once because the last
// one answered a request and another waits.
func TestRunRequeuesAtOnceWhileRequestsWait(t *testing.T) {
	e := newEnv(t)
	r := e.reconciler("", nil)
	if _, err := r.Pass(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// Queued by an earlier process (so nothing wakes the loop): the
	// queue file as the server writes it.
	dir := t.TempDir()
	queued := `{"version":1,"requests":[{"id":"first","agent":"on-demand","received":"2026-11-17T09:00:00Z"},{"id":"second","agent":"on-demand","received":"2026-11-17T09:00:01Z"}]}`
	if err := os.WriteFile(filepath.Join(dir, server.QueueFile), []byte(queued), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Config{Reconciler: r, Interval: time.Hour, RetryMin: time.Hour, QueueDir: dir, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Queued()); n != 2 {
		t.Fatalf("%d requests loaded, want 2", n)
	}
	before := e.passes.count()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, 60*time.Second, "both requests answered", func() bool { return len(s.Queued()) == 0 })
	for _, id := range []string{"first", "second"} {
		if n := len(e.runs("on-demand", "manual:"+id)); n != 1 {
			t.Errorf("manual:%s ran %d times, want once", id, n)
		}
	}
	if n := e.passes.count() - before; n < 2 {
		t.Errorf("%d passes answered two requests of one agent, want at least 2", n)
	}
}
