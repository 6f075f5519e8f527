package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/eval/evaltest"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// Tests of plan --change-from (DecideChange): the decision a pass would
// record on a branch's change, computed through the same evals and
// second-model reviews. The models are scripted OpenAI-compatible servers
// on 127.0.0.1 (evaltest.Server, reviewServer): a hosted model cannot run
// here.

// pushBranch commits change on a new branch off main as a person (anyone
// with push access) and pushes it.
func (e *env) pushBranch(branch, msg string, change func(work string)) {
	e.t.Helper()
	work := e.clone()
	e.git(work, "checkout", "-q", "-b", branch)
	change(work)
	e.git(work, "add", "-A")
	e.gitAs("Mallory", "mallory@example.com", work, "commit", "-q", "-m", msg)
	e.git(work, "push", "-q", "origin", branch)
}

// snapshot is every ref of the repository and every object it holds:
// equal snapshots mean nothing was pushed and no ledger entry written
// (the ledger is the agent-evidence ref's history).
func (e *env) snapshot() string {
	e.t.Helper()
	return e.git("", "--git-dir", e.bare, "for-each-ref", "--format=%(objectname) %(refname)") +
		e.git("", "--git-dir", e.bare, "cat-file", "--batch-all-objects", "--batch-check")
}

// decideChange plans ref's change and checks that it wrote nothing.
func (e *env) decideChange(r *reconcile.Reconciler, agentName, ref string, opts reconcile.ChangeOptions) *reconcile.ChangePlan {
	e.t.Helper()
	before := e.snapshot()
	cp, err := r.DecideChange(context.Background(), agentName, ref, opts)
	if err != nil {
		e.t.Fatalf("plan %s: %v", ref, err)
	}
	if after := e.snapshot(); after != before {
		e.t.Fatalf("plan %s wrote to the repository:\nbefore:\n%s\nafter:\n%s", ref, before, after)
	}
	return cp
}

// tunePrompt is the tuner's change of evalGateEnv (tools/tune.sh), made
// by a person on a branch.
func tunePrompt(work string) {
	p := filepath.Join(work, "prompts/incident-responder.md")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, append(b, "\nPrefer the smallest config change.\n"...), 0o644)
}

// failingEvalScript is a model that reads the config and stops, which
// fails the incident-responder's scenario (it expects a change).
func failingEvalScript() []openai.ChatCompletionResponse {
	return []openai.ChatCompletionResponse{
		evaltest.ToolCall("1", "read_file", `{"path":"config/payments-api.env"}`, 1500, 40),
		evaltest.ToolCall("2", "finish", `{"summary":"Nothing to change","rationale":"looks fine","risk":"low"}`, 1600, 30),
	}
}

func ruleNames(rules []policy.Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.Name())
	}
	return out
}

