// Package tracing exports OpenTelemetry traces of the reconciler's work:
// a span for each reconcile pass, each agent run in it, and each model
// call and tool call of a run, with tokens, cost and durations as
// attributes (attrs.go names them).
//
// Tracing is off by default: until Setup is given an endpoint (or finds
// one in the standard OTEL_EXPORTER_OTLP_* variables) there is no
// exporter and the tracer is OpenTelemetry's no-op one, whose spans record
// nothing, so instrumented code pays a check of IsRecording and nothing
// more. Spans carry ids, names and numbers only: never a secret, a prompt,
// a message or a file's content; the error messages they carry are the
// caller's redacted text, bounded (Fail).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of the reconciler's spans.
const ScopeName = "github.com/agentgitops/reconciler"

// ServiceName is the service.name of the exported resource, unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name another.
const ServiceName = "reconciler"

// Shutdown flushes the spans not yet exported and stops the exporter.
type Shutdown func(context.Context) error

// Setup installs, as OpenTelemetry's global tracer provider, one that
// exports spans with OTLP to endpoint, and returns its Shutdown, which
// flushes what is left and puts the no-op provider back.
//
// The endpoint's scheme chooses the protocol: http:// or https:// for
// OTLP/HTTP (protobuf; a URL without a path posts to /v1/traces, one
// with a path posts there), grpc:// (plaintext) or grpcs:// (TLS) for
// OTLP/gRPC. With endpoint "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT turns export on instead, with the protocol
// of OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
// (http/protobuf by default, or grpc), as the OpenTelemetry SDK reads
// them. Either way the exporter honours the other OTEL_EXPORTER_OTLP_*
// variables (headers, timeout, compression, certificates) and the
// resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
// Without an endpoint, or with OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none and no endpoint, Setup installs nothing and
// its Shutdown does nothing. A malformed endpoint, credentials inside it,
// or an explicit endpoint that the environment disables is an error that
// names the fix; the endpoint in an error never carries its userinfo.
func Setup(ctx context.Context, endpoint string) (Shutdown, error) {
	tp, err := NewProvider(ctx, endpoint)
	if err != nil || tp == nil {
		return func(context.Context) error { return nil }, err
	}
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		otel.SetTracerProvider(noop.NewTracerProvider())
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("flush traces: %w", err)
		}
		return nil
	}, nil
}

