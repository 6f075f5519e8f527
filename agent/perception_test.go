package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// senseToolbox is a toolbox offering tools to agent a, bound to its task,
// in a workspace of its own.
func senseToolbox(t *testing.T, a *hclspec.Agent, memory ...Outcome) *toolbox {
	t.Helper()
	ws, err := openWorkspace(t.TempDir(), []string{"services/**"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	tb := newToolbox(ws, a.Tools)
	task := loopTask(a, "")
	task.Memory = memory
	tb.bindTask(task, newRedactor())
	return tb
}

// wantResult checks a tool result: its text, or its start when want ends
// in "...", and whether it is an error.
func wantResult(t *testing.T, res toolResult, want string, wantErr bool) {
	t.Helper()
	if prefix, ok := strings.CutSuffix(want, "..."); ok {
		if !strings.HasPrefix(res.Text, prefix) {
			t.Errorf("result = %q, want it to start with %q", res.Text, prefix)
		}
	} else if res.Text != want {
		t.Errorf("result = %q\nwant       %q", res.Text, want)
	}
	if res.IsErr != wantErr {
		t.Errorf("IsErr = %v, want %v (result %q)", res.IsErr, wantErr, res.Text)
	}
}

// http_get against real HTTP servers on 127.0.0.1: what the allow-list
// lets through, what it refuses (another path, another host, a redirect
// off the list, unclean paths, credentials), bounded and redacted bodies.
func TestHTTPGet(t *testing.T) {
	var outsideHits atomic.Int32
	outside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outsideHits.Add(1)
		fmt.Fprint(w, "internal admin page")
	}))
	defer outside.Close()
	status := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status/api.json":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"status":"degraded","component":"payments-api"}`)
		case "/status/moved":
			http.Redirect(w, r, "/status/api.json", http.StatusFound)
		case "/status/escape":
			http.Redirect(w, r, outside.URL+"/admin", http.StatusFound)
		case "/status/up":
			http.Redirect(w, r, "/admin", http.StatusFound)
		case "/status/big":
			fmt.Fprint(w, strings.Repeat("a", maxHTTPBody+100))
		case "/status/token":
			fmt.Fprint(w, "deploy token: ghp_0123456789abcdefghijABCDEFGHIJ012345 (rotate it)")
		case "/status/png":
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00"))
		case "/status/missing":
			http.Error(w, "no such component", http.StatusNotFound)
		default:
			http.Error(w, "admin: "+r.URL.Path, http.StatusForbidden)
		}
	}))
	defer status.Close()

	a := loopAgent(hclspec.ToolHTTPGet)
	a.Perception.HTTPAllow = []string{status.URL + "/status/"}
	tests := []struct {
		name, url, want string
		wantErr         bool
	}{
		{"allowed", status.URL + "/status/api.json", "GET " + status.URL + "/status/api.json\nHTTP/1.1 200 OK\nContent-Type: application/json\n\n" + `{"status":"degraded","component":"payments-api"}`, false},
		{"redirect within", status.URL + "/status/moved", "GET " + status.URL + "/status/api.json\nHTTP/1.1 200 OK\n...", false},
		{"status shown", status.URL + "/status/missing", "GET " + status.URL + "/status/missing\nHTTP/1.1 404 Not Found\nContent-Type: text/plain; charset=utf-8\n\nno such component\n", false},
		{"other path", status.URL + "/admin", fmt.Sprintf("error: refused: %q is outside http_allow", status.URL+"/admin"), true},
		{"prefix is not a string prefix", status.URL + "/statusx", fmt.Sprintf("error: refused: %q is outside http_allow", status.URL+"/statusx"), true},
		{"other host", outside.URL + "/status/api.json", fmt.Sprintf("error: refused: %q is outside http_allow", outside.URL+"/status/api.json"), true},
		{"redirect to other host", status.URL + "/status/escape", "error: redirect from " + status.URL + "/status/escape: refused: \"" + outside.URL + "/admin\" is outside http_allow", true},
		{"redirect to other path", status.URL + "/status/up", "error: redirect from " + status.URL + "/status/up: refused: \"" + status.URL + "/admin\" is outside http_allow", true},
		{"dot dot", status.URL + "/status/../admin", "error: refused: " + fmt.Sprintf("%q", status.URL+"/status/../admin") + ` has a path with "." or ".." segments, repeated or encoded slashes or dots; use the clean path`, true},
		{"encoded dot dot", status.URL + "/status/%2e%2e/admin", "error: refused: ...", true},
		{"credentials", strings.Replace(status.URL, "http://", "http://user:pw@", 1) + "/status/api.json", "error: refused: URLs with credentials are refused", true},
		{"not http", "file:///etc/passwd", `error: refused: "file:///etc/passwd" is not an absolute http(s) URL`, true},
		{"bounded", status.URL + "/status/big", "GET ...", false},
		{"redacted", status.URL + "/status/token", "GET " + status.URL + "/status/token\nHTTP/1.1 200 OK\nContent-Type: text/plain; charset=utf-8\n\ndeploy token: [REDACTED] (rotate it)", false},
		{"binary", status.URL + "/status/png", "GET " + status.URL + "/status/png\nHTTP/1.1 200 OK\nContent-Type: image/png\n\nbinary body (image/png), 11 bytes: not shown", false},
		{"missing url", "", `error: argument "url" of http_get is required; send an object such as {"url": "https://status.example.com/api/v2/status.json"}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := senseToolbox(t, a)
			res, err := tb.run(context.Background(), hclspec.ToolHTTPGet, fmt.Sprintf(`{"url":%q}`, tt.url))
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			wantResult(t, res, tt.want, tt.wantErr)
			if len(res.Text) > defaultMaxResultBytes+512 {
				t.Errorf("result is %d bytes, over the %d-byte bound", len(res.Text), defaultMaxResultBytes)
			}
		})
	}
	if n := outsideHits.Load(); n != 0 {
		t.Errorf("the server outside http_allow got %d requests, want none", n)
	}
	t.Run("no allow-list", func(t *testing.T) {
		res, err := senseToolbox(t, loopAgent(hclspec.ToolHTTPGet)).run(context.Background(), hclspec.ToolHTTPGet, fmt.Sprintf(`{"url":%q}`, status.URL+"/status/api.json"))
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, res, `error: agent "bumper" allows no URLs; its agent block needs http_allow = ["https://..."]`, true)
	})
	t.Run("not offered", func(t *testing.T) {
		res, _ := senseToolbox(t, loopAgent("read_file")).run(context.Background(), hclspec.ToolHTTPGet, `{"url":"http://127.0.0.1/"}`)
		wantResult(t, res, `error: unknown tool "http_get"; the tools are read_file, finish`, true)
	})
}

func TestURLPrefixAllows(t *testing.T) {
	tests := []struct {
		prefix, url string
		want        bool
	}{
		{"https://status.example.com/", "https://status.example.com/x", true},
		{"https://status.example.com", "https://status.example.com/", true},
		{"https://STATUS.example.com:443/", "https://status.example.com/a", true},
		{"https://status.example.com/api", "https://status.example.com/api", true},
		{"https://status.example.com/api", "https://status.example.com/api/v2", true},
		{"https://status.example.com/api", "https://status.example.com/apis", false},
		{"https://status.example.com/", "http://status.example.com/", false},
		{"https://status.example.com/", "https://status.example.com.evil.test/", false},
		{"https://status.example.com/", "https://status.example.com:8443/", false},
		{"http://127.0.0.1:9090/api/", "http://127.0.0.1:9090/api/v1/query", true},
	}
	for _, tt := range tests {
		p, err := parsePrefix(tt.prefix)
		if err != nil {
			t.Fatalf("parsePrefix(%q): %v", tt.prefix, err)
		}
		u := mustURL(t, tt.url)
		if got := checkURL([]urlPrefix{p}, u) == nil; got != tt.want {
			t.Errorf("prefix %q allows %q = %v, want %v", tt.prefix, tt.url, got, tt.want)
		}
	}
}

// recall serves the task's memory: newest first, filtered, bounded.
func TestRecall(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 11, d, 10, 0, 0, 0, time.UTC) }
	mem := []Outcome{
		{RunID: "aaaaaaaaaaaa", Time: day(10), Summary: "Raise CACHE_TTL to 120s", Files: []string{"config/payments-api.env"}, Outcome: OutcomeRejected, Detail: "closed without merge (branch deleted)", Rationale: "Latency\nfrom cache misses."},
		{RunID: "bbbbbbbbbbbb", Time: day(12), Summary: "Scale payments-api to 4 replicas", Files: []string{"deploy/staging/payments-api.yaml"}, Outcome: OutcomeMerged, Detail: "merged by rita"},
		{RunID: "cccccccccccc", Time: day(11), Summary: "Disable the cache", Outcome: OutcomeDenied, Detail: "denied by protect-prod/no-cache: the cache must stay on"},
	}
	a := loopAgent(hclspec.ToolRecall)
	const note = "Past proposals of agent bumper, newest first. A rejected, denied or reverted idea should not be proposed again in other words."
	tests := []struct {
		name, args, want string
		wantErr          bool
	}{
		{"all newest first", `{}`, `{"agent":"bumper","matched":3,"shown":3,"note":"` + note + `","proposals":[` +
			`{"run_id":"bbbbbbbbbbbb","outcome":"merged","time":"2026-11-12T10:00:00Z","summary":"Scale payments-api to 4 replicas","files":["deploy/staging/payments-api.yaml"],"detail":"merged by rita"},` +
			`{"run_id":"cccccccccccc","outcome":"denied","time":"2026-11-11T10:00:00Z","summary":"Disable the cache","detail":"denied by protect-prod/no-cache: the cache must stay on"},` +
			`{"run_id":"aaaaaaaaaaaa","outcome":"rejected","time":"2026-11-10T10:00:00Z","summary":"Raise CACHE_TTL to 120s","files":["config/payments-api.env"],"detail":"closed without merge (branch deleted)","rationale":"Latency from cache misses."}]}`, false},
		{"query", `{"query":"cache_ttl REJECTED"}`, `{"agent":"bumper","query":"cache_ttl REJECTED","matched":1,"shown":1,"note":"` + note + `","proposals":[{"run_id":"aaaaaaaaaaaa",...`, false},
		{"query misses", `{"query":"replicas rejected"}`, `{"agent":"bumper","query":"replicas rejected","matched":0,"shown":0,"note":"none of the 3 past proposals of agent bumper match the query","proposals":[]}`, false},
		{"limit", `{"limit":1}`, `{"agent":"bumper","matched":3,"shown":1,"note":"` + note + `","more":"the newest 1 of 3 shown; raise limit (at most 50) or narrow the query","proposals":[` +
			`{"run_id":"bbbbbbbbbbbb","outcome":"merged","time":"2026-11-12T10:00:00Z","summary":"Scale payments-api to 4 replicas","files":["deploy/staging/payments-api.yaml"],"detail":"merged by rita"}]}`, false},
		{"bad limit", `{"limit":0}`, "error: limit must be from 1 to 50, got 0", true},
		{"long query", fmt.Sprintf(`{"query":%q}`, strings.Repeat("x", 300)), "error: the query is 300 bytes; the limit is 200", true},
		{"unknown argument", `{"agent":"other"}`, "error: invalid arguments for recall...", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := senseToolbox(t, a, mem...).run(context.Background(), hclspec.ToolRecall, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			wantResult(t, res, tt.want, tt.wantErr)
		})
	}
	t.Run("nothing recorded", func(t *testing.T) {
		res, _ := senseToolbox(t, a).run(context.Background(), hclspec.ToolRecall, `{}`)
		wantResult(t, res, `{"agent":"bumper","matched":0,"shown":0,"note":"no past proposals of agent bumper are recorded","proposals":[]}`, false)
	})
}

// A run that used http_get and recall replays from its transcript
// alone: the status server is gone and the task's memory empty, and the
// replay still sees what the run saw.
func TestPerceptionReplay(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "payments-api: degraded since %d", hits.Load())
	}))
	a := loopAgent(hclspec.ToolHTTPGet, hclspec.ToolRecall, "write_file")
	a.Perception.HTTPAllow = []string{srv.URL + "/"}
	dir := t.TempDir()
	task := loopTask(a, dir)
	task.Memory = []Outcome{{RunID: "aaaaaaaaaaaa", Time: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC), Summary: "Raise CACHE_TTL", Outcome: OutcomeRejected, Detail: "closed without merge"}}
	script := &loopScript{responses: []openai.ChatCompletionResponse{
		loopTools(loopCall{hclspec.ToolHTTPGet, fmt.Sprintf(`{"url":%q}`, srv.URL+"/status")}, loopCall{hclspec.ToolRecall, `{}`}),
		loopTools(loopCall{"write_file", `{"path":"services/api/note.txt","content":"degraded"}`}),
		loopFinish(),
	}}
	res, err := loopRunner(script).Run(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ParseTranscript(res.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	calls := tr.Steps[0].ToolCalls
	if len(calls) != 2 || !strings.Contains(calls[0].Result, "payments-api: degraded since 1") || !strings.Contains(calls[1].Result, `{"run_id":"aaaaaaaaaaaa","outcome":"rejected"`) {
		t.Fatalf("recorded calls = %+v", calls)
	}
	// What the model saw is what the transcript holds.
	if got := script.requests[1].Messages[3].Content; got != calls[0].Result {
		t.Errorf("the model saw %q, the transcript records %q", got, calls[0].Result)
	}
	srv.Close()
	before := hits.Load()

	replayDir := t.TempDir()
	rt := loopTask(a, replayDir) // no memory: replay takes the transcript's
	rep, err := Replay(context.Background(), rt, res.Transcript)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if hits.Load() != before {
		t.Errorf("the replay reached the status server")
	}
	rtr, err := ParseTranscript(rep.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	for j, c := range rtr.Steps[0].ToolCalls {
		if c.Result != calls[j].Result || c.Error != calls[j].Error {
			t.Errorf("replayed call %d = %q, recorded %q", j, c.Result, calls[j].Result)
		}
	}
	if got := snapshotTree(t, replayDir)["services/api/note.txt"]; got != "degraded" {
		t.Errorf("replayed tree note = %q", got)
	}
}

// Whatever URL the model sends, http_get fetches it only when it stays
// under the prefix, also as a server that resolves "." and ".." and
// decodes escapes would read its path.
func FuzzHTTPAllow(f *testing.F) {
	for _, s := range []string{"https://status.example.com/api/v2/status.json", "https://status.example.com/api/../admin", "https://status.example.com/api/%2e%2e/admin",
		"https://status.example.com.evil.test/api/", "https://STATUS.example.com:443/api/x", "https://u@status.example.com/api/", "https://status.example.com//api/", "https://status.example.com/api/a/./b"} {
		f.Add(s)
	}
	p, err := parsePrefix("https://status.example.com/api/")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil || checkURL([]urlPrefix{p}, u) != nil {
			return
		}
		if u.Scheme != "https" || !strings.EqualFold(u.Hostname(), "status.example.com") || (u.Port() != "" && u.Port() != "443") || u.User != nil {
			t.Fatalf("%q allowed: another scheme, host, port or credentials", raw)
		}
		if !strings.HasPrefix(path.Clean(u.Path)+"/", "/api/") || !strings.HasPrefix(u.Path, "/api/") {
			t.Fatalf("%q allowed: its path %q leaves /api/", raw, u.Path)
		}
	})
}
