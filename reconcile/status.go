package reconcile

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/hashicorp/hcl/v2"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/sandbox"
)

// Condition reasons of the repository's and the agents' conditions, beside
// the generic ones of fluxcd/pkg/apis/meta (meta.SucceededReason,
// meta.FailedReason, meta.ProgressingReason,
// meta.ProgressingWithRetryReason, meta.SuspendedReason) and the stalls'
// (ReasonLedgerUntrusted, ReasonLedgerRewritten). Ready=True always has
// reason Succeeded; Ready=False names what is wrong.
const (
	// ReasonGitOperationFailed: the fetch of the repository failed (as
	// source-controller's GitRepository says it).
	ReasonGitOperationFailed = "GitOperationFailed"
	// ReasonSpecInvalid: the spec at the head of the protected branch does
	// not load; the last good one stays in force.
	ReasonSpecInvalid = "SpecInvalid"
	// ReasonRunFailed: the agent's last run failed and is not retried.
	ReasonRunFailed = "RunFailed"
	// ReasonRetryScheduled: the agent's last attempt failed and the run
	// is retried at a time.
	ReasonRetryScheduled = "RetryScheduled"
	// ReasonHeld: a due run of the agent is held back by a policy
	// (freeze, rate, open proposals, concurrency); ReasonBudgetExceeded
	// by a policy's money budget.
	ReasonHeld           = "Held"
	ReasonBudgetExceeded = "BudgetExceeded"
	// ReasonMergedWithoutApproval and ReasonBranchSquatting are the
	// reasons of an agent's PolicyViolation condition.
	ReasonMergedWithoutApproval = "MergedWithoutApproval"
	ReasonBranchSquatting       = "BranchSquatting"
)

// PolicyViolationCondition is the type of an agent's condition that says a
// merge did not satisfy its policy decision, or its branch was squatted.
// It is abnormal-true, as Stalled is.
const PolicyViolationCondition = "PolicyViolation"

// Status is the reconciler's observed state of the repository, shaped as
// the status of a Flux object so that kstatus tools read it: conditions
// Ready, Reconciling and Stalled (metav1.Condition, reasons from
// fluxcd/pkg/apis/meta), observedGeneration, and the revisions as
// <branch>@sha1:<commit>.
//
// The repository's generation is the length of the first-parent history of
// the protected branch's head: every push of a new desired state (a spec
// change, a merged proposal) adds one, whatever it changes. A pass observes
// the generation of the head it fetched; a force-push that shortens the
// history lowers it.
//
// Conditions keep their lastTransitionTime while their status stays the
// same from pass to pass (k8s.io/apimachinery meta.SetStatusCondition, with
// the reconciler's clock); reason, message and observedGeneration follow
// each pass.
type Status struct {
	// ObservedGeneration is the generation of the head the last pass
	// fetched (see Status).
	ObservedGeneration int64 `json:"observedGeneration"`
	// Conditions are Stalled, Reconciling and Ready, in that order
	// (fluxcd/pkg/runtime/conditions' order): Reconciling=True while a
	// pass runs, Stalled=True when a person must act before passes can
	// succeed (the ledger cannot be trusted or was rewritten, the spec at
	// head does not load).
	Conditions []metav1.Condition `json:"conditions"`
	// LastAppliedRevision is the spec in force, the last that loaded;
	// LastAttemptedRevision the head of the protected branch the last
	// pass fetched. They differ while the spec at head does not load.
	LastAppliedRevision   string `json:"lastAppliedRevision,omitempty"`
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`
	// LastHandledReconcileAt is the id of the last request (a manual run,
	// an alert) a pass answered, as Flux's reconcile request annotation:
	// a caller that queued it waits until it shows here.
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`
	// LastReconcileTime is when the last pass ended.
	LastReconcileTime *metav1.Time `json:"lastReconcileTime,omitempty"`
	// Diagnostics are the errors of the spec at head when it does not load.
	Diagnostics []string     `json:"diagnostics,omitempty"`
	Ledger      LedgerStatus `json:"ledger"`
	// NextRun is the earliest next run of the agents (see AgentStatus).
	NextRun *NextRun `json:"nextRun,omitempty"`
	// Sandbox is how exec agents are confined: the mode, the mechanisms
	// in force, and why any the kernel lacks is missing.
	Sandbox *SandboxStatus `json:"sandbox,omitempty"`
	// Agents is each agent's state, by name.
	Agents map[string]AgentStatus `json:"agents,omitempty"`

	// settled are the conditions as the last pass left them, from which
	// the next pass's conditions follow (beginPass shows Reconciling over
	// them, and drops Stalled while the pass runs).
	settled []metav1.Condition
	// genHead is the commit whose generation ObservedGeneration is.
	genHead plumbing.Hash
}

