package metrics_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentgitops/reconciler/examples"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/metrics"
	"github.com/agentgitops/reconciler/reconcile"
)

// The reconciler calls ObserveSpec when its Recorder has it.
var _ reconcile.SpecRecorder = (*metrics.Metrics)(nil)

// exampleSpec loads examples/repo-layout, the spec users start from.
func exampleSpec(t *testing.T) *hclspec.Spec {
	t.Helper()
	env := map[string]string{"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
	spec, diags := hclspec.Load(examples.RepoLayout(), hclspec.Options{LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}})
	if diags.HasErrors() {
		t.Fatalf("load examples/repo-layout: %s", diags.Error())
	}
	return spec
}

// allSeries is every reconciler_ series family the exporter has.
var allSeries = append([]string{"reconciler_reconcile_errors_total"}, ledgerSeries...)

func TestSeriesExistBeforeAnything(t *testing.T) {
	m := metrics.New(120)
	m.ObserveSpec(exampleSpec(t), true)
	golden(t, "example-spec.prom", exposition(t, m.Registry(), allSeries...))

	// What the golden file says, independently of it: the families by
	// their number of series, from the example's three agents (one model
	// agent), three policies' rules and three builtin rules.
	const agents = 3
	for name, want := range map[string]int{
		"reconciler_agent_runs_total":          agents * 5,
		"reconciler_agent_tokens_total":        agents * 2,
		"reconciler_agent_cost_usd_total":      agents,
		"reconciler_work_units_total":          agents * 3,
		"reconciler_work_unit_value_usd_total": agents,
		"reconciler_agent_roi_ratio":           agents,
		"reconciler_proposals_open":            agents,
		"reconciler_policy_violations_total":   agents + 1, // and agent ""
		"reconciler_runs_held_total":           agents * 7,
		// control-files: 1 deny rule; protect-prod: 2 deny, 1 approval
		// rule; each with 2 decisions; builtin: 2 + 1 + 1.
		"reconciler_policy_decisions_total":    4*2 + 4,
		"reconciler_ledger_entries_total":      1,
		"reconciler_ledger_head_info":          1,
		"reconciler_spec_load_success":         1,
		"reconciler_proposal_approval_seconds": 1,
		"reconciler_reconcile_errors_total":    1,
	} {
		if n, err := testutil.GatherAndCount(m.Registry(), name); err != nil || n != want {
			t.Errorf("%s: %d series (err %v), want %d", name, n, err, want)
		}
	}
	text := scrape(t, m)
	for _, want := range []string{
		`reconciler_agent_tokens_total{agent="incident-responder",direction="input",model="gpt-4o-mini"} 0`,
		`reconciler_agent_cost_usd_total{agent="env-normaliser",model="none"} 0`,
		`reconciler_work_units_total{agent="image-pinner",kind="image-pin",outcome="merged"} 0`,
		`reconciler_policy_decisions_total{decision="require_approval",policy="protect-prod",rule="production"} 0`,
		`reconciler_policy_decisions_total{decision="deny",policy="builtin",rule="secret-detected"} 0`,
		`reconciler_agent_roi_ratio{agent="incident-responder"} 0`,
		"reconciler_spec_load_success 1",
		`reconciler_ledger_head_info{commit=""} 1`,
	} {
		if !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "reconciler_") {
				t.Errorf("lint: %s: %s", p.Metric, p.Text)
			}
		}
	}
}

func TestSpecLoadSuccess(t *testing.T) {
	m := metrics.New(120)
	gauge := func() float64 {
		t.Helper()
		return values(t, m.Registry())["reconciler_spec_load_success{}"]
	}
	spec := exampleSpec(t)
	for i, step := range []struct {
		spec   *hclspec.Spec
		loaded bool
		want   float64
	}{
		{nil, false, 0},  // no spec ever loaded
		{spec, true, 1},  // the head loaded
		{spec, false, 0}, // the head broke; the last good spec is in force
		{spec, true, 1},  // fixed
	} {
		m.ObserveSpec(step.spec, step.loaded)
		if got := gauge(); got != step.want {
			t.Errorf("step %d: reconciler_spec_load_success = %g, want %g", i, got, step.want)
		}
	}
}

// specWith loads a spec of the agents, each an exec agent of the given
// work-unit kind with a deny rule named after it.
func specWith(t *testing.T, agents ...string) *hclspec.Spec {
	t.Helper()
	fsys := fstest.MapFS{
		"providers.hcl": {Data: []byte(`provider "exec" "local" {}` + "\n")},
		"reviewers.hcl": {Data: []byte(`group "sre" {
  member "rita" {
    email = "rita@example.com"
  }
}
`)},
		"tools/x.sh": {Data: []byte("#!/bin/sh\n")},
	}
	for _, a := range agents {
		fsys["agents/"+a+".hcl"] = &fstest.MapFile{Data: fmt.Appendf(nil, `agent %q {
  provider = provider.exec.local
  command  = ["sh", "tools/x.sh"]
  trigger {
    manual = true
  }
  scope {
    paths = ["out/**"]
  }
  work_unit {
    kind          = "kind-of-%s"
    human_minutes = 5
  }
}
`, a, a)}
		fsys["policies/"+a+".hcl"] = &fstest.MapFile{Data: fmt.Appendf(nil, `policy "p-%s" {
  applies_to  = [%q]
  enforcement = "hard"
  deny "big" {
    condition = change.added > 100
    message   = "too big"
  }
}
`, a, a)}
	}
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: func(string) (string, bool) { return "", false }})
	if diags.HasErrors() {
		t.Fatalf("load: %s", diags.Error())
	}
	return spec
}

// A spec change never removes a series, and the ledger's values win over
// the zeros; an agent only the ledger knows keeps its totals.
func TestSeriesNeverVanish(t *testing.T) {
	m := metrics.New(60)
	m.ObserveSpec(specWith(t, "alpha", "beta"), true)
	first := values(t, m.Registry())
	for _, k := range []string{
		`reconciler_agent_runs_total{agent=beta,outcome=failed}`,
		`reconciler_work_units_total{agent=beta,kind=kind-of-beta,outcome=rejected}`,
		`reconciler_agent_cost_usd_total{agent=alpha,model=none}`,
		`reconciler_policy_decisions_total{decision=deny,policy=p-beta,rule=big}`,
	} {
		if v, ok := first[k]; !ok || v != 0 {
			t.Errorf("%s = %g (present %v), want a zero series", k, v, ok)
		}
	}

	// beta leaves the spec; gamma joins; the ledger has runs of alpha
	// and of "retired", an agent no spec this process saw names.
	c := newChain(t)
	c.run(t0, "alpha", "r1", ledger.OutcomeChanged, "", 0, 0, 0)
	c.opened(t0, "alpha", "r1")
	c.merged(t0.Add(time.Minute), "alpha", "r1", &ledger.WorkUnit{Kind: "kind-of-alpha", HumanMinutes: 30})
	c.failed(t0, "retired", "r2")
	m.Observe(c.s)
	m.ObserveSpec(specWith(t, "alpha", "gamma"), true)
	after := values(t, m.Registry())
	for k, v := range first {
		if strings.HasPrefix(k, "reconciler_ledger_head_info{") {
			continue // one series, naming the head: it moved
		}
		if w, ok := after[k]; !ok || w < v {
			t.Errorf("%s went from %g to %g (present %v)", k, v, w, ok)
		}
	}
	for k, want := range map[string]float64{
		`reconciler_agent_runs_total{agent=alpha,outcome=changed}`:                             1,
		`reconciler_agent_runs_total{agent=alpha,outcome=failed}`:                              0,
		`reconciler_work_units_total{agent=alpha,kind=kind-of-alpha,outcome=merged}`:           1,
		`reconciler_work_unit_value_usd_total{agent=alpha}`:                                    30,
		`reconciler_agent_runs_total{agent=retired,outcome=failed}`:                            1,
		`reconciler_agent_runs_total{agent=retired,outcome=changed}`:                           0,
		`reconciler_agent_runs_total{agent=gamma,outcome=no_change}`:                           0,
		`reconciler_policy_decisions_total{decision=require_approval,policy=p-gamma,rule=big}`: 0,
	} {
		if got, ok := after[k]; !ok || got != want {
			t.Errorf("%s = %g (present %v), want %g", k, got, ok, want)
		}
	}
}

// values is counters with the gauges too.
func values(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	out := counters(t, g)
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "reconciler_") || mf.GetType() != dto.MetricType_GAUGE {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}
