package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/hclspec"
)

// modelServer is an OpenAI-compatible chat-completions server on
// 127.0.0.1 (a hosted model cannot run here): each model named in a
// request gets the next of its scripted replies, and the server counts
// the requests per model and keeps their bodies.
type modelServer struct {
	srv *httptest.Server

	mu       sync.Mutex
	script   map[string][]reply
	requests map[string]int
	bodies   [][]byte
}

// reply is a scripted answer: an HTTP error status with a body in the
// OpenAI error format, or a chat completion.
type reply struct {
	status int
	resp   openai.ChatCompletionResponse
}

func newModelServer(t *testing.T, script map[string][]reply) *modelServer {
	t.Helper()
	s := &modelServer{script: script, requests: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req openai.ChatCompletionRequest
		if r.URL.Path != "/v1/chat/completions" || json.Unmarshal(body, &req) != nil {
			http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		n := s.requests[req.Model]
		s.requests[req.Model]++
		s.bodies = append(s.bodies, body)
		replies := s.script[req.Model]
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n >= len(replies) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":"model %s has no reply %d scripted","type":"invalid_request_error"}}`, req.Model, n+1)
			return
		}
		rp := replies[n]
		if rp.status != 0 {
			w.WriteHeader(rp.status)
			fmt.Fprintf(w, `{"error":{"message":"scripted failure of %s","type":"invalid_request_error","code":"scripted"}}`, req.Model)
			return
		}
		json.NewEncoder(w).Encode(rp.resp)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *modelServer) count(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[model]
}

func (s *modelServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

// calls is a reply calling tools, of 100 prompt and 10 completion tokens.
func calls(c ...loopCall) reply { return reply{resp: loopTools(c...)} }

func finishWith(risk string) reply {
	return calls(loopCall{"finish", fmt.Sprintf(`{"summary":"Bump api","rationale":"Because.","risk":%q}`, risk)})
}

func writeTo(path, content string) loopCall {
	b, _ := json.Marshal(map[string]string{"path": path, "content": content})
	return loopCall{"write_file", string(b)}
}

var failure = reply{status: http.StatusBadRequest}

// tieredAgent is the loop's agent on srv with models small and large,
// both priced, escalating as on says.
func tieredAgent(srv *modelServer, esc *hclspec.Escalate) *hclspec.Agent {
	a := loopAgent()
	a.Provider = &hclspec.Provider{Kind: hclspec.ProviderOpenAI, Name: "default", BaseURL: srv.srv.URL + "/v1", APIKeyEnv: loopKeyEnv,
		Prices: map[string]hclspec.Price{"small": {InputPerMTok: 1, OutputPerMTok: 2}, "large": {InputPerMTok: 10, OutputPerMTok: 30}}}
	a.Models, a.Model, a.Escalate = []string{"small", "large"}, "small", esc
	return a
}

const tierKey = "sk-tier-test-0123456789abcdefghij"

// httpRunner runs against the server through a real Provider (no
// retries: a scripted 400 is final) with the key in loopKeyEnv.
func httpRunner(cache *ResponseCache) *OpenAI {
	lookup := func(name string) (string, bool) {
		if name == loopKeyEnv {
			return tierKey, true
		}
		return "", false
	}
	return &OpenAI{
		NewModel: func(p *hclspec.Provider) (Model, error) {
			return NewProvider(p, ProviderOptions{LookupEnv: lookup, MaxRetries: -1})
		},
		LookupEnv: lookup,
		Now:       loopClock,
		Cache:     cache,
	}
}

func onAll() *hclspec.Escalate {
	return &hclspec.Escalate{On: []string{"failure", "step_limit", "risk"}, RiskAtLeast: "high"}
}

func attemptsOf(res Result) string {
	var out []string
	for _, a := range res.Attempts {
		s := a.Model + ":" + a.Outcome
		if a.Reason != "" {
			s += ":" + a.Reason
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// A run escalates on each of the three conditions, each attempt from the
// spec commit's tree, and the large model's attempt makes the result.
func TestTiersEscalate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		small    []reply
		maxSteps int
	}{
		// The small model writes a file, then its provider fails.
		{"failure", []reply{calls(writeTo("services/small.txt", "small was here")), failure}, 0},
		// It writes, then lists until max_steps.
		{"step_limit", []reply{calls(writeTo("services/small.txt", "small was here")), calls(loopCall{"list_files", "{}"})}, 2},
		// It writes and finishes, at high risk.
		{"risk", []reply{calls(writeTo("services/small.txt", "small was here")), finishWith("high")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newModelServer(t, map[string][]reply{
				"small": tc.small,
				"large": {calls(writeTo("services/large.txt", "large fixed it")), finishWith("low")},
			})
			a := tieredAgent(srv, &hclspec.Escalate{On: []string{tc.name}, RiskAtLeast: map[bool]string{true: "high"}[tc.name == "risk"]})
			if tc.maxSteps > 0 {
				a.Limits.MaxSteps = tc.maxSteps
			}
			dir := t.TempDir()
			seedTree(t, dir, map[string]string{"services/api.yaml": "image: api:1.2.2\n"})
			res, err := httpRunner(nil).Run(context.Background(), loopTask(a, dir))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if want := "small:escalated:" + tc.name + " large:finished"; attemptsOf(res) != want {
				t.Errorf("attempts %q, want %q", attemptsOf(res), want)
			}
			if res.Model != "large" || res.Risk != "low" || res.Summary != "Bump api" {
				t.Errorf("Result model %q risk %q summary %q, want the large model's", res.Model, res.Risk, res.Summary)
			}
			// The small model's write is gone: the large one started from
			// the spec commit's tree.
			want := map[string]string{"services/api.yaml": "image: api:1.2.2\n", "services/large.txt": "large fixed it"}
			if diff := cmp.Diff(want, snapshotTree(t, dir)); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
			smallCalls := srv.count("small")
			small := Usage{InputTokens: 100 * int64(min(smallCalls, 2)), OutputTokens: 10 * int64(min(smallCalls, 2))}
			if tc.name == "failure" {
				small = Usage{InputTokens: 100, OutputTokens: 10} // the failed call reports nothing
			}
			large := Usage{InputTokens: 200, OutputTokens: 20}
			if res.Attempts[0].Usage != small || res.Attempts[1].Usage != large {
				t.Errorf("attempt usage %+v, %+v; want %+v, %+v", res.Attempts[0].Usage, res.Attempts[1].Usage, small, large)
			}
			if sum := (Usage{small.InputTokens + large.InputTokens, small.OutputTokens + large.OutputTokens}); res.Usage != sum {
				t.Errorf("Usage %+v, want the sum %+v", res.Usage, sum)
			}
			// Each attempt at its own model's price.
			wantCost := (float64(small.InputTokens)*1+float64(small.OutputTokens)*2)/1e6 + (float64(large.InputTokens)*10+float64(large.OutputTokens)*30)/1e6
			if got := res.Cost(a); math.Abs(got-wantCost) > 1e-12 {
				t.Errorf("Cost = %v, want %v", got, wantCost)
			}
			tr, err := ParseTranscript(res.Transcript)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Attempts) != 1 || tr.Attempts[0].Model != "small" || tr.Attempts[0].Escalated != tc.name || tr.Model != "large" || tr.Result == nil {
				t.Fatalf("transcript: attempts %+v, model %q, result %+v", tr.Attempts, tr.Model, tr.Result)
			}
			if tr.Usage.InputTokens != res.Usage.InputTokens || tr.Attempts[0].Usage.InputTokens != small.InputTokens {
				t.Errorf("transcript usage %+v, attempt %+v", tr.Usage, tr.Attempts[0].Usage)
			}
			if (tr.Attempts[0].Error != "") != (tc.name != "risk") {
				t.Errorf("attempt error %q for %s", tr.Attempts[0].Error, tc.name)
			}
			if tc.name == "risk" && (tr.Attempts[0].Result == nil || tr.Attempts[0].Result.Risk != "high") {
				t.Errorf("attempt result %+v, want its high risk", tr.Attempts[0].Result)
			}
		})
	}
}

// Without an escalate block, or on a condition the block leaves out, the
// first model's outcome stands and the second is never asked; the last
// model's outcome stands whatever its risk.
func TestTiersNoEscalation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		esc     *hclspec.Escalate
		small   []reply
		large   []reply
		wantErr string
		want    string
		risk    string
	}{
		{"not configured", nil, []reply{failure}, nil, "scripted failure of small", "", ""},
		{"not on failure", &hclspec.Escalate{On: []string{"risk"}, RiskAtLeast: "high"}, []reply{failure}, nil, "scripted failure of small", "small:failed", ""},
		{"not on step_limit", &hclspec.Escalate{On: []string{"failure"}}, []reply{calls(loopCall{"list_files", "{}"})}, nil, "step limit reached", "small:failed", ""},
		{"risk below", onAll(), []reply{finishWith("medium")}, nil, "", "small:finished", "medium"},
		{"last stands", onAll(), []reply{finishWith("high")}, []reply{finishWith("high")}, "", "small:escalated:risk large:finished", "high"},
		{"last fails", onAll(), []reply{failure}, []reply{failure}, "scripted failure of large", "small:escalated:failure large:failed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newModelServer(t, map[string][]reply{"small": tc.small, "large": tc.large})
			a := tieredAgent(srv, tc.esc)
			a.Limits.MaxSteps = 1
			res, err := httpRunner(nil).Run(context.Background(), loopTask(a, t.TempDir()))
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if got := attemptsOf(res); got != tc.want {
				t.Errorf("attempts %q, want %q", got, tc.want)
			}
			if tc.large == nil && srv.count("large") != 0 {
				t.Errorf("the large model was asked %d times", srv.count("large"))
			}
			if res.Risk != tc.risk {
				t.Errorf("risk %q, want %q", res.Risk, tc.risk)
			}
		})
	}
}

