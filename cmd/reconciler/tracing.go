package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/tracing"
)

// otlpUsage is the help of --otlp-endpoint, on once, run and controller.
const otlpUsage = "export OpenTelemetry traces of passes, runs, model calls and tool calls with OTLP to this endpoint: http(s)://host:4318 (OTLP/HTTP, /v1/traces unless the URL has a path) or grpc(s)://host:4317 (OTLP/gRPC); default off, unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set; the other OTEL_EXPORTER_OTLP_* variables (headers, timeout, certificates) apply"

// otlpFlag registers --otlp-endpoint on fs.
func otlpFlag(fs *flag.FlagSet, p *string) { fs.StringVar(p, "otlp-endpoint", "", otlpUsage) }

// flushTimeout bounds the flush of the spans left when a command ends.
const flushTimeout = 5 * time.Second

// startTracing turns on trace export (tracing.Setup) for the command and
// returns the func to defer, which flushes what is left and reports a
// failed flush on stderr. An endpoint Setup refuses is a usageErr.
func startTracing(ctx context.Context, endpoint string, stderr io.Writer) (stop func(), err error) {
	shutdown, err := tracing.Setup(ctx, endpoint)
	if err != nil {
		return func() {}, errUsage(err.Error())
	}
	return func() {
		// The command's context may be cancelled already (a signal):
		// the flush gets its own time.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			fmt.Fprintf(stderr, "reconciler: traces: %s\n", strings.TrimSpace(err.Error()))
		}
	}, nil
}
