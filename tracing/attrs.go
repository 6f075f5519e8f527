package tracing

import "go.opentelemetry.io/otel/attribute"

// Span names. A run, a model call and a tool call are named as
// OpenTelemetry's generative-AI conventions name them: the operation,
// then the agent, model or tool.
const (
	// PassSpan is a reconcile pass: fetch, load the spec, observe the
	// proposals, run the due agents.
	PassSpan = "reconcile pass"
	// RunSpanPrefix + agent name is the work a pass did on one run of an
	// agent: the run itself, its decision and its proposal, as far as
	// the pass got.
	RunSpanPrefix = "invoke_agent "
	// ModelSpanPrefix + model is one model call (chat completion).
	ModelSpanPrefix = "chat "
	// ToolSpanPrefix + tool name is one tool call.
	ToolSpanPrefix = "execute_tool "
)

// Attribute keys. The gen_ai.* ones are OpenTelemetry's generative-AI
// semantic conventions; the reconciler.* ones are this project's.
const (
	// OperationKey is gen_ai.operation.name: invoke_agent, chat or
	// execute_tool.
	OperationKey = attribute.Key("gen_ai.operation.name")
	// ProviderKey is the provider kind of a model call: openai.
	ProviderKey = attribute.Key("gen_ai.provider.name")
	// AgentKey is the agent's name.
	AgentKey = attribute.Key("gen_ai.agent.name")
	// ModelKey is the model a call asked for, or a run used.
	ModelKey = attribute.Key("gen_ai.request.model")
	// ResponseModelKey is the model the endpoint says answered.
	ResponseModelKey = attribute.Key("gen_ai.response.model")
	// FinishReasonsKey is the finish reason of a model call's reply.
	FinishReasonsKey = attribute.Key("gen_ai.response.finish_reasons")
	// InputTokensKey and OutputTokensKey are the tokens of a model call,
	// or of a run's attempt, as the transcript and the ledger count them
	// (zero for a cached reply).
	InputTokensKey  = attribute.Key("gen_ai.usage.input_tokens")
	OutputTokensKey = attribute.Key("gen_ai.usage.output_tokens")
	// ToolNameKey and ToolCallIDKey name a tool call.
	ToolNameKey   = attribute.Key("gen_ai.tool.name")
	ToolCallIDKey = attribute.Key("gen_ai.tool.call.id")

	// CostKey is the cost in US dollars at the provider's prices: of a
	// model call, or of a run's attempt as its run.finished or
	// run.failed entry recorded it.
	CostKey = attribute.Key("reconciler.cost_usd")
	// RunIDKey is the run's id (agents/<agent>/<run-id>).
	RunIDKey = attribute.Key("reconciler.run.id")
	// TriggerKey is the trigger id the run answers (a schedule slot,
	// alert:<digest>, manual:<id>).
	TriggerKey = attribute.Key("reconciler.run.trigger")
	// AttemptKey is the run's attempt number.
	AttemptKey = attribute.Key("reconciler.run.attempt")
	// OutcomeKey is how a run's pass ended: the run.finished outcome
	// (changed, unchanged, ...), failed, or the phase the run waits in.
	OutcomeKey = attribute.Key("reconciler.run.outcome")
	// DecisionKey is the policy decision's outcome, when the pass made one.
	DecisionKey = attribute.Key("reconciler.decision")
	// StepKey is the model call's number in the run (1, 2, ...).
	StepKey = attribute.Key("reconciler.step")
	// CachedKey marks a model call answered from the response cache.
	CachedKey = attribute.Key("reconciler.cached")
	// ReplayKey marks a model call or tool call replayed from a recorded
	// transcript: no model was asked, nothing was charged.
	ReplayKey = attribute.Key("reconciler.replay")
	// LimitKey names the limit (limits.* of the agent) a step reached.
	LimitKey = attribute.Key("reconciler.limit")
	// ToolErrorKey marks a tool call whose result was an error the model
	// was shown (a missing file, a refused path); the run went on.
	ToolErrorKey = attribute.Key("reconciler.tool.error")
	// SkippedKey marks a tool call not run because the run had finished.
	SkippedKey = attribute.Key("reconciler.tool.skipped")
	// BytesReadKey is what a tool call read from the workspace.
	BytesReadKey = attribute.Key("reconciler.tool.bytes_read")
	// BranchKey is the protected branch a pass reconciles.
	BranchKey = attribute.Key("reconciler.branch")
	// HeadKey and SpecCommitKey are the commit a pass fetched and the
	// spec commit in force after it.
	HeadKey       = attribute.Key("reconciler.head")
	SpecCommitKey = attribute.Key("reconciler.spec.commit")
	// AgentsKey is the number of agents of the spec in force; RequestsKey
	// the requests (alerts, manual triggers) the pass was given.
	AgentsKey   = attribute.Key("reconciler.agents")
	RequestsKey = attribute.Key("reconciler.requests")
)

// Name is a name or id bounded to MaxNameLen bytes, as an attribute.
func Name(k attribute.Key, v string) attribute.KeyValue { return k.String(Bound(v, MaxNameLen)) }
