package ledger

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Branch is the evidence branch.
const Branch = "agent-evidence"

// Formats of the statements the ledger signs.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://github.com/agentgitops/reconciler/ledger/v1"
	PayloadType   = "application/vnd.in-toto+json"
)

// Event is what happened. It is the body of an entry's predicate.
type Event struct {
	Type    string `json:"event"`
	Summary string `json:"summary"`

	// Subject is the git commit the event is about (the spec commit, a
	// proposal head or a merge commit) and SubjectName what it is.
	Subject     string `json:"-"`
	SubjectName string `json:"-"`

	Agent      string `json:"agent,omitempty"`
	RunID      string `json:"run_id,omitempty"`
	SpecCommit string `json:"spec_commit,omitempty"`
	SpecDigest string `json:"spec_digest,omitempty"`
	Trigger    string `json:"trigger,omitempty"`

	Model   string  `json:"model,omitempty"`
	Usage   *Usage  `json:"usage,omitempty"`
	CostUSD float64 `json:"cost_usd,omitempty"`
	// ModelUsage splits Usage and CostUSD by model, on run.finished and
	// run.failed of a run whose agent escalated through model tiers (set
	// only when more than one model was asked): each model's tokens and
	// cost at its own price.
	ModelUsage []ModelUsage `json:"model_usage,omitempty"`
	// ReservedUSD is set on run.started and run.retried: the most the
	// attempt may cost, counted as spent until run.finished or run.failed
	// settles it.
	ReservedUSD float64 `json:"reserved_usd,omitempty"`
	// Claimant and LeaseUntil are set on run.started, run.retried and
	// run.abandoned: the run is claimed by that process until then; after
	// it, another may take the claim over with run.abandoned.
	Claimant   string    `json:"claimant,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Attempt numbers a run's attempts from 1: set on run.failed (the
	// attempt that failed), run.retried (the attempt it claims) and, after
	// a retry, on the entry that stores the attempt's transcript (Append
	// sets it from the run's current attempt when the event has none).
	Attempt int `json:"attempt,omitempty"`
	// RetryAfter is set on a run.failed that will be retried: when the
	// next attempt may start. A run.failed without it is final.
	RetryAfter time.Time `json:"retry_after,omitzero"`
	// Alert is set on run.started of a run an Alertmanager notification
	// started, and on alert.resolved: the notification, as received.
	Alert *Alert `json:"alert,omitempty"`
	// Request is set on run.started of a manual run: who asked, and why.
	Request *Request `json:"request,omitempty"`
	// Reverts is set on the entries of a revert run (run.started,
	// run.finished or run.failed, policy.decision, proposal.opened): the
	// id of the run whose merged change it reverts.
	Reverts string `json:"reverts,omitempty"`
	// Hold is set on run.held and budget.exceeded.
	Hold     *Hold     `json:"hold,omitempty"`
	WorkUnit *WorkUnit `json:"work_unit,omitempty"`
	// Sandbox is set on run.finished and run.failed of a run whose
	// command ran in the OS sandbox (exec agents): the mechanisms that
	// were in force, such as "userns", "netns" and "landlock-abi-7" (see
	// package sandbox).
	Sandbox []string `json:"sandbox,omitempty"`

	// Outcome qualifies run.finished: changed, no_change, duplicate_open,
	// duplicate_rejected.
	Outcome  string          `json:"outcome,omitempty"`
	Change   *Change         `json:"change,omitempty"`
	Decision json.RawMessage `json:"decision,omitempty"`
	Proposal *Proposal       `json:"proposal,omitempty"`
	Reviewer string          `json:"reviewer,omitempty"`
	// Approval is set on proposal.approved: how the approval was proven
	// and what it satisfied.
	Approval *Approval `json:"approval,omitempty"`
	// Overrides are the soft rules a reviewer overrode on the merge.
	Overrides []string `json:"overrides,omitempty"`
	// Evals is set on policy.decision of a change that alters agents'
	// definitions: the outcome of their evals (see Evals).
	Evals *Evals `json:"evals,omitempty"`
	// Comments is set on proposal.merged and proposal.rejected of a
	// proposal reviewed on a pull-request forge: what people wrote on it,
	// as the forge reported it, bounded and redacted (see Comments).
	Comments *Comments `json:"comments,omitempty"`

	// Transcript is a model run's transcript, stored beside the entry at
	// AttemptTranscriptPath(RunID, Attempt) in the same commit; the signed
	// predicate holds its sha256 in TranscriptDigest.
	Transcript       []byte `json:"-"`
	TranscriptDigest string `json:"transcript_digest,omitempty"`

	Error       string   `json:"error,omitempty"`
	Diagnostics []string `json:"diagnostics,omitempty"`

	// Keys is set on ledger.genesis and keys.changed: the whole set of
	// keys trusted to sign the entries after it (for genesis, it too).
	Keys []Key `json:"keys,omitempty"`
}

// Key is a public key trusted to sign ledger entries.
type Key struct {
	// ID is the key hint Sigstore bundles carry: base64 of the sha256 of
	// the key's PKIX DER encoding.
	ID string `json:"id"`
	// PEM is the PKIX "PUBLIC KEY" PEM block.
	PEM string `json:"pem"`
	// Source says where the key came from, e.g.
	// "main:.reconciler/keys/ops.pub" or "reconciler".
	Source string `json:"source,omitempty"`
}

// Hold is why a run did not start, and when that clears.
type Hold struct {
	Kind   string    `json:"kind"`
	Policy string    `json:"policy,omitempty"`
	Rule   string    `json:"rule,omitempty"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason"`
}

