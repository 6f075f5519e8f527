package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// AgentPlan says what a pass would do for one agent now.
type AgentPlan struct {
	Agent   string       `json:"agent"`
	Run     bool         `json:"would_run"`
	RunID   string       `json:"run_id,omitempty"`
	Trigger string       `json:"trigger,omitempty"`
	Resume  bool         `json:"resume,omitempty"`
	Reason  string       `json:"reason"`
	Hold    *policy.Hold `json:"hold,omitempty"`
}

// Plan is what a pass would do, computed without side effects.
type Plan struct {
	SpecCommit  string      `json:"spec_commit"`
	Diagnostics []string    `json:"diagnostics,omitempty"`
	Agents      []AgentPlan `json:"agents"`
}

// Plan fetches and reports, for each agent, whether a pass would run it now
// and why not (suspend, freeze, budget, schedule). It writes nothing: no
// ledger entry, no branch. A spec that does not load is reported with its
// diagnostics and planned on the last good spec from the ledger, if any.
func (r *Reconciler) Plan(ctx context.Context) (*Plan, error) {
	p := &pass{}
	if err := r.fetch(ctx, p); err != nil {
		return nil, err
	}
	if _, err := r.ledger.Update(ctx); err != nil {
		return nil, ledgerError(err)
	}
	p.state = r.ledger.State()
	spec, diags, err := r.loadAt(p.head)
	if err != nil {
		return nil, err
	}
	commit := p.head
	plan := &Plan{}
	if diags.HasErrors() {
		for _, d := range diags {
			plan.Diagnostics = append(plan.Diagnostics, formatDiag(d))
		}
		spec = nil
		if good := p.state.LastGoodSpec; good != nil {
			commit = plumbing.NewHash(good.SpecCommit)
			if s, d, err := r.loadAt(commit); err == nil && !d.HasErrors() {
				spec = s
			}
		}
		if spec == nil {
			return plan, nil
		}
	}
	plan.SpecCommit = commit.String()
	now := r.cfg.Now()
	for _, a := range spec.Agents {
		ap := AgentPlan{Agent: a.Name}
		resumed := false
		for _, rn := range p.state.AgentRuns(a.Name) {
			if !runDone(rn) && rn.SpecDigest == a.Digest {
				ap.Run, ap.Resume, ap.RunID, ap.Trigger = true, true, rn.ID, rn.Trigger
				ap.Reason = "resume run " + rn.ID + ", which a previous pass did not finish"
				resumed = true
				break
			}
		}
		if !resumed {
			trigger, due := dueTrigger(p.state, a, now)
			switch adm := policy.Gate(spec, a, now, p.state); {
			case !due:
				ap.Reason = notDueReason(a, now)
			case adm.Hold != nil:
				ap.Hold, ap.Trigger = adm.Hold, trigger
				ap.Reason = "held: " + adm.Hold.Reason
			default:
				ap.Run, ap.Trigger, ap.RunID = true, trigger, RunID(a.Name, a.Digest, trigger)
				ap.Reason = fmt.Sprintf("trigger %s is due", trigger)
				if adm.ReserveUSD > 0 {
					ap.Reason += fmt.Sprintf("; reserves $%.4f", adm.ReserveUSD)
				}
			}
		}
		plan.Agents = append(plan.Agents, ap)
	}
	return plan, nil
}

