package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/notify"
)

const instance = "https://git.example.com/platform/desired-state.git"

var ctx = context.Background()

// The first Observe without a state file takes the ledger as a baseline:
// the proposal already in it is not notified, the one appended after is,
// once, with the approvals it needs, its branch and how to verify it.
func TestBaselineThenNewProposal(t *testing.T) {
	c := newChain(t)
	old, _ := c.propose("dependency-bumper", "old")
	rc := newReceiver(t)
	n, _ := start(t, notify.Config{URL: rc.url, Instance: instance})

	n.Observe(ctx, c.state())
	id, opened := c.propose("dependency-bumper", "new")
	n.Observe(ctx, c.state())
	n.Observe(ctx, c.state()) // nothing new: not sent again
	got := rc.wait(1)

	text := got[0].Text
	for _, want := range []string{
		"[reconciler " + instance + "] Proposal opened: dependency-bumper run " + id + " needs approval by 2 of sre, overriding deps/no-major-bumps",
		"Agent: dependency-bumper",
		"Run: " + id,
		"Branch: agents/dependency-bumper/" + id,
		"Head: " + opened.Proposal.Head,
		"Decision: require_approval deps/needs-sre (2 of sre); override deps/no-major-bumps",
		"Summary: " + strings.ReplaceAll(opened.Summary, "->", "-&gt;"),
		fmt.Sprintf("Verify: reconciler ledger show %d --repo %s", opened.Seq, instance),
		"Verify: reconciler ledger show " + id + " --repo " + instance,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, old) {
		t.Errorf("the baseline's run %s was notified:\n%s", old, text)
	}
	if got[0].contentType != "application/json" {
		t.Errorf("Content-Type %q", got[0].contentType)
	}
	if len(got[0].Blocks) != 4 || got[0].Blocks[0].Type != "header" || !strings.Contains(got[0].Blocks[2].Text.Text, "*Branch:* `agents/dependency-bumper/"+id+"`") {
		t.Errorf("blocks: %+v", got[0].Blocks)
	}

	// A later proposal is the next notification: nothing was sent twice
	// in between.
	id3, _ := c.propose("dependency-bumper", "third")
	n.Observe(ctx, c.state())
	got = rc.wait(2)
	if !strings.Contains(got[1].Text, id3) {
		t.Errorf("second notification is not of run %s:\n%s", id3, got[1].Text)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rc.delivered(); len(got) != 2 {
		t.Errorf("%d notifications delivered, want 2", len(got))
	}
}

// A restart with the state file sends nothing again, and what was not
// delivered before it (the receiver was failing) is sent after it.
func TestRestartKeepsDedup(t *testing.T) {
	c := newChain(t)
	rc := newReceiver(t)
	file := filepath.Join(t.TempDir(), "cache", "notify.json")
	cfg := notify.Config{URL: rc.url, Instance: instance, StateFile: file}

	a, _ := start(t, cfg)
	a.Observe(ctx, c.state()) // baseline of the empty ledger
	first, _ := c.propose("pinner", "first")
	a.Observe(ctx, c.state())
	rc.wait(1)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", fi, err)
	}

	// The receiver fails while the next process runs: nothing is lost.
	rc.setRespond(func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	cfg.MaxAttempts, cfg.FlushTimeout = 2, 200*time.Millisecond
	b, blog := start(t, cfg)
	b.Observe(ctx, c.state())
	second, _ := c.propose("pinner", "second")
	b.Observe(ctx, c.state())
	blog.waitLog(t, "notification not delivered; tried again after the next pass", 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	rc.setRespond(nil)
	cfg.MaxAttempts = 0
	d, _ := start(t, cfg)
	d.Observe(ctx, c.state())
	third, _ := c.propose("pinner", "third")
	d.Observe(ctx, c.state())
	rc.wait(3)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	got := rc.delivered()
	if len(got) != 3 {
		t.Fatalf("%d notifications delivered, want 3", len(got))
	}
	for i, id := range []string{first, second, third} {
		if !strings.Contains(got[i].Text, "run "+id) {
			t.Errorf("notification %d is not of run %s:\n%s", i, id, got[i].Text)
		}
	}

	// Everything handled: after the next pass, the state keeps no key
	// below the ledger's head.
	e, _ := start(t, cfg)
	e.Observe(ctx, c.state())
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Floor uint64                     `json:"floor"`
		Sent  map[string]json.RawMessage `json:"sent"`
	}
	b2, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b2, &st); err != nil {
		t.Fatal(err)
	}
	if st.Floor != c.state().Seq || len(st.Sent) != 0 {
		t.Errorf("state after every notification was handled: floor %d (ledger at %d), %d keys: %s", st.Floor, c.state().Seq, len(st.Sent), b2)
	}
}

