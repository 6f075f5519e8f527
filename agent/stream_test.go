package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sashabaranov/go-openai"
)

// The hosted models cannot be reached from here: these tests replay wire
// data recorded from real endpoints (see conformance/README.md §6) through
// httptest servers.

// conformanceDir is the shared hold-out material for OpenAI-compatible
// endpoints; tests that need it skip when it is absent.
func conformanceDir(t testing.TB, elem ...string) string {
	t.Helper()
	dir := filepath.Join(append([]string{"..", "..", "shared", "conformance", "openai"}, elem...)...)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("conformance material %s is not available (%v); it lives beside the repository in shared/conformance/openai", dir, err)
	}
	return dir
}

// serveSSE writes body as an event stream in small flushed pieces, so that
// the client reassembles events split across reads.
func serveSSE(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/event-stream")
	f := w.(http.Flusher)
	for len(body) > 0 {
		n := min(len(body), 61)
		w.Write(body[:n])
		f.Flush()
		body = body[n:]
	}
}

// streamRequest decodes a request body and checks what every streamed
// request must carry.
func streamRequest(t *testing.T, r *http.Request) map[string]any {
	t.Helper()
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		t.Errorf("request body: %v", err)
		return nil
	}
	if body["stream"] != true {
		t.Errorf("request stream = %v, want true", body["stream"])
	}
	if so, _ := body["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("request stream_options = %v, want include_usage true", body["stream_options"])
	}
	return body
}

