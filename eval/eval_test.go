package eval_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/eval"
	"github.com/agentgitops/reconciler/eval/evaltest"
	"github.com/agentgitops/reconciler/hclspec"
)

// fixture copies testdata/repo to a temporary directory, adds files, and
// returns its path.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/repo")); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func loadSpec(t *testing.T, dir string, lookup func(string) (string, bool)) *hclspec.Spec {
	t.Helper()
	spec, diags := hclspec.Load(os.DirFS(dir), hclspec.Options{LookupEnv: lookup})
	if diags.HasErrors() {
		t.Fatalf("load spec: %v", diags)
	}
	return spec
}

func loadScenarios(t *testing.T, dir string, spec *hclspec.Spec, agentName string) []*eval.Scenario {
	t.Helper()
	scs, diags := eval.Load(os.DirFS(dir), spec, agentName)
	if diags.HasErrors() {
		t.Fatalf("load evals: %v", diags)
	}
	return scs
}

func runners(srv *evaltest.Server) map[string]agent.Runner {
	return map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: srv.LookupEnv, MaxRetries: -1})
			},
			LookupEnv: srv.LookupEnv,
		},
	}
}

// raiseTTL is the responder's conversation for the latency scenario: it
// reads the config, raises the TTL and finishes. Usage: 1000+1100+1200
// input and 30+60+70 output tokens, $0.000591 at gpt-4o-mini's prices.
func raiseTTL(ttl string) []openai.ChatCompletionResponse {
	return []openai.ChatCompletionResponse{
		evaltest.ToolCall("1", "read_file", `{"path":"config/app.env"}`, 1000, 30),
		evaltest.ToolCall("2", "edit_file", `{"path":"config/app.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=`+ttl+`"}`, 1100, 60),
		evaltest.ToolCall("3", "finish", `{"summary":"Raise CACHE_TTL to `+ttl+`","rationale":"latency follows cache misses","risk":"low"}`, 1200, 70),
	}
}

func failuresOf(r eval.Result) []string {
	var out []string
	for _, f := range r.Failures {
		out = append(out, f.String())
	}
	return out
}

// A scenario that passes, and one whose every expectation fails, each
// failure at the list element or attribute that states it.
func TestRunPassAndFail(t *testing.T) {
	dir := fixture(t, map[string]string{"evals/responder/strict.hcl": `scenario "strict" {
  trigger = "alert"
  input   = { alerts = [{ labels = { alertname = "HighLatency" } }] }
  expect {
    changed      = ["config/other.env", "config/app.env"]
    unchanged    = ["config/*.env"]
    contains     = ["CACHE_TTL=300s"]
    not_contains = ["LOG_LEVEL"]
    matches      = ["TTL=[0-9]+m"]
    not_matches  = ["(?m)^CACHE_TTL="]
    decision     = "deny"
    max_cost_usd = 0.0001
    max_steps    = 2
  }
}
`})
	srv := evaltest.NewServer(t, append(raiseTTL("120s"), raiseTTL("120s")...)...)
	spec := loadSpec(t, dir, srv.LookupEnv)
	scs := loadScenarios(t, dir, spec, "responder")
	if len(scs) != 2 {
		t.Fatalf("%d scenarios, want 2", len(scs))
	}
	r := &eval.Runner{Spec: spec, FS: os.DirFS(dir), Runners: runners(srv), LookupEnv: srv.LookupEnv, WorkDir: t.TempDir()}
	results, err := r.Run(context.Background(), scs)
	if err != nil {
		t.Fatal(err)
	}
	pass := results[0]
	if !pass.Pass || pass.Source != eval.SourceLive || pass.Steps != 3 {
		t.Fatalf("latency scenario: pass %v source %s steps %d failures %q error %q", pass.Pass, pass.Source, pass.Steps, failuresOf(pass), pass.Error)
	}
	if pass.Usage != (agent.Usage{InputTokens: 3300, OutputTokens: 160}) || !near(pass.CostUSD, 0.000591) || !near(pass.SpentUSD, pass.CostUSD) {
		t.Errorf("usage %+v cost %v spent %v, want 3300/160 tokens and $0.000591", pass.Usage, pass.CostUSD, pass.SpentUSD)
	}
	if pass.Decision == nil || pass.Decision.Outcome != "require_approval" || strings.Join(pass.Changed, ",") != "config/app.env" {
		t.Errorf("decision %+v changed %v", pass.Decision, pass.Changed)
	}
	// The alert reached the model as the trigger's input.
	if reqs := srv.Requests(); len(reqs) < 1 || !strings.Contains(reqs[0].Messages[1].Content, `"alertname":"HighLatency"`) {
		t.Errorf("the first request does not carry the alert: %+v", reqs)
	}

	strict := results[1]
	want := []string{
		`evals/responder/strict.hcl:5:21: no changed file matches "config/other.env"; the run changed config/app.env`,
		`evals/responder/strict.hcl:6:21: "config/*.env" must not change, but the run changed config/app.env`,
		`evals/responder/strict.hcl:7:21: no changed file contains "CACHE_TTL=300s" (changed: config/app.env)`,
		`evals/responder/strict.hcl:8:21: "LOG_LEVEL" appears in config/app.env`,
		`evals/responder/strict.hcl:9:21: no changed file matches /TTL=[0-9]+m/ (changed: config/app.env)`,
		`evals/responder/strict.hcl:10:21: /(?m)^CACHE_TTL=/ matches config/app.env`,
		`evals/responder/strict.hcl:11:5: decision is "require_approval", expected "deny": require_approval config/config (1 of sre)`,
		`evals/responder/strict.hcl:12:5: the run cost $0.000591 (3300 input, 160 output tokens), over max_cost_usd = 0.0001`,
		`evals/responder/strict.hcl:13:5: the run took 3 steps, over max_steps = 2`,
	}
	if strict.Pass || strings.Join(failuresOf(strict), "\n") != strings.Join(want, "\n") {
		t.Errorf("strict scenario failures:\n%s\nwant:\n%s", strings.Join(failuresOf(strict), "\n"), strings.Join(want, "\n"))
	}
	if s := eval.Summarize(results); s.Passed != 1 || s.Failed != 1 || s.Agents["responder"].PassRatio() != 0.5 {
		t.Errorf("summary %+v", s)
	}
}

