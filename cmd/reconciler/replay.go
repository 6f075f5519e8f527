package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("replay", "replay --repo URL [--branch main] RUN_ID", stderr)
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", replayHelp) }
	repo := fs.String("repo", "", "repository holding the agent-evidence branch (required)")
	branch := fs.String("branch", "main", "protected branch")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	switch {
	case *repo == "":
		return usageError(stderr, "--repo is required")
	case fs.NArg() != 1:
		return usageError(stderr, "replay takes one RUN_ID, got %d arguments", fs.NArg())
	}
	runID := fs.Arg(0)
	r, err := reconcile.New(ctx, reconcile.Config{Repo: *repo, Branch: *branch,
		Identity: object.Signature{Name: "Reconciler replay", Email: "replay@localhost"}})
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()
	rep, err := r.Replay(ctx, runID, agent.Replay)
	if errors.Is(err, gitstore.ErrNotFound) {
		err = whyNoTranscript(r.Ledger().State(), runID, err)
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("replay: %w", err))
	}
	fmt.Fprintf(stdout, "run %s of %s at spec %s\n", rep.RunID, rep.Agent, rep.SpecCommit[:12])
	if rep.Err != nil {
		fmt.Fprintf(stdout, "replayed run ended with: %v\n", rep.Err)
	}
	if rep.Match() {
		fmt.Fprintf(stdout, "replay OK: the transcript reproduces tree %s\n", rep.Expected)
		return exitOK
	}
	fmt.Fprintf(stdout, "replay MISMATCH: recorded tree %s, replayed tree %s; differing paths:\n", rep.Expected, rep.Got)
	for _, p := range rep.Differ {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	return exitFail
}

const replayHelp = `Replay re-executes a model run from the transcript its ledger entries
stored, through the same tool loop and against the same spec commit, and
compares the tree it produces with the one the run proposed. No model is
called.

Exec runs have no model transcript: their command is deterministic and is
reproduced by running it again on a checkout of the run's spec commit.

Exit status is 0 when the replay reproduces the tree, 1 when it does not,
when the run is unknown or has no transcript, 2 on usage errors.`

// whyNoTranscript explains a run with no transcript to replay, err being
// the ledger's not-found error: an unknown run id, an exec run (which has
// none), or a model run that has not stored one yet.
func whyNoTranscript(st *ledger.State, runID string, err error) error {
	rn := st.Run(runID)
	if rn == nil {
		return fmt.Errorf("run %q not found on %s: 'reconciler ledger log --repo URL' lists the runs", runID, ledger.Branch)
	}
	if rn.Transcript != nil {
		return err
	}
	for _, e := range []*ledger.Entry{rn.Finished, rn.Failed} {
		if e != nil && (len(e.Sandbox) > 0 || e.Model == "") {
			return fmt.Errorf("run %s of agent %q is an exec run: exec runs have no model transcript to replay; reproduce it by running the agent's command again on a checkout of spec commit %s", runID, rn.Agent, rn.SpecCommit)
		}
	}
	if rn.Finished == nil && rn.Failed == nil {
		return fmt.Errorf("run %s of agent %q has not finished: it has no transcript yet", runID, rn.Agent)
	}
	return err
}
