package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The server answers the go-openai client (the reconciler's) with the
// conversation's responses in order, byte for byte, then refuses; it
// answers nothing else.
func TestServesTheConversation(t *testing.T) {
	const file = "../conversation.json"
	var want []json.RawMessage
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--listen", "127.0.0.1:0", file}, &out, &errb) }()
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := regexp.MustCompile(`on (http://\S+/v1)`).FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
	}
	if base == "" {
		t.Fatalf("not serving: %s", errb.String())
	}

	post := func() (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer sk-not-logged-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, first := post()
	if code != http.StatusOK || !bytes.Equal(first, want[0]) {
		t.Fatalf("first response: %d\n%s", code, first)
	}
	// The reconciler's client decodes the rest.
	cfg := openai.DefaultConfig("sk-not-logged-0123456789")
	cfg.BaseURL = base
	client := openai.NewClientWithConfig(cfg)
	for i := 1; i < len(want); i++ {
		resp, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "next"}}})
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		if len(resp.Choices) != 1 || len(resp.Choices[0].Message.ToolCalls) == 0 || resp.Usage.PromptTokens == 0 {
			t.Errorf("response %d = %+v", i+1, resp)
		}
	}
	if code, body := post(); code != http.StatusBadRequest || !strings.Contains(string(body), "all given") {
		t.Errorf("past the end: %d %s", code, body)
	}
	resp, err := http.Get(base + "/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /v1/models = %d, want 404", resp.StatusCode)
	}
	if strings.Contains(errb.String(), "sk-not-logged") || strings.Count(errb.String(), "\n") != len(want)+1 {
		t.Errorf("log:\n%s", errb.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}

func TestBadConversationFiles(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ content, want string }{
		"not json":  {"{", "want a JSON array"},
		"empty":     {"[]", "no responses"},
		"no choice": {`[{"id":"x","object":"chat.completion","choices":[]}]`, "response 1 is not a chat completion"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			os.WriteFile(p, []byte(tc.content), 0o644)
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"--listen", "127.0.0.1:0", p}, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errb.String(), tc.want)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), nil, &out, &errb); code != 2 {
		t.Errorf("no arguments: exit %d", code)
	}
}