func near(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }

// Record writes each scenario's transcript; Replay then gives the same
// results with no provider at all; a recording of another version of the
// agent is stale: Replay fails the scenario, Auto asks the provider.
func TestRecordThenReplay(t *testing.T) {
	dir := fixture(t, nil)
	rec := filepath.Join(t.TempDir(), "recordings")
	srv := evaltest.NewServer(t, raiseTTL("120s")...)
	spec := loadSpec(t, dir, srv.LookupEnv)
	scs := loadScenarios(t, dir, spec, "")
	if len(scs) != 3 {
		t.Fatalf("%d scenarios, want 3", len(scs))
	}
	run := func(mode eval.Mode, srv *evaltest.Server, spec *hclspec.Spec, scs []*eval.Scenario) []eval.Result {
		t.Helper()
		r := &eval.Runner{Spec: spec, FS: os.DirFS(dir), Runners: runners(srv), Mode: mode, Recordings: rec, LookupEnv: srv.LookupEnv, WorkDir: t.TempDir()}
		res, err := r.Run(context.Background(), scs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	recorded := run(eval.Record, srv, spec, scs)
	for _, r := range recorded {
		if !r.Pass {
			t.Fatalf("%s: %q %s", r.Scenario.Name, failuresOf(r), r.Error)
		}
	}
	file := filepath.Join(rec, "responder", "latency-alert-raises-the-cache-ttl.json")
	if recorded[0].Recording != file {
		t.Fatalf("recorded to %q, want %q", recorded[0].Recording, file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := agent.ParseTranscript(b)
	if err != nil || tr.RunID != eval.RunID(scs[0]) || len(tr.Steps) != 3 {
		t.Fatalf("recording: %v run %s steps %d", err, tr.RunID, len(tr.Steps))
	}
	if bytes.Contains(b, []byte(srv.Key)) {
		t.Fatal("the recording holds the API key")
	}
	// The exec agent is not recorded: its command is deterministic.
	if _, err := os.Stat(filepath.Join(rec, "sorter")); !os.IsNotExist(err) {
		t.Errorf("exec agent recorded: %v", err)
	}

	offline := evaltest.NewServer(t) // answers nothing
	replayed := run(eval.Replay, offline, spec, scs)
	for i, r := range replayed {
		want := recorded[i]
		if !r.Pass || r.Usage != want.Usage || r.CostUSD != want.CostUSD || r.SpentUSD != 0 || r.Steps != want.Steps ||
			strings.Join(r.Changed, ",") != strings.Join(want.Changed, ",") || (r.Decision == nil) != (want.Decision == nil) {
			t.Errorf("%s replayed: %+v\nrecorded: %+v", r.Scenario.Name, r, want)
		}
	}
	if replayed[0].Source != eval.SourceRecording || len(offline.Requests()) != 0 {
		t.Errorf("replay source %s, %d requests", replayed[0].Source, len(offline.Requests()))
	}

	// A new prompt: the recording is stale.
	agentFile := filepath.Join(dir, "agents", "responder.hcl")
	src, _ := os.ReadFile(agentFile)
	if err := os.WriteFile(agentFile, bytes.Replace(src, []byte("raise CACHE_TTL"), []byte("raise CACHE_TTL a lot"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	spec2 := loadSpec(t, dir, offline.LookupEnv)
	scs2 := loadScenarios(t, dir, spec2, "responder")
	if eval.RunID(scs2[0]) == eval.RunID(scs[0]) {
		t.Fatal("a new prompt kept the run id")
	}
	stale := run(eval.Replay, offline, spec2, scs2)[0]
	if stale.Pass || !strings.Contains(stale.Error, "no recording for this scenario") || !strings.Contains(stale.Error, "--record") {
		t.Errorf("stale recording replayed: pass %v error %q", stale.Pass, stale.Error)
	}
	live := evaltest.NewServer(t, raiseTTL("120s")...)
	auto := run(eval.Auto, live, loadSpec(t, dir, live.LookupEnv), loadScenarios(t, dir, loadSpec(t, dir, live.LookupEnv), "responder"))[0]
	if !auto.Pass || auto.Source != eval.SourceLive || live.Left() != 0 {
		t.Errorf("auto with a stale recording: pass %v source %s left %d %q", auto.Pass, auto.Source, live.Left(), failuresOf(auto))
	}
}

// Exec agents run their command in the workspace, with the overlay.
func TestExecScenarios(t *testing.T) {
	dir := fixture(t, nil)
	srv := evaltest.NewServer(t)
	spec := loadSpec(t, dir, srv.LookupEnv)
	scs := loadScenarios(t, dir, spec, "sorter")
	r := &eval.Runner{Spec: spec, FS: os.DirFS(dir), Runners: runners(srv), WorkDir: t.TempDir()}
	results, err := r.Run(context.Background(), scs)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results", len(results))
	}
	for _, res := range results {
		if !res.Pass || res.Source != eval.SourceExec {
			t.Errorf("%s: pass %v source %s failures %q error %q changed %v", res.Scenario.Name, res.Pass, res.Source, failuresOf(res), res.Error, res.Changed)
		}
	}
	if got := strings.Join(results[0].Changed, ","); got != "config/new.env,config/other.env" {
		t.Errorf("changed %s", got)
	}
	if results[1].Decision != nil {
		t.Errorf("an unchanged run was decided: %+v", results[1].Decision)
	}
}

// Bad eval files: every diagnostic, at the tightest range.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            []string
	}{
		{"syntax", "evals/responder/x.hcl", "scenario \"a\" {\n  expect {\n", []string{
			`evals/responder/x.hcl:2:10: Unclosed configuration block`}},
		{"unknown agent", "evals/responderr/x.hcl", "scenario \"a\" {\n  expect {\n    changed = [\"x\"]\n  }\n}\n", []string{
			`evals/responderr/x.hcl:1:1: Unknown agent: evals/responderr/x.hcl tests agent "responderr", which agents/*.hcl does not declare: put the evals of an agent in evals/<agent name>/ ("responder", "sorter"). Did you mean "responder"?`}},
		{"bad values", "evals/responder/x.hcl", `scenario "a" {
  trigger = "alrt"
  input   = "{not json"
  file "deploy/x.yaml" {
    content = "x"
  }
  file "config/a.env" {
  }
  expect {
    changed  = ["config/[", "ok"]
    matches  = ["(unclosed"]
    decision = "allow"
    max_steps = 0
    max_cost_usd = -1
  }
}
`, []string{
			`evals/responder/x.hcl:2:13: Invalid trigger: "alrt" is not a trigger: use "manual", "schedule", "alert", "spec". Did you mean "alert"?`,
			`evals/responder/x.hcl:3:13: Invalid input: input is not valid JSON: write the payload as JSON (an Alertmanager notification for an alert trigger), or as an HCL object.`,
			`evals/responder/x.hcl:4:8: File outside the agent's workspace: Agent "responder" sees only its scope ("config/**") and the files its command runs, so "deploy/x.yaml" would not be in its workspace: lay over a file it can see, or widen its scope.`,
			`evals/responder/x.hcl:7:3: Missing content: file "config/a.env" needs content = "..." (or file("name")), or delete = true to remove it from the workspace.`,
			`evals/responder/x.hcl:10:17: Invalid glob: "config/[" is not a valid glob: use * within a path segment, ** across segments, {a,b} and [a-z].`,
			`evals/responder/x.hcl:11:17: Invalid regular expression: "(unclosed": error parsing regexp: missing closing ): ` + "`(unclosed`" + `. The syntax is Go's (RE2); to match text as written, use contains instead.`,
			`evals/responder/x.hcl:12:16: Invalid decision: "allow" is not a decision: expect "require_approval" or "deny". There is no "allow": every change needs at least one reviewed merge.`,
			`evals/responder/x.hcl:14:20: Invalid cost: max_cost_usd is the most the run may cost in US dollars, 0 or more.`,
			`evals/responder/x.hcl:13:17: Invalid step count: max_steps is the most model calls the run may make, at least 1.`,
		}},
		{"structure", "evals/responder/x.hcl", `scenario "a" {
  expect {}
}
scenario "A" {
  expect { max_steps = 3 }
}
scenario "b" {
  input = file("../../../etc/passwd")
}
scenario "c" {
  colour = "red"
  expect { changed = [""] }
}
`, []string{
			`evals/responder/x.hcl:2:3: Empty expect block: Scenario "a" checks nothing: add an expectation, such as changed = ["config/*.env"] or decision = "require_approval".`,
			`evals/responder/x.hcl:4:10: Duplicate scenario: A scenario of agent "responder" named "A" (recorded as a.json) is already declared at evals/responder/x.hcl:1,1-13; scenario names must be unique per agent.`,
			`evals/responder/x.hcl:8:17: Invalid function argument: Invalid value for "path" parameter: path "../../../etc/passwd" leaves the repository.`,
			`evals/responder/x.hcl:7:1: Missing expect block: Scenario "b" checks nothing: add expect { } with what the run must do, such as changed = ["config/*.env"] or decision = "require_approval".`,
			`evals/responder/x.hcl:11:3: Unsupported argument: An argument named "colour" is not expected here.`,
			`evals/responder/x.hcl:12:23: Empty expectation: An empty string in changed checks nothing: remove it.`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fixture(t, map[string]string{tt.file: tt.src})
			spec := loadSpec(t, dir, nil)
			scs, diags := eval.Load(os.DirFS(dir), spec, "")
			if !diags.HasErrors() || scs != nil {
				t.Fatalf("loaded %d scenarios, diagnostics %v", len(scs), diags)
			}
			var got []string
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != tt.file {
					continue
				}
				got = append(got, pos(*d.Subject)+": "+d.Summary+": "+d.Detail)
			}
			if tt.name == "syntax" {
				got = []string{pos(*diags[0].Subject) + ": " + diags[0].Summary}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func pos(r hcl.Range) string { return eval.Pos(r) }

// The metrics file is what the node exporter's textfile collector and
// promtool accept, with a pass ratio per agent.
func TestWriteMetrics(t *testing.T) {
	dir := fixture(t, nil)
	srv := evaltest.NewServer(t)
	spec := loadSpec(t, dir, srv.LookupEnv)
	scs := loadScenarios(t, dir, spec, "")
	results := []eval.Result{{Scenario: scs[0], Pass: false, CostUSD: 0.25}, {Scenario: scs[1], Pass: true}, {Scenario: scs[2], Pass: true}}
	var buf bytes.Buffer
	if err := eval.WriteMetrics(&buf, results, 1767225600); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, buf.String())
	}
	got := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"reconciler_eval_pass_ratio,agent=responder":              0,
		"reconciler_eval_pass_ratio,agent=sorter":                 1,
		"reconciler_eval_scenarios,agent=responder,result=failed": 1,
		"reconciler_eval_scenarios,agent=responder,result=passed": 0,
		"reconciler_eval_scenarios,agent=sorter,result=failed":    0,
		"reconciler_eval_scenarios,agent=sorter,result=passed":    2,
		"reconciler_eval_cost_usd,agent=responder":                0.25,
		"reconciler_eval_cost_usd,agent=sorter":                   0,
		"reconciler_eval_last_run_timestamp_seconds":              1767225600,
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (apt-get install --no-install-recommends prometheus): the file is not linted")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, buf.String())
	}
}
