package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
)

// An agent's recall shows its own past proposals as the ledger records
// them: the incident responder's first proposal is closed without merge,
// and its next run (after a spec change) recalls that, with the run's
// summary, files and why, but nothing of the env normaliser, whose
// proposal was rejected too. What it recalled is in the transcript, and
// the replay reproduces it from there. The model is scripted (a hosted
// model cannot run here).
func TestRecallSeesItsOwnRejectedProposal(t *testing.T) {
	e := newEnv(t, false, func(dir string) {
		os.Remove(filepath.Join(dir, "agents/image-pinner.hcl"))
		p := filepath.Join(dir, "agents/incident-responder.hcl")
		b, _ := os.ReadFile(p)
		src := strings.Replace(string(b), "trigger {\n    on_alert {", "trigger {\n    on_spec_change = true\n  }\n  trigger {\n    on_alert {", 1)
		src = strings.Replace(src, `"finish"]`, `"recall", "finish"]`, 1)
		os.WriteFile(p, []byte(src), 0o644)
	})
	t.Setenv("OPENAI_API_KEY", "sk-test-abcdefghijklmnopqrstuvwxyz012345")
	model := incidentScript()
	runner := &agent.OpenAI{NewModel: func(*hclspec.Provider) (agent.Model, error) { return model, nil }}
	runners := map[string]agent.Runner{hclspec.ProviderOpenAI: runner, hclspec.ProviderExec: agent.Exec{}}
	r := e.reconcilerWith(runners)
	e.pass(r)
	es := e.entries()
	first, ok := find(es, ledger.ProposalOpened, "incident-responder")
	if !ok {
		t.Fatalf("no incident-responder proposal: %q", e.events())
	}
	other, ok := find(es, ledger.ProposalOpened, "env-normaliser")
	if !ok {
		t.Fatalf("no env-normaliser proposal: %q", e.events())
	}

	// Reviewers close both without merge: rejected.
	for _, b := range []string{first.Proposal.Branch, other.Proposal.Branch} {
		e.git("", "--git-dir", e.bare, "branch", "-D", b)
	}
	e.pass(r)
	if n := count(e.entries(), ledger.ProposalRejected); n != 2 {
		t.Fatalf("%d proposal.rejected, want 2: %q", n, e.events())
	}

	// The prompt changes: the incident responder runs again and recalls.
	e.commitAs("Platform Team", "platform@example.com", "incident prompt: mention recall", func(work string) {
		p := filepath.Join(work, "prompts/incident-responder.md")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, append(b, []byte("\nBefore you change anything, call recall: do not propose again what reviewers rejected.\n")...), 0o644)
	})
	second := &scripted{responses: []openai.ChatCompletionResponse{
		toolCall("r1", "recall", `{}`, 900, 20),
		toolCall("r2", "recall", `{"query":"CACHE_TTL rejected"}`, 1000, 20),
		toolCall("r3", "finish", `{"summary":"No change: raising CACHE_TTL was rejected","rationale":"recall shows the 120s TTL proposal was closed without merge.","risk":"low"}`, 1100, 40),
	}}
	model.mu.Lock()
	model.responses = second.responses
	model.requests = nil
	model.mu.Unlock()
	e.pass(r)

	es = e.entries()
	var fin ledger.Entry
	for _, en := range es {
		if en.Type == ledger.RunFinished && en.Agent == "incident-responder" && en.RunID != first.RunID {
			fin = en
		}
	}
	if fin.RunID == "" {
		t.Fatalf("no second run: %q", e.events())
	}
	if fin.Outcome != ledger.OutcomeNoChange {
		t.Errorf("second run outcome %q, want no_change", fin.Outcome)
	}
	model.mu.Lock()
	reqs := model.requests
	model.mu.Unlock()
	if len(reqs) != 3 {
		t.Fatalf("%d model requests, want 3", len(reqs))
	}
	recalled := toolMessage(t, reqs[1], "call_r1")
	for _, want := range []string{
		`{"agent":"incident-responder","matched":1,"shown":1,"note":"Past proposals of agent incident-responder, newest first.`,
		`"proposals":[{"run_id":"` + first.RunID + `","outcome":"rejected","time":"`,
		`"summary":"Raise payments-api CACHE_TTL to 120s"`,
		`"files":["config/payments-api.env"]`,
		`"detail":"closed without merge: a reviewer rejected it`,
		`"rationale":"p99 latency follows cache misses`,
	} {
		if !strings.Contains(recalled, want) {
			t.Errorf("recall result lacks %q:\n%s", want, recalled)
		}
	}
	if strings.Contains(recalled, "review_comments") {
		t.Errorf("the git-native forge records no comments, recall shows some:\n%s", recalled)
	}
	for _, not := range []string{other.RunID, "env-normaliser", fin.RunID} {
		if strings.Contains(recalled, not) {
			t.Errorf("recall result has %q, another agent's run or the run itself:\n%s", not, recalled)
		}
	}
	if q := toolMessage(t, reqs[2], "call_r2"); !strings.Contains(q, `"query":"CACHE_TTL rejected","matched":1`) || !strings.Contains(q, first.RunID) {
		t.Errorf("filtered recall:\n%s", q)
	}

	// The transcript holds what was recalled; the replay gets it from
	// there and reproduces the run.
	repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	transcript, _, err := ledger.New(repo, ledger.Options{}).Transcript(context.Background(), fin.RunID)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := agent.ParseTranscript(transcript)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Steps[0].ToolCalls[0]; got.Name != "recall" || got.Result != recalled {
		t.Errorf("transcript records %s %q, the model saw %q", got.Name, got.Result, recalled)
	}
	rep, err := r.Replay(context.Background(), fin.RunID, agent.Replay)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Match() || rep.Err != nil {
		t.Fatalf("replay = %+v", rep)
	}
	e.verify()
}

// toolMessage is the content of the tool message answering call id in a
// request.
func toolMessage(t *testing.T, req openai.ChatCompletionRequest, id string) string {
	t.Helper()
	for _, m := range req.Messages {
		if m.Role == openai.ChatMessageRoleTool && m.ToolCallID == id {
			return m.Content
		}
	}
	t.Fatalf("no tool message for %s in the request", id)
	return ""
}
