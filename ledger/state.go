package ledger

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// Run is what the ledger says about one run.
type Run struct {
	ID, Agent, Trigger, SpecDigest string
	SpecCommit                     string
	Started                        time.Time
	// ReservedUSD is the reservation of the run's current attempt;
	// CostUSD the settled cost of all its attempts, each counted once.
	// Settled says whether the current attempt is settled (by run.finished
	// or run.failed).
	ReservedUSD, CostUSD float64
	Settled              bool
	// Attempt is the current attempt's number: 1 after run.started, n
	// after the run.retried that claimed attempt n. Attempts holds each
	// attempt, oldest first.
	Attempt  int
	Attempts []Attempt
	// RetryAfter is when the failed attempt may be retried, from the last
	// run.failed; zero when that failure is final, or once run.retried
	// claimed the next attempt.
	RetryAfter time.Time
	Violation  bool
	Finished   *Entry
	// Failed is the last run.failed, until a run.retried makes the run
	// unfinished again.
	Failed *Entry
	// Decision is the entry holding the decision in force: the last
	// policy.decision, or the last proposal.updated after it.
	Decision *Entry
	Opened   *Entry
	// Updated is the last proposal.updated: the branch moved to its head.
	Updated *Entry
	// Heads are the proposal heads decided on, oldest first: the opened
	// head and every updated one.
	Heads []string
	// Violations are the subjects of the run's policy.violation entries
	// (the merge or squash commit, the squatting head), so each is
	// recorded once.
	Violations []string
	// Closed is the event that ended the proposal: merged, rejected or
	// superseded.
	Closed *Entry
	// Transcript is the last entry that stored a transcript of the run.
	Transcript *Entry
	// Claimant holds the run's claim until LeaseUntil (run.started or
	// run.retried, or the last run.abandoned that took it over); Abandoned
	// counts those.
	Claimant   string
	LeaseUntil time.Time
	Abandoned  int
	// Alert or Request is what started the run (run.started), for alert
	// and manual triggers; the run's agent sees it as its trigger input.
	Alert   *Alert
	Request *Request
	// Reverts is the run whose merged change this run reverts
	// (run.started of a revert run); "" for any other run.
	Reverts string

	ix runIndex // the state's indexes of the run (state_index.go)
}

// Attempt is one attempt of a run, claimed by run.started or run.retried
// and settled by run.finished or run.failed.
type Attempt struct {
	// Started is when it was claimed.
	Started time.Time
	// ReservedUSD is its reservation, counted as spent until it is
	// Settled; then CostUSD, its own cost, counts instead.
	ReservedUSD, CostUSD float64
	Settled              bool
}

// current returns the run's current attempt, making one at the run's
// start for a run the ledger has no claim of (entries written before
// attempts were recorded).
func (r *Run) current() *Attempt {
	if len(r.Attempts) == 0 {
		r.Attempts = append(r.Attempts, Attempt{Started: r.Started, ReservedUSD: r.ReservedUSD})
	}
	return &r.Attempts[len(r.Attempts)-1]
}

// DecidedHead is the proposal head the decision in force was made on: the
// head of the last proposal.updated, else the opened head; "" without a
// proposal.
func (r *Run) DecidedHead() string {
	if r.Updated != nil && r.Updated.Proposal != nil {
		return r.Updated.Proposal.Head
	}
	if r.Opened != nil && r.Opened.Proposal != nil {
		return r.Opened.Proposal.Head
	}
	return ""
}

// DecidedChangeID is the content id of the decided head's change against
// its merge base: the updated change's, else the run's own.
func (r *Run) DecidedChangeID() string {
	if r.Updated != nil && r.Updated.Change != nil {
		return r.Updated.Change.ID
	}
	return r.ChangeID()
}

// ProposalOpen reports whether the run has a proposal that is still open.
func (r *Run) ProposalOpen() bool { return r.Opened != nil && r.Closed == nil }

// Comments are what people wrote on the run's pull request, as the entry
// that closed the proposal (proposal.merged or proposal.rejected) recorded
// them; nil when it recorded none, or the proposal is not closed. They
// are untrusted text (see Comments).
func (r *Run) Comments() *Comments {
	if r.Closed == nil {
		return nil
	}
	return r.Closed.Comments
}

