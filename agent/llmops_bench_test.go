package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

// The agent side of the LLMOps features as what they hold grows
// (docs/performance.md, "LLMOps at scale"):
//
//	go test -run '^$' -bench 'RecallCall|ResponseCache' -benchmem ./agent/

var llmopsSizes = []int{10, 10_000, 100_000}

// BenchmarkRecallCall: one recall tool call on a task's memory of N
// outcomes. The reconciler gives a run at most 50 (reconcile's
// maxMemory); the larger sizes show what the call would cost on a
// memory it did not bound.
func BenchmarkRecallCall(b *testing.B) {
	for _, n := range llmopsSizes {
		b.Run(fmt.Sprintf("memory=%d", n), func(b *testing.B) {
			a := loopAgent(hclspec.ToolRecall)
			mem := make([]Outcome, n)
			t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			for i := range mem {
				mem[i] = Outcome{RunID: fmt.Sprintf("%012x", i), Time: t0.Add(time.Duration(i) * time.Minute),
					Summary: fmt.Sprintf("Raise CACHE_TTL of svc-%03d", i%1000), Rationale: strings.Repeat("Latency from cache misses. ", 20),
					Files: []string{fmt.Sprintf("config/svc-%03d.env", i%1000)}, Outcome: OutcomeRejected, Detail: "closed without merge"}
			}
			ws, err := openWorkspace(b.TempDir(), []string{"services/**"}, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer ws.Close()
			tb := newToolbox(ws, a.Tools)
			task := loopTask(a, "")
			task.Memory = mem
			tb.bindTask(task, newRedactor())
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				res, err := tb.run(context.Background(), hclspec.ToolRecall, `{"query":"svc-007 rejected"}`)
				if err != nil || res.IsErr || !strings.Contains(res.Text, "svc-007") {
					b.Fatalf("recall = %+v, %v", res, err)
				}
			}
		})
	}
}

// BenchmarkResponseCache: a lookup (a hit) and a store (of a new
// request) in a response cache that holds N entries on disk, under a cap
// they fit in. Fixtures are kept in $TMPDIR/reconciler-bench-cache/<N>.
func BenchmarkResponseCache(b *testing.B) {
	for _, n := range llmopsSizes {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			dir := cacheFixture(b, n)
			resp := benchResponse()
			hit := benchRequest(n / 2)
			body, key, err := CacheKey(hit)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("get", func(b *testing.B) {
				c := NewResponseCache(dir, 1<<40)
				b.ReportAllocs()
				for range b.N {
					if _, ok := c.get(body, key); !ok {
						b.Fatal("miss")
					}
				}
			})
			b.Run("put", func(b *testing.B) {
				c := NewResponseCache(dir, 1<<40)
				// The process's first store walks the directory once
				// (counted by "first-put", not by ns/op).
				start := time.Now()
				body, key, _ := CacheKey(benchRequest(9_999_999))
				if err := c.put(body, key, resp, nil); err != nil {
					b.Fatal(err)
				}
				first := time.Since(start)
				keys := []string{key}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					body, key, _ := CacheKey(benchRequest(10_000_000 + i))
					if err := c.put(body, key, resp, nil); err != nil {
						b.Fatal(err)
					}
					keys = append(keys, key)
				}
				b.StopTimer()
				b.ReportMetric(float64(first.Microseconds()), "first-put-µs")
				for _, k := range keys { // the fixture stays at n entries
					os.Remove(c.path(k))
				}
			})
		})
	}
}

func benchRequest(i int) openai.ChatCompletionRequest {
	return openai.ChatCompletionRequest{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{
		{Role: openai.ChatMessageRoleSystem, Content: strings.Repeat("You keep services patched. ", 40)},
		{Role: openai.ChatMessageRoleUser, Content: fmt.Sprintf("Bump the image of svc-%d.", i)},
	}}
}

func benchResponse() openai.ChatCompletionResponse {
	return openai.ChatCompletionResponse{ID: "chatcmpl-1", Model: "gpt-4o-mini", Choices: []openai.ChatCompletionChoice{{
		Message:      openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: strings.Repeat("Done. ", 100)},
		FinishReason: openai.FinishReasonStop}}, Usage: openai.Usage{PromptTokens: 300, CompletionTokens: 100}}
}

// cacheFixture returns a cache directory holding n entries, written once
// and kept across runs.
func cacheFixture(b *testing.B, n int) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "reconciler-bench-cache", fmt.Sprint(n))
	done := filepath.Join(dir, "complete-v1")
	if _, err := os.Stat(done); err == nil {
		return filepath.Join(dir, "cache")
	}
	os.RemoveAll(dir)
	c := NewResponseCache(filepath.Join(dir, "cache"), 1<<40)
	resp := benchResponse()
	for i := range n {
		body, key, err := CacheKey(benchRequest(i))
		if err != nil {
			b.Fatal(err)
		}
		// Written as put writes them, without put's eviction walk,
		// which would make building the fixture quadratic.
		e := cacheEntry{Version: cacheVersion, Key: key, Request: body, Response: resp, Stored: stamp(time.Now())}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(c.path(key)), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(c.path(key), buf.Bytes(), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(dir, "cache")
}
