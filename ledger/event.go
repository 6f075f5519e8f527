package ledger

import (
	"errors"
	"fmt"
	"strings"
)

// Event types. Every entry's predicate has one of these as its "event"; a
// reader refuses any other (see Event.Validate).
const (
	// Genesis is entry 1: it names the keys trusted to sign the ledger.
	Genesis = "ledger.genesis"
	// KeysChanged replaces the trusted key set, from the next entry on.
	// It is signed by a key trusted before it.
	KeysChanged = "keys.changed"
	SpecLoaded  = "spec.loaded"
	SpecInvalid = "spec.invalid"
	RunStarted  = "run.started"
	RunFinished = "run.finished"
	RunFailed   = "run.failed"
	// RunRetried claims the next attempt of a run whose run.failed said
	// it may be retried (retry_after), reserving its cost again.
	RunRetried = "run.retried"
	// RunAbandoned takes over the claim of a run whose lease expired
	// without an outcome: the new claimant runs it.
	RunAbandoned   = "run.abandoned"
	RunHeld        = "run.held"
	PolicyDecision = "policy.decision"
	ProposalOpened = "proposal.opened"
	// ProposalUpdated records a proposal branch that moved (a person pushed
	// to it): the new head and the decision on its whole change against
	// the merge base. Approvals of older heads no longer count.
	ProposalUpdated    = "proposal.updated"
	ProposalApproved   = "proposal.approved"
	ProposalMerged     = "proposal.merged"
	ProposalRejected   = "proposal.rejected"
	ProposalSuperseded = "proposal.superseded"
	BudgetExceeded     = "budget.exceeded"
	PolicyViolation    = "policy.violation"
	// AlertResolved records an Alertmanager notification that its alerts
	// resolved, for an agent whose on_alert trigger matches: recorded, never
	// run.
	AlertResolved = "alert.resolved"
)

// Run outcomes recorded on run.finished.
const (
	OutcomeChanged           = "changed"
	OutcomeNoChange          = "no_change"
	OutcomeDuplicateOpen     = "duplicate_open"
	OutcomeDuplicateRejected = "duplicate_rejected"
)

// field names one predicate field an event type requires, with the check
// that it is set.
type field struct {
	name string
	set  func(*Event) bool
}

var (
	fAgent      = field{"agent", func(e *Event) bool { return e.Agent != "" }}
	fRunID      = field{"run_id", func(e *Event) bool { return validRunID(e.RunID) }}
	fSpecCommit = field{"spec_commit", func(e *Event) bool { return isHexCommit(e.SpecCommit) }}
	fSpecDigest = field{"spec_digest", func(e *Event) bool { return e.SpecDigest != "" }}
	fTrigger    = field{"trigger", func(e *Event) bool { return e.Trigger != "" }}
	fError      = field{"error", func(e *Event) bool { return e.Error != "" }}
	fAlert      = field{"alert", func(e *Event) bool { return e.Alert != nil && e.Alert.GroupKey != "" && e.Alert.Status != "" }}
	fHold       = field{"hold", func(e *Event) bool { return e.Hold != nil && e.Hold.Kind != "" && e.Hold.Reason != "" }}
	fDecision   = field{"decision", func(e *Event) bool { return len(e.Decision) > 0 }}
	fProposal   = field{"proposal", func(e *Event) bool {
		return e.Proposal != nil && e.Proposal.Branch != "" && isHexCommit(e.Proposal.Head)
	}}
	fMerge = field{"proposal.merge_commit", func(e *Event) bool {
		return e.Proposal != nil && isHexCommit(e.Proposal.MergeCommit)
	}}
	fReviewer = field{"reviewer", func(e *Event) bool { return e.Reviewer != "" }}
	fApproval = field{"approval", func(e *Event) bool {
		a := e.Approval
		if a == nil {
			return false
		}
		switch a.Method {
		case ApprovalSSH, ApprovalOpenPGP:
			return a.Fingerprint != "" && a.Member != ""
		case ApprovalUnsigned:
			return a.Email != ""
		case ApprovalForge:
			return a.Login != ""
		}
		return false
	}}
	fKeys    = field{"keys", func(e *Event) bool { return len(e.Keys) > 0 }}
	fOutcome = field{"outcome", func(e *Event) bool {
		switch e.Outcome {
		case OutcomeChanged:
			return e.Change != nil && e.Change.ID != ""
		case OutcomeNoChange, OutcomeDuplicateOpen, OutcomeDuplicateRejected:
			return true
		}
		return false
	}}
	fDiagnostics = field{"diagnostics", func(e *Event) bool { return len(e.Diagnostics) > 0 }}
	fClaim       = field{"claimant", func(e *Event) bool { return e.Claimant != "" && !e.LeaseUntil.IsZero() }}
	// fRetry is the attempt a run.retried claims: the second or later.
	fRetry = field{"attempt", func(e *Event) bool { return e.Attempt >= 2 }}
)

