package eval

import (
	"fmt"
	"io"
	"strings"

	"github.com/agentgitops/reconciler/policy"
)

// Report is the JSON form of a run of evals, as reconciler eval --format
// json prints it (docs/evals.md documents the schema).
type Report struct {
	Passed    int              `json:"passed"`
	Failed    int              `json:"failed"`
	CostUSD   float64          `json:"cost_usd"`
	SpentUSD  float64          `json:"spent_usd"`
	Scenarios []ScenarioReport `json:"scenarios"`
}

// ScenarioReport is one scenario's result.
type ScenarioReport struct {
	Agent     string           `json:"agent"`
	Name      string           `json:"name"`
	Pos       string           `json:"pos"`
	Pass      bool             `json:"pass"`
	Source    string           `json:"source"`
	RunID     string           `json:"run_id"`
	Steps     int              `json:"steps"`
	Usage     UsageReport      `json:"usage"`
	CostUSD   float64          `json:"cost_usd"`
	SpentUSD  float64          `json:"spent_usd"`
	Changed   []string         `json:"changed"`
	Decision  *policy.Decision `json:"decision"`
	Error     string           `json:"error,omitempty"`
	Recording string           `json:"recording,omitempty"`
	Failures  []FailureReport  `json:"failures"`
}

// UsageReport is the tokens of a scenario's model exchanges.
type UsageReport struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// FailureReport is a failed expectation.
type FailureReport struct {
	Pos     string `json:"pos"`
	Message string `json:"message"`
}

// NewReport builds the report of results; its lists are never nil.
// Recording paths are shown relative to base when they lie under it.
func NewReport(results []Result, base string) Report {
	s := Summarize(results)
	rep := Report{Passed: s.Passed, Failed: s.Failed, CostUSD: s.CostUSD, SpentUSD: s.SpentUSD, Scenarios: []ScenarioReport{}}
	for _, r := range results {
		sr := ScenarioReport{
			Agent: r.Scenario.Agent.Name, Name: r.Scenario.Name, Pos: Pos(r.Scenario.DeclRange), Pass: r.Pass,
			Source: r.Source, RunID: r.RunID, Steps: r.Steps,
			Usage:   UsageReport{InputTokens: r.Usage.InputTokens, OutputTokens: r.Usage.OutputTokens},
			CostUSD: r.CostUSD, SpentUSD: r.SpentUSD, Changed: append([]string{}, r.Changed...), Decision: r.Decision,
			Error: r.Error, Recording: relative(base, r.Recording), Failures: []FailureReport{},
		}
		for _, f := range r.Failures {
			sr.Failures = append(sr.Failures, FailureReport{Pos: Pos(f.Range), Message: f.Message})
		}
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	return rep
}

func relative(base, p string) string {
	if base != "" && strings.HasPrefix(p, base+"/") {
		return strings.TrimPrefix(p, base+"/")
	}
	return p
}

// WriteText prints one line per scenario, PASS or FAIL with its
// file:line:col, agent and name and how it ran, each failed expectation
// indented below it at its own file:line:col, and last
// "N passed, M failed".
func WriteText(w io.Writer, results []Result) {
	for _, r := range results {
		status := "PASS"
		if !r.Pass {
			status = "FAIL"
		}
		how := r.Source
		switch r.Source {
		case "":
			how = "not run"
		case SourceLive, SourceRecording:
			how = fmt.Sprintf("%s, %d steps, $%.6f", r.Source, r.Steps, r.CostUSD)
		}
		fmt.Fprintf(w, "%s %s %s/%s (%s)\n", status, Pos(r.Scenario.DeclRange), r.Scenario.Agent.Name, r.Scenario.Name, how)
		for _, f := range r.Failures {
			fmt.Fprintf(w, "    %s\n", f)
		}
	}
	s := Summarize(results)
	fmt.Fprintf(w, "%d passed, %d failed\n", s.Passed, s.Failed)
}