// ChangeID is the content id of the run's change, or "".
func (r *Run) ChangeID() string {
	if r.Finished != nil && r.Finished.Change != nil {
		return r.Finished.Change.ID
	}
	return ""
}

// Totals are the counters metrics and roi export, folded from the entries.
type Totals struct {
	// Runs counts run.finished by outcome and run.failed as "failed":
	// agent -> outcome -> n.
	Runs map[string]map[string]int
	// Tokens is agent -> model -> [input, output].
	Tokens map[string]map[string][2]int64
	// CostUSD is agent -> model -> settled cost.
	CostUSD map[string]map[string]float64
	// WorkUnits counts ended proposals: agent -> kind -> outcome (merged,
	// rejected, superseded) -> n.
	WorkUnits map[string]map[string]map[string]int
	// MergedMinutes is agent -> declared human minutes of merged work.
	MergedMinutes map[string]float64
	// Decisions counts fired rules: policy -> rule -> outcome -> n.
	Decisions map[string]map[string]map[string]int
	// Violations is agent -> policy.violation entries ("" for none).
	Violations map[string]int
	// Held counts run.held and budget.exceeded: agent -> kind -> n.
	Held map[string]map[string]int
	// ApprovalSeconds holds, per merged proposal, the time from
	// proposal.opened to proposal.merged.
	ApprovalSeconds []float64
}

// State is the one fold over the ledger: what the reconcile loop, metrics,
// status and roi read. Entries are applied in order with Apply; it is
// rebuilt from nothing or continued from a saved copy, and gives the same
// result either way.
type State struct {
	// Seq, Head and Digest identify the last entry applied: its sequence
	// number, its evidence commit and the sha256 of its bundle.
	Seq    uint64
	Head   plumbing.Hash
	Digest string
	// Time is the last entry's time.
	Time time.Time
	// Keys are the keys trusted to sign the next entry, set by the last
	// genesis or keys.changed entry, and KeysSeq that entry's seq.
	Keys    []Key
	KeysSeq uint64
	// KeysSubject is the protected-branch commit whose .reconciler/keys
	// the trusted keys were taken from.
	KeysSubject string
	// Runs in the order they first appeared.
	Runs []*Run
	// LastSpec is the last spec.loaded or spec.invalid entry, LastGoodSpec
	// the last spec.loaded one.
	LastSpec, LastGoodSpec *Entry
	// Held is each agent's last run.held or budget.exceeded entry since
	// its last run started.
	Held map[string]*Entry
	// ViolationSubjects are the subjects of policy.violation entries that
	// belong to no run, such as a key pushed without approval.
	ViolationSubjects map[string]bool
	// Resolved are the alert.resolved entries, by agent and trigger (see
	// Resolution).
	Resolved map[string]*Entry
	Totals   Totals

	runs    map[string]*Run
	byAgent map[string][]*Run
	// byTrigger indexes runs by agent and trigger (triggerKey): the run
	// that first answered each.
	byTrigger map[string]*Run
	opened    map[string]time.Time
	index     stateIndex // state_index.go
}

// NewState returns the state of an empty ledger.
func NewState() *State {
	s := &State{}
	s.init()
	return s
}

func (s *State) init() {
	s.initMaps()
	s.buildIndex()
}

// initMaps builds the maps that index Runs; the indexes of state_index.go
// are the caller's.
func (s *State) initMaps() {
	if s.Held == nil {
		s.Held = map[string]*Entry{}
	}
	if s.ViolationSubjects == nil {
		s.ViolationSubjects = map[string]bool{}
	}
	if s.Resolved == nil {
		s.Resolved = map[string]*Entry{}
	}
	t := &s.Totals
	if t.Runs == nil {
		t.Runs = map[string]map[string]int{}
		t.Tokens = map[string]map[string][2]int64{}
		t.CostUSD = map[string]map[string]float64{}
		t.WorkUnits = map[string]map[string]map[string]int{}
		t.MergedMinutes = map[string]float64{}
		t.Decisions = map[string]map[string]map[string]int{}
		t.Violations = map[string]int{}
		t.Held = map[string]map[string]int{}
	}
	s.runs = make(map[string]*Run, len(s.Runs))
	s.byAgent = map[string][]*Run{}
	s.opened = map[string]time.Time{}
	s.byTrigger = make(map[string]*Run, len(s.Runs))
	for _, r := range s.Runs {
		s.runs[r.ID] = r
		s.byAgent[r.Agent] = append(s.byAgent[r.Agent], r)
		if k := triggerKey(r.Agent, r.Trigger); s.byTrigger[k] == nil {
			s.byTrigger[k] = r
		}
		if r.ProposalOpen() {
			s.opened[r.ID] = r.Opened.Time
		}
	}
}