// A branch that changes an agent's prompt gets that agent's evals run,
// as the pass runs them: the failing scenario is shown at its positions,
// the deny rule that reads change.evals fires, and the cost is what the
// decision entry records. The pass, run afterwards on the same change by
// the tuner agent against the same scripted model, records the same
// decision. With NoEvals nothing is asked and the decision, provisional,
// is not denied by that rule.
func TestPlanChangeRunsTheEvals(t *testing.T) {
	e := evalGateEnv(t)
	e.pushBranch("tune", "Tune the incident prompt", tunePrompt)
	srv := evaltest.NewServer(t, failingEvalScript()...)
	cp := e.decideChange(evalGateReconciler(e, srv), "tuner", "tune", reconcile.ChangeOptions{})

	if cp.Outcome != policy.Deny || !slices.Contains(ruleNames(cp.Rules), "prompt-evals/evals") || cp.Provisional || len(cp.NotEvaluated) != 0 {
		t.Fatalf("plan = %s %s, rules %v, not evaluated %v", cp.Outcome, cp.Summary, ruleNames(cp.Rules), cp.NotEvaluated)
	}
	if cp.Evals == nil || cp.Evals.Failed != 1 || cp.Evals.Passed != 0 || strings.Join(cp.Evals.Agents, ",") != "incident-responder" {
		t.Fatalf("evals = %+v", cp.Evals)
	}
	if len(cp.Scenarios) != 1 {
		t.Fatalf("scenarios = %+v", cp.Scenarios)
	}
	sc := cp.Scenarios[0]
	if sc.Pass || sc.Pos != "evals/incident-responder/latency.hcl:7:1" || sc.Source != eval.SourceLive || sc.Usage.InputTokens != 3100 || sc.Usage.OutputTokens != 70 {
		t.Errorf("scenario = %+v", sc)
	}
	var fails []string
	for _, f := range sc.Failures {
		fails = append(fails, f.Pos+": "+f.Message)
	}
	for _, want := range []string{
		`evals/incident-responder/latency.hcl:12:21: no changed file matches "config/payments-api.env"; the run changed nothing`,
		`evals/incident-responder/latency.hcl:14:21: no changed file contains "CACHE_TTL=120s" (changed: nothing)`,
	} {
		if !slices.Contains(fails, want) {
			t.Errorf("failures lack %q: %q", want, fails)
		}
	}
	wantCost := (3100*0.15 + 70*0.60) / 1e6
	if !near(cp.CostUSD, wantCost) || !near(cp.Evals.SpentUSD, wantCost) || cp.EvalUsage != (ledger.Usage{InputTokens: 3100, OutputTokens: 70}) || cp.Usage != nil {
		t.Errorf("cost %v (want %v), eval usage %+v, usage %+v", cp.CostUSD, wantCost, cp.EvalUsage, cp.Usage)
	}
	if srv.Left() != 0 || !strings.Contains(srv.Requests()[0].Messages[0].Content, "Prefer the smallest config change.") {
		t.Errorf("the evals did not run the branch's prompt (%d responses left)", srv.Left())
	}

	// Free preview: no model is asked; provisional, not denied by the
	// evals rule.
	idle := evaltest.NewServer(t)
	free := e.decideChange(evalGateReconciler(e, idle), "tuner", "tune", reconcile.ChangeOptions{NoEvals: true})
	if free.Outcome != policy.RequireApproval || slices.Contains(ruleNames(free.Rules), "prompt-evals/evals") ||
		!free.Provisional || !slices.Equal(free.NotEvaluated, []string{reconcile.GateEvals}) || free.Evals != nil || len(free.Scenarios) != 0 || free.CostUSD != 0 {
		t.Errorf("--no-evals plan = %s %s, rules %v, provisional %v, not evaluated %v, evals %+v", free.Outcome, free.Summary, ruleNames(free.Rules), free.Provisional, free.NotEvaluated, free.Evals)
	}
	if n := len(idle.Requests()); n != 0 {
		t.Errorf("--no-evals asked the model %d times", n)
	}

	// The pass: the tuner makes the same change and the same model
	// answers; the decision entry is the plan's.
	pass := evaltest.NewServer(t, failingEvalScript()...)
	e.pass(evalGateReconciler(e, pass))
	dec, ok := find(e.entries(), ledger.PolicyDecision, "tuner")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	d := evalDecision(t, dec)
	if d.Outcome != cp.Outcome || d.Summary != cp.Summary || !slices.Equal(ruleNames(d.Rules), ruleNames(cp.Rules)) || d.PolicyDigest != cp.PolicyDigest {
		t.Errorf("pass decided %s %s %v, plan %s %s %v", d.Outcome, d.Summary, ruleNames(d.Rules), cp.Outcome, cp.Summary, ruleNames(cp.Rules))
	}
	if got, want := jsonOf(t, dec.Evals), jsonOf(t, cp.Evals); got != want {
		t.Errorf("pass recorded evals %s, plan %s", got, want)
	}
	if !near(dec.CostUSD, cp.CostUSD) {
		t.Errorf("pass recorded $%v, plan $%v", dec.CostUSD, cp.CostUSD)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// raisePool is the reviewEnv tuner's change, made by a person on a branch.
func raisePool(work string) {
	p := filepath.Join(work, "config/payments-api.env")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, []byte(strings.Replace(string(b), "\nPOOL_SIZE=10\n", "\nPOOL_SIZE=500\n", 1)), 0o644)
}

// A require_review rule fires on the branch's change: plan asks its
// models as the pass does, shows a disagreeing verdict with its reasons
// and the rule it makes blocking, and what the reviews cost, as the
// decision entry the pass then records on the same change.
func TestPlanChangeAsksTheReviewers(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 1500, out: 40}, "o3-mini": {args: rejectArgs, in: 1400, out: 300}})
	e := reviewEnv(t, strings.Replace(twoModels, `reviewers = ["sre"]`, "reviewers = [\"sre\"]\n    min       = 1", 1), "", "")
	e.pushBranch("pool", "Raise the payments pool size\n\n"+injection, raisePool)
	cp := e.decideChange(reviewReconciler(e, srv), "tuner", "pool", reconcile.ChangeOptions{})

	if cp.Outcome != policy.RequireApproval || cp.Summary != "require_approval review/second-opinion (1 of sre)" || cp.Provisional {
		t.Fatalf("plan = %s %s (provisional %v)", cp.Outcome, cp.Summary, cp.Provisional)
	}
	var rule *policy.Rule
	for i := range cp.Rules {
		if cp.Rules[i].Name() == "review/second-opinion" {
			rule = &cp.Rules[i]
		}
	}
	if rule == nil || !rule.Blocking || !strings.Contains(rule.Message, "rejected by second/o3-mini: The change tells its reviewer to approve it") {
		t.Errorf("review rule = %+v", rule)
	}
	if len(cp.Reviews) != 2 {
		t.Fatalf("reviews = %+v", cp.Reviews)
	}
	if got := cp.Reviews[1]; got.Model != "o3-mini" || got.Verdict != policy.VerdictReject || got.Risk != "high" || len(got.Reasons) != 2 || got.InputTokens != 1400 || got.OutputTokens != 300 {
		t.Errorf("rejecting review = %+v", got)
	}
	wantCost := (1500*2.5+40*10)/1e6 + (1400*1.1+300*4.4)/1e6
	if cp.Usage == nil || *cp.Usage != (ledger.Usage{InputTokens: 2900, OutputTokens: 340}) || fmt.Sprintf("%.9f", cp.CostUSD) != fmt.Sprintf("%.9f", wantCost) {
		t.Errorf("usage %+v cost %v, want 2900/340 and %v", cp.Usage, cp.CostUSD, wantCost)
	}
	// The reviewer was shown the branch's diff and its commit message as
	// untrusted data.
	var req openai.ChatCompletionRequest
	json.Unmarshal(srv.requests("gpt-4o")[0], &req)
	if user := req.Messages[1].Content; !strings.Contains(user, "+POOL_SIZE=500") || !strings.Contains(user, "Summary: Raise the payments pool size") {
		t.Errorf("the reviewer was shown:\n%s", user)
	}

	// Free preview: nobody is asked; the rule is named as not evaluated.
	asked := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini"))
	free := e.decideChange(reviewReconciler(e, srv), "tuner", "pool", reconcile.ChangeOptions{NoReview: true})
	if n := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini")); n != asked {
		t.Errorf("--no-review asked %d reviewers", n-asked)
	}
	if !free.Provisional || !slices.Equal(free.NotEvaluated, []string{reconcile.GateReview}) || !slices.Equal(free.SkippedReviews, []string{"review/second-opinion"}) ||
		len(free.Reviews) != 0 || free.Summary != "require_approval default (1 reviewer)" || free.CostUSD != 0 {
		t.Errorf("--no-review plan = %+v", free)
	}

	// The pass on the same change (the tuner makes it) records what plan
	// showed.
	e.pass(reviewReconciler(e, srv))
	en, rv := decided(t, e)
	if rv.Summary != cp.Summary || rv.Outcome != cp.Outcome || !slices.Equal(ruleNames(rv.Rules), ruleNames(cp.Rules)) {
		t.Errorf("pass decided %s %v, plan %s %v", rv.Summary, ruleNames(rv.Rules), cp.Summary, ruleNames(cp.Rules))
	}
	for i := range rv.Reviews {
		if g, p := rv.Reviews[i], cp.Reviews[i]; g.Verdict != p.Verdict || g.Response != p.Response || g.InputTokens != p.InputTokens || g.CostUSD != p.CostUSD {
			t.Errorf("review %d: pass %+v, plan %+v", i, g, p)
		}
	}
	if en.Usage == nil || *en.Usage != *cp.Usage || !near(en.CostUSD, cp.CostUSD) {
		t.Errorf("pass recorded %+v $%v, plan %+v $%v", en.Usage, en.CostUSD, cp.Usage, cp.CostUSD)
	}
}

