package reconcile

import (
	"context"
	"fmt"
	"os"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Replayer re-executes a run from its transcript in a workspace.
type Replayer func(ctx context.Context, t agent.Task, transcript []byte) (agent.Result, error)

// ReplayReport compares a replayed run with what was recorded.
type ReplayReport struct {
	RunID      string
	Agent      string
	SpecCommit string
	// Expected is the tree the run produced: its proposal's tree, or the
	// spec commit's when it proposed nothing.
	Expected plumbing.Hash
	Got      plumbing.Hash
	// Differ lists the paths whose content differs.
	Differ []string
	// Err is the replayed run's error, if it failed as the original did.
	Err error
}

// Match reports whether the replay reproduced the recorded tree.
func (r *ReplayReport) Match() bool { return r.Expected == r.Got }

// Replay re-executes a recorded run: its transcript (checked against the
// digest its ledger entry signed) is fed through the same tool loop at the
// recorded spec commit, and the resulting tree is compared with the
// proposal's. It writes nothing.
func (r *Reconciler) Replay(ctx context.Context, runID string, replay Replayer) (*ReplayReport, error) {
	if err := r.repo.Fetch(ctx); err != nil {
		return nil, err
	}
	if _, err := r.ledger.Update(ctx); err != nil {
		return nil, err
	}
	if rn := r.ledger.State().Run(runID); rn != nil && rn.Reverts != "" {
		return r.replayRevert(ctx, rn)
	}
	transcript, entry, err := r.ledger.Transcript(ctx, runID)
	if err != nil {
		return nil, err
	}
	rn := r.ledger.State().Run(runID)
	if rn == nil || rn.SpecCommit == "" {
		return nil, fmt.Errorf("run %s: no run.started entry on %s", runID, ledger.Branch)
	}
	rep := &ReplayReport{RunID: runID, Agent: rn.Agent, SpecCommit: rn.SpecCommit}
	commit := plumbing.NewHash(rn.SpecCommit)
	spec, diags, err := r.loadAt(commit)
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("run %s: the spec at %s does not load: %s", runID, rn.SpecCommit[:12], formatDiag(firstError(diags)))
	}
	a := spec.Agent(rn.Agent)
	if a == nil {
		return nil, fmt.Errorf("run %s: agent %q is not in the spec at %s", runID, rn.Agent, rn.SpecCommit[:12])
	}
	rep.Expected, err = r.repo.TreeOf(commit)
	if err != nil {
		return nil, err
	}
	if rn.Opened != nil {
		if rep.Expected, err = r.proposalTree(rn); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "reconciler-replay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ws := dir + "/repo"
	if err := r.repo.Checkout(ctx, commit, ws); err != nil {
		return nil, err
	}
	input, err := triggerInput(rn)
	if err != nil {
		return nil, err
	}
	_, runErr := replay(ctx, agent.Task{Agent: a, RunID: runID, SpecCommit: rn.SpecCommit, Trigger: rn.Trigger, Input: input, Dir: ws,
		MaxTokens: policy.TokenLimit(spec, a)}, transcript)
	rep.Err = runErr
	changes, err := r.repo.Changes(ctx, commit, ws)
	if err != nil {
		return nil, err
	}
	if runErr != nil || entry.Type == ledger.RunFailed {
		// A failed run proposes nothing, whatever it wrote.
		changes = nil
	}
	if err := r.compareReplayed(rep, commit, changes); err != nil {
		return nil, err
	}
	return rep, nil
}

// proposalTree returns the tree of a run's proposal: the branch if it is
// still there, else the recorded head.
func (r *Reconciler) proposalTree(rn *ledger.Run) (plumbing.Hash, error) {
	head := plumbing.NewHash(rn.Opened.Proposal.Head)
	if _, err := r.repo.Commit(head); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("run %s: proposal head %s is gone (its branch was deleted): %w", rn.ID, head.String()[:12], err)
	}
	return r.repo.TreeOf(head)
}

// diffTrees lists the paths that differ between two trees.
func (r *Reconciler) diffTrees(a, b plumbing.Hash) ([]string, error) {
	ta, err := object.GetTree(r.repo.Git().Storer, a)
	if err != nil {
		return nil, err
	}
	tb, err := object.GetTree(r.repo.Git().Storer, b)
	if err != nil {
		return nil, err
	}
	changes, err := object.DiffTree(ta, tb)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range changes {
		name := c.To.Name
		if name == "" {
			name = c.From.Name
		}
		out = append(out, name)
	}
	return out, nil
}

// replayRevert re-executes a revert run, which has no transcript: the
// revert of the run it names is computed again from the ledger and the
// repository at the run's spec commit, as the pass computed it, and its
// tree compared with the proposal's.
func (r *Reconciler) replayRevert(ctx context.Context, rn *ledger.Run) (*ReplayReport, error) {
	if rn.SpecCommit == "" {
		return nil, fmt.Errorf("run %s: no run.started entry on %s", rn.ID, ledger.Branch)
	}
	rep := &ReplayReport{RunID: rn.ID, Agent: rn.Agent, SpecCommit: rn.SpecCommit}
	commit := plumbing.NewHash(rn.SpecCommit)
	spec, diags, err := r.loadAt(commit)
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("run %s: the spec at %s does not load: %s", rn.ID, rn.SpecCommit[:12], formatDiag(firstError(diags)))
	}
	a := spec.Agent(rn.Agent)
	if a == nil {
		return nil, fmt.Errorf("run %s: agent %q is not in the spec at %s", rn.ID, rn.Agent, rn.SpecCommit[:12])
	}
	if rep.Expected, err = r.repo.TreeOf(commit); err != nil {
		return nil, err
	}
	if rn.Opened != nil {
		if rep.Expected, err = r.proposalTree(rn); err != nil {
			return nil, err
		}
	}
	var changes []gitstore.FileChange
	orig, err := checkRevert(revertFactsFor(r.ledger.State(), rn.Reverts), rn.Reverts, rn.ID)
	if err == nil {
		changes, err = r.revertChange(ctx, a, orig, commit)
	}
	if err != nil {
		rep.Err, changes = err, nil
	}
	if err := r.compareReplayed(rep, commit, changes); err != nil {
		return nil, err
	}
	return rep, nil
}

// compareReplayed writes the tree the replay's changes make on commit into
// rep.Got and, when it is not the recorded one, the paths that differ.
func (r *Reconciler) compareReplayed(rep *ReplayReport, commit plumbing.Hash, changes []gitstore.FileChange) (err error) {
	if rep.Got, err = r.repo.WriteTree(commit, changes); err != nil {
		return err
	}
	if !rep.Match() {
		rep.Differ, err = r.diffTrees(rep.Expected, rep.Got)
	}
	return err
}
