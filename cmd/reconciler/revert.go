package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/agentgitops/reconciler/reconcile"
)

const revertHelp = `Revert opens a proposal that reverts the merged change of run RUN_ID: the
files its merged proposal changed, as they were before the merge, on the
protected branch as it is now. It is a proposal of the run's agent, confined
to the agent's scope and decided, approved and recorded as the agent's own
proposals are; its ledger entries carry reverts: RUN_ID. A file changed on
the protected branch since the merge is a conflict: the revert is refused,
naming the file and the commit (there is no three-way merge).

With --addr (the default: the daemon's default --listen address,
$RECONCILER_LISTEN, else 127.0.0.1:8080) it asks a running 'reconciler run'
(POST /api/v1/runs/RUN_ID/revert, authenticated with the secret in
--webhook-secret-file) and prints the request id once the daemon has queued
it; the daemon's next pass opens the proposal. With --repo URL it runs one
pass here with the request (as 'once' does, with once's flags) and prints
what the pass made of it.

--id names the request (default: a random id): the revert run's trigger is
revert:RUN_ID:ID, so a request repeated with the same id runs once. --by and
--reason are recorded with the run and in the proposal's message, as given.

It exits 0 when the request was queued (or, with --repo, answered by a
run), 1 when it was refused (no such run, not merged, already reverted, the
agent no longer in the spec, a conflicting later change, a wrong secret: one
line says which) or the pass failed, and 2 on a usage error.`

func cmdRevert(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("revert", "revert RUN_ID [--addr URL --webhook-secret-file FILE | --repo URL [once flags]] [--id ID] [--by NAME] [--reason TEXT] [--format text|json]", stderr)
	q := daemonAsk{what: "reverts"}
	q.register(fs, "revert")
	var f repoFlags
	f.register(fs)
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", revertHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, "revert takes one run id, got %d arguments %q", fs.NArg(), fs.Args())
	}
	runID := fs.Arg(0)
	if code, ok := q.check(&f, stderr); !ok {
		return code
	}
	if f.repo != "" {
		f.fs = nil // the run id is revert's own argument
		return revertLocal(ctx, &f, reconcile.Request{ID: q.id, Revert: runID, By: q.by, Reason: q.reason}, q.format, stdout, stderr)
	}
	acc, code, ok := askDaemon(ctx, q, stdout, stderr, "revert "+runID, "api", "v1", "runs", runID, "revert")
	if !ok {
		return code
	}
	if q.format == "json" {
		return exitOK
	}
	fmt.Fprintf(stderr, "reconciler: revert of run %s queued as request %s for agent %s; the daemon's next pass opens the proposal\n", runID, acc.Request, acc.Agent)
	return exitOK
}

// revertLocal runs one pass with the revert request and prints its
// outcome.
func revertLocal(ctx context.Context, f *repoFlags, req reconcile.Request, format string, stdout, stderr io.Writer) int {
	req, outs, code, ok, err := localPass(ctx, f, req, stderr)
	if !ok {
		return code
	}
	var out *reconcile.RequestOutcome
	if len(outs) > 0 {
		out = &outs[0]
	}
	if format == "json" {
		b, _ := json.MarshalIndent(map[string]any{"request": req.ID, "reverts": req.Revert, "outcome": out}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		fmt.Fprintf(stdout, "%s\n", req.ID)
	}
	if err != nil {
		return fail(stderr, err)
	}
	switch {
	case out == nil:
		return fail(stderr, fmt.Errorf("the pass did not answer request %s", req.ID))
	case out.State == reconcile.RequestDropped:
		return fail(stderr, errors.New(out.Reason))
	case out.State != reconcile.RequestStarted:
		return fail(stderr, fmt.Errorf("revert run %s %s: %s", req.Revert, out.State, out.Reason))
	}
	if format == "text" {
		fmt.Fprintf(stderr, "reconciler: revert of run %s: agent %s, run %s (branch %s)\n", req.Revert, out.Agent, out.RunID, reconcile.ProposalBranch(out.Agent, out.RunID))
	}
	return exitOK
}
