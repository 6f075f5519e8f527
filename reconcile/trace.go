package reconcile

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/tracing"
)

// The spans of a pass and of its runs (package tracing). A pass's span
// is the root; each run the pass works on (execute) is its child, and the
// agent's model calls and tool calls are the run's (agent/trace.go), as
// the context carries them. A run's span takes its tokens, cost, model
// and outcome from the ledger entries the pass appended for it, so a
// trace and the ledger never disagree. Without tracing no attribute is
// built.

// startPass starts the span of pass p.
func (r *Reconciler) startPass(ctx context.Context, p *pass) (context.Context, trace.Span) {
	ctx, span := tracing.Start(ctx, r.cfg.TracerProvider, tracing.PassSpan)
	if span.IsRecording() {
		span.SetAttributes(tracing.Name(tracing.BranchKey, r.cfg.Branch), tracing.RequestsKey.Int(len(p.requests)))
	}
	return ctx, span
}

// endPass ends the span of pass p, which ended with err.
func (r *Reconciler) endPass(span trace.Span, p *pass, err error) {
	if span.IsRecording() {
		attrs := []attribute.KeyValue{tracing.Name(tracing.HeadKey, p.head.String())}
		if r.spec != nil {
			attrs = append(attrs, tracing.Name(tracing.SpecCommitKey, r.specCommit.String()), tracing.AgentsKey.Int(len(r.spec.Agents)))
		}
		span.SetAttributes(attrs...)
		tracing.FailErr(span, err, r.scrub)
	}
	span.End()
}

// startRun starts the span of the pass's work on run runID of a, and
// returns the func that ends it with the error execute returned. Called
// with p.mu held, as execute is; the end func too.
func (r *Reconciler) startRun(ctx context.Context, p *pass, a *hclspec.Agent, runID, trigger string) (context.Context, func(error)) {
	ctx, span := tracing.Start(ctx, nil, tracing.RunSpanPrefix+tracing.Bound(a.Name, tracing.MaxNameLen),
		tracing.OperationKey.String("invoke_agent"),
		tracing.Name(tracing.AgentKey, a.Name),
		tracing.Name(tracing.RunIDKey, runID),
		tracing.Name(tracing.TriggerKey, trigger),
	)
	if !span.IsRecording() {
		return ctx, func(error) { span.End() }
	}
	// What the ledger held for the run before: the entries appended
	// after it are this pass's.
	var before runSeqs
	if p.state != nil {
		before = seqsOf(p.state.Run(runID))
	}
	return ctx, func(err error) {
		defer span.End()
		var rn *ledger.Run
		if p.state != nil {
			rn = p.state.Run(runID)
		}
		span.SetAttributes(runAttrs(rn, before)...)
		tracing.FailErr(span, err, r.scrub)
	}
}

// runSeqs are the sequence numbers of a run's last entries of each kind.
type runSeqs struct{ finished, failed, decision, opened uint64 }

func seqsOf(rn *ledger.Run) runSeqs {
	var s runSeqs
	if rn == nil {
		return s
	}
	seq := func(e *ledger.Entry) uint64 {
		if e == nil {
			return 0
		}
		return e.Seq
	}
	return runSeqs{seq(rn.Finished), seq(rn.Failed), seq(rn.Decision), seq(rn.Opened)}
}

// runAttrs are the attributes of a run's span: what the entries appended
// since before record (the attempt's model, tokens and cost, its outcome,
// the decision), or the phase the run is left in.
func runAttrs(rn *ledger.Run, before runSeqs) []attribute.KeyValue {
	if rn == nil {
		// Claimed by another reconciler, or held by a gate: nothing ran.
		return []attribute.KeyValue{tracing.OutcomeKey.String("not_started")}
	}
	now := seqsOf(rn)
	attrs := []attribute.KeyValue{tracing.AttemptKey.Int(rn.Attempt)}
	settled := func(e *ledger.Entry) {
		attrs = append(attrs, tracing.Name(tracing.ModelKey, e.Model), tracing.CostKey.Float64(e.CostUSD))
		if e.Usage != nil {
			attrs = append(attrs, tracing.InputTokensKey.Int64(e.Usage.InputTokens), tracing.OutputTokensKey.Int64(e.Usage.OutputTokens))
		} else {
			attrs = append(attrs, tracing.InputTokensKey.Int64(0), tracing.OutputTokensKey.Int64(0))
		}
	}
	switch {
	case now.failed > before.failed && rn.Failed != nil:
		settled(rn.Failed)
		attrs = append(attrs, tracing.OutcomeKey.String("failed"))
	case now.finished > before.finished && rn.Finished != nil:
		settled(rn.Finished)
		attrs = append(attrs, tracing.Name(tracing.OutcomeKey, rn.Finished.Outcome))
	case rn.Closed != nil:
		attrs = append(attrs, tracing.Name(tracing.OutcomeKey, rn.Closed.Type))
	case now.opened > before.opened || rn.Opened != nil:
		attrs = append(attrs, tracing.OutcomeKey.String("proposed"))
	case rn.Finished != nil:
		attrs = append(attrs, tracing.OutcomeKey.String("finished"))
	default:
		attrs = append(attrs, tracing.OutcomeKey.String("running"))
	}
	if now.decision > before.decision && rn.Decision != nil {
		var d struct {
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(rn.Decision.Decision, &d) == nil && d.Outcome != "" {
			attrs = append(attrs, tracing.Name(tracing.DecisionKey, d.Outcome))
		}
	}
	return attrs
}