// 500 and 429 are retried (429 after its Retry-After), 400 is not.
func TestRetries(t *testing.T) {
	t.Run("500", func(t *testing.T) {
		c := newChain(t)
		rc := newReceiver(t)
		rc.setRespond(func(attempt int, w http.ResponseWriter, _ *http.Request) {
			if attempt <= 2 {
				http.Error(w, "boom", http.StatusInternalServerError)
			}
		})
		n, lg := start(t, notify.Config{URL: rc.url, Instance: instance})
		n.Observe(ctx, c.state())
		c.propose("pinner", "r500")
		n.Observe(ctx, c.state())
		rc.wait(1)
		if len(rc.attemptTimes()) != 3 {
			t.Errorf("%d attempts, want 3", len(rc.attemptTimes()))
		}
		if got := len(lg.records("notification delivery failed; retrying")); got != 2 {
			t.Errorf("%d retries logged, want 2", got)
		}
	})
	t.Run("429 Retry-After", func(t *testing.T) {
		c := newChain(t)
		rc := newReceiver(t)
		rc.setRespond(func(attempt int, w http.ResponseWriter, _ *http.Request) {
			if attempt == 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "rate_limited", http.StatusTooManyRequests)
			}
		})
		n, _ := start(t, notify.Config{URL: rc.url, Instance: instance})
		n.Observe(ctx, c.state())
		c.propose("pinner", "r429")
		n.Observe(ctx, c.state())
		rc.wait(1)
		at := rc.attemptTimes()
		if len(at) != 2 {
			t.Fatalf("%d attempts, want 2", len(at))
		}
		// The backoff alone is 5ms: the wait is Retry-After's second.
		if gap := at[1].Sub(at[0]); gap < 950*time.Millisecond {
			t.Errorf("retried %v after a 429 with Retry-After: 1", gap)
		}
	})
	t.Run("400", func(t *testing.T) {
		c := newChain(t)
		rc := newReceiver(t)
		rc.setRespond(func(attempt int, w http.ResponseWriter, _ *http.Request) {
			if attempt == 1 {
				http.Error(w, "invalid_payload", http.StatusBadRequest)
			}
		})
		n, lg := start(t, notify.Config{URL: rc.url, Instance: instance})
		n.Observe(ctx, c.state())
		refused, _ := c.propose("pinner", "r400")
		n.Observe(ctx, c.state())
		recs := lg.waitLog(t, "notification refused by the receiver; not retried", 1)
		if recs[0]["status"] != 400.0 || recs[0]["response"] != "invalid_payload" || recs[0]["run"] != refused {
			t.Errorf("refusal logged as %v", recs[0])
		}
		// Observed again, then a new proposal: only the new one is sent.
		n.Observe(ctx, c.state())
		next, _ := c.propose("pinner", "after400")
		n.Observe(ctx, c.state())
		got := rc.wait(1)
		if len(rc.attemptTimes()) != 2 || !strings.Contains(got[0].Text, next) {
			t.Errorf("%d attempts; delivered %q", len(rc.attemptTimes()), got[0].Text)
		}
		if len(lg.records("notification refused by the receiver; not retried")) != 1 {
			t.Errorf("the refusal was logged more than once")
		}
	})
}

