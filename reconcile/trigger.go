package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// Request asks a pass for runs outside the agents' schedules: a manual run
// of one agent, or an Alertmanager notification for every agent whose
// on_alert trigger matches it. The daemon queues requests and hands them
// to Pass; a request stays queued until an outcome other than
// RequestPending says it is answered, so one that waits (a hold, a run in
// progress) is offered to the next pass again. Answering is idempotent:
// the ledger records which trigger ids ran (State.Triggered), so a request
// offered twice, or a notification Alertmanager repeats, runs once.
type Request struct {
	// ID names the request: the daemon's request id, or the id a caller
	// gave. A manual run's trigger is "manual:" + ID.
	ID string
	// Agent is the agent of a manual run; empty for a notification.
	Agent string
	// By and Reason describe a manual run, as the caller said.
	By, Reason string
	// Alert is an Alertmanager notification (nil for a manual run).
	Alert *ledger.Alert
	// Revert names the run whose merged change the request reverts
	// (revert.go); Agent is then that run's agent, set by the pass. Its
	// trigger is RevertTrigger(Revert, ID).
	Revert string
	// Received is when the request arrived.
	Received time.Time
}

// RequestState is what a pass made of a request for one agent.
type RequestState string

// Request states.
const (
	// RequestStarted: a run answers the request: started by this pass, or
	// by an earlier one (the trigger id is in the ledger).
	RequestStarted RequestState = "started"
	// RequestRecorded: a resolved notification, recorded as
	// alert.resolved, never run.
	RequestRecorded RequestState = "recorded"
	// RequestPending: the agent cannot take it yet (a hold, or a run of
	// the agent in progress); offer it to a later pass.
	RequestPending RequestState = "pending"
	// RequestDropped: nothing will ever answer it (no such agent, no
	// manual trigger, no on_alert trigger matches).
	RequestDropped RequestState = "dropped"
)

// RequestOutcome is a pass's answer to a request for one agent. A
// notification matching no agent has one outcome, dropped, without an
// agent.
type RequestOutcome struct {
	Request string       `json:"request"`
	Agent   string       `json:"agent,omitempty"`
	Trigger string       `json:"trigger,omitempty"`
	RunID   string       `json:"run_id,omitempty"`
	State   RequestState `json:"state"`
	Reason  string       `json:"reason,omitempty"`
}

// Result is what a pass did and when the next one is due.
type Result struct {
	// NextDue is the earliest time at which the next pass has work of its
	// own: a schedule slot, a retry, another process's lease running out,
	// a hold clearing. Zero when only an event (a push, an alert, a manual
	// request) can start work. A daemon or controller requeues at it.
	NextDue time.Time
	// Requests are the outcomes of the requests the pass was given, one
	// per request and agent.
	Requests []RequestOutcome
}

// Errors of Targets.
var (
	ErrUnknownAgent    = errors.New("no such agent")
	ErrNoManualTrigger = errors.New("the agent has no manual trigger")
	ErrNoSpec          = errors.New("no spec has loaded yet")
)

// Targets returns the agents the request is for under the spec in force,
// for a caller that answers before the pass runs (a webhook): a manual
// run's agent, which must exist and declare `trigger { manual = true }`,
// or the agents whose on_alert triggers match a notification (none is not
// an error). The pass checks again against the spec it runs with.
func (r *Reconciler) Targets(req Request) ([]string, error) {
	r.mu.Lock()
	spec := r.spec
	r.mu.Unlock()
	if spec == nil {
		return nil, ErrNoSpec
	}
	return targets(spec, req)
}

func targets(spec *hclspec.Spec, req Request) ([]string, error) {
	if req.Revert != "" {
		return revertTargets(spec, req)
	}
	if req.Alert == nil {
		a := spec.Agent(req.Agent)
		switch {
		case a == nil:
			return nil, fmt.Errorf("%w %q", ErrUnknownAgent, req.Agent)
		case !hasManual(a):
			return nil, fmt.Errorf("%w: agent %q (add trigger { manual = true } to %s)", ErrNoManualTrigger, a.Name, a.DeclRange.Filename)
		}
		return []string{a.Name}, nil
	}
	var out []string
	for _, a := range spec.Agents {
		if alertMatches(a, req.Alert) {
			out = append(out, a.Name)
		}
	}
	return out, nil
}

func hasManual(a *hclspec.Agent) bool {
	for _, t := range a.Triggers {
		if t.Manual {
			return true
		}
	}
	return false
}

// alertMatches reports whether one of a's on_alert triggers matches one of
// the notification's alerts (its own labels, which include the group's).
func alertMatches(a *hclspec.Agent, al *ledger.Alert) bool {
	for _, t := range a.Triggers {
		if t.Alert == nil {
			continue
		}
		for _, it := range al.Alerts {
			if t.Alert.Matches(it.Labels) {
				return true
			}
		}
		if len(al.Alerts) == 0 && t.Alert.Matches(al.CommonLabels) {
			return true
		}
	}
	return false
}