// LedgerStatus is where the ledger is: its last entry's sequence number and
// evidence commit.
type LedgerStatus struct {
	Seq  uint64 `json:"seq"`
	Head string `json:"head,omitempty"`
}

// SandboxStatus is the exec runner's sandbox as this process runs it.
type SandboxStatus struct {
	Mode       string            `json:"mode"`
	Mechanisms []string          `json:"mechanisms"`
	Missing    map[string]string `json:"missing,omitempty"`
	// Helper is the program that builds the sandbox: "this program" or
	// the path of a reconciler-sandbox.
	Helper string `json:"helper,omitempty"`
}

// AgentStatus is one agent's observed state, from the ledger and the spec
// in force. Its conditions: Ready (True: its last run succeeded or it has
// not run; False: held, suspended, failed, or the repository stalled;
// Unknown while a run is in progress), Reconciling=True while a run of it
// is unfinished (in progress, or a failed attempt awaiting its retry),
// Stalled=True while the repository is stalled (no agent runs then), and
// PolicyViolation=True once a merge of its proposals broke its policy
// decision or its branch was squatted.
type AgentStatus struct {
	// ObservedGeneration is the repository's (see Status).
	ObservedGeneration int64              `json:"observedGeneration"`
	Conditions         []metav1.Condition `json:"conditions"`
	LastRun            *RunStatus         `json:"lastRun,omitempty"`
	// OpenProposals are the branches of its proposals under review.
	OpenProposals []string `json:"openProposals,omitempty"`
	// Budget is what it used against the budgets of its policies.
	Budget *BudgetStatus `json:"budget,omitempty"`
	// NextRun is when it next has work of its own (NextDue); nil when
	// only an event can start it.
	NextRun *NextRun `json:"nextRun,omitempty"`
	// Held is why its due run is held back, while that is so.
	Held *HoldStatus `json:"held,omitempty"`
	// Violations counts its policy.violation entries.
	Violations int `json:"policyViolations,omitempty"`
}

// RunStatus is an agent's last run.
type RunStatus struct {
	ID      string      `json:"id"`
	Trigger string      `json:"trigger"`
	Started metav1.Time `json:"started"`
	Attempt int         `json:"attempt,omitempty"`
	// Outcome is running, retry_scheduled or failed; proposal_open,
	// merged, rejected or superseded for a run that proposed a change;
	// else run.finished's outcome (no_change, duplicate_open, ...).
	Outcome string `json:"outcome"`
	// Proposal is the branch it proposed, if any.
	Proposal string `json:"proposal,omitempty"`
	// Error is the last failed attempt's error.
	Error string `json:"error,omitempty"`
	// RetryAfter is when a failed attempt is retried.
	RetryAfter *metav1.Time `json:"retryAfter,omitempty"`
	CostUSD    float64      `json:"costUSD,omitempty"`
}

// BudgetStatus is an agent's spend (settled costs plus the reservations of
// unsettled attempts, as policy.Gate counts it) in the current UTC day and
// month, and the budget limits of the policies that apply to it.
type BudgetStatus struct {
	SpentTodayUSD     float64       `json:"spentTodayUSD"`
	SpentThisMonthUSD float64       `json:"spentThisMonthUSD"`
	Limits            []BudgetLimit `json:"limits,omitempty"`
}

