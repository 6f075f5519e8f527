// Package metrics exports what the reconciler did as Prometheus metrics,
// derived from ledger entries: fed every entry of the ledger at start and
// each new one after, its totals survive restarts and always agree with the
// audit trail.
package metrics

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentgitops/reconciler/ledger"
)

// Metrics holds the reconciler's collectors in their own registry.
type Metrics struct {
	reg *prometheus.Registry

	runs          *prometheus.CounterVec
	tokens        *prometheus.CounterVec
	cost          *prometheus.CounterVec
	workUnits     *prometheus.CounterVec
	workUnitValue *prometheus.CounterVec
	roi           *prometheus.GaugeVec
	open          *prometheus.GaugeVec
	approval      prometheus.Histogram
	decisions     *prometheus.CounterVec
	violations    *prometheus.CounterVec
	held          *prometheus.CounterVec
	duration      prometheus.Histogram
	passErrors    prometheus.Counter
	entries       prometheus.Counter

	hourlyUSD float64
	opened    map[string]time.Time // run id -> proposal.opened time
	value     map[string]float64   // agent -> value in USD
	spent     map[string]float64   // agent -> cost in USD
}

// New returns Metrics whose work-unit value is human minutes at hourlyUSD
// per hour.
func New(hourlyUSD float64) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		hourlyUSD: hourlyUSD,
		opened:    map[string]time.Time{},
		value:     map[string]float64{},
		spent:     map[string]float64{},
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_agent_runs_total",
			Help: "Agent runs by outcome (changed, no_change, duplicate_open, duplicate_rejected, failed)."}, []string{"agent", "outcome"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_agent_tokens_total",
			Help: "Model tokens used by agents, by direction (input, output)."}, []string{"agent", "model", "direction"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_agent_cost_usd_total",
			Help: "Money spent on model calls, in US dollars."}, []string{"agent", "model"}),
		workUnits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_work_units_total",
			Help: "Proposals that ended, by outcome (merged, rejected, superseded)."}, []string{"agent", "kind", "outcome"}),
		workUnitValue: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_work_unit_value_usd_total",
			Help: "Declared human time of merged work units, in US dollars."}, []string{"agent"}),
		roi: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_agent_roi_ratio",
			Help: "Value of merged work units divided by model spend, per agent (absent while nothing was spent)."}, []string{"agent"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_proposals_open",
			Help: "Open proposals per agent."}, []string{"agent"}),
		approval: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reconciler_proposal_approval_seconds",
			Help: "Time from proposal.opened to proposal.merged.", Buckets: prometheus.ExponentialBuckets(60, 4, 9)}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_policy_decisions_total",
			Help: "Policy rules that fired, by decision."}, []string{"policy", "rule", "decision"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_policy_violations_total",
			Help: "Merges that did not satisfy their policy decision."}, []string{"agent"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciler_runs_held_total",
			Help: "Due runs held back, by reason (freeze, suspended, runs_per_hour, open_proposals, concurrency, cost_per_day, cost_per_month)."}, []string{"agent", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reconciler_reconcile_duration_seconds",
			Help: "Duration of reconcile passes.", Buckets: prometheus.DefBuckets}),
		passErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "reconciler_reconcile_errors_total",
			Help: "Reconcile passes that ended with an error."}),
		entries: prometheus.NewCounter(prometheus.CounterOpts{Name: "reconciler_ledger_entries_total",
			Help: "Entries on the evidence branch."}),
	}
	m.reg.MustRegister(m.runs, m.tokens, m.cost, m.workUnits, m.workUnitValue, m.roi, m.open, m.approval,
		m.decisions, m.violations, m.held, m.duration, m.passErrors, m.entries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry holding the metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Pass records one reconcile pass.
func (m *Metrics) Pass(d time.Duration, err error) {
	m.duration.Observe(d.Seconds())
	if err != nil {
		m.passErrors.Inc()
	}
}

// Entry accounts for one ledger entry. Entries must be given once each, in
// order.
func (m *Metrics) Entry(e ledger.Entry) {
	m.entries.Inc()
	switch e.Type {
	case ledger.RunFinished, ledger.RunFailed:
		outcome := e.Outcome
		if e.Type == ledger.RunFailed {
			outcome = "failed"
		}
		m.runs.WithLabelValues(e.Agent, outcome).Inc()
		if e.Usage != nil {
			m.tokens.WithLabelValues(e.Agent, e.Model, "input").Add(float64(e.Usage.InputTokens))
			m.tokens.WithLabelValues(e.Agent, e.Model, "output").Add(float64(e.Usage.OutputTokens))
		}
		if e.CostUSD > 0 {
			m.cost.WithLabelValues(e.Agent, e.Model).Add(e.CostUSD)
			m.spent[e.Agent] += e.CostUSD
			m.updateROI(e.Agent)
		}
	case ledger.RunHeld, ledger.BudgetExceeded:
		if e.Hold != nil {
			m.held.WithLabelValues(e.Agent, e.Hold.Kind).Inc()
		}
	case ledger.PolicyDecision:
		var d struct {
			Outcome string `json:"outcome"`
			Rules   []struct {
				Policy string `json:"policy"`
				Rule   string `json:"rule"`
			} `json:"rules"`
		}
		if json.Unmarshal(e.Decision, &d) == nil {
			for _, r := range d.Rules {
				m.decisions.WithLabelValues(r.Policy, r.Rule, d.Outcome).Inc()
			}
		}
	case ledger.ProposalOpened:
		m.open.WithLabelValues(e.Agent).Inc()
		m.opened[e.RunID] = e.Time
	case ledger.ProposalMerged, ledger.ProposalRejected, ledger.ProposalSuperseded:
		m.open.WithLabelValues(e.Agent).Dec()
		kind := ""
		if e.WorkUnit != nil {
			kind = e.WorkUnit.Kind
		}
		outcome := map[string]string{ledger.ProposalMerged: "merged", ledger.ProposalRejected: "rejected", ledger.ProposalSuperseded: "superseded"}[e.Type]
		m.workUnits.WithLabelValues(e.Agent, kind, outcome).Inc()
		if e.Type == ledger.ProposalMerged {
			if t, ok := m.opened[e.RunID]; ok {
				m.approval.Observe(e.Time.Sub(t).Seconds())
			}
			if e.WorkUnit != nil {
				v := e.WorkUnit.HumanMinutes / 60 * m.hourlyUSD
				m.workUnitValue.WithLabelValues(e.Agent).Add(v)
				m.value[e.Agent] += v
				m.updateROI(e.Agent)
			}
		}
		delete(m.opened, e.RunID)
	case ledger.PolicyViolation:
		m.violations.WithLabelValues(e.Agent).Inc()
	}
}

func (m *Metrics) updateROI(agent string) {
	if spent := m.spent[agent]; spent > 0 {
		m.roi.WithLabelValues(agent).Set(m.value[agent] / spent)
	}
}