// due is one trigger of an agent that is due, with what it carries.
type due struct {
	id      string
	alert   *ledger.Alert
	request *ledger.Request
	// from is the request that asked for it, if one did.
	from string
}

// alertName names a notification in summaries.
func alertName(al *ledger.Alert) string {
	if n := al.CommonLabels["alertname"]; n != "" {
		return n
	}
	if n := al.GroupLabels["alertname"]; n != "" {
		return n
	}
	var names []string
	seen := map[string]bool{}
	for _, it := range al.Alerts {
		if n := it.Labels["alertname"]; n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "alert group " + al.GroupKey
	}
	return strings.Join(names, ",")
}

// NextDue returns when the agent next has work of its own under the ledger
// state st, and what it is: its next schedule slot, the retry of a failed
// attempt, another process's lease running out, a hold clearing. Zero
// when none is known (only an event can start it).
func NextDue(st *ledger.State, a *hclspec.Agent, now time.Time) (time.Time, string) {
	var at time.Time
	var what string
	consider := func(t time.Time, w string) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at, what = t, w
		}
	}
	for _, t := range a.Triggers {
		if t.Schedule == "" {
			continue
		}
		if next, ok := t.NextSlot(now); ok {
			consider(next, "schedule "+t.Schedule)
		}
	}
	for _, rn := range st.AgentRuns(a.Name) {
		if runDone(rn) {
			continue
		}
		if rn.Failed != nil && !rn.Failed.RetryAfter.IsZero() {
			consider(rn.Failed.RetryAfter, "retry of run "+rn.ID)
		} else if !rn.LeaseUntil.IsZero() {
			consider(rn.LeaseUntil, "lease of run "+rn.ID+" held by "+rn.Claimant)
		}
	}
	if h := st.Held[a.Name]; h != nil && h.Hold != nil && !h.Hold.Until.IsZero() {
		consider(h.Hold.Until, "end of hold "+h.Hold.Kind)
	}
	return at, what
}

// nextDue is the earliest NextDue of the spec's agents.
func (r *Reconciler) nextDue(st *ledger.State) time.Time {
	var at time.Time
	if r.spec == nil || st == nil {
		return at
	}
	now := r.cfg.Now()
	for _, a := range r.spec.Agents {
		if t, _ := NextDue(st, a, now); !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return at
}

// Pass runs one reconcile pass (see Reconcile) and answers the requests
// it is given: each agent takes at most one run per pass, unfinished runs
// first, then requests in the order given, then its own triggers.
func (r *Reconciler) Pass(ctx context.Context, reqs []Request) (Result, error) {
	p := &pass{requests: reqs}
	err := r.reconcile(ctx, p)
	res := Result{Requests: p.outcomes}
	if p.state != nil {
		res.NextDue = r.nextDue(p.state)
	}
	return res, err
}

// dueOf is the trigger a run answers, with what it carries, as the ledger
// recorded it on run.started.
func dueOf(rn *ledger.Run) due {
	return due{id: rn.Trigger, alert: rn.Alert, request: rn.Request}
}

// maxInputAlerts bounds the alerts of a notification an agent is shown;
// the ledger's run.started entry has them all.
const maxInputAlerts = 20

// triggerInput is the JSON an agent gets as its trigger's input (Task.Input)
// for a run that answers an alert or a manual request; nil otherwise.
func triggerInput(rn *ledger.Run) ([]byte, error) {
	if rn == nil {
		return nil, nil
	}
	type input struct {
		Kind          string          `json:"kind"`
		Trigger       string          `json:"trigger"`
		Alert         *ledger.Alert   `json:"alert,omitempty"`
		OmittedAlerts int             `json:"omitted_alerts,omitempty"`
		Request       *ledger.Request `json:"request,omitempty"`
	}
	in := input{Trigger: rn.Trigger}
	switch {
	case rn.Alert != nil:
		al := *rn.Alert
		if n := len(al.Alerts); n > maxInputAlerts {
			al.Alerts, in.OmittedAlerts = al.Alerts[:maxInputAlerts], n-maxInputAlerts
		}
		in.Kind, in.Alert = "alert", &al
	case rn.Request != nil:
		in.Kind, in.Request = "manual", rn.Request
	default:
		return nil, nil
	}
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("trigger input of run %s: %w", rn.ID, err)
	}
	return b, nil
}

// answer records a request's outcome for an agent, once: the first answer
// given for a request and agent stands.
func (p *pass) answer(req, agent, trigger, runID string, st RequestState, reason string) {
	for _, o := range p.outcomes {
		if o.Request == req && o.Agent == agent {
			return
		}
	}
	p.outcomes = append(p.outcomes, RequestOutcome{Request: req, Agent: agent, Trigger: trigger, RunID: runID, State: st, Reason: reason})
}