// BudgetLimit is one budget rule of a policy and what counts against it
// now: for money, runs in flight and the rate, every agent the policy
// applies to (as policy.Gate counts); for open proposals, the agent's own.
type BudgetLimit struct {
	Policy string `json:"policy"`
	// Rule is the budget attribute: max_cost_usd_per_day,
	// max_cost_usd_per_month, max_runs_per_hour, max_open_proposals or
	// max_concurrent_runs.
	Rule  string  `json:"rule"`
	Limit float64 `json:"limit"`
	Used  float64 `json:"used"`
}

// NextRun is when an agent next has work of its own, and what it is (a
// schedule slot, a retry, a lease running out, a hold clearing).
type NextRun struct {
	At     metav1.Time `json:"at"`
	Reason string      `json:"reason"`
	// Agent names the agent, in Status.NextRun.
	Agent string `json:"agent,omitempty"`
}

// HoldStatus is why an agent's due run is held back: the hold's kind
// (policy.Hold* constants), the policy and rule, when it clears (none
// when an event clears it), and since when it holds.
type HoldStatus struct {
	Kind   string       `json:"kind"`
	Policy string       `json:"policy,omitempty"`
	Rule   string       `json:"rule,omitempty"`
	Until  *metav1.Time `json:"until,omitempty"`
	Reason string       `json:"reason"`
	Since  metav1.Time  `json:"since"`
}

// Ready reports whether the Ready condition is True.
func (s Status) Ready() bool { return apimeta.IsStatusConditionTrue(s.Conditions, meta.ReadyCondition) }

// Stalled reports whether the Stalled condition is True.
func (s Status) Stalled() bool {
	return apimeta.IsStatusConditionTrue(s.Conditions, meta.StalledCondition)
}

// sandboxStatus reports the sandbox of the exec runner, when it is the
// built-in one.
func (r *Reconciler) sandboxStatus() *SandboxStatus {
	ex, ok := r.cfg.Runners[hclspec.ProviderExec].(agent.Exec)
	if !ok {
		return nil
	}
	mode := ex.Sandbox.Mode
	if mode == "" {
		mode = sandbox.Strict
	}
	sup := sandbox.Probe()
	return &SandboxStatus{Mode: string(mode), Mechanisms: sup.Mechanisms, Missing: sup.Reasons, Helper: sup.Helper}
}

// Status returns a copy of the last status.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Conditions = slices.Clone(s.Conditions)
	s.settled = nil
	s.Agents = maps.Clone(s.Agents)
	for name, as := range s.Agents {
		as.Conditions = slices.Clone(as.Conditions)
		s.Agents[name] = as
	}
	return s
}

// beginPass shows the pass in progress: Reconciling=True (reason
// Progressing) over the conditions the last pass left, without Stalled, as
// fluxcd/pkg/runtime/conditions.MarkReconciling does. The pass's summarize
// starts again from the last pass's conditions, so a condition that holds
// across passes keeps its lastTransitionTime.
func (r *Reconciler) beginPass() {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	conds := slices.Clone(r.status.settled)
	apimeta.RemoveStatusCondition(&conds, meta.StalledCondition)
	msg := "reconcile pass in progress"
	if r.status.LastAttemptedRevision != "" {
		msg += "; last attempted " + r.status.LastAttemptedRevision
	}
	setCondition(&conds, metav1.Condition{Type: meta.ReconcilingCondition, Status: metav1.ConditionTrue,
		Reason: meta.ProgressingReason, Message: msg}, r.status.ObservedGeneration, now)
	r.status.Conditions = conds
}

