// Package agent runs an agent's task in a workspace and reports what it
// did. The workspace is a directory materialized from the spec commit; the
// caller turns the files the agent changed into a proposal.
//
// Runners never push, commit or sign: they only change files in the
// workspace. Confine checks afterwards that the changes stay inside the
// agent's scope.
package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// Task is one run of an agent.
type Task struct {
	Agent      *hclspec.Agent
	RunID      string
	SpecCommit string
	Trigger    string
	// Input is what the trigger carries, as JSON: the Alertmanager
	// notification of an alert-triggered run, the request of a manual run;
	// nil for schedules and spec changes. It is untrusted data (anyone who
	// can send the webhook wrote it): a model sees it as data in the first
	// user message, an exec command in RECONCILER_TRIGGER_INPUT.
	Input []byte
	// Dir is the workspace: a checkout of SpecCommit the runner may change.
	Dir string
	// MaxTokens is the run's token limit: the agent's, lowered by policy
	// budgets. A runner that reaches it fails the run.
	MaxTokens int

	// Memory is what the recall tool serves (recall.go): the outcomes of
	// the agent's own past proposals, from the ledger. The reconciler
	// fills it only for agents that list recall, and never with another
	// agent's runs.
	Memory []Outcome
}

// Result is what a run reports besides the files it changed.
type Result struct {
	// Summary is one line; Body explains the change (the rationale).
	Summary string
	Body    string
	Model   string
	Usage   Usage
	// Transcript is the run's JSON transcript, secrets redacted; set by
	// model-backed runners, also when the run fails.
	Transcript []byte
	// Risk is the agent's own assessment of its change (low, medium,
	// high), reported by model-backed runners.
	Risk string
	// Sandbox names the OS sandbox's mechanisms that were in force for
	// the run (see package sandbox), set by the exec runner.
	Sandbox []string

	// Attempts are, for an agent with model tiers (tiers.go), each
	// model's attempt in order, the last the one that produced the
	// result; Model and Usage are then the last model and the sum of all.
	// Nil for other runs.
	Attempts []Attempt
}

// Usage is what a run consumed from a model provider.
type Usage struct {
	InputTokens  int64
	OutputTokens int64
}

// Runner runs a task. Errors mean the run failed and nothing is proposed.
type Runner interface {
	Run(ctx context.Context, t Task) (Result, error)
}

// ScopeError lists changed paths outside the agent's scope.
type ScopeError struct {
	Agent string
	Paths []string
}

func (e *ScopeError) Error() string {
	return fmt.Sprintf("agent %q changed files outside its scope: %s", e.Agent, strings.Join(e.Paths, ", "))
}

// Confine returns a *ScopeError when a change touches a path outside the
// agent's scope globs, or a .git path.
func Confine(a *hclspec.Agent, changes []gitstore.FileChange) error {
	var out []string
	for _, c := range changes {
		if !hclspec.MatchAny(a.Scope, c.Path) || c.Path == ".git" || strings.HasPrefix(c.Path, ".git/") || strings.Contains(c.Path, "/.git/") {
			out = append(out, c.Path)
		}
	}
	if len(out) > 0 {
		return &ScopeError{Agent: a.Name, Paths: out}
	}
	return nil
}

// splitMessage turns an agent's report into a one-line summary and a body.
func splitMessage(agentName, out string) (string, string) {
	out = strings.TrimSpace(strings.ReplaceAll(out, "\r\n", "\n"))
	summary, body, _ := strings.Cut(out, "\n")
	summary = strings.TrimSpace(summary)
	if summary == "" {
		summary = agentName + ": automated change"
	}
	if len(summary) > 200 {
		summary = summary[:200]
	}
	return summary, strings.TrimSpace(body)
}