// A receiver that is down (connection refused) then up gets the
// notification once it is up, after the next pass; the log says why it
// failed without the URL.
func TestReceiverDownThenUp(t *testing.T) {
	c := newChain(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr + hookPath
	n, lg := start(t, notify.Config{URL: url, Instance: instance, MaxAttempts: 2})
	n.Observe(ctx, c.state())
	id, _ := c.propose("pinner", "down")
	n.Observe(ctx, c.state())
	recs := lg.waitLog(t, "notification not delivered; tried again after the next pass", 1)
	msg, _ := recs[0]["err"].(string)
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "<notify-url>") {
		t.Errorf("err = %q, want the scrubbed *url.Error of a refused connection", msg)
	}

	rc := &receiver{t: t, arrived: make(chan struct{}, 10)}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken again meanwhile: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(rc.serve)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	deadline := time.Now().Add(10 * time.Second)
	for len(rc.delivered()) == 0 && time.Now().Before(deadline) {
		n.Observe(ctx, c.state()) // the next passes
		time.Sleep(10 * time.Millisecond)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	got := rc.delivered()
	if len(got) != 1 || !strings.Contains(got[0].Text, id) {
		t.Fatalf("delivered after the receiver came up: %d notifications %v", len(got), got)
	}
	assertNoSecret(t, "the log", lg.String(), url)
}

// The URL is in no error and no log line, whatever fails: a URL that New
// refuses, a host that does not resolve, a receiver that refuses.
func TestURLIsNeverShown(t *testing.T) {
	for _, bad := range []string{
		"ftp://hooks.example.com/services/T0/B0/" + token,
		"http://[::1" + hookPath,
		"/services/T0/B0/" + token,
		"http:///services/T0/B0/" + token,
		"http://hooks.example.com/%zz" + token,
	} {
		_, err := notify.New(notify.Config{URL: bad})
		if !errors.Is(err, notify.ErrConfig) {
			t.Errorf("New(%q) = %v, want ErrConfig", bad, err)
			continue
		}
		assertNoSecret(t, "New's error", err.Error(), bad)
	}
	if _, err := notify.New(notify.Config{URL: " \n"}); !errors.Is(err, notify.ErrConfig) {
		t.Errorf("New with an empty URL = %v", err)
	}

	cfg := notify.Config{URL: "https://user:pa55word@hooks.example.com" + hookPath + "?token=" + token}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		assertNoSecret(t, "Config printed", s, cfg.URL)
		if strings.Contains(s, "pa55word") {
			t.Errorf("Config printed with its password: %s", s)
		}
	}

	t.Run("unresolvable host", func(t *testing.T) {
		c := newChain(t)
		url := "http://hooks.notify.invalid" + hookPath
		n, lg := start(t, notify.Config{URL: url, MaxAttempts: 2, Client: &http.Client{Timeout: 3 * time.Second}})
		n.Observe(ctx, c.state())
		c.propose("pinner", "dns")
		n.Observe(ctx, c.state())
		recs := lg.waitLog(t, "notification not delivered; tried again after the next pass", 1)
		msg, _ := recs[0]["err"].(string)
		// Go's error reads: Post "http://hooks.notify.invalid/services/...": dial tcp: lookup hooks.notify.invalid ...
		if !strings.Contains(msg, `Post "<notify-url>"`) || !strings.Contains(msg, "hooks.notify.invalid") {
			t.Errorf("err = %q, want the scrubbed lookup error", msg)
		}
		if len(lg.records("notification delivery failed; retrying")) != 1 {
			t.Errorf("the first failure was not logged at debug level:\n%s", lg.String())
		}
		assertNoSecret(t, "the log", lg.String(), url)
	})
}

