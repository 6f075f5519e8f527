package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// Backoff between a run's attempts: retryBase after the first failure,
// doubling for each further one, at most retryCap.
const (
	retryBase = 30 * time.Second
	retryCap  = 10 * time.Minute
)

// retryablePush is a push of a run's proposal that did not reach the
// remote (a transport error, the remote unreachable): the run's next
// attempt may push it.
type retryablePush struct{ err error }

func (e *retryablePush) Error() string { return e.err.Error() }
func (e *retryablePush) Unwrap() error { return e.err }

// transientPush marks err, the error of pushing a run's proposal branch,
// as a failure that can pass on retry; nil stays nil.
func transientPush(err error) error {
	if err == nil {
		return nil
	}
	return &retryablePush{err: err}
}

// retryAfter is the retry policy: whether a run whose attempt (1-based)
// failed with err may be attempted again, and from when. It may when the
// failure can pass on retry (agent.Retryable, or a push marked by
// transientPush) and a's limits { retries } allow another attempt; the
// next attempt is due retryBase·2^(attempt-1) after now, at most retryCap.
func retryAfter(a *hclspec.Agent, attempt int, err error, now time.Time) (time.Time, bool) {
	var push *retryablePush
	if err == nil || !(agent.Retryable(err) || errors.As(err, &push)) {
		return time.Time{}, false
	}
	attempt = max(attempt, 1)
	if attempt >= 1+a.Limits.Retries {
		return time.Time{}, false
	}
	d := retryCap
	if attempt-1 < 16 {
		d = min(retryBase<<(attempt-1), retryCap)
	}
	return now.Add(d).UTC().Truncate(time.Second), true
}

// claimRetry claims the next attempt of rn, a run of a whose last attempt
// failed with a retry_after that has passed, by appending run.retried:
// checked against the exact ledger it lands on, so that it is false (and
// nothing is appended) when another reconciler retried or settled the run
// first. An attempt that runs the agent again is gated as a new run is
// (suspend, freezes, budgets with the attempt's reservation; see
// retryUsage), and false while a gate holds; one that only pushes the
// proposal of a run that finished (its push was lost) reserves nothing and
// is not gated again. It is false, too, when the run's agent spec changed
// since it started: the run is never resumed then. After it returns true
// the run is unfinished again (ledger.Run.Attempt is the new attempt) and
// claimed by this reconciler: execute it as a resumed run.
func (r *Reconciler) claimRetry(ctx context.Context, p *pass, a *hclspec.Agent, rn *ledger.Run) (bool, error) {
	failed, now := rn.Failed, r.cfg.Now()
	if failed == nil || failed.RetryAfter.IsZero() || now.Before(failed.RetryAfter) || rn.SpecDigest != a.Digest {
		return false, nil
	}
	attempt := rn.Attempt + 1
	if attempt < 2 || attempt > 1+a.Limits.Retries {
		return false, nil
	}
	rerun := rn.Finished == nil
	var adm policy.Admission
	if rerun {
		// The reservation depends on the spec only; the gate is checked
		// again on the ledger the claim lands on.
		adm = policy.Gate(r.spec, a, now, retryUsage{State: p.state, run: rn.ID})
		if adm.Hold != nil {
			r.log.Info("retry held by a policy gate", "agent", a.Name, "run", rn.ID, "attempt", attempt, "hold", adm.Hold.Kind, "reason", adm.Hold.Reason)
			return false, nil
		}
	}
	ev := ledger.Event{
		Type: ledger.RunRetried, Agent: a.Name, RunID: rn.ID, Trigger: rn.Trigger, SpecDigest: rn.SpecDigest,
		SpecCommit: rn.SpecCommit, Subject: rn.SpecCommit, SubjectName: r.cfg.Branch,
		Attempt: attempt, ReservedUSD: adm.ReserveUSD, Claimant: r.claimant, LeaseUntil: r.lease(a),
		Summary: oneLine(fmt.Sprintf("run.retried %s %s: attempt %d of %d (trigger %s)", a.Name, rn.ID, attempt, 1+a.Limits.Retries, rn.Trigger)),
	}
	var held *policy.Hold
	stored, err := r.appendIf(ctx, p, func(st *ledger.State) error {
		cur := st.Run(rn.ID)
		if cur == nil || cur.Failed == nil || cur.Failed.Seq != failed.Seq {
			return errClaimed
		}
		if !rerun {
			return nil
		}
		if h := policy.Gate(r.spec, a, now, retryUsage{State: st, run: rn.ID}).Hold; h != nil {
			held = h
			return errHeld
		}
		return nil
	}, ev)
	switch {
	case errors.Is(err, errHeld):
		r.log.Info("retry held by a policy gate", "agent", a.Name, "run", rn.ID, "attempt", attempt, "hold", held.Kind, "reason", held.Reason)
		return false, nil
	case errors.Is(err, errClaimed), err == nil && len(stored) == 0:
		r.log.Info("run retried or settled by another reconciler", "agent", a.Name, "run", rn.ID)
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// retryUsage is what the ledger says an agent consumed, as the gate sees
// the retry of run: the run's own start does not count towards
// max_runs_per_hour again (it was admitted when it started, and a retry is
// the same run), while its settled attempts' costs count towards the money
// budgets as every run's do.
type retryUsage struct {
	*ledger.State
	run string
}

func (u retryUsage) RunStarts(agent string, since time.Time) []time.Time {
	var out []time.Time
	for _, rn := range u.State.AgentRuns(agent) {
		if rn.ID != u.run && !rn.Started.Before(since) {
			out = append(out, rn.Started)
		}
	}
	return out
}

var _ policy.Usage = retryUsage{}
