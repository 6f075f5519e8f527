package ledger

import (
	"encoding/json"
	"fmt"
	"time"
)

// TypedEvent is the typed form of an event: one Go type per event type,
// holding the fields that type carries. (*Event).Typed returns it after
// checking the required fields, and State.Apply folds it with one case per
// type; a switch over TypedEvent that misses a type fails at its default.
type TypedEvent interface {
	// EventType is the event's "event" name, e.g. "run.started".
	EventType() string
}

// RunRef names the run an event is about.
type RunRef struct {
	Agent string
	RunID string
}

// GenesisEvent is entry 1: the keys trusted to sign the ledger.
type GenesisEvent struct{ Keys []Key }

// KeysChangedEvent replaces the trusted keys from the next entry on; Reviewer
// merged the change to .reconciler/keys.
type KeysChangedEvent struct {
	Keys     []Key
	Reviewer string
}

// SpecLoadedEvent records a spec that loaded.
type SpecLoadedEvent struct{ SpecCommit, SpecDigest string }

// SpecInvalidEvent records a spec that did not load.
type SpecInvalidEvent struct {
	SpecCommit  string
	Diagnostics []string
}

// RunStartedEvent claims a run, reserving its most expensive cost, for
// Claimant until LeaseUntil.
type RunStartedEvent struct {
	RunRef
	Trigger, SpecCommit, SpecDigest string
	// Alert or Request is what started the run, for alert and manual
	// triggers.
	Alert       *Alert
	Request     *Request
	ReservedUSD float64
	Claimant    string
	LeaseUntil  time.Time
	// Reverts is the run whose merged change this run reverts, for a
	// revert run.
	Reverts string
}

// RunAbandonedEvent takes over the claim of a run whose lease expired
// without an outcome; Error says whose and when.
type RunAbandonedEvent struct {
	RunRef
	Error      string
	Claimant   string
	LeaseUntil time.Time
}

// RunFinishedEvent settles a run that completed.
type RunFinishedEvent struct {
	RunRef
	Trigger, SpecDigest string
	Outcome             string
	Change              *Change
	Model               string
	Usage               *Usage
	CostUSD             float64
	ModelUsage          []ModelUsage
	WorkUnit            *WorkUnit
	TranscriptDigest    string
	Sandbox             []string
}

// RunFailedEvent settles an attempt of a run that failed. RetryAfter is
// when the next attempt may start, zero when the failure is final.
type RunFailedEvent struct {
	RunRef
	SpecDigest       string
	Error            string
	Model            string
	Usage            *Usage
	CostUSD          float64
	ModelUsage       []ModelUsage
	TranscriptDigest string
	Attempt          int
	RetryAfter       time.Time
	Sandbox          []string
}

// RunRetriedEvent claims attempt Attempt (2 or more) of a run that failed,
// reserving its most expensive cost, for Claimant until LeaseUntil.
type RunRetriedEvent struct {
	RunRef
	Trigger, SpecCommit, SpecDigest string
	Attempt                         int
	ReservedUSD                     float64
	Claimant                        string
	LeaseUntil                      time.Time
}

// RunHeldEvent records a due run held back by a gate other than money.
type RunHeldEvent struct {
	Agent, Trigger string
	Hold           Hold
}

// BudgetExceededEvent records a due run held back by a money budget.
type BudgetExceededEvent struct {
	Agent, Trigger string
	Hold           Hold
}

// AlertResolvedEvent records that the alerts of a notification matching
// Agent's on_alert trigger resolved.
type AlertResolvedEvent struct {
	Agent, Trigger string
	Alert          Alert
}

// PolicyDecisionEvent records the policies' decision on a run's change.
type PolicyDecisionEvent struct {
	RunRef
	Decision json.RawMessage
}

// ProposalOpenedEvent records a proposal branch pushed for a run.
type ProposalOpenedEvent struct {
	RunRef
	Proposal Proposal
}

// ProposalUpdatedEvent records a proposal branch that moved, and the
// decision on its new head.
type ProposalUpdatedEvent struct {
	RunRef
	Proposal Proposal
	Change   *Change
	Decision json.RawMessage
}

// ProposalApprovedEvent records a reviewer's approval of a proposal head.
type ProposalApprovedEvent struct {
	RunRef
	Reviewer  string
	Approval  Approval
	Proposal  Proposal
	Overrides []string
}

// ProposalMergedEvent records a proposal merged into the protected branch.
type ProposalMergedEvent struct {
	RunRef
	Proposal Proposal
	WorkUnit *WorkUnit
	// Comments are what people wrote on its pull request, nil when
	// none were read (see Comments).
	Comments *Comments
}

// ProposalRejectedEvent records a proposal closed without merge.
type ProposalRejectedEvent struct {
	RunRef
	Proposal Proposal
	// Comments are what people wrote on its pull request, nil when
	// none were read (see Comments).
	Comments *Comments
}

// ProposalSupersededEvent records a proposal replaced by a newer run's.
type ProposalSupersededEvent struct {
	RunRef
	Proposal Proposal
}

// PolicyViolationEvent records a merge or push that broke policy: about a
// run when RunID is set, else about Subject (a key pushed without
// approval, say).
type PolicyViolationEvent struct {
	RunRef
	Subject string
	Error   string
}