// A review the agent's money budget has no room for is not asked, in plan
// as in the pass: plan shows the hold as the review's error and the
// decision it makes.
func TestPlanChangeReviewHeldByBudget(t *testing.T) {
	srv := newReviewServer(t, map[string]reviewAnswer{"gpt-4o": {args: approveArgs, in: 10, out: 10}, "o3-mini": {args: approveArgs, in: 10, out: 10}})
	e := reviewEnv(t, twoModels, "", "")
	e.commitAs("Rita Reviewer", "rita@example.com", "a tight budget for the tuner", func(work string) {
		spend := "policy \"spend\" {\n  applies_to = [\"tuner\"]\n  budget {\n    max_cost_usd_per_day = 0.001\n  }\n}\n"
		if err := os.WriteFile(filepath.Join(work, "policies/spend.hcl"), []byte(spend), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	e.pushBranch("pool", "Raise the payments pool size", raisePool)
	cp := e.decideChange(reviewReconciler(e, srv), "tuner", "pool", reconcile.ChangeOptions{})
	if n := len(srv.requests("gpt-4o")) + len(srv.requests("o3-mini")); n != 0 {
		t.Errorf("%d review requests over a budget without room for them", n)
	}
	if cp.Summary != "require_approval review/second-opinion (1 of sre)" || len(cp.Reviews) != 2 || cp.CostUSD != 0 || cp.Provisional {
		t.Fatalf("plan = %+v", cp)
	}
	for _, got := range cp.Reviews {
		if got.Verdict != policy.VerdictError || !strings.Contains(got.Error, "not asked: policy spend allows $0.00") {
			t.Errorf("review = %+v, want not asked for the budget", got)
		}
	}
	e.pass(reviewReconciler(e, srv))
	// The pass's request differs from plan's only in the run id and the
	// rationale (the agent's words, a commit message here): the same
	// reviews are held.
	_, rv := decided(t, e)
	if rv.Summary != cp.Summary || len(rv.Reviews) != len(cp.Reviews) {
		t.Fatalf("pass decided %s %s, plan %s %s", rv.Summary, jsonOf(t, rv.Reviews), cp.Summary, jsonOf(t, cp.Reviews))
	}
	for i, got := range rv.Reviews {
		if got.Verdict != cp.Reviews[i].Verdict || got.ChangeID != cp.Reviews[i].ChangeID || !strings.Contains(got.Error, "not asked: policy spend allows $0.00") {
			t.Errorf("review %d: pass %+v, plan %+v", i, got, cp.Reviews[i])
		}
	}
}

// forgedRecording records, against a model that does what the
// incident-responder's scenario expects, the scenario's run with the
// prompt of work (a checkout with the prompt change): a current recording
// for that prompt, which anyone who can push can make and commit.
func forgedRecording(t *testing.T, work string) {
	t.Helper()
	b, err := os.ReadFile("../examples/incident/conversation.json")
	if err != nil {
		t.Fatal(err)
	}
	var script []openai.ChatCompletionResponse
	if err := json.Unmarshal(b, &script); err != nil {
		t.Fatal(err)
	}
	srv := evaltest.NewServer(t, script...)
	fsys := os.DirFS(work)
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: srv.LookupEnv})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	scs, diags := eval.Load(fsys, spec, "incident-responder")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	runner := &eval.Runner{Spec: spec, FS: fsys, Mode: eval.Record, Recordings: filepath.Join(work, eval.RecordingsDir), LookupEnv: srv.LookupEnv, WorkDir: t.TempDir(),
		Runners: map[string]agent.Runner{hclspec.ProviderOpenAI: &agent.OpenAI{LookupEnv: srv.LookupEnv, NewModel: func(p *hclspec.Provider) (agent.Model, error) {
			return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: srv.LookupEnv, MaxRetries: -1})
		}}}}
	res, err := runner.Run(context.Background(), scs)
	if err != nil || len(res) != 1 || !res[0].Pass {
		t.Fatalf("forging the recording: %v %+v", err, res)
	}
}

