package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// A revert run undoes the merged change of an earlier run of the same
// agent (`reconciler revert RUN_ID`, POST /api/v1/runs/{run_id}/revert).
// It is asked for with a Request whose Revert names the run, and is a run
// like any other from then on: claimed with run.started (trigger
// revert:<run id>:<request id>, so a request offered twice runs once),
// finished with the inverted change instead of the agent's work, decided
// by the same policies, confined to the agent's scope, proposed on
// agents/<agent>/<revert run id> (and the forge's pull request), approved
// by the same reviewers. Its entries carry reverts: <run id>.
//
// The change is a file-level git revert computed on the ledger's record of
// the merge, never on what a caller says: for each file the merged
// proposal changed (the merged head's change against its merge base, not
// whatever else a merge commit holds), the content before the merge is
// restored. A file changed on the protected branch since the merge is a
// conflict, as `git revert` would have one: the revert is refused naming
// the file and the commit. (go-git has no content merge, so there is no
// three-way merge of such a file.)

// Errors of a revert request.
var (
	// ErrUnknownRun: the ledger has no run with that id.
	ErrUnknownRun = errors.New("no such run in the ledger")
	// ErrNotMerged: the run's proposal was not merged into the
	// protected branch.
	ErrNotMerged = errors.New("the run's change was not merged")
	// ErrAlreadyReverted: a revert of the run is in progress, open or
	// merged.
	ErrAlreadyReverted = errors.New("the run is already reverted")
	// ErrAgentRemoved: the run's agent is no longer in the spec; its
	// scope and policies, which a revert is confined to, are gone.
	ErrAgentRemoved = errors.New("the run's agent is no longer in the spec")
	// ErrRevertConflict: the protected branch changed one of the run's
	// files since the merge.
	ErrRevertConflict = errors.New("the revert conflicts with a later change")
)

// revertPrefix starts the trigger id of a revert run.
const revertPrefix = "revert:"

// RevertTrigger is the trigger id of the revert of run runID asked for by
// request requestID.
func RevertTrigger(runID, requestID string) string {
	return revertPrefix + runID + ":" + requestID
}

// revertedBy returns the run a revert run's trigger id reverts, or "".
func revertedBy(trigger string) string {
	rest, ok := strings.CutPrefix(trigger, revertPrefix)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	return id
}

// revertTargets is targets for a revert request: the reverted run's agent
// (resolveReverts set it), which must still be in the spec. It needs no
// manual trigger: a revert is the operator's act, not the agent's work.
func revertTargets(spec *hclspec.Spec, req Request) ([]string, error) {
	if req.Agent == "" {
		return nil, fmt.Errorf("%w %q", ErrUnknownRun, req.Revert)
	}
	if spec.Agent(req.Agent) == nil {
		return nil, fmt.Errorf("revert run %s: %w: agent %q (a revert is attributed to the agent's scope and policies: restore the agent, or revert the merge by hand)",
			req.Revert, ErrAgentRemoved, req.Agent)
	}
	return []string{req.Agent}, nil
}

// resolveReverts gives each revert request of the pass the agent of the
// run it reverts, from the ledger; a request naming no run of the ledger
// is dropped. It also refreshes the view the daemon's API checks revert
// requests against before queueing them (RevertTarget).
func (r *Reconciler) resolveReverts(p *pass) {
	if p.state == nil {
		return
	}
	r.refreshRevertView(p.state)
	for i := range p.requests {
		req := &p.requests[i]
		if req.Revert == "" {
			continue
		}
		if rn := p.state.Run(req.Revert); rn != nil {
			req.Agent = rn.Agent
			continue
		}
		p.answer(req.ID, "", RevertTrigger(req.Revert, req.ID), "", RequestDropped, fmt.Sprintf("%v %q", ErrUnknownRun, req.Revert))
	}
}

// revertable checks, on the ledger state of the pass and the spec commit
// runs start on, that the request's run can be reverted by agent a now:
// merged, not reverted yet, and its change inverted cleanly within a's
// scope.
func (r *Reconciler) revertable(ctx context.Context, p *pass, a *hclspec.Agent, req Request) error {
	orig, err := checkRevert(revertFactsFor(p.state, req.Revert), req.Revert, "")
	if err != nil {
		return err
	}
	_, err = r.revertChange(ctx, a, orig, r.specCommit)
	return err
}