// max_tokens spans the attempts: an attempt that reaches it ends the run
// with the limit error, and does not escalate.
func TestTiersTokenBudget(t *testing.T) {
	list := calls(loopCall{"list_files", "{}"})
	for _, tc := range []struct {
		name       string
		maxTokens  int
		small      []reply
		wantSmall  int
		wantLarge  int
		wantTokens int64
		want       string
	}{
		// 110 tokens a call: the small model's two calls and its failure
		// leave 30 of 250; the large model's first call passes them.
		{"large passes the limit", 250, []reply{list, list, failure}, 3, 1, 330, "small:escalated:failure large:failed"},
		// The small model reaches the limit itself: no escalation.
		{"small reaches the limit", 200, []reply{list, list, list}, 2, 0, 220, "small:failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newModelServer(t, map[string][]reply{"small": tc.small, "large": {list, list, finishWith("low")}})
			a := tieredAgent(srv, onAll())
			task := loopTask(a, t.TempDir())
			task.MaxTokens = tc.maxTokens
			res, err := httpRunner(nil).Run(context.Background(), task)
			if !errors.Is(err, ErrTokenLimit) {
				t.Fatalf("err = %v, want the token limit", err)
			}
			if want := fmt.Sprintf("%d tokens used, the limit is %d", tc.wantTokens, tc.maxTokens); !strings.Contains(err.Error(), want) {
				t.Errorf("err %q does not say %q", err, want)
			}
			if srv.count("small") != tc.wantSmall || srv.count("large") != tc.wantLarge {
				t.Errorf("requests small %d, large %d; want %d, %d", srv.count("small"), srv.count("large"), tc.wantSmall, tc.wantLarge)
			}
			if got := res.Usage.InputTokens + res.Usage.OutputTokens; got != tc.wantTokens {
				t.Errorf("usage %d tokens, want %d", got, tc.wantTokens)
			}
			if attemptsOf(res) != tc.want {
				t.Errorf("attempts %q, want %q", attemptsOf(res), tc.want)
			}
		})
	}
}