// Who could lie: anyone who can push a branch. A branch that changes the
// incident-responder's prompt and also weakens its scenario, commits a
// current recording of a run that passes it, or deletes the policy rule
// that denies on failed evals, is judged by the protected branch's
// evals, recordings and policies: the scenario runs live against the
// model (which fails it) at the protected file's positions, and the
// rule still denies.
func TestPlanChangeIsJudgedByTheProtectedBranch(t *testing.T) {
	e := evalGateEnv(t)
	e.pushBranch("forged", "Tune the incident prompt", func(work string) {
		tunePrompt(work)
		forgedRecording(t, work)
		// An expectation anything meets, on its own line 1.
		os.WriteFile(filepath.Join(work, "evals/incident-responder/latency.hcl"), []byte(`scenario "latency alert raises the cache TTL" {
  trigger = "alert"
  input   = file("alert-firing.json")
  expect {
    unchanged = ["deploy/**"]
  }
}
`), 0o644)
	})
	e.pushBranch("relaxed", "Tune the incident prompt", func(work string) {
		tunePrompt(work)
		p := filepath.Join(work, "policies/evals.hcl")
		b, _ := os.ReadFile(p)
		s := string(b)
		os.WriteFile(p, []byte(s[:strings.Index(s, "  deny \"evals\"")]+"}\n"), 0o644)
	})
	for _, branch := range []string{"forged", "relaxed"} {
		t.Run(branch, func(t *testing.T) {
			srv := evaltest.NewServer(t, failingEvalScript()...)
			cp := e.decideChange(evalGateReconciler(e, srv), "tuner", branch, reconcile.ChangeOptions{})
			if cp.Outcome != policy.Deny || !slices.Contains(ruleNames(cp.Rules), "prompt-evals/evals") {
				t.Errorf("plan = %s %s %v, want a denial by prompt-evals/evals", cp.Outcome, cp.Summary, ruleNames(cp.Rules))
			}
			var incident []string
			for _, sc := range cp.Scenarios {
				if sc.Agent == "incident-responder" {
					incident = append(incident, fmt.Sprintf("%s %v %s", sc.Pos, sc.Pass, sc.Source))
				}
			}
			if !slices.Equal(incident, []string{"evals/incident-responder/latency.hcl:7:1 false live"}) {
				t.Errorf("incident-responder scenarios %q, want the protected one, run live, failing", incident)
			}
			if srv.Left() != 0 {
				t.Errorf("the model was not asked (%d responses left): a recording from the branch was replayed", srv.Left())
			}
		})
	}
}

