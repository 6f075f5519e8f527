package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// scripted stands in for a hosted model, which cannot run here: it answers
// each request with the next recorded response.
type scripted struct {
	mu        sync.Mutex
	responses []openai.ChatCompletionResponse
	requests  []openai.ChatCompletionRequest
}

func (s *scripted) CreateChatCompletion(_ context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	if len(s.responses) == 0 {
		return openai.ChatCompletionResponse{}, errors.New("script exhausted")
	}
	r := s.responses[0]
	s.responses = s.responses[1:]
	return r, nil
}

func toolCall(id, name, args string, in, out int) openai.ChatCompletionResponse {
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

// incidentScript is the conversation of the example's incident-responder:
// it reads the config, raises the cache TTL and finishes.
func incidentScript() *scripted {
	return &scripted{responses: []openai.ChatCompletionResponse{
		toolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 900, 30),
		toolCall("2", "edit_file", `{"path":"config/payments-api.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=120s"}`, 1100, 60),
		toolCall("3", "finish", `{"summary":"Raise payments-api CACHE_TTL to 120s","rationale":"p99 latency follows cache misses; a 30s TTL expires hot keys between bursts.","risk":"low"}`, 1200, 70),
	}}
}

func TestModelAgentProposalTranscriptAndReplay(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		os.Remove(filepath.Join(dir, "agents/env-normaliser.hcl"))
		// Run the example's model agent on spec change (its alert trigger
		// is driven by a webhook).
		p := filepath.Join(dir, "agents/incident-responder.hcl")
		b, _ := os.ReadFile(p)
		src := strings.Replace(string(b), "trigger {\n    on_alert {", "trigger {\n    on_spec_change = true\n  }\n  trigger {\n    on_alert {", 1)
		os.WriteFile(p, []byte(src), 0o644)
	})
	t.Setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnopqrstuvwxyz012345")
	model := incidentScript()
	runner := &agent.OpenAI{NewModel: func(*hclspec.Provider) (agent.Model, error) { return model, nil }}
	r := e.reconcilerWith(map[string]agent.Runner{"openai": runner})
	e.pass(r)

	es := e.entries()
	fin, ok := find(es, ledger.RunFinished, "incident-responder")
	if !ok {
		t.Fatalf("no run.finished: %q", e.events())
	}
	if fin.Usage == nil || fin.Usage.InputTokens != 3200 || fin.Usage.OutputTokens != 160 || fin.Model != "gpt-4o-mini" {
		t.Errorf("usage = %+v model %q", fin.Usage, fin.Model)
	}
	if want := (3200*0.15 + 160*0.60) / 1e6; fmt.Sprintf("%.8f", fin.CostUSD) != fmt.Sprintf("%.8f", want) {
		t.Errorf("cost = %v, want %v", fin.CostUSD, want)
	}
	opened, ok := find(es, ledger.ProposalOpened, "incident-responder")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	diff := e.git("", "--git-dir", e.bare, "diff", "main", opened.Proposal.Branch)
	if !strings.Contains(diff, "-CACHE_TTL=30s") || !strings.Contains(diff, "+CACHE_TTL=120s") {
		t.Errorf("proposal diff:\n%s", diff)
	}
	msg := e.git("", "--git-dir", e.bare, "log", "-1", "--format=%B", opened.Proposal.Branch)
	if !strings.HasPrefix(msg, "Raise payments-api CACHE_TTL to 120s") || !strings.Contains(msg, "Risk (the agent's own assessment): low") {
		t.Errorf("proposal message:\n%s", msg)
	}

	// The transcript is on the evidence branch, verified by the digest
	// the entry signed, and holds no secret.
	repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	transcript, entry, err := ledger.New(repo, ledger.Options{}).Transcript(context.Background(), fin.RunID)
	if err != nil || entry.Seq != fin.Seq {
		t.Fatalf("transcript: %v (entry %d, want %d)", err, entry.Seq, fin.Seq)
	}
	if strings.Contains(string(transcript), "sk-test-abcdefghijklmnopqrstuvwxyz012345") {
		t.Error("the API key is in the transcript")
	}
	if !strings.Contains(string(transcript), "CACHE_TTL=120s") {
		t.Error("the transcript lacks the tool call")
	}
	e.verify()

	// Replay reproduces the proposal's tree; a run that diverges is
	// reported with the differing paths.
	rep, err := r.Replay(context.Background(), fin.RunID, agent.Replay)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Match() || rep.Err != nil {
		t.Fatalf("replay = %+v", rep)
	}
	diverging := func(ctx context.Context, task agent.Task, tr []byte) (agent.Result, error) {
		res, err := agent.Replay(ctx, task, tr)
		os.WriteFile(filepath.Join(task.Dir, "deploy/staging/extra.yaml"), []byte("x: 1\n"), 0o644)
		return res, err
	}
	rep, err = r.Replay(context.Background(), fin.RunID, diverging)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Match() || len(rep.Differ) != 1 || rep.Differ[0] != "deploy/staging/extra.yaml" {
		t.Errorf("diverging replay = %+v", rep)
	}
}

func TestModelAgentLimitFailsTheRun(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		onlyAgent(dir, "looper", `agent "looper" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Look around."
  tools    = ["list_files", "read_file"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
  limits {
    max_steps = 2
  }
}
`)
	})
	model := &scripted{}
	for i := range 5 {
		model.responses = append(model.responses, toolCall(fmt.Sprint(i), "list_files", `{}`, 100, 10))
	}
	r := e.reconcilerWith(map[string]agent.Runner{"openai": &agent.OpenAI{NewModel: func(*hclspec.Provider) (agent.Model, error) { return model, nil }}})
	if err := r.Reconcile(context.Background()); err == nil {
		t.Fatal("a run past its step limit did not fail")
	}
	failed, ok := find(e.entries(), ledger.RunFailed, "looper")
	if !ok || !strings.Contains(failed.Error, "step") || failed.TranscriptDigest == "" || failed.Usage == nil {
		t.Fatalf("run.failed = %+v", failed.Predicate)
	}
	if b := e.branches(); len(b) != 0 {
		t.Errorf("a failed run proposed %v", b)
	}
	e.verify()
}