// A two-attempt run replays from its transcript: the same tree, result,
// attempts and usage; a transcript whose attempts were edited does not.
func TestTiersReplay(t *testing.T) {
	srv := newModelServer(t, map[string][]reply{
		"small": {calls(writeTo("services/small.txt", "small was here")), failure},
		"large": {calls(writeTo("services/large.txt", "large fixed it"), loopCall{"read_file", `{"path":"services/api.yaml"}`}), finishWith("low")},
	})
	a := tieredAgent(srv, onAll())
	seed := map[string]string{"services/api.yaml": "image: api:1.2.2\n"}
	dir := t.TempDir()
	seedTree(t, dir, seed)
	res, err := httpRunner(nil).Run(context.Background(), loopTask(a, dir))
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotTree(t, dir)
	asked := srv.total()

	replayDir := t.TempDir()
	seedTree(t, replayDir, seed)
	rep, err := Replay(context.Background(), loopTask(a, replayDir), res.Transcript)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if srv.total() != asked {
		t.Errorf("the replay asked the server %d times", srv.total()-asked)
	}
	if diff := cmp.Diff(want, snapshotTree(t, replayDir)); diff != "" {
		t.Errorf("replayed tree (-recorded +replayed):\n%s", diff)
	}
	if rep.Model != res.Model || rep.Summary != res.Summary || rep.Risk != res.Risk || rep.Usage != res.Usage || attemptsOf(rep) != attemptsOf(res) {
		t.Errorf("replay %+v\nrecorded %+v", rep, res)
	}
	rt, err := ParseTranscript(rep.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.Attempts) != 1 || rt.Attempts[0].Escalated != "failure" || len(rt.Attempts[0].Steps) != 2 {
		t.Errorf("replay's transcript attempts %+v", rt.Attempts)
	}

	tamper := func(f func(*Transcript)) []byte {
		tr, err := ParseTranscript(res.Transcript)
		if err != nil {
			t.Fatal(err)
		}
		f(tr)
		b, _ := tr.Marshal()
		return b
	}
	for _, tc := range []struct {
		name string
		tr   []byte
		want string
	}{
		{"escalated on another condition", tamper(func(tr *Transcript) { tr.Attempts[0].Escalated = "risk" }), `escalates on "failure", the transcript records "risk"`},
		{"another model", tamper(func(tr *Transcript) { tr.Attempts[0].Model = "medium" }), `recorded with model "medium"`},
		{"more attempts than models", tamper(func(tr *Transcript) { tr.Attempts = append(tr.Attempts, tr.Attempts[0]) }), "records 3 attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			seedTree(t, d, seed)
			_, err := Replay(context.Background(), loopTask(a, d), tc.tr)
			if !errors.Is(err, ErrTranscript) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrTranscript saying %q", err, tc.want)
			}
		})
	}
}