// setCondition sets c in conds with generation gen: its lastTransitionTime
// is now when its status changes (or it is new) and kept otherwise
// (meta.SetStatusCondition). Conditions are kept in
// fluxcd/pkg/runtime/conditions' order: Stalled, Reconciling, Ready, then
// the others by type.
//
// fluxcd/pkg/runtime/conditions.Set is not used: it stamps time.Now rather
// than the reconciler's clock (Config.Now, which every ledger entry uses),
// and it moves lastTransitionTime on a change of reason or message too,
// where the Kubernetes API conventions (and kstatus readers) move it on a
// change of status only.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, gen int64, now time.Time) {
	c.ObservedGeneration = gen
	c.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
	apimeta.SetStatusCondition(conds, c)
	slices.SortStableFunc(*conds, func(a, b metav1.Condition) int {
		if wa, wb := conditionWeight(a.Type), conditionWeight(b.Type); wa != wb {
			return wa - wb
		}
		return strings.Compare(a.Type, b.Type)
	})
}

func conditionWeight(t string) int {
	switch t {
	case meta.StalledCondition:
		return 0
	case meta.ReconcilingCondition:
		return 1
	case meta.ReadyCondition:
		return 2
	}
	return 3
}

// revision names a commit of the branch as Flux does: main@sha1:<sha>.
func revision(branch string, h plumbing.Hash) string {
	if h.IsZero() {
		return ""
	}
	return branch + "@sha1:" + h.String()
}

// generation returns the length of the first-parent history of head,
// walking back only to prevHead when it is on that history (prevGen being
// its generation).
func (r *Reconciler) generation(head, prevHead plumbing.Hash, prevGen int64) (int64, error) {
	if head == prevHead && prevGen > 0 {
		return prevGen, nil
	}
	var n int64
	for h := head; ; {
		if h == prevHead && prevGen > 0 {
			return n + prevGen, nil
		}
		c, err := r.repo.Commit(h)
		if err != nil {
			return 0, fmt.Errorf("generation of %s: %w", head, err)
		}
		n++
		if len(c.ParentHashes) == 0 {
			return n, nil
		}
		h = c.ParentHashes[0]
	}
}

// summarize records the status of the pass p that ended with err. It is
// the pass's deferred step: it always runs.
func (r *Reconciler) summarize(p *pass, err error) {
	now := r.cfg.Now()
	r.mu.Lock()
	prev := r.status
	r.mu.Unlock()

	branch := r.cfg.Branch
	s := Status{
		ObservedGeneration:     prev.ObservedGeneration,
		genHead:                prev.genHead,
		LastAppliedRevision:    revision(branch, r.specCommit),
		LastAttemptedRevision:  prev.LastAttemptedRevision,
		LastHandledReconcileAt: prev.LastHandledReconcileAt,
		LastReconcileTime:      &metav1.Time{Time: now.UTC().Truncate(time.Second)},
		Sandbox:                r.sandboxStatus(),
	}
	if !p.head.IsZero() {
		s.LastAttemptedRevision = revision(branch, p.head)
		if gen, gerr := r.generation(p.head, prev.genHead, prev.ObservedGeneration); gerr != nil {
			r.log.Warn("status: generation of the protected branch", "err", gerr)
		} else {
			s.ObservedGeneration, s.genHead = gen, p.head
		}
	}
	gen := s.ObservedGeneration
	if id := handledRequest(p); id != "" {
		s.LastHandledReconcileAt = id
	}

	st := p.state
	if st == nil {
		st = r.ledger.State()
	}
	if st != nil {
		s.Ledger.Seq = st.Seq
		if !st.Head.IsZero() {
			s.Ledger.Head = st.Head.String()
		}
	}

	conds := slices.Clone(prev.settled)
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		setCondition(&conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}, gen, now)
	}
	var stalled *StalledError
	switch {
	case errors.As(err, &stalled):
		msg := oneLine(stalled.Error())
		set(meta.ReadyCondition, metav1.ConditionFalse, stalled.Reason, msg)
		set(meta.StalledCondition, metav1.ConditionTrue, stalled.Reason, msg)
	case p.diags.HasErrors():
		for _, d := range p.diags {
			if d.Severity == hcl.DiagError {
				s.Diagnostics = append(s.Diagnostics, formatDiag(d)+": "+d.Detail)
			}
		}
		inForce := "no spec has loaded yet, so no agent runs"
		if s.LastAppliedRevision != "" {
			inForce = "running on the last good spec, " + s.LastAppliedRevision
		}
		first := formatDiag(firstError(p.diags))
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonSpecInvalid,
			fmt.Sprintf("the spec at %s does not load (%d error(s), first: %s); %s", s.LastAttemptedRevision, countErrors(p.diags), first, inForce))
		set(meta.StalledCondition, metav1.ConditionTrue, ReasonSpecInvalid,
			"fix the spec and push: "+first)
	case err != nil && p.head.IsZero():
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonGitOperationFailed, oneLine(err.Error()))
		apimeta.RemoveStatusCondition(&conds, meta.StalledCondition)
	case err != nil:
		set(meta.ReadyCondition, metav1.ConditionFalse, meta.FailedReason, oneLine(err.Error()))
		apimeta.RemoveStatusCondition(&conds, meta.StalledCondition)
	default:
		set(meta.ReadyCondition, metav1.ConditionTrue, meta.SucceededReason, "applied revision "+s.LastAppliedRevision)
		apimeta.RemoveStatusCondition(&conds, meta.StalledCondition)
	}
	apimeta.RemoveStatusCondition(&conds, meta.ReconcilingCondition)
	s.Conditions, s.settled = conds, slices.Clone(conds)

	if r.spec != nil && st != nil {
		s.Agents = make(map[string]AgentStatus, len(r.spec.Agents))
		for _, a := range r.spec.Agents {
			as := agentStatus(prev.Agents[a.Name].Conditions, st, r.spec, a, now, gen, stalled)
			s.Agents[a.Name] = as
			if n := as.NextRun; n != nil && (s.NextRun == nil || n.At.Before(&s.NextRun.At)) {
				s.NextRun = &NextRun{At: n.At, Reason: n.Reason, Agent: a.Name}
			}
		}
	}
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