// revertWork is a revert run's work (PhaseRun), done instead of running
// the agent: the reverted run's change inverted on the run's spec commit,
// with the words of its proposal commit. It is deterministic, so a
// resumed run makes the same proposal commit.
func (r *Reconciler) revertWork(ctx context.Context, p *pass, a *hclspec.Agent, rn *ledger.Run, commit plumbing.Hash) (agent.Result, []gitstore.FileChange, error) {
	orig, err := checkRevert(revertFactsFor(p.state, rn.Reverts), rn.Reverts, rn.ID)
	if err != nil {
		return agent.Result{}, nil, err
	}
	changes, err := r.revertChange(ctx, a, orig, commit)
	if err != nil {
		return agent.Result{}, nil, err
	}
	files := make([]string, 0, len(changes))
	for _, c := range changes {
		files = append(files, c.Path)
	}
	res := agent.Result{
		Summary: fmt.Sprintf("Revert run %s of %s", orig.runID, orig.agent),
		Body: fmt.Sprintf("This reverts the change of run %s (proposal %s), merged into %s at %s: %s restored as they were before the merge.",
			orig.runID, orig.branch, r.cfg.Branch, orig.merge, strings.Join(files, ", ")),
	}
	if q := rn.Request; q != nil {
		if q.By != "" {
			res.Body += "\n\nRequested by " + q.By + "."
		}
		if q.Reason != "" {
			res.Body += "\n\nReason: " + q.Reason
		}
	}
	return res, changes, nil
}

// revertFact is what the ledger says about a run, as far as reverting it
// goes.
type revertFact struct {
	agent, runID string
	// closed is how its proposal ended (a ledger event type), "open", or
	// "" when it has none.
	closed string
	branch string
	// merge and head are the merge commit and the merged head of a merged
	// proposal; changeID its decided change.
	merge, head plumbing.Hash
	changeID    string
	// reverts is the run this one reverts; done whether nothing is left
	// to do for it but observe its proposal.
	reverts string
	done    bool
}

// revertFacts indexes a ledger state's runs (revertFactsOf).
type revertFacts struct {
	seq  uint64
	runs map[string]revertFact
	// by lists, per run, the revert runs of it, oldest first.
	by map[string][]string
}

func revertFactsOf(st *ledger.State) *revertFacts {
	v := &revertFacts{seq: st.Seq, runs: make(map[string]revertFact, len(st.Runs)), by: map[string][]string{}}
	for _, rn := range st.Runs {
		v.add(st, rn)
	}
	return v
}

// revertFactsFor is revertFactsOf as far as checkRevert of run id reads
// it: the facts of id and of the runs that revert it. It costs what those
// number, not the ledger's runs.
func revertFactsFor(st *ledger.State, id string) *revertFacts {
	v := &revertFacts{seq: st.Seq, runs: map[string]revertFact{}, by: map[string][]string{}}
	if rn := st.Run(id); rn != nil {
		v.add(st, rn)
	}
	for _, rv := range st.RevertsOf(id) {
		v.add(st, rv)
	}
	return v
}

// add sets the facts of run rn, and the runs that revert what it
// reverts.
func (v *revertFacts) add(st *ledger.State, rn *ledger.Run) {
	v.runs[rn.ID] = revertFactOf(rn)
	if rn.Reverts != "" {
		v.by[rn.Reverts] = revertIDs(st.RevertsOf(rn.Reverts))
	}
}

func revertIDs(runs []*ledger.Run) []string {
	ids := make([]string, len(runs))
	for i, rn := range runs {
		ids[i] = rn.ID
	}
	return ids
}

func revertFactOf(rn *ledger.Run) revertFact {
	f := revertFact{agent: rn.Agent, runID: rn.ID, reverts: rn.Reverts, done: runDone(rn), changeID: rn.DecidedChangeID()}
	switch {
	case rn.Closed != nil:
		f.closed = rn.Closed.Type
	case rn.Opened != nil:
		f.closed = "open"
	}
	if rn.Opened != nil && rn.Opened.Proposal != nil {
		f.branch = rn.Opened.Proposal.Branch
	}
	if c := rn.Closed; c != nil && c.Type == ledger.ProposalMerged && c.Proposal != nil {
		f.merge, f.head = plumbing.NewHash(c.Proposal.MergeCommit), plumbing.NewHash(c.Proposal.Head)
	}
	return f
}

