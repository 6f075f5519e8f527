package metrics

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/agentgitops/reconciler/ledger"
)

// Run outcomes (Figures.Outcomes): run.finished's outcomes, and "failed"
// for each run.failed entry.
var runOutcomes = []string{
	ledger.OutcomeChanged, ledger.OutcomeNoChange, ledger.OutcomeDuplicateOpen, ledger.OutcomeDuplicateRejected, OutcomeFailed,
}

// Work-unit outcomes (Figures.WorkUnits): how a proposal ended.
var workUnitOutcomes = []string{WorkUnitMerged, WorkUnitRejected, WorkUnitSuperseded}

// Outcome names that are not ledger event outcomes.
const (
	// OutcomeFailed is the run outcome of a run.failed entry: an attempt
	// that failed. A run retried after a failure counts once per failed
	// attempt.
	OutcomeFailed = "failed"

	WorkUnitMerged     = "merged"
	WorkUnitRejected   = "rejected"
	WorkUnitSuperseded = "superseded"
)

// Report is the return on investment of the agents' work, from the
// ledger: what their merged work units are worth at an hourly rate of
// human work, against what their runs cost. It is what `reconciler roi`
// prints and what reconciler_agent_roi_ratio exports (the same function
// computes both; see ROI).
type Report struct {
	// Since is the start of the window (zero for the whole ledger): only
	// runs that started at or after it count.
	Since time.Time `json:"since,omitzero"`
	// HourlyUSD is the value of one hour of human work.
	HourlyUSD float64 `json:"hourly_usd"`
	// LedgerEntries and LedgerHead identify the ledger read: its number
	// of entries and the evidence commit of the last one ("" when empty).
	LedgerEntries uint64 `json:"ledger_entries"`
	LedgerHead    string `json:"ledger_head"`
	// Agents has one row per agent with a run in the window, by name.
	Agents []AgentROI `json:"agents"`
	// Total sums every agent's figures.
	Total Figures `json:"total"`
}

// AgentROI is one agent's figures, and the same split by work-unit kind.
type AgentROI struct {
	Agent string `json:"agent"`
	Figures
	// Kinds has one row per work-unit kind of the agent's runs, by kind;
	// kind "" holds runs no entry declares a kind for (see ROI).
	Kinds []KindROI `json:"kinds"`
}

// KindROI is the figures of an agent's runs of one work-unit kind.
type KindROI struct {
	Kind string `json:"kind"`
	Figures
}

// Figures are the counts and sums of a set of runs.
type Figures struct {
	// Runs is the number of runs that started in the window.
	Runs int `json:"runs"`
	// Outcomes counts the runs' run.finished entries by outcome (changed,
	// no_change, duplicate_open, duplicate_rejected) and their run.failed
	// entries as failed; every key is always present.
	Outcomes map[string]int `json:"outcomes"`
	// WorkUnits counts the runs' proposals that ended, by how: merged,
	// rejected or superseded; every key is always present.
	WorkUnits map[string]int `json:"work_units"`
	// ValueUSD is the declared human minutes of the merged work units at
	// the hourly rate.
	ValueUSD float64 `json:"value_usd"`
	// RejectedValueUSD is the same for rejected work units: value a
	// reviewer turned down. It is reported, not subtracted.
	RejectedValueUSD float64 `json:"rejected_value_usd"`
	// CostUSD is the settled cost of every attempt of the runs, whatever
	// became of them: failed, rejected, superseded and unchanged runs
	// included. Unsettled attempts (in flight) count when they settle.
	CostUSD float64 `json:"cost_usd"`
	// ROI is ValueUSD / CostUSD, and 0 when CostUSD is 0 (nothing was
	// spent: exec agents, or no run). It is never NaN or infinite.
	ROI float64 `json:"roi_ratio"`
}

func newFigures() Figures {
	f := Figures{Outcomes: make(map[string]int, len(runOutcomes)), WorkUnits: make(map[string]int, len(workUnitOutcomes))}
	for _, o := range runOutcomes {
		f.Outcomes[o] = 0
	}
	for _, o := range workUnitOutcomes {
		f.WorkUnits[o] = 0
	}
	return f
}

func (f *Figures) add(g Figures) {
	f.Runs += g.Runs
	for k, v := range g.Outcomes {
		f.Outcomes[k] += v
	}
	for k, v := range g.WorkUnits {
		f.WorkUnits[k] += v
	}
	f.ValueUSD += g.ValueUSD
	f.RejectedValueUSD += g.RejectedValueUSD
	f.CostUSD += g.CostUSD
}

func (f *Figures) ratio() { f.ROI = ratio(f.ValueUSD, f.CostUSD) }

// ratio is value over cost: 0 when cost is not positive (or either is
// NaN), and the largest float64 rather than +Inf when the quotient
// overflows, so that it is always a finite number.
func ratio(value, cost float64) float64 {
	if !(cost > 0) || math.IsNaN(value) {
		return 0
	}
	r := value / cost
	switch {
	case math.IsNaN(r):
		return 0
	case r > math.MaxFloat64:
		return math.MaxFloat64
	case r < -math.MaxFloat64:
		return -math.MaxFloat64
	}
	return r
}

