package metrics

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// approvalBuckets are the upper bounds of reconciler_proposal_approval_seconds:
// a minute to about 45 days.
var approvalBuckets = prometheus.ExponentialBuckets(60, 4, 9)

// stateCollector exports the last ledger.State observed as constant
// metrics, with a zero series for every label set the specs observed
// (ObserveSpec) name that the ledger has no value for yet. Observe and
// ObserveSpec rebuild the metrics, under the mutex, from copies; Collect
// sends them. Nothing it holds points into a State or a Spec.
type stateCollector struct {
	hourlyUSD float64

	runs, tokens, cost, workUnits, workUnitValue, roi, open *family
	decisions, violations, held, entries, head, specLoad    *family
	approval                                                *prometheus.Desc

	mu       sync.Mutex
	seq      uint64 // Seq of the state observed last
	approved histogram
	loaded   float64 // reconciler_spec_load_success
	metrics  []prometheus.Metric
}

// family is one metric family: the samples the ledger's state gives it
// and the zero series the specs name. Zero series are only ever added,
// so that no series vanishes within a process when an agent or a rule
// leaves the spec.
type family struct {
	desc         *prometheus.Desc
	typ          prometheus.ValueType
	ledger, zero map[string]sample // by labelKey
}

type sample struct {
	labels []string
	v      float64
}

func labelKey(labels []string) string { return strings.Join(labels, "\xff") }

func (f *family) set(v float64, labels ...string) {
	f.ledger[labelKey(labels)] = sample{labels: labels, v: v}
}

func (f *family) addZero(labels ...string) {
	k := labelKey(labels)
	if _, ok := f.zero[k]; !ok {
		f.zero[k] = sample{labels: labels}
	}
}

// emit appends the family's samples: the ledger's, and a zero for each
// zero series the ledger has no sample for.
func (f *family) emit(out []prometheus.Metric) []prometheus.Metric {
	add := func(s sample) {
		m, err := prometheus.NewConstMetric(f.desc, f.typ, s.v, s.labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(f.desc, err)
		}
		out = append(out, m)
	}
	for _, s := range f.ledger {
		add(s)
	}
	for k, s := range f.zero {
		if _, ok := f.ledger[k]; !ok {
			add(s)
		}
	}
	return out
}

var _ prometheus.Collector = (*stateCollector)(nil)

// ExecModel is the model label of an agent that names no model (an exec
// agent) in the zero series of reconciler_agent_tokens_total and
// reconciler_agent_cost_usd_total.
const ExecModel = "none"

// decisionOutcomes are the outcomes a policy decision has.
var decisionOutcomes = []string{policy.Deny, policy.RequireApproval}

// builtinRules are the rules every decision may name besides the spec's:
// policy "builtin", each with the outcomes it can fire with.
var builtinRules = []struct {
	rule     string
	outcomes []string
}{
	{"self-modification", decisionOutcomes},
	{policy.SecretRule, []string{policy.Deny}},
	{"one-review", []string{policy.RequireApproval}},
}

// holdKinds are the reasons a due run is held back.
var holdKinds = []string{policy.HoldFreeze, policy.HoldSuspended, policy.HoldRate, policy.HoldOpenProposals,
	policy.HoldConcurrency, policy.HoldBudgetDay, policy.HoldBudgetMonth}