// A stall is notified once however often it is reported, also across a
// restart; a successful pass clears it, and it is notified again when it
// recurs.
func TestStall(t *testing.T) {
	c := newChain(t)
	rc := newReceiver(t)
	file := filepath.Join(t.TempDir(), "notify.json")
	cfg := notify.Config{URL: rc.url, Instance: instance, StateFile: file}
	const (
		reason = "LedgerUntrusted"
		msg    = "entry 7: signature does not verify with any trusted key"
	)
	a, _ := start(t, cfg)
	// The first pass stalls: before any Observe.
	a.Stalled(ctx, reason, msg)
	got := rc.wait(1)
	for _, want := range []string{"Reconciler stalled: LedgerUntrusted", "Error: " + msg, "Verify: reconciler ledger verify --repo " + instance} {
		if !strings.Contains(got[0].Text, want) {
			t.Errorf("stall text lacks %q:\n%s", want, got[0].Text)
		}
	}
	a.Stalled(ctx, reason, msg) // the next pass stalls the same way
	a.Stalled(ctx, reason, msg)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// No pass succeeded before the restart, so no baseline was taken:
	// the next process takes it, and does not send this proposal.
	c.propose("pinner", "before-baseline")
	b, _ := start(t, cfg)
	b.Stalled(ctx, reason, msg) // after the restart: remembered
	b.Stalled(ctx, reason, msg)
	b.Observe(ctx, c.state()) // a pass that succeeded clears it
	b.Stalled(ctx, reason, msg)
	rc.wait(2)
	b.Stalled(ctx, "LedgerRewritten", "evidence branch was rewritten")
	rc.wait(3)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got = rc.delivered()
	if len(got) != 3 || !strings.Contains(got[1].Text, reason) || !strings.Contains(got[2].Text, "LedgerRewritten") {
		t.Errorf("delivered %d: %v", len(got), got)
	}
}

// A receiver that does not answer neither blocks Observe nor Stalled, and
// Close gives up after FlushTimeout; what did not fit in the queue is sent
// at a later pass once the receiver answers.
func TestSlowReceiver(t *testing.T) {
	c := newChain(t)
	rc := newReceiver(t)
	release := make(chan struct{})
	rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	n, _ := start(t, notify.Config{URL: rc.url, Instance: instance, QueueSize: 2})
	n.Observe(ctx, c.state())
	var ids []string
	var slowest time.Duration
	for i := range 6 {
		id, _ := c.propose("pinner", fmt.Sprint("slow", i))
		ids = append(ids, id)
		start := time.Now()
		n.Observe(ctx, c.state())
		n.Stalled(ctx, "LedgerUntrusted", fmt.Sprint("stall ", i))
		slowest = max(slowest, time.Since(start))
	}
	if slowest > time.Second { // the receiver hangs until released: a blocking Observe would never return
		t.Errorf("Observe and Stalled took up to %v with the receiver hanging", slowest)
	}
	close(release)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && !deliveredAll(rc.delivered(), ids) {
		n.Observe(ctx, c.state())
		time.Sleep(10 * time.Millisecond)
	}
	if !deliveredAll(rc.delivered(), ids) {
		t.Fatalf("not every proposal delivered: %d notifications", len(rc.delivered()))
	}
	for _, id := range ids {
		k := 0
		for _, g := range rc.delivered() {
			if strings.Contains(g.Text, "Proposal opened: pinner run "+id) {
				k++
			}
		}
		if k != 1 {
			t.Errorf("run %s notified %d times", id, k)
		}
	}

	// Close with the receiver hanging again returns after FlushTimeout.
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	m, _ := start(t, notify.Config{URL: rc.url, Instance: instance, FlushTimeout: 200 * time.Millisecond})
	m.Stalled(ctx, "LedgerRewritten", "gone")
	time.Sleep(50 * time.Millisecond) // in flight
	begin := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Close took %v with FlushTimeout 200ms", took)
	}
}