// Run returns the run with the given id, or nil.
func (s *State) Run(id string) *Run { return s.runs[id] }

func triggerKey(agent, trigger string) string { return agent + "\x00" + trigger }

// Triggered returns the agent's first run for the trigger id, or nil: a
// schedule slot, an alert group's notification, a manual request. It costs
// one map lookup whatever the ledger's length.
func (s *State) Triggered(agent, trigger string) *Run { return s.byTrigger[triggerKey(agent, trigger)] }

// Resolution returns the alert.resolved entry recorded for the agent and
// trigger id, or nil.
func (s *State) Resolution(agent, trigger string) *Entry {
	return s.Resolved[triggerKey(agent, trigger)]
}

// AgentRuns returns the agent's runs in start order. The slice must not be
// modified.
func (s *State) AgentRuns(agent string) []*Run { return s.byAgent[agent] }

// Agents returns the names of agents with runs, in no particular order.
func (s *State) Agents() []string {
	out := make([]string, 0, len(s.byAgent))
	for a := range s.byAgent {
		out = append(out, a)
	}
	return out
}

// OpenRuns returns the agent's runs with an open proposal, oldest first.
func (s *State) OpenRuns(agent string) []*Run {
	var out []*Run
	for _, r := range s.byAgent[agent] {
		if r.ProposalOpen() {
			out = append(out, r)
		}
	}
	return out
}

// Rejected returns the agent's run whose change equal to changeID was
// rejected, or nil; the first to start when there are several. It costs
// what the runs with that change number, not the agent's history.
func (s *State) Rejected(agent, changeID string) *Run {
	runs := s.runsAt(s.index.changes[changeKey{agent, changeID}])
	if changeID == "" {
		runs = s.byAgent[agent] // runs without a change are not indexed
	}
	for _, r := range runs {
		if r.Agent == agent && r.Closed != nil && r.Closed.Type == ProposalRejected && r.ChangeID() == changeID {
			return r
		}
	}
	return nil
}

// Reverted returns the agent's run whose change equal to changeID was
// merged and then undone by a merged revert (and that revert run, the
// first to start when there are several), or nil: a change people took
// back is as unwanted as one they rejected. It costs what the runs with
// that change and their reverts number, not the agent's history.
func (s *State) Reverted(agent, changeID string) (orig, revert *Run) {
	if changeID == "" {
		for _, r := range s.byAgent[agent] { // runs without a change are not indexed
			if r.Reverts == "" || r.Closed == nil || r.Closed.Type != ProposalMerged {
				continue
			}
			if o := s.Run(r.Reverts); o != nil && o.Agent == agent && o.ChangeID() == changeID {
				return o, r
			}
		}
		return nil, nil
	}
	for _, p := range s.index.changes[changeKey{agent, changeID}] {
		o := s.Runs[p]
		if o.Agent != agent || o.ChangeID() != changeID {
			continue
		}
		for _, q := range s.index.reverts[o.ID] {
			r := s.Runs[q]
			if r.Agent == agent && r.Closed != nil && r.Closed.Type == ProposalMerged && (revert == nil || r.ix.pos < revert.ix.pos) {
				orig, revert = o, r
				break // the rest started later
			}
		}
	}
	return orig, revert
}

// RunStarts returns when the agent's runs started at or after since.
func (s *State) RunStarts(agent string, since time.Time) []time.Time {
	var out []time.Time
	for _, r := range s.byAgent[agent] {
		if !r.Started.Before(since) {
			out = append(out, r.Started)
		}
	}
	return out
}

// OpenProposals is the agent's number of open proposals.
func (s *State) OpenProposals(agent string) int { return len(s.OpenRuns(agent)) }

