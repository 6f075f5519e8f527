package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sashabaranov/go-openai"
)

// cachedAgentRun runs the loop's agent on srv with cache as given, in a
// fresh workspace, and returns the result and tree.
func cachedAgentRun(t *testing.T, srv *modelServer, cache *ResponseCache, cacheOn bool, prompt string) (Result, map[string]string) {
	t.Helper()
	a := tieredAgent(srv, nil)
	a.Models, a.Model, a.Cache = nil, "small", cacheOn
	if prompt != "" {
		a.Prompt = prompt
	}
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
	res, err := httpRunner(cache).Run(context.Background(), loopTask(a, dir))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, snapshotTree(t, dir)
}

// twice is the script of a run of two replies, served twice over.
func twiceScript() map[string][]reply {
	one := []reply{calls(writeTo("services/api.yaml", "image: api:1.2.3\n")), finishWith("low")}
	return map[string][]reply{"small": append(one, one...)}
}

// The second identical run is answered from the cache: the server is not
// asked, every step is recorded as cached with zero tokens, the run costs
// nothing, and its transcript replays.
func TestCacheHit(t *testing.T) {
	srv := newModelServer(t, twiceScript())
	cache := NewResponseCache(filepath.Join(t.TempDir(), "responses"), 0)
	first, tree := cachedAgentRun(t, srv, cache, true, "")
	if srv.total() != 2 || first.Usage != (Usage{200, 20}) {
		t.Fatalf("first run: %d requests, usage %+v", srv.total(), first.Usage)
	}
	second, tree2 := cachedAgentRun(t, srv, cache, true, "")
	if srv.total() != 2 {
		t.Errorf("the second run asked the server %d times", srv.total()-2)
	}
	if diff := cmp.Diff(tree, tree2); diff != "" {
		t.Errorf("trees differ (-first +second):\n%s", diff)
	}
	if second.Usage != (Usage{}) || second.Cost(tieredAgent(srv, nil)) != 0 {
		t.Errorf("second run usage %+v cost %v, want zero", second.Usage, second.Cost(tieredAgent(srv, nil)))
	}
	tr, err := ParseTranscript(second.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tr.Steps {
		if !s.Cached || len(s.CacheKey) != 64 || s.Usage != (TranscriptUsage{}) || s.Response == nil || s.Response.Usage.PromptTokens != 100 {
			t.Errorf("step %d: cached %v key %q usage %+v", s.Step, s.Cached, s.CacheKey, s.Usage)
		}
	}
	if tr.Usage != (TranscriptUsage{}) {
		t.Errorf("transcript usage %+v", tr.Usage)
	}
	ft, _ := ParseTranscript(first.Transcript)
	for _, s := range ft.Steps {
		if s.Cached {
			t.Errorf("first run's step %d recorded as cached", s.Step)
		}
	}
	// Replay treats cached steps as any other, and charges them nothing.
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
	a := tieredAgent(srv, nil)
	a.Models, a.Model, a.Cache = nil, "small", true
	rep, err := Replay(context.Background(), loopTask(a, dir), second.Transcript)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if rep.Usage != (Usage{}) || srv.total() != 2 {
		t.Errorf("replay usage %+v, %d requests", rep.Usage, srv.total())
	}
	if diff := cmp.Diff(tree, snapshotTree(t, dir)); diff != "" {
		t.Errorf("replayed tree (-recorded +replayed):\n%s", diff)
	}
	rt, _ := ParseTranscript(rep.Transcript)
	for _, s := range rt.Steps {
		if !s.Cached || s.CacheKey != tr.Steps[s.Step-1].CacheKey {
			t.Errorf("replayed step %d: cached %v key %q", s.Step, s.Cached, s.CacheKey)
		}
	}
	// The API key is in no entry.
	filepath.WalkDir(cache.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), tierKey) {
				t.Errorf("%s holds the API key", p)
			}
		}
		return nil
	})
}

