package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/signing"
)

// oneShot is a recorded model reply sequence; a hosted model cannot run
// here.
type oneShot []openai.ChatCompletionResponse

func (o *oneShot) CreateChatCompletion(context.Context, openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	r := (*o)[0]
	*o = (*o)[1:]
	return r, nil
}

func call(name, args string) openai.ChatCompletionResponse {
	return openai.ChatCompletionResponse{Model: "gpt-4o-mini", Choices: []openai.ChatCompletionChoice{{
		Message: openai.ChatCompletionMessage{Role: "assistant", ToolCalls: []openai.ToolCall{{
			ID: "call_" + name, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args}}}},
		FinishReason: openai.FinishReasonToolCalls}}, Usage: openai.Usage{PromptTokens: 500, CompletionTokens: 20}}
}

func TestReplayCommand(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "agents"), 0o755)
	os.MkdirAll(filepath.Join(src, "config"), 0o755)
	os.WriteFile(filepath.Join(src, "providers.hcl"), []byte(`provider "openai" "default" {
  price "gpt-4o-mini" {
    input_per_mtok  = 0.15
    output_per_mtok = 0.60
  }
}
`), 0o644)
	os.WriteFile(filepath.Join(src, "agents/tuner.hcl"), []byte(`agent "tuner" {
  provider = provider.openai.default
  model    = "gpt-4o-mini"
  prompt   = "Tune."
  tools    = ["edit_file"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
}
`), 0o644)
	os.WriteFile(filepath.Join(src, "config/app.env"), []byte("TTL=30s\n"), 0o644)
	bare := gittest.NewBare(t, src)
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	model := &oneShot{call("edit_file", `{"path":"config/app.env","old_text":"TTL=30s","new_text":"TTL=60s"}`),
		call("finish", `{"summary":"Raise TTL","rationale":"misses","risk":"low"}`)}
	r, err := reconcile.New(context.Background(), reconcile.Config{Repo: bare, Signer: signer,
		Identity: object.Signature{Name: "R", Email: "r@example.com"},
		Runners:  map[string]agent.Runner{"openai": &agent.OpenAI{NewModel: func(*hclspec.Provider) (agent.Model, error) { return model, nil }}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	es, _ := r.Ledger().Entries(context.Background())
	var runID string
	for _, e := range es {
		if e.Type == ledger.ProposalOpened {
			runID = e.RunID
		}
	}
	if runID == "" {
		t.Fatal("no proposal")
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"replay", "--repo", bare, runID}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "replay OK") {
		t.Fatalf("replay exit %d: %s %s", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"replay", "--repo", bare, "000000000000"}, &out, &errb); code != exitFail || !strings.Contains(errb.String(), "no transcript") {
		t.Errorf("replay of an unknown run: exit %d, %s", code, errb.String())
	}
	if code := run(context.Background(), []string{"replay", "--repo", bare}, &out, &errb); code != exitUsage {
		t.Errorf("replay without RUN_ID: exit %d", code)
	}
}
