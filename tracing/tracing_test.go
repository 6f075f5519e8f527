package tracing_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/agentgitops/reconciler/tracing"
	"github.com/agentgitops/reconciler/tracing/tracingtest"
)

// clearEnv unsets the variables Setup reads, for the test.
func clearEnv(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(k, "")
	}
}

func TestOffByDefault(t *testing.T) {
	clearEnv(t)
	shutdown, err := tracing.Setup(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatal("Setup without an endpoint installed an SDK tracer provider")
	}
	ctx, span := tracing.Start(context.Background(), nil, tracing.PassSpan)
	defer span.End()
	if span.IsRecording() || span.SpanContext().IsValid() || tracing.Enabled(ctx) {
		t.Errorf("span without Setup: recording %v, valid %v", span.IsRecording(), span.SpanContext().IsValid())
	}
	// The environment can disable it too, and an endpoint in it alone
	// then turns nothing on.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if _, err := tracing.Setup(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatal("OTEL_SDK_DISABLED=true: Setup installed a provider")
	}
}

// exportTree exports a pass with a child and a grandchild, the child
// failed with a message holding a URL's credentials, and flushes.
func exportTree(t *testing.T, endpoint string) {
	t.Helper()
	shutdown, err := tracing.Setup(context.Background(), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ctx, pass := tracing.Start(context.Background(), nil, tracing.PassSpan, tracing.Name(tracing.BranchKey, "main"))
	rctx, run := tracing.Start(ctx, nil, tracing.RunSpanPrefix+"bumper", tracing.Name(tracing.AgentKey, "bumper"))
	_, call := tracing.Start(rctx, nil, tracing.ModelSpanPrefix+"gpt-4o-mini", tracing.InputTokensKey.Int64(1200), tracing.CostKey.Float64(0.00018))
	call.End()
	tracing.FailErr(run, errors.New("fetch https://bot:hunter2@git.example.com/repo.git:\n"+strings.Repeat("x", 400)), nil)
	run.End()
	pass.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Error("shutdown left the SDK provider installed")
	}
}

func checkTree(t *testing.T, spans []tracingtest.Span) {
	t.Helper()
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3", len(spans))
	}
	by := map[string]tracingtest.Span{}
	for _, s := range spans {
		by[s.Name] = s
	}
	pass, run, call := by[tracing.PassSpan], by[tracing.RunSpanPrefix+"bumper"], by[tracing.ModelSpanPrefix+"gpt-4o-mini"]
	if pass.Span == nil || run.Span == nil || call.Span == nil {
		t.Fatalf("spans = %v", by)
	}
	if pass.Parent() != "" || run.Parent() != pass.ID() || call.Parent() != run.ID() || call.Trace() != pass.Trace() {
		t.Errorf("tree: pass %s (parent %q), run %s (parent %s), call parent %s", pass.ID(), pass.Parent(), run.ID(), run.Parent(), call.Parent())
	}
	if pass.Str("reconciler.branch") != "main" || run.Str("gen_ai.agent.name") != "bumper" ||
		call.Int("gen_ai.usage.input_tokens") != 1200 || call.Float("reconciler.cost_usd") != 0.00018 {
		t.Errorf("attributes: pass %v, run %v, call %v", pass.Attributes, run.Attributes, call.Attributes)
	}
	if pass.Scope != tracing.ScopeName {
		t.Errorf("scope = %q", pass.Scope)
	}
	failed, msg := run.Failed()
	if !failed || strings.Contains(msg, "hunter2") || strings.Contains(msg, "bot") || !strings.Contains(msg, "https://xxxxx@git.example.com") ||
		len(msg) > tracing.MaxErrorLen || strings.Contains(msg, "\n") {
		t.Errorf("run status = %v %q", failed, msg)
	}
	if f, _ := call.Failed(); f {
		t.Error("the call's span failed")
	}
}

