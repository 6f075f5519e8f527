package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// errHeld aborts a run.started append whose gate closed meanwhile.
var errHeld = errors.New("run held by a policy gate")

// errRecorded aborts an append whose event another writer recorded first.
var errRecorded = errors.New("already recorded")

// errClaimed aborts a claim (run.started, run.abandoned) that another
// reconciler made first.
var errClaimed = errors.New("run claimed by another reconciler")

// leaseMargin is added to an agent's timeout to make its claim's lease:
// time for the outcome to be recorded after the run ends.
const leaseMargin = 2 * time.Minute

// lease returns until when a claim made now on a run of a holds.
func (r *Reconciler) lease(a *hclspec.Agent) time.Time {
	return r.cfg.Now().Add(a.Limits.Timeout + leaseMargin).UTC().Truncate(time.Second)
}

// takeOver claims a run whose claimant's lease expired without an outcome
// (run.abandoned), checked against the exact ledger it lands on: false
// when another reconciler settled or took it over first.
func (r *Reconciler) takeOver(ctx context.Context, p *pass, a *hclspec.Agent, rn *ledger.Run) (bool, error) {
	claimant, lease := rn.Claimant, rn.LeaseUntil
	was := "the claim"
	if claimant != "" {
		was = "the claim of " + claimant
	}
	ev := ledger.Event{
		Type: ledger.RunAbandoned, Agent: a.Name, RunID: rn.ID, Trigger: rn.Trigger, SpecDigest: rn.SpecDigest,
		SpecCommit: rn.SpecCommit, Subject: rn.SpecCommit, SubjectName: r.cfg.Branch,
		Claimant: r.claimant, LeaseUntil: r.lease(a),
		Error:   fmt.Sprintf("%s expired at %s without an outcome", was, lease.UTC().Format(time.RFC3339)),
		Summary: oneLine(fmt.Sprintf("run.abandoned %s %s: %s expired at %s; taken over", a.Name, rn.ID, was, lease.UTC().Format(time.RFC3339))),
	}
	_, err := r.appendIf(ctx, p, func(st *ledger.State) error {
		cur := st.Run(rn.ID)
		if cur == nil || runDone(cur) || cur.Claimant != claimant || !cur.LeaseUntil.Equal(lease) {
			return errClaimed
		}
		return nil
	}, ev)
	if errors.Is(err, errClaimed) {
		return false, nil
	}
	return err == nil, err
}

// TriggerSpec is the trigger id of on_spec_change triggers.
const TriggerSpec = "spec"

// runAgents resumes unfinished runs and starts due ones, one run per agent
// per pass, up to Config.Concurrency agents at once. An agent's failure is
// recorded and does not stop the others. Everything but the agents' own
// work (the ledger, the pass's state, proposals) is done under the pass's
// lock, so each run's entries keep their order; agents run in parallel
// (see runInWorkspace).
func (r *Reconciler) runAgents(ctx context.Context, p *pass) error {
	r.dropUnmatched(p)
	if r.spec == nil {
		return nil
	}
	var (
		errs []error
		wg   sync.WaitGroup
	)
	if r.concurrency() == 1 {
		// One agent after another: each run's entries are contiguous.
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, a := range r.spec.Agents {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.reconcileAgent(ctx, p, a); err != nil {
				r.log.Error("agent", "agent", a.Name, "err", err)
				errs = append(errs, fmt.Errorf("agent %s: %w", a.Name, err))
			}
		}
		return errors.Join(errs...)
	}
	p.work = make(chan struct{}, r.concurrency())
	p.mu.Lock()
	p.batch = newBatcher(&p.mu)
	// Every agent's goroutine joins before any runs, so that the first
	// batch (the claims) waits for them all.
	p.batch.members = len(r.spec.Agents)
	p.mu.Unlock()
	for _, a := range r.spec.Agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.mu.Lock()
			defer p.mu.Unlock()
			defer p.batch.leave()
			if ctx.Err() != nil {
				return
			}
			if err := r.reconcileAgent(ctx, p, a); err != nil {
				r.log.Error("agent", "agent", a.Name, "err", err)
				errs = append(errs, fmt.Errorf("agent %s: %w", a.Name, err))
			}
		}()
	}
	wg.Wait()
	p.batch = nil
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// concurrency is how many agents run at once: by default one per core
// (--concurrency). Agents mostly wait on their sandbox's processes or a
// model, so more can pay: with BenchmarkAgentsPass, 100 exec agents took
// 6.5 s at one per core and 3.4 s at four on this project's 2-core
// machines.
func (r *Reconciler) concurrency() int {
	if r.cfg.Concurrency > 0 {
		return r.cfg.Concurrency
	}
	return runtime.NumCPU()
}

