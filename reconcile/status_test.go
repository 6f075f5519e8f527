package reconcile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// ready returns the Ready condition of conds, or a zero condition.
func ready(conds []metav1.Condition) metav1.Condition {
	if c := apimeta.FindStatusCondition(conds, "Ready"); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// head is the protected branch's head in the env's bare repository.
func (e *env) head() string {
	return strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-parse", "main"))
}

// generation is what status calls the repository's generation, counted by
// the git CLI: the first-parent history's length.
func (e *env) generation() int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(e.git("", "--git-dir", e.bare, "rev-list", "--count", "--first-parent", "main")), 10, 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// checkGenerations fails unless the status, each of its conditions, each
// agent and each agent condition observed generation gen.
func checkGenerations(t *testing.T, st reconcile.Status, gen int64) {
	t.Helper()
	if st.ObservedGeneration != gen {
		t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, gen)
	}
	for _, c := range st.Conditions {
		if c.ObservedGeneration != gen {
			t.Errorf("condition %s observedGeneration = %d, want %d", c.Type, c.ObservedGeneration, gen)
		}
	}
	for name, as := range st.Agents {
		if as.ObservedGeneration != gen {
			t.Errorf("agent %s observedGeneration = %d, want %d", name, as.ObservedGeneration, gen)
		}
		for _, c := range as.Conditions {
			if c.ObservedGeneration != gen {
				t.Errorf("agent %s condition %s observedGeneration = %d, want %d", name, c.Type, c.ObservedGeneration, gen)
			}
		}
	}
}

// kstatus computes what kstatus tools (flux, kubectl wait, kpt, Argo's
// health checks built on it) make of the status, as the status of an
// object whose metadata.generation is the repository's.
func kstatus(t *testing.T, st reconcile.Status, generation int64) status.Status {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"apiVersion": "reconciler.agentgitops.dev/v1alpha1",
		"kind":       "AgentRepository",
		"metadata":   map[string]any{"name": "repo", "generation": generation},
		"status":     st,
	})
	if err != nil {
		t.Fatal(err)
	}
	// As a Kubernetes client decodes it: integers as int64.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(u)
	if err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	return res.Status
}

