package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/eval/evaltest"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/reconcile"
)

// planGatePolicy lets a change to the incident-responder's prompt through
// with an SRE's approval, unless its evals fail, and asks a second model
// about it first.
const planGatePolicy = `policy "prompt-evals" {
  applies_to  = ["tuner"]
  enforcement = "hard"

  require_approval "prompts" {
    condition             = anytrue([for f in change.files : glob(f.path, "prompts/**")])
    reviewers             = ["sre"]
    min                   = 1
    allow_control_changes = true
  }

  deny "evals" {
    condition = change.evals.failed > 0
    message   = "the prompt change fails the agent's evals"
  }

  require_review "second-opinion" {
    condition       = anytrue([for f in change.files : glob(f.path, "prompts/**")])
    models          = ["default/gpt-4o-mini"]
    on_disagreement = "deny"
  }
}
`

// planRepo is the example repository with an agent, tuner, that may edit
// the incident-responder's prompt under planGatePolicy, and a branch,
// "tune", on which a person made such a change. It returns the bare
// repository. With cache, the incident-responder allows the response
// cache.
func planRepo(t *testing.T, cache bool) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(examplesDir)); err != nil {
		t.Fatal(err)
	}
	if cache {
		p := filepath.Join(dir, "agents/incident-responder.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), `  model       = "gpt-4o-mini"`, "  model       = \"gpt-4o-mini\"\n  cache       = true", 1)), 0o644)
	}
	files := map[string]string{
		"agents/tuner.hcl": `agent "tuner" {
  provider = provider.exec.local
  command  = ["sh", "tools/tune.sh"]
  trigger {
    on_spec_change = true
  }
  scope {
    paths = ["prompts/incident-responder.md"]
  }
}
`,
		"tools/tune.sh":      "printf '\\nPrefer the smallest config change.\\n' >> prompts/incident-responder.md\necho 'Tune the incident prompt'\n",
		"policies/evals.hcl": planGatePolicy,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bare := gittest.NewBare(t, dir)
	work := gittest.Clone(t, bare)
	gittest.Git(t, work, "checkout", "-q", "-b", "tune")
	p := filepath.Join(work, "prompts/incident-responder.md")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, append(b, "\nPrefer the smallest config change.\n"...), 0o644)
	gittest.Git(t, work, "commit", "-q", "-am", "Tune the incident prompt")
	gittest.Git(t, work, "push", "-q", "origin", "tune")
	return bare
}

func refsAndObjects(t *testing.T, bare string) string {
	t.Helper()
	return gittest.Git(t, "", "--git-dir", bare, "for-each-ref", "--format=%(objectname) %(refname)") +
		gittest.Git(t, "", "--git-dir", bare, "cat-file", "--batch-all-objects", "--batch-check")
}

const rejectVerdict = `{"verdict":"reject","risk":"high","reasons":["The prompt now steers every incident to a config change."]}`