func (GenesisEvent) EventType() string            { return Genesis }
func (KeysChangedEvent) EventType() string        { return KeysChanged }
func (SpecLoadedEvent) EventType() string         { return SpecLoaded }
func (SpecInvalidEvent) EventType() string        { return SpecInvalid }
func (RunStartedEvent) EventType() string         { return RunStarted }
func (RunFinishedEvent) EventType() string        { return RunFinished }
func (RunFailedEvent) EventType() string          { return RunFailed }
func (RunRetriedEvent) EventType() string         { return RunRetried }
func (RunAbandonedEvent) EventType() string       { return RunAbandoned }
func (RunHeldEvent) EventType() string            { return RunHeld }
func (BudgetExceededEvent) EventType() string     { return BudgetExceeded }
func (PolicyDecisionEvent) EventType() string     { return PolicyDecision }
func (ProposalOpenedEvent) EventType() string     { return ProposalOpened }
func (ProposalUpdatedEvent) EventType() string    { return ProposalUpdated }
func (ProposalApprovedEvent) EventType() string   { return ProposalApproved }
func (ProposalMergedEvent) EventType() string     { return ProposalMerged }
func (ProposalRejectedEvent) EventType() string   { return ProposalRejected }
func (ProposalSupersededEvent) EventType() string { return ProposalSuperseded }
func (PolicyViolationEvent) EventType() string    { return PolicyViolation }
func (AlertResolvedEvent) EventType() string      { return AlertResolved }

// Typed checks the event (see Validate) and returns its typed form.
func (e *Event) Typed() (TypedEvent, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	ref := RunRef{Agent: e.Agent, RunID: e.RunID}
	switch e.Type {
	case Genesis:
		return GenesisEvent{Keys: e.Keys}, nil
	case KeysChanged:
		return KeysChangedEvent{Keys: e.Keys, Reviewer: e.Reviewer}, nil
	case SpecLoaded:
		return SpecLoadedEvent{SpecCommit: e.SpecCommit, SpecDigest: e.SpecDigest}, nil
	case SpecInvalid:
		return SpecInvalidEvent{SpecCommit: e.SpecCommit, Diagnostics: e.Diagnostics}, nil
	case RunStarted:
		return RunStartedEvent{RunRef: ref, Trigger: e.Trigger, SpecCommit: e.SpecCommit, SpecDigest: e.SpecDigest, ReservedUSD: e.ReservedUSD,
			Claimant: e.Claimant, LeaseUntil: e.LeaseUntil, Alert: e.Alert, Request: e.Request, Reverts: e.Reverts}, nil
	case RunAbandoned:
		return RunAbandonedEvent{RunRef: ref, Error: e.Error, Claimant: e.Claimant, LeaseUntil: e.LeaseUntil}, nil
	case RunFinished:
		return RunFinishedEvent{RunRef: ref, Trigger: e.Trigger, SpecDigest: e.SpecDigest, Outcome: e.Outcome, Change: e.Change,
			Model: e.Model, Usage: e.Usage, CostUSD: e.CostUSD, ModelUsage: e.ModelUsage, WorkUnit: e.WorkUnit, TranscriptDigest: e.TranscriptDigest, Sandbox: e.Sandbox}, nil
	case RunFailed:
		return RunFailedEvent{RunRef: ref, SpecDigest: e.SpecDigest, Error: e.Error, Model: e.Model, Usage: e.Usage,
			CostUSD: e.CostUSD, ModelUsage: e.ModelUsage, TranscriptDigest: e.TranscriptDigest, Attempt: e.Attempt, RetryAfter: e.RetryAfter, Sandbox: e.Sandbox}, nil
	case RunRetried:
		return RunRetriedEvent{RunRef: ref, Trigger: e.Trigger, SpecCommit: e.SpecCommit, SpecDigest: e.SpecDigest, Attempt: e.Attempt,
			ReservedUSD: e.ReservedUSD, Claimant: e.Claimant, LeaseUntil: e.LeaseUntil}, nil
	case RunHeld:
		return RunHeldEvent{Agent: e.Agent, Trigger: e.Trigger, Hold: *e.Hold}, nil
	case BudgetExceeded:
		return BudgetExceededEvent{Agent: e.Agent, Trigger: e.Trigger, Hold: *e.Hold}, nil
	case PolicyDecision:
		return PolicyDecisionEvent{RunRef: ref, Decision: e.Decision}, nil
	case ProposalOpened:
		return ProposalOpenedEvent{RunRef: ref, Proposal: *e.Proposal}, nil
	case ProposalApproved:
		return ProposalApprovedEvent{RunRef: ref, Reviewer: e.Reviewer, Approval: *e.Approval, Proposal: *e.Proposal, Overrides: e.Overrides}, nil
	case ProposalUpdated:
		return ProposalUpdatedEvent{RunRef: ref, Proposal: *e.Proposal, Change: e.Change, Decision: e.Decision}, nil
	case ProposalMerged:
		return ProposalMergedEvent{RunRef: ref, Proposal: *e.Proposal, WorkUnit: e.WorkUnit, Comments: e.Comments}, nil
	case ProposalRejected:
		return ProposalRejectedEvent{RunRef: ref, Proposal: *e.Proposal, Comments: e.Comments}, nil
	case ProposalSuperseded:
		return ProposalSupersededEvent{RunRef: ref, Proposal: *e.Proposal}, nil
	case AlertResolved:
		return AlertResolvedEvent{Agent: e.Agent, Trigger: e.Trigger, Alert: *e.Alert}, nil
	case PolicyViolation:
		return PolicyViolationEvent{RunRef: ref, Subject: e.Subject, Error: e.Error}, nil
	}
	return nil, fmt.Errorf("%w: %q has no Go type", ErrEventInvalid, e.Type)
}

// runEvent is a typed event about a run (every event embedding RunRef).
type runEvent interface{ run() RunRef }

func (r RunRef) run() RunRef { return r }