func TestStreamConformanceToolCalls(t *testing.T) {
	dir := conformanceDir(t, "openai-go")
	sse, err := os.ReadFile(filepath.Join(dir, "chat-stream-tool-calls.sse"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "chat-stream-tool-calls.expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		DataChunks   int                 `json:"data_chunks"`
		FinishReason openai.FinishReason `json:"finish_reason"`
		Content      string              `json:"content"`
		ToolCalls    []struct {
			Index int `json:"index"`
			openai.ToolCall
		} `json:"tool_calls"`
		Usage openai.Usage `json:"accumulated_usage_per_openai_go_test"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if content, err := os.ReadFile(filepath.Join(dir, "chat-stream-tool-calls.expected-content.txt")); err == nil && strings.TrimSuffix(string(content), "\n") != want.Content {
		t.Fatalf("expected-content.txt and expected.json disagree")
	}

	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path != "/v1/chat/completions" {
			t.Errorf("path = %s", r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
			t.Errorf("Authorization header is not the bearer key")
		}
		streamRequest(t, r)
		serveSSE(w, sse)
	}))
	defer srv.Close()

	p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: true})
	resp, err := p.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "Tell me about a place, then check its weather."}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("%d choices, want 1", len(resp.Choices))
	}
	c := resp.Choices[0]
	if c.Message.Content != want.Content {
		t.Errorf("content differs:\n%s", cmp.Diff(want.Content, c.Message.Content))
	}
	if c.FinishReason != want.FinishReason {
		t.Errorf("finish_reason = %q, want %q", c.FinishReason, want.FinishReason)
	}
	var wantCalls []openai.ToolCall
	for i, tc := range want.ToolCalls {
		if tc.Index != i {
			t.Fatalf("expected tool call %d has index %d", i, tc.Index)
		}
		tc.ToolCall.Index = nil // as in a non-streamed response
		wantCalls = append(wantCalls, tc.ToolCall)
	}
	if d := cmp.Diff(wantCalls, c.Message.ToolCalls); d != "" {
		t.Errorf("tool calls (-want +got):\n%s", d)
	}
	// The recording ends with two usage chunks; they add up, as in
	// openai-go's accumulator (the real API sends one).
	if resp.Usage.PromptTokens != want.Usage.PromptTokens || resp.Usage.CompletionTokens != want.Usage.CompletionTokens || resp.Usage.TotalTokens != want.Usage.TotalTokens {
		t.Errorf("usage = %+v, want %+v", resp.Usage, want.Usage)
	}
	if d := resp.Usage.CompletionTokensDetails; d == nil || d.ReasoningTokens != 8 {
		t.Errorf("completion token details = %+v, want reasoning_tokens 8", d)
	}
	if resp.ID != "chatcmpl-A3Tguz3LSXTHBTY2NAPBCSyfBltxF" || resp.Model != "gpt-4o-2024-05-13" || resp.Object != "chat.completion" {
		t.Errorf("id, model, object = %q, %q, %q", resp.ID, resp.Model, resp.Object)
	}
	if c.Message.Role != openai.ChatMessageRoleAssistant {
		t.Errorf("role = %q", c.Message.Role)
	}
	if got := strings.Count(string(sse), "\ndata: ") + 1; got != want.DataChunks+1 {
		t.Errorf("fixture has %d data lines, expected.json says %d chunks and [DONE]", got, want.DataChunks)
	}
}

func TestAccumulateToolCallEdgeCases(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(conformanceDir(t, "openai-go"), "tool-call-chunk-edge-cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name   string   `json:"name"`
		Chunks []string `json:"chunks"`
		Expect string   `json:"expect"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	// The fixture states its expectations in prose; these are they.
	want := map[string][]openai.ToolCall{
		"empty tool_calls array then finish": nil, // no tool call is reported finished; no crash
		"null tool_calls then finish":        nil,
		"one tool call then finish": {{ // tool call call_123 test_func args {} finished
			ID: "call_123", Type: openai.ToolTypeFunction,
			Function: openai.FunctionCall{Name: "test_func", Arguments: "{}"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			wantCalls, ok := want[tc.Name]
			if !ok {
				t.Fatalf("no expectation for case %q (%s); add one", tc.Name, tc.Expect)
			}
			var chunks []openai.ChatCompletionStreamResponse
			for _, s := range tc.Chunks {
				var c openai.ChatCompletionStreamResponse
				if err := json.Unmarshal([]byte(s), &c); err != nil {
					t.Fatal(err)
				}
				chunks = append(chunks, c)
			}
			resp, err := Accumulate(chunks)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Choices) != 1 {
				t.Fatalf("%d choices", len(resp.Choices))
			}
			c := resp.Choices[0]
			if d := cmp.Diff(wantCalls, c.Message.ToolCalls); d != "" {
				t.Errorf("tool calls (-want +got):\n%s", d)
			}
			if c.FinishReason != openai.FinishReasonToolCalls || resp.ID != "test" {
				t.Errorf("finish_reason %q, id %q", c.FinishReason, resp.ID)
			}
		})
	}
}

func TestAccumulate(t *testing.T) {
	idx := func(i int) *int { return &i }
	delta := func(d openai.ChatCompletionStreamChoiceDelta, finish openai.FinishReason) openai.ChatCompletionStreamResponse {
		return openai.ChatCompletionStreamResponse{ID: "c1", Model: "m", Choices: []openai.ChatCompletionStreamChoice{{Delta: d, FinishReason: finish}}}
	}
	call := func(i *int, id, name, args string) openai.ChatCompletionStreamChoiceDelta {
		return openai.ChatCompletionStreamChoiceDelta{ToolCalls: []openai.ToolCall{{Index: i, ID: id, Function: openai.FunctionCall{Name: name, Arguments: args}}}}
	}
	fn := func(id, name, args string) openai.ToolCall {
		return openai.ToolCall{ID: id, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args}}
	}
	tests := []struct {
		name    string
		chunks  []openai.ChatCompletionStreamResponse
		calls   []openai.ToolCall
		content string
		err     error
	}{{
		name: "parallel calls by index, interleaved",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(call(idx(0), "a", "read_file", `{"pa`), ""),
			delta(call(idx(1), "b", "list_files", ``), ""),
			delta(call(idx(0), "", "", `th":"x"}`), ""),
			delta(call(idx(1), "", "", `{}`), ""),
			delta(openai.ChatCompletionStreamChoiceDelta{}, openai.FinishReasonToolCalls),
		},
		calls: []openai.ToolCall{fn("a", "read_file", `{"path":"x"}`), fn("b", "list_files", `{}`)},
	}, {
		name: "indexes arrive out of order",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(call(idx(1), "b", "second", `{}`), ""),
			delta(call(idx(0), "a", "first", `{}`), openai.FinishReasonToolCalls),
		},
		calls: []openai.ToolCall{fn("a", "first", `{}`), fn("b", "second", `{}`)},
	}, {
		name: "no index: a new id starts a call",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(call(nil, "a", "one", `{"x":`), ""),
			delta(call(nil, "", "", `1}`), ""),
			delta(call(nil, "b", "two", `{}`), openai.FinishReasonToolCalls),
		},
		calls: []openai.ToolCall{fn("a", "one", `{"x":1}`), fn("b", "two", `{}`)},
	}, {
		name: "no index and no ids: a new name starts a call",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(call(nil, "", "one", `{}`), ""),
			delta(call(nil, "", "two", `{}`), openai.FinishReasonToolCalls),
		},
		calls: []openai.ToolCall{fn("", "one", `{}`), fn("", "two", `{}`)},
	}, {
		name: "an index reused with a new id",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(call(idx(0), "a", "one", `{}`), ""),
			delta(call(idx(0), "b", "two", `{}`), openai.FinishReasonToolCalls),
		},
		calls: []openai.ToolCall{fn("a", "one", `{}`), fn("b", "two", `{}`)},
	}, {
		name: "content with a usage chunk",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(openai.ChatCompletionStreamChoiceDelta{Role: "assistant", Content: "Hel"}, ""),
			delta(openai.ChatCompletionStreamChoiceDelta{Content: "lo"}, openai.FinishReasonStop),
			{ID: "c1", Usage: &openai.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		},
		content: "Hello",
	}, {
		name: "no finish_reason",
		chunks: []openai.ChatCompletionStreamResponse{
			delta(openai.ChatCompletionStreamChoiceDelta{Content: "Hel"}, ""),
		},
		content: "Hel",
		err:     ErrIncompleteStream,
	}, {
		name:   "usage only",
		chunks: []openai.ChatCompletionStreamResponse{{ID: "c1", Usage: &openai.Usage{TotalTokens: 5}}},
		err:    ErrInvalidChatResponse,
	}, {
		name: "no chunks",
		err:  ErrInvalidChatResponse,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := Accumulate(tt.chunks)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if len(resp.Choices) == 0 {
				return
			}
			m := resp.Choices[0].Message
			if d := cmp.Diff(tt.calls, m.ToolCalls); d != "" {
				t.Errorf("tool calls (-want +got):\n%s", d)
			}
			if m.Content != tt.content || m.Role != openai.ChatMessageRoleAssistant {
				t.Errorf("content %q role %q, want %q assistant", m.Content, m.Role, tt.content)
			}
		})
	}
}

