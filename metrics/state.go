package metrics

import (
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentgitops/reconciler/ledger"
)

// approvalBuckets are the upper bounds of reconciler_proposal_approval_seconds:
// a minute to about 45 days.
var approvalBuckets = prometheus.ExponentialBuckets(60, 4, 9)

// stateCollector exports the last ledger.State observed as constant
// metrics. Observe builds them all, under the mutex, from the state; Collect
// sends them. Nothing it holds points into a State.
type stateCollector struct {
	hourlyUSD float64

	runs, tokens, cost, workUnits, workUnitValue, roi, open *prometheus.Desc
	decisions, violations, held, entries, head, approval    *prometheus.Desc

	mu       sync.Mutex
	seq      uint64 // Seq of the state observed last
	approved histogram
	metrics  []prometheus.Metric
}

var _ prometheus.Collector = (*stateCollector)(nil)

func newStateCollector(hourlyUSD float64) *stateCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &stateCollector{
		hourlyUSD: hourlyUSD,
		runs: desc("reconciler_agent_runs_total",
			"Agent runs by outcome (changed, no_change, duplicate_open, duplicate_rejected, failed).", "agent", "outcome"),
		tokens: desc("reconciler_agent_tokens_total",
			"Model tokens used by agents, by direction (input, output).", "agent", "model", "direction"),
		cost: desc("reconciler_agent_cost_usd_total",
			"Money spent on model calls, in US dollars.", "agent", "model"),
		workUnits: desc("reconciler_work_units_total",
			"Proposals that ended, by outcome (merged, rejected, superseded).", "agent", "kind", "outcome"),
		workUnitValue: desc("reconciler_work_unit_value_usd_total",
			"Declared human time of merged work units, in US dollars.", "agent"),
		roi: desc("reconciler_agent_roi_ratio",
			"Value of merged work units divided by model spend, per agent (absent while nothing was spent).", "agent"),
		open: desc("reconciler_proposals_open",
			"Open proposals per agent.", "agent"),
		decisions: desc("reconciler_policy_decisions_total",
			"Policy rules that fired, by decision.", "policy", "rule", "decision"),
		violations: desc("reconciler_policy_violations_total",
			"Policy violations on the ledger (unsatisfied merges, foreign branches, unapproved keys), per agent.", "agent"),
		held: desc("reconciler_runs_held_total",
			"Due runs held back, by reason (freeze, suspended, runs_per_hour, open_proposals, concurrency, cost_per_day, cost_per_month).", "agent", "reason"),
		entries: desc("reconciler_ledger_entries_total",
			"Entries on the evidence branch."),
		head: desc("reconciler_ledger_head_info",
			"The evidence-branch commit of the last ledger entry read (one series, value 1).", "commit"),
		approval: desc("reconciler_proposal_approval_seconds",
			"Time from proposal.opened to proposal.merged."),
	}
	c.approved.reset()
	c.observe(ledger.NewState())
	return c
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.runs, c.tokens, c.cost, c.workUnits, c.workUnitValue, c.roi, c.open,
		c.decisions, c.violations, c.held, c.entries, c.head, c.approval} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.metrics {
		ch <- m
	}
}

func (c *stateCollector) observe(s *ledger.State) {
	if s == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.Seq < c.seq {
		return
	}
	t := &s.Totals
	var out []prometheus.Metric
	add := func(d *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, typ, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		out = append(out, m)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) { add(d, prometheus.CounterValue, v, labels...) }
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { add(d, prometheus.GaugeValue, v, labels...) }

	for agent, byOutcome := range t.Runs {
		for outcome, n := range byOutcome {
			counter(c.runs, float64(n), agent, outcome)
		}
	}
	for agent, byModel := range t.Tokens {
		for model, u := range byModel {
			counter(c.tokens, float64(u[0]), agent, model, "input")
			counter(c.tokens, float64(u[1]), agent, model, "output")
		}
	}
	spent := map[string]float64{}
	for agent, byModel := range t.CostUSD {
		// Summed in a fixed order, so the same state gives the same ratio.
		for _, model := range slices.Sorted(maps.Keys(byModel)) {
			counter(c.cost, byModel[model], agent, model)
			spent[agent] += byModel[model]
		}
	}
	for agent, byKind := range t.WorkUnits {
		for kind, byOutcome := range byKind {
			for outcome, n := range byOutcome {
				counter(c.workUnits, float64(n), agent, kind, outcome)
			}
		}
	}
	value := func(agent string) float64 { return t.MergedMinutes[agent] / 60 * c.hourlyUSD }
	for agent := range t.MergedMinutes {
		counter(c.workUnitValue, value(agent), agent)
	}
	for agent, usd := range spent {
		if usd > 0 {
			gauge(c.roi, value(agent)/usd, agent)
		}
	}
	for _, agent := range s.Agents() {
		gauge(c.open, float64(s.OpenProposals(agent)), agent)
	}
	for policy, byRule := range t.Decisions {
		for rule, byDecision := range byRule {
			for decision, n := range byDecision {
				counter(c.decisions, float64(n), policy, rule, decision)
			}
		}
	}
	for agent, n := range t.Violations {
		counter(c.violations, float64(n), agent)
	}
	for agent, byReason := range t.Held {
		for reason, n := range byReason {
			counter(c.held, float64(n), agent, reason)
		}
	}
	counter(c.entries, float64(s.Seq))
	if !s.Head.IsZero() {
		gauge(c.head, 1, s.Head.String())
	}
	c.approved.add(t.ApprovalSeconds)
	h, err := prometheus.NewConstHistogram(c.approval, c.approved.count, c.approved.sum, c.approved.cumulative())
	if err != nil {
		h = prometheus.NewInvalidMetric(c.approval, err)
	}
	out = append(out, h)

	c.seq, c.metrics = s.Seq, out
}

// histogram counts observations into approvalBuckets, continuing from the
// ones it has seen.
type histogram struct {
	seen   int      // observations counted so far
	counts []uint64 // per bucket, not cumulative
	count  uint64
	sum    float64
}

func (h *histogram) reset() {
	*h = histogram{counts: make([]uint64, len(approvalBuckets))}
}

// add counts the observations in xs after the ones seen before. xs must
// extend what add saw last; if it is shorter, the counts start over.
func (h *histogram) add(xs []float64) {
	if len(xs) < h.seen {
		h.reset()
	}
	for _, x := range xs[h.seen:] {
		// The first bound >= x: Prometheus buckets are upper-inclusive.
		if i := sort.SearchFloat64s(approvalBuckets, x); i < len(approvalBuckets) {
			h.counts[i]++
		}
		h.count++
		h.sum += x
	}
	h.seen = len(xs)
}

func (h *histogram) cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(approvalBuckets))
	var n uint64
	for i, le := range approvalBuckets {
		n += h.counts[i]
		out[le] = n
	}
	return out
}
