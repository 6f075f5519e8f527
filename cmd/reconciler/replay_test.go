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
	"github.com/agentgitops/reconciler/sandbox"
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
	// The run id before or after --repo: the same replay.
	for _, args := range [][]string{{"replay", "--repo", bare, runID}, {"replay", runID, "--repo", bare}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != exitOK || !strings.Contains(out.String(), "replay OK") {
			t.Fatalf("%q: exit %d: %s %s", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"replay", "000000000000", "--repo", bare}, &out, &errb); code != exitFail ||
		!strings.Contains(errb.String(), `run "000000000000" not found on agent-evidence`) {
		t.Errorf("replay of an unknown run: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"replay", "--repo", bare}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "one RUN_ID, got 0") {
		t.Errorf("replay without RUN_ID: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"replay", runID}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "--repo is required") {
		t.Errorf("replay without --repo: exit %d, %s", code, errb.String())
	}
}

// An exec run has no transcript: replay says so and how to reproduce it,
// rather than "not found".
func TestReplayExecRun(t *testing.T) {
	bare := gittest.NewBare(t, "../../examples/repo-layout")
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := reconcile.New(context.Background(), reconcile.Config{Repo: bare, Signer: signer,
		Identity: object.Signature{Name: "R", Email: "r@example.com"},
		Runners:  runners(sandbox.Config{Mode: sandbox.Permissive})})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	var runID string
	for _, rn := range r.Ledger().State().Runs {
		if rn.Agent == "env-normaliser" && rn.Finished != nil {
			runID = rn.ID
		}
	}
	if runID == "" {
		t.Fatal("env-normaliser did not run")
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"replay", runID, "--repo", bare}, &out, &errb)
	if code != exitFail || !strings.Contains(errb.String(), "run "+runID+` of agent "env-normaliser" is an exec run: exec runs have no model transcript`) ||
		!strings.Contains(errb.String(), "running the agent's command again") || strings.Contains(errb.String(), "not found") {
		t.Errorf("replay of an exec run: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
