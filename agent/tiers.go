package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
)

// Attempt is one model's attempt of a run of an agent with model tiers.
type Attempt struct {
	Model string
	// Usage is what the attempt was charged: cached steps count nothing.
	Usage Usage
	// Outcome is AttemptEscalated (Reason says on which condition),
	// AttemptFinished or AttemptFailed.
	Outcome string
	Reason  string
	// CachedSteps counts the model calls the response cache answered.
	CachedSteps int
}

// Outcomes of an Attempt.
const (
	AttemptEscalated = "escalated"
	AttemptFinished  = "finished"
	AttemptFailed    = "failed"
)

// TranscriptAttempt is an attempt of a tiered run that handed over to the
// next model, as the transcript records it: its model, steps and outcome
// (Result or Error), and the condition it escalated on.
type TranscriptAttempt struct {
	Attempt    int               `json:"attempt"`
	Model      string            `json:"model"`
	Start      string            `json:"start"`
	Steps      []TranscriptStep  `json:"steps"`
	Result     *TranscriptResult `json:"result,omitempty"`
	Error      string            `json:"error,omitempty"`
	Escalated  string            `json:"escalated"`
	Usage      TranscriptUsage   `json:"usage"`
	DurationMS float64           `json:"duration_ms"`
}

// Cost is what the run cost at the agent's provider's prices: each
// attempt at its own model's price, or, for a run without tiers, its
// usage at the agent's model's.
func (r Result) Cost(a *hclspec.Agent) float64 {
	if len(r.Attempts) == 0 {
		return a.Cost(r.Usage.InputTokens, r.Usage.OutputTokens)
	}
	var c float64
	for _, at := range r.Attempts {
		c += a.ModelCost(at.Model, at.Usage.InputTokens, at.Usage.OutputTokens)
	}
	return c
}

// tiered reports whether a's runs escalate over its models.
func tiered(a *hclspec.Agent) bool { return len(a.Models) > 1 && a.Escalate != nil }

// escalation is the condition of e on which an attempt that ended with
// res and err hands over to the next model, or "" when it does not. A
// run that reached its token limit, its timeout, or was cancelled ends
// there: those limits are the run's, not the attempt's.
func escalation(ctx context.Context, e *hclspec.Escalate, res Result, err error) string {
	switch {
	case ctx.Err() != nil:
		return ""
	case err == nil:
		if e.When(hclspec.EscalateRisk) && hclspec.RiskAtLeast(res.Risk, e.RiskAtLeast) {
			return hclspec.EscalateRisk
		}
		return ""
	case errors.Is(err, ErrTokenLimit), errors.Is(err, ErrTimeout), errors.Is(err, ErrTranscript):
		return ""
	case isLimit(err, "max_transcript_bytes"):
		return "" // the transcript holds every attempt
	case errors.Is(err, ErrStepLimit):
		if e.When(hclspec.EscalateStepLimit) {
			return hclspec.EscalateStepLimit
		}
		return ""
	case e.When(hclspec.EscalateFailure):
		return hclspec.EscalateFailure
	}
	return ""
}

func isLimit(err error, limit string) bool {
	var le *LimitError
	return errors.As(err, &le) && le.Limit == limit
}

// runTiers runs an agent with model tiers: its models in order, each
// attempt a tool loop from the spec commit's tree (the workspace is put
// back between attempts), until one ends on no escalation condition or
// the last has run. limits.max_steps and the limits on work bound each
// attempt; the token limit, the timeout and max_transcript_bytes bound
// the run, all attempts together, and reaching them ends it. The Result
// is the last attempt's, with Usage the sum of all and Attempts each
// one's; the transcript records the earlier attempts in Attempts.
func (o *OpenAI) runTiers(ctx context.Context, t Task, opts loopOptions, red *redactor) (Result, error) {
	a := t.Agent
	ctx, cancel := context.WithTimeoutCause(ctx, opts.timeout, errRunTimeout)
	defer cancel()
	var model Model
	var modelErr error
	if o.NewModel == nil {
		modelErr = errors.New("agent.OpenAI has no NewModel: set it to a func returning the provider's model")
	} else if model, modelErr = o.NewModel(a.Provider); modelErr != nil {
		modelErr = fmt.Errorf("provider %s: %w", a.Provider.Ref(), modelErr)
	}
	if modelErr != nil {
		// Every model is the same provider's: no tier can run.
		l, err := newLoop(t, opts, red)
		if err != nil {
			return Result{Model: a.Model}, err
		}
		defer l.close()
		return l.end(nil, modelErr)
	}
	snap, err := snapshotDir(t.Dir)
	if err != nil {
		return Result{Model: a.Model}, fmt.Errorf("run %s: %w", a.Name, err)
	}
	defer os.RemoveAll(snap)
	run := func(i int, lopts loopOptions) (*loop, Result, error) {
		l, err := newLoop(t, lopts, red)
		if err != nil {
			return nil, Result{Model: lopts.model}, err
		}
		defer l.close()
		res, err := l.run(ctx, model)
		return l, res, err
	}
	return tierLoop(ctx, t, opts, snap, run)
}