// After a successful pass: Ready=True Succeeded at the head, both
// revisions the head, nothing reconciling or stalled, and each agent's
// last run, open proposals, budget and next run as the ledger says.
func TestStatusAfterSuccessfulPass(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	st := r.Status()
	head := "main@sha1:" + e.head()
	c := ready(st.Conditions)
	if c.Status != metav1.ConditionTrue || c.Reason != "Succeeded" || !strings.Contains(c.Message, head) {
		t.Errorf("Ready = %+v, want True Succeeded naming %s", c, head)
	}
	if st.LastAppliedRevision != head || st.LastAttemptedRevision != head {
		t.Errorf("revisions applied %q attempted %q, want %q", st.LastAppliedRevision, st.LastAttemptedRevision, head)
	}
	if len(st.Conditions) != 1 {
		t.Errorf("conditions = %+v, want Ready alone", st.Conditions)
	}
	if !st.Ready() || st.Stalled() {
		t.Errorf("Ready() = %v, Stalled() = %v", st.Ready(), st.Stalled())
	}
	if got := c.LastTransitionTime.Time; !got.Equal(e.now) {
		t.Errorf("lastTransitionTime = %s, want the reconciler's clock %s", got, e.now)
	}
	checkGenerations(t, st, e.generation())
	es := e.entries()
	if last := es[len(es)-1]; st.Ledger.Seq != last.Seq || st.Ledger.Head == "" {
		t.Errorf("ledger = %+v, want seq %d and a head", st.Ledger, last.Seq)
	}
	if len(st.Agents) != 3 {
		t.Fatalf("agents = %v", st.Agents)
	}
	for _, name := range []string{"image-pinner", "env-normaliser"} {
		as := st.Agents[name]
		opened, ok := find(es, ledger.ProposalOpened, name)
		if !ok {
			t.Fatalf("%s opened no proposal: %q", name, e.events())
		}
		if as.LastRun == nil || as.LastRun.ID != opened.RunID || as.LastRun.Outcome != "proposal_open" || as.LastRun.Trigger != "spec" || as.LastRun.Proposal != opened.Proposal.Branch {
			t.Errorf("%s lastRun = %+v, want run %s with its proposal open", name, as.LastRun, opened.RunID)
		}
		if len(as.OpenProposals) != 1 || as.OpenProposals[0] != opened.Proposal.Branch {
			t.Errorf("%s openProposals = %q, want %q", name, as.OpenProposals, opened.Proposal.Branch)
		}
		if c := ready(as.Conditions); c.Status != metav1.ConditionTrue || c.Reason != "Succeeded" || !strings.Contains(c.Message, opened.Proposal.Branch) {
			t.Errorf("%s Ready = %+v", name, c)
		}
		if as.Budget == nil || as.Budget.SpentTodayUSD != 0 {
			t.Errorf("%s budget = %+v", name, as.Budget)
		}
	}
	// image-pinner's weekday 07:00 Berlin slot: the next is Wednesday's.
	next := st.Agents["image-pinner"].NextRun
	if want := time.Date(2026, 11, 18, 6, 0, 0, 0, time.UTC); next == nil || !next.At.Time.Equal(want) || !strings.Contains(next.Reason, "schedule") {
		t.Errorf("image-pinner nextRun = %+v, want %s by its schedule", next, want)
	}
	if st.NextRun == nil || st.NextRun.Agent != "image-pinner" || !st.NextRun.At.Equal(&next.At) {
		t.Errorf("nextRun = %+v, want image-pinner's", st.NextRun)
	}
	// The alert-driven agent has not run and has nothing scheduled.
	if as := st.Agents["incident-responder"]; as.LastRun != nil || as.NextRun != nil || ready(as.Conditions).Status != metav1.ConditionTrue {
		t.Errorf("incident-responder = %+v", as)
	}
	if got := kstatus(t, st, st.ObservedGeneration); got != status.CurrentStatus {
		t.Errorf("kstatus = %s, want Current", got)
	}
	// A head the pass has not observed yet is in progress for kstatus.
	if got := kstatus(t, st, st.ObservedGeneration+1); got != status.InProgressStatus {
		t.Errorf("kstatus of a newer generation = %s, want InProgress", got)
	}
}