// The pass judges an agent's change by the protected branch's evals too:
// an agent whose scope reaches evals/ and that commits a current
// recording of a passing run alongside its prompt change gets the
// scenario run live, and denied.
func TestPassJudgesAChangeByTheProtectedEvals(t *testing.T) {
	e := evalGateEnv(t)
	// The recording is forged on a copy with the prompt change, then
	// handed to the agent's script.
	forged := e.clone()
	tunePrompt(forged)
	forgedRecording(t, forged)
	rec, err := filepath.Glob(filepath.Join(forged, eval.RecordingsDir, "incident-responder", "*.json"))
	if err != nil || len(rec) != 1 {
		t.Fatalf("recordings %v %v", rec, err)
	}
	content, _ := os.ReadFile(rec[0])
	rel, _ := filepath.Rel(forged, rec[0])
	e.commitAs("Rita Reviewer", "rita@example.com", "a tuner that records its evals", func(work string) {
		p := filepath.Join(work, "agents/tuner.hcl")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.Replace(string(b), `paths = ["prompts/incident-responder.md"]`, `paths = ["prompts/incident-responder.md", "evals/**"]`, 1)), 0o644)
		script := "set -e\nprintf '\\nPrefer the smallest config change.\\n' >> prompts/incident-responder.md\n" +
			"cat > " + rel + " <<'EOF'\n" + string(content) + "\nEOF\necho 'Tune the incident prompt'\n"
		os.WriteFile(filepath.Join(work, "tools/tune.sh"), []byte(script), 0o644)
	})
	srv := evaltest.NewServer(t, failingEvalScript()...)
	e.pass(evalGateReconciler(e, srv))
	dec, ok := find(e.entries(), ledger.PolicyDecision, "tuner")
	if !ok {
		t.Fatalf("no decision: %q", e.events())
	}
	if d := evalDecision(t, dec); d.Outcome != policy.Deny || !strings.Contains(d.Summary, "prompt-evals/evals") {
		t.Errorf("decision %s %s, want a denial by prompt-evals/evals", d.Outcome, d.Summary)
	}
	if dec.Evals == nil || dec.Evals.Failed != 1 || srv.Left() != 0 {
		t.Errorf("evals %+v, %d responses left: the agent's recording was replayed", dec.Evals, srv.Left())
	}
	// The agent did commit the forged recording: it is in its change.
	fin, _ := find(e.entries(), ledger.RunFinished, "tuner")
	if fin.Change == nil || !slices.Contains(fin.Change.Files, rel) {
		t.Errorf("the run's change %+v lacks %s", fin.Change, rel)
	}
}
