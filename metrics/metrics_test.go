package metrics_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/metrics"
)

func entry(typ, agent, run string, at time.Time, f func(*ledger.Entry)) ledger.Entry {
	e := ledger.Entry{Predicate: ledger.Predicate{Time: at, Event: ledger.Event{Type: typ, Agent: agent, RunID: run}}}
	if f != nil {
		f(&e)
	}
	return e
}

func TestMetricsFromLedger(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	dec, _ := json.Marshal(map[string]any{"outcome": "require_approval", "rules": []map[string]string{{"policy": "protect-prod", "rule": "production"}}})
	wu := &ledger.WorkUnit{Kind: "image-pin", HumanMinutes: 30}
	m := metrics.New(120)
	for _, e := range []ledger.Entry{
		entry(ledger.RunFinished, "pinner", "r1", t0, func(e *ledger.Entry) {
			e.Outcome, e.Model, e.CostUSD = "changed", "gpt-4o-mini", 0.5
			e.Usage = &ledger.Usage{InputTokens: 1000, OutputTokens: 200}
		}),
		entry(ledger.PolicyDecision, "pinner", "r1", t0, func(e *ledger.Entry) { e.Decision = dec }),
		entry(ledger.ProposalOpened, "pinner", "r1", t0, nil),
		entry(ledger.ProposalMerged, "pinner", "r1", t0.Add(90*time.Minute), func(e *ledger.Entry) { e.WorkUnit = wu }),
		entry(ledger.RunFailed, "pinner", "r2", t0, nil),
		entry(ledger.ProposalOpened, "env", "r3", t0, nil),
	} {
		m.Entry(e)
	}
	m.Pass(2*time.Second, nil)

	expected := `
# HELP reconciler_agent_runs_total Agent runs by outcome (changed, no_change, duplicate_open, duplicate_rejected, failed).
# TYPE reconciler_agent_runs_total counter
reconciler_agent_runs_total{agent="pinner",outcome="changed"} 1
reconciler_agent_runs_total{agent="pinner",outcome="failed"} 1
# HELP reconciler_agent_tokens_total Model tokens used by agents, by direction (input, output).
# TYPE reconciler_agent_tokens_total counter
reconciler_agent_tokens_total{agent="pinner",direction="input",model="gpt-4o-mini"} 1000
reconciler_agent_tokens_total{agent="pinner",direction="output",model="gpt-4o-mini"} 200
# HELP reconciler_proposals_open Open proposals per agent.
# TYPE reconciler_proposals_open gauge
reconciler_proposals_open{agent="env"} 1
reconciler_proposals_open{agent="pinner"} 0
# HELP reconciler_work_unit_value_usd_total Declared human time of merged work units, in US dollars.
# TYPE reconciler_work_unit_value_usd_total counter
reconciler_work_unit_value_usd_total{agent="pinner"} 60
# HELP reconciler_agent_roi_ratio Value of merged work units divided by model spend, per agent (absent while nothing was spent).
# TYPE reconciler_agent_roi_ratio gauge
reconciler_agent_roi_ratio{agent="pinner"} 120
# HELP reconciler_policy_decisions_total Policy rules that fired, by decision.
# TYPE reconciler_policy_decisions_total counter
reconciler_policy_decisions_total{decision="require_approval",policy="protect-prod",rule="production"} 1
# HELP reconciler_ledger_entries_total Entries on the evidence branch.
# TYPE reconciler_ledger_entries_total counter
reconciler_ledger_entries_total 6
`
	names := []string{"reconciler_agent_runs_total", "reconciler_agent_tokens_total", "reconciler_proposals_open",
		"reconciler_work_unit_value_usd_total", "reconciler_agent_roi_ratio", "reconciler_policy_decisions_total", "reconciler_ledger_entries_total"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(expected), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.Registry(), "reconciler_proposal_approval_seconds"); n != 1 {
		t.Errorf("approval histogram has %d series", n)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "reconciler_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}
