package reconcile_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/tracing"
	"github.com/agentgitops/reconciler/tracing/tracingtest"
)

const (
	tracedAPIKey       = "sk-test-traced-0123456789abcdefghijklmnop"
	tracedPromptMarker = "PROMPT-TEXT-NEVER-IN-A-SPAN"
)

// tracedEnv is the example repository with one model agent, traced, that
// reads a file outside its scope (refused: a tool error the model is
// shown), reads its config, raises the cache TTL and finishes; the
// model's side is served over HTTP in OpenAI's wire format by a server on
// 127.0.0.1 (a hosted model cannot run here). It returns the env, the
// conversation file and the runners of production's wiring.
func tracedEnv(t *testing.T) (*env, string, map[string]agent.Runner, func(string) (string, bool)) {
	t.Helper()
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/incident-responder.hcl"))
		onlyAgent(dir, "traced", `agent "traced" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Raise the cache TTL of payments-api. `+tracedPromptMarker+`"
  tools    = ["read_file", "edit_file", "finish"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/payments-api.env"]
  }
}
`)
	})
	responses := []openai.ChatCompletionResponse{
		toolCall("1", "read_file", `{"path":"deploy/prod/secrets.yaml"}`, 700, 20),
		toolCall("2", "read_file", `{"path":"config/payments-api.env"}`, 900, 30),
		toolCall("3", "edit_file", `{"path":"config/payments-api.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=120s"}`, 1100, 60),
		toolCall("4", "finish", `{"summary":"Raise payments-api CACHE_TTL to 120s","rationale":"hot keys expire between bursts","risk":"low"}`, 1200, 70),
	}
	b, err := json.Marshal(responses)
	if err != nil {
		t.Fatal(err)
	}
	conversation := filepath.Join(t.TempDir(), "conversation.json")
	if err := os.WriteFile(conversation, b, 0o644); err != nil {
		t.Fatal(err)
	}
	model := newChatServer(t, conversation)
	lookup := func(name string) (string, bool) {
		switch name {
		case "OPENAI_BASE_URL":
			return model.URL + "/v1", true
		case "OPENAI_API_KEY":
			return tracedAPIKey, true
		}
		return "", false
	}
	runners := map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: lookup, MaxRetries: -1})
			},
			LookupEnv: lookup,
		},
	}
	return e, conversation, runners, lookup
}