// handledRequest is the id of the last request the pass answered (any
// outcome but pending), or "".
func handledRequest(p *pass) string {
	handled := map[string]bool{}
	for _, o := range p.outcomes {
		if o.State != RequestPending {
			handled[o.Request] = true
		}
	}
	id := ""
	for _, rq := range p.requests {
		if handled[rq.ID] {
			id = rq.ID
		}
	}
	return id
}

// agentStatus derives an agent's status from the ledger's state st under
// the spec in force, its conditions following prev. stalled is the
// repository's stall, if any.
func agentStatus(prev []metav1.Condition, st *ledger.State, spec *hclspec.Spec, a *hclspec.Agent, now time.Time, gen int64, stalled *StalledError) AgentStatus {
	as := AgentStatus{ObservedGeneration: gen}
	conds := slices.Clone(prev)
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		setCondition(&conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}, gen, now)
	}

	runs := st.AgentRuns(a.Name)
	for _, rn := range st.OpenRuns(a.Name) {
		as.OpenProposals = append(as.OpenProposals, rn.Opened.Proposal.Branch)
	}
	squatted := 0
	for _, rn := range runs {
		if rn.Violation {
			as.Violations++
			if rn.Opened == nil {
				squatted++
			}
		}
	}
	var last *ledger.Run
	if len(runs) > 0 {
		last = runs[len(runs)-1]
		as.LastRun = runStatus(last)
	}
	as.Budget = budgetStatus(st, spec, a, now)
	if at, what := NextDue(st, a, now); !at.IsZero() {
		as.NextRun = &NextRun{At: metav1.NewTime(at.UTC()), Reason: what}
	}
	as.Held = holdStatus(st, spec, a, now)

	// Ready, from the most pressing fact down.
	switch {
	case stalled != nil:
		set(meta.ReadyCondition, metav1.ConditionFalse, stalled.Reason, "no agent runs while the repository is stalled: "+oneLine(stalled.Error()))
	case as.Held != nil && as.Held.Kind == policy.HoldSuspended:
		set(meta.ReadyCondition, metav1.ConditionFalse, meta.SuspendedReason, as.Held.Reason)
	case as.Held != nil && (as.Held.Kind == policy.HoldBudgetDay || as.Held.Kind == policy.HoldBudgetMonth):
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonBudgetExceeded, as.Held.Reason)
	case as.Held != nil:
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonHeld, as.Held.Reason)
	case last == nil:
		set(meta.ReadyCondition, metav1.ConditionTrue, meta.SucceededReason, "no run yet")
	case last.Failed != nil && !last.Failed.RetryAfter.IsZero():
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonRetryScheduled,
			fmt.Sprintf("run %s attempt %d failed, retried after %s: %s", last.ID, last.Failed.Attempt, last.Failed.RetryAfter.UTC().Format(time.RFC3339), oneLine(last.Failed.Error)))
	case last.Failed != nil:
		set(meta.ReadyCondition, metav1.ConditionFalse, ReasonRunFailed, fmt.Sprintf("run %s failed: %s", last.ID, oneLine(last.Failed.Error)))
	case !last.Settled:
		set(meta.ReadyCondition, metav1.ConditionUnknown, meta.ProgressingReason, "run "+last.ID+" is in progress")
	case len(as.OpenProposals) > 0:
		set(meta.ReadyCondition, metav1.ConditionTrue, meta.SucceededReason, "waiting for review of "+strings.Join(as.OpenProposals, ", "))
	default:
		set(meta.ReadyCondition, metav1.ConditionTrue, meta.SucceededReason, "last run "+last.ID+": "+as.LastRun.Outcome)
	}

	// Reconciling, while a run is unfinished.
	switch unfinished := unfinishedRun(runs); {
	case stalled != nil || unfinished == nil:
		apimeta.RemoveStatusCondition(&conds, meta.ReconcilingCondition)
	case unfinished.Failed != nil:
		set(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingWithRetryReason,
			fmt.Sprintf("run %s is retried after %s", unfinished.ID, unfinished.Failed.RetryAfter.UTC().Format(time.RFC3339)))
	default:
		msg := "run " + unfinished.ID + " is in progress"
		if unfinished.Claimant != "" {
			msg += ", claimed by " + unfinished.Claimant
		}
		set(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingReason, msg)
	}

	if stalled != nil {
		set(meta.StalledCondition, metav1.ConditionTrue, stalled.Reason, oneLine(stalled.Error()))
	} else {
		apimeta.RemoveStatusCondition(&conds, meta.StalledCondition)
	}

	// One PolicyViolation condition (a condition type appears once).
	switch merged := as.Violations - squatted; {
	case merged > 0:
		msg := fmt.Sprintf("%d merge(s) did not satisfy their policy decision", merged)
		if squatted > 0 {
			msg += fmt.Sprintf(", and %d run(s) found their proposal branch taken by a commit the reconciler did not make", squatted)
		}
		set(PolicyViolationCondition, metav1.ConditionTrue, ReasonMergedWithoutApproval, msg+"; see policy.violation entries")
	case squatted > 0:
		set(PolicyViolationCondition, metav1.ConditionTrue, ReasonBranchSquatting,
			fmt.Sprintf("%d run(s) found their proposal branch taken by a commit the reconciler did not make; see policy.violation entries", squatted))
	default:
		apimeta.RemoveStatusCondition(&conds, PolicyViolationCondition)
	}
	as.Conditions = conds
	return as
}