// A spec that does not load: Ready=False SpecInvalid and Stalled at the
// new head (attempted), the last good spec still applied; the generation
// counts the push. Fixing it makes Ready=True again and drops Stalled.
func TestStatusSpecInvalid(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	good := "main@sha1:" + e.head()
	gen := r.Status().ObservedGeneration
	e.commitAs("Dev", "dev@example.com", "Break the spec", func(work string) {
		os.WriteFile(filepath.Join(work, "agents/broken.hcl"), []byte("agent \"broken\" {\n  provider = provider.exec.nope\n"), 0o644)
	})
	e.now = e.now.Add(time.Minute)
	e.pass(r)
	st := r.Status()
	bad := "main@sha1:" + e.head()
	if st.LastAppliedRevision != good || st.LastAttemptedRevision != bad {
		t.Errorf("revisions applied %q attempted %q, want %q and %q", st.LastAppliedRevision, st.LastAttemptedRevision, good, bad)
	}
	c := ready(st.Conditions)
	if c.Status != metav1.ConditionFalse || c.Reason != "SpecInvalid" || !strings.Contains(c.Message, "agents/broken.hcl:") || !strings.Contains(c.Message, good) {
		t.Errorf("Ready = %+v", c)
	}
	if s := apimeta.FindStatusCondition(st.Conditions, "Stalled"); s == nil || s.Status != metav1.ConditionTrue || s.Reason != "SpecInvalid" {
		t.Errorf("Stalled = %+v", s)
	}
	if len(st.Diagnostics) == 0 || !strings.Contains(st.Diagnostics[0], "agents/broken.hcl:") {
		t.Errorf("diagnostics = %q", st.Diagnostics)
	}
	if st.ObservedGeneration != gen+1 {
		t.Errorf("observedGeneration = %d after one push, want %d", st.ObservedGeneration, gen+1)
	}
	checkGenerations(t, st, e.generation())
	if got := kstatus(t, st, st.ObservedGeneration); got != status.FailedStatus {
		t.Errorf("kstatus = %s, want Failed", got)
	}
	// The agents of the last good spec are still reported.
	if len(st.Agents) != 3 {
		t.Errorf("agents = %d, want the last good spec's 3", len(st.Agents))
	}

	e.commitAs("Dev", "dev@example.com", "Fix the spec", func(work string) {
		os.Remove(filepath.Join(work, "agents/broken.hcl"))
	})
	e.now = e.now.Add(time.Minute)
	e.pass(r)
	st = r.Status()
	fixed := "main@sha1:" + e.head()
	if c := ready(st.Conditions); c.Status != metav1.ConditionTrue || c.Reason != "Succeeded" || !c.LastTransitionTime.Time.Equal(e.now) {
		t.Errorf("Ready after the fix = %+v, want True since %s", c, e.now)
	}
	if st.Stalled() || len(st.Conditions) != 1 || len(st.Diagnostics) != 0 {
		t.Errorf("status after the fix = %+v", st)
	}
	if st.LastAppliedRevision != fixed || st.LastAttemptedRevision != fixed {
		t.Errorf("revisions after the fix: applied %q attempted %q, want %q", st.LastAppliedRevision, st.LastAttemptedRevision, fixed)
	}
	checkGenerations(t, st, gen+2)
}

// A stalled pass (an entry signed by an untrusted key): Ready=False and
// Stalled=True with the stall's reason, for the repository and for every
// agent, which kstatus reads as Failed.
func TestStatusStalled(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	e.forgeEntry(newKey(t))
	e.now = e.now.Add(time.Minute)
	e.stalled(r, reconcile.ReasonLedgerUntrusted)
	st := r.Status()
	if st.Ready() || !st.Stalled() {
		t.Fatalf("conditions = %+v, want Ready=False, Stalled=True", st.Conditions)
	}
	for _, c := range st.Conditions {
		switch c.Type {
		case "Ready", "Stalled":
			if c.Reason != reconcile.ReasonLedgerUntrusted || c.Message == "" || !c.LastTransitionTime.Time.Equal(e.now) {
				t.Errorf("%s = %+v, want reason %s since %s", c.Type, c, reconcile.ReasonLedgerUntrusted, e.now)
			}
		default:
			t.Errorf("unexpected condition %+v", c)
		}
	}
	if st.Conditions[0].Type != "Stalled" {
		t.Errorf("conditions are not in Flux's order (Stalled, Reconciling, Ready): %+v", st.Conditions)
	}
	for name, as := range st.Agents {
		s := apimeta.FindStatusCondition(as.Conditions, "Stalled")
		if s == nil || s.Status != metav1.ConditionTrue || s.Reason != reconcile.ReasonLedgerUntrusted || ready(as.Conditions).Status != metav1.ConditionFalse {
			t.Errorf("agent %s conditions = %+v, want Stalled with the repository", name, as.Conditions)
		}
	}
	if got := kstatus(t, st, st.ObservedGeneration); got != status.FailedStatus {
		t.Errorf("kstatus = %s, want Failed", got)
	}
	// Stalled again: the conditions hold since the first stalled pass.
	stalledAt := e.now
	e.now = e.now.Add(time.Minute)
	e.stalled(r, reconcile.ReasonLedgerUntrusted)
	for _, c := range r.Status().Conditions {
		if !c.LastTransitionTime.Time.Equal(stalledAt) {
			t.Errorf("%s lastTransitionTime = %s after a second stalled pass, want %s", c.Type, c.LastTransitionTime, stalledAt)
		}
	}
}

