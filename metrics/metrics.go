// Package metrics exports what the reconciler did as Prometheus metrics,
// and computes the return on investment of the agents' work (ROI), which
// `reconciler roi` prints and reconciler_agent_roi_ratio exports.
//
// Everything the ledger records is read from the one fold over it,
// ledger.State: Observe takes the state after each pass and the exposition
// is a copy of its totals, so the metrics always agree with the audit trail
// and a restart, which rebuilds the state from the ledger, loses nothing.
// Only what never reaches the ledger (the duration and errors of passes,
// whether the spec loaded) is counted here.
//
// Every series a dashboard or an alert needs exists before anything
// happened, at zero: the unlabelled ones from New, and one per agent,
// model, work-unit kind and policy rule of each spec ObserveSpec sees.
// docs/metrics.md lists them.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// Metrics holds the reconciler's collectors in their own registry.
type Metrics struct {
	reg        *prometheus.Registry
	state      *stateCollector
	duration   prometheus.Histogram
	passErrors prometheus.Counter
}

// New returns Metrics whose work-unit value is human minutes at hourlyUSD
// per hour (a negative, NaN or infinite rate counts as 0). The series that
// carry no labels exist from the start, at zero: the ledger's entries and
// head (commit ""), the approval histogram, whether the spec loaded, and
// the passes' duration and errors.
func New(hourlyUSD float64) *Metrics {
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		state: newStateCollector(hourlyUSD),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reconciler_reconcile_duration_seconds",
			Help: "Duration of reconcile passes.", Buckets: prometheus.DefBuckets}),
		passErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "reconciler_reconcile_errors_total",
			Help: "Reconcile passes that ended with an error."}),
	}
	m.reg.MustRegister(m.state, m.duration, m.passErrors,
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

// Observe sets every series derived from the ledger to what s says: the
// totals, the open proposals and the head. The reconciler calls it after
// each pass with the ledger's state. Observe copies what it exports and
// keeps no reference to s, which the caller may go on applying entries to.
//
// A state behind the last one observed (a lower Seq) is ignored, so the
// counters never go down within a process; the reconciler never accepts a
// ledger shorter than one it has seen, so such a state is stale, not news.
// A nil state is ignored.
func (m *Metrics) Observe(s *ledger.State) { m.state.observe(s) }

// ObserveSpec records the spec in force (nil before one loaded) and
// whether the spec at the head of the protected branch loaded
// (reconciler_spec_load_success). Each agent of the spec gets a zero
// series, where the ledger has none yet, of its runs by outcome, its
// tokens and cost under its model (ExecModel for an agent without one),
// its work units of its kind by outcome, its work-unit value, ROI, open
// proposals, violations and holds; each deny and require_approval rule
// of its policies, and the builtin rules, get one per decision. Series
// of agents and rules that leave the spec stay, as counters must: within
// a process none vanishes. ObserveSpec keeps no reference to spec.
func (m *Metrics) ObserveSpec(spec *hclspec.Spec, loaded bool) { m.state.observeSpec(spec, loaded) }