// TestPassTrace runs a real pass with OTLP export to a receiver on
// 127.0.0.1 and checks the span tree (pass, run, model calls and tool
// calls), that the run's and the calls' tokens and cost are what the
// ledger recorded, and that no span holds the API key, the prompt, a
// file's content or a tool's arguments.
func TestPassTrace(t *testing.T) {
	ctx := context.Background()
	e, conversation, runners, lookup := tracedEnv(t)
	recv := tracingtest.NewHTTP(t)
	tp, err := tracing.NewProvider(ctx, recv.URL)
	if err != nil || tp == nil {
		t.Fatalf("NewProvider = %v, %v", tp, err)
	}
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) {
		c.LookupEnv, c.Runners, c.TracerProvider = lookup, runners, tp
	})
	e.pass(r)
	if err := tp.Shutdown(ctx); err != nil { // flushes
		t.Fatal(err)
	}

	fin, ok := find(e.entries(), ledger.RunFinished, "traced")
	if !ok {
		t.Fatalf("no run.finished: %q", e.events())
	}
	if fin.Usage == nil || fin.Usage.InputTokens != 3900 || fin.Usage.OutputTokens != 180 || fin.CostUSD == 0 {
		t.Fatalf("run.finished usage %+v cost %v", fin.Usage, fin.CostUSD)
	}
	spans := recv.Spans(t)
	var passes, runs, models, tools []tracingtest.Span
	for _, s := range spans {
		switch {
		case s.Name == tracing.PassSpan:
			passes = append(passes, s)
		case strings.HasPrefix(s.Name, tracing.RunSpanPrefix):
			runs = append(runs, s)
		case strings.HasPrefix(s.Name, tracing.ModelSpanPrefix):
			models = append(models, s)
		case strings.HasPrefix(s.Name, tracing.ToolSpanPrefix):
			tools = append(tools, s)
		default:
			t.Errorf("unexpected span %q", s.Name)
		}
	}
	if len(passes) != 1 || len(runs) != 1 || len(models) != 4 || len(tools) != 4 {
		t.Fatalf("spans: %d passes, %d runs, %d model calls, %d tool calls; want 1, 1, 4, 4", len(passes), len(runs), len(models), len(tools))
	}
	pass, run := passes[0], runs[0]

	// The tree: the pass is the root, the run its child, the calls the
	// run's; all in one trace, each within its parent's time.
	if pass.Parent() != "" || run.Parent() != pass.ID() {
		t.Errorf("run's parent %s, want the pass %s (pass parent %q)", run.Parent(), pass.ID(), pass.Parent())
	}
	within := func(child, parent tracingtest.Span) bool {
		return child.StartTimeUnixNano >= parent.StartTimeUnixNano && child.EndTimeUnixNano <= parent.EndTimeUnixNano &&
			child.StartTimeUnixNano <= child.EndTimeUnixNano
	}
	if !within(run, pass) {
		t.Error("the run's span is not within the pass's")
	}
	for _, s := range append(slices.Clone(models), tools...) {
		if s.Parent() != run.ID() || s.Trace() != pass.Trace() || !within(s, run) {
			t.Errorf("%s (step %d): parent %s, want the run %s, within it", s.Name, s.Int("reconciler.step"), s.Parent(), run.ID())
		}
	}

	// The pass.
	if pass.Str("reconciler.branch") != "main" || pass.Int("reconciler.agents") != 1 || len(pass.Str("reconciler.head")) != 40 ||
		pass.Str("reconciler.spec.commit") != fin.SpecCommit {
		t.Errorf("pass attributes %v (spec commit %s)", pass.Attributes, fin.SpecCommit)
	}
	if f, msg := pass.Failed(); f {
		t.Errorf("pass failed: %s", msg)
	}

	// The run: what its run.finished entry recorded.
	if run.Name != tracing.RunSpanPrefix+"traced" || run.Str("gen_ai.agent.name") != "traced" || run.Str("gen_ai.operation.name") != "invoke_agent" ||
		run.Str("reconciler.run.id") != fin.RunID || run.Str("reconciler.run.trigger") != fin.Trigger ||
		run.Str("reconciler.run.outcome") != fin.Outcome || fin.Outcome != reconcile.OutcomeChanged ||
		run.Str("gen_ai.request.model") != fin.Model || run.Int("reconciler.run.attempt") != 1 ||
		run.Int("gen_ai.usage.input_tokens") != fin.Usage.InputTokens || run.Int("gen_ai.usage.output_tokens") != fin.Usage.OutputTokens ||
		run.Float("reconciler.cost_usd") != fin.CostUSD {
		t.Errorf("run span %v; run.finished %s %s outcome %s model %s usage %+v cost %v", run.Attributes, fin.RunID, fin.Trigger, fin.Outcome, fin.Model, *fin.Usage, fin.CostUSD)
	}
	if d, ok := find(e.entries(), ledger.PolicyDecision, "traced"); !ok || !strings.Contains(string(d.Decision), `"outcome":"`+run.Str("reconciler.decision")+`"`) || run.Str("reconciler.decision") == "" {
		t.Errorf("run span decision %q, ledger %s", run.Str("reconciler.decision"), d.Decision)
	}

	// The model calls: one per response, in order, with its tokens; they
	// add up to the ledger's usage and cost.
	slices.SortFunc(models, func(a, b tracingtest.Span) int { return int(a.Int("reconciler.step") - b.Int("reconciler.step")) })
	wantIn := []int64{700, 900, 1100, 1200}
	wantOut := []int64{20, 30, 60, 70}
	var sumIn, sumOut int64
	var sumCost float64
	for i, m := range models {
		in, out := m.Int("gen_ai.usage.input_tokens"), m.Int("gen_ai.usage.output_tokens")
		if m.Name != "chat gpt-4o-mini" || m.Int("reconciler.step") != int64(i+1) || in != wantIn[i] || out != wantOut[i] ||
			m.Str("gen_ai.request.model") != "gpt-4o-mini" || m.Str("gen_ai.provider.name") != "openai" ||
			m.Str("reconciler.run.id") != fin.RunID || m.Bool("reconciler.cached") || m.Bool("reconciler.replay") ||
			!slices.Equal(strSlice(m.Attr("gen_ai.response.finish_reasons")), []string{"tool_calls"}) {
			t.Errorf("model call %d: %s %v", i+1, m.Name, m.Attributes)
		}
		if want := (float64(in)*0.15 + float64(out)*0.60) / 1e6; m.Float("reconciler.cost_usd") != want {
			t.Errorf("model call %d cost %v, want %v", i+1, m.Float("reconciler.cost_usd"), want)
		}
		sumIn, sumOut, sumCost = sumIn+in, sumOut+out, sumCost+m.Float("reconciler.cost_usd")
	}
	if sumIn != fin.Usage.InputTokens || sumOut != fin.Usage.OutputTokens || math.Abs(sumCost-fin.CostUSD) > 1e-12 {
		t.Errorf("model calls add up to %d+%d tokens, $%v; the ledger recorded %+v, $%v", sumIn, sumOut, sumCost, *fin.Usage, fin.CostUSD)
	}
	wantIn0, wantOut0 := conversationUsage(t, conversation)
	if wantIn0 != sumIn || wantOut0 != sumOut {
		t.Errorf("the conversation reports %d+%d tokens", wantIn0, wantOut0)
	}

	// The tool calls: the refused read is an error the model was shown.
	slices.SortFunc(tools, func(a, b tracingtest.Span) int { return int(a.Int("reconciler.step") - b.Int("reconciler.step")) })
	for i, want := range []string{"read_file", "read_file", "edit_file", "finish"} {
		tl := tools[i]
		failed, _ := tl.Failed()
		if tl.Name != "execute_tool "+want || tl.Str("gen_ai.tool.name") != want || tl.Str("gen_ai.operation.name") != "execute_tool" ||
			tl.Int("reconciler.step") != int64(i+1) || tl.Str("gen_ai.tool.call.id") == "" ||
			tl.Bool("reconciler.tool.error") != (i == 0) || failed != (i == 0) {
			t.Errorf("tool call %d: %s %v (failed %v)", i+1, tl.Name, tl.Attributes, failed)
		}
	}
	if tools[1].Int("reconciler.tool.bytes_read") == 0 {
		t.Error("the read's span has no bytes_read")
	}

	// Nothing secret or private in any span: names, attributes, status
	// messages, the resource.
	for _, s := range spans {
		texts := []string{s.Name, s.Status.GetMessage()}
		for _, kv := range append(slices.Clone(s.Attributes), s.Resource...) {
			texts = append(texts, kv.Key)
			texts = append(texts, anyTexts(kv.Value)...)
		}
		for _, txt := range texts {
			for _, secret := range []string{tracedAPIKey, "sk-test", tracedPromptMarker, "Raise the cache TTL", "CACHE_TTL", "secrets.yaml", "hot keys expire", "payments-api.env"} {
				if strings.Contains(txt, secret) {
					t.Errorf("span %s holds %q: %q", s.Name, secret, txt)
				}
			}
		}
	}
	e.verify()
}