// cache = false (the default) never reads or writes the cache.
func TestCacheDisabledByDefault(t *testing.T) {
	srv := newModelServer(t, twiceScript())
	dir := filepath.Join(t.TempDir(), "responses")
	cache := NewResponseCache(dir, 0)
	cachedAgentRun(t, srv, cache, false, "")
	cachedAgentRun(t, srv, cache, false, "")
	if srv.total() != 4 {
		t.Errorf("%d requests, want 4", srv.total())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the cache directory exists: %v", err)
	}
	// An agent with cache = true but no cache configured runs as well.
	cachedAgentRun(t, newModelServer(t, twiceScript()), nil, true, "")
}

// A run whose prompt differs is a miss.
func TestCacheMissOtherPrompt(t *testing.T) {
	srv := newModelServer(t, twiceScript())
	cache := NewResponseCache(filepath.Join(t.TempDir(), "responses"), 0)
	cachedAgentRun(t, srv, cache, true, "")
	cachedAgentRun(t, srv, cache, true, "Bump the api image, carefully.")
	if srv.total() != 4 {
		t.Errorf("%d requests, want 4: a different prompt hit the cache", srv.total())
	}
}

func cacheRequest() openai.ChatCompletionRequest {
	return openai.ChatCompletionRequest{
		Model:    "small",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleSystem, Content: "You are <agent>."}, {Role: openai.ChatMessageRoleUser, Content: "Start."}},
		Tools:    []openai.Tool{{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{Name: "finish", Parameters: json.RawMessage(`{"type":"object"}`)}}},
	}
}