func (r *Reconciler) reconcileAgent(ctx context.Context, p *pass, a *hclspec.Agent) (err error) {
	// Requests this pass did not answer wait for a later one.
	defer func() {
		why := "a run of the agent is in progress"
		if err != nil {
			why = "the agent's pass failed: " + err.Error()
		}
		p.pendingFor(a, why)
	}()
	// Finish what a previous pass (or process) started first.
	for _, rn := range p.state.AgentRuns(a.Name) {
		if rn.Failed != nil && !rn.Failed.RetryAfter.IsZero() && rn.SpecDigest == a.Digest {
			// A failure that can pass on retry: the next attempt, after
			// its backoff, claimed as the run's start was.
			if r.cfg.Now().Before(rn.Failed.RetryAfter) {
				r.log.Info("run waits for its retry", "agent", a.Name, "run", rn.ID, "attempt", rn.Attempt, "retry_after", rn.Failed.RetryAfter)
				return nil
			}
			ok, err := r.claimRetry(ctx, p, a, rn)
			if err != nil || !ok {
				return err
			}
			rn = p.state.Run(rn.ID)
			return r.execute(ctx, p, a, rn.ID, dueOf(rn), rn, policy.Admission{MaxTokens: a.Limits.MaxTokens})
		}
		if runDone(rn) {
			continue
		}
		if rn.Claimant != r.claimant {
			// Another process's claim, through every phase until the run
			// is done: leave the run to it while its lease holds, take it
			// over once the lease has expired.
			if r.cfg.Now().Before(rn.LeaseUntil) {
				r.log.Info("run claimed by another reconciler", "agent", a.Name, "run", rn.ID, "claimant", rn.Claimant, "lease_until", rn.LeaseUntil)
				return nil
			}
			taken, err := r.takeOver(ctx, p, a, rn)
			if err != nil || !taken {
				return err
			}
			rn = p.state.Run(rn.ID)
		}
		if rn.SpecDigest == a.Digest {
			return r.execute(ctx, p, a, rn.ID, dueOf(rn), rn, policy.Admission{MaxTokens: a.Limits.MaxTokens})
		}
		// The spec changed under an unfinished run: it will never be
		// resumed, so close it.
		_, err := r.append(ctx, p, ledger.Event{
			Type: ledger.RunFailed, Agent: a.Name, RunID: rn.ID, Trigger: rn.Trigger, SpecDigest: rn.SpecDigest,
			SpecCommit: rn.SpecCommit, Subject: rn.SpecCommit, SubjectName: r.cfg.Branch, WorkUnit: workUnit(a),
			Error:   "the agent's spec changed before the run finished",
			Summary: fmt.Sprintf("run.failed %s %s: abandoned, the agent's spec changed before it finished", a.Name, rn.ID),
		})
		if err != nil {
			return err
		}
	}
	d, err := r.requested(ctx, p, a)
	if err != nil {
		return err
	}
	if d == nil {
		trigger, ok := dueTrigger(p.state, a, r.cfg.Now())
		if !ok {
			return nil
		}
		d = &due{id: trigger}
	}
	adm := policy.Gate(r.spec, a, r.cfg.Now(), p.state)
	if adm.Hold != nil {
		if d.from != "" {
			p.answer(d.from, a.Name, d.id, "", RequestPending, "held: "+adm.Hold.Reason)
		}
		return r.hold(ctx, p, a, d.id, adm.Hold)
	}
	runID := RunID(a.Name, a.Digest, d.id)
	err = r.execute(ctx, p, a, runID, *d, nil, adm)
	if d.from != "" {
		if rn := p.state.Triggered(a.Name, d.id); rn != nil {
			p.answer(d.from, a.Name, d.id, rn.ID, RequestStarted, "")
		} else if err != nil {
			p.answer(d.from, a.Name, d.id, "", RequestPending, "the run could not start: "+err.Error())
		}
	}
	return err
}

