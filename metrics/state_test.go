package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/metrics"
)

// ledgerSeries are the series Observe sets from the ledger's state.
var ledgerSeries = []string{
	"reconciler_agent_runs_total",
	"reconciler_agent_tokens_total",
	"reconciler_agent_cost_usd_total",
	"reconciler_work_units_total",
	"reconciler_work_unit_value_usd_total",
	"reconciler_agent_roi_ratio",
	"reconciler_proposals_open",
	"reconciler_policy_decisions_total",
	"reconciler_policy_violations_total",
	"reconciler_runs_held_total",
	"reconciler_ledger_entries_total",
	"reconciler_ledger_head_info",
	"reconciler_proposal_approval_seconds",
}

func TestObserveExportsTheState(t *testing.T) {
	c := busyLedger(t)
	m := metrics.New(120)
	m.Observe(c.s)

	want := fmt.Sprintf(`
# HELP reconciler_agent_runs_total Agent runs by outcome (changed, no_change, duplicate_open, duplicate_rejected, failed).
# TYPE reconciler_agent_runs_total counter
reconciler_agent_runs_total{agent="env",outcome="changed"} 1
reconciler_agent_runs_total{agent="pinner",outcome="changed"} 2
reconciler_agent_runs_total{agent="pinner",outcome="failed"} 1
# HELP reconciler_agent_tokens_total Model tokens used by agents, by direction (input, output).
# TYPE reconciler_agent_tokens_total counter
reconciler_agent_tokens_total{agent="env",direction="input",model="llama3"} 50
reconciler_agent_tokens_total{agent="env",direction="output",model="llama3"} 5
reconciler_agent_tokens_total{agent="pinner",direction="input",model="gpt-4o-mini"} 1400
reconciler_agent_tokens_total{agent="pinner",direction="output",model="gpt-4o-mini"} 300
# HELP reconciler_agent_cost_usd_total Money spent on model calls, in US dollars.
# TYPE reconciler_agent_cost_usd_total counter
reconciler_agent_cost_usd_total{agent="pinner",model="gpt-4o-mini"} 0.75
# HELP reconciler_work_units_total Proposals that ended, by outcome (merged, rejected, superseded).
# TYPE reconciler_work_units_total counter
reconciler_work_units_total{agent="pinner",kind="image-pin",outcome="merged"} 1
reconciler_work_units_total{agent="pinner",kind="image-pin",outcome="rejected"} 1
# HELP reconciler_work_unit_value_usd_total Declared human time of merged work units, in US dollars.
# TYPE reconciler_work_unit_value_usd_total counter
reconciler_work_unit_value_usd_total{agent="pinner"} 60
# HELP reconciler_agent_roi_ratio Value of merged work units divided by model spend, per agent (absent while nothing was spent).
# TYPE reconciler_agent_roi_ratio gauge
reconciler_agent_roi_ratio{agent="pinner"} 80
# HELP reconciler_proposals_open Open proposals per agent.
# TYPE reconciler_proposals_open gauge
reconciler_proposals_open{agent="env"} 1
reconciler_proposals_open{agent="pinner"} 0
# HELP reconciler_policy_decisions_total Policy rules that fired, by decision.
# TYPE reconciler_policy_decisions_total counter
reconciler_policy_decisions_total{decision="require_approval",policy="protect-prod",rule="production"} 1
# HELP reconciler_policy_violations_total Policy violations on the ledger (unsatisfied merges, foreign branches, unapproved keys), per agent.
# TYPE reconciler_policy_violations_total counter
reconciler_policy_violations_total{agent=""} 1
# HELP reconciler_runs_held_total Due runs held back, by reason (freeze, suspended, runs_per_hour, open_proposals, concurrency, cost_per_day, cost_per_month).
# TYPE reconciler_runs_held_total counter
reconciler_runs_held_total{agent="pinner",reason="freeze"} 1
# HELP reconciler_ledger_entries_total Entries on the evidence branch.
# TYPE reconciler_ledger_entries_total counter
reconciler_ledger_entries_total 17
# HELP reconciler_ledger_head_info The evidence-branch commit of the last ledger entry read (one series, value 1).
# TYPE reconciler_ledger_head_info gauge
reconciler_ledger_head_info{commit="%s"} 1
# HELP reconciler_proposal_approval_seconds Time from proposal.opened to proposal.merged.
# TYPE reconciler_proposal_approval_seconds histogram
reconciler_proposal_approval_seconds_bucket{le="60"} 0
reconciler_proposal_approval_seconds_bucket{le="240"} 0
reconciler_proposal_approval_seconds_bucket{le="960"} 0
reconciler_proposal_approval_seconds_bucket{le="3840"} 0
reconciler_proposal_approval_seconds_bucket{le="15360"} 1
reconciler_proposal_approval_seconds_bucket{le="61440"} 1
reconciler_proposal_approval_seconds_bucket{le="245760"} 1
reconciler_proposal_approval_seconds_bucket{le="983040"} 1
reconciler_proposal_approval_seconds_bucket{le="3.93216e+06"} 1
reconciler_proposal_approval_seconds_bucket{le="+Inf"} 1
reconciler_proposal_approval_seconds_sum 5400
reconciler_proposal_approval_seconds_count 1
`, c.s.Head)
	if c.s.Seq != 17 {
		t.Fatalf("the busy ledger has %d entries; update the expected exposition", c.s.Seq)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), ledgerSeries...); err != nil {
		t.Error(err)
	}
}