// Any difference in model, messages, tools or parameters is a miss.
func TestCacheKey(t *testing.T) {
	c := NewResponseCache(t.TempDir(), 0)
	base := cacheRequest()
	body, key, err := CacheKey(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.put(body, key, loopFinish(), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.get(body, key); !ok {
		t.Fatal("miss on the stored request")
	}
	for name, change := range map[string]func(*openai.ChatCompletionRequest){
		"model":    func(r *openai.ChatCompletionRequest) { r.Model = "large" },
		"message":  func(r *openai.ChatCompletionRequest) { r.Messages[1].Content = "Start!" },
		"role":     func(r *openai.ChatCompletionRequest) { r.Messages[1].Role = openai.ChatMessageRoleAssistant },
		"messages": func(r *openai.ChatCompletionRequest) { r.Messages = r.Messages[:1] },
		"tools":    func(r *openai.ChatCompletionRequest) { r.Tools[0].Function.Name = "finish_now" },
		"schema": func(r *openai.ChatCompletionRequest) {
			r.Tools[0].Function.Parameters = json.RawMessage(`{"type":"string"}`)
		},
		"no tools": func(r *openai.ChatCompletionRequest) { r.Tools = nil },
		"param":    func(r *openai.ChatCompletionRequest) { r.Temperature = 0.5 },
		"seed":     func(r *openai.ChatCompletionRequest) { r.Seed = new(int) },
	} {
		r := cacheRequest()
		change(&r)
		b, k, err := CacheKey(r)
		if err != nil {
			t.Fatal(err)
		}
		if k == key {
			t.Errorf("%s: same key", name)
		}
		if _, ok := c.get(b, k); ok {
			t.Errorf("%s: hit", name)
		}
	}
	// The JSON is the request's, whole.
	var back openai.ChatCompletionRequest
	if err := json.Unmarshal(body, &back); err != nil || back.Messages[0].Content != "You are <agent>." || back.Tools[0].Function.Name != "finish" {
		t.Errorf("request JSON %s: %v", body, err)
	}
}

// A corrupt entry, or one planted with a request that does not hash to
// its key, is a miss: the run asks the model, records no cached step, and
// overwrites the entry.
func TestCacheRejectsBadEntries(t *testing.T) {
	planted := loopTools(loopCall{"write_file", `{"path":"services/evil.txt","content":"planted"}`})
	for name, entry := range map[string]func(key string, body []byte) []byte{
		"not json":  func(string, []byte) []byte { return []byte("{\"version\":1,\"key\":") },
		"truncated": func(key string, body []byte) []byte { b := goodEntry(t, key, body, planted); return b[:len(b)/2] },
		"other request under the key": func(key string, body []byte) []byte {
			other := cacheRequest()
			other.Messages[1].Content = "something else"
			ob, _, _ := CacheKey(other)
			return goodEntry(t, key, ob, planted)
		},
		"request edited, key kept": func(key string, body []byte) []byte {
			return goodEntry(t, key, []byte(strings.Replace(string(body), "Start", "Begin", 1)), planted)
		},
		"another key": func(key string, body []byte) []byte {
			e := goodEntry(t, key, body, planted)
			return []byte(strings.Replace(string(e), key, strings.Repeat("0", 64), 1))
		},
		"no choices": func(key string, body []byte) []byte {
			return goodEntry(t, key, body, openai.ChatCompletionResponse{ID: "x"})
		},
		"other version": func(key string, body []byte) []byte {
			return []byte(strings.Replace(string(goodEntry(t, key, body, planted)), `"version":1`, `"version":2`, 1))
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := NewResponseCache(t.TempDir(), 0)
			body, key, _ := CacheKey(cacheRequest())
			if err := os.MkdirAll(filepath.Dir(c.path(key)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(c.path(key), entry(key, body), 0o600); err != nil {
				t.Fatal(err)
			}
			if resp, ok := c.get(body, key); ok {
				t.Fatalf("hit: %+v", resp)
			}
		})
	}
	// Through a run: the planted entries of the run's first request.
	t.Run("run", func(t *testing.T) {
		srv := newModelServer(t, twiceScript())
		cache := NewResponseCache(filepath.Join(t.TempDir(), "responses"), 0)
		first, want := cachedAgentRun(t, srv, cache, true, "")
		ft, _ := ParseTranscript(first.Transcript)
		key := ft.Steps[0].CacheKey
		if key != "" {
			t.Fatalf("a miss recorded a cache key %q", key)
		}
		// Find the first request's entry and plant a response in it.
		var files []string
		filepath.WalkDir(cache.Dir(), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		if len(files) != 2 {
			t.Fatalf("%d entries, want 2", len(files))
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			var e cacheEntry
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			// The attacker keeps the key and response, and edits the
			// request so that its own response would fit it: rejected.
			e.Request = json.RawMessage(strings.Replace(string(e.Request), "Bump", "Drop", 1))
			e.Response = planted
			nb, _ := json.Marshal(e)
			os.WriteFile(f, nb, 0o600)
		}
		// A corrupt file besides.
		os.WriteFile(files[1], []byte("\x00garbage"), 0o600)
		res, tree := cachedAgentRun(t, srv, cache, true, "")
		if srv.total() != 4 {
			t.Errorf("%d requests, want 4: a planted entry answered", srv.total())
		}
		if diff := cmp.Diff(want, tree); diff != "" {
			t.Errorf("tree (-want +got):\n%s", diff)
		}
		tr, _ := ParseTranscript(res.Transcript)
		for _, s := range tr.Steps {
			if s.Cached {
				t.Errorf("step %d recorded as cached", s.Step)
			}
		}
		// The entries were rewritten: a third run hits.
		cachedAgentRun(t, srv, cache, true, "")
		if srv.total() != 4 {
			t.Errorf("%d requests after the entries were rewritten, want 4", srv.total())
		}
	})
}

func goodEntry(t *testing.T, key string, body []byte, resp openai.ChatCompletionResponse) []byte {
	t.Helper()
	b, err := json.Marshal(cacheEntry{Version: cacheVersion, Key: key, Request: body, Response: resp, Stored: "2026-01-02T03:04:05Z"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An exchange holding the API key is not stored.
func TestCacheNeverStoresSecrets(t *testing.T) {
	c := NewResponseCache(t.TempDir(), 0)
	body, key, _ := CacheKey(cacheRequest())
	leak := loopText("the key is " + tierKey)
	if err := c.put(body, key, leak, []string{tierKey}); err == nil {
		t.Error("put stored an exchange holding the key")
	}
	if _, ok := c.get(body, key); ok {
		t.Error("hit on an exchange holding the key")
	}
}

// The cache stays under its cap, removing the least recently used
// entries first; a hit makes an entry recent.
func TestCacheEviction(t *testing.T) {
	c := NewResponseCache(t.TempDir(), 0)
	resp := loopText(strings.Repeat("x", 1000))
	request := func(i int) ([]byte, string) {
		r := cacheRequest()
		r.Messages[1].Content = fmt.Sprintf("request %02d", i)
		b, k, _ := CacheKey(r)
		return b, k
	}
	for i := range 10 {
		b, k := request(i)
		if err := c.put(b, k, resp, nil); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(c.path(k), time.Unix(int64(1000+i), 0), time.Unix(int64(1000+i), 0))
	}
	_, k0 := request(0)
	fi, _ := os.Stat(c.path(k0))
	size := fi.Size()
	// Entry 0 is used: now the most recent. With room for ten entries
	// and a half, the eleventh takes the cache over its cap: the least
	// recently used go, entries 1 and 2, until it is under nine tenths.
	c.now = func() time.Time { return time.Unix(5000, 0) }
	if _, ok := c.get(request(0)); !ok {
		t.Fatal("miss")
	}
	c.maxBytes = size*10 + size/2
	b10, k10 := request(10)
	if err := c.put(b10, k10, resp, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 11 {
		_, k := request(i)
		_, err := os.Stat(c.path(k))
		if gone := os.IsNotExist(err); gone != (i == 1 || i == 2) {
			t.Errorf("entry %d gone %v", i, gone)
		}
	}
	// An entry over a tenth of the cap is not stored.
	huge := loopText(strings.Repeat("y", int(size)))
	bh, kh := request(99)
	c.put(bh, kh, huge, nil)
	if _, err := os.Stat(c.path(kh)); !os.IsNotExist(err) {
		t.Errorf("an entry over a tenth of the cap was stored: %v", err)
	}
}

// Two processes writing and reading the same entries: every read is a
// miss or the whole entry, never a partial one.
func TestCacheTwoProcesses(t *testing.T) {
	if os.Getenv("RECONCILER_CACHE_CHILD") != "" {
		cacheChild(t)
		return
	}
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCacheTwoProcesses$")
		cmd.Env = append(os.Environ(), "RECONCILER_CACHE_CHILD="+dir, "RECONCILER_CACHE_CHILD_ID="+strconv.Itoa(i))
		cmds = append(cmds, cmd)
	}
	outs := make([][]byte, len(cmds))
	errs := make([]error, len(cmds))
	done := make(chan int)
	for i, cmd := range cmds {
		go func() {
			outs[i], errs[i] = cmd.CombinedOutput()
			done <- i
		}()
	}
	for range cmds {
		<-done
	}
	for i := range cmds {
		if errs[i] != nil || !strings.Contains(string(outs[i]), "PASS") {
			t.Errorf("child %d: %v\n%s", i, errs[i], outs[i])
		}
	}
}

// cacheChild puts and gets 20 entries 30 times over, with replies of its
// own that differ in size, checking each hit decodes whole.
func cacheChild(t *testing.T) {
	c := NewResponseCache(os.Getenv("RECONCILER_CACHE_CHILD"), 64<<10)
	id := os.Getenv("RECONCILER_CACHE_CHILD_ID")
	for round := range 30 {
		for i := range 20 {
			r := cacheRequest()
			r.Messages[1].Content = fmt.Sprint("request ", i)
			b, k, _ := CacheKey(r)
			if resp, ok := c.get(b, k); ok {
				if len(resp.Choices) != 1 || !strings.HasPrefix(resp.Choices[0].Message.Content, "child ") {
					t.Fatalf("partial or foreign hit: %+v", resp)
				}
			}
			content := fmt.Sprintf("child %s round %d %s", id, round, strings.Repeat("z", (round*37+i*11)%2000))
			if err := c.put(b, k, loopText(content), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The same request to another endpoint (another base URL with a model of
// the same name) is not answered from the first endpoint's replies.
func TestCacheEndpointsApart(t *testing.T) {
	a, b := newModelServer(t, twiceScript()), newModelServer(t, twiceScript())
	cache := NewResponseCache(filepath.Join(t.TempDir(), "responses"), 0)
	cachedAgentRun(t, a, cache, true, "")
	cachedAgentRun(t, b, cache, true, "")
	if a.total() != 2 || b.total() != 2 {
		t.Fatalf("requests: first endpoint %d, second %d; want 2 each (no reply shared across endpoints)", a.total(), b.total())
	}
	cachedAgentRun(t, b, cache, true, "")
	if b.total() != 2 {
		t.Errorf("the second endpoint's own replies were not reused: %d requests", b.total())
	}
}