// hold records that a due run of a is held back, once for each distinct
// reason: a pass that finds the same hold again writes nothing.
func (r *Reconciler) hold(ctx context.Context, p *pass, a *hclspec.Agent, trigger string, h *policy.Hold) error {
	lh := &ledger.Hold{Kind: h.Kind, Policy: h.Policy, Rule: h.Rule, Until: h.Until.UTC(), Reason: h.Reason}
	recorded := func(st *ledger.State) bool {
		last := st.Held[a.Name]
		return last != nil && last.Hold != nil && last.Hold.Kind == lh.Kind &&
			last.Hold.Policy == lh.Policy && last.Hold.Rule == lh.Rule && last.Hold.Until.Equal(lh.Until)
	}
	if recorded(p.state) {
		return nil
	}
	typ := ledger.RunHeld
	if h.Budget() {
		typ = ledger.BudgetExceeded
	}
	until := ""
	if !h.Until.IsZero() {
		until = " until " + h.Until.UTC().Format(time.RFC3339)
	}
	// Checked again on the ledger it lands on: another reconciler may
	// have recorded the same hold meanwhile.
	_, err := r.appendIf(ctx, p, func(st *ledger.State) error {
		if recorded(st) {
			return errRecorded
		}
		return nil
	}, ledger.Event{
		Type: typ, Agent: a.Name, Trigger: trigger, SpecDigest: a.Digest,
		SpecCommit: r.specCommit.String(), Subject: r.specCommit.String(), SubjectName: r.cfg.Branch,
		Hold: lh, Summary: oneLine(fmt.Sprintf("%s %s: %s%s", typ, a.Name, h.Kind, until)),
	})
	if errors.Is(err, errRecorded) {
		return nil
	}
	return err
}

// dueTrigger returns the id of the first trigger of a that has not run yet.
func dueTrigger(st *ledger.State, a *hclspec.Agent, now time.Time) (string, bool) {
	runs := st.AgentRuns(a.Name)
	for _, t := range a.Triggers {
		switch {
		case t.OnSpecChange:
			ran := false
			for _, rn := range runs {
				if rn.SpecDigest == a.Digest {
					ran = true
				}
			}
			if !ran {
				return TriggerSpec, true
			}
		case t.Schedule != "":
			slot, ok := t.LastSlot(now)
			if !ok {
				continue
			}
			id := "schedule:" + slot.UTC().Format(time.RFC3339)
			ran := false
			for _, rn := range runs {
				// A run of the same spec at or after the slot covers it.
				if rn.Trigger == id || (rn.SpecDigest == a.Digest && !rn.Started.Before(slot)) {
					ran = true
				}
			}
			if !ran {
				return id, true
			}
		}
	}
	return "", false
}

// squatted records a branch on a run's name whose head is not the commit
// the reconciler makes for the run: a policy.violation, after which the run
// proposes nothing.
func (r *Reconciler) squatted(ctx context.Context, p *pass, a *hclspec.Agent, base ledger.Event, branch string, cur, want plumbing.Hash) error {
	c, err := r.repo.Commit(cur)
	who := "unknown"
	if err == nil {
		who = c.Committer.Email
	}
	v := base
	v.Type = ledger.PolicyViolation
	v.Subject, v.SubjectName = cur.String(), branch
	v.Proposal = &ledger.Proposal{Branch: branch, Head: cur.String()}
	v.Error = fmt.Sprintf("branch squatting: %s is at %s (committed by %s), not the commit the reconciler makes for the run (%s); never adopted or decided on",
		branch, cur.String()[:12], who, want.String()[:12])
	v.Summary = oneLine(fmt.Sprintf("policy.violation %s %s: %s", a.Name, base.RunID, v.Error))
	r.log.Error("branch squatting", "agent", a.Name, "run", base.RunID, "branch", branch, "head", cur.String(), "committer", who)
	_, err = r.append(ctx, p, v)
	return err
}

