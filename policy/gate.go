package policy

import (
	"fmt"
	"sort"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
)

// Hold kinds: why a run may not start now.
const (
	HoldSuspended     = "suspended"
	HoldFreeze        = "freeze"
	HoldRate          = "runs_per_hour"
	HoldOpenProposals = "open_proposals"
	HoldConcurrency   = "concurrency"
	HoldBudgetDay     = "cost_per_day"
	HoldBudgetMonth   = "cost_per_month"
)

// Hold says why a run is held back, by which rule, and when that clears
// (zero when it clears on an event rather than at a time).
type Hold struct {
	Kind   string    `json:"kind"`
	Policy string    `json:"policy,omitempty"`
	Rule   string    `json:"rule,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason"`
}

// Budget reports whether the hold is about money (budget.exceeded) rather
// than time or capacity (run.held).
func (h *Hold) Budget() bool { return h.Kind == HoldBudgetDay || h.Kind == HoldBudgetMonth }

// Usage is what the ledger says an agent has consumed. Spend includes the
// reservations of runs that have started and not finished, so concurrent
// runs cannot together overspend.
type Usage interface {
	// RunStarts returns when the agent's runs started at or after since.
	RunStarts(agent string, since time.Time) []time.Time
	// OpenProposals is the agent's number of open proposals.
	OpenProposals(agent string) int
	// Running is the agent's number of runs started and not finished.
	Running(agent string) int
	// Spent is the agent's spend in US dollars since a time, reservations
	// of unfinished runs included.
	Spent(agent string, since time.Time) float64
}

// Admission is the result of Gate: a hold, or the run's limits.
type Admission struct {
	Hold *Hold
	// MaxTokens is the run's token limit: the agent's, lowered by any
	// policy's max_tokens_per_run.
	MaxTokens int
	// ReserveUSD is what the run may cost at most, reserved before it
	// starts and settled when it ends.
	ReserveUSD float64
}

// Gate decides whether a run of agent may start at now. It checks, in
// order: suspend, freezes of every policy that applies (a freeze holds even
// what another policy allows), then each policy's budget: runs per hour,
// open proposals, concurrency, and money per day and month including this
// run's reservation. The first hold found is returned; Gate never has side
// effects.
func Gate(spec *hclspec.Spec, agent *hclspec.Agent, now time.Time, u Usage) Admission {
	adm := Admission{MaxTokens: TokenLimit(spec, agent)}
	policies := spec.PoliciesFor(agent.Name)
	adm.ReserveUSD = reservation(agent, adm.MaxTokens)
	if agent.Suspend {
		adm.Hold = &Hold{Kind: HoldSuspended, Reason: fmt.Sprintf("agent %s is suspended (suspend = true at %s)", agent.Name, pos(agent.DeclRange))}
		return adm
	}
	for _, p := range policies {
		for _, f := range p.Freezes {
			if active, until := f.Active(now); active {
				adm.Hold = &Hold{Kind: HoldFreeze, Policy: p.Name, Rule: f.Name, Until: until,
					Reason: fmt.Sprintf("freeze %s/%s is in force until %s (%s)", p.Name, f.Name, until.UTC().Format(time.RFC3339), pos(f.DeclRange))}
				return adm
			}
		}
	}
	for _, p := range policies {
		b := p.Budget
		if b == nil {
			continue
		}
		agents := agentsOf(spec, p)
		hold := func(kind, rule string, until time.Time, format string, args ...any) Admission {
			adm.Hold = &Hold{Kind: kind, Policy: p.Name, Rule: rule, Until: until, Reason: fmt.Sprintf(format, args...) + " (" + pos(b.DeclRange) + ")"}
			return adm
		}
		if b.MaxRunsPerHour > 0 {
			starts := u.RunStarts(agent.Name, now.Add(-time.Hour))
			if len(starts) >= b.MaxRunsPerHour {
				sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
				until := starts[len(starts)-b.MaxRunsPerHour].Add(time.Hour)
				return hold(HoldRate, "max_runs_per_hour", until, "%s ran %d times in the last hour; policy %s allows %d", agent.Name, len(starts), p.Name, b.MaxRunsPerHour)
			}
		}
		if b.MaxOpenProposals > 0 {
			if n := u.OpenProposals(agent.Name); n >= b.MaxOpenProposals {
				return hold(HoldOpenProposals, "max_open_proposals", time.Time{}, "%s has %d open proposal(s); policy %s allows %d until one is merged or closed", agent.Name, n, p.Name, b.MaxOpenProposals)
			}
		}
		if b.MaxRunsPerHourTotal > 0 {
			var starts []time.Time
			for _, a := range agents {
				starts = append(starts, u.RunStarts(a, now.Add(-time.Hour))...)
			}
			if len(starts) >= b.MaxRunsPerHourTotal {
				sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
				until := starts[len(starts)-b.MaxRunsPerHourTotal].Add(time.Hour)
				return hold(HoldRate, "max_runs_per_hour_total", until, "the %d agent(s) under policy %s ran %d times in the last hour; it allows %d", len(agents), p.Name, len(starts), b.MaxRunsPerHourTotal)
			}
		}
		if b.MaxOpenProposalsTotal > 0 {
			open := 0
			for _, a := range agents {
				open += u.OpenProposals(a)
			}
			if open >= b.MaxOpenProposalsTotal {
				return hold(HoldOpenProposals, "max_open_proposals_total", time.Time{}, "the agents under policy %s have %d open proposal(s); it allows %d until one is merged or closed", p.Name, open, b.MaxOpenProposalsTotal)
			}
		}
		if b.MaxConcurrentRuns > 0 {
			running := 0
			for _, a := range agents {
				running += u.Running(a)
			}
			if running >= b.MaxConcurrentRuns {
				return hold(HoldConcurrency, "max_concurrent_runs", time.Time{}, "%d run(s) under policy %s are in progress; it allows %d at once", running, p.Name, b.MaxConcurrentRuns)
			}
		}
		if h := moneyHold(spec, p, now, u, adm.ReserveUSD, "this run"); h != nil {
			adm.Hold = h
			return adm
		}
	}
	return adm
}