// unfinishedRun returns the agent's last run that is neither done nor
// finally failed: in progress, or awaiting the retry of a failed attempt.
func unfinishedRun(runs []*ledger.Run) *ledger.Run {
	for i := len(runs) - 1; i >= 0; i-- {
		rn := runs[i]
		if runDone(rn) {
			continue
		}
		if rn.Failed != nil && rn.Failed.RetryAfter.IsZero() {
			continue
		}
		return rn
	}
	return nil
}

// runStatus summarizes a run.
func runStatus(rn *ledger.Run) *RunStatus {
	rs := &RunStatus{ID: rn.ID, Trigger: rn.Trigger, Started: metav1.NewTime(rn.Started.UTC()), Attempt: rn.Attempt, CostUSD: rn.CostUSD}
	if rn.Opened != nil && rn.Opened.Proposal != nil {
		rs.Proposal = rn.Opened.Proposal.Branch
	}
	switch {
	case rn.Closed != nil:
		rs.Outcome = strings.TrimPrefix(rn.Closed.Type, "proposal.")
	case rn.Opened != nil:
		rs.Outcome = "proposal_open"
	case rn.Failed != nil && !rn.Failed.RetryAfter.IsZero():
		rs.Outcome = "retry_scheduled"
		t := metav1.NewTime(rn.Failed.RetryAfter.UTC())
		rs.RetryAfter = &t
	case rn.Failed != nil:
		rs.Outcome = "failed"
	case rn.Finished != nil && rn.Finished.Outcome != "":
		rs.Outcome = rn.Finished.Outcome
	case rn.Finished != nil:
		rs.Outcome = "finished"
	default:
		rs.Outcome = "running"
	}
	if rn.Failed != nil {
		rs.Error = oneLine(rn.Failed.Error)
	}
	return rs
}