// redecide re-evaluates the policies on an open proposal whose change a new
// run of a changed spec reproduced: the decision a merge must satisfy is
// the one under the policies in force now. It records a new
// policy.decision for the open proposal's run only when the outcome or the
// requirements changed.
func (r *Reconciler) redecide(ctx context.Context, p *pass, a *hclspec.Agent, base ledger.Event, trigger string, changes []gitstore.FileChange) error {
	id := ChangeID(changes)
	for _, open := range p.state.OpenRuns(a.Name) {
		if open.ChangeID() != id {
			continue
		}
		old, err := parsedDecision(open)
		if err != nil {
			return err
		}
		in := hclspec.ConditionInput{
			Agent:  a,
			Run:    hclspec.RunInfo{ID: open.ID, Trigger: trigger, Model: a.Model, SpecCommit: r.specCommit.String()},
			Change: conditionChanges(changes),
			Evals:  recordedEvals(open), // evals.go
		}
		d, err := r.denySecrets(policy.Decide(r.spec, in), changes)
		if err != nil {
			return err
		}
		var rv policy.Reviewed
		if open.Updated != nil {
			// A person moved the branch: its head's whole change is what
			// a merge would bring in.
			if rv, _, err = r.decideHead(ctx, p, open, plumbing.NewHash(open.DecidedHead())); err != nil {
				return err
			}
		} else if rv, err = r.reviewHead(ctx, p, open, plumbing.NewHash(open.DecidedHead()), r.specCommit, in, changes, d); err != nil {
			return err
		}
		// A review asked anew is recorded even when the decision stands.
		if rv.Summary == old.Summary && rv.Outcome == old.Outcome && !reviewsAsked(rv.Reviews) {
			return nil
		}
		d = rv.Decision
		raw, err := json.Marshal(rv)
		if err != nil {
			return fmt.Errorf("encode decision: %w", err)
		}
		ev := base
		ev.RunID, ev.Trigger, ev.SpecDigest = open.ID, open.Trigger, open.SpecDigest
		ev.Type = ledger.PolicyDecision
		ev.Decision = raw
		spendReviews(&ev, rv.Reviews)
		ev.Summary = oneLine(fmt.Sprintf("policy.decision %s %s: %s (re-decided under spec %s)", a.Name, open.ID, d.Summary, r.specCommit.String()[:12]))
		_, err = r.append(ctx, p, ev)
		return err
	}
	return nil
}

// errStale aborts an append computed from a view of the ledger that
// another writer changed meanwhile: recompute and try again.
var errStale = errors.New("computed from a stale view of the ledger")

// recordOpened records proposal.opened for the run, and supersedes the
// agent's older open proposals, in one append checked against the exact
// ledger it lands on: nothing when another reconciler recorded the opening
// first, and computed again when the agent's open proposals changed
// meanwhile, so that one run is opened once and every older proposal is
// superseded once.
func (r *Reconciler) recordOpened(ctx context.Context, p *pass, a *hclspec.Agent, base ledger.Event, rn *ledger.Run, head plumbing.Hash) error {
	d, err := parsedDecision(rn)
	if err != nil {
		return err
	}
	branch := ProposalBranch(a.Name, rn.ID)
	for attempt := 0; ; attempt++ {
		ev := base
		ev.Type = ledger.ProposalOpened
		ev.Subject, ev.SubjectName = head.String(), branch
		ev.Proposal = &ledger.Proposal{Branch: branch, Head: head.String(), ChangeID: rn.ChangeID()}
		ev.Summary = oneLine(fmt.Sprintf("proposal.opened %s %s -> %s (%s)", a.Name, rn.ID, branch, strings.TrimPrefix(d.Summary, "require_approval ")))
		events := []ledger.Event{ev}
		var closes []forge.Proposal
		superseded := map[string]bool{}
		for _, old := range supersedable(p.state, a.Name, rn) {
			superseded[old.ID] = true
			oldHead := plumbing.NewHash(old.DecidedHead())
			if cur, err := r.repo.Branch(old.Opened.Proposal.Branch); err == nil {
				oldHead = cur
			}
			closes = append(closes, forge.Proposal{Agent: a.Name, RunID: old.ID, Branch: old.Opened.Proposal.Branch, Head: oldHead})
			events = append(events, ledger.Event{
				Type: ledger.ProposalSuperseded, Agent: a.Name, RunID: old.ID, SpecCommit: base.SpecCommit,
				Subject: oldHead.String(), SubjectName: old.Opened.Proposal.Branch,
				Proposal: &ledger.Proposal{Branch: old.Opened.Proposal.Branch, Head: oldHead.String(), ChangeID: old.ChangeID()},
				Summary:  fmt.Sprintf("proposal.superseded %s %s by %s", a.Name, old.ID, rn.ID),
			})
		}
		_, err := r.appendIf(ctx, p, func(st *ledger.State) error {
			if cur := st.Run(rn.ID); cur == nil || cur.Opened != nil || cur.Violation {
				return errRecorded
			}
			open := supersedable(st, a.Name, rn)
			if len(open) != len(superseded) {
				return errStale
			}
			for _, o := range open {
				if !superseded[o.ID] {
					return errStale
				}
			}
			return nil
		}, events...)
		switch {
		case errors.Is(err, errRecorded):
			p.state = r.ledger.State()
			r.log.Info("proposal recorded by another reconciler", "agent", a.Name, "run", rn.ID)
			return nil
		case errors.Is(err, errStale) && attempt < 5:
			p.state = r.ledger.State()
			continue
		case err != nil:
			return err
		}
		for _, fp := range closes {
			if err := r.forge.Close(ctx, fp, fmt.Sprintf("superseded by run %s (branch %s)", rn.ID, ProposalBranch(a.Name, rn.ID))); err != nil {
				return err
			}
		}
		return nil
	}
}