// notDueReason explains why no trigger of a is due.
func notDueReason(a *hclspec.Agent, now time.Time) string {
	var next time.Time
	for _, t := range a.Triggers {
		if n, ok := t.NextSlot(now); ok && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	if !next.IsZero() {
		return "already ran for this spec; next schedule slot " + next.UTC().Format(time.RFC3339)
	}
	return "already ran for this spec and trigger; it runs again when its spec changes"
}

// ChangeOptions tune DecideChange.
type ChangeOptions struct {
	// NoEvals skips the evals the change would trigger, and NoReview the
	// second-model reviews: neither costs a model call then, and the
	// decision is provisional (ChangePlan.NotEvaluated says which gates
	// were left out).
	NoEvals, NoReview bool
}

// Gates ChangePlan.NotEvaluated names.
const (
	GateEvals  = "evals"
	GateReview = "review"
)

// ChangePlan is the decision a pass would record on a change, and what
// computing it ran and cost: the policy.decision entry's decision (with
// the reviews, as policy.Reviewed), its evals, usage and cost, each eval
// scenario's result, and which gates were not evaluated.
type ChangePlan struct {
	policy.Reviewed
	Agent string `json:"agent"`
	// Ref is the branch or commit planned, Head its commit, and Base the
	// commit its change is taken against (its merge base with the
	// protected branch); SpecCommit is the protected branch's head,
	// whose spec (policies, reviewers, evals) judges the change.
	Ref        string `json:"ref"`
	Head       string `json:"head"`
	Base       string `json:"base"`
	SpecCommit string `json:"spec_commit"`
	// Evals is change.evals as the decision entry would record it; nil
	// when the change redefines no agent (or NoEvals).
	Evals *ledger.Evals `json:"evals,omitempty"`
	// Scenarios are the eval scenarios run, one result each, and
	// EvalsNotRun the failures counted that are no scenario's (an eval
	// file that does not load, a scenario not run).
	Scenarios   []eval.ScenarioReport `json:"scenarios"`
	EvalsNotRun []string              `json:"evals_not_run,omitempty"`
	// EvalUsage is the tokens the scenarios' model exchanges used (the
	// decision entry records their cost only).
	EvalUsage ledger.Usage `json:"eval_usage"`
	// Usage and CostUSD are what the decision entry would record: the
	// reviews' tokens, and what the reviews and live eval exchanges
	// spent, which counts against the agent's money budgets.
	Usage   *ledger.Usage `json:"usage,omitempty"`
	CostUSD float64       `json:"cost_usd"`
	// NotEvaluated names the gates skipped that would have run (GateEvals,
	// GateReview); SkippedReviews the require_review rules whose models
	// were not asked. Provisional is true when any gate was skipped: the
	// pass may decide otherwise.
	NotEvaluated   []string `json:"not_evaluated"`
	SkippedReviews []string `json:"skipped_reviews,omitempty"`
	Provisional    bool     `json:"provisional"`
}

// DecideChange computes the decision a pass would record on ref's change
// (a branch or commit; the change from its merge base with the protected
// branch), as made by the named agent, through the pipeline a pass
// decides a run's change with: the evals of the agents the change
// redefines (changeEvals), the policies, the secret scan, and the
// second-model reviews (reviewRun), asked within the agent's money
// budgets as the pass asks them. Everything that judges the change comes
// from the protected branch's head: the policies, the reviewers and
// their prompts, the evals and their recordings; ref contributes only
// its change. It records nothing (no ledger entry, no push); model calls
// go to the providers, through the response cache the agent allows.
//
// It reads and updates r's view of the spec and the ledger: call it on a
// Reconciler that runs no passes.
func (r *Reconciler) DecideChange(ctx context.Context, agentName, ref string, opts ChangeOptions) (*ChangePlan, error) {
	p := &pass{}
	if err := r.fetch(ctx, p); err != nil {
		return nil, err
	}
	if _, err := r.ledger.Update(ctx); err != nil {
		return nil, ledgerError(err)
	}
	p.state = r.ledger.State()
	spec, diags, err := r.loadAt(p.head)
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("the spec at %s does not load: %s", p.head.String()[:12], formatDiag(firstError(diags)))
	}
	a := spec.Agent(agentName)
	if a == nil {
		return nil, fmt.Errorf("no agent %q in the spec at %s", agentName, p.head.String()[:12])
	}
	target, err := r.resolve(ref)
	if err != nil {
		return nil, err
	}
	base, err := r.repo.MergeBase(target, p.head)
	if errors.Is(err, gitstore.ErrNotFound) {
		// No history in common: merging it brings in everything that
		// differs (as decideHead judges such a head).
		base, err = p.head, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", ref, err)
	}
	changes, err := r.repo.Diff(ctx, base, target)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", ref, err)
	}
	c, err := r.repo.Commit(target)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", ref, err)
	}
	summary, body, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")

	// The spec in force is the protected branch's, as in a pass.
	r.setSpec(spec, p.head)
	p.mu.Lock()
	defer p.mu.Unlock()
	rc := &runOf{a: a, id: planRunID(agentName, ref, target), trigger: "plan", specCommit: p.head, changes: changes,
		res: agent.Result{Summary: summary, Body: strings.TrimSpace(body)}}
	out := &ChangePlan{Agent: a.Name, Ref: ref, Head: target.String(), Base: base.String(), SpecCommit: p.head.String(),
		Scenarios: []eval.ScenarioReport{}, NotEvaluated: []string{}}

	// As decide (phases.go) does, in its order.
	var evals *ledger.Evals
	switch {
	case opts.NoEvals && r.evalsTouched(changes):
		out.NotEvaluated = append(out.NotEvaluated, GateEvals)
	case !opts.NoEvals:
		run, err := r.evalChange(ctx, p, rc) // evals.go
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", ref, err)
		}
		evals = run.evals
		out.Scenarios = append(out.Scenarios, run.report.Scenarios...)
		out.EvalsNotRun = run.notRun
		for _, sc := range run.report.Scenarios {
			out.EvalUsage.InputTokens += sc.Usage.InputTokens
			out.EvalUsage.OutputTokens += sc.Usage.OutputTokens
		}
	}
	in := hclspec.ConditionInput{
		Agent:  a,
		Run:    hclspec.RunInfo{ID: rc.id, Trigger: rc.trigger, Model: a.Model, SpecCommit: p.head.String()},
		Change: conditionChanges(changes),
		Evals:  evalCounts(evals),
	}
	d, err := r.denySecrets(policy.Decide(r.spec, in), changes)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", ref, err)
	}
	if opts.NoReview {
		out.Reviewed = policy.Reviewed{Decision: d}
		for _, pr := range policy.PendingReviews(r.spec, d, in) {
			out.SkippedReviews = append(out.SkippedReviews, pr.Name())
		}
		if len(out.SkippedReviews) > 0 {
			out.NotEvaluated = append(out.NotEvaluated, GateReview)
		}
	} else if out.Reviewed, err = r.reviewRun(ctx, p, rc, d); err != nil { // review.go
		return nil, fmt.Errorf("plan %s: %w", ref, err)
	}
	// What the policy.decision entry would record.
	var ev ledger.Event
	spendReviews(&ev, out.Reviews)
	if out.Evals = evals; evals != nil {
		ev.CostUSD += evals.SpentUSD
	}
	out.Usage, out.CostUSD = ev.Usage, ev.CostUSD
	out.Provisional = len(out.NotEvaluated) > 0
	return out, nil
}

// planRunID is the run id a planned change is reviewed under: the run's
// own when ref is one of the agent's proposal branches, else one made
// from the commit.
func planRunID(agentName, ref string, target plumbing.Hash) string {
	if id, ok := strings.CutPrefix(ref, ProposalBranch(agentName, "")); ok && id != "" && !strings.Contains(id, "/") {
		return id
	}
	return "plan-" + target.String()[:12]
}

// resolve turns a branch name or a full commit id into a commit.
func (r *Reconciler) resolve(ref string) (plumbing.Hash, error) {
	if h, err := r.repo.Branch(ref); err == nil {
		return h, nil
	}
	if plumbing.IsHash(ref) {
		if _, err := r.repo.Commit(plumbing.NewHash(ref)); err == nil {
			return plumbing.NewHash(ref), nil
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("%q is neither a branch nor a commit of %s", ref, r.repo.URL())
}
