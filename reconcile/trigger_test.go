package reconcile_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// alertAgent is an exec agent run by alerts on ServiceHighErrorRate and by
// hand; its script writes the trigger input it got into its proposal.
func alertAgent(dir string) {
	for _, f := range []string{"agents/image-pinner.hcl", "agents/env-normaliser.hcl", "agents/incident-responder.hcl"} {
		os.Remove(filepath.Join(dir, f))
	}
	os.MkdirAll(filepath.Join(dir, "notes"), 0o755)
	os.WriteFile(filepath.Join(dir, "notes/.keep"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "agents", "triage.hcl"), []byte(`agent "triage" {
  provider = provider.exec.local
  command  = ["sh", "tools/triage.sh"]
  trigger {
    on_alert {
      match    = { alertname = "ServiceHighErrorRate" }
      match_re = { severity = "critical|warning" }
    }
  }
  trigger {
    manual = true
  }
  scope {
    paths = ["notes/**"]
  }
}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "tools", "triage.sh"), []byte(`#!/bin/sh
set -e
printf '%s\n' "$RECONCILER_TRIGGER" > "notes/$RECONCILER_RUN_ID.trigger"
printf '%s\n' "$RECONCILER_TRIGGER_INPUT" > "notes/$RECONCILER_RUN_ID.json"
echo "triage: $RECONCILER_TRIGGER"
`), 0o755)
}

// wireAlert decodes an Alertmanager webhook body (version 4) the way the
// daemon hands it to a pass.
func wireAlert(t *testing.T, body string) *ledger.Alert {
	t.Helper()
	var w struct {
		Receiver, Status, GroupKey, ExternalURL string
		GroupLabels, CommonLabels               map[string]string
		CommonAnnotations                       map[string]string
		Alerts                                  []struct {
			Status, Fingerprint, GeneratorURL string
			Labels, Annotations               map[string]string
			StartsAt, EndsAt                  time.Time
		}
	}
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatal(err)
	}
	al := &ledger.Alert{Receiver: w.Receiver, Status: w.Status, GroupKey: w.GroupKey, ExternalURL: w.ExternalURL,
		GroupLabels: w.GroupLabels, CommonLabels: w.CommonLabels, CommonAnnotations: w.CommonAnnotations}
	for _, a := range w.Alerts {
		al.Alerts = append(al.Alerts, ledger.AlertItem{Status: a.Status, Fingerprint: a.Fingerprint, Labels: a.Labels,
			Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: a.EndsAt, GeneratorURL: a.GeneratorURL})
	}
	return al
}

// A captured firing delivery of Alertmanager (faultline), and its
// resolution: the same group and alert.
const (
	firingFrontend   = `{"receiver":"faultline","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"ServiceHighErrorRate","service_name":"frontend","severity":"critical","signal":"errors"},"annotations":{"description":"frontend is failing 29.25% of calls (baseline 0%).","summary":"frontend error rate above 5%"},"startsAt":"2026-08-24T10:34:30.583Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://0345b24dba28:9090/graph","fingerprint":"0eeee852e85422ff"}],"groupLabels":{"alertname":"ServiceHighErrorRate","service_name":"frontend"},"commonLabels":{"alertname":"ServiceHighErrorRate","service_name":"frontend","severity":"critical","signal":"errors"},"commonAnnotations":{"summary":"frontend error rate above 5%"},"externalURL":"http://1a9e6cfeb2bd:9093","version":"4","groupKey":"{}:{alertname=\"ServiceHighErrorRate\", service_name=\"frontend\"}","truncatedAlerts":0}`
	resolvedFrontend = `{"receiver":"faultline","status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"ServiceHighErrorRate","service_name":"frontend","severity":"critical","signal":"errors"},"annotations":{"summary":"frontend error rate above 5%"},"startsAt":"2026-08-24T10:34:30.583Z","endsAt":"2026-08-24T10:41:00.583Z","generatorURL":"http://0345b24dba28:9090/graph","fingerprint":"0eeee852e85422ff"}],"groupLabels":{"alertname":"ServiceHighErrorRate","service_name":"frontend"},"commonLabels":{"alertname":"ServiceHighErrorRate","service_name":"frontend","severity":"critical","signal":"errors"},"commonAnnotations":{"summary":"frontend error rate above 5%"},"externalURL":"http://1a9e6cfeb2bd:9093","version":"4","groupKey":"{}:{alertname=\"ServiceHighErrorRate\", service_name=\"frontend\"}","truncatedAlerts":0}`
	firingOther      = `{"receiver":"faultline","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"DiskFull","severity":"critical"},"fingerprint":"aaaa"}],"groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull","severity":"critical"},"version":"4","groupKey":"{}:{alertname=\"DiskFull\"}"}`
)

func pass(t *testing.T, r *reconcile.Reconciler, reqs ...reconcile.Request) reconcile.Result {
	t.Helper()
	res, err := r.Pass(context.Background(), reqs)
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	return res
}

func outcome(t *testing.T, res reconcile.Result, req, agent string) reconcile.RequestOutcome {
	t.Helper()
	for _, o := range res.Requests {
		if o.Request == req && o.Agent == agent {
			return o
		}
	}
	t.Fatalf("no outcome for request %s agent %q in %+v", req, agent, res.Requests)
	return reconcile.RequestOutcome{}
}

func TestAlertStartsMatchingAgentOnce(t *testing.T) {
	e := newEnv(t, false, alertAgent)
	r := e.reconciler(nil)
	pass(t, r) // genesis, spec
	before := len(e.entries())

	firing := reconcile.Request{ID: "am-1", Alert: wireAlert(t, firingFrontend), Received: e.now}
	if got, err := r.Targets(firing); err != nil || len(got) != 1 || got[0] != "triage" {
		t.Fatalf("Targets = %v, %v; want [triage]", got, err)
	}
	res := pass(t, r, firing)
	o := outcome(t, res, "am-1", "triage")
	if o.State != reconcile.RequestStarted || o.RunID == "" || !strings.HasPrefix(o.Trigger, "alert:") {
		t.Fatalf("outcome = %+v, want started with an alert trigger", o)
	}
	started, ok := find(e.entries(), ledger.RunStarted, "triage")
	if !ok || started.Alert == nil || started.Alert.GroupKey != firing.Alert.GroupKey || len(started.Alert.Alerts) != 1 ||
		started.Alert.Alerts[0].Fingerprint != "0eeee852e85422ff" || started.Trigger != firing.Alert.Trigger() {
		t.Fatalf("run.started does not carry the notification: %+v", started.Event)
	}
	// The agent read the notification as its trigger input, and its
	// proposal says so.
	opened, ok := find(e.entries(), ledger.ProposalOpened, "triage")
	if !ok {
		t.Fatalf("no proposal: %v", e.events()[before:])
	}
	work := e.clone()
	e.git(work, "checkout", "-q", opened.Proposal.Branch)
	in, err := os.ReadFile(filepath.Join(work, "notes", o.RunID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var input struct {
		Kind  string
		Alert ledger.Alert
	}
	if err := json.Unmarshal(in, &input); err != nil || input.Kind != "alert" || input.Alert.CommonLabels["service_name"] != "frontend" {
		t.Fatalf("trigger input = %s (%v)", in, err)
	}

	// Alertmanager repeats the notification (repeat_interval, a retry, a
	// second replica): the same trigger, answered by the same run.
	n := len(e.entries())
	again := reconcile.Request{ID: "am-2", Alert: wireAlert(t, firingFrontend)}
	res = pass(t, r, again)
	if o2 := outcome(t, res, "am-2", "triage"); o2.State != reconcile.RequestStarted || o2.RunID != o.RunID {
		t.Fatalf("repeat outcome = %+v, want the first run %s", o2, o.RunID)
	}
	if got := len(e.entries()); got != n {
		t.Fatalf("a repeated notification wrote %d entries: %v", got-n, e.events()[n:])
	}

	// Resolved: recorded once, never run.
	resolved := reconcile.Request{ID: "am-3", Alert: wireAlert(t, resolvedFrontend)}
	res = pass(t, r, resolved)
	if o3 := outcome(t, res, "am-3", "triage"); o3.State != reconcile.RequestRecorded {
		t.Fatalf("resolved outcome = %+v", o3)
	}
	pass(t, r, reconcile.Request{ID: "am-4", Alert: wireAlert(t, resolvedFrontend)})
	es := e.entries()
	if c := count(es, ledger.AlertResolved); c != 1 {
		t.Fatalf("alert.resolved written %d times, want 1", c)
	}
	if c := count(es, ledger.RunStarted); c != 1 {
		t.Fatalf("%d runs started, want 1", c)
	}
	e.verify()
}

func TestAlertNoMatchAndBadManualRequestsAreDropped(t *testing.T) {
	e := newEnv(t, false, alertAgent)
	r := e.reconciler(nil)
	pass(t, r)
	n := len(e.entries())
	res := pass(t, r,
		reconcile.Request{ID: "other", Alert: wireAlert(t, firingOther)},
		reconcile.Request{ID: "ghost", Agent: "no-such-agent"},
	)
	if o := outcome(t, res, "other", ""); o.State != reconcile.RequestDropped || !strings.Contains(o.Reason, "DiskFull") {
		t.Errorf("unmatched alert: %+v", o)
	}
	if o := outcome(t, res, "ghost", "no-such-agent"); o.State != reconcile.RequestDropped {
		t.Errorf("unknown agent: %+v", o)
	}
	if got := len(e.entries()); got != n {
		t.Errorf("dropped requests wrote entries: %v", e.events()[n:])
	}
	if _, err := r.Targets(reconcile.Request{ID: "x", Agent: "no-such-agent"}); err == nil {
		t.Errorf("Targets of an unknown agent: no error")
	}
}

func TestManualRunWithoutManualTriggerIsRefused(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	pass(t, r)
	req := reconcile.Request{ID: "m-1", Agent: "image-pinner"}
	if _, err := r.Targets(req); err == nil || !strings.Contains(err.Error(), "manual") {
		t.Fatalf("Targets = %v, want a missing manual trigger", err)
	}
	res := pass(t, r, req)
	if o := outcome(t, res, "m-1", "image-pinner"); o.State != reconcile.RequestDropped {
		t.Fatalf("outcome = %+v", o)
	}
}

func TestManualRequestsRunOneAtATime(t *testing.T) {
	e := newEnv(t, false, alertAgent)
	r := e.reconciler(nil)
	pass(t, r)
	a := reconcile.Request{ID: "req-a", Agent: "triage", By: "rita", Reason: "check the error budget"}
	b := reconcile.Request{ID: "req-b", Agent: "triage", By: "sam"}
	res := pass(t, r, a, b)
	oa, ob := outcome(t, res, "req-a", "triage"), outcome(t, res, "req-b", "triage")
	if oa.State != reconcile.RequestStarted || ob.State != reconcile.RequestPending {
		t.Fatalf("outcomes = %+v, %+v; want started, pending", oa, ob)
	}
	started, _ := find(e.entries(), ledger.RunStarted, "triage")
	if started.Request == nil || started.Request.ID != "req-a" || started.Request.By != "rita" || started.Trigger != "manual:req-a" {
		t.Fatalf("run.started = %+v", started.Event)
	}
	res = pass(t, r, b)
	if ob = outcome(t, res, "req-b", "triage"); ob.State != reconcile.RequestStarted || ob.RunID == oa.RunID {
		t.Fatalf("second pass: %+v", ob)
	}
	if c := count(e.entries(), ledger.RunStarted); c != 2 {
		t.Fatalf("%d runs, want 2", c)
	}
}

func TestNextDueIsTheNextScheduleSlot(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		alertAgent(dir)
		os.WriteFile(filepath.Join(dir, "agents", "nightly.hcl"), []byte(`agent "nightly" {
  provider = provider.exec.local
  command  = ["true"]
  trigger {
    schedule = "0 3 * * *"
  }
  scope {
    paths = ["notes/**"]
  }
}
`), 0o644)
	})
	r := e.reconciler(nil)
	res := pass(t, r)
	want := time.Date(2026, 11, 18, 3, 0, 0, 0, time.UTC)
	if !res.NextDue.Equal(want) {
		t.Fatalf("NextDue = %s, want %s", res.NextDue, want)
	}
}

type seqRecorder struct{ seqs []uint64 }

func (s *seqRecorder) Observe(st *ledger.State)  { s.seqs = append(s.seqs, st.Seq) }
func (s *seqRecorder) Pass(time.Duration, error) {}

// A restarted reconciler reports the totals its cache verified before its
// first pass, also while the remote is unreachable: metrics never drop to
// zero over a restart.
func TestSavedStateIsObservedAtStart(t *testing.T) {
	e := newEnv(t, true, nil)
	cache := t.TempDir()
	r := e.cachedReconciler(nil, cache)
	e.pass(r)
	want := r.Ledger().State().Seq
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(e.bare, e.bare+".away"); err != nil {
		t.Fatal(err)
	}
	rec := &seqRecorder{}
	r2 := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.CacheDir, c.Recorder = cache, rec })
	if len(rec.seqs) != 1 || rec.seqs[0] != want || want == 0 {
		t.Fatalf("observed at start: %v, want [%d]", rec.seqs, want)
	}
	if err := r2.Reconcile(context.Background()); err == nil {
		t.Fatal("a pass with the remote away succeeded")
	}
	if last := rec.seqs[len(rec.seqs)-1]; last != want {
		t.Fatalf("after a failed pass the state observed is at %d, want %d", last, want)
	}
}