func TestExportOTLPHTTP(t *testing.T) {
	clearEnv(t)
	recv := tracingtest.NewHTTP(t)
	exportTree(t, recv.URL) // no path: posts to /v1/traces
	spans := recv.Spans(t)
	checkTree(t, spans)
	if got := spans[0].ResourceStr("service.name"); got != tracing.ServiceName {
		t.Errorf("service.name = %q", got)
	}
}

func TestExportOTLPGRPC(t *testing.T) {
	clearEnv(t)
	recv := tracingtest.NewGRPC(t)
	exportTree(t, recv.URL)
	checkTree(t, recv.Spans(t))
}

// The standard variables alone turn export on, with the headers and the
// service name they give.
func TestExportFromEnvironment(t *testing.T) {
	clearEnv(t)
	recv := tracingtest.NewHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL) // the SDK appends /v1/traces
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=tok123")
	t.Setenv("OTEL_SERVICE_NAME", "reconciler-staging")
	exportTree(t, "")
	spans := recv.Spans(t)
	checkTree(t, spans)
	if got := spans[0].ResourceStr("service.name"); got != "reconciler-staging" {
		t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's", got)
	}
	h := recv.Headers()
	if len(h) == 0 || h[0].Get("X-Collector-Token") != "tok123" {
		t.Errorf("headers = %v, want OTEL_EXPORTER_OTLP_HEADERS's", h)
	}

	// The gRPC protocol, named by the environment.
	grecv := tracingtest.NewGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", strings.Replace(grecv.URL, "grpc://", "http://", 1))
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	exportTree(t, "")
	checkTree(t, grecv.Spans(t))
}

func TestSetupErrors(t *testing.T) {
	for _, tc := range []struct {
		name, endpoint, env, want string
	}{
		{"scheme", "ftp://127.0.0.1:4318", "", `scheme "ftp"; want http:// or https://`},
		{"no scheme", "localhost:4318", "", "want a URL such as http://localhost:4318"},
		{"no host", "http:///v1/traces", "", "want a URL such as"},
		{"credentials", "https://user:s3cret@otel.example.com", "", "must not carry credentials; set them as a header in OTEL_EXPORTER_OTLP_HEADERS"},
		{"query", "http://127.0.0.1:4318/v1/traces?token=s3cret", "", "a query or fragment"},
		{"grpc path", "grpc://127.0.0.1:4317/v1/traces", "", "an OTLP/gRPC endpoint has no path; use grpc://127.0.0.1:4317"},
		{"disabled", "http://127.0.0.1:4318", "OTEL_SDK_DISABLED", "unset one of them"},
		{"protocol", "", "OTEL_EXPORTER_OTLP_PROTOCOL", `"http/json": the reconciler exports traces with http/protobuf or grpc`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			switch tc.env {
			case "OTEL_SDK_DISABLED":
				t.Setenv("OTEL_SDK_DISABLED", "true")
			case "OTEL_EXPORTER_OTLP_PROTOCOL":
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
				t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
			}
			shutdown, err := tracing.Setup(context.Background(), tc.endpoint)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Setup(%q) = %v, want an error with %q", tc.endpoint, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the secret: %v", err)
			}
			if shutdown == nil || shutdown(context.Background()) != nil {
				t.Error("a failed Setup's shutdown is not a no-op")
			}
			if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
				t.Error("a failed Setup installed a provider")
			}
		})
	}
}

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefg…"},
		{"ééééé", 6, "é…"}, // never a cut rune
		{"abc", 2, "…"},
	} {
		if got := tracing.Bound(tc.in, tc.n); got != tc.want || len(got) > max(tc.n, len("…")) {
			t.Errorf("Bound(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// A span's export is not held up by the batcher past shutdown: a
// one-shot command (once) loses nothing.
func TestShutdownFlushesPromptly(t *testing.T) {
	clearEnv(t)
	recv := tracingtest.NewHTTP(t)
	shutdown, err := tracing.Setup(context.Background(), recv.URL+"/v1/traces")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.Start(context.Background(), nil, tracing.PassSpan)
	span.End()
	start := time.Now()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	if n := len(recv.Spans(t)); n != 1 {
		t.Errorf("received %d spans after shutdown, want 1", n)
	}
}
