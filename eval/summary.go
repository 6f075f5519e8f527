package eval

import (
	"fmt"
	"io"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Summary counts results, in all and per agent.
type Summary struct {
	Passed   int
	Failed   int
	CostUSD  float64
	SpentUSD float64
	Agents   map[string]*AgentSummary
}

// AgentSummary counts one agent's results.
type AgentSummary struct {
	Passed int
	Failed int
}

// PassRatio is the share of the agent's scenarios that passed, 0 to 1.
func (s *AgentSummary) PassRatio() float64 {
	if s.Passed+s.Failed == 0 {
		return 0
	}
	return float64(s.Passed) / float64(s.Passed+s.Failed)
}

// Summarize counts the results.
func Summarize(results []Result) Summary {
	s := Summary{Agents: map[string]*AgentSummary{}}
	for _, r := range results {
		a := s.Agents[r.Scenario.Agent.Name]
		if a == nil {
			a = &AgentSummary{}
			s.Agents[r.Scenario.Agent.Name] = a
		}
		if r.Pass {
			s.Passed++
			a.Passed++
		} else {
			s.Failed++
			a.Failed++
		}
		s.CostUSD += r.CostUSD
		s.SpentUSD += r.SpentUSD
	}
	return s
}

// WriteMetrics writes the summary in the Prometheus text format, as the
// node exporter's textfile collector reads it:
// reconciler_eval_pass_ratio{agent} (0 to 1),
// reconciler_eval_scenarios{agent,result} (passed, failed) and
// reconciler_eval_cost_usd{agent}, and
// reconciler_eval_last_run_timestamp_seconds. Only agents with scenarios
// among the results have series: an agent without evals has no ratio.
func WriteMetrics(w io.Writer, results []Result, unixTime float64) error {
	reg := prometheus.NewPedanticRegistry()
	ratio := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_eval_pass_ratio",
		Help: "Share of the agent's eval scenarios that passed in the last run of reconciler eval, 0 to 1."}, []string{"agent"})
	count := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_eval_scenarios",
		Help: "Eval scenarios of the agent in the last run of reconciler eval, by result (passed, failed)."}, []string{"agent", "result"})
	cost := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reconciler_eval_cost_usd",
		Help: "What the model exchanges of the agent's eval scenarios cost at the provider's prices (recorded ones included), in the last run."}, []string{"agent"})
	last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "reconciler_eval_last_run_timestamp_seconds",
		Help: "When reconciler eval last wrote these metrics, as a Unix time."})
	reg.MustRegister(ratio, count, cost, last)
	s := Summarize(results)
	costs := map[string]float64{}
	for _, r := range results {
		costs[r.Scenario.Agent.Name] += r.CostUSD
	}
	var names []string
	for n := range s.Agents {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := s.Agents[n]
		ratio.WithLabelValues(n).Set(a.PassRatio())
		count.WithLabelValues(n, "passed").Set(float64(a.Passed))
		count.WithLabelValues(n, "failed").Set(float64(a.Failed))
		cost.WithLabelValues(n).Set(costs[n])
	}
	last.Set(unixTime)
	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("eval metrics: %w", err)
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("eval metrics: %w", err)
		}
	}
	return nil
}