// Running is the agent's number of runs that started and have neither
// finished nor failed.
func (s *State) Running(agent string) int {
	n := 0
	for _, r := range s.byAgent[agent] {
		if !r.Settled {
			n++
		}
	}
	return n
}

// Spent is the agent's settled cost plus the reservations of unsettled
// attempts, for attempts claimed at or after since: each attempt of a
// retried run counts once, in the window it was claimed in. It costs
// O(log n) in the agent's attempts (state_spend.go).
func (s *State) Spent(agent string, since time.Time) float64 {
	x := s.index.attempts[agent]
	if x == nil {
		return 0
	}
	return x.since(since)
}

// Clone returns a deep enough copy for a caller to Apply entries to
// without changing s: runs and entries are shared until replaced.
func (s *State) Clone() *State {
	c := *s
	c.Runs = make([]*Run, len(s.Runs))
	for i, r := range s.Runs {
		cp := *r
		cp.Attempts = slices.Clone(r.Attempts)                                    // Apply changes attempts in place
		cp.Heads, cp.Violations = slices.Clip(r.Heads), slices.Clip(r.Violations) // appends copy
		cp.ix.spend, cp.ix.changes = slices.Clip(r.ix.spend), slices.Clip(r.ix.changes)
		c.Runs[i] = &cp
	}
	c.Held = make(map[string]*Entry, len(s.Held))
	for k, v := range s.Held {
		c.Held[k] = v
	}
	c.ViolationSubjects = maps.Clone(s.ViolationSubjects)
	c.Resolved = maps.Clone(s.Resolved)
	c.Totals = s.Totals.clone()
	c.Keys = append([]Key(nil), s.Keys...)
	c.initMaps()
	c.index = s.cloneIndex(&c)
	return &c
}