// budgetStatus is the agent's spend and its policies' budget limits, with
// what counts against each as policy.Gate counts it.
func budgetStatus(st *ledger.State, spec *hclspec.Spec, a *hclspec.Agent, now time.Time) *BudgetStatus {
	// The windows of policy.Gate.
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	bs := &BudgetStatus{SpentTodayUSD: st.Spent(a.Name, day), SpentThisMonthUSD: st.Spent(a.Name, month)}
	for _, p := range spec.PoliciesFor(a.Name) {
		b := p.Budget
		if b == nil {
			continue
		}
		var agents []string
		for _, other := range spec.Agents {
			if p.AppliesToAgent(other.Name) {
				agents = append(agents, other.Name)
			}
		}
		sum := func(f func(string) float64) float64 {
			t := 0.0
			for _, n := range agents {
				t += f(n)
			}
			return t
		}
		add := func(rule string, limit, used float64) {
			if limit > 0 {
				bs.Limits = append(bs.Limits, BudgetLimit{Policy: p.Name, Rule: rule, Limit: limit, Used: used})
			}
		}
		add("max_cost_usd_per_day", b.MaxCostUSDPerDay, sum(func(n string) float64 { return st.Spent(n, day) }))
		add("max_cost_usd_per_month", b.MaxCostUSDPerMonth, sum(func(n string) float64 { return st.Spent(n, month) }))
		add("max_runs_per_hour", float64(b.MaxRunsPerHour), float64(len(st.RunStarts(a.Name, now.Add(-time.Hour)))))
		add("max_open_proposals", float64(b.MaxOpenProposals), float64(st.OpenProposals(a.Name)))
		add("max_concurrent_runs", float64(b.MaxConcurrentRuns), sum(func(n string) float64 { return float64(st.Running(n)) }))
	}
	return bs
}

// holdStatus is the hold on the agent's due run: the ledger recorded one
// since its last run started, and the policy gate still holds it now (a
// freeze that ended, or a budget window that turned, no longer does). It
// reports the hold in force now, since the recorded one.
func holdStatus(st *ledger.State, spec *hclspec.Spec, a *hclspec.Agent, now time.Time) *HoldStatus {
	rec := st.Held[a.Name]
	if rec == nil || rec.Hold == nil {
		return nil
	}
	h := policy.Gate(spec, a, now, st).Hold
	if h == nil {
		return nil
	}
	hs := &HoldStatus{Kind: h.Kind, Policy: h.Policy, Rule: h.Rule, Reason: h.Reason, Since: metav1.NewTime(rec.Time.UTC())}
	if !h.Until.IsZero() {
		t := metav1.NewTime(h.Until.UTC())
		hs.Until = &t
	}
	return hs
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
