package metrics_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/ledger"
)

// t0 is when the test ledgers begin.
var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

// chain is a ledger built the way the reconciler builds one: each entry
// follows the last (seq, prev digest), carries a valid event and is folded
// into a ledger.State with Apply. Digests and commits are stand-ins,
// derived from the entry's position, since metrics never reads bundles.
type chain struct {
	t       *testing.T
	s       *ledger.State
	entries []ledger.Entry
}

func newChain(t *testing.T) *chain {
	t.Helper()
	c := &chain{t: t, s: ledger.NewState()}
	c.add(t0, ledger.Event{Type: ledger.Genesis, Keys: []ledger.Key{{ID: "k1", PEM: "-----BEGIN PUBLIC KEY-----", Source: "reconciler"}}})
	return c
}

func commitID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:20])
}

// add appends the event as the next entry, filling in what every event
// needs (summary, subject), and returns the entry.
func (c *chain) add(at time.Time, ev ledger.Event) ledger.Entry {
	c.t.Helper()
	seq := c.s.Seq + 1
	if ev.Summary == "" {
		ev.Summary = fmt.Sprintf("%s %s %s", ev.Type, ev.Agent, ev.RunID)
	}
	if ev.Subject == "" {
		ev.Subject = commitID(fmt.Sprintf("subject %d", seq))
	}
	bundle := sha256.Sum256(fmt.Appendf(nil, "bundle %d after %s", seq, c.s.Digest))
	e := ledger.Entry{
		Predicate: ledger.Predicate{Seq: seq, Prev: c.s.Digest, Time: at, Event: ev},
		Path:      ledger.EntryPath(seq),
		Digest:    hex.EncodeToString(bundle[:]),
	}
	e.Commit = plumbing.NewHash(commitID("evidence " + e.Digest))
	if err := c.s.Apply(e); err != nil {
		c.t.Fatalf("apply %s: %v", ev.Type, err)
	}
	c.entries = append(c.entries, e)
	return e
}

// replay folds the chain's entries into a new state, as a restarted
// reconciler does.
func (c *chain) replay() *ledger.State {
	c.t.Helper()
	s := ledger.NewState()
	for _, e := range c.entries {
		if err := s.Apply(e); err != nil {
			c.t.Fatal(err)
		}
	}
	return s
}

func (c *chain) proposal(agent, run string) *ledger.Proposal {
	return &ledger.Proposal{Branch: "agents/" + agent + "/" + run, Head: commitID("head " + run)}
}

// run records a run that started and finished with the outcome (changed
// or no_change) on the model, with the usage and cost.
func (c *chain) run(at time.Time, agent, run, outcome, model string, in, out int64, costUSD float64) {
	c.add(at, ledger.Event{Type: ledger.RunStarted, Agent: agent, RunID: run, Trigger: "schedule", SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec", ReservedUSD: 1})
	ev := ledger.Event{Type: ledger.RunFinished, Agent: agent, RunID: run, Trigger: "schedule", SpecDigest: "sha256:spec",
		Outcome: outcome, Model: model, Usage: &ledger.Usage{InputTokens: in, OutputTokens: out}, CostUSD: costUSD}
	if outcome == ledger.OutcomeChanged {
		ev.Change = &ledger.Change{ID: "change-" + run, Files: []string{"deploy/app.yaml"}, Added: 1, Removed: 1}
	}
	c.add(at, ev)
}

func (c *chain) failed(at time.Time, agent, run string) {
	c.add(at, ledger.Event{Type: ledger.RunStarted, Agent: agent, RunID: run, Trigger: "schedule", SpecCommit: commitID("spec"),
		SpecDigest: "sha256:spec"})
	c.add(at, ledger.Event{Type: ledger.RunFailed, Agent: agent, RunID: run, SpecDigest: "sha256:spec", Error: "exit status 1"})
}

func (c *chain) decision(at time.Time, agent, run, policy, rule, outcome string) {
	d, err := json.Marshal(map[string]any{"outcome": outcome, "rules": []map[string]string{{"policy": policy, "rule": rule}}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.add(at, ledger.Event{Type: ledger.PolicyDecision, Agent: agent, RunID: run, Decision: d})
}

func (c *chain) opened(at time.Time, agent, run string) {
	c.add(at, ledger.Event{Type: ledger.ProposalOpened, Agent: agent, RunID: run, Proposal: c.proposal(agent, run)})
}

func (c *chain) merged(at time.Time, agent, run string, wu *ledger.WorkUnit) {
	p := c.proposal(agent, run)
	p.MergeCommit = commitID("merge " + run)
	c.add(at, ledger.Event{Type: ledger.ProposalMerged, Agent: agent, RunID: run, Proposal: p, WorkUnit: wu})
}

func (c *chain) rejected(at time.Time, agent, run string, wu *ledger.WorkUnit) {
	c.add(at, ledger.Event{Type: ledger.ProposalRejected, Agent: agent, RunID: run, Proposal: c.proposal(agent, run), WorkUnit: wu})
}

func (c *chain) held(at time.Time, agent, kind string) {
	c.add(at, ledger.Event{Type: ledger.RunHeld, Agent: agent, Trigger: "schedule",
		Hold: &ledger.Hold{Kind: kind, Reason: "held by the test"}})
}

func (c *chain) violation(at time.Time, agent string) {
	c.add(at, ledger.Event{Type: ledger.PolicyViolation, Agent: agent, Error: "a key was pushed without approval"})
}

var imagePin = &ledger.WorkUnit{Kind: "image-pin", HumanMinutes: 30}

// busyLedger is a ledger with something in every series.
func busyLedger(t *testing.T) *chain {
	c := newChain(t)
	c.run(t0, "pinner", "r1", ledger.OutcomeChanged, "gpt-4o-mini", 1000, 200, 0.5)
	c.decision(t0, "pinner", "r1", "protect-prod", "production", "require_approval")
	c.opened(t0.Add(time.Minute), "pinner", "r1")
	c.merged(t0.Add(91*time.Minute), "pinner", "r1", imagePin)
	c.failed(t0.Add(2*time.Hour), "pinner", "r2")
	c.run(t0.Add(3*time.Hour), "env", "r3", ledger.OutcomeChanged, "llama3", 50, 5, 0)
	c.opened(t0.Add(3*time.Hour), "env", "r3")
	c.held(t0.Add(4*time.Hour), "pinner", "freeze")
	c.violation(t0.Add(4*time.Hour), "")
	c.run(t0.Add(5*time.Hour), "pinner", "r4", ledger.OutcomeChanged, "gpt-4o-mini", 400, 100, 0.25)
	c.opened(t0.Add(5*time.Hour), "pinner", "r4")
	c.rejected(t0.Add(6*time.Hour), "pinner", "r4", imagePin)
	return c
}