// schema lists, per event type, the predicate fields it must carry. It is
// the one place a new event type is declared; State.Apply has the one case
// that folds it.
var schema = map[string][]field{
	Genesis:            {fKeys},
	KeysChanged:        {fKeys},
	SpecLoaded:         {fSpecCommit, fSpecDigest},
	SpecInvalid:        {fSpecCommit, fDiagnostics},
	RunStarted:         {fAgent, fRunID, fTrigger, fSpecCommit, fSpecDigest},
	RunFinished:        {fAgent, fRunID, fTrigger, fSpecDigest, fOutcome},
	RunFailed:          {fAgent, fRunID, fSpecDigest, fError},
	RunRetried:         {fAgent, fRunID, fTrigger, fSpecCommit, fSpecDigest, fRetry, fClaim},
	RunAbandoned:       {fAgent, fRunID, fError, fClaim},
	RunHeld:            {fAgent, fTrigger, fHold},
	BudgetExceeded:     {fAgent, fTrigger, fHold},
	PolicyDecision:     {fAgent, fRunID, fDecision},
	ProposalOpened:     {fAgent, fRunID, fProposal},
	ProposalUpdated:    {fAgent, fRunID, fProposal, fDecision},
	ProposalApproved:   {fAgent, fRunID, fReviewer, fApproval, fProposal, fMerge},
	ProposalMerged:     {fAgent, fRunID, fProposal, fMerge},
	ProposalRejected:   {fAgent, fRunID, fProposal},
	ProposalSuperseded: {fAgent, fRunID, fProposal},
	PolicyViolation:    {fError},
	AlertResolved:      {fAgent, fTrigger, fAlert},
}

// EventTypes returns every event type, in no particular order.
func EventTypes() []string {
	out := make([]string, 0, len(schema))
	for t := range schema {
		out = append(out, t)
	}
	return out
}

// ErrEventInvalid is wrapped by Validate's errors.
var ErrEventInvalid = errors.New("invalid event")

// Validate checks that the event is of a known type, carries every field
// its type requires, and has a one-line summary and a git commit subject.
// Append checks it before signing and every reader after verifying, so an
// entry the fold cannot interpret is never written or acted on.
func (e *Event) Validate() error {
	fields, ok := schema[e.Type]
	if !ok {
		return fmt.Errorf("%w: unknown event type %q", ErrEventInvalid, e.Type)
	}
	if e.Summary == "" || strings.ContainsAny(e.Summary, "\r\n") {
		return fmt.Errorf("%w: %s: summary must be one non-empty line", ErrEventInvalid, e.Type)
	}
	if !isHexCommit(e.Subject) {
		return fmt.Errorf("%w: %s: subject %q is not a git commit id", ErrEventInvalid, e.Type, e.Subject)
	}
	var missing []string
	for _, f := range fields {
		if !f.set(e) {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s needs %s", ErrEventInvalid, e.Type, strings.Join(missing, ", "))
	}
	if e.Reverts != "" && !validRunID(e.Reverts) {
		return fmt.Errorf("%w: %s: reverts %q is not a run id", ErrEventInvalid, e.Type, e.Reverts)
	}
	if err := e.Comments.validate(e.Type); err != nil {
		return err
	}
	for _, k := range e.Keys {
		if k.ID == "" || k.PEM == "" {
			return fmt.Errorf("%w: %s: every key needs an id and a pem", ErrEventInvalid, e.Type)
		}
	}
	return nil
}
