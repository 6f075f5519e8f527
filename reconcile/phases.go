package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/secrets"
)

// Phase is a step of a run. A pass drives each run through them in order,
// and every step's outcome is in the ledger, so a run resumes at the first
// step it has no entry for, in this process or another. What becomes of a
// proposal (moved, approved, merged, closed) is observed by every pass for
// every open proposal, before runs (see observe).
type Phase int

// The phases of a run.
const (
	// PhaseStart claims the run: run.started, appended only when the run
	// has none, checked against the exact ledger it lands on.
	PhaseStart Phase = iota + 1
	// PhaseRun runs the agent in a workspace: run.finished or run.failed.
	PhaseRun
	// PhaseDecide decides on the run's change: policy.decision.
	PhaseDecide
	// PhasePropose pushes the proposal commit and opens it on the forge:
	// proposal.opened (and proposal.superseded for the agent's older
	// proposals).
	PhasePropose
)

func (ph Phase) String() string {
	switch ph {
	case PhaseStart:
		return "start"
	case PhaseRun:
		return "run"
	case PhaseDecide:
		return "decide"
	case PhasePropose:
		return "propose"
	}
	return fmt.Sprintf("phase(%d)", int(ph))
}

// Advance runs one pass's preparation (fetch, ledger trust, keys, spec,
// proposals observed) and then drives the named agent's current run, or
// its due one, up to and including phase until: tests call the phases one
// by one, and a later Advance or Reconcile resumes where it stopped.
func (r *Reconciler) Advance(ctx context.Context, agentName string, until Phase) error {
	p := &pass{until: until}
	for _, s := range []step{r.fetch, r.trustLedger, r.checkKeys, r.loadSpec, r.specForge, r.observe} {
		if err := s(ctx, p); err != nil {
			return err
		}
	}
	if r.spec == nil {
		return errors.New("no spec has loaded")
	}
	a := r.spec.Agent(agentName)
	if a == nil {
		return fmt.Errorf("agent %q is not in the spec at %s", agentName, r.specCommit)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.reconcileAgent(ctx, p, a)
}

// runOf is one run as the phases drive it.
type runOf struct {
	a          *hclspec.Agent
	id         string
	trigger    string
	alert      *ledger.Alert
	request    *ledger.Request
	specCommit plumbing.Hash
	// base is the event every entry of the run starts from.
	base ledger.Event
	// rn is the run as the ledger has it; nil before PhaseStart.
	rn *ledger.Run
	// res and changes are what the agent did, once PhaseRun ran in this
	// process (or replayed its transcript).
	res     agent.Result
	changes []gitstore.FileChange
	ran     bool
}

func (r *Reconciler) newRunOf(a *hclspec.Agent, runID string, d due, prior *ledger.Run) *runOf {
	rc := &runOf{a: a, id: runID, trigger: d.id, alert: d.alert, request: d.request, specCommit: r.specCommit, rn: prior}
	if prior != nil && prior.SpecCommit != "" {
		// Resume on the commit the run started with.
		rc.specCommit = plumbing.NewHash(prior.SpecCommit)
	}
	rc.base = ledger.Event{Agent: a.Name, RunID: runID, Trigger: d.id, SpecDigest: a.Digest,
		Subject: rc.specCommit.String(), SubjectName: r.cfg.Branch, SpecCommit: rc.specCommit.String()}
	rc.base.Reverts = revertedBy(d.id) // a revert run's entries link the run it reverts
	return rc
}

// execute drives one run from wherever the ledger says it is through the
// phases, stopping after p.until when set. prior is nil for a new run.
func (r *Reconciler) execute(ctx context.Context, p *pass, a *hclspec.Agent, runID string, d due, prior *ledger.Run, adm policy.Admission) (err error) {
	ctx, endSpan := r.startRun(ctx, p, a, runID, d.id) // trace.go
	defer func() { endSpan(err) }()
	rc := r.newRunOf(a, runID, d, prior)
	if rc.rn == nil {
		claimed, err := r.start(ctx, p, rc, adm)
		if err != nil || !claimed || p.until == PhaseStart {
			return err
		}
	}
	more, err := r.runPhase(ctx, p, rc)
	if err != nil || !more || p.until == PhaseRun {
		return err
	}
	if more, err = r.decide(ctx, p, rc); err != nil || !more || p.until == PhaseDecide {
		return err
	}
	return r.propose(ctx, p, rc)
}

// start claims the run (PhaseStart). False when another reconciler claimed
// it first or a gate closed meanwhile (then recorded as held).
func (r *Reconciler) start(ctx context.Context, p *pass, rc *runOf, adm policy.Admission) (bool, error) {
	a := rc.a
	ev := rc.base
	ev.Type = ledger.RunStarted
	ev.Alert, ev.Request = rc.alert, rc.request
	ev.ReservedUSD = adm.ReserveUSD
	ev.Claimant, ev.LeaseUntil = r.claimant, r.lease(a)
	ev.Summary = oneLine(fmt.Sprintf("run.started %s %s (trigger %s%s)", a.Name, rc.id, rc.trigger, triggerNote(rc.alert, rc.request)))
	// The claim and the gate are checked again against the ledger exactly
	// as the reservation is appended to it: a run another reconciler
	// claimed meanwhile is theirs, and their runs count.
	var held *policy.Hold
	stored, err := r.appendIf(ctx, p, func(st *ledger.State) error {
		if st.Run(rc.id) != nil {
			return errClaimed
		}
		if h := policy.Gate(r.spec, a, r.cfg.Now(), st).Hold; h != nil {
			held = h
			return errHeld
		}
		return nil
	}, ev)
	switch {
	case errors.Is(err, errHeld):
		return false, r.hold(ctx, p, a, rc.trigger, held)
	case errors.Is(err, errClaimed), err == nil && len(stored) == 0:
		r.log.Info("run claimed by another reconciler", "agent", a.Name, "run", rc.id)
		return false, nil
	case err != nil:
		return false, err
	}
	rc.rn = p.state.Run(rc.id)
	return true, nil
}

// runPhase runs the agent (PhaseRun) and records run.finished or
// run.failed. A run already finished is not run again for money: a model
// run's recorded transcript is replayed through the same tool loop, an
// exec run (deterministic) is run again, to rebuild its change for the
// later phases. More reports whether a later phase has work.
func (r *Reconciler) runPhase(ctx context.Context, p *pass, rc *runOf) (more bool, err error) {
	a := rc.a
	res, changes, runErr := r.runInWorkspace(ctx, p, a, rc.id, rc.trigger, rc.specCommit, rc.rn)
	if runErr != nil {
		ev := rc.base
		ev.Type = ledger.RunFailed
		ev.Error = runErr.Error()
		ev.Transcript = res.Transcript
		ev.Sandbox = res.Sandbox
		ev.Model, ev.CostUSD = res.Model, res.Cost(a) // each model tier's attempt at its price
		ev.ModelUsage = modelUsage(a, res)
		if res.Usage != (agent.Usage{}) {
			ev.Usage = &ledger.Usage{InputTokens: res.Usage.InputTokens, OutputTokens: res.Usage.OutputTokens}
		}
		if rc.rn.Finished != nil {
			// Rebuilding a finished run's change failed: the run stands
			// as recorded, and the next pass tries again.
			return false, fmt.Errorf("rebuild the change of finished run %s: %w", rc.id, runErr)
		}
		r.failedAttempt(&ev, rc, runErr)
		_, err := r.appendIf(ctx, p, r.holds(rc.id, func(cur *ledger.Run) bool { return cur.Failed == nil && cur.Finished == nil }), ev)
		if errors.Is(err, errRecorded) {
			// Another reconciler took the run over meanwhile: its outcome
			// is theirs to record.
			p.state = r.ledger.State()
			err = nil
		}
		return false, errors.Join(&scrubbedError{text: fmt.Sprintf("run %s (attempt %d): %s", rc.id, ev.Attempt, ev.Error), err: runErr}, err)
	}
	rc.res, rc.changes, rc.ran = res, changes, true
	if rc.rn.Finished != nil {
		return rc.rn.Finished.Outcome == OutcomeChanged, nil
	}
	ev := rc.base
	ev.Type = ledger.RunFinished
	ev.Sandbox = res.Sandbox
	ev.Model = res.Model
	ev.CostUSD = res.Cost(a) // each model tier's attempt at its price
	ev.ModelUsage = modelUsage(a, res)
	ev.Transcript = res.Transcript
	ev.WorkUnit = workUnitOf(a, rc.base.Reverts)
	if res.Usage != (agent.Usage{}) {
		ev.Usage = &ledger.Usage{InputTokens: res.Usage.InputTokens, OutputTokens: res.Usage.OutputTokens}
	}
	ev.Outcome, ev.Summary = r.classify(p, a, rc.id, changes)
	if len(changes) > 0 {
		ev.Change = changeSummary(changes)
	}
	_, err = r.appendIf(ctx, p, r.holds(rc.id, func(cur *ledger.Run) bool { return cur.Failed == nil && cur.Finished == nil }), ev)
	if errors.Is(err, errRecorded) {
		p.state = r.ledger.State()
		r.log.Info("run taken over by another reconciler", "agent", a.Name, "run", rc.id)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rc.rn = p.state.Run(rc.id)
	if ev.Outcome == OutcomeDuplicateOpen {
		return false, r.redecide(ctx, p, rc.a, rc.base, rc.trigger, changes)
	}
	return ev.Outcome == OutcomeChanged, nil
}

// decide records the policies' decision on the run's change
// (PhaseDecide). More is false when the change is denied.
func (r *Reconciler) decide(ctx context.Context, p *pass, rc *runOf) (more bool, err error) {
	if rc.rn.Decision == nil {
		evals, err := r.changeEvals(ctx, p, rc) // the evals of agents the change redefines (evals.go)
		if err != nil {
			return false, fmt.Errorf("run %s: %w", rc.id, err)
		}
		d := policy.Decide(r.spec, hclspec.ConditionInput{
			Agent:  rc.a,
			Run:    hclspec.RunInfo{ID: rc.id, Trigger: rc.trigger, Model: rc.a.Model, SpecCommit: rc.specCommit.String()},
			Change: conditionChanges(rc.changes),
			Evals:  evalCounts(evals),
		})
		if d, err = r.denySecrets(d, rc.changes); err != nil {
			return false, fmt.Errorf("run %s: %w", rc.id, err)
		}
		rv, err := r.reviewRun(ctx, p, rc, d) // second-model review (review.go)
		if err != nil {
			return false, fmt.Errorf("run %s: %w", rc.id, err)
		}
		d = rv.Decision
		raw, err := json.Marshal(rv)
		if err != nil {
			return false, fmt.Errorf("encode decision: %w", err)
		}
		ev := rc.base
		ev.Type = ledger.PolicyDecision
		ev.Decision = raw
		spendReviews(&ev, rv.Reviews)
		ev.Summary = oneLine(fmt.Sprintf("policy.decision %s %s: %s", rc.a.Name, rc.id, d.Summary))
		if ev.Evals = evals; evals != nil {
			ev.CostUSD += evals.SpentUSD
		}
		_, err = r.appendIf(ctx, p, r.holds(rc.id, func(cur *ledger.Run) bool { return cur.Decision == nil }), ev)
		if errors.Is(err, errRecorded) {
			p.state = r.ledger.State()
			r.log.Info("run taken over by another reconciler", "agent", rc.a.Name, "run", rc.id)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		rc.rn = p.state.Run(rc.id)
	}
	d, err := parsedDecision(rc.rn)
	if err != nil {
		return false, err
	}
	return d.Outcome != policy.Deny, nil
}

// propose pushes the run's deterministic proposal commit to its branch,
// opens it on the forge and records proposal.opened (PhasePropose). A
// branch already on the run's name is the run's own exactly when its head
// is the commit made here (a previous process pushed it and stopped, or
// another reconciler made the same commit); anything else squats on the
// run's name and is never adopted or decided on.
func (r *Reconciler) propose(ctx context.Context, p *pass, rc *runOf) error {
	d, err := parsedDecision(rc.rn)
	if err != nil {
		return err
	}
	branch := ProposalBranch(rc.a.Name, rc.id)
	head, err := r.commitProposal(rc.a, rc.id, rc.specCommit, rc.res, rc.changes, d, rc.rn.Decision.Seq, rc.rn.Finished.Time)
	if err != nil {
		return err
	}
	err = r.pushBranch(ctx, p, gitstore.RefUpdate{Branch: branch, Old: plumbing.ZeroHash, New: head})
	if errors.Is(err, gitstore.ErrStale) {
		if err := r.repo.Fetch(ctx); err != nil {
			return err
		}
		cur, err := r.repo.Branch(branch)
		if err != nil {
			return fmt.Errorf("push %s: %w", branch, err)
		}
		if cur != head {
			return r.squatted(ctx, p, rc.a, rc.base, branch, cur, head)
		}
	} else if err != nil {
		// The push did not reach the remote: the run failed, and its
		// next attempt (by replay, asking the model nothing) pushes it.
		return r.lostPush(ctx, p, rc, transientPush(fmt.Errorf("push %s: %w", branch, err)))
	}
	fp := forge.Proposal{Agent: rc.a.Name, RunID: rc.id, Branch: branch, Head: head, Decision: d,
		Summary: rc.res.Summary, Body: rc.res.Body, Risk: rc.res.Risk, LedgerEntry: rc.rn.Decision.Seq}
	if err := r.forge.Open(ctx, fp); err != nil {
		return fmt.Errorf("open %s: %w", branch, err)
	}
	return r.recordOpened(ctx, p, rc.a, rc.base, rc.rn, head)
}

// lostPush records run.failed for a run whose proposal push did not reach
// the remote, retried when its limits allow, and returns the error.
func (r *Reconciler) lostPush(ctx context.Context, p *pass, rc *runOf, perr error) error {
	ev := rc.base
	ev.Type = ledger.RunFailed
	ev.Error = perr.Error()
	r.failedAttempt(&ev, rc, perr)
	if _, err := r.appendIf(ctx, p, r.holds(rc.id, func(*ledger.Run) bool { return true }), ev); err != nil && !errors.Is(err, errRecorded) {
		return errors.Join(perr, err)
	}
	return &scrubbedError{text: fmt.Sprintf("run %s (attempt %d): %s", rc.id, ev.Attempt, ev.Error), err: perr}
}

// holds returns an append check: this reconciler still holds the claim on
// the run, and step (what the run must look like for the entry to be the
// next one) holds, on the exact ledger the entry lands on; errRecorded
// otherwise (another reconciler took the run over, or recorded the step).
func (r *Reconciler) holds(runID string, step func(*ledger.Run) bool) func(*ledger.State) error {
	return func(st *ledger.State) error {
		cur := st.Run(runID)
		if cur == nil || cur.Claimant != r.claimant || !step(cur) {
			return errRecorded
		}
		return nil
	}
}

// failedAttempt completes the run.failed of rc's current attempt: its
// number, its summary and, when the failure can pass on retry and the
// agent's retries allow another attempt, from when it is retried.
func (r *Reconciler) failedAttempt(ev *ledger.Event, rc *runOf, err error) {
	// Neither a secret nor a host path reaches a signed entry.
	text := r.scrub(err.Error())
	ev.Error = text
	ev.Attempt = max(rc.rn.Attempt, 1)
	// The work the run was for, so that ROI counts a failure against its
	// kind.
	ev.WorkUnit = workUnitOf(rc.a, rc.base.Reverts)
	ev.Summary = oneLine(fmt.Sprintf("run.failed %s %s: %s", rc.a.Name, rc.id, text))
	if t, ok := retryAfter(rc.a, ev.Attempt, err, r.cfg.Now()); ok {
		ev.RetryAfter = t
		ev.Summary = oneLine(fmt.Sprintf("run.failed %s %s (attempt %d, retry after %s): %s", rc.a.Name, rc.id, ev.Attempt, t.Format(time.RFC3339), text))
	}
}

// denySecrets scans a change for secrets (gitleaks' default rules, and the
// values of the providers' API keys) and denies the decision with
// builtin/secret-detected when it finds any, naming file, line and rule,
// never the value. A scan that cannot run fails closed.
func (r *Reconciler) denySecrets(d policy.Decision, changes []gitstore.FileChange) (policy.Decision, error) {
	found, err := secrets.Scan(changes, r.knownSecrets())
	if err != nil {
		return d, fmt.Errorf("scan the change for secrets: %w", err)
	}
	sf := make([]policy.SecretFinding, 0, len(found))
	for _, f := range found {
		sf = append(sf, policy.SecretFinding{Path: f.Path, Line: f.Line, Rule: f.Rule})
	}
	return policy.DenySecrets(d, sf), nil
}

// knownSecrets are the secret values the reconciler holds: its providers'
// API keys.
func (r *Reconciler) knownSecrets() []string {
	if r.spec == nil {
		return nil
	}
	return agent.ProviderSecrets(r.cfg.LookupEnv, r.spec.Providers...)
}

// scrub redacts the reconciler's secrets and known token shapes from s and
// replaces host paths (the work and temporary directories, the home) with
// placeholders: for text that goes into the ledger.
func (r *Reconciler) scrub(s string) string {
	return agent.ScrubPaths(agent.Redact(s, r.knownSecrets()...), r.cfg.WorkDir)
}

// scrubbedError is an error whose text was scrubbed (see scrub) for the
// logs and the operator, keeping the error it wraps for errors.Is and As.
type scrubbedError struct {
	text string
	err  error
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }

// workUnit is the value the agent's task declares, as entries record it.
// modelUsage splits a tiered run's usage by model, each at its price; nil
// when one model (or none) was asked, whose usage is the run's.
func modelUsage(a *hclspec.Agent, res agent.Result) []ledger.ModelUsage {
	var out []ledger.ModelUsage
	idx := map[string]int{}
	for _, at := range res.Attempts {
		i, ok := idx[at.Model]
		if !ok {
			i = len(out)
			idx[at.Model] = i
			out = append(out, ledger.ModelUsage{Model: at.Model})
		}
		out[i].InputTokens += at.Usage.InputTokens
		out[i].OutputTokens += at.Usage.OutputTokens
		out[i].CostUSD += a.ModelCost(at.Model, at.Usage.InputTokens, at.Usage.OutputTokens)
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// workUnitOf is the work unit a run of a is for: none for a revert run
// (reverts non-empty), whose merge undoes work rather than adds it, so ROI
// never counts a revert as value.
func workUnitOf(a *hclspec.Agent, reverts string) *ledger.WorkUnit {
	if reverts != "" {
		return nil
	}
	return workUnit(a)
}

func workUnit(a *hclspec.Agent) *ledger.WorkUnit {
	return &ledger.WorkUnit{Kind: a.WorkUnit.Kind, HumanMinutes: a.WorkUnit.HumanMinutes}
}