// plan --change-from runs the evals and the second-model review a pass
// would, against a provider that is a scripted server on 127.0.0.1 (a
// hosted model cannot run here), prints each scenario, verdict and rule
// and what they cost, and with --no-evals / --no-review says which gates
// it skipped and that the decision is provisional. It writes nothing to
// the repository, and its exit status does not depend on the decision.
func TestPlanChangeFrom(t *testing.T) {
	bare := planRepo(t, false)
	before := refsAndObjects(t, bare)
	srv := evaltest.NewServer(t)
	t.Setenv("OPENAI_BASE_URL", srv.URL)
	t.Setenv("OPENAI_API_KEY", srv.Key)

	// The full plan: the model reads the config and stops, so the
	// scenario fails and the deny rule fires; a denied change is sent to
	// no reviewer.
	srv.Add(
		evaltest.ToolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 1500, 40),
		evaltest.ToolCall("2", "finish", `{"summary":"Nothing to change","rationale":"looks fine","risk":"low"}`, 1600, 30),
	)
	code, out, errs := cli(t, "plan", "--repo", bare, "--agent", "tuner", "--change-from", "tune")
	if code != exitOK || errs != "" {
		t.Fatalf("plan: exit %d\n%s\nstderr %s", code, out, errs)
	}
	for _, want := range []string{
		"deny prompt-evals/evals\n",
		"evals of incident-responder: 0 passed, 1 failed\n",
		"  FAIL evals/incident-responder/latency.hcl:7:1 incident-responder/latency alert raises the cache TTL (live, 2 steps, 3100 in / 70 out tokens, $0.000507)\n",
		"      evals/incident-responder/latency.hcl:14:21: no changed file contains \"CACHE_TTL=120s\" (changed: nothing)\n",
		"  deny             prompt-evals/evals                 blocking  policies/evals.hcl:12:3  the prompt change fails the agent's evals\n",
		"  guard            builtin/self-modification          advisory  control files changed (prompts/incident-responder.md); allowed only with the approval prompt-evals/prompts requires\n",
		"cost $0.000507 (evals 3100 in / 70 out tokens, reviews 0 in / 0 out tokens): the decision entry would count it against the agent's budget\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PROVISIONAL") || strings.Contains(out, "reviews:") || srv.Left() != 0 {
		t.Errorf("a full plan is not provisional and asks no reviewer of a denied change (%d responses left):\n%s", srv.Left(), out)
	}

	// --no-evals: the reviewer is asked and disagrees, which denies; the
	// evals are named as not evaluated.
	srv.Add(evaltest.ToolCall("3", "verdict", rejectVerdict, 900, 25))
	code, out, errs = cli(t, "plan", "--repo", bare, "--agent", "tuner", "--change-from", "tune", "--no-evals")
	if code != exitOK || errs != "" {
		t.Fatalf("plan --no-evals: exit %d\n%s\nstderr %s", code, out, errs)
	}
	for _, want := range []string{
		"PROVISIONAL: not evaluated: evals (--no-evals); a pass runs them and may decide otherwise\n",
		"deny prompt-evals/second-opinion\n",
		"reviews:\n  prompt-evals/second-opinion default/gpt-4o-mini: reject (high risk) (900 in / 25 out tokens, $0.000150)\n      The prompt now steers every incident to a config change.\n",
		"  require_review   prompt-evals/second-opinion        blocking  policies/evals.hcl:17:3  deny on disagreement: second-model review: rejected by default/gpt-4o-mini: The prompt now steers every incident to a config change.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan --no-evals output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "prompt-evals/evals") || strings.Contains(out, "evals of") || srv.Left() != 0 {
		t.Errorf("--no-evals ran evals or the evals rule fired (%d responses left):\n%s", srv.Left(), out)
	}
	if n := len(srv.Requests()); n != 3 {
		t.Fatalf("%d requests, want the 2 of the evals and 1 review", n)
	}
	if sys := srv.Requests()[2].Messages[0].Content; !strings.Contains(sys, "You are a second reviewer") {
		t.Errorf("the review request's system prompt:\n%s", sys)
	}

	// Both skipped, as json: nothing is asked.
	code, out, errs = cli(t, "plan", "--repo", bare, "--agent", "tuner", "--change-from", "tune", "--no-evals", "--no-review", "--format", "json")
	if code != exitOK || errs != "" {
		t.Fatalf("plan --no-evals --no-review: exit %d\n%s\nstderr %s", code, out, errs)
	}
	var cp reconcile.ChangePlan
	if err := json.Unmarshal([]byte(out), &cp); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !cp.Provisional || !slices.Equal(cp.NotEvaluated, []string{"evals", "review"}) || !slices.Equal(cp.SkippedReviews, []string{"prompt-evals/second-opinion"}) ||
		cp.Outcome != "require_approval" || cp.Summary != "require_approval prompt-evals/prompts (1 of sre)" || cp.CostUSD != 0 || cp.Evals != nil || len(cp.Reviews) != 0 {
		t.Errorf("json plan = %s", out)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, key := range []string{"outcome", "summary", "rules", "policy_digest", "not_evaluated", "provisional", "scenarios", "cost_usd", "spec_commit", "head", "base"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("json plan lacks %q: %s", key, out)
		}
	}
	if n := len(srv.Requests()); n != 3 {
		t.Errorf("--no-evals --no-review asked the model %d times", n-3)
	}

	// The same full plan as json carries the scenarios and the evals.
	srv.Add(
		evaltest.ToolCall("4", "read_file", `{"path":"config/payments-api.env"}`, 1500, 40),
		evaltest.ToolCall("5", "finish", `{"summary":"Nothing to change","rationale":"looks fine","risk":"low"}`, 1600, 30),
	)
	code, out, _ = cli(t, "plan", "--repo", bare, "--agent", "tuner", "--change-from", "tune", "--format", "json")
	cp = reconcile.ChangePlan{}
	if err := json.Unmarshal([]byte(out), &cp); err != nil || code != exitOK {
		t.Fatalf("exit %d %v\n%s", code, err, out)
	}
	if cp.Provisional || len(cp.NotEvaluated) != 0 || cp.Evals == nil || cp.Evals.Failed != 1 || len(cp.Scenarios) != 1 ||
		cp.Scenarios[0].Pos != "evals/incident-responder/latency.hcl:7:1" || len(cp.Scenarios[0].Failures) == 0 || cp.Scenarios[0].Failures[0].Pos != "evals/incident-responder/latency.hcl:12:21" {
		t.Errorf("json plan = %s", out)
	}

	if after := refsAndObjects(t, bare); after != before {
		t.Errorf("plan wrote to the repository:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// The flags that only mean something with --change-from are usage errors
// without it.
func TestPlanChangeFlagsNeedChangeFrom(t *testing.T) {
	for _, args := range [][]string{
		{"plan", "--repo", "r", "--no-evals"},
		{"plan", "--repo", "r", "--no-review"},
		{"plan", "--repo", "r", "--agent", "tuner"},
	} {
		if code, _, errs := cli(t, args...); code != exitUsage || !strings.Contains(errs, "go with --change-from") {
			t.Errorf("%q: exit %d, %s", args, code, errs)
		}
	}
	if code, _, errs := cli(t, "plan", "--repo", "r", "--sandbox", "loose"); code != exitUsage || !strings.Contains(errs, "--sandbox") {
		t.Errorf("--sandbox loose: exit %d, %s", code, errs)
	}
}

// With --cache-dir, the evals of an agent that allows the response cache
// use it, as the pass's runs do: the second plan asks the model nothing
// and its cached steps cost nothing. Plan writes nothing else there.
func TestPlanChangeFromResponseCache(t *testing.T) {
	bare := planRepo(t, true)
	cache := t.TempDir()
	srv := evaltest.NewServer(t,
		evaltest.ToolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 1500, 40),
		evaltest.ToolCall("2", "finish", `{"summary":"Nothing to change","rationale":"looks fine","risk":"low"}`, 1600, 30),
	)
	t.Setenv("OPENAI_BASE_URL", srv.URL)
	t.Setenv("OPENAI_API_KEY", srv.Key)
	args := []string{"plan", "--repo", bare, "--agent", "tuner", "--change-from", "tune", "--cache-dir", cache, "--format", "json"}
	var costs []float64
	for range 2 {
		code, out, errs := cli(t, args...)
		var cp reconcile.ChangePlan
		if err := json.Unmarshal([]byte(out), &cp); err != nil || code != exitOK {
			t.Fatalf("exit %d %v\n%s\n%s", code, err, out, errs)
		}
		if cp.Outcome != "deny" || cp.Evals == nil || cp.Evals.Failed != 1 {
			t.Fatalf("plan = %s", out)
		}
		costs = append(costs, cp.CostUSD)
	}
	if len(srv.Requests()) != 2 || costs[0] <= 0 || costs[1] != 0 {
		t.Errorf("%d requests, costs %v: want the first plan's 2 requests paid and the second's answered from the cache", len(srv.Requests()), costs)
	}
	err := filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if rel, _ := filepath.Rel(cache, p); err == nil && !d.IsDir() && !strings.HasPrefix(rel, "responses"+string(filepath.Separator)) {
			t.Errorf("plan wrote %s to the cache directory", rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