func deliveredAll(got []notice, ids []string) bool {
	for _, id := range ids {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g.Text, "Proposal opened: pinner run "+id)
		}
		if !found {
			return false
		}
	}
	return true
}

// Violations, budget holds, other holds by kind, a moved proposal and a
// changed decision each have their message; violations already in the
// ledger at the baseline are not sent.
func TestEventKinds(t *testing.T) {
	c := newChain(t)
	oldRun, _ := c.propose("deployer", "old")
	c.merge("deployer", oldRun, true)
	rc := newReceiver(t)
	n, _ := start(t, notify.Config{URL: rc.url, Instance: instance})
	n.Observe(ctx, c.state())

	id, _ := c.propose("deployer", "violating")
	n.Observe(ctx, c.state())
	rc.wait(1)
	c.merge("deployer", id, true)
	keys := commitID("keys pushed")
	c.append(ledger.Event{Type: ledger.PolicyViolation, Subject: keys, SubjectName: "main",
		Error:   "changed without an approved merge",
		Summary: "policy.violation: .reconciler/keys changed at " + keys[:12] + " by mallory@example.com without an approved merge (no review); the keys are not trusted"})
	until := time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC)
	budget := c.append(ledger.Event{Type: ledger.BudgetExceeded, Agent: "docs-writer", Trigger: "schedule:2026-03-07T06:00:00Z",
		Hold:    &ledger.Hold{Kind: "cost_per_day", Policy: "spend", Rule: "max_cost_usd_per_day", Until: until, Reason: "docs-writer spent $2.00 today; policy spend allows $2.00"},
		Summary: "budget.exceeded docs-writer: cost_per_day until 2026-03-08T00:00:00Z"})[0]
	// A freeze is not notified by default; waiting for open proposals is.
	c.append(ledger.Event{Type: ledger.RunHeld, Agent: "freezer", Trigger: "spec",
		Hold: &ledger.Hold{Kind: "freeze", Reason: "freeze deps/release-week is in force"}})
	c.append(ledger.Event{Type: ledger.RunHeld, Agent: "waiter", Trigger: "spec",
		Hold: &ledger.Hold{Kind: "open_proposals", Reason: "waiter has 1 open proposal; policy allows 1"}})
	n.Observe(ctx, c.state())
	got := rc.wait(5)

	byTitle := map[string]string{}
	for _, g := range got[1:] {
		title, _, _ := strings.Cut(g.Text, "\n")
		byTitle[strings.TrimPrefix(title, "[reconciler "+instance+"] ")] = g.Text
	}
	want := map[string][]string{
		"Policy violation: deployer run " + id + ": commit " + commitID("merge " + id)[:12] + " broke its policy decision": {
			"Commit: " + commitID("merge "+id), "Branch: agents/deployer/" + id,
			"Verify: reconciler ledger log --run " + id + " --event policy.violation --repo " + instance},
		"Policy violation: commit " + keys[:12] + " reached the protected branch without an approved merge": {
			"Verify: reconciler ledger log --event policy.violation --repo " + instance},
		"Budget exceeded: docs-writer: cost_per_day until 2026-03-08T00:00:00Z": {
			"Reason: docs-writer spent $2.00 today; policy spend allows $2.00", "Policy: spend/max_cost_usd_per_day",
			fmt.Sprintf("Verify: reconciler ledger show %d --repo %s", budget.Seq, instance)},
		"Run held: waiter: open_proposals": {"Reason: waiter has 1 open proposal"},
	}
	for title, lines := range want {
		text, ok := byTitle[title]
		if !ok {
			t.Errorf("no notification %q among %q", title, keysOf(byTitle))
			continue
		}
		for _, l := range lines {
			if !strings.Contains(text, l) {
				t.Errorf("%q lacks %q:\n%s", title, l, text)
			}
		}
	}
	for _, g := range got {
		if strings.Contains(g.Text, oldRun) || strings.Contains(g.Text, "freezer") {
			t.Errorf("notified what it should not:\n%s", g.Text)
		}
	}

	// A proposal whose branch moved, and one re-decided.
	moved, opened := c.propose("deployer", "moved")
	redecided, _ := c.propose("deployer", "redecided")
	n.Observe(ctx, c.state())
	rc.wait(7)
	d, _ := json.Marshal(map[string]any{"outcome": "require_approval", "summary": "require_approval 1 reviewer",
		"requirements": []map[string]any{{"min": 1}}})
	newHead := commitID("pushed by a person")
	c.append(
		ledger.Event{Type: ledger.ProposalUpdated, Agent: "deployer", RunID: moved, Subject: newHead, Decision: d,
			Proposal: &ledger.Proposal{Branch: branch("deployer", moved), Head: newHead, ChangeID: "c2", PreviousHead: opened.Proposal.Head}},
		ledger.Event{Type: ledger.PolicyDecision, Agent: "deployer", RunID: redecided, Decision: d,
			Summary: "policy.decision deployer " + redecided + ": require_approval 1 reviewer (re-decided under spec 0123456789ab)"},
	)
	n.Observe(ctx, c.state())
	got = rc.wait(9)
	for i, want := range []string{
		"Proposal updated: deployer run " + moved + " moved to " + newHead[:12] + " and needs approval by 1 reviewer again",
		"Decision changed: deployer run " + redecided + " now needs approval by 1 reviewer",
	} {
		if !strings.Contains(got[7+i].Text, want) {
			t.Errorf("notification %d lacks %q:\n%s", 7+i, want, got[7+i].Text)
		}
	}
	if !strings.Contains(got[7].Text, "Previous head: "+opened.Proposal.Head+" (its approvals no longer count)") {
		t.Errorf("update lacks the previous head:\n%s", got[7].Text)
	}
	n.Observe(ctx, c.state())
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if len(rc.delivered()) != 9 {
		t.Errorf("%d notifications, want 9", len(rc.delivered()))
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A summary is shown as text, not markup: control and bidi characters are
// dropped, Slack's <!channel> and @here are defused, and the instance's
// credentials are not shown.
func TestMessageIsInert(t *testing.T) {
	c := newChain(t)
	rc := newReceiver(t)
	n, _ := start(t, notify.Config{URL: rc.url, Instance: "https://ci-bot:gh0_t0ken@git.example.com/platform/repo.git", NoBlocks: true})
	n.Observe(ctx, c.state())
	c.append(ledger.Event{Type: ledger.BudgetExceeded, Agent: "spender", Trigger: "spec",
		Hold:    &ledger.Hold{Kind: "cost_per_month", Reason: "spent \x1b[31m$9\x1b[0m <!channel> @here \u202etxt.exe"},
		Summary: "budget.exceeded spender: cost_per_month \x07 see https://bot:s3cret@git.example.com/x"})
	n.Observe(ctx, c.state())
	got := rc.wait(1)[0]
	for _, bad := range []string{"\x1b", "\x07", "\u202e", "<!channel>", "@here", "gh0_t0ken", "ci-bot", "s3cret"} {
		if strings.Contains(got.Text, bad) {
			t.Errorf("text contains %q:\n%q", bad, got.Text)
		}
	}
	for _, want := range []string{"&lt;!channel&gt;", "@\u2060here", "--repo https://git.example.com/platform/repo.git", "https://git.example.com/x"} {
		if !strings.Contains(got.Text, want) {
			t.Errorf("text lacks %q:\n%q", want, got.Text)
		}
	}
	if got.Blocks != nil {
		t.Errorf("NoBlocks sent blocks: %v", got.Blocks)
	}
}

// Violations are kept by key up to MaxKeys, and the ledger's count of
// violations says how many are new: with every key kept the new one is
// sent; with keys pruned, one is sent (which one the fold cannot say) and
// never more than were appended.
func TestViolationKeysBounded(t *testing.T) {
	for _, maxKeys := range []int{0, 2} {
		t.Run(fmt.Sprint("MaxKeys=", maxKeys), func(t *testing.T) {
			c := newChain(t)
			violate := func(name string) string {
				subject := commitID(name)
				c.append(ledger.Event{Type: ledger.PolicyViolation, Subject: subject, SubjectName: "main", Error: "unapproved keys",
					Summary: "policy.violation: .reconciler/keys changed at " + subject[:12]})
				return subject
			}
			for i := range 4 {
				violate(fmt.Sprint("old ", i))
			}
			rc := newReceiver(t)
			file := filepath.Join(t.TempDir(), "notify.json")
			n, _ := start(t, notify.Config{URL: rc.url, Instance: instance, StateFile: file, MaxKeys: maxKeys})
			n.Observe(ctx, c.state()) // baseline: 4 keys
			n.Observe(ctx, c.state())
			fresh := violate("new")
			n.Observe(ctx, c.state())
			rc.wait(1)
			n.Observe(ctx, c.state())
			n.Observe(ctx, c.state())
			id, _ := c.propose("pinner", "barrier")
			n.Observe(ctx, c.state())
			rc.wait(2)
			n.Observe(ctx, c.state())
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			got := rc.delivered()
			if len(got) != 2 || !strings.Contains(got[0].Text, "Policy violation: commit ") || !strings.Contains(got[1].Text, id) {
				for _, g := range got {
					t.Log(g.Text)
				}
				t.Fatalf("%d notifications, want a violation then the proposal", len(got))
			}
			if maxKeys == 0 && !strings.Contains(got[0].Text, "commit "+fresh[:12]) {
				t.Errorf("the violation sent is not the new one:\n%s", got[0].Text)
			}
			var st struct {
				Sent map[string]json.RawMessage `json:"sent"`
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			kept := 0
			for k := range st.Sent {
				if strings.HasPrefix(k, "policy.violation/") {
					kept++
				}
			}
			if want := map[int]int{0: 5, 2: 2}[maxKeys]; kept != want {
				t.Errorf("%d violation keys kept with MaxKeys %d, want %d: %s", kept, maxKeys, want, b)
			}
		})
	}
}

// A state file that does not decode, or is another instance's, is logged
// and replaced by a new baseline (nothing already in the ledger is sent);
// one that cannot be read fails New.
func TestStateFileProblems(t *testing.T) {
	c := newChain(t)
	c.propose("pinner", "in the ledger")
	rc := newReceiver(t)
	for name, content := range map[string]string{
		"corrupt":          "{not json",
		"another instance": `{"version": 1, "instance": "https://elsewhere.example.com/repo.git", "floor": 1, "baseline": true, "sent": {}}`,
		"future version":   `{"version": 99}`,
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "notify.json")
			if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			n, lg := start(t, notify.Config{URL: rc.url, Instance: instance, StateFile: file})
			lg.waitLog(t, "notification state not used; the next pass takes a new baseline", 1)
			n.Observe(ctx, c.state())
			n.Stalled(ctx, "LedgerUntrusted", name) // the barrier
			rc.wait(1)
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if got := rc.delivered(); len(got) != 1 || !strings.Contains(got[0].Text, "stalled") {
				t.Errorf("after a new baseline: %d notifications, first %q", len(got), got[0].Text)
			}
			rc.mu.Lock()
			rc.got = nil
			rc.mu.Unlock()
		})
	}
	if _, err := notify.New(notify.Config{URL: rc.url, StateFile: t.TempDir()}); err == nil || errors.Is(err, notify.ErrConfig) {
		t.Errorf("New with a directory as state file = %v", err)
	}
}