func newStateCollector(hourlyUSD float64) *stateCollector {
	fam := func(typ prometheus.ValueType, name, help string, labels ...string) *family {
		return &family{desc: prometheus.NewDesc(name, help, labels, nil), typ: typ,
			ledger: map[string]sample{}, zero: map[string]sample{}}
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	if !(hourlyUSD >= 0) || hourlyUSD > math.MaxFloat64 {
		hourlyUSD = 0
	}
	c := &stateCollector{
		hourlyUSD: hourlyUSD,
		runs: fam(counter, "reconciler_agent_runs_total",
			"Agent runs by outcome: run.finished by its outcome (changed, no_change, duplicate_open, duplicate_rejected), run.failed as failed.", "agent", "outcome"),
		tokens: fam(counter, "reconciler_agent_tokens_total",
			"Model tokens used by agents, by direction (input, output); model \"none\" for agents without a model.", "agent", "model", "direction"),
		cost: fam(counter, "reconciler_agent_cost_usd_total",
			"Money spent on model calls, in US dollars, every attempt of every run included.", "agent", "model"),
		workUnits: fam(counter, "reconciler_work_units_total",
			"Proposals that ended, by work-unit kind and outcome (merged, rejected, superseded).", "agent", "kind", "outcome"),
		workUnitValue: fam(counter, "reconciler_work_unit_value_usd_total",
			"Declared human time of merged work units at the configured hourly rate, in US dollars.", "agent"),
		roi: fam(gauge, "reconciler_agent_roi_ratio",
			"Value of merged work units divided by model spend, per agent, over the whole ledger; 0 while nothing was spent.", "agent"),
		open: fam(gauge, "reconciler_proposals_open",
			"Open proposals per agent.", "agent"),
		decisions: fam(counter, "reconciler_policy_decisions_total",
			"Policy rules that fired, by the decision they fired in (deny, require_approval).", "policy", "rule", "decision"),
		violations: fam(counter, "reconciler_policy_violations_total",
			"Policy violations on the ledger (unsatisfied merges, foreign branches, unapproved keys), per agent (\"\" for none).", "agent"),
		held: fam(counter, "reconciler_runs_held_total",
			"Due runs held back, by reason (freeze, suspended, runs_per_hour, open_proposals, concurrency, cost_per_day, cost_per_month).", "agent", "reason"),
		entries: fam(counter, "reconciler_ledger_entries_total",
			"Entries on the evidence branch."),
		head: fam(gauge, "reconciler_ledger_head_info",
			"The evidence-branch commit of the last ledger entry read (one series, value 1; commit \"\" before there is one).", "commit"),
		specLoad: fam(gauge, "reconciler_spec_load_success",
			"Whether the spec at the head of the protected branch loaded in the last pass (1) or not, or no pass ended yet (0)."),
		approval: prometheus.NewDesc("reconciler_proposal_approval_seconds",
			"Time from proposal.opened to proposal.merged.", nil, nil),
	}
	c.violations.addZero("")
	c.approved.reset()
	c.observe(ledger.NewState())
	return c
}

func (c *stateCollector) families() []*family {
	return []*family{c.runs, c.tokens, c.cost, c.workUnits, c.workUnitValue, c.roi, c.open,
		c.decisions, c.violations, c.held, c.entries, c.head, c.specLoad}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.families() {
		ch <- f.desc
	}
	ch <- c.approval
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.metrics {
		ch <- m
	}
}

// agentZeros adds the zero series every agent has, whatever its spec:
// runs by outcome, value, ROI, open proposals, violations and holds.
func (c *stateCollector) agentZeros(agent string) {
	for _, o := range runOutcomes {
		c.runs.addZero(agent, o)
	}
	c.workUnitValue.addZero(agent)
	c.roi.addZero(agent)
	c.open.addZero(agent)
	c.violations.addZero(agent)
	for _, k := range holdKinds {
		c.held.addZero(agent, k)
	}
}

func (c *stateCollector) observeSpec(spec *hclspec.Spec, loaded bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded = 0
	if loaded {
		c.loaded = 1
	}
	if spec != nil {
		for _, a := range spec.Agents {
			c.agentZeros(a.Name)
			model := a.Model
			if model == "" {
				model = ExecModel
			}
			c.tokens.addZero(a.Name, model, "input")
			c.tokens.addZero(a.Name, model, "output")
			c.cost.addZero(a.Name, model)
			for _, o := range workUnitOutcomes {
				c.workUnits.addZero(a.Name, a.WorkUnit.Kind, o)
			}
		}
		for _, p := range spec.Policies {
			for _, r := range p.Denies {
				for _, d := range decisionOutcomes {
					c.decisions.addZero(p.Name, r.Name, d)
				}
			}
			for _, r := range p.Approvals {
				for _, d := range decisionOutcomes {
					c.decisions.addZero(p.Name, r.Name, d)
				}
			}
		}
		for _, b := range builtinRules {
			for _, d := range b.outcomes {
				c.decisions.addZero(policy.BuiltinPolicy, b.rule, d)
			}
		}
	}
	c.build()
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
	for _, f := range c.families() {
		if f != c.specLoad {
			clear(f.ledger)
		}
	}
	t := &s.Totals
	for agent, byOutcome := range t.Runs {
		for outcome, n := range byOutcome {
			c.runs.set(float64(n), agent, outcome)
		}
	}
	for agent, byModel := range t.Tokens {
		for model, u := range byModel {
			c.tokens.set(float64(u[0]), agent, model, "input")
			c.tokens.set(float64(u[1]), agent, model, "output")
		}
	}
	for agent, byModel := range t.CostUSD {
		for model, usd := range byModel {
			c.cost.set(usd, agent, model)
		}
	}
	for agent, byKind := range t.WorkUnits {
		for kind, byOutcome := range byKind {
			for outcome, n := range byOutcome {
				c.workUnits.set(float64(n), agent, kind, outcome)
			}
		}
	}
	for agent, minutes := range t.MergedMinutes {
		c.workUnitValue.set(minutes/60*c.hourlyUSD, agent)
	}
	// The ratio is the one `reconciler roi` prints: the same function
	// over the same state.
	for _, a := range ROI(s, time.Time{}, c.hourlyUSD).Agents {
		c.roi.set(a.ROI, a.Agent)
	}
	for _, agent := range s.Agents() {
		c.agentZeros(agent)
		c.open.set(float64(s.OpenProposals(agent)), agent)
	}
	for policy, byRule := range t.Decisions {
		for rule, byDecision := range byRule {
			for decision, n := range byDecision {
				c.decisions.set(float64(n), policy, rule, decision)
			}
		}
	}
	for agent, n := range t.Violations {
		c.violations.set(float64(n), agent)
	}
	for agent, byReason := range t.Held {
		for reason, n := range byReason {
			c.held.set(float64(n), agent, reason)
		}
	}
	c.entries.set(float64(s.Seq))
	head := ""
	if !s.Head.IsZero() {
		head = s.Head.String()
	}
	c.head.set(1, head)
	c.approved.add(t.ApprovalSeconds)
	c.seq = s.Seq
	c.build()
}

// build makes the metrics Collect sends from the families. The caller
// holds c.mu.
func (c *stateCollector) build() {
	c.specLoad.set(c.loaded)
	var out []prometheus.Metric
	for _, f := range c.families() {
		out = f.emit(out)
	}
	h, err := prometheus.NewConstHistogram(c.approval, c.approved.count, c.approved.sum, c.approved.cumulative())
	if err != nil {
		h = prometheus.NewInvalidMetric(c.approval, err)
	}
	c.metrics = append(out, h)
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