// tierLoop runs the attempts of a tiered run with run, which makes
// attempt i with the options given; Replay drives it with the recorded
// replies.
func tierLoop(ctx context.Context, t Task, opts loopOptions, snap string, run func(i int, opts loopOptions) (*loop, Result, error)) (Result, error) {
	a := t.Agent
	start := opts.now()
	var (
		earlier  []TranscriptAttempt
		attempts []Attempt
		usage    Usage
		used     int64 // transcript bytes of earlier attempts
		first    *loop
	)
	for i, m := range a.Models {
		if i > 0 {
			if err := restoreDir(snap, t.Dir); err != nil {
				return Result{Model: m, Usage: usage, Attempts: attempts}, fmt.Errorf("run %s: reset the workspace for model %q: %w", a.Name, m, err)
			}
		}
		lopts := opts
		lopts.model = m
		lopts.spent = usage.InputTokens + usage.OutputTokens
		lopts.maxTranscript = max(opts.maxTranscript-used, 1)
		l, res, err := run(i, lopts)
		if l == nil {
			return Result{Model: m, Usage: usage, Attempts: attempts}, err
		}
		if first == nil {
			first = l
		}
		usage.InputTokens += res.Usage.InputTokens
		usage.OutputTokens += res.Usage.OutputTokens
		at := Attempt{Model: m, Usage: res.Usage, Outcome: AttemptFinished}
		for _, s := range l.tr.Steps {
			if s.Cached {
				at.CachedSteps++
			}
		}
		if err != nil {
			at.Outcome = AttemptFailed
		}
		reason := ""
		if i < len(a.Models)-1 {
			reason = escalation(ctx, a.Escalate, res, err)
		}
		if reason == "" {
			attempts = append(attempts, at)
			return finishTiers(first, l, res, err, earlier, attempts, usage, start)
		}
		at.Outcome, at.Reason = AttemptEscalated, reason
		attempts = append(attempts, at)
		rec := TranscriptAttempt{
			Attempt: i + 1, Model: m, Start: l.tr.Start, Steps: l.tr.Steps, Result: l.tr.Result, Error: l.tr.Error,
			Escalated: reason, Usage: l.tr.Usage, DurationMS: l.tr.DurationMS,
		}
		used += encodedLen(rec)
		earlier = append(earlier, rec)
	}
	return Result{Usage: usage, Attempts: attempts}, fmt.Errorf("run %s: no model to run", a.Name)
}

// finishTiers makes the run's Result and transcript from its last
// attempt's: the run's limits, start, usage and duration, and the
// earlier attempts.
func finishTiers(first, last *loop, res Result, err error, earlier []TranscriptAttempt, attempts []Attempt, usage Usage, start time.Time) (Result, error) {
	res.Usage, res.Attempts = usage, attempts
	if len(earlier) == 0 {
		return res, err
	}
	tr := last.tr
	tr.Limits, tr.Start, tr.Attempts = first.tr.Limits, first.tr.Start, earlier
	tr.Usage = TranscriptUsage{InputTokens: usage.InputTokens, OutputTokens: usage.OutputTokens}
	tr.DurationMS = millis(last.opts.now().Sub(start))
	b, merr := tr.Marshal()
	res.Transcript = b
	if merr != nil {
		err = errors.Join(err, fmt.Errorf("run %s: %w", last.task.Agent.Name, merr))
	}
	return res, err
}

// snapshotDir copies the tree of dir (directories, regular files with
// their modes, symbolic links) into a new temporary directory and returns
// its path.
func snapshotDir(dir string) (string, error) {
	snap, err := os.MkdirTemp("", "reconciler-tiers-")
	if err != nil {
		return "", fmt.Errorf("snapshot the workspace: %w", err)
	}
	if err := copyTree(dir, snap); err != nil {
		os.RemoveAll(snap)
		return "", fmt.Errorf("snapshot the workspace: %w", err)
	}
	return snap, nil
}

// restoreDir makes dir's tree snap's again: it removes what is in dir and
// copies snap's tree back. dir itself stays.
func restoreDir(snap, dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return copyTree(snap, dir)
}

// copyTree copies src's tree into dst, an existing directory.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil // sockets, devices: not part of a checkout
	})
}

func copyFile(src, dst string, perm fs.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = io.Copy(out, in)
	return err
}