// Tiers that do not escalate leave the transcript as a one-model run's:
// no attempts recorded, and it replays as one.
func TestTiersFirstStands(t *testing.T) {
	srv := newModelServer(t, map[string][]reply{"small": {finishWith("low")}})
	a := tieredAgent(srv, onAll())
	res, err := httpRunner(nil).Run(context.Background(), loopTask(a, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := ParseTranscript(res.Transcript)
	if len(tr.Attempts) != 0 || tr.Model != "small" || attemptsOf(res) != "small:finished" {
		t.Errorf("transcript attempts %d model %q; result attempts %q", len(tr.Attempts), tr.Model, attemptsOf(res))
	}
	if _, err := Replay(context.Background(), loopTask(a, t.TempDir()), res.Transcript); err != nil {
		t.Errorf("Replay: %v", err)
	}
}

// The workspace snapshot keeps modes and symbolic links, and restoring it
// removes what the attempt added.
func TestSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	seedTree(t, dir, map[string]string{"services/a.txt": "a", "services/deep/b.sh": "#!/bin/sh\n"})
	if err := os.Chmod(dir+"/services/deep/b.sh", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", dir+"/services/link"); err != nil {
		t.Fatal(err)
	}
	want := snapshotTree(t, dir)
	snap, err := snapshotDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(snap)
	seedTree(t, dir, map[string]string{"services/a.txt": "changed", "services/new/c.txt": "new"})
	os.Remove(dir + "/services/link")
	if err := restoreDir(snap, dir); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, snapshotTree(t, dir)); diff != "" {
		t.Errorf("restored tree (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(dir + "/services/deep/b.sh"); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, %v; want 0755", fi.Mode(), err)
	}
}

// escalation never hands over a run whose own limits (tokens, timeout,
// transcript) or context ended it.
func TestEscalationConditions(t *testing.T) {
	e := onAll()
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		res  Result
		err  error
		want string
	}{
		{"finished low", ctx, Result{Risk: "low"}, nil, ""},
		{"finished high", ctx, Result{Risk: "high"}, nil, "risk"},
		{"model error", ctx, Result{}, errors.New("provider: 400"), "failure"},
		{"work limit", ctx, Result{}, limitErrorf("max_tool_calls", 5, "x"), "failure"},
		{"step limit", ctx, Result{}, fmt.Errorf("run x: %w", ErrStepLimit), "step_limit"},
		{"token limit", ctx, Result{}, fmt.Errorf("run x: %w", ErrTokenLimit), ""},
		{"timeout", ctx, Result{}, fmt.Errorf("run x: %w after 1m", ErrTimeout), ""},
		{"transcript limit", ctx, Result{}, limitErrorf("max_transcript_bytes", 5, "x"), ""},
		{"cancelled", cancelled, Result{}, errors.New("run cancelled"), ""},
	} {
		if got := escalation(tc.ctx, e, tc.res, tc.err); got != tc.want {
			t.Errorf("%s: escalation = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := escalation(ctx, nil, Result{Risk: "high"}, errors.New("x")); got != "" {
		t.Errorf("nil block escalates on %q", got)
	}
}
