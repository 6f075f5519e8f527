package agent

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentgitops/reconciler/tracing"
)

// stepSpans are the OpenTelemetry spans of the tool loop's model call and
// tool call in flight, children of the run's span in the loop's context
// (package tracing). A span starts when the call does and ends when the
// loop records it, with the attributes of the transcript's record: the
// tokens and cost the ledger counts, ids, names and numbers, never a
// message, an argument or a result. Without tracing every span is the
// no-op one and nothing is built.
type stepSpans struct {
	model trace.Span
	// modelEnd is when the model answered: the span ends there, not when
	// the step (its tool calls included) is recorded.
	modelEnd time.Time
	tool     trace.Span
}

// startModel starts the span of model call step.
func (s *stepSpans) startModel(ctx context.Context, l *loop, step int) {
	if !tracing.Enabled(ctx) {
		return
	}
	provider := ""
	if p := l.task.Agent.Provider; p != nil {
		provider = p.Kind
	}
	_, s.model = tracing.Start(ctx, nil, tracing.ModelSpanPrefix+tracing.Bound(l.opts.model, tracing.MaxNameLen),
		tracing.OperationKey.String("chat"),
		tracing.Name(tracing.ProviderKey, provider),
		tracing.Name(tracing.ModelKey, l.opts.model),
		tracing.Name(tracing.AgentKey, l.task.Agent.Name),
		tracing.Name(tracing.RunIDKey, l.task.RunID),
		tracing.StepKey.Int(step),
		tracing.ReplayKey.Bool(l.replayed != nil),
	)
	s.modelEnd = time.Time{}
}

// stopModel notes that the model answered (or failed).
func (s *stepSpans) stopModel() {
	if s.model != nil {
		s.modelEnd = time.Now()
	}
}

// endModel ends the span of rec's model call, if one is open, with what
// rec recorded: the step's usage and its cost at the model's price (none
// in a replay, which charges nothing), whether it was cached, the finish
// reason, a limit reached and the redacted error.
func (s *stepSpans) endModel(l *loop, rec *TranscriptStep) {
	span := s.model
	if span == nil {
		return
	}
	s.model = nil
	attrs := []attribute.KeyValue{tracing.CachedKey.Bool(rec.Cached)}
	if l.replayed == nil {
		attrs = append(attrs,
			tracing.InputTokensKey.Int64(rec.Usage.InputTokens),
			tracing.OutputTokensKey.Int64(rec.Usage.OutputTokens),
			tracing.CostKey.Float64(l.task.Agent.ModelCost(l.opts.model, rec.Usage.InputTokens, rec.Usage.OutputTokens)),
		)
	}
	if r := rec.Response; r != nil {
		if r.Model != "" {
			attrs = append(attrs, tracing.Name(tracing.ResponseModelKey, r.Model))
		}
		if r.FinishReason != "" {
			attrs = append(attrs, tracing.FinishReasonsKey.StringSlice([]string{tracing.Bound(r.FinishReason, tracing.MaxNameLen)}))
		}
	}
	if rec.Limit != "" {
		attrs = append(attrs, tracing.Name(tracing.LimitKey, rec.Limit))
	}
	span.SetAttributes(attrs...)
	if rec.Error != "" {
		tracing.Fail(span, rec.Error) // redacted as the transcript has it
	}
	end := s.modelEnd
	if end.IsZero() {
		end = time.Now()
	}
	span.End(trace.WithTimestamp(end))
}

// startTool starts the span of a tool call of model call step.
func (s *stepSpans) startTool(ctx context.Context, l *loop, step int, tc *TranscriptToolCall) {
	if !tracing.Enabled(ctx) {
		return
	}
	_, s.tool = tracing.Start(ctx, nil, tracing.ToolSpanPrefix+tracing.Bound(tc.Name, tracing.MaxNameLen),
		tracing.OperationKey.String("execute_tool"),
		tracing.Name(tracing.ToolNameKey, tc.Name),
		tracing.Name(tracing.ToolCallIDKey, tc.ID),
		tracing.Name(tracing.AgentKey, l.task.Agent.Name),
		tracing.Name(tracing.RunIDKey, l.task.RunID),
		tracing.StepKey.Int(step),
		tracing.ReplayKey.Bool(l.replayed != nil),
	)
}

// endTool ends the open tool call's span with what tc recorded: whether
// the tool's result was an error, the call was skipped or reached a
// limit, and the bytes it read. The result itself never goes in a span.
func (s *stepSpans) endTool(tc *TranscriptToolCall) {
	span := s.tool
	if span == nil {
		return
	}
	s.tool = nil
	span.SetAttributes(
		tracing.ToolErrorKey.Bool(tc.Error),
		tracing.SkippedKey.Bool(tc.Skipped),
		tracing.BytesReadKey.Int64(tc.BytesRead),
	)
	switch {
	case tc.Limit != "":
		span.SetAttributes(tracing.Name(tracing.LimitKey, tc.Limit))
		tracing.Fail(span, "limit "+tc.Limit+" reached")
	case tc.Error:
		tracing.Fail(span, "the tool call failed")
	}
	span.End()
}