// strSlice is an OTLP array value's strings.
func strSlice(v *commonpb.AnyValue) []string {
	var out []string
	for _, x := range v.GetArrayValue().GetValues() {
		out = append(out, x.GetStringValue())
	}
	return out
}

// anyTexts is every text an OTLP value holds.
func anyTexts(v *commonpb.AnyValue) []string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return []string{x.StringValue}
	case *commonpb.AnyValue_BytesValue:
		return []string{string(x.BytesValue)}
	case *commonpb.AnyValue_ArrayValue:
		var out []string
		for _, y := range x.ArrayValue.Values {
			out = append(out, anyTexts(y)...)
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		var out []string
		for _, kv := range x.KvlistValue.Values {
			out = append(out, kv.Key)
			out = append(out, anyTexts(kv.Value)...)
		}
		return out
	}
	return nil
}

// Without a tracer provider (no --otlp-endpoint), the same pass makes no
// span at all: the global provider is OpenTelemetry's no-op one, and a
// receiver listening gets nothing.
func TestPassWithoutTracing(t *testing.T) {
	e, _, runners, lookup := tracedEnv(t)
	recv := tracingtest.NewHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL) // read by Setup only, never by a pass
	r := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.LookupEnv, c.Runners = lookup, runners })
	e.pass(r)
	if _, ok := find(e.entries(), ledger.RunFinished, "traced"); !ok {
		t.Fatalf("no run.finished: %q", e.events())
	}
	if n := recv.Requests(); n != 0 {
		t.Errorf("the receiver got %d export requests without tracing", n)
	}
}
