// Package tracingtest is an OTLP trace receiver for tests: an OTLP/HTTP
// endpoint (httptest, 127.0.0.1) or an OTLP/gRPC one that decodes each
// ExportTraceServiceRequest with the OTLP protobuf definitions, as a
// collector does, and keeps the spans, so a test asserts what the
// reconciler exported over the wire.
package tracingtest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is a received span with its resource's and scope's attributes.
type Span struct {
	*tracepb.Span
	Resource []*commonpb.KeyValue
	Scope    string
}

// ID and Parent are the span's id and its parent's, hex ("" for a root).
func (s Span) ID() string     { return hex.EncodeToString(s.SpanId) }
func (s Span) Parent() string { return hex.EncodeToString(s.ParentSpanId) }

// Trace is the span's trace id, hex.
func (s Span) Trace() string { return hex.EncodeToString(s.TraceId) }

// Attr is the value of the span's attribute key, nil when it has none.
func (s Span) Attr(key string) *commonpb.AnyValue { return find(s.Attributes, key) }

// Has reports whether the span has attribute key.
func (s Span) Has(key string) bool { return s.Attr(key) != nil }

// Str, Int, Float and Bool are the span's attribute key of that type;
// the zero value when it has none.
func (s Span) Str(key string) string    { return s.Attr(key).GetStringValue() }
func (s Span) Int(key string) int64     { return s.Attr(key).GetIntValue() }
func (s Span) Float(key string) float64 { return s.Attr(key).GetDoubleValue() }
func (s Span) Bool(key string) bool     { return s.Attr(key).GetBoolValue() }

// ResourceStr is the resource's string attribute key.
func (s Span) ResourceStr(key string) string { return find(s.Resource, key).GetStringValue() }

// Failed reports whether the span's status is Error, and its message.
func (s Span) Failed() (bool, string) {
	st := s.Status
	return st != nil && st.Code == tracepb.Status_STATUS_CODE_ERROR, st.GetMessage()
}

func find(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// Receiver keeps what was exported to it.
type Receiver struct {
	// URL is the endpoint to export to: http://127.0.0.1:PORT for
	// OTLP/HTTP, grpc://127.0.0.1:PORT for OTLP/gRPC.
	URL string

	mu       sync.Mutex
	spans    []Span
	requests int
	headers  []http.Header
	errs     []string
}

// NewHTTP starts an OTLP/HTTP receiver (POST /v1/traces, protobuf,
// optionally gzip) on 127.0.0.1, closed when the test ends. Any other
// path or a body that does not decode is answered 404 or 400 and
// reported by Spans.
func NewHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// NewGRPC starts an OTLP/gRPC receiver (TraceService.Export) on
// 127.0.0.1, stopped when the test ends.
func NewGRPC(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{URL: "grpc://" + ln.Addr().String()}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, grpcService{r: r})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return r
}

type grpcService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (g grpcService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.r.keep(req, nil)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		r.fail(w, http.StatusNotFound, fmt.Sprintf("%s %s: want POST /v1/traces", req.Method, req.URL.Path))
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want application/x-protobuf", ct))
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, http.StatusBadRequest, "gzip: "+err.Error())
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		r.fail(w, http.StatusBadRequest, "read: "+err.Error())
		return
	}
	var er coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &er); err != nil {
		r.fail(w, http.StatusBadRequest, "decode ExportTraceServiceRequest: "+err.Error())
		return
	}
	r.keep(&er, req.Header.Clone())
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (r *Receiver) fail(w http.ResponseWriter, code int, msg string) {
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
	http.Error(w, msg, code)
}

func (r *Receiver) keep(req *coltracepb.ExportTraceServiceRequest, h http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if h != nil {
		r.headers = append(r.headers, h)
	}
	for _, rs := range req.ResourceSpans {
		var res []*commonpb.KeyValue
		if rs.Resource != nil {
			res = rs.Resource.Attributes
		}
		for _, ss := range rs.ScopeSpans {
			scope := ""
			if ss.Scope != nil {
				scope = ss.Scope.Name
			}
			for _, sp := range ss.Spans {
				r.spans = append(r.spans, Span{Span: sp, Resource: res, Scope: scope})
			}
		}
	}
}

// Spans returns the spans received so far, in the order they came. It
// fails the test if a request was refused.
func (r *Receiver) Spans(t testing.TB) []Span {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("OTLP receiver refused a request: %s", e)
	}
	return slices.Clone(r.spans)
}

// Requests is the number of export requests received.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Headers are the HTTP headers of the OTLP/HTTP requests received.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.headers)
}

// WaitFor waits up to timeout until a span named name has arrived, and
// returns the spans then; it fails the test when none does.
func (r *Receiver) WaitFor(t testing.TB, name string, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans := r.Spans(t)
		for _, s := range spans {
			if s.Name == name {
				return spans
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span %q within %s; got %d spans", name, timeout, len(spans))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
