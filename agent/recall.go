package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Outcome values: what became of a past proposal of an agent.
const (
	// OutcomeOpen: the proposal awaits review.
	OutcomeOpen = "open"
	// OutcomeMerged: a reviewer merged it.
	OutcomeMerged = "merged"
	// OutcomeRejected: it was closed without merge (its branch deleted).
	OutcomeRejected = "rejected"
	// OutcomeSuperseded: a newer run of the agent replaced it.
	OutcomeSuperseded = "superseded"
	// OutcomeDenied: a policy denied the change; it was never proposed.
	OutcomeDenied = "denied"
	// OutcomeViolation: the ledger records a policy violation on it.
	OutcomeViolation = "violation"
	// OutcomeRepeated: the run made the same change as a rejected
	// proposal, which is never proposed again.
	OutcomeRepeated = "repeated_rejected"
	// OutcomeReverted: it was merged, then undone by a merged revert; it
	// is never proposed again.
	OutcomeReverted = "reverted"
)

// Outcome is what became of one of an agent's past proposals, as the
// ledger records it. The recall tool serves a run's Task.Memory; the
// reconciler fills it from the ledger with the agent's own runs only.
type Outcome struct {
	RunID string
	// Time is when the outcome was recorded: the merge, the rejection,
	// the decision of an open or denied proposal.
	Time time.Time
	// Summary is the proposal's one-line summary; Rationale its body,
	// as the run reported them.
	Summary   string
	Rationale string
	// Files are the paths the change touched.
	Files []string
	// Outcome is one of the Outcome* values; Detail says why, in words
	// (the policy's message, the decision, the violation).
	Outcome string
	Detail  string
}

// Bounds of recall.
const (
	defaultRecall        = 10
	maxRecall            = 50
	maxRecallRationale   = 600
	maxRecallQueryLength = 200
)

func (tb *toolbox) recall(def *toolDef, args string) (toolResult, error) {
	var a struct {
		Query string `json:"query"`
		Limit *int   `json:"limit"`
	}
	if err := decodeArgs(def, args, &a); err != nil {
		return toolResult{}, err
	}
	res := toolResult{Target: "past proposals"}
	if len(a.Query) > maxRecallQueryLength {
		return res, fmt.Errorf("the query is %d bytes; the limit is %d", len(a.Query), maxRecallQueryLength)
	}
	limit := defaultRecall
	if a.Limit != nil {
		if limit = *a.Limit; limit < 1 || limit > maxRecall {
			return res, fmt.Errorf("limit must be from 1 to %d, got %d", maxRecall, limit)
		}
	}
	if tb.senses == nil {
		return res, errNoSenses
	}
	s := tb.senses
	name := s.task.Agent.Name
	mem := slices.Clone(s.task.Memory)
	slices.SortStableFunc(mem, func(x, y Outcome) int {
		if c := y.Time.Compare(x.Time); c != 0 {
			return c
		}
		return strings.Compare(x.RunID, y.RunID)
	})
	terms := strings.Fields(strings.ToLower(a.Query))
	var shown []Outcome
	matched := 0
	for _, o := range mem {
		if !o.matches(terms) {
			continue
		}
		matched++
		if len(shown) < limit {
			shown = append(shown, o)
		}
	}
	var b strings.Builder
	switch {
	case len(mem) == 0:
		fmt.Fprintf(&b, "no past proposals of agent %s are recorded", name)
	case matched == 0:
		fmt.Fprintf(&b, "none of the %d past proposals of agent %s match %q", len(mem), name, a.Query)
	default:
		fmt.Fprintf(&b, "%s of agent %s", plural(matched, "past proposal"), name)
		if len(terms) > 0 {
			fmt.Fprintf(&b, " matching %q", a.Query)
		}
		if matched > len(shown) {
			fmt.Fprintf(&b, " (the newest %d shown; raise limit, at most %d, or narrow the query)", len(shown), maxRecall)
		}
		b.WriteString(", newest first. A rejected or denied idea should not be proposed again in other words.\n")
		for _, o := range shown {
			fmt.Fprintf(&b, "\nrun %s: %s at %s\n", o.RunID, strings.ToUpper(o.Outcome), o.Time.UTC().Format(time.RFC3339))
			fmt.Fprintf(&b, "  summary: %s\n", oneLineText(o.Summary))
			if len(o.Files) > 0 {
				fmt.Fprintf(&b, "  files: %s\n", strings.Join(o.Files, ", "))
			}
			if o.Detail != "" {
				fmt.Fprintf(&b, "  outcome: %s\n", oneLineText(o.Detail))
			}
			if o.Rationale != "" {
				fmt.Fprintf(&b, "  rationale: %s\n", clipRunes(oneLineText(o.Rationale), maxRecallRationale))
			}
		}
	}
	res.Text = s.redact(strings.TrimSuffix(b.String(), "\n"))
	return res, nil
}

// matches reports whether every term occurs in the outcome's text.
func (o *Outcome) matches(terms []string) bool {
	if len(terms) == 0 {
		return true
	}
	text := strings.ToLower(strings.Join([]string{o.RunID, o.Outcome, o.Summary, o.Rationale, o.Detail, strings.Join(o.Files, " ")}, "\n"))
	for _, t := range terms {
		if !strings.Contains(text, t) {
			return false
		}
	}
	return true
}

// oneLineText joins a text's lines with spaces.
func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }
