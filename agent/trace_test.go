package agent

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/tracing"
	"github.com/agentgitops/reconciler/tracing/tracingtest"
)

// traced runs fn under a parent span of a provider exporting to an
// OTLP/HTTP receiver on 127.0.0.1, and returns the spans below it.
func traced(t *testing.T, fn func(ctx context.Context)) []tracingtest.Span {
	t.Helper()
	recv := tracingtest.NewHTTP(t)
	tp, err := tracing.NewProvider(context.Background(), recv.URL)
	if err != nil || tp == nil {
		t.Fatalf("NewProvider = %v, %v", tp, err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "test run")
	fn(ctx)
	parent.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []tracingtest.Span
	for _, s := range recv.Spans(t) {
		if s.Name == "test run" {
			continue
		}
		if s.Parent() != parent.SpanContext().SpanID().String() {
			t.Errorf("span %s: parent %s, want the run's %s", s.Name, s.Parent(), parent.SpanContext().SpanID())
		}
		out = append(out, s)
	}
	// In the order they started (they arrive in the order they ended).
	slices.SortStableFunc(out, func(a, b tracingtest.Span) int { return cmp.Compare(a.StartTimeUnixNano, b.StartTimeUnixNano) })
	return out
}

// spanNames is the spans' names, in order.
func spanNames(spans []tracingtest.Span) string {
	var b []string
	for _, s := range spans {
		b = append(b, s.Name)
	}
	return strings.Join(b, ", ")
}

// A run, the same run answered from the cache, and its replay: the model
// spans carry the step's tokens and cost at the model's price, then zero
// and cached, then no usage and replay; the tool spans follow each reply.
func TestLoopSpansCachedAndReplayed(t *testing.T) {
	srv := newModelServer(t, twiceScript())
	cache := NewResponseCache(filepath.Join(t.TempDir(), "responses"), 0)
	a := tieredAgent(srv, nil)
	a.Models, a.Model, a.Cache = nil, "small", true
	var second Result
	spans := traced(t, func(ctx context.Context) {
		for i := range 2 {
			dir := t.TempDir()
			seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
			res, err := httpRunner(cache).Run(ctx, loopTask(a, dir))
			if err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
			second = res
		}
		dir := t.TempDir()
		seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
		if _, err := Replay(ctx, loopTask(a, dir), second.Transcript); err != nil {
			t.Fatalf("Replay: %v", err)
		}
	})
	want := "chat small, execute_tool write_file, chat small, execute_tool finish"
	if got := spanNames(spans); got != want+", "+want+", "+want {
		t.Fatalf("spans: %s", got)
	}
	for i, s := range spans {
		run, step := i/4, int64(i%4/2+1)
		if s.Int("reconciler.step") != step || s.Str("gen_ai.agent.name") != "bumper" || s.Str("reconciler.run.id") != "3f2a9c0d41be" ||
			s.Bool("reconciler.replay") != (run == 2) {
			t.Errorf("span %d %s: %v", i, s.Name, s.Attributes)
		}
		if !strings.HasPrefix(s.Name, "chat ") {
			if f, _ := s.Failed(); f || s.Bool("reconciler.tool.error") {
				t.Errorf("tool span %d failed", i)
			}
			continue
		}
		switch run {
		case 0:
			if s.Bool("reconciler.cached") || s.Int("gen_ai.usage.input_tokens") != 100 || s.Int("gen_ai.usage.output_tokens") != 10 ||
				s.Float("reconciler.cost_usd") != a.ModelCost("small", 100, 10) || s.Float("reconciler.cost_usd") == 0 {
				t.Errorf("first run's model span %d: %v", i, s.Attributes)
			}
		case 1:
			if !s.Bool("reconciler.cached") || !s.Has("gen_ai.usage.input_tokens") || s.Int("gen_ai.usage.input_tokens") != 0 ||
				s.Int("gen_ai.usage.output_tokens") != 0 || s.Float("reconciler.cost_usd") != 0 {
				t.Errorf("cached run's model span %d: %v", i, s.Attributes)
			}
		case 2:
			if !s.Bool("reconciler.cached") || s.Has("gen_ai.usage.input_tokens") || s.Has("reconciler.cost_usd") {
				t.Errorf("replayed model span %d: %v", i, s.Attributes)
			}
		}
	}
}

// A tiered run escalating from a failing model: the failed call is an
// Error span with the provider's redacted error, the next model's calls
// are priced at its price; no span holds the API key.
func TestLoopSpansEscalation(t *testing.T) {
	srv := newModelServer(t, map[string][]reply{
		"small": {failure},
		"large": {calls(writeTo("services/api.yaml", "image: api:1.2.3\n")), finishWith("low")},
	})
	a := tieredAgent(srv, &hclspec.Escalate{On: []string{"failure"}})
	spans := traced(t, func(ctx context.Context) {
		dir := t.TempDir()
		seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
		if _, err := httpRunner(nil).Run(ctx, loopTask(a, dir)); err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
	if got := spanNames(spans); got != "chat small, chat large, execute_tool write_file, chat large, execute_tool finish" {
		t.Fatalf("spans: %s", got)
	}
	failed, msg := spans[0].Failed()
	if !failed || !strings.Contains(msg, "model call 1") || len(msg) > tracing.MaxErrorLen {
		t.Errorf("failed call's span: failed %v %q", failed, msg)
	}
	for _, i := range []int{1, 3} {
		s := spans[i]
		if f, _ := s.Failed(); f || s.Str("gen_ai.request.model") != "large" || s.Float("reconciler.cost_usd") != a.ModelCost("large", 100, 10) {
			t.Errorf("span %d: %v", i, s.Attributes)
		}
	}
	for _, s := range spans {
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.String(), tierKey) || strings.Contains(kv.Value.String(), a.Prompt) {
				t.Errorf("span %s attribute %s holds a secret or the prompt", s.Name, kv.Key)
			}
		}
		if strings.Contains(s.Status.GetMessage(), tierKey) {
			t.Errorf("span %s status holds the key", s.Name)
		}
	}
}