// lastTransitionTime stays while a condition's status does, and moves when
// it flips; observedGeneration follows every push.
func TestStatusTransitionTime(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	t0 := e.now
	first := r.Status()

	e.now = t0.Add(time.Minute)
	e.pass(r)
	second := r.Status()
	if a, b := ready(first.Conditions), ready(second.Conditions); !b.LastTransitionTime.Equal(&a.LastTransitionTime) || !b.LastTransitionTime.Time.Equal(t0) || a.Message != b.Message {
		t.Errorf("Ready moved on a pass with no change: %+v -> %+v", a, b)
	}
	for name, as := range second.Agents {
		if c := ready(as.Conditions); !c.LastTransitionTime.Time.Equal(t0) {
			t.Errorf("agent %s Ready lastTransitionTime = %s, want %s", name, c.LastTransitionTime, t0)
		}
	}
	if !second.LastReconcileTime.Time.Equal(e.now) || second.ObservedGeneration != first.ObservedGeneration {
		t.Errorf("second pass: lastReconcileTime %s, generation %d -> %d", second.LastReconcileTime, first.ObservedGeneration, second.ObservedGeneration)
	}

	// A push that changes the spec without breaking it: Ready stays True
	// since t0, at the next generation.
	e.commitAs("Dev", "dev@example.com", "Describe the pinner better", func(work string) {
		p := filepath.Join(work, "agents/image-pinner.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), "Pin container images", "Pin every container image", 1)), 0o644)
	})
	e.now = t0.Add(2 * time.Minute)
	e.pass(r)
	third := r.Status()
	if c := ready(third.Conditions); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready after a spec change = %+v, want True since %s", c, t0)
	}
	if third.ObservedGeneration != second.ObservedGeneration+1 {
		t.Errorf("observedGeneration %d -> %d on a spec change, want +1", second.ObservedGeneration, third.ObservedGeneration)
	}
	checkGenerations(t, third, e.generation())

	// A flip: the remote goes away. Ready turns False at that pass's time.
	if err := os.Rename(e.bare, e.bare+".away"); err != nil {
		t.Fatal(err)
	}
	e.now = t0.Add(3 * time.Minute)
	if err := r.Reconcile(t.Context()); err == nil {
		t.Fatal("a pass without the remote succeeded")
	}
	down := r.Status()
	c := ready(down.Conditions)
	if c.Status != metav1.ConditionFalse || c.Reason != reconcile.ReasonGitOperationFailed || !c.LastTransitionTime.Time.Equal(e.now) {
		t.Errorf("Ready with the remote away = %+v, want False GitOperationFailed since %s", c, e.now)
	}
	// What the last good pass attempted and observed stays.
	if down.LastAttemptedRevision != third.LastAttemptedRevision || down.ObservedGeneration != third.ObservedGeneration || len(down.Agents) != 3 {
		t.Errorf("status with the remote away lost the last pass's: %+v", down)
	}
	if err := os.Rename(e.bare+".away", e.bare); err != nil {
		t.Fatal(err)
	}
	e.now = t0.Add(4 * time.Minute)
	e.pass(r)
	if c := ready(r.Status().Conditions); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(e.now) {
		t.Errorf("Ready with the remote back = %+v, want True since %s", c, e.now)
	}
}

