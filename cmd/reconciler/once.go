package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
)

// cmdOnce runs one pass. It exits 1 when the pass failed, when the spec
// does not load, or when a run failed in the pass (each named on stderr:
// agent, run, attempt and error, and whether it will be retried); the
// status it prints is then never Ready=True.
func cmdOnce(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("once", "once --repo URL [--branch main] [--key FILE] [--identity \"Name <email>\"]", stderr)
	var f repoFlags
	f.register(fs)
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	stopTracing, err := startTracing(ctx, f.otlpEndpoint, stderr) // tracing.go
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	defer stopTracing()
	r, err := f.reconciler(ctx, stderr, nil)
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, "%s", ue)
	}
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()
	// The pass's status reports the sandbox, which is probed by starting
	// its helper: start that now, alongside the pass, not after it.
	go sandbox.Probe()
	// Entries are stamped with the clock at millisecond precision.
	start := time.Now().UTC().Truncate(time.Millisecond)
	err = r.Reconcile(ctx)
	failed := failedSince(r.Ledger().State(), start)
	st := r.Status()
	for _, c := range st.Conditions {
		if c.Type == meta.ReadyCondition && c.Status == metav1.ConditionTrue && len(failed) > 0 {
			c = metav1.Condition{Type: meta.ReadyCondition, Status: metav1.ConditionFalse, Reason: reconcile.ReasonRunFailed, Message: fmt.Sprintf("%d run(s) failed in this pass", len(failed))}
		}
		fmt.Fprintf(stdout, "%s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, d := range st.Diagnostics {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	for _, rn := range failed {
		fmt.Fprintf(stderr, "reconciler: run failed: agent %s, run %s%s: %s\n", rn.Agent, rn.ID, attemptNote(rn.Failed), strings.Join(strings.Fields(rn.Failed.Error), " "))
	}
	if err != nil {
		return fail(stderr, err)
	}
	if len(failed) > 0 || len(st.Diagnostics) > 0 {
		return exitFail
	}
	return exitOK
}

// failedSince returns the runs whose last attempt failed with a run.failed
// recorded at or after start, in the order they were recorded.
func failedSince(st *ledger.State, start time.Time) []*ledger.Run {
	var out []*ledger.Run
	for _, rn := range st.Runs {
		if rn.Failed != nil && !rn.Failed.Time.Before(start) {
			out = append(out, rn)
		}
	}
	slices.SortFunc(out, func(a, b *ledger.Run) int { return cmp.Compare(a.Failed.Seq, b.Failed.Seq) })
	return out
}

// attemptNote says which attempt failed and whether another follows.
func attemptNote(f *ledger.Entry) string {
	switch {
	case f.Attempt == 0:
		return ""
	case f.RetryAfter.IsZero():
		return fmt.Sprintf(" (attempt %d, final)", f.Attempt)
	}
	return fmt.Sprintf(" (attempt %d, retried after %s)", f.Attempt, f.RetryAfter.UTC().Format(time.RFC3339))
}