// ROI returns the report of the runs in st that started at or after since
// (every run when since is zero), with merged work valued at hourlyUSD per
// hour of declared human_minutes. A hourlyUSD that is negative, NaN or
// infinite counts as 0, so the report is always finite.
//
// Every fact of a run counts in the window its run started in, even when
// it happened later (a merge a week after the run): a run's cost and its
// value are one investment. The kind of a run is its work unit's, as the
// entry that closed its proposal, its run.finished or its run.failed
// declares it; a run whose entries declare none (today's run.failed
// entries carry no work unit) takes the kind declared by another run of
// the same agent and spec digest, and "" when none did.
//
// Over the whole ledger the counts and sums equal the ledger's totals
// (ledger.Totals): reconciler_agent_runs_total, _work_units_total,
// _work_unit_value_usd_total and _agent_cost_usd_total export them.
func ROI(st *ledger.State, since time.Time, hourlyUSD float64) Report {
	if !(hourlyUSD >= 0) || hourlyUSD > math.MaxFloat64 {
		hourlyUSD = 0
	}
	rep := Report{Since: since, HourlyUSD: hourlyUSD, Agents: []AgentROI{}, Total: newFigures()}
	if st == nil {
		return rep
	}
	rep.LedgerEntries = st.Seq
	if !st.Head.IsZero() {
		rep.LedgerHead = st.Head.String()
	}
	declared := map[[2]string]string{} // agent, spec digest -> kind
	for _, r := range st.Runs {
		if k, ok := declaredKind(r); ok {
			if _, seen := declared[[2]string{r.Agent, r.SpecDigest}]; !seen {
				declared[[2]string{r.Agent, r.SpecDigest}] = k
			}
		}
	}
	rows := map[string]map[string]*Figures{} // agent -> kind -> figures
	for _, r := range st.Runs {
		if r.Started.Before(since) {
			continue
		}
		kind, ok := declaredKind(r)
		if !ok {
			kind = declared[[2]string{r.Agent, r.SpecDigest}]
		}
		byKind := rows[r.Agent]
		if byKind == nil {
			byKind = map[string]*Figures{}
			rows[r.Agent] = byKind
		}
		f := byKind[kind]
		if f == nil {
			nf := newFigures()
			f = &nf
			byKind[kind] = f
		}
		f.Runs++
		if r.Finished != nil {
			f.Outcomes[r.Finished.Outcome]++
		}
		f.Outcomes[OutcomeFailed] += failedAttempts(r)
		f.CostUSD += r.CostUSD
		if c := r.Closed; c != nil {
			minutes := 0.0
			if c.WorkUnit != nil {
				minutes = c.WorkUnit.HumanMinutes
			}
			switch c.Type {
			case ledger.ProposalMerged:
				f.WorkUnits[WorkUnitMerged]++
				f.ValueUSD += minutes / 60 * hourlyUSD
			case ledger.ProposalRejected:
				f.WorkUnits[WorkUnitRejected]++
				f.RejectedValueUSD += minutes / 60 * hourlyUSD
			case ledger.ProposalSuperseded:
				f.WorkUnits[WorkUnitSuperseded]++
			}
		}
	}
	for _, agent := range sortedKeys(rows) {
		a := AgentROI{Agent: agent, Figures: newFigures(), Kinds: []KindROI{}}
		for _, kind := range sortedKeys(rows[agent]) {
			f := *rows[agent][kind]
			f.ratio()
			a.Kinds = append(a.Kinds, KindROI{Kind: kind, Figures: f})
			a.add(f)
		}
		a.ratio()
		rep.Agents = append(rep.Agents, a)
		rep.Total.add(a.Figures)
	}
	rep.Total.ratio()
	return rep
}

// declaredKind is the work-unit kind the run's own entries declare: the
// one of the entry that closed its proposal, else its run.finished's,
// else its last run.failed's.
func declaredKind(r *ledger.Run) (string, bool) {
	if r.Closed != nil && r.Closed.WorkUnit != nil {
		return r.Closed.WorkUnit.Kind, true
	}
	if r.Finished != nil && r.Finished.WorkUnit != nil {
		return r.Finished.WorkUnit.Kind, true
	}
	if r.Failed != nil && r.Failed.WorkUnit != nil {
		return r.Failed.WorkUnit.Kind, true
	}
	return "", false
}

// failedAttempts is the number of run.failed entries of the run: each
// attempt before the current one ended with one (run.retried claims the
// next attempt only after a run.failed), and the current one did when the
// run's last word is a run.failed.
func failedAttempts(r *ledger.Run) int {
	n := max(len(r.Attempts)-1, 0)
	if r.Failed != nil {
		n++
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	return keys
}