// finishSupersedes closes the proposals superseded whose branches are
// still at the head recorded when they were superseded: a crash between
// the proposal.superseded entry and the close leaves them, and the next
// pass finishes it. A branch that moved since (a person pushed to it) is
// left.
func (r *Reconciler) finishSupersedes(ctx context.Context, p *pass) error {
	for _, rn := range p.state.Runs {
		if rn.Closed == nil || rn.Closed.Type != ledger.ProposalSuperseded || rn.Closed.Proposal == nil {
			continue
		}
		pr := rn.Closed.Proposal
		cur, err := r.repo.Branch(pr.Branch)
		if err != nil || cur.String() != pr.Head {
			continue
		}
		fp := forge.Proposal{Agent: rn.Agent, RunID: rn.ID, Branch: pr.Branch, Head: cur}
		if err := r.forge.Close(ctx, fp, "superseded"); err != nil {
			return err
		}
	}
	return nil
}

// supersededScanDepth bounds how far back the protected branch is searched
// for merges of superseded proposals each pass.
const supersededScanDepth = 200

// mergedSuperseded records a superseded proposal's head that reached the
// protected branch (merged or fast-forwarded, among its last
// supersededScanDepth first-parent commits) as a policy.violation, once:
// a superseded proposal was never decided to be merged.
func (r *Reconciler) mergedSuperseded(ctx context.Context, p *pass) error {
	heads := map[plumbing.Hash]*ledger.Run{}
	for _, rn := range p.state.Runs {
		if rn.Closed != nil && rn.Closed.Type == ledger.ProposalSuperseded && rn.Closed.Proposal != nil && !rn.Violation {
			heads[plumbing.NewHash(rn.Closed.Proposal.Head)] = rn
		}
	}
	if len(heads) == 0 {
		return nil
	}
	chain, err := r.repo.FirstParents(p.head, supersededScanDepth)
	if err != nil {
		return err
	}
	var events []ledger.Event
	for _, c := range chain {
		for _, h := range c.ParentHashes[min(1, len(c.ParentHashes)):] {
			rn := heads[h]
			if rn == nil {
				continue
			}
			delete(heads, h)
			pr := rn.Closed.Proposal
			why := fmt.Sprintf("merged superseded proposal %s (head %s) at %s by %s; it was replaced and never decided to be merged", pr.Branch, h.String()[:12], c.Hash.String()[:12], c.Committer.Email)
			events = append(events, ledger.Event{
				Type: ledger.PolicyViolation, Agent: rn.Agent, RunID: rn.ID, Trigger: rn.Trigger, SpecDigest: rn.SpecDigest, SpecCommit: p.head.String(),
				Subject: c.Hash.String(), SubjectName: r.cfg.Branch, Proposal: &ledger.Proposal{Branch: pr.Branch, Head: pr.Head, MergeCommit: c.Hash.String()},
				Error: why, Summary: oneLine(fmt.Sprintf("policy.violation %s %s: %s", rn.Agent, rn.ID, why)),
			})
		}
	}
	if len(events) == 0 {
		return nil
	}
	_, err = r.append(ctx, p, events...)
	return err
}

