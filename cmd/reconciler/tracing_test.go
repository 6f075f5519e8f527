package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/tracing"
	"github.com/agentgitops/reconciler/tracing/tracingtest"
)

// clearOTelEnv unsets the OpenTelemetry variables for the test.
func clearOTelEnv(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} {
		t.Setenv(k, "")
	}
}

// once --otlp-endpoint exports the pass and its runs before it exits;
// without the flag it exports nothing; an endpoint it cannot use is a
// usage error that shows no credentials.
func TestOnceOTLPEndpoint(t *testing.T) {
	clearOTelEnv(t)
	bare := daemonRepo(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "ledger.key")
	if code, _, stderr := cli(t, "keygen", "--out", key); code != exitOK {
		t.Fatal(stderr)
	}
	args := []string{"once", "--repo", bare, "--key", key, "--cache-dir", filepath.Join(dir, "cache")}

	recv := tracingtest.NewHTTP(t)
	if code, stdout, stderr := cli(t, append(args, "--otlp-endpoint", recv.URL)...); code != exitOK {
		t.Fatalf("once: exit %d\n%s%s", code, stdout, stderr)
	}
	spans := recv.Spans(t) // flushed before once returned
	var pass tracingtest.Span
	runs := map[string]tracingtest.Span{}
	for _, s := range spans {
		switch {
		case s.Name == tracing.PassSpan:
			pass = s
		case strings.HasPrefix(s.Name, tracing.RunSpanPrefix):
			runs[s.Str("gen_ai.agent.name")] = s
		}
	}
	if pass.Span == nil || pass.ResourceStr("service.name") != "reconciler" {
		t.Fatalf("no pass span from reconciler among %d spans", len(spans))
	}
	for _, agent := range []string{"image-pinner", "env-normaliser"} {
		rn, ok := runs[agent]
		if !ok || rn.Parent() != pass.ID() || rn.Str("reconciler.run.outcome") != "changed" || len(rn.Str("reconciler.run.id")) != 12 {
			t.Errorf("run span of %s: %v (parent %s, pass %s)", agent, rn.Span.GetAttributes(), rn.Parent(), pass.ID())
		}
	}
	if len(runs) != 2 {
		t.Errorf("run spans of %d agents, want the 2 exec agents", len(runs))
	}

	// Without the flag: nothing, although a receiver listens.
	n := recv.Requests()
	if code, stdout, stderr := cli(t, args...); code != exitOK {
		t.Fatalf("once: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := recv.Requests(); got != n {
		t.Errorf("once without --otlp-endpoint exported %d requests", got-n)
	}

	for _, tc := range []struct{ endpoint, want string }{
		{"ftp://127.0.0.1:4318", `scheme "ftp"`},
		{"https://bot:s3cret@otel.example.com", "must not carry credentials"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), append(args, "--otlp-endpoint", tc.endpoint), &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) || strings.Contains(errb.String(), "s3cret") {
			t.Errorf("--otlp-endpoint %s: exit %d, stderr %q; want %d and %q", tc.endpoint, code, errb.String(), exitUsage, tc.want)
		}
	}
}