// counters returns every counter series of the registry (histogram buckets,
// counts and sums included) by name and labels.
func counters(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "reconciler_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType().String() {
			case "COUNTER":
				out[key] = m.GetCounter().GetValue()
			case "HISTOGRAM":
				h := m.GetHistogram()
				out[key+"_count"] = float64(h.GetSampleCount())
				out[key+"_sum"] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[fmt.Sprintf("%s_bucket{le=%g}", key, b.GetUpperBound())] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

func TestCountersNeverGoDown(t *testing.T) {
	c := newChain(t)
	c.run(t0, "pinner", "r1", ledger.OutcomeChanged, "gpt-4o-mini", 1000, 200, 0.5)
	c.opened(t0, "pinner", "r1")
	c.merged(t0.Add(time.Hour), "pinner", "r1", imagePin)
	c.held(t0.Add(time.Hour), "pinner", "freeze")
	m := metrics.New(120)
	m.Observe(c.s)
	before := counters(t, m.Registry())
	old := c.s.Clone()

	c.run(t0.Add(2*time.Hour), "pinner", "r2", ledger.OutcomeNoChange, "gpt-4o-mini", 300, 0, 0.1)
	c.failed(t0.Add(3*time.Hour), "env", "r3")
	c.held(t0.Add(3*time.Hour), "pinner", "freeze")
	m.Observe(c.s)
	after := counters(t, m.Registry())

	grew := 0
	for k, v := range before {
		w, ok := after[k]
		switch {
		case !ok:
			t.Errorf("%s vanished after the second Observe", k)
		case w < v:
			t.Errorf("%s went down from %g to %g", k, v, w)
		case w > v:
			grew++
		}
	}
	if grew == 0 || len(after) <= len(before) {
		t.Errorf("nothing grew: before %v, after %v", before, after)
	}

	t.Run("a stale state is ignored", func(t *testing.T) {
		m.Observe(old)
		if got := counters(t, m.Registry()); !equalMaps(got, after) {
			t.Errorf("observing an older state changed the counters:\n got %v\nwant %v", got, after)
		}
	})
	t.Run("the state is copied, not kept", func(t *testing.T) {
		c.run(t0.Add(4*time.Hour), "pinner", "r4", ledger.OutcomeChanged, "gpt-4o-mini", 1, 1, 1)
		c.opened(t0.Add(4*time.Hour), "pinner", "r4")
		if got := counters(t, m.Registry()); !equalMaps(got, after) {
			t.Errorf("applying entries after Observe changed the exposition:\n got %v\nwant %v", got, after)
		}
	})
}

func equalMaps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestHeadInfoFollowsTheHead(t *testing.T) {
	m := metrics.New(120)
	if n, err := testutil.GatherAndCount(m.Registry(), "reconciler_ledger_head_info"); err != nil || n != 0 {
		t.Fatalf("before any Observe: %d head series (err %v), want none", n, err)
	}
	c := newChain(t)
	head := func(commit fmt.Stringer) string {
		return fmt.Sprintf(`
# HELP reconciler_ledger_head_info The evidence-branch commit of the last ledger entry read (one series, value 1).
# TYPE reconciler_ledger_head_info gauge
reconciler_ledger_head_info{commit="%s"} 1
`, commit)
	}
	first := c.add(t0, ledger.Event{Type: ledger.SpecLoaded, SpecCommit: commitID("spec"), SpecDigest: "sha256:spec"})
	m.Observe(c.s)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head(first.Commit)), "reconciler_ledger_head_info"); err != nil {
		t.Error(err)
	}
	second := c.add(t0.Add(time.Minute), ledger.Event{Type: ledger.SpecLoaded, SpecCommit: commitID("spec 2"), SpecDigest: "sha256:spec2"})
	if first.Commit == second.Commit {
		t.Fatal("the test chain gave two entries the same commit")
	}
	m.Observe(c.s)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head(second.Commit)), "reconciler_ledger_head_info"); err != nil {
		t.Error(err)
	}
}