// moneyHold is the hold of p's day and month money budgets on spending
// cost more now (what names the spender in its reason), or nil when both
// have room.
func moneyHold(spec *hclspec.Spec, p *hclspec.Policy, now time.Time, u Usage, cost float64, what string) *Hold {
	b := p.Budget
	if b == nil {
		return nil
	}
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	agents := agentsOf(spec, p)
	for _, w := range []struct {
		kind, rule string
		max        float64
		since      time.Time
		until      time.Time
	}{
		{HoldBudgetDay, "max_cost_usd_per_day", b.MaxCostUSDPerDay, day, day.AddDate(0, 0, 1)},
		{HoldBudgetMonth, "max_cost_usd_per_month", b.MaxCostUSDPerMonth, month, month.AddDate(0, 1, 0)},
	} {
		if w.max <= 0 {
			continue
		}
		spent := 0.0
		for _, a := range agents {
			spent += u.Spent(a, w.since)
		}
		if spent+cost > w.max {
			return &Hold{Kind: w.kind, Policy: p.Name, Rule: w.rule, Until: w.until,
				Reason: fmt.Sprintf("policy %s allows $%.2f; $%.4f is spent or reserved and %s reserves $%.4f", p.Name, w.max, spent, what, cost) + " (" + pos(b.DeclRange) + ")"}
		}
	}
	return nil
}

// BudgetRoom returns the hold the agent's money budgets put on spending
// cost more now (what names the spender), or nil when they have room: for
// model calls that are not runs, such as second-model reviews, checked
// before they are made.
func BudgetRoom(spec *hclspec.Spec, agent *hclspec.Agent, now time.Time, u Usage, cost float64, what string) *Hold {
	for _, p := range spec.PoliciesFor(agent.Name) {
		if h := moneyHold(spec, p, now, u, cost, what); h != nil {
			return h
		}
	}
	return nil
}

// TokenLimit is a run's token limit: the agent's max_tokens, lowered by the
// max_tokens_per_run of any policy that applies to it.
func TokenLimit(spec *hclspec.Spec, agent *hclspec.Agent) int {
	limit := agent.Limits.MaxTokens
	for _, p := range spec.PoliciesFor(agent.Name) {
		if b := p.Budget; b != nil && b.MaxTokensPerRun > 0 && (limit == 0 || int64(limit) > b.MaxTokensPerRun) {
			limit = int(b.MaxTokensPerRun)
		}
	}
	return limit
}

// reservation is the most a run can cost: its token limit at the dearer of
// the model's two prices. Agents without a price reserve nothing.
func reservation(a *hclspec.Agent, maxTokens int) float64 {
	if a.Provider == nil || a.Provider.Kind != hclspec.ProviderOpenAI {
		return 0
	}
	// A tiered agent's run may spend its whole token limit on its dearest
	// model: reserve at that price.
	dearest := 0.0
	for _, m := range a.Tiers() {
		if price, ok := a.Provider.Prices[m]; ok {
			dearest = max(dearest, price.InputPerMTok, price.OutputPerMTok)
		}
	}
	return float64(maxTokens) / 1e6 * dearest
}

// agentsOf returns the agents a policy applies to.
func agentsOf(spec *hclspec.Spec, p *hclspec.Policy) []string {
	var out []string
	for _, a := range spec.Agents {
		if p.AppliesToAgent(a.Name) {
			out = append(out, a.Name)
		}
	}
	return out
}