// The JSON served at /api/v1/status has the fields kstatus tools read, in
// camelCase: parsed generically, not through the Go types.
func TestStatusJSONShape(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	b, err := json.Marshal(r.Status())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	rev := regexp.MustCompile(`^main@sha1:[0-9a-f]{40}$`)
	for _, k := range []string{"lastAppliedRevision", "lastAttemptedRevision"} {
		if s, _ := doc[k].(string); !rev.MatchString(s) {
			t.Errorf("%s = %v, want main@sha1:<sha>", k, doc[k])
		}
	}
	if g, ok := doc["observedGeneration"].(float64); !ok || g < 1 {
		t.Errorf("observedGeneration = %v", doc["observedGeneration"])
	}
	if l, _ := doc["ledger"].(map[string]any); l == nil || l["seq"] == nil || l["head"] == nil {
		t.Errorf("ledger = %v, want seq and head", doc["ledger"])
	}
	if _, err := time.Parse(time.RFC3339, str(doc["lastReconcileTime"])); err != nil {
		t.Errorf("lastReconcileTime: %v", err)
	}
	checkConds := func(where string, v any) {
		conds, _ := v.([]any)
		if len(conds) == 0 {
			t.Errorf("%s: no conditions: %v", where, v)
		}
		for _, c := range conds {
			m, _ := c.(map[string]any)
			for _, k := range []string{"type", "status", "reason", "message", "lastTransitionTime"} {
				if str(m[k]) == "" {
					t.Errorf("%s: condition %v has no %s", where, m, k)
				}
			}
			if _, ok := m["observedGeneration"].(float64); !ok {
				t.Errorf("%s: condition %v has no observedGeneration", where, m)
			}
			if _, err := time.Parse(time.RFC3339, str(m["lastTransitionTime"])); err != nil {
				t.Errorf("%s: lastTransitionTime: %v", where, err)
			}
			if s := str(m["status"]); s != "True" && s != "False" && s != "Unknown" {
				t.Errorf("%s: status %q", where, s)
			}
		}
	}
	checkConds("repository", doc["conditions"])
	agents, _ := doc["agents"].(map[string]any)
	if len(agents) != 3 {
		t.Fatalf("agents = %v", doc["agents"])
	}
	for name, v := range agents {
		a, _ := v.(map[string]any)
		checkConds(name, a["conditions"])
		if _, ok := a["observedGeneration"].(float64); !ok {
			t.Errorf("%s has no observedGeneration", name)
		}
		if _, ok := a["budget"].(map[string]any); !ok {
			t.Errorf("%s has no budget", name)
		}
	}
	pinner, _ := agents["image-pinner"].(map[string]any)
	last, _ := pinner["lastRun"].(map[string]any)
	for _, k := range []string{"id", "trigger", "started", "outcome"} {
		if str(last[k]) == "" {
			t.Errorf("image-pinner lastRun has no %s: %v", k, last)
		}
	}
	if next, _ := pinner["nextRun"].(map[string]any); str(next["at"]) == "" || str(next["reason"]) == "" {
		t.Errorf("image-pinner nextRun = %v", pinner["nextRun"])
	}
	if open, _ := pinner["openProposals"].([]any); len(open) != 1 {
		t.Errorf("image-pinner openProposals = %v", pinner["openProposals"])
	}
	// camelCase throughout (the sandbox's mechanism names are values).
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if strings.Contains(k, "_") && path != ".agents" && path != ".sandbox.missing" {
					t.Errorf("%s.%s is not camelCase", path, k)
				}
				walk(path+"."+k, x)
			}
		case []any:
			for _, x := range v {
				walk(path+"[]", x)
			}
		}
	}
	walk("", doc)
}

func str(v any) string { s, _ := v.(string); return s }

