package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
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

// tierServer is an OpenAI-compatible chat-completions server on
// 127.0.0.1 (a hosted model cannot run here) answering each model with
// the next of its scripted replies; a nil reply is an HTTP 400.
func tierServer(t *testing.T, script map[string][]*openai.ChatCompletionResponse) (*httptest.Server, func(model string) int) {
	var mu sync.Mutex
	asked := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req openai.ChatCompletionRequest
		json.Unmarshal(body, &req)
		mu.Lock()
		n := asked[req.Model]
		asked[req.Model]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n >= len(script[req.Model]) || script[req.Model][n] == nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":"%s cannot do this","type":"invalid_request_error"}}`, req.Model)
			return
		}
		json.NewEncoder(w).Encode(script[req.Model][n])
	}))
	t.Cleanup(srv.Close)
	return srv, func(model string) int {
		mu.Lock()
		defer mu.Unlock()
		return asked[model]
	}
}

func replyOf(r openai.ChatCompletionResponse) *openai.ChatCompletionResponse { return &r }

// A tiered agent whose small model fails hands over to the large one; the
// proposal is the large model's, run.finished carries both attempts'
// tokens and each at its own model's price, the transcript on the
// evidence branch records both attempts, and the run replays.
func TestTieredAgentProposal(t *testing.T) {
	srv, asked := tierServer(t, map[string][]*openai.ChatCompletionResponse{
		"gpt-4o-mini": {replyOf(toolCall("s1", "list_files", `{}`, 100, 10)), nil},
		"gpt-4o": {
			replyOf(toolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 900, 30)),
			replyOf(toolCall("2", "edit_file", `{"path":"config/payments-api.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=120s"}`, 1100, 60)),
			replyOf(toolCall("3", "finish", `{"summary":"Raise payments-api CACHE_TTL to 120s","rationale":"Hot keys expire between bursts.","risk":"low"}`, 1200, 70)),
		},
	})
	e := newEnv(t, false, func(dir string) {
		p := filepath.Join(dir, "providers.hcl")
		b, _ := os.ReadFile(p)
		src := strings.Replace(string(b), `base_url    = env("OPENAI_BASE_URL")`, fmt.Sprintf("base_url    = %q", srv.URL+"/v1"), 1)
		src = strings.Replace(src, `  price "gpt-4o-mini" {`, "  price \"gpt-4o\" {\n    input_per_mtok  = 2.5\n    output_per_mtok = 10\n  }\n  price \"gpt-4o-mini\" {", 1)
		os.WriteFile(p, []byte(src), 0o644)
		onlyAgent(dir, "tiered", `agent "tiered" {
  provider = provider.openai.default
  models   = ["gpt-4o-mini", "gpt-4o"]
  prompt   = "Fix the payments-api latency."
  tools    = ["list_files", "read_file", "edit_file", "finish"]
  escalate {
    on = ["failure", "step_limit"]
  }
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["config/**"]
  }
}
`)
	})
	const key = "sk-test-tiers-abcdefghijklmnopqrstuvwxyz"
	t.Setenv("OPENAI_API_KEY", key)
	runner := &agent.OpenAI{
		NewModel: func(p *hclspec.Provider) (agent.Model, error) {
			return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: os.LookupEnv, MaxRetries: -1})
		},
		LookupEnv: os.LookupEnv,
	}
	r := e.reconcilerWith(map[string]agent.Runner{"openai": runner})
	e.pass(r)

	es := e.entries()
	fin, ok := find(es, ledger.RunFinished, "tiered")
	if !ok {
		t.Fatalf("no run.finished: %q", e.events())
	}
	if asked("gpt-4o-mini") != 2 || asked("gpt-4o") != 3 {
		t.Errorf("asked gpt-4o-mini %d, gpt-4o %d times; want 2 and 3", asked("gpt-4o-mini"), asked("gpt-4o"))
	}
	if fin.Model != "gpt-4o" || fin.Usage == nil || fin.Usage.InputTokens != 3300 || fin.Usage.OutputTokens != 170 {
		t.Errorf("run.finished model %q usage %+v; want gpt-4o and both attempts' 3300/170", fin.Model, fin.Usage)
	}
	want := (100*0.15+10*0.60)/1e6 + (3200*2.5+160*10)/1e6
	if math.Abs(fin.CostUSD-want) > 1e-12 {
		t.Errorf("cost %v, want %v (each attempt at its model's price)", fin.CostUSD, want)
	}
	// Each model's part, at its own price, for the per-model series.
	wantSplit := []ledger.ModelUsage{
		{Model: "gpt-4o-mini", InputTokens: 100, OutputTokens: 10, CostUSD: (100*0.15 + 10*0.60) / 1e6},
		{Model: "gpt-4o", InputTokens: 3200, OutputTokens: 160, CostUSD: (3200*2.5 + 160*10) / 1e6},
	}
	if len(fin.ModelUsage) != 2 {
		t.Errorf("run.finished model_usage %+v, want %+v", fin.ModelUsage, wantSplit)
	} else {
		for i, w := range wantSplit {
			g := fin.ModelUsage[i]
			if g.Model != w.Model || g.InputTokens != w.InputTokens || g.OutputTokens != w.OutputTokens || math.Abs(g.CostUSD-w.CostUSD) > 1e-12 {
				t.Errorf("model_usage[%d] = %+v, want %+v", i, g, w)
			}
		}
	}
	tot := r.Ledger().State().Totals
	if got := tot.Tokens["tiered"]; got["gpt-4o-mini"] != [2]int64{100, 10} || got["gpt-4o"] != [2]int64{3200, 160} {
		t.Errorf("folded tokens by model %v, want each model's own", got)
	}
	if got := tot.CostUSD["tiered"]; math.Abs(got["gpt-4o-mini"]-wantSplit[0].CostUSD) > 1e-12 || math.Abs(got["gpt-4o"]-wantSplit[1].CostUSD) > 1e-12 {
		t.Errorf("folded cost by model %v", got)
	}
	opened, ok := find(es, ledger.ProposalOpened, "tiered")
	if !ok {
		t.Fatalf("no proposal: %q", e.events())
	}
	if diff := e.git("", "--git-dir", e.bare, "diff", "main", opened.Proposal.Branch); !strings.Contains(diff, "+CACHE_TTL=120s") {
		t.Errorf("proposal diff:\n%s", diff)
	}

	repo, err := gitstore.Open(context.Background(), e.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := ledger.New(repo, ledger.Options{}).Transcript(context.Background(), fin.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), key) {
		t.Error("the API key is in the transcript")
	}
	tr, err := agent.ParseTranscript(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Attempts) != 1 || tr.Attempts[0].Model != "gpt-4o-mini" || tr.Attempts[0].Escalated != "failure" ||
		tr.Attempts[0].Usage.InputTokens != 100 || tr.Model != "gpt-4o" || tr.Usage.InputTokens != 3300 {
		t.Errorf("transcript: attempts %+v, model %q, usage %+v", tr.Attempts, tr.Model, tr.Usage)
	}
	e.verify()

	rep, err := r.Replay(context.Background(), fin.RunID, agent.Replay)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Match() || rep.Err != nil {
		t.Fatalf("replay = %+v", rep)
	}
	if asked("gpt-4o-mini")+asked("gpt-4o") != 5 {
		t.Errorf("the replay asked the server")
	}
}
