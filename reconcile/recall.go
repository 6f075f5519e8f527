package reconcile

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

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
//
// It costs what the newest outcomes hold, not the agent's history: runs
// are visited newest entry first (ledger.State.RecentRuns) and the visit
// stops once no run left can have an outcome among the newest kept.
func (r *Reconciler) memory(p *pass, a *hclspec.Agent, runID string) []agent.Outcome {
	if !slices.Contains(a.Tools, hclspec.ToolRecall) {
		return nil
	}
	newer := func(x, y agent.Outcome) int {
		return cmp.Or(y.Time.Compare(x.Time), strings.Compare(x.RunID, y.RunID))
	}
	var out []agent.Outcome // by newer, at most maxMemory
	for rn := range p.state.RecentRuns(a.Name) {
		if len(out) == maxMemory && rn.LastTime().Before(out[maxMemory-1].Time) {
			break // an outcome is at or before its run's LastTime: none left is newer
		}
		if rn.Agent != a.Name || rn.ID == runID {
			continue
		}
		o, ok := outcomeOf(rn)
		if !ok {
			continue
		}
		if i, _ := slices.BinarySearchFunc(out, o, newer); i < maxMemory {
			out = slices.Insert(out, i, o)
			out = out[:min(len(out), maxMemory)]
		}
	}
	var reverts []*ledger.Run
	for _, o := range out {
		for _, rv := range p.state.RevertsOf(o.RunID) {
			if rv.Agent == a.Name {
				reverts = append(reverts, rv)
			}
		}
	}
	markReverted(reverts, out)
	r.recallSummaries(p.state, out)
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

// recallSummaries puts each outcome's own summary and rationale, from
// its run's transcript, in place of the ledger's summary. A transcript
// that cannot be read, or whose digest differs from the one its entry
// signed, is not used: the ledger's summary stays.
//
// What a transcript says is kept by its digest (r.recalled), so a run
// reads only the transcripts of outcomes newer than its agent's last
// run's. Those are looked up in one read of the transcripts directory at
// the ledger's head, where every stored transcript stays (a transcript
// is never replaced), instead of one read of that directory, which holds
// every run's, at each entry's commit; a transcript not found there is
// read at its entry's commit.
func (r *Reconciler) recallSummaries(st *ledger.State, out []agent.Outcome) {
	type todo struct {
		o  *agent.Outcome
		rn *ledger.Run
	}
	var missing []todo
	for i := range out {
		rn := st.Run(out[i].RunID)
		if rn == nil || rn.Transcript == nil || rn.Transcript.TranscriptDigest == "" {
			continue
		}
		if said, ok := r.recalled.get(rn.Transcript.TranscriptDigest); ok {
			said.apply(&out[i])
			continue
		}
		missing = append(missing, todo{&out[i], rn})
	}
	if len(missing) == 0 {
		return
	}
	blobs := map[string]plumbing.Hash{}
	if !st.Head.IsZero() {
		names := map[string]bool{}
		for _, m := range missing {
			names[path.Base(ledger.AttemptTranscriptPath(m.rn.ID, m.rn.Transcript.Attempt))] = true
		}
		if ents, err := r.repo.ReadDir(st.Head, path.Dir(ledger.TranscriptPath(missing[0].rn.ID))); err == nil {
			for _, e := range ents {
				if names[e.Name] && e.Mode.IsFile() {
					blobs[e.Name] = e.Hash
				}
			}
		}
	}
	for _, m := range missing {
		rn, e := m.rn, m.rn.Transcript
		name := ledger.AttemptTranscriptPath(rn.ID, e.Attempt)
		var b []byte
		if h, ok := blobs[path.Base(name)]; ok {
			if typ, raw, err := r.repo.RawObject(h); err == nil && typ == plumbing.BlobObject && digestOf(raw) == e.TranscriptDigest {
				b = raw
			}
		}
		if b == nil {
			raw, err := r.repo.ReadFile(e.Commit, name)
			if err != nil {
				r.log.Warn("recall: read transcript", "agent", rn.Agent, "run", rn.ID, "err", err)
				continue
			}
			if digestOf(raw) != e.TranscriptDigest {
				r.log.Warn("recall: transcript digest differs from its entry's", "agent", rn.Agent, "run", rn.ID, "entry", e.Seq)
				continue
			}
			b = raw
		}
		var said recalled
		if tr, err := agent.ParseTranscript(b); err == nil && tr.Result != nil {
			said = recalled{summary: tr.Result.Summary, rationale: tr.Result.Rationale, ok: true}
		}
		r.recalled.put(e.TranscriptDigest, said)
		said.apply(m.o)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// maxRecalled bounds the transcripts a reconciler keeps what recall read
// of.
const maxRecalled = 2048

// recallCache is what recall read of transcripts, by their digest: a
// transcript never changes, and neither does what it says.
type recallCache struct {
	mu sync.Mutex
	m  map[string]recalled
}

// recalled is what a transcript says of its run; ok is false for one
// without a result (the ledger's summary stays).
type recalled struct {
	summary, rationale string
	ok                 bool
}

func (s recalled) apply(o *agent.Outcome) {
	if s.ok {
		o.Summary, o.Rationale = s.summary, s.rationale
	}
}

func (c *recallCache) get(digest string) (recalled, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[digest]
	return s, ok
}

// put keeps s, dropping arbitrary entries when the cache is full.
func (c *recallCache) put(digest string, s recalled) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]recalled{}
	}
	for k := range c.m {
		if len(c.m) < maxRecalled {
			break
		}
		delete(c.m, k)
	}
	c.m[digest] = s
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
