package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Run outcomes recorded on run.finished.
const (
	OutcomeChanged           = ledger.OutcomeChanged
	OutcomeNoChange          = ledger.OutcomeNoChange
	OutcomeDuplicateOpen     = ledger.OutcomeDuplicateOpen
	OutcomeDuplicateRejected = ledger.OutcomeDuplicateRejected
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

// runDone reports whether nothing is left to do for the run but observing
// its proposal.
func runDone(r *ledger.Run) bool {
	switch {
	case r.Failed != nil, r.Opened != nil, r.Violation:
		// A violation before the proposal opened is branch squatting:
		// the run proposes nothing.
		return true
	case r.Finished == nil:
		return false
	case r.Finished.Outcome != OutcomeChanged:
		return true
	case r.Decision == nil:
		return false
	}
	d, err := parsedDecision(r)
	return err == nil && d.Outcome == policy.Deny
}

func parsedDecision(r *ledger.Run) (policy.Decision, error) {
	var d policy.Decision
	if r.Decision == nil {
		return d, fmt.Errorf("run %s has no decision", r.ID)
	}
	if err := json.Unmarshal(r.Decision.Decision, &d); err != nil {
		return d, fmt.Errorf("run %s: decode decision entry %d: %w", r.ID, r.Decision.Seq, err)
	}
	return d, nil
}

// The ledger's state is the policy gates' view of usage.
var _ policy.Usage = (*ledger.State)(nil)