func TestROI(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(c *chain)
		want string // reconciler_agent_roi_ratio samples
	}{
		{
			name: "value over spend",
			add: func(c *chain) {
				c.run(t0, "pinner", "r1", ledger.OutcomeChanged, "gpt-4o-mini", 10, 10, 0.25)
				c.run(t0, "pinner", "r2", ledger.OutcomeChanged, "gpt-4o", 10, 10, 0.25)
				c.opened(t0, "pinner", "r1")
				c.merged(t0.Add(time.Hour), "pinner", "r1", &ledger.WorkUnit{Kind: "image-pin", HumanMinutes: 45})
			},
			want: `reconciler_agent_roi_ratio{agent="pinner"} 360`, // 45 min at 240 USD/h is 180 USD, over 0.5 USD
		},
		{
			name: "spend without merged work is zero",
			add: func(c *chain) {
				c.run(t0, "pinner", "r1", ledger.OutcomeChanged, "gpt-4o-mini", 10, 10, 0.5)
				c.opened(t0, "pinner", "r1")
				c.rejected(t0.Add(time.Hour), "pinner", "r1", imagePin)
			},
			want: `reconciler_agent_roi_ratio{agent="pinner"} 0`,
		},
		{
			name: "merged work without spend is absent",
			add: func(c *chain) {
				c.run(t0, "bumper", "r1", ledger.OutcomeChanged, "exec", 0, 0, 0)
				c.opened(t0, "bumper", "r1")
				c.merged(t0.Add(time.Hour), "bumper", "r1", imagePin)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChain(t)
			tc.add(c)
			m := metrics.New(240)
			m.Observe(c.s)
			want := ""
			if tc.want != "" {
				want = `
# HELP reconciler_agent_roi_ratio Value of merged work units divided by model spend, per agent (absent while nothing was spent).
# TYPE reconciler_agent_roi_ratio gauge
` + tc.want + "\n"
			}
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "reconciler_agent_roi_ratio"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestApprovalHistogram(t *testing.T) {
	const want = `
# HELP reconciler_proposal_approval_seconds Time from proposal.opened to proposal.merged.
# TYPE reconciler_proposal_approval_seconds histogram
reconciler_proposal_approval_seconds_bucket{le="60"} 1
reconciler_proposal_approval_seconds_bucket{le="240"} 1
reconciler_proposal_approval_seconds_bucket{le="960"} 2
reconciler_proposal_approval_seconds_bucket{le="3840"} 2
reconciler_proposal_approval_seconds_bucket{le="15360"} 3
reconciler_proposal_approval_seconds_bucket{le="61440"} 3
reconciler_proposal_approval_seconds_bucket{le="245760"} 3
reconciler_proposal_approval_seconds_bucket{le="983040"} 4
reconciler_proposal_approval_seconds_bucket{le="3.93216e+06"} 4
reconciler_proposal_approval_seconds_bucket{le="+Inf"} 5
reconciler_proposal_approval_seconds_sum 1.123956e+07
reconciler_proposal_approval_seconds_count 5
`
	// Merged after 60s (on the bound: upper-inclusive), 5m, 2h, 10 days
	// and 120 days; one rejected after 1s, which is no approval.
	waits := []time.Duration{60 * time.Second, 5 * time.Minute, 2 * time.Hour, 240 * time.Hour, 2880 * time.Hour}
	c := newChain(t)
	incremental := metrics.New(120)
	for i, wait := range waits {
		run := fmt.Sprintf("r%d", i)
		c.run(t0, "pinner", run, ledger.OutcomeChanged, "gpt-4o-mini", 1, 1, 0.01)
		c.opened(t0, "pinner", run)
		c.merged(t0.Add(wait), "pinner", run, imagePin)
		incremental.Observe(c.s)
	}
	c.run(t0, "pinner", "rejected", ledger.OutcomeChanged, "gpt-4o-mini", 1, 1, 0.01)
	c.opened(t0, "pinner", "rejected")
	c.rejected(t0.Add(time.Second), "pinner", "rejected", imagePin)
	incremental.Observe(c.s)

	once := metrics.New(120)
	once.Observe(c.s)
	for name, m := range map[string]*metrics.Metrics{"observed after each merge": incremental, "observed once": once} {
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "reconciler_proposal_approval_seconds"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// scrape returns the text exposition m's handler serves.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v", resp.Status, err)
	}
	return string(b)
}

func TestRestartRebuildsTheTotals(t *testing.T) {
	c := busyLedger(t)
	// The first process saw the ledger grow, observing after each entry.
	before := metrics.New(120)
	s := ledger.NewState()
	for _, e := range c.entries {
		if err := s.Apply(e); err != nil {
			t.Fatal(err)
		}
		before.Observe(s)
	}
	before.Pass(time.Second, nil)
	text := scrape(t, before)
	if !strings.Contains(text, "\nreconciler_ledger_entries_total 17\n") {
		t.Fatalf("the first process did not see the whole ledger:\n%s", text)
	}

	// The next process folds the same entries from nothing and observes
	// once: the series from the ledger agree, process-local ones (passes)
	// start over.
	after := metrics.New(120)
	after.Observe(c.replay())
	srv := httptest.NewServer(after.Handler())
	defer srv.Close()
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(text), ledgerSeries...); err != nil {
		t.Error(err)
	}
}

func TestObserveWhileScraped(t *testing.T) {
	c := busyLedger(t)
	m := metrics.New(120)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if _, err := m.Registry().Gather(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range 20 {
		c.held(t0.Add(time.Duration(i)*time.Minute), "pinner", "freeze")
		m.Observe(c.s)
	}
	wg.Wait()
}
