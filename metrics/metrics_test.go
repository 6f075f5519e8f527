package metrics_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentgitops/reconciler/metrics"
)

func TestSeriesExistFromTheStart(t *testing.T) {
	m := metrics.New(120)
	const want = `
# HELP reconciler_ledger_entries_total Entries on the evidence branch.
# TYPE reconciler_ledger_entries_total counter
reconciler_ledger_entries_total 0
# HELP reconciler_reconcile_errors_total Reconcile passes that ended with an error.
# TYPE reconciler_reconcile_errors_total counter
reconciler_reconcile_errors_total 0
# HELP reconciler_proposal_approval_seconds Time from proposal.opened to proposal.merged.
# TYPE reconciler_proposal_approval_seconds histogram
reconciler_proposal_approval_seconds_bucket{le="60"} 0
reconciler_proposal_approval_seconds_bucket{le="240"} 0
reconciler_proposal_approval_seconds_bucket{le="960"} 0
reconciler_proposal_approval_seconds_bucket{le="3840"} 0
reconciler_proposal_approval_seconds_bucket{le="15360"} 0
reconciler_proposal_approval_seconds_bucket{le="61440"} 0
reconciler_proposal_approval_seconds_bucket{le="245760"} 0
reconciler_proposal_approval_seconds_bucket{le="983040"} 0
reconciler_proposal_approval_seconds_bucket{le="3.93216e+06"} 0
reconciler_proposal_approval_seconds_bucket{le="+Inf"} 0
reconciler_proposal_approval_seconds_sum 0
reconciler_proposal_approval_seconds_count 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"reconciler_ledger_entries_total", "reconciler_reconcile_errors_total", "reconciler_proposal_approval_seconds"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "reconciler_reconcile_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration histogram: %d series (err %v), want 1", n, err)
	}
}

func TestPass(t *testing.T) {
	m := metrics.New(120)
	m.Pass(2*time.Second, nil)
	m.Pass(time.Second, errors.New("remote unreachable"))
	const want = `
# HELP reconciler_reconcile_errors_total Reconcile passes that ended with an error.
# TYPE reconciler_reconcile_errors_total counter
reconciler_reconcile_errors_total 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "reconciler_reconcile_errors_total"); err != nil {
		t.Error(err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "reconciler_reconcile_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 3 {
				t.Errorf("duration: %d passes, %g s; want 2, 3 s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
}

func TestLint(t *testing.T) {
	m := metrics.New(120)
	m.Observe(busyLedger(t).s)
	m.Pass(time.Second, errors.New("failed"))
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
