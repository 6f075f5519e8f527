package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Run outcomes recorded on run.finished.
const (
	OutcomeChanged           = "changed"
	OutcomeNoChange          = "no_change"
	OutcomeDuplicateOpen     = "duplicate_open"
	OutcomeDuplicateRejected = "duplicate_rejected"
)

// RunID returns the run id of an agent's run: the first 12 hex digits of
// sha256 over the agent name, its spec digest and the trigger id.
func RunID(agent, specDigest, trigger string) string {
	sum := sha256.Sum256([]byte(agent + "\x00" + specDigest + "\x00" + trigger))
	return hex.EncodeToString(sum[:])[:12]
}

// ProposalBranch returns the branch of a run's proposal.
func ProposalBranch(agent, runID string) string { return "agents/" + agent + "/" + runID }

// ChangeID returns the content identity of a change, in the spirit of git's
// patch-id: the same files with the same new contents give the same id
// whatever commit they were made on.
func ChangeID(changes []gitstore.FileChange) string {
	h := sha256.New()
	sorted := append([]gitstore.FileChange(nil), changes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, c := range sorted {
		content := sha256.Sum256(c.Content)
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00%x\n", c.Path, c.Status, uint32(c.Mode), content)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// run is what the ledger says about one run.
type run struct {
	id, agent, trigger, digest string
	specCommit                 string
	started                    time.Time
	// reserved is the run's reservation; cost its settled cost once
	// settled.
	reserved, cost float64
	settled        bool
	violation      bool
	finished       *ledger.Entry
	failed         *ledger.Entry
	decision       *ledger.Entry
	opened         *ledger.Entry
	// closed is the event that ended the proposal: merged, rejected or
	// superseded.
	closed *ledger.Entry
}

func (r *run) proposalOpen() bool { return r.opened != nil && r.closed == nil }

func (r *run) changeID() string {
	if r.finished != nil && r.finished.Change != nil {
		return r.finished.Change.ID
	}
	return ""
}

// done reports whether nothing is left to do for the run but observing its
// proposal.
func (r *run) done() bool {
	switch {
	case r.failed != nil, r.opened != nil:
		return true
	case r.finished == nil:
		return false
	case r.finished.Outcome != OutcomeChanged:
		return true
	case r.decision == nil:
		return false
	}
	d, err := r.parsedDecision()
	return err == nil && d.Outcome == policy.Deny
}

func (r *run) parsedDecision() (policy.Decision, error) {
	var d policy.Decision
	if r.decision == nil {
		return d, fmt.Errorf("run %s has no decision", r.id)
	}
	if err := json.Unmarshal(r.decision.Decision, &d); err != nil {
		return d, fmt.Errorf("run %s: decode decision entry %d: %w", r.id, r.decision.Seq, err)
	}
	return d, nil
}

// state is the reconciler's view of the ledger.
type state struct {
	runs    map[string]*run
	byAgent map[string][]*run // in start order
	// lastSpec is the last spec.loaded or spec.invalid entry.
	lastSpec *ledger.Entry
	// lastGoodSpec is the last spec.loaded entry.
	lastGoodSpec *ledger.Entry
	// held is each agent's last run.held or budget.exceeded entry since
	// its last run started.
	held map[string]*ledger.Entry
}

func buildState(entries []ledger.Entry) *state {
	s := &state{runs: map[string]*run{}, byAgent: map[string][]*run{}, held: map[string]*ledger.Entry{}}
	for i := range entries {
		e := &entries[i]
		switch e.Type {
		case ledger.SpecLoaded:
			s.lastSpec, s.lastGoodSpec = e, e
			continue
		case ledger.SpecInvalid:
			s.lastSpec = e
			continue
		case ledger.RunHeld, ledger.BudgetExceeded:
			s.held[e.Agent] = e
			continue
		}
		if e.RunID == "" {
			continue
		}
		r := s.runs[e.RunID]
		if r == nil {
			r = &run{id: e.RunID, agent: e.Agent, trigger: e.Trigger, digest: e.SpecDigest, specCommit: e.SpecCommit, started: e.Time}
			s.runs[e.RunID] = r
			s.byAgent[e.Agent] = append(s.byAgent[e.Agent], r)
			delete(s.held, e.Agent)
		}
		if e.Type == ledger.RunStarted {
			r.reserved = e.ReservedUSD
		}
		if e.Type == ledger.RunFinished || e.Type == ledger.RunFailed {
			r.cost = e.CostUSD
			r.settled = true
		}
		switch e.Type {
		case ledger.RunFinished:
			r.finished = e
		case ledger.RunFailed:
			r.failed = e
		case ledger.PolicyDecision:
			r.decision = e
		case ledger.ProposalOpened:
			r.opened = e
		case ledger.ProposalMerged, ledger.ProposalRejected, ledger.ProposalSuperseded:
			r.closed = e
		case ledger.PolicyViolation:
			r.violation = true
		}
	}
	return s
}

// openProposals returns the agent's open proposals, oldest first.
func (s *state) openProposals(agent string) []*run {
	var out []*run
	for _, r := range s.byAgent[agent] {
		if r.proposalOpen() {
			out = append(out, r)
		}
	}
	return out
}

// rejected reports whether a change equal to id was rejected before.
func (s *state) rejected(agent, changeID string) *run {
	for _, r := range s.byAgent[agent] {
		if r.closed != nil && r.closed.Type == ledger.ProposalRejected && r.changeID() == changeID {
			return r
		}
	}
	return nil
}

// state is the policy gates' view of usage.
var _ policy.Usage = (*state)(nil)

// RunStarts returns when the agent's runs started at or after since.
func (s *state) RunStarts(agent string, since time.Time) []time.Time {
	var out []time.Time
	for _, r := range s.byAgent[agent] {
		if !r.started.Before(since) {
			out = append(out, r.started)
		}
	}
	return out
}

// OpenProposals is the agent's number of open proposals.
func (s *state) OpenProposals(agent string) int { return len(s.openProposals(agent)) }

// Running is the agent's number of runs that started and have neither
// finished nor failed.
func (s *state) Running(agent string) int {
	n := 0
	for _, r := range s.byAgent[agent] {
		if !r.settled {
			n++
		}
	}
	return n
}

// Spent is the agent's settled cost plus the reservations of unsettled
// runs, for runs started at or after since.
func (s *state) Spent(agent string, since time.Time) float64 {
	total := 0.0
	for _, r := range s.byAgent[agent] {
		if r.started.Before(since) {
			continue
		}
		if r.settled {
			total += r.cost
		} else {
			total += r.reserved
		}
	}
	return total
}
