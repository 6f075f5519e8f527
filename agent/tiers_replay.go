package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// replayTiers replays a tiered run from its transcript: each recorded
// attempt's replies through the same loop, with its model, from the spec
// commit's tree (put back between attempts, as the run did), and the
// run's token limit spanning them. Each attempt must end as recorded: on
// the same escalation condition of the agent's escalate block, and the
// last on none; otherwise the replay fails with an error wrapping
// ErrTranscript.
func replayTiers(ctx context.Context, t Task, tr *Transcript, opts loopOptions) (Result, error) {
	a := t.Agent
	if !tiered(a) || len(a.Models) <= len(tr.Attempts) {
		return Result{Model: a.Model}, fmt.Errorf("replay: %w: it records %d attempts, agent %q has %d models to escalate over", ErrTranscript, len(tr.Attempts)+1, a.Name, len(a.Models))
	}
	snap, err := snapshotDir(t.Dir)
	if err != nil {
		return Result{Model: a.Model}, fmt.Errorf("replay %s: %w", a.Name, err)
	}
	defer os.RemoveAll(snap)
	run := func(i int, lopts loopOptions) (*loop, Result, error) {
		steps, model, want := tr.Steps, tr.Model, ""
		switch {
		case i < len(tr.Attempts):
			steps, model, want = tr.Attempts[i].Steps, tr.Attempts[i].Model, tr.Attempts[i].Escalated
		case i > len(tr.Attempts):
			return nil, Result{Model: lopts.model}, fmt.Errorf("replay %s: %w: attempt %d escalated, the transcript records %d attempts", a.Name, ErrTranscript, i, len(tr.Attempts)+1)
		}
		if model != lopts.model {
			return nil, Result{Model: lopts.model}, fmt.Errorf("replay %s: %w: attempt %d is recorded with model %q, the agent's model %d is %q", a.Name, ErrTranscript, i+1, model, i+1, lopts.model)
		}
		l, err := newLoop(t, lopts, newRedactor())
		if err != nil {
			return nil, Result{Model: lopts.model}, err
		}
		defer l.close()
		l.replayed, l.size.off = steps, true
		m := &recordedModel{}
		for _, s := range steps {
			if s.Response == nil {
				break
			}
			m.responses = append(m.responses, s.Response.response())
		}
		res, err := l.run(ctx, m)
		if err == nil && m.next < len(m.responses) {
			err = fmt.Errorf("replay %s: attempt %d finished after %d of the %d recorded responses", a.Name, i+1, m.next, len(m.responses))
		}
		got := ""
		if i < len(a.Models)-1 {
			got = escalation(ctx, a.Escalate, res, err)
		}
		if got != want {
			err = errors.Join(err, fmt.Errorf("replay %s: %w: attempt %d with model %q escalates on %q, the transcript records %q", a.Name, ErrTranscript, i+1, model, got, want))
		}
		return l, res, err
	}
	return tierLoop(ctx, t, opts, snap, run)
}
