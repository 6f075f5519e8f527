package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sashabaranov/go-openai"
)

// ErrReplayExhausted is wrapped when a replayed loop asks for more model
// responses than the transcript recorded.
var ErrReplayExhausted = errors.New("the transcript has no more recorded responses")

// Replay re-executes a run from its transcript: the recorded model
// responses are fed, in order, through the same loop and tools in t.Dir (a
// checkout of the recorded spec commit), with the limits the run recorded.
// It returns the Result like Run, with the replay's own transcript. It
// fails with ErrReplayExhausted when the loop asks for more responses than
// were recorded, and with an error wrapping ErrTranscript when the
// transcript cannot be read or belongs to another agent or run; a run that
// failed replays to the same failure.
//
// A call the recording refused, or that failed, with arguments over 1 KiB
// (which the transcript keeps only the first 1 KiB of), and every such
// call of a run that failed, is not run again: the replay takes its
// recorded result. Where the recording reached a limit on work, the
// replay fails with that limit.
//
// Secrets were redacted before the transcript was kept: a run whose model
// wrote one replays with "[REDACTED]" in its place, and its tree differs.
func Replay(ctx context.Context, t Task, transcript []byte) (Result, error) {
	tr, err := ParseTranscript(transcript)
	if err != nil {
		return Result{}, fmt.Errorf("replay: %w", err)
	}
	if err := checkTask(t); err != nil {
		return Result{}, fmt.Errorf("replay: %w", err)
	}
	if tr.Agent != t.Agent.Name {
		return Result{}, fmt.Errorf("replay: %w: it records agent %q, not %q", ErrTranscript, tr.Agent, t.Agent.Name)
	}
	if tr.RunID != t.RunID {
		return Result{}, fmt.Errorf("replay: %w: it records run %q, not %q", ErrTranscript, tr.RunID, t.RunID)
	}
	opts := taskOptions(t, time.Now, 0)
	lim := tr.Limits
	opts.maxSteps = positive(lim.MaxSteps, opts.maxSteps)
	opts.maxTokens = positive(lim.MaxTokens, opts.maxTokens)
	opts.contextTokens = positive(lim.ContextTokens, opts.contextTokens)
	opts.maxResultBytes = positive(lim.MaxResultBytes, opts.maxResultBytes)
	opts.readLines = positive(lim.ReadLines, opts.readLines)
	opts.maxFileBytes = positive(lim.MaxFileBytes, opts.maxFileBytes)
	opts.maxCallsPerStep = positive(lim.MaxToolCallsPerStep, opts.maxCallsPerStep)
	opts.maxCalls = positive(lim.MaxToolCalls, opts.maxCalls)
	opts.maxFiles = positive(lim.MaxFilesWritten, opts.maxFiles)
	opts.maxWritten = positive(lim.MaxBytesWritten, opts.maxWritten)
	opts.maxRead = positive(lim.MaxBytesRead, opts.maxRead)
	opts.maxTranscript = positive(lim.MaxTranscriptBytes, opts.maxTranscript)
	if d, err := time.ParseDuration(lim.Timeout); err == nil && d > 0 {
		opts.timeout = d
	}
	if len(tr.Attempts) > 0 {
		return replayTiers(ctx, t, tr, opts)
	}
	l, err := newLoop(t, opts, newRedactor())
	if err != nil {
		return Result{Model: t.Agent.Model}, err
	}
	defer l.close()
	// Where the recording reached a limit, or cut a call's arguments,
	// the replay takes what it recorded; the transcript's size, which
	// timings and redaction change, is not decided again.
	l.replayed, l.size.off = tr.Steps, true
	m := &recordedModel{}
	for _, s := range tr.Steps {
		if s.Response == nil {
			break
		}
		m.responses = append(m.responses, s.Response.response())
	}
	res, err := l.run(ctx, m)
	if err == nil && m.next < len(m.responses) {
		err = fmt.Errorf("replay %s: the run finished after %d of the %d recorded responses", t.Agent.Name, m.next, len(m.responses))
	}
	return res, err
}

func positive[T int | int64](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// recordedModel returns recorded responses in order.
type recordedModel struct {
	responses []openai.ChatCompletionResponse
	next      int
}

func (m *recordedModel) CreateChatCompletion(ctx context.Context, _ openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	if err := ctx.Err(); err != nil {
		return openai.ChatCompletionResponse{}, err
	}
	if m.next >= len(m.responses) {
		return openai.ChatCompletionResponse{}, fmt.Errorf("%w: the loop asked for response %d, the transcript records %d", ErrReplayExhausted, m.next+1, len(m.responses))
	}
	m.next++
	return m.responses[m.next-1], nil
}
