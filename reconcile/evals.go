package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// maxGateScenarios bounds the eval scenarios one decision runs; those
// past it count as failed.
const maxGateScenarios = 50

// changeEvals runs, before a run's change is decided, the evals of every
// agent whose definition the change alters: the agents of the spec the
// change would make (the spec commit with the change applied) whose
// digest differs from the spec in force, or that are new. It returns nil
// when the change alters no agent. The scenarios and their recordings
// are the spec commit's (the protected branch's evals/), never the
// change's: a change cannot weaken the evals that judge it, nor forge a
// recording that passes them. Scenarios are replayed from those
// recordings when they are current, and otherwise run against the
// provider, bounded by the agent's limits; what they spend is the
// caller's to record.
//
// It fails closed: a changed spec that does not load, eval files that do
// not load, and scenarios that cannot run count as failed. A model agent
// whose provider the change alters (a base_url or api_key_env the spec in
// force does not have) is only replayed, never run live, since its key
// would go where the change says; an exec agent the change gives the
// network is not run.
func (r *Reconciler) changeEvals(ctx context.Context, p *pass, rc *runOf) (*ledger.Evals, error) {
	run, err := r.evalChange(ctx, p, rc)
	return run.evals, err
}

// changeEvalRun is what changeEvals ran: the outcome a decision entry
// records, each scenario's result, and the failures it counted that are
// no scenario's (a spec or eval file that does not load, a scenario not
// run). plan --change-from shows all of it.
type changeEvalRun struct {
	evals  *ledger.Evals
	report eval.Report
	notRun []string
}

// evalsTouched reports whether changeEvals would look at the change: it
// touches a protected path (an agent, a prompt, a provider).
func (r *Reconciler) evalsTouched(changes []gitstore.FileChange) bool {
	return slices.ContainsFunc(changes, func(c gitstore.FileChange) bool { return r.spec.IsProtected(c.Path) })
}

// evalChange is changeEvals with each scenario's result.
func (r *Reconciler) evalChange(ctx context.Context, p *pass, rc *runOf) (changeEvalRun, error) {
	var run changeEvalRun
	if !r.evalsTouched(rc.changes) {
		return run, nil
	}
	tmp, err := os.MkdirTemp(r.cfg.WorkDir, "reconciler-evals-"+rc.id+"-")
	if err != nil {
		return run, fmt.Errorf("evals: %w", err)
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "repo")
	if err := r.repo.Checkout(ctx, rc.specCommit, tree); err != nil {
		return run, fmt.Errorf("evals: %w", err)
	}
	// The change's own edits to evals/ are left out: the scenarios and
	// recordings that judge it are the spec commit's.
	if err := applyChanges(tree, slices.DeleteFunc(slices.Clone(rc.changes), inEvals)); err != nil {
		return run, fmt.Errorf("evals: %w", err)
	}
	fsys := os.DirFS(tree)
	out := &ledger.Evals{Agents: []string{}}
	note := func(format string, args ...any) {
		if len(out.Failures) < ledger.MaxEvalFailures {
			out.Failures = append(out.Failures, r.scrub(fmt.Sprintf(format, args...)))
		}
	}
	failf := func(format string, args ...any) {
		out.Failed++
		run.notRun = append(run.notRun, r.scrub(fmt.Sprintf(format, args...)))
		note(format, args...)
	}
	run.evals = out
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: r.cfg.LookupEnv})
	if diags.HasErrors() {
		failf("the spec with this change does not load: %s", formatDiag(firstError(diags)))
		return run, nil
	}
	var changed []*hclspec.Agent
	for _, a := range spec.Agents {
		if old := r.spec.Agent(a.Name); old == nil || old.Digest != a.Digest {
			changed = append(changed, a)
		}
	}
	if len(changed) == 0 {
		return changeEvalRun{}, nil
	}
	var live, replayOnly []*eval.Scenario
	for _, a := range changed {
		out.Agents = append(out.Agents, a.Name)
		scs, diags := eval.Load(fsys, spec, a.Name)
		if diags.HasErrors() {
			failf("%s: the evals do not load: %s", a.Name, formatDiag(firstError(diags)))
			continue
		}
		if a.Network && (r.spec.Agent(a.Name) == nil || !r.spec.Agent(a.Name).Network) {
			for _, sc := range scs {
				failf("%s/%s: not run: the change gives the agent the network", a.Name, sc.Name)
			}
			continue
		}
		if r.trustedProvider(a.Provider) {
			live = append(live, scs...)
		} else {
			replayOnly = append(replayOnly, scs...)
		}
	}
	sort.Strings(out.Agents)
	var results []eval.Result
	runScenarios := func(mode eval.Mode, scs []*eval.Scenario) error {
		if n := maxGateScenarios - len(results); len(scs) > n {
			for _, sc := range scs[max(n, 0):] {
				failf("%s/%s: not run: a decision runs at most %d scenarios", sc.Agent.Name, sc.Name, maxGateScenarios)
			}
			scs = scs[:max(n, 0)]
		}
		if len(scs) == 0 {
			return nil
		}
		runner := &eval.Runner{Spec: spec, FS: fsys, Runners: r.cfg.Runners, Mode: mode,
			Recordings: filepath.Join(tree, filepath.FromSlash(eval.RecordingsDir)), LookupEnv: r.cfg.LookupEnv, WorkDir: r.cfg.WorkDir}
		res, err := r.unlocked(ctx, p, func(ctx context.Context) ([]eval.Result, error) { return runner.Run(ctx, scs) })
		results = append(results, res...)
		return err
	}
	if err := runScenarios(eval.Auto, live); err != nil {
		return changeEvalRun{}, fmt.Errorf("evals: %w", err)
	}
	if err := runScenarios(eval.Replay, replayOnly); err != nil {
		return changeEvalRun{}, fmt.Errorf("evals: %w", err)
	}
	for _, res := range results {
		out.CostUSD += res.CostUSD
		out.SpentUSD += res.SpentUSD
		if res.Pass {
			out.Passed++
			continue
		}
		out.Failed++
		for _, f := range res.Failures {
			note("%s/%s: %s", res.Scenario.Agent.Name, res.Scenario.Name, f)
		}
	}
	run.report = eval.NewReport(results, tree)
	return run, nil
}

