package metrics_test

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

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
	"reconciler_spec_load_success",
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// exposition is the text exposition of the named families in g, sorted
// as the Prometheus text format writes them.
func exposition(t *testing.T, g prometheus.Gatherer, names ...string) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestObserveExportsTheState(t *testing.T) {
	c := busyLedger(t)
	m := metrics.New(120)
	m.Observe(c.s)
	if c.s.Seq != 17 {
		t.Fatalf("the busy ledger has %d entries; update testdata/busy-ledger.prom", c.s.Seq)
	}
	// The head is the one commit the golden file cannot know in advance.
	got := strings.ReplaceAll(exposition(t, m.Registry(), ledgerSeries...), c.s.Head.String(), "HEAD")
	golden(t, "busy-ledger.prom", got)
	// The file is also a valid exposition that GatherAndCompare accepts.
	want := strings.ReplaceAll(got, "HEAD", c.s.Head.String())
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
	head := func(commit string) string {
		return fmt.Sprintf(`
# HELP reconciler_ledger_head_info The evidence-branch commit of the last ledger entry read (one series, value 1; commit "" before there is one).
# TYPE reconciler_ledger_head_info gauge
reconciler_ledger_head_info{commit="%s"} 1
`, commit)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head("")), "reconciler_ledger_head_info"); err != nil {
		t.Errorf("before any Observe: %v", err)
	}
	c := newChain(t)
	first := c.add(t0, ledger.Event{Type: ledger.SpecLoaded, SpecCommit: commitID("spec"), SpecDigest: "sha256:spec"})
	m.Observe(c.s)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head(first.Commit.String())), "reconciler_ledger_head_info"); err != nil {
		t.Error(err)
	}
	second := c.add(t0.Add(time.Minute), ledger.Event{Type: ledger.SpecLoaded, SpecCommit: commitID("spec 2"), SpecDigest: "sha256:spec2"})
	if first.Commit == second.Commit {
		t.Fatal("the test chain gave two entries the same commit")
	}
	m.Observe(c.s)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head(second.Commit.String())), "reconciler_ledger_head_info"); err != nil {
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
			name: "merged work without spend is zero, not infinite",
			add: func(c *chain) {
				c.run(t0, "bumper", "r1", ledger.OutcomeChanged, "exec", 0, 0, 0)
				c.opened(t0, "bumper", "r1")
				c.merged(t0.Add(time.Hour), "bumper", "r1", imagePin)
			},
			want: `reconciler_agent_roi_ratio{agent="bumper"} 0`,
		},
		{
			name: "failed runs' spend counts against the value",
			add: func(c *chain) {
				c.run(t0, "pinner", "r1", ledger.OutcomeChanged, "gpt-4o-mini", 10, 10, 0.5)
				c.opened(t0, "pinner", "r1")
				c.merged(t0.Add(time.Hour), "pinner", "r1", &ledger.WorkUnit{Kind: "image-pin", HumanMinutes: 30})
				c.add(t0, ledger.Event{Type: ledger.RunStarted, Agent: "pinner", RunID: "r2", Trigger: "t2", SpecCommit: commitID("spec"), SpecDigest: "sha256:spec"})
				c.add(t0, ledger.Event{Type: ledger.RunFailed, Agent: "pinner", RunID: "r2", SpecDigest: "sha256:spec", Error: "max_tool_calls",
					Model: "gpt-4o-mini", Usage: &ledger.Usage{InputTokens: 10, OutputTokens: 10}, CostUSD: 1.5})
			},
			want: `reconciler_agent_roi_ratio{agent="pinner"} 60`, // 30 min at 240 USD/h is 120 USD, over 0.5 + 1.5 USD
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChain(t)
			tc.add(c)
			m := metrics.New(240)
			m.Observe(c.s)
			want := `
# HELP reconciler_agent_roi_ratio Value of merged work units divided by model spend, per agent, over the whole ledger; 0 while nothing was spent.
# TYPE reconciler_agent_roi_ratio gauge
` + tc.want + "\n"
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