// requestTrigger is the trigger id a request has for an agent.
func requestTrigger(req Request) string {
	if req.Alert != nil {
		return req.Alert.Trigger()
	}
	if req.Revert != "" {
		return RevertTrigger(req.Revert, req.ID)
	}
	return "manual:" + req.ID
}

// forAgent reports whether the request concerns agent a.
func forAgent(req Request, a *hclspec.Agent) bool {
	if req.Alert != nil {
		return alertMatches(a, req.Alert)
	}
	if req.Revert != "" {
		return req.Agent == a.Name
	}
	return req.Agent == a.Name && hasManual(a)
}

// dropUnmatched answers, before the agents run, the requests no agent of
// the spec takes: an unknown agent, one without a manual trigger, a
// notification no on_alert trigger matches. With no spec, every request
// waits.
func (r *Reconciler) dropUnmatched(p *pass) {
	r.resolveReverts(p)
	for _, req := range p.requests {
		if r.spec == nil {
			p.answer(req.ID, "", "", "", RequestPending, ErrNoSpec.Error())
			continue
		}
		names, err := targets(r.spec, req)
		switch {
		case err != nil:
			p.answer(req.ID, req.Agent, requestTrigger(req), "", RequestDropped, err.Error())
		case len(names) == 0:
			p.answer(req.ID, "", requestTrigger(req), "", RequestDropped, fmt.Sprintf("no agent's on_alert trigger matches %s", alertName(req.Alert)))
		}
	}
}

// requested returns the request agent a answers in this pass, if any, after
// answering what needs no run: a resolved notification is recorded as
// alert.resolved (once), a request whose trigger already ran is answered
// with that run. One request is taken per pass; the others, and every
// request for an agent busy with an unfinished run, wait (pendingFor).
func (r *Reconciler) requested(ctx context.Context, p *pass, a *hclspec.Agent) (*due, error) {
	var take *due
	for _, req := range p.requests {
		if !forAgent(req, a) {
			continue
		}
		trigger := requestTrigger(req)
		if req.Alert != nil && req.Alert.Status == "resolved" {
			if err := r.resolved(ctx, p, a, req, trigger); err != nil {
				return nil, err
			}
			continue
		}
		if rn := p.state.Triggered(a.Name, trigger); rn != nil {
			p.answer(req.ID, a.Name, trigger, rn.ID, RequestStarted, "")
			continue
		}
		if req.Revert != "" {
			if err := r.revertable(ctx, p, a, req); err != nil {
				p.answer(req.ID, a.Name, trigger, "", RequestDropped, err.Error())
				continue
			}
		}
		if take != nil {
			p.answer(req.ID, a.Name, trigger, "", RequestPending, "the agent takes one run per pass")
			continue
		}
		take = &due{id: trigger, alert: req.Alert, from: req.ID}
		if req.Alert == nil {
			take.request = &ledger.Request{ID: req.ID, By: req.By, Reason: req.Reason}
		}
	}
	return take, nil
}

// pendingFor answers every request for agent a that has no answer yet as
// waiting: the agent finished an unfinished run this pass, or failed.
func (p *pass) pendingFor(a *hclspec.Agent, why string) {
	for _, req := range p.requests {
		if forAgent(req, a) {
			p.answer(req.ID, a.Name, requestTrigger(req), "", RequestPending, why)
		}
	}
}

// resolved records that a notification's alerts resolved, for an agent
// whose on_alert trigger matches: alert.resolved, once per agent and
// trigger, checked against the ledger it lands on.
func (r *Reconciler) resolved(ctx context.Context, p *pass, a *hclspec.Agent, req Request, trigger string) error {
	if p.state.Resolution(a.Name, trigger) == nil {
		al := *req.Alert
		_, err := r.appendIf(ctx, p, func(st *ledger.State) error {
			if st.Resolution(a.Name, trigger) != nil {
				return errRecorded
			}
			return nil
		}, ledger.Event{
			Type: ledger.AlertResolved, Agent: a.Name, Trigger: trigger, Alert: &al, SpecDigest: a.Digest,
			SpecCommit: r.specCommit.String(), Subject: r.specCommit.String(), SubjectName: r.cfg.Branch,
			Summary: oneLine(fmt.Sprintf("alert.resolved %s: %s resolved (%d alert(s)), not run", a.Name, alertName(&al), len(al.Alerts))),
		})
		if err != nil && !errors.Is(err, errRecorded) {
			return err
		}
	}
	p.answer(req.ID, a.Name, trigger, "", RequestRecorded, "resolved: recorded, not run")
	return nil
}

// triggerNote names what an alert or manual trigger carries, for a
// summary: so that `git log agent-evidence` reads alert, then run.
func triggerNote(al *ledger.Alert, req *ledger.Request) string {
	switch {
	case al != nil:
		return fmt.Sprintf(": %s %s, %d alert(s)", alertName(al), al.Status, len(al.Alerts))
	case req != nil && req.By != "":
		return ": requested by " + req.By
	}
	return ""
}