// NewProvider returns the tracer provider Setup installs, exporting to
// endpoint as Setup says, without installing it; nil (and no error) when
// tracing stays off. Its Shutdown flushes it. Tests and embedders pass
// it where a TracerProvider is taken (reconcile.Config).
func NewProvider(ctx context.Context, endpoint string) (*sdktrace.TracerProvider, error) {
	exp, err := newExporter(ctx, endpoint, os.LookupEnv)
	if err != nil || exp == nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// exporter is the part of an OTLP exporter Setup uses.
type exporter = sdktrace.SpanExporter

// newExporter returns the exporter for endpoint and the environment
// lookup gives, or nil when tracing stays off.
func newExporter(ctx context.Context, endpoint string, lookup func(string) (string, bool)) (exporter, error) {
	env := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	disabled := strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(env("OTEL_TRACES_EXPORTER"), "none")
	if endpoint == "" {
		if disabled {
			return nil, nil
		}
		if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && env("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
			return nil, nil
		}
		proto := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = env("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch proto {
		case "", "http/protobuf":
			return otlptracehttp.New(ctx) // the endpoint and the rest from the environment
		case "grpc":
			return otlptracegrpc.New(ctx)
		}
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: the reconciler exports traces with http/protobuf or grpc", proto)
	}
	if disabled {
		return nil, fmt.Errorf("--otlp-endpoint %s is set, but OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turns tracing off: unset one of them", redactURL(endpoint))
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("--otlp-endpoint %q: want a URL such as http://localhost:4318 (OTLP/HTTP) or grpc://localhost:4317 (OTLP/gRPC)", redactURL(endpoint))
	}
	if u.User != nil {
		return nil, fmt.Errorf("--otlp-endpoint %s: a URL must not carry credentials; set them as a header in OTEL_EXPORTER_OTLP_HEADERS, such as Authorization=Bearer%%20<token>", redactURL(endpoint))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--otlp-endpoint %s://%s%s?...: a URL with a query or fragment is not an OTLP endpoint; put tokens in OTEL_EXPORTER_OTLP_HEADERS", u.Scheme, u.Host, u.EscapedPath())
	}
	switch u.Scheme {
	case "http", "https":
		path := u.EscapedPath()
		if path == "" || path == "/" {
			path = "/v1/traces"
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithURLPath(path)}
		if u.Scheme == "http" {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	case "grpc", "grpcs":
		if p := u.EscapedPath(); p != "" && p != "/" {
			return nil, fmt.Errorf("--otlp-endpoint %s: an OTLP/gRPC endpoint has no path; use %s://%s", redactURL(endpoint), u.Scheme, u.Host)
		}
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host)}
		if u.Scheme == "grpc" {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	return nil, fmt.Errorf("--otlp-endpoint %s: scheme %q; want http:// or https:// (OTLP/HTTP), grpc:// or grpcs:// (OTLP/gRPC)", redactURL(endpoint), u.Scheme)
}

// redactURL is s with the password of a URL's userinfo replaced, as
// url.URL.Redacted does, and with a username alone dropped too; s
// unchanged when it does not parse.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(s, "@"); i >= 0 && strings.Contains(s[:i], "://") {
			j := strings.Index(s, "://") + 3
			return s[:j] + "xxxxx@" + s[i+1:]
		}
		return s
	}
	u.User = url.User("xxxxx")
	return u.String()
}

// Start starts a span named name with attrs, a child of ctx's span, from
// the tracer provider of that span; when ctx has none, from tp, or from
// the global provider when tp is nil. Without Setup every span is the
// no-op one.
func Start(ctx context.Context, tp trace.TracerProvider, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if parent := trace.SpanFromContext(ctx); parent.SpanContext().IsValid() {
		tp = parent.TracerProvider()
	} else if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// Enabled reports whether a span of ctx would record: false without
// Setup, so callers skip building attributes.
func Enabled(ctx context.Context) bool {
	return trace.SpanFromContext(ctx).IsRecording()
}

// MaxErrorLen bounds the error text a span carries (Fail).
const MaxErrorLen = 256

// MaxNameLen bounds the names and ids a span carries (Bound).
const MaxNameLen = 128

// Fail marks span as failed with msg, which the caller has redacted of
// its secrets: Fail only cuts it to MaxErrorLen bytes, flattens it to one
// line and hides the userinfo of URLs in it.
func Fail(span trace.Span, msg string) {
	if !span.IsRecording() {
		return
	}
	span.SetStatus(codes.Error, Bound(stripUserinfo(strings.Join(strings.Fields(msg), " ")), MaxErrorLen))
}

// FailErr is Fail with err's text after redact (nil: none); a nil err
// sets nothing.
func FailErr(span trace.Span, err error, redact func(string) string) {
	if err == nil || !span.IsRecording() {
		return
	}
	msg := err.Error()
	if redact != nil {
		msg = redact(msg)
	}
	if errors.Is(err, context.Canceled) {
		msg = "canceled: " + msg
	}
	Fail(span, msg)
}

// Bound cuts s to at most n bytes on a rune boundary, marking a cut with
// "…".
func Bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:max(cut, 0)] + "…"
}

// stripUserinfo hides the userinfo of every URL in s (scheme://user:pass@).
func stripUserinfo(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, " \t\"'<>/")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndex(s[:end], "@"); at >= 0 {
			b.WriteString("xxxxx@")
			s = s[at+1:]
		}
	}
}
