package reconcile

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/hclspec"
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

// DecideChange computes the decision the policies would make on the change
// from the protected branch's head to ref (a branch or commit) as made by
// the named agent. It writes nothing.
func (r *Reconciler) DecideChange(ctx context.Context, agentName, ref string) (policy.Decision, error) {
	p := &pass{}
	if err := r.fetch(ctx, p); err != nil {
		return policy.Decision{}, err
	}
	spec, diags, err := r.loadAt(p.head)
	if err != nil {
		return policy.Decision{}, err
	}
	if diags.HasErrors() {
		return policy.Decision{}, fmt.Errorf("the spec at %s does not load: %s", p.head.String()[:12], formatDiag(firstError(diags)))
	}
	a := spec.Agent(agentName)
	if a == nil {
		return policy.Decision{}, fmt.Errorf("no agent %q in the spec at %s", agentName, p.head.String()[:12])
	}
	target, err := r.resolve(ref)
	if err != nil {
		return policy.Decision{}, err
	}
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "reconciler-plan-")
	if err != nil {
		return policy.Decision{}, err
	}
	defer os.RemoveAll(dir)
	ws := dir + "/repo"
	if err := r.repo.Checkout(ctx, target, ws); err != nil {
		return policy.Decision{}, err
	}
	changes, err := r.repo.Changes(ctx, p.head, ws)
	if err != nil {
		return policy.Decision{}, err
	}
	return policy.Decide(spec, hclspec.ConditionInput{
		Agent:  a,
		Run:    hclspec.RunInfo{Trigger: "plan", Model: a.Model, SpecCommit: p.head.String()},
		Change: conditionChanges(changes),
	}), nil
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
