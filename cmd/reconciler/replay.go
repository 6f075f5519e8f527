package main

import (
	"context"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/reconcile"
)

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("replay", "replay --repo URL [--branch main] RUN_ID", stderr)
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
	rep, err := r.Replay(ctx, runID, agent.Replay)
	if err != nil {
		return fail(stderr, err)
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