// classify decides what a run's change means given the agent's other
// proposals.
func (r *Reconciler) classify(p *pass, a *hclspec.Agent, runID string, changes []gitstore.FileChange) (string, string) {
	if len(changes) == 0 {
		return OutcomeNoChange, fmt.Sprintf("run.finished %s %s: no change", a.Name, runID)
	}
	id := ChangeID(changes)
	for _, open := range p.state.OpenRuns(a.Name) {
		if open.ChangeID() == id {
			return OutcomeDuplicateOpen, fmt.Sprintf("run.finished %s %s: same change as open proposal %s", a.Name, runID, open.ID)
		}
	}
	if rej := p.state.Rejected(a.Name, id); rej != nil {
		return OutcomeDuplicateRejected, fmt.Sprintf("run.finished %s %s: same change as rejected proposal %s, not proposed again", a.Name, runID, rej.ID)
	}
	if orig, rev := p.state.Reverted(a.Name, id); orig != nil {
		return OutcomeDuplicateRejected, fmt.Sprintf("run.finished %s %s: same change as run %s, merged and reverted by run %s, not proposed again", a.Name, runID, orig.ID, rev.ID)
	}
	return OutcomeChanged, fmt.Sprintf("run.finished %s %s: %d file(s) changed", a.Name, runID, len(changes))
}

// runInWorkspace runs the agent in a fresh workspace of the spec commit
// holding only what the agent may see (agentView), and returns the
// confined changes. The pass's lock is released while the agent works, so
// agents run in parallel. For a run already finished (prior has
// run.finished), a recorded model transcript is replayed instead of asking
// the model again: the change is rebuilt for free, and equals the one
// recorded, so the deterministic proposal commit is the same.
func (r *Reconciler) runInWorkspace(ctx context.Context, p *pass, a *hclspec.Agent, runID, trigger string, commit plumbing.Hash, prior *ledger.Run) (agent.Result, []gitstore.FileChange, error) {
	if prior != nil && prior.Reverts != "" {
		return r.revertWork(ctx, p, a, prior, commit) // a revert run inverts a merged change (revert.go)
	}
	input, err := triggerInput(prior)
	if err != nil {
		return agent.Result{}, nil, err
	}
	run := func(ctx context.Context, t agent.Task) (agent.Result, error) {
		runner, ok := r.cfg.Runners[a.Provider.Kind]
		if !ok {
			return agent.Result{}, fmt.Errorf("no runner for %s providers in this reconciler", a.Provider.Kind)
		}
		return runner.Run(ctx, t)
	}
	if prior != nil && prior.Finished != nil && prior.Finished.TranscriptDigest != "" {
		transcript, _, err := r.ledger.Transcript(ctx, runID)
		if err != nil {
			return agent.Result{}, nil, fmt.Errorf("read the transcript of finished run %s: %w", runID, err)
		}
		run = func(ctx context.Context, t agent.Task) (agent.Result, error) { return agent.Replay(ctx, t, transcript) }
	}
	task := agent.Task{Agent: a, RunID: runID, SpecCommit: commit.String(), Trigger: trigger, Input: input, MaxTokens: policy.TokenLimit(r.spec, a)}
	task.Memory = r.memory(p, a, runID) // recall.go
	view := r.agentView(a, commit)

	back, err := p.outside(ctx, true)
	if err != nil {
		return agent.Result{}, nil, err
	}
	defer back()
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "reconciler-run-"+runID+"-")
	if err != nil {
		return agent.Result{}, nil, fmt.Errorf("workspace: %w", err)
	}
	defer os.RemoveAll(dir)
	task.Dir = dir + "/repo"
	if err := r.repo.CheckoutView(ctx, commit, task.Dir, view); err != nil {
		return agent.Result{}, nil, fmt.Errorf("workspace: %w", err)
	}
	res, err := run(ctx, task)
	if err != nil {
		return res, nil, err
	}
	changes, err := r.repo.ChangesView(ctx, commit, task.Dir, view)
	if err != nil {
		return res, nil, fmt.Errorf("workspace: %w", err)
	}
	if err := agent.Confine(a, changes); err != nil {
		return res, nil, err
	}
	// Names that disguise a protected path, control and bidi characters,
	// symlinks out of the workspace or onto protected paths.
	if err := agent.CheckChange(r.spec, a, changes); err != nil {
		return res, nil, err
	}
	return res, changes, nil
}

