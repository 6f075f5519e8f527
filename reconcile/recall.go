package reconcile

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// maxMemory is how many past proposals an agent's memory holds: what
// recall shows at most.
const maxMemory = 50

// memory is what the recall tool of agent a serves in the run runID:
// the outcomes of a's own past proposals, from the ledger state of the
// pass, newest first, at most maxMemory. Runs of other agents are never
// in it, nor the run itself. Nil for an agent that does not list recall.
//
// Summaries and rationales are read from the runs' transcripts, checked
// against the digest their entries signed; a run without one (an exec
// agent's) is summarized by its ledger entry.
func (r *Reconciler) memory(p *pass, a *hclspec.Agent, runID string) []agent.Outcome {
	if !slices.Contains(a.Tools, hclspec.ToolRecall) {
		return nil
	}
	// The newest maxMemory, chosen by outcomeAt alone: words are built
	// for those only, whatever the number of past runs.
	type cand struct {
		at time.Time
		rn *ledger.Run
	}
	newer := func(x, y cand) int { return cmp.Or(y.at.Compare(x.at), strings.Compare(x.rn.ID, y.rn.ID)) }
	var top []cand // sorted by newer, at most maxMemory
	runs := p.state.AgentRuns(a.Name)
	for _, rn := range runs {
		if rn.Agent != a.Name || rn.ID == runID {
			continue
		}
		_, at, ok := outcomeAt(rn)
		if !ok {
			continue
		}
		c := cand{at, rn}
		if len(top) == maxMemory && newer(c, top[len(top)-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, c, newer)
		top = slices.Insert(top, i, c)
		if len(top) > maxMemory {
			top = top[:maxMemory]
		}
	}
	var out []agent.Outcome
	for _, c := range top {
		if o, ok := outcomeOf(c.rn); ok {
			out = append(out, o)
		}
	}
	markReverted(runs, out)
	for i := range out {
		r.recallSummary(p.state.Run(out[i].RunID), &out[i])
	}
	return out
}

// outcomeAt says what became of a run's change (one of the
// agent.Outcome* values, merged before markReverted) and when, and
// whether it had one that reached a decision: what outcomeOf says,
// without its words, cheap enough for memory to ask of every run of an
// agent (of a decision, only its outcome is read).
func outcomeAt(rn *ledger.Run) (kind string, at time.Time, ok bool) {
	fin := rn.Finished
	if fin == nil || (fin.Outcome != OutcomeChanged && fin.Outcome != OutcomeDuplicateRejected) {
		return "", time.Time{}, false
	}
	switch {
	case rn.Violation:
		if rn.Closed != nil {
			return agent.OutcomeViolation, rn.Closed.Time, true
		}
		return agent.OutcomeViolation, fin.Time, true
	case rn.Closed != nil:
		switch rn.Closed.Type {
		case ledger.ProposalMerged:
			return agent.OutcomeMerged, rn.Closed.Time, true
		case ledger.ProposalRejected:
			return agent.OutcomeRejected, rn.Closed.Time, true
		case ledger.ProposalSuperseded:
			return agent.OutcomeSuperseded, rn.Closed.Time, true
		}
		return "", time.Time{}, false
	case fin.Outcome == OutcomeDuplicateRejected:
		return agent.OutcomeRepeated, fin.Time, true
	}
	var d struct {
		Outcome string `json:"outcome"`
	}
	decided := rn.Decision != nil && len(rn.Decision.Decision) > 0 && json.Unmarshal(rn.Decision.Decision, &d) == nil
	switch {
	case decided && d.Outcome == policy.Deny:
		return agent.OutcomeDenied, rn.Decision.Time, true
	case rn.Opened != nil:
		return agent.OutcomeOpen, rn.Opened.Time, true
	}
	return "", time.Time{}, false
}

// outcomeOf says what became of a run's change, and whether it had one
// that reached a decision.
func outcomeOf(rn *ledger.Run) (agent.Outcome, bool) {
	kind, at, ok := outcomeAt(rn)
	if !ok {
		return agent.Outcome{}, false
	}
	var d policy.Decision
	if (kind == agent.OutcomeDenied || kind == agent.OutcomeOpen) && rn.Decision != nil {
		parseDecision(rn.Decision, &d)
	}
	fin := rn.Finished
	o := agent.Outcome{RunID: rn.ID, Time: at, Summary: fin.Summary, Outcome: kind}
	if fin.Change != nil {
		o.Files = slices.Clone(fin.Change.Files)
	}
	switch kind {
	case agent.OutcomeViolation:
		o.Detail = "a policy violation is recorded on it: a merge or squash that did not satisfy its decision, or a foreign branch on its name"
		if rn.Closed != nil {
			o.Detail += "; the proposal was then " + closedAs(rn.Closed)
		}
	case agent.OutcomeMerged:
		o.Detail = "merged by a reviewer"
		if pr := rn.Closed.Proposal; pr != nil && len(pr.MergeCommit) >= 12 {
			o.Detail += " in " + pr.MergeCommit[:12]
		}
	case agent.OutcomeRejected:
		o.Detail = "closed without merge: a reviewer rejected it (its branch was deleted); it is never proposed again"
	case agent.OutcomeSuperseded:
		o.Detail = "superseded: " + strings.TrimPrefix(rn.Closed.Summary, "proposal.superseded ")
	case agent.OutcomeRepeated:
		o.Detail = afterColon(fin.Summary)
	case agent.OutcomeDenied:
		o.Detail = "denied by policy, never proposed: " + decisionReasons(d)
	case agent.OutcomeOpen:
		o.Detail = "awaiting review"
		if d.Summary != "" {
			o.Detail += ": " + d.Summary
		}
	}
	if c := rn.Comments(); c != nil {
		// What people wrote on its pull request, as the entry that closed
		// it recorded (comments.go): untrusted text, which recall quotes.
		for _, it := range c.Items {
			o.Comments = append(o.Comments, agent.ReviewComment{Kind: it.Kind, State: it.State, Login: it.ForgeLogin, Time: it.Time, Body: it.Body, Truncated: it.Truncated})
		}
		o.CommentsOmitted = c.Omitted
	}
	return o, true
}

func parseDecision(e *ledger.Entry, d *policy.Decision) bool {
	return len(e.Decision) > 0 && json.Unmarshal(e.Decision, d) == nil
}

// decisionReasons are the decision's summary and the messages of the
// rules that fired.
func decisionReasons(d policy.Decision) string {
	parts := []string{d.Summary}
	for _, rule := range d.Rules {
		if rule.Message != "" {
			parts = append(parts, fmt.Sprintf("%s/%s: %s", rule.Policy, rule.Rule, rule.Message))
		}
	}
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), "; ")
}

