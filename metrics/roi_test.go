package metrics_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/metrics"
)

// retried records a run whose first attempt failed (retry_after set), and
// whose second attempt, claimed by run.retried, finished changed.
func (c *chain) retried(at time.Time, agent, run string, firstCost, secondCost float64) {
	c.add(at, ledger.Event{Type: ledger.RunStarted, Agent: agent, RunID: run, Trigger: "t-" + run, SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec", ReservedUSD: 1, Claimant: "host:1", LeaseUntil: at.Add(time.Hour)})
	c.add(at, ledger.Event{Type: ledger.RunFailed, Agent: agent, RunID: run, SpecDigest: "sha256:spec", Error: "provider: 503",
		Attempt: 1, RetryAfter: at.Add(time.Minute), Model: "gpt-4o-mini", Usage: &ledger.Usage{InputTokens: 100, OutputTokens: 1}, CostUSD: firstCost})
	at = at.Add(2 * time.Minute)
	c.add(at, ledger.Event{Type: ledger.RunRetried, Agent: agent, RunID: run, Trigger: "t-" + run, SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec", Attempt: 2, ReservedUSD: 1, Claimant: "host:1", LeaseUntil: at.Add(time.Hour)})
	c.add(at, ledger.Event{Type: ledger.RunFinished, Agent: agent, RunID: run, Trigger: "t-" + run, SpecDigest: "sha256:spec",
		Outcome: ledger.OutcomeChanged, Change: &ledger.Change{ID: "change-" + run, Files: []string{"a"}, Added: 1},
		Model: "gpt-4o-mini", Usage: &ledger.Usage{InputTokens: 200, OutputTokens: 20}, CostUSD: secondCost, WorkUnit: imagePin})
}

// lostPush records a run that finished changed, whose proposal push was
// lost (run.failed after run.finished), retried with a run.retried that
// pushes, and opened.
func (c *chain) lostPush(at time.Time, agent, run string, cost float64) {
	c.add(at, ledger.Event{Type: ledger.RunStarted, Agent: agent, RunID: run, Trigger: "t-" + run, SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec", Claimant: "host:1", LeaseUntil: at.Add(time.Hour)})
	c.add(at, ledger.Event{Type: ledger.RunFinished, Agent: agent, RunID: run, Trigger: "t-" + run, SpecDigest: "sha256:spec",
		Outcome: ledger.OutcomeChanged, Change: &ledger.Change{ID: "change-" + run, Files: []string{"a"}, Added: 1},
		Model: "gpt-4o-mini", Usage: &ledger.Usage{InputTokens: 10, OutputTokens: 1}, CostUSD: cost, WorkUnit: imagePin})
	c.add(at, ledger.Event{Type: ledger.RunFailed, Agent: agent, RunID: run, SpecDigest: "sha256:spec", Error: "push: connection refused",
		Attempt: 1, RetryAfter: at.Add(time.Minute)})
	c.add(at.Add(time.Minute), ledger.Event{Type: ledger.RunRetried, Agent: agent, RunID: run, Trigger: "t-" + run, SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec", Attempt: 2, Claimant: "host:1", LeaseUntil: at.Add(time.Hour)})
	c.opened(at.Add(time.Minute), agent, run)
}

func (c *chain) superseded(at time.Time, agent, run string, wu *ledger.WorkUnit) {
	c.add(at, ledger.Event{Type: ledger.ProposalSuperseded, Agent: agent, RunID: run, Proposal: c.proposal(agent, run), WorkUnit: wu})
}

// everything is a ledger with every way a run can end: merged, rejected,
// superseded, failed for good, failed and retried, a lost push, no change,
// still open, and a run still in flight.
func everything(t *testing.T) *chain {
	c := busyLedger(t)
	at := t0.Add(24 * time.Hour)
	c.retried(at, "pinner", "r5", 0.125, 0.375)
	c.opened(at, "pinner", "r5")
	c.merged(at.Add(time.Hour), "pinner", "r5", imagePin)
	c.lostPush(at.Add(2*time.Hour), "pinner", "r6", 0.5)
	c.superseded(at.Add(3*time.Hour), "pinner", "r6", imagePin)
	c.run(at.Add(4*time.Hour), "env", "r7", ledger.OutcomeNoChange, "llama3", 5, 0, 0)
	c.add(at.Add(5*time.Hour), ledger.Event{Type: ledger.RunStarted, Agent: "env", RunID: "r8", Trigger: "t8",
		SpecCommit: commitID("spec"), SpecDigest: "sha256:spec", ReservedUSD: 2})
	return c
}

// The report over the whole ledger is the ledger's totals, which the
// counters export: one definition, whichever way it is read.
func TestROIAgreesWithTheFold(t *testing.T) {
	for name, c := range map[string]*chain{"busy": busyLedger(t), "everything": everything(t)} {
		t.Run(name, func(t *testing.T) {
			st := c.s
			tot := &st.Totals
			rep := metrics.ROI(st, time.Time{}, 90)
			if len(rep.Agents) != len(st.Agents()) {
				t.Fatalf("%d agent rows for %d agents", len(rep.Agents), len(st.Agents()))
			}
			for _, a := range rep.Agents {
				for outcome, n := range a.Outcomes {
					if n != tot.Runs[a.Agent][outcome] {
						t.Errorf("%s %s: %d in the report, %d in the fold", a.Agent, outcome, n, tot.Runs[a.Agent][outcome])
					}
				}
				for outcome, n := range tot.Runs[a.Agent] {
					if a.Outcomes[outcome] != n {
						t.Errorf("%s %s: the fold has %d, the report %d", a.Agent, outcome, n, a.Outcomes[outcome])
					}
				}
				cost := 0.0
				for _, usd := range tot.CostUSD[a.Agent] {
					cost += usd
				}
				if math.Abs(a.CostUSD-cost) > 1e-9 {
					t.Errorf("%s: cost %g in the report, %g in the fold", a.Agent, a.CostUSD, cost)
				}
				if want := tot.MergedMinutes[a.Agent] / 60 * 90; math.Abs(a.ValueUSD-want) > 1e-9 {
					t.Errorf("%s: value %g in the report, %g from the fold", a.Agent, a.ValueUSD, want)
				}
				if len(st.AgentRuns(a.Agent)) != a.Runs {
					t.Errorf("%s: %d runs in the report, %d in the ledger", a.Agent, a.Runs, len(st.AgentRuns(a.Agent)))
				}
				for _, k := range a.Kinds {
					for outcome, n := range k.WorkUnits {
						if n != tot.WorkUnits[a.Agent][k.Kind][outcome] {
							t.Errorf("%s %s %s: %d work units in the report, %d in the fold", a.Agent, k.Kind, outcome, n, tot.WorkUnits[a.Agent][k.Kind][outcome])
						}
					}
				}
			}
		})
	}
}

func TestROIFigures(t *testing.T) {
	rep := metrics.ROI(everything(t).s, time.Time{}, 120)
	if len(rep.Agents) != 2 || rep.Agents[0].Agent != "env" || rep.Agents[1].Agent != "pinner" {
		t.Fatalf("agents: %+v", rep.Agents)
	}
	pinner := rep.Agents[1]
	// r1 merged (0.5), r2 failed, r4 rejected (0.25), r5 failed once
	// then merged (0.125 + 0.375), r6 lost its push, then superseded (0.5).
	want := map[string]int{"changed": 4, "no_change": 0, "duplicate_open": 0, "duplicate_rejected": 0, "failed": 3}
	for k, v := range want {
		if pinner.Outcomes[k] != v {
			t.Errorf("pinner %s = %d, want %d (%v)", k, pinner.Outcomes[k], v, pinner.Outcomes)
		}
	}
	if pinner.Runs != 5 || pinner.WorkUnits["merged"] != 2 || pinner.WorkUnits["rejected"] != 1 || pinner.WorkUnits["superseded"] != 1 {
		t.Errorf("pinner runs %d, work units %v", pinner.Runs, pinner.WorkUnits)
	}
	if pinner.CostUSD != 1.75 || pinner.ValueUSD != 120 || pinner.RejectedValueUSD != 60 {
		t.Errorf("pinner cost %g value %g rejected %g, want 1.75, 120 (2 x 30 min at 120/h), 60", pinner.CostUSD, pinner.ValueUSD, pinner.RejectedValueUSD)
	}
	if want := 120 / 1.75; pinner.ROI != want {
		t.Errorf("pinner ROI %g, want %g", pinner.ROI, want)
	}
	// r2 failed without a work unit; it takes the kind r1 declared under
	// the same spec digest.
	if len(pinner.Kinds) != 1 || pinner.Kinds[0].Kind != "image-pin" || pinner.Kinds[0].Runs != 5 {
		t.Errorf("pinner kinds: %+v", pinner.Kinds)
	}
	env := rep.Agents[0]
	// r3 changed (no work unit declared, so kind ""), r7 no_change, r8
	// in flight: its reservation is not a cost.
	if env.Runs != 3 || env.Outcomes["changed"] != 1 || env.Outcomes["no_change"] != 1 || env.CostUSD != 0 || env.ROI != 0 {
		t.Errorf("env: %+v", env.Figures)
	}
	if len(env.Kinds) != 1 || env.Kinds[0].Kind != "" {
		t.Errorf("env kinds: %+v", env.Kinds)
	}
	if rep.Total.Runs != 8 || rep.Total.CostUSD != 1.75 || rep.Total.ValueUSD != 120 || rep.Total.ROI != pinner.ROI {
		t.Errorf("total: %+v", rep.Total)
	}
	if rep.LedgerEntries != everything(t).s.Seq || len(rep.LedgerHead) != 40 {
		t.Errorf("ledger %d %q", rep.LedgerEntries, rep.LedgerHead)
	}
}

func TestROIWindow(t *testing.T) {
	c := everything(t)
	since := t0.Add(24 * time.Hour) // the runs everything adds to the busy ledger
	rep := metrics.ROI(c.s, since, 120)
	if rep.Total.Runs != 4 {
		t.Fatalf("%d runs since %s, want 4: %+v", rep.Total.Runs, since, rep.Agents)
	}
	pinner := rep.Agents[1]
	if pinner.Runs != 2 || pinner.CostUSD != 1 || pinner.ValueUSD != 60 || pinner.Outcomes["failed"] != 2 || pinner.ROI != 60 {
		t.Errorf("pinner since %s: %+v", since, pinner.Figures)
	}
	if !rep.Since.Equal(since) {
		t.Errorf("since %s", rep.Since)
	}
	if empty := metrics.ROI(c.s, t0.Add(1000*time.Hour), 120); len(empty.Agents) != 0 || empty.Total.Runs != 0 || empty.Total.ROI != 0 {
		t.Errorf("a window after every run: %+v", empty)
	}
}

func TestROINeverNaNOrInfinite(t *testing.T) {
	c := everything(t)
	for _, hourly := range []float64{0, -5, math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64} {
		for _, st := range []*ledger.State{nil, ledger.NewState(), c.s} {
			rep := metrics.ROI(st, time.Time{}, hourly)
			check := func(what string, f metrics.Figures) {
				for _, v := range []float64{f.ROI, f.ValueUSD, f.CostUSD, f.RejectedValueUSD} {
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Errorf("hourly %g: %s has %g: %+v", hourly, what, v, f)
					}
				}
			}
			check("total", rep.Total)
			for _, a := range rep.Agents {
				check(a.Agent, a.Figures)
				for _, k := range a.Kinds {
					check(a.Agent+"/"+k.Kind, k.Figures)
				}
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Errorf("hourly %g: %v", hourly, err)
			}
		}
	}
}

// The JSON report's shape is documented in docs/metrics.md; this is it.
func TestROIJSON(t *testing.T) {
	c := everything(t)
	rep := metrics.ROI(c.s, time.Time{}, 120)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "roi.json", strings.ReplaceAll(string(b), c.s.Head.String(), "HEAD")+"\n")
}