// A hold is reported with its kind, policy, rule and end while the gate
// still holds the agent, Ready says so, and the next run is the hold's end.
func TestStatusHeld(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.WriteFile(filepath.Join(dir, "policies/budget.hcl"), []byte(`policy "budget" {
  applies_to = ["image-pinner"]
  budget {
    max_runs_per_hour = 1
  }
}
`), 0o644)
	})
	r := e.reconciler(nil)
	e.pass(r)
	// A change of the agent's spec makes it due again within the hour.
	e.commitAs("Dev", "dev@example.com", "Describe the pinner better", func(work string) {
		p := filepath.Join(work, "agents/image-pinner.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), "Pin container images", "Pin every container image", 1)), 0o644)
	})
	started := e.now
	e.now = e.now.Add(10 * time.Minute)
	e.pass(r)
	as := r.Status().Agents["image-pinner"]
	h := as.Held
	if h == nil || h.Kind != "runs_per_hour" || h.Policy != "budget" || h.Rule != "max_runs_per_hour" || h.Until == nil || !h.Until.Time.Equal(started.Add(time.Hour)) || !h.Since.Time.Equal(e.now) {
		t.Fatalf("held = %+v, want runs_per_hour of policy budget until %s", h, started.Add(time.Hour))
	}
	if c := ready(as.Conditions); c.Status != metav1.ConditionFalse || c.Reason != "Held" || c.Message != h.Reason {
		t.Errorf("Ready = %+v, want False Held: %s", c, h.Reason)
	}
	var rate *reconcile.BudgetLimit
	for i, l := range as.Budget.Limits {
		if l.Rule == "max_runs_per_hour" {
			rate = &as.Budget.Limits[i]
		}
	}
	if rate == nil || rate.Policy != "budget" || rate.Limit != 1 || rate.Used != 1 {
		t.Errorf("budget limits = %+v, want max_runs_per_hour 1 used 1", as.Budget.Limits)
	}
	if as.NextRun == nil || !as.NextRun.At.Time.Equal(h.Until.Time) || !strings.Contains(as.NextRun.Reason, "runs_per_hour") {
		t.Errorf("nextRun = %+v, want the hold's end", as.NextRun)
	}
}

// A request the pass answered (here: dropped, the agent has no manual
// trigger) shows as lastHandledReconcileAt, and stays until another is.
func TestStatusLastHandledRequest(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	res, err := r.Pass(t.Context(), []reconcile.Request{{ID: "req-1", Agent: "image-pinner", By: "dev", Received: e.now}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requests) != 1 || res.Requests[0].State != reconcile.RequestDropped {
		t.Fatalf("outcomes = %+v, want req-1 dropped", res.Requests)
	}
	if got := r.Status().LastHandledReconcileAt; got != "req-1" {
		t.Errorf("lastHandledReconcileAt = %q, want req-1", got)
	}
	e.pass(r)
	if got := r.Status().LastHandledReconcileAt; got != "req-1" {
		t.Errorf("lastHandledReconcileAt after a pass without requests = %q, want req-1", got)
	}
}

// passObserver reads the reconciler's status while a pass is ending
// (Recorder.Observe runs before the pass's status is summarized).
type passObserver struct {
	r      *reconcile.Reconciler
	during []reconcile.Status
}

// Observe ignores the call New makes with the saved state, before o.r is
// set: that is no pass.
func (o *passObserver) Observe(*ledger.State) {
	if o.r != nil {
		o.during = append(o.during, o.r.Status())
	}
}
func (o *passObserver) Pass(time.Duration, error) {}

// Reconciling=True (Progressing) while a pass runs, without Stalled, over
// the last pass's Ready; gone when it ends.
func TestStatusReconcilingDuringPass(t *testing.T) {
	e := newEnv(t, false, nil)
	o := &passObserver{}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.Recorder = o })
	o.r = r
	e.pass(r)
	e.now = e.now.Add(time.Minute)
	e.pass(r)
	if len(o.during) != 2 {
		t.Fatalf("observed %d passes, want 2", len(o.during))
	}
	for i, st := range o.during {
		c := apimeta.FindStatusCondition(st.Conditions, "Reconciling")
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Progressing" {
			t.Errorf("pass %d: Reconciling = %+v, want True Progressing", i+1, c)
		}
		if got := kstatus(t, st, st.ObservedGeneration); got != status.InProgressStatus {
			t.Errorf("pass %d: kstatus = %s, want InProgress", i+1, got)
		}
	}
	if c := ready(o.during[1].Conditions); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Time.Equal(e.now.Add(-time.Minute)) {
		t.Errorf("Ready during the second pass = %+v, want the first pass's", c)
	}
	if st := r.Status(); apimeta.FindStatusCondition(st.Conditions, "Reconciling") != nil || !st.Ready() {
		t.Errorf("after the pass: %+v", st.Conditions)
	}
}