func closedAs(e *ledger.Entry) string {
	switch e.Type {
	case ledger.ProposalMerged:
		return "merged"
	case ledger.ProposalRejected:
		return "closed without merge"
	case ledger.ProposalSuperseded:
		return "superseded"
	}
	return e.Type
}

// afterColon is a ledger summary without its "event agent run: " head.
func afterColon(s string) string {
	if _, rest, ok := strings.Cut(s, ": "); ok {
		return rest
	}
	return s
}

// recallSummary puts the run's own summary and rationale, from its
// transcript, in place of the ledger's summary. A transcript that cannot
// be read, or whose digest differs from the one its entry signed, is not
// used: the ledger's summary stays.
func (r *Reconciler) recallSummary(rn *ledger.Run, o *agent.Outcome) {
	if rn == nil || rn.Transcript == nil || rn.Transcript.TranscriptDigest == "" {
		return
	}
	e := rn.Transcript
	b, err := r.repo.ReadFile(e.Commit, ledger.AttemptTranscriptPath(rn.ID, e.Attempt))
	if err != nil {
		r.log.Warn("recall: read transcript", "agent", rn.Agent, "run", rn.ID, "err", err)
		return
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.TranscriptDigest {
		r.log.Warn("recall: transcript digest differs from its entry's", "agent", rn.Agent, "run", rn.ID, "entry", e.Seq)
		return
	}
	tr, err := agent.ParseTranscript(b)
	if err != nil || tr.Result == nil {
		return
	}
	o.Summary, o.Rationale = tr.Result.Summary, tr.Result.Rationale
}

// markReverted turns the merged outcomes among out that a merged revert
// run of runs took back into reverted ones, naming the revert.
func markReverted(runs []*ledger.Run, out []agent.Outcome) {
	by := map[string]string{}
	for _, rn := range runs {
		if rn.Reverts != "" && rn.Closed != nil && rn.Closed.Type == ledger.ProposalMerged {
			by[rn.Reverts] = rn.ID
		}
	}
	for i := range out {
		if rev, ok := by[out[i].RunID]; ok && out[i].Outcome == agent.OutcomeMerged {
			out[i].Outcome = agent.OutcomeReverted
			out[i].Detail += "; then reverted by run " + rev + " (merged): people took it back, and it is never proposed again"
		}
	}
}
