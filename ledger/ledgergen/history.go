package ledgergen

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/ledger"
)

// Ends of a synthetic run's proposal (History.Run).
const (
	EndOpen     = "open"
	EndMerged   = "merged"
	EndRejected = "rejected"
	EndDenied   = "denied"
)

// History folds synthetic run histories straight into a ledger.State, as
// Sync would apply them, without signing or git: for benchmarks of what
// reads the fold (budgets, recall, reverts, reviews), where generating a
// signed ledger of the same length would take minutes. Entries are
// chained (seq, prev) and a Step apart in time.
type History struct {
	State *ledger.State
	// Time is the time of the next entry; Step separates entries.
	Time time.Time
	Step time.Duration
	spec string
}

// NewHistory returns a History of an empty state whose first entry is at
// start.
func NewHistory(start time.Time) *History {
	sum := sha1.Sum([]byte("ledgergen spec"))
	return &History{State: ledger.NewState(), Time: start.UTC(), Step: time.Second, spec: hex.EncodeToString(sum[:])}
}

// Apply folds ev in as the next entry (committed as commit, which may be
// zero), filling the subject and summary it lacks.
func (h *History) Apply(ev ledger.Event, commit plumbing.Hash) error {
	if ev.Subject == "" {
		ev.Subject = h.spec
	}
	if ev.Summary == "" {
		ev.Summary = ev.Type + " " + ev.Agent + " " + ev.RunID
	}
	seq := h.State.Seq + 1
	sum := sha256.Sum256([]byte(fmt.Sprint("ledgergen entry ", seq)))
	e := ledger.Entry{Predicate: ledger.Predicate{Seq: seq, Prev: h.State.Digest, Time: h.Time, Event: ev},
		Commit: commit, Digest: hex.EncodeToString(sum[:])}
	h.Time = h.Time.Add(h.Step)
	return h.State.Apply(e)
}

// Clone returns a History that continues h on a copy of its state.
func (h *History) Clone() *History {
	c := *h
	c.State = h.State.Clone()
	return &c
}

// Run is one synthetic run of History.Run.
type Run struct {
	Agent string
	// ID is the run's id; "" derives one from Agent and N.
	ID string
	N  int
	// End is how its proposal ends: EndOpen, EndMerged, EndRejected or
	// EndDenied (a policy denied it; no proposal).
	End string
	// ChangeID is its change's content id; "" derives one from ID.
	ChangeID string
	// Reverts is the run whose merged change this one reverts.
	Reverts string
	// TranscriptDigest is the digest of its transcript, when it has one;
	// TranscriptCommit is the evidence commit of its entries (zero for
	// none), where the transcript is stored.
	TranscriptDigest string
	TranscriptCommit plumbing.Hash
}

// RunID is the id History.Run gives run n of agent.
func RunID(agent string, n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint(agent, "/", n)))
	return hex.EncodeToString(sum[:6])
}

// Run folds in the entries of one model run with a change, as the
// reconciler writes them: run.started (with a reservation), run.finished
// (tokens and cost of two model tiers), policy.decision (with one
// second-model review), then, unless denied, proposal.opened and the
// end. It returns the run's id.
func (h *History) Run(r Run) (string, error) {
	if r.ID == "" {
		r.ID = RunID(r.Agent, r.N)
	}
	if r.ChangeID == "" {
		sum := sha256.Sum256([]byte("change " + r.ID))
		r.ChangeID = hex.EncodeToString(sum[:])
	}
	base := ledger.Event{Agent: r.Agent, RunID: r.ID, Trigger: fmt.Sprint("manual:req-", r.N), SpecCommit: h.spec,
		SpecDigest: "sha256:" + r.Agent, Reverts: r.Reverts}
	started := base
	started.Type, started.ReservedUSD, started.Claimant, started.LeaseUntil = ledger.RunStarted, 0.05, "bench", h.Time.Add(15*time.Minute)
	fin := base
	fin.Type, fin.Outcome, fin.Model = ledger.RunFinished, ledger.OutcomeChanged, "large"
	fin.Change = &ledger.Change{ID: r.ChangeID, Files: []string{fmt.Sprintf("services/svc-%03d/config.yaml", r.N%1000)}, Added: 3, Removed: 1}
	fin.Usage = &ledger.Usage{InputTokens: 12000, OutputTokens: 900}
	fin.CostUSD = 0.0021
	fin.ModelUsage = []ledger.ModelUsage{{Model: "small", InputTokens: 4000, OutputTokens: 300, CostUSD: 0.0003}, {Model: "large", InputTokens: 8000, OutputTokens: 600, CostUSD: 0.0018}}
	fin.TranscriptDigest = r.TranscriptDigest
	outcome := "require_approval"
	if r.End == EndDenied {
		outcome = "deny"
	}
	d, err := json.Marshal(map[string]any{
		"outcome": outcome, "summary": outcome + " protect-prod/config (1 of sre)",
		"rules": []map[string]any{{"policy": "protect-prod", "rule": "config", "outcome": outcome, "message": "config changes need a second look"}},
		"reviews": []map[string]any{{"policy": "protect-prod", "rule": "second-opinion", "provider": "provider.openai.default", "model": "reviewer",
			"prompt": "builtin/v1", "change_id": r.ChangeID, "verdict": "approve", "risk": "low", "input_tokens": 3000, "output_tokens": 120, "cost_usd": 0.0004}},
	})
	if err != nil {
		return "", err
	}
	dec := base
	dec.Type, dec.Decision, dec.CostUSD = ledger.PolicyDecision, d, 0.0004
	events := []ledger.Event{started, fin, dec}
	if r.End != EndDenied {
		prop := &ledger.Proposal{Branch: "agents/" + r.Agent + "/" + r.ID, Head: commitHash("head " + r.ID), ChangeID: r.ChangeID}
		opened := base
		opened.Type, opened.Proposal = ledger.ProposalOpened, prop
		events = append(events, opened)
		end := base
		switch r.End {
		case EndMerged:
			merged := *prop
			merged.MergeCommit = commitHash("merge " + r.ID)
			end.Type, end.Proposal, end.WorkUnit = ledger.ProposalMerged, &merged, &ledger.WorkUnit{Kind: "config", HumanMinutes: 20}
			events = append(events, end)
		case EndRejected:
			end.Type, end.Proposal = ledger.ProposalRejected, prop
			events = append(events, end)
		case EndOpen:
		default:
			return "", fmt.Errorf("ledgergen: run end %q, want open, merged, rejected or denied", r.End)
		}
	}
	for _, ev := range events {
		if err := h.Apply(ev, r.TranscriptCommit); err != nil {
			return "", fmt.Errorf("ledgergen: run %s: %w", r.ID, err)
		}
	}
	return r.ID, nil
}

// Held folds in a run.held of agent, the filler of Generate's ledgers.
func (h *History) Held(agent string) error {
	return h.Apply(ledger.Event{Type: ledger.RunHeld, Agent: agent, Trigger: "schedule:" + h.Time.Truncate(time.Hour).Format(time.RFC3339),
		SpecCommit: h.spec, SpecDigest: specDigest(agent),
		Hold: &ledger.Hold{Kind: "concurrency", Reason: "agent " + agent + " has 2 runs in progress"}}, plumbing.ZeroHash)
}

func commitHash(label string) string {
	sum := sha1.Sum([]byte(label))
	return hex.EncodeToString(sum[:])
}