// agentView is what an agent's workspace holds: its scope, and the files
// its command runs (the arguments that name files of the spec commit, as
// the agent's digest counts them). The prompt reaches the agent on its
// own. Nothing else of the repository is materialized or read.
func (r *Reconciler) agentView(a *hclspec.Agent, commit plumbing.Hash) *gitstore.View {
	v := &gitstore.View{Globs: a.Scope}
	for _, arg := range a.Command {
		clean := path.Clean(arg)
		if path.IsAbs(arg) || clean == "." || strings.HasPrefix(clean, "../") || clean == ".." {
			continue
		}
		if _, mode, err := r.repo.TreeEntry(commit, clean); err == nil && mode.IsFile() {
			v.Files = append(v.Files, clean)
		}
	}
	return v
}

// AgentIdentity is the author of an agent's commits.
func AgentIdentity(id object.Signature, agentName string) object.Signature {
	local, domain, ok := strings.Cut(id.Email, "@")
	if !ok {
		local, domain = id.Email, "localhost"
	}
	return object.Signature{Name: agentName + " (agent)", Email: local + "+" + agentName + "@" + domain}
}

// isMachine reports whether sig is the reconciler or one of its agents:
// they never count as reviewers.
func isMachine(id object.Signature, email string) bool {
	local, domain, _ := strings.Cut(id.Email, "@")
	e := strings.ToLower(email)
	return e == strings.ToLower(id.Email) || (strings.HasPrefix(e, strings.ToLower(local)+"+") && strings.HasSuffix(e, "@"+strings.ToLower(domain)))
}

// commitProposal makes the run's proposal commit. It is deterministic (tree,
// parent, message, agent author, and the time of the run.finished entry),
// so a restarted process makes the same commit.
func (r *Reconciler) commitProposal(a *hclspec.Agent, runID string, specCommit plumbing.Hash, res agent.Result, changes []gitstore.FileChange, d policy.Decision, decisionSeq uint64, when time.Time) (plumbing.Hash, error) {
	tree, err := r.repo.WriteTree(specCommit, changes)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("proposal tree: %w", err)
	}
	// The agent's words, stripped of terminal escapes and control and
	// bidi characters: they are shown by every git log.
	var msg strings.Builder
	subject := agent.CleanSubject(res.Summary)
	if subject == "" {
		subject = a.Name + ": automated change"
	}
	msg.WriteString(subject + "\n\n")
	if body := strings.TrimSpace(agent.CleanMessage(res.Body)); body != "" {
		msg.WriteString(body + "\n\n")
	}
	if risk := agent.CleanSubject(res.Risk); risk != "" {
		msg.WriteString(riskPrefix + risk + "\n\n")
	}
	fmt.Fprintf(&msg, "Agent: %s\nAgent-Run: %s\nSpec-Commit: %s\nPolicy-Decision: %s\nLedger-Entry: %d\n",
		a.Name, runID, specCommit, d.Summary, decisionSeq)
	author := AgentIdentity(r.cfg.Identity, a.Name)
	author.When = when
	committer := r.cfg.Identity
	committer.When = when
	h, err := r.repo.CreateCommit(gitstore.NewCommit{Tree: tree, Parents: []plumbing.Hash{specCommit}, Author: author, Committer: committer, Message: msg.String()})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("proposal commit: %w", err)
	}
	return h, nil
}

func changeSummary(changes []gitstore.FileChange) *ledger.Change {
	c := &ledger.Change{ID: ChangeID(changes)}
	for _, f := range changes {
		// A file name can hold a secret too.
		c.Files = append(c.Files, agent.Redact(f.Path))
		c.Added += f.Added
		c.Removed += f.Removed
	}
	return c
}

func conditionChanges(changes []gitstore.FileChange) []hclspec.ChangeFile {
	out := make([]hclspec.ChangeFile, 0, len(changes))
	for _, c := range changes {
		f := hclspec.ChangeFile{Path: c.Path, Status: c.Status, Added: c.Added, Removed: c.Removed}
		if c.Status != gitstore.StatusDeleted {
			f.Bytes = int64(len(c.Content))
			switch c.Mode {
			case filemode.Executable:
				f.Mode = hclspec.ModeExecutable
			case filemode.Symlink:
				f.Mode = hclspec.ModeSymlink
			default:
				f.Mode = hclspec.ModeRegular
			}
		}
		out = append(out, f)
	}
	return out
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(agent.CleanSubject(s)), " ")
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}
