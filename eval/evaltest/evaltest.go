// Package evaltest serves scripted chat completions over a real
// OpenAI-compatible HTTP endpoint on 127.0.0.1, for tests of evals and of
// the runs they gate: a hosted model cannot run in the tests, so each
// request is answered with the next response of a script, through the
// same HTTP client, retries and decoding a real provider goes through.
package evaltest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sashabaranov/go-openai"
)

// Server is a scripted OpenAI-compatible endpoint. Its URL is the
// base_url of a provider; requests must carry the bearer Key.
type Server struct {
	URL string
	Key string

	mu       sync.Mutex
	script   []openai.ChatCompletionResponse
	requests []openai.ChatCompletionRequest
}

// NewServer starts a server answering with script, in order, and stops it
// when the test ends. A request past the script's end gets a 400 error, so
// a test that sends more requests than it scripted fails.
func NewServer(t testing.TB, script ...openai.ChatCompletionResponse) *Server {
	t.Helper()
	s := &Server{Key: "sk-evaltest-" + strings.Repeat("k", 24), script: script}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/v1"
	return s
}

// Add appends responses to the script.
func (s *Server) Add(script ...openai.ChatCompletionResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, script...)
}

// Requests returns the requests received so far.
func (s *Server) Requests() []openai.ChatCompletionRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]openai.ChatCompletionRequest{}, s.requests...)
}

// Left is how many scripted responses were not asked for.
func (s *Server) Left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.script)
}

// LookupEnv resolves OPENAI_BASE_URL to the server and OPENAI_API_KEY to
// its key, as a provider block of the form
// base_url = env("OPENAI_BASE_URL"), api_key_env = "OPENAI_API_KEY" reads them.
func (s *Server) LookupEnv(name string) (string, bool) {
	switch name {
	case "OPENAI_BASE_URL":
		return s.URL, true
	case "OPENAI_API_KEY":
		return s.Key, true
	}
	return "", false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}})
	}
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		fail(http.StatusNotFound, "not found")
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Key {
		fail(http.StatusUnauthorized, "invalid api key")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	var req openai.ChatCompletionRequest
	if err := json.Unmarshal(body, &req); err != nil {
		fail(http.StatusBadRequest, "request is not a chat completion request: "+err.Error())
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	if len(s.script) == 0 {
		s.mu.Unlock()
		fail(http.StatusBadRequest, "the test's script has no more responses")
		return
	}
	resp := s.script[0]
	s.script = s.script[1:]
	s.mu.Unlock()
	if resp.Object == "" {
		resp.Object = "chat.completion"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// ToolCall is a response calling one tool, with the usage it reports.
func ToolCall(id, name, args string, in, out int) openai.ChatCompletionResponse {
	return openai.ChatCompletionResponse{
		ID: "chatcmpl-" + id, Model: "gpt-4o-mini",
		Choices: []openai.ChatCompletionChoice{{
			Message: openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, ToolCalls: []openai.ToolCall{{
				ID: "call_" + id, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args},
			}}},
			FinishReason: openai.FinishReasonToolCalls,
		}},
		Usage: openai.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out},
	}
}