// inEvals reports whether a change is to the evals (evals/**), which
// changeEvals takes from the spec commit.
func inEvals(c gitstore.FileChange) bool { return strings.HasPrefix(c.Path, "evals/") }

// trustedProvider reports whether the spec in force has the provider as
// a model run would use it: the same endpoint and key variable.
func (r *Reconciler) trustedProvider(p *hclspec.Provider) bool {
	if p == nil {
		return false
	}
	if p.Kind != hclspec.ProviderOpenAI {
		return true
	}
	for _, q := range r.spec.Providers {
		if q.Kind == p.Kind && q.Name == p.Name {
			return q.BaseURL == p.BaseURL && q.APIKeyEnv == p.APIKeyEnv
		}
	}
	return false
}

// unlocked runs work with the pass's lock released, counted as one of the
// agents working at once, as runInWorkspace runs an agent.
func (r *Reconciler) unlocked(ctx context.Context, p *pass, work func(context.Context) ([]eval.Result, error)) ([]eval.Result, error) {
	back, err := p.outside(ctx, true)
	if err != nil {
		return nil, err
	}
	defer back()
	return work(ctx)
}

// applyChanges writes a change into a checkout of its base.
func applyChanges(dir string, changes []gitstore.FileChange) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, c := range changes {
		name := filepath.FromSlash(c.Path)
		if c.Status == gitstore.StatusDeleted {
			if err := root.Remove(name); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		if err := root.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		_ = root.Remove(name)
		if c.Mode == filemode.Symlink {
			if err := root.Symlink(string(c.Content), name); err != nil {
				return err
			}
			continue
		}
		perm := os.FileMode(0o644)
		if c.Mode == filemode.Executable {
			perm = 0o755
		}
		if err := root.WriteFile(name, c.Content, perm); err != nil {
			return err
		}
	}
	return nil
}

// evalCounts is change.evals of a decision, from the evals it ran.
func evalCounts(e *ledger.Evals) hclspec.EvalCounts {
	if e == nil {
		return hclspec.EvalCounts{}
	}
	return hclspec.EvalCounts{Passed: e.Passed, Failed: e.Failed}
}

// recordedEvals is change.evals for deciding an open proposal again: the
// evals its decision in force ran. A decision made again (a new spec, a
// person's push) does not run them again; they judged the agent's change.
func recordedEvals(rn *ledger.Run) hclspec.EvalCounts {
	if rn == nil || rn.Decision == nil {
		return hclspec.EvalCounts{}
	}
	return evalCounts(rn.Decision.Evals)
}