func (t Totals) clone() Totals {
	c := t
	c.Runs = cloneNested(t.Runs)
	c.Tokens = cloneNested(t.Tokens)
	c.CostUSD = cloneNested(t.CostUSD)
	c.WorkUnits = map[string]map[string]map[string]int{}
	for k, v := range t.WorkUnits {
		c.WorkUnits[k] = cloneNested(v)
	}
	c.MergedMinutes = cloneMap(t.MergedMinutes)
	c.Decisions = map[string]map[string]map[string]int{}
	for k, v := range t.Decisions {
		c.Decisions[k] = cloneNested(v)
	}
	c.Violations = cloneMap(t.Violations)
	c.Held = cloneNested(t.Held)
	c.ApprovalSeconds = append([]float64(nil), t.ApprovalSeconds...)
	return c
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneNested[K1, K2 comparable, V any](m map[K1]map[K2]V) map[K1]map[K2]V {
	out := make(map[K1]map[K2]V, len(m))
	for k, v := range m {
		out[k] = cloneMap(v)
	}
	return out
}

// addTokens counts a model's tokens in the agent's totals.
func (t *Totals) addTokens(agent, model string, input, output int64) {
	m := inner(t.Tokens, agent)
	u := m[model]
	u[0] += input
	u[1] += output
	m[model] = u
}

// addCost counts a model's cost in the agent's totals; nothing for none.
func (t *Totals) addCost(agent, model string, cost float64) {
	if cost > 0 {
		inner(t.CostUSD, agent)[model] += cost
	}
}

// inner returns m[k], creating it.
func inner[K1, K2 comparable, V any](m map[K1]map[K2]V, k K1) map[K2]V {
	v, ok := m[k]
	if !ok {
		v = map[K2]V{}
		m[k] = v
	}
	return v
}

// Apply folds the next entry into the state. The entry must be the one
// after the last applied (seq and prev digest), else nothing changes and
// the error says why; an entry of an unknown type or without the fields its
// type requires is refused the same way.
func (s *State) Apply(e Entry) error {
	if e.Seq != s.Seq+1 {
		return fmt.Errorf("apply entry %d: the state is at entry %d", e.Seq, s.Seq)
	}
	if e.Prev != s.Digest {
		return fmt.Errorf("apply entry %d: its prev %s is not the digest of entry %d", e.Seq, short(e.Prev), s.Seq)
	}
	typed, err := e.Event.Typed()
	if err != nil {
		return fmt.Errorf("apply entry %d: %w", e.Seq, err)
	}
	e.Bundle = nil // the state keeps facts, not bundles
	ep := &e
	t := &s.Totals
	var r *Run
	if re, ok := typed.(runEvent); ok && re.run().RunID != "" {
		ref := re.run()
		r = s.runs[ref.RunID]
		if r == nil {
			r = &Run{ID: ref.RunID, Agent: ref.Agent, Trigger: e.Trigger, SpecDigest: e.SpecDigest, SpecCommit: e.SpecCommit, Started: e.Time, ix: runIndex{pos: len(s.Runs)}}
			s.Runs = append(s.Runs, r)
			s.runs[r.ID] = r
			s.byAgent[r.Agent] = append(s.byAgent[r.Agent], r)
			if k := triggerKey(r.Agent, r.Trigger); s.byTrigger[k] == nil {
				s.byTrigger[k] = r
			}
			delete(s.Held, ref.Agent)
		}
		if e.TranscriptDigest != "" {
			r.Transcript = ep
		}
		defer s.reindex(r, false)
	}
	settle := func(agent, outcome, model string, usage *Usage, cost float64, split []ModelUsage) {
		at := r.current()
		at.CostUSD += cost
		at.Settled = true
		r.CostUSD += cost
		r.Settled = true
		inner(t.Runs, agent)[outcome]++
		if len(split) > 0 {
			// A tiered run: each model's tokens and cost under its name.
			for _, mu := range split {
				t.addTokens(agent, mu.Model, mu.InputTokens, mu.OutputTokens)
				t.addCost(agent, mu.Model, mu.CostUSD)
			}
			return
		}
		if usage != nil {
			t.addTokens(agent, model, usage.InputTokens, usage.OutputTokens)
		}
		t.addCost(agent, model, cost)
	}
	// settleRetried settles, at no cost, an attempt claimed by run.retried
	// after the run had finished (its proposal's push was lost): the
	// attempt ends when the proposal opens, or when its branch turns out
	// to be squatted.
	settleRetried := func() {
		if r != nil && !r.Settled && r.Finished != nil {
			r.current().Settled = true
			r.Settled = true
		}
	}
	// spendDecision counts what a decision entry spent (second-model
	// reviews, evals) in the run's current attempt, which money budgets
	// read, and the reviews it asked for (not those it reused) in the
	// agent's totals, by reviewer model.
	spendDecision := func(agent string, cost float64, decision json.RawMessage) {
		if r == nil {
			return
		}
		r.current().CostUSD += cost
		r.CostUSD += cost
		var d struct {
			Reviews []struct {
				Model        string  `json:"model"`
				InputTokens  int64   `json:"input_tokens"`
				OutputTokens int64   `json:"output_tokens"`
				CostUSD      float64 `json:"cost_usd"`
				Reused       bool    `json:"reused"`
			} `json:"reviews"`
		}
		if json.Unmarshal(decision, &d) != nil {
			return
		}
		for _, rv := range d.Reviews {
			if rv.Reused {
				continue
			}
			t.addTokens(agent, rv.Model, rv.InputTokens, rv.OutputTokens)
			t.addCost(agent, rv.Model, rv.CostUSD)
		}
	}
	closeProposal := func(agent, outcome string, wu *WorkUnit) {
		r.Closed = ep
		kind := ""
		if wu != nil {
			kind = wu.Kind
		}
		inner(inner(t.WorkUnits, agent), kind)[outcome]++
		delete(s.opened, r.ID)
	}
	switch ev := typed.(type) {
	case GenesisEvent:
		s.Keys, s.KeysSeq, s.KeysSubject = ev.Keys, e.Seq, e.Subject
	case KeysChangedEvent:
		s.Keys, s.KeysSeq, s.KeysSubject = ev.Keys, e.Seq, e.Subject
	case SpecLoadedEvent:
		s.LastSpec, s.LastGoodSpec = ep, ep
	case SpecInvalidEvent:
		s.LastSpec = ep
	case RunHeldEvent:
		s.Held[ev.Agent] = ep
		inner(t.Held, ev.Agent)[ev.Hold.Kind]++
	case BudgetExceededEvent:
		s.Held[ev.Agent] = ep
		inner(t.Held, ev.Agent)[ev.Hold.Kind]++
	case AlertResolvedEvent:
		s.Resolved[triggerKey(ev.Agent, ev.Trigger)] = ep
	case RunStartedEvent:
		r.Alert, r.Request, r.Reverts = ev.Alert, ev.Request, ev.Reverts
		r.ReservedUSD = ev.ReservedUSD
		r.Claimant, r.LeaseUntil = ev.Claimant, ev.LeaseUntil
		r.Attempt = 1
		r.Attempts = append(r.Attempts, Attempt{Started: e.Time, ReservedUSD: ev.ReservedUSD})
	case RunRetriedEvent:
		// The next attempt: the run is unfinished again, with a new
		// claim and reservation; the failed attempts' costs stay counted.
		r.Failed, r.Settled, r.RetryAfter = nil, false, time.Time{}
		r.Attempt = ev.Attempt
		r.ReservedUSD = ev.ReservedUSD
		r.Claimant, r.LeaseUntil = ev.Claimant, ev.LeaseUntil
		r.Attempts = append(r.Attempts, Attempt{Started: e.Time, ReservedUSD: ev.ReservedUSD})
		delete(s.Held, ev.Agent)
	case RunAbandonedEvent:
		r.Claimant, r.LeaseUntil = ev.Claimant, ev.LeaseUntil
		r.Abandoned++
	case RunFinishedEvent:
		r.Finished = ep
		settle(ev.Agent, ev.Outcome, ev.Model, ev.Usage, ev.CostUSD, ev.ModelUsage)
	case RunFailedEvent:
		r.Failed, r.RetryAfter = ep, ev.RetryAfter
		settle(ev.Agent, "failed", ev.Model, ev.Usage, ev.CostUSD, ev.ModelUsage)
	case PolicyDecisionEvent:
		r.Decision = ep
		spendDecision(ev.Agent, e.CostUSD, ev.Decision)
		var d struct {
			Outcome string `json:"outcome"`
			Rules   []struct {
				Policy string `json:"policy"`
				Rule   string `json:"rule"`
			} `json:"rules"`
		}
		if json.Unmarshal(ev.Decision, &d) == nil {
			for _, rule := range d.Rules {
				inner(inner(t.Decisions, rule.Policy), rule.Rule)[d.Outcome]++
			}
		}
	case ProposalOpenedEvent:
		settleRetried()
		r.Opened = ep
		r.Heads = append(r.Heads, ev.Proposal.Head)
		s.opened[r.ID] = e.Time
	case ProposalUpdatedEvent:
		r.Updated, r.Decision = ep, ep
		spendDecision(ev.Agent, e.CostUSD, ev.Decision)
		r.Heads = append(r.Heads, ev.Proposal.Head)
	case ProposalApprovedEvent:
		// Recorded for the audit trail; the merge that follows closes
		// the proposal.
	case ProposalMergedEvent:
		if opened, ok := s.opened[r.ID]; ok {
			t.ApprovalSeconds = append(t.ApprovalSeconds, e.Time.Sub(opened).Seconds())
		}
		if ev.WorkUnit != nil {
			t.MergedMinutes[ev.Agent] += ev.WorkUnit.HumanMinutes
		}
		closeProposal(ev.Agent, "merged", ev.WorkUnit)
	case ProposalRejectedEvent:
		closeProposal(ev.Agent, "rejected", e.WorkUnit)
	case ProposalSupersededEvent:
		closeProposal(ev.Agent, "superseded", e.WorkUnit)
	case PolicyViolationEvent:
		settleRetried()
		if r != nil {
			r.Violation = true
			r.Violations = append(r.Violations, ev.Subject)
		} else {
			s.ViolationSubjects[ev.Subject] = true
		}
		t.Violations[ev.Agent]++
	default:
		// Typed has a Go type for every type in schema; one added there
		// without a case here is caught by TestApplyKnowsEveryEvent.
		return fmt.Errorf("apply entry %d: the fold has no case for %q", e.Seq, e.Type)
	}
	s.Seq, s.Head, s.Digest, s.Time = e.Seq, e.Commit, e.Digest, e.Time
	return nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "(none)"
	}
	return s
}