func TestStreamErrorFixtures(t *testing.T) {
	dir := conformanceDir(t, "go-openai")
	tests := []struct {
		file, message, code string
	}{
		{"stream-error-with-data-prefix.sse", "The server had an error while processing your request. Sorry about that!", ""},
		{"stream-error-bare-json-on-event-stream.txt", "Incorrect API key provided: sk-***************************************", "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				streamRequest(t, r)
				serveSSE(w, body)
			}))
			defer srv.Close()
			rec := &sleepRecorder{}
			p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: true, Sleep: rec.sleep})
			resp, err := p.CreateChatCompletion(context.Background(), chatRequest())
			if err == nil {
				t.Fatalf("no error; response %+v", resp)
			}
			var apiErr *openai.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *openai.APIError", err, err)
			}
			if apiErr.Message != tt.message || (tt.code != "" && apiErr.Code != tt.code) {
				t.Errorf("APIError message %q code %v", apiErr.Message, apiErr.Code)
			}
			if !strings.HasPrefix(err.Error(), "provider openai.default: ") {
				t.Errorf("error %q does not name the provider", err)
			}
			// An error event inside a 200 stream is the server's verdict on
			// the request: not retried.
			if n := requests.Load(); n != 1 || len(rec.sleeps()) != 0 {
				t.Errorf("%d requests, sleeps %v; want 1 and none", n, rec.sleeps())
			}
		})
	}
}

func TestStreamTruncatedRetried(t *testing.T) {
	full := "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n" +
		"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
		"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n" +
		"data: [DONE]\n\n"
	first := full[:strings.Index(full, "\n\n")+2]
	tests := []struct {
		name  string
		first http.HandlerFunc
	}{
		{"connection dropped mid-stream", func(w http.ResponseWriter, r *http.Request) {
			serveSSE(w, []byte(first))
			panic(http.ErrAbortHandler) // the server aborts the connection
		}},
		{"clean end without finish_reason", func(w http.ResponseWriter, r *http.Request) {
			serveSSE(w, []byte(first))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, count := scripted(t, tt.first, func(w http.ResponseWriter, r *http.Request) { serveSSE(w, []byte(full)) })
			rec := &sleepRecorder{}
			p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: true, Sleep: rec.sleep})
			resp, err := p.CreateChatCompletion(context.Background(), chatRequest())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Choices[0].Message.Content != "Hello" || resp.Usage.TotalTokens != 5 {
				t.Errorf("response %+v", resp)
			}
			if count() != 2 || len(rec.sleeps()) != 1 {
				t.Errorf("%d requests, sleeps %v", count(), rec.sleeps())
			}
		})
	}

	t.Run("retries exhausted", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveSSE(w, []byte(first)) }))
		defer srv.Close()
		rec := &sleepRecorder{}
		p := newTestProvider(t, srv.URL+"/v1", ProviderOptions{Stream: true, Sleep: rec.sleep, MaxRetries: 1})
		_, err := p.CreateChatCompletion(context.Background(), chatRequest())
		if !errors.Is(err, ErrIncompleteStream) {
			t.Fatalf("err = %v, want ErrIncompleteStream", err)
		}
	})
}