// Alert is an Alertmanager notification (webhook payload version 4), as
// far as a run needs it: the group and its alerts. Its trigger id is
// AlertTrigger(GroupKey, the alerts' fingerprints).
type Alert struct {
	Receiver          string            `json:"receiver,omitempty"`
	Status            string            `json:"status"`
	GroupKey          string            `json:"group_key"`
	GroupLabels       map[string]string `json:"group_labels,omitempty"`
	CommonLabels      map[string]string `json:"common_labels,omitempty"`
	CommonAnnotations map[string]string `json:"common_annotations,omitempty"`
	ExternalURL       string            `json:"external_url,omitempty"`
	Alerts            []AlertItem       `json:"alerts"`
}

// AlertTrigger is the trigger id of an Alertmanager notification: its
// group's key and the fingerprints of its alerts, so a repeat of the same
// group with the same alerts is the same trigger (and runs once), and a
// group whose alerts changed is a new one.
func AlertTrigger(groupKey string, fingerprints []string) string {
	fps := slices.Clone(fingerprints)
	slices.Sort(fps)
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s\n", len(groupKey), groupKey)
	for _, fp := range slices.Compact(fps) {
		fmt.Fprintf(h, "%s\n", fp)
	}
	return "alert:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// Trigger is the notification's trigger id (AlertTrigger of its group key
// and the fingerprints of its alerts).
func (a *Alert) Trigger() string {
	fps := make([]string, 0, len(a.Alerts))
	for _, it := range a.Alerts {
		fps = append(fps, it.Fingerprint)
	}
	return AlertTrigger(a.GroupKey, fps)
}

// AlertItem is one alert of a notification.
type AlertItem struct {
	Status       string            `json:"status"`
	Fingerprint  string            `json:"fingerprint"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"starts_at,omitzero"`
	EndsAt       time.Time         `json:"ends_at,omitzero"`
	GeneratorURL string            `json:"generator_url,omitempty"`
}

// Request is a manual run's request: its id (the trigger is "manual:" and
// the id), who asked as the caller said (the caller proved only that it
// holds the webhook secret), and why.
type Request struct {
	ID     string `json:"id"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Usage is what a run consumed.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// ModelUsage is one model's part of a run's usage and cost.
type ModelUsage struct {
	Model        string  `json:"model"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd,omitempty"`
}

// WorkUnit is the value a run's task declares.
type WorkUnit struct {
	Kind         string  `json:"kind"`
	HumanMinutes float64 `json:"human_minutes"`
}

// Change summarises a run's diff.
type Change struct {
	ID      string   `json:"id"`
	Files   []string `json:"files"`
	Added   int      `json:"added"`
	Removed int      `json:"removed"`
}

// Proposal identifies a proposal branch and its head.
type Proposal struct {
	Branch   string `json:"branch"`
	Head     string `json:"head"`
	ChangeID string `json:"change_id,omitempty"`
	// MergeCommit is set on proposal.merged.
	MergeCommit string `json:"merge_commit,omitempty"`
	// PreviousHead is set on proposal.updated: the head decided before.
	PreviousHead string `json:"previous_head,omitempty"`
}

// Approval methods.
const (
	ApprovalSSH      = "ssh"
	ApprovalOpenPGP  = "openpgp"
	ApprovalUnsigned = "unsigned"
	ApprovalForge    = "forge"
)

// Approval is one reviewer's approval of a proposal head, as recorded on
// proposal.approved: how it was proven (a signature by the member's key,
// an unsigned merge a group accepts, or a forge's review) and which of the
// decision's rules and groups it counted for.
type Approval struct {
	// Method is ssh, openpgp, unsigned or forge.
	Method string `json:"method"`
	// Via is what carried it: "merge", "tag" (approve/<run-id>/<member>)
	// or "review"; Ref names the tag or the review.
	Via string `json:"via"`
	Ref string `json:"ref,omitempty"`
	// Member and Group name the reviewers.hcl member whose key signed;
	// Fingerprint is the key's (SHA256:... for SSH, the hex fingerprint
	// for OpenPGP).
	Member      string `json:"member,omitempty"`
	Email       string `json:"email,omitempty"`
	Login       string `json:"login,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Head is the proposal head approved.
	Head string `json:"head"`
	// Satisfies lists the requirements the approval counted for: the
	// group, and the rules (policy/rule) that required it.
	Satisfies []Satisfied `json:"satisfies,omitempty"`
}

// Satisfied is one requirement an approval counted for.
type Satisfied struct {
	Group string   `json:"group,omitempty"`
	Rules []string `json:"rules,omitempty"`
}

// Predicate is the predicate of an entry's statement.
type Predicate struct {
	Seq  uint64    `json:"seq"`
	Prev string    `json:"prev"`
	Time time.Time `json:"time"`
	Event
}

// Entry is a stored ledger entry.
type Entry struct {
	Predicate
	// Path is the bundle's path on the evidence branch.
	Path string
	// Commit is the evidence-branch commit that added the entry.
	Commit plumbing.Hash
	// Bundle is the Sigstore bundle exactly as stored, and Digest its
	// sha256 in hex (what the next entry's Prev holds).
	Bundle []byte
	Digest string
	// Signer is the ID of the trusted key whose signature verified.
	Signer string
}

// TranscriptPath returns where a run's transcript is stored: the
// transcript of its first attempt (see AttemptTranscriptPath).
func TranscriptPath(runID string) string { return AttemptTranscriptPath(runID, 1) }

// AttemptTranscriptPath returns where the transcript of a run's attempt is
// stored: TranscriptPath for the first (attempt 0 or 1), and
// transcripts/<run-id>.<attempt>.json for each retry's, since a stored
// transcript is never replaced.
func AttemptTranscriptPath(runID string, attempt int) string {
	if attempt <= 1 {
		return "transcripts/" + runID + ".json"
	}
	return fmt.Sprintf("transcripts/%s.%d.json", runID, attempt)
}

// EntryPath returns where the entry with the given sequence number is
// stored.
func EntryPath(seq uint64) string {
	return fmt.Sprintf("ledger/%09d/%012d.json", seq/1000, seq)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type statement struct {
	Type          string          `json:"_type"`
	Subject       []subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

type subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

func isHexCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Statement returns the in-toto statement the ledger signs for p: what a
// tool that builds entries outside Append (a benchmark's generator, say)
// must sign. The event is validated first.
func Statement(p Predicate) ([]byte, error) {
	if err := p.Event.Validate(); err != nil {
		return nil, err
	}
	return newStatement(p)
}

// newStatement builds the in-toto statement of an entry with in-toto's Go
// binding, checked by its Validate.
func newStatement(p Predicate) ([]byte, error) {
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode predicate: %w", err)
	}
	var body structpb.Struct
	if err := protojson.Unmarshal(pred, &body); err != nil {
		return nil, fmt.Errorf("encode predicate: %w", err)
	}
	name := p.Event.SubjectName
	if name == "" {
		name = "commit"
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: name, Digest: map[string]string{"gitCommit": p.Event.Subject}}},
		PredicateType: PredicateType,
		Predicate:     &body,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("build statement for %s: %w", p.Type, err)
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode statement: %w", err)
	}
	return b, nil
}

// parseStatement decodes a statement signed by the ledger and checks it
// with in-toto's binding and the event schema.
func parseStatement(b []byte) (Predicate, error) {
	var st statement
	if err := json.Unmarshal(b, &st); err != nil {
		return Predicate{}, fmt.Errorf("statement is not JSON: %w", err)
	}
	if st.Type != StatementType {
		return Predicate{}, fmt.Errorf("statement _type is %q, want %q", st.Type, StatementType)
	}
	if st.PredicateType != PredicateType {
		return Predicate{}, fmt.Errorf("predicateType is %q, want %q", st.PredicateType, PredicateType)
	}
	if len(st.Subject) != 1 || !isHexCommit(st.Subject[0].Digest["gitCommit"]) {
		return Predicate{}, fmt.Errorf("statement must have exactly one subject with a gitCommit digest")
	}
	bound := &intoto.Statement{
		Type:          st.Type,
		Subject:       []*intoto.ResourceDescriptor{{Name: st.Subject[0].Name, Digest: st.Subject[0].Digest}},
		PredicateType: st.PredicateType,
	}
	if len(st.Predicate) > 0 && string(st.Predicate) != "null" {
		bound.Predicate = &structpb.Struct{}
	}
	if err := bound.Validate(); err != nil {
		return Predicate{}, fmt.Errorf("in-toto statement: %w", err)
	}
	var p Predicate
	if err := json.Unmarshal(st.Predicate, &p); err != nil {
		return Predicate{}, fmt.Errorf("predicate: %w", err)
	}
	p.Event.Subject = st.Subject[0].Digest["gitCommit"]
	p.Event.SubjectName = st.Subject[0].Name
	if _, err := p.Event.Typed(); err != nil {
		return Predicate{}, err
	}
	return p, nil
}

// unverifiedPayload returns the DSSE payload of a bundle without checking its
// signature. Only trust bootstrapping (reading the keys a genesis entry
// names, before checking that it is signed by one of them) uses it.
func unverifiedPayload(bundle []byte) ([]byte, error) {
	var b struct {
		DSSE *struct {
			Payload     string `json:"payload"`
			PayloadType string `json:"payloadType"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(bundle, &b); err != nil {
		return nil, fmt.Errorf("bundle is not JSON: %w", err)
	}
	if b.DSSE == nil {
		return nil, fmt.Errorf("bundle has no DSSE envelope")
	}
	if b.DSSE.PayloadType != PayloadType {
		return nil, fmt.Errorf("DSSE payload type is %q, want %q", b.DSSE.PayloadType, PayloadType)
	}
	return base64.StdEncoding.DecodeString(b.DSSE.Payload)
}