// refreshRevertView brings the revert facts RevertTarget reads up to st,
// which the daemon's API calls while passes run (the ledger's state is
// changed in place by a pass, so it is never read outside one). Only the
// runs the entries since the last refresh changed are read again
// (ledger.State.RunsSince), outside r.mu, and set under it.
func (r *Reconciler) refreshRevertView(st *ledger.State) {
	r.mu.Lock()
	v := r.revertView
	r.mu.Unlock()
	if v == nil || v.seq > st.Seq {
		v = revertFactsOf(st)
		r.mu.Lock()
		r.revertView = v
		r.mu.Unlock()
		return
	}
	if v.seq == st.Seq {
		return
	}
	fresh := &revertFacts{runs: map[string]revertFact{}, by: map[string][]string{}}
	for rn := range st.RunsSince(v.seq) {
		fresh.add(st, rn)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	maps.Copy(v.runs, fresh.runs)
	maps.Copy(v.by, fresh.by)
	v.seq = st.Seq
}

// checkRevert returns the merged run id, after checking in v that it can
// be reverted: it exists, its proposal was merged, and no revert of it
// other than self is in progress, open or merged.
func checkRevert(v *revertFacts, id, self string) (revertFact, error) {
	f, ok := v.runs[id]
	if !ok {
		return f, fmt.Errorf("%w %q (give the run id of a merged proposal, as `reconciler ledger log --event proposal.merged` lists them)", ErrUnknownRun, id)
	}
	switch f.closed {
	case ledger.ProposalMerged:
	case "":
		return f, fmt.Errorf("revert run %s: %w: it opened no proposal", id, ErrNotMerged)
	case "open":
		return f, fmt.Errorf("revert run %s: %w: its proposal %s is still open (if it was merged just now, retry once the reconciler has seen the merge)", id, ErrNotMerged, f.branch)
	default:
		return f, fmt.Errorf("revert run %s: %w: its proposal %s was %s", id, ErrNotMerged, f.branch, strings.TrimPrefix(f.closed, "proposal."))
	}
	for _, rid := range v.by[id] {
		if rid == self {
			continue
		}
		rv := v.runs[rid]
		switch {
		case rv.closed == ledger.ProposalMerged:
			return f, fmt.Errorf("revert run %s: %w: by run %s, merged at %s", id, ErrAlreadyReverted, rid, short(rv.merge.String()))
		case rv.closed == "open":
			return f, fmt.Errorf("revert run %s: %w: run %s's proposal %s is open", id, ErrAlreadyReverted, rid, rv.branch)
		case !rv.done:
			return f, fmt.Errorf("revert run %s: %w: run %s is in progress", id, ErrAlreadyReverted, rid)
		}
	}
	return f, nil
}

// RevertTarget checks, against the ledger as the last pass left it and
// the spec in force, that run runID's merged change can be reverted, and
// returns the agent the revert runs as. The errors wrap ErrNoSpec,
// ErrUnknownRun, ErrNotMerged, ErrAlreadyReverted, ErrAgentRemoved or
// ErrRevertConflict; the pass that takes the request checks again.
func (r *Reconciler) RevertTarget(ctx context.Context, runID string) (string, error) {
	r.mu.Lock()
	spec, at, v := r.spec, r.specCommit, r.revertView
	if spec == nil || v == nil {
		r.mu.Unlock()
		return "", ErrNoSpec
	}
	f, err := checkRevert(v, runID, "") // under r.mu: passes update v in place
	r.mu.Unlock()
	if err != nil {
		return "", err
	}
	a := spec.Agent(f.agent)
	if a == nil {
		return "", fmt.Errorf("revert run %s: %w: agent %q (a revert is attributed to the agent's scope and policies: restore the agent, or revert the merge by hand)", runID, ErrAgentRemoved, f.agent)
	}
	if _, err := r.revertChange(ctx, a, f, at); err != nil {
		return "", err
	}
	return a.Name, nil
}

// revertMaxDepth bounds how far back the protected branch is searched for
// the commit that changed a conflicting file since the merge.
const revertMaxDepth = 2000

// revertChange computes the revert of merged run orig on commit at (the
// protected branch): for each file the merged proposal changed, the
// content it had before the merge, as changes against at. The files are
// those of the merged head's change against its merge base with the
// branch before the merge (a merge commit's own extra changes are not the
// agent's, and are not reverted), or of the merge commit against its
// parent for a squash or fast-forward, whose change must then be the
// proposal's decided one. A file at differs in from the merge is a
// conflict (ErrRevertConflict, naming the file and the newest commit that
// changed it). The result is confined to a's scope and checked as an
// agent's change is (agent.Confine, agent.CheckChange).
func (r *Reconciler) revertChange(ctx context.Context, a *hclspec.Agent, orig revertFact, at plumbing.Hash) ([]gitstore.FileChange, error) {
	m, h := orig.merge, orig.head
	mc, err := r.repo.Commit(m)
	if err != nil {
		return nil, fmt.Errorf("revert run %s: merge commit %s: %w", orig.runID, short(m.String()), err)
	}
	if len(mc.ParentHashes) == 0 {
		return nil, fmt.Errorf("revert run %s: merge commit %s has no parent", orig.runID, short(m.String()))
	}
	if ok, err := r.repo.IsAncestor(m, at); err != nil || !ok {
		return nil, fmt.Errorf("revert run %s: %w: its merge %s is not in the history of %s at %s (was the branch rewritten?)", orig.runID, ErrRevertConflict, short(m.String()), r.cfg.Branch, short(at.String()))
	}
	before := mc.ParentHashes[0]
	var touched []gitstore.FileChange
	if len(mc.ParentHashes) > 1 {
		mb, err := r.repo.MergeBase(before, h)
		if err != nil {
			return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
		}
		if touched, err = r.repo.Diff(ctx, mb, h); err != nil {
			return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
		}
	} else {
		if touched, err = r.repo.Diff(ctx, before, m); err != nil {
			return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
		}
		if id := ChangeID(touched); id != orig.changeID {
			return nil, fmt.Errorf("revert run %s: commit %s's change (content id %s) is not the proposal's decided change (%s): it holds more than the proposal (a fast-forward of several commits?); revert it by hand",
				orig.runID, short(m.String()), id, orig.changeID)
		}
	}
	files := make([]string, 0, len(touched))
	for _, c := range touched {
		files = append(files, c.Path)
	}
	// The inverse of what the merge did to those files, as changes
	// against the merge: valid against at exactly when at still has the
	// merge's version of each of them, which is checked next.
	inverse, err := r.repo.Diff(ctx, m, before)
	if err != nil {
		return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
	}
	inverse = slices.DeleteFunc(inverse, func(c gitstore.FileChange) bool { return !slices.Contains(files, c.Path) })
	if len(inverse) == 0 {
		return nil, fmt.Errorf("revert run %s: %w: its merge at %s changed none of its files", orig.runID, ErrNotMerged, short(m.String()))
	}
	for _, c := range inverse {
		same, err := r.sameEntry(m, at, c.Path)
		if err != nil {
			return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
		}
		if !same {
			by := r.lastChange(at, m, c.Path)
			return nil, fmt.Errorf("revert run %s: %w: %s was changed since the merge by commit %s; revert by hand, or revert that commit first",
				orig.runID, ErrRevertConflict, c.Path, by)
		}
	}
	if err := agent.Confine(a, inverse); err != nil {
		return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
	}
	if r.spec != nil {
		if err := agent.CheckChange(r.spec, a, inverse); err != nil {
			return nil, fmt.Errorf("revert run %s: %w", orig.runID, err)
		}
	}
	return inverse, nil
}

// sameEntry reports whether path is the same file (blob and mode) at
// commits x and y, or absent from both.
func (r *Reconciler) sameEntry(x, y plumbing.Hash, path string) (bool, error) {
	hx, mx, err := r.entry(x, path)
	if err != nil {
		return false, err
	}
	hy, my, err := r.entry(y, path)
	if err != nil {
		return false, err
	}
	return hx == hy && mx == my, nil
}

// entry is path's blob and mode at commit, zero when absent.
func (r *Reconciler) entry(commit plumbing.Hash, path string) (plumbing.Hash, filemode.FileMode, error) {
	h, m, err := r.repo.TreeEntry(commit, path)
	if errors.Is(err, gitstore.ErrNotFound) {
		return plumbing.ZeroHash, 0, nil
	}
	return h, m, err
}

// lastChange names the newest first-parent commit from head back to
// (excluding) since that changed path: "<short hash> (<subject>, by
// <committer email>)", or a description when none is found within
// revertMaxDepth.
func (r *Reconciler) lastChange(head, since plumbing.Hash, path string) string {
	chain, err := r.repo.FirstParents(head, revertMaxDepth)
	if err != nil {
		return "a commit since the merge"
	}
	for _, c := range chain {
		if c.Hash == since || len(c.ParentHashes) == 0 {
			break
		}
		if same, err := r.sameEntry(c.Hash, c.ParentHashes[0], path); err == nil && !same {
			subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
			return fmt.Sprintf("%s (%q, by %s)", short(c.Hash.String()), agent.CleanSubject(subject), c.Committer.Email)
		}
	}
	return "a commit since the merge"
}

// supersedable are the open proposals of agent that run rn's proposal
// supersedes when it opens: the agent's other open proposals, unless
// either is a revert. A revert proposal stands beside the agent's own
// work: it neither replaces an open proposal nor is replaced by a later
// run.
func supersedable(st *ledger.State, agent string, rn *ledger.Run) []*ledger.Run {
	if rn != nil && rn.Reverts != "" {
		return nil
	}
	var out []*ledger.Run
	for _, o := range st.OpenRuns(agent) {
		if o.Reverts == "" && (rn == nil || o.ID != rn.ID) {
			out = append(out, o)
		}
	}
	return out
}
