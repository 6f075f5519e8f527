package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/eval/evaltest"
)

var updateEvals = flag.Bool("update-evals", false, "record the example's evals again from examples/incident/conversation.json")

func evalFixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../eval/testdata/repo")); err != nil {
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

// ttlScript is the fixture's responder conversation: read, edit, finish.
func ttlScript() []openai.ChatCompletionResponse {
	return []openai.ChatCompletionResponse{
		evaltest.ToolCall("1", "read_file", `{"path":"config/app.env"}`, 1000, 30),
		evaltest.ToolCall("2", "edit_file", `{"path":"config/app.env","old_text":"CACHE_TTL=30s","new_text":"CACHE_TTL=120s"}`, 1100, 60),
		evaltest.ToolCall("3", "finish", `{"summary":"Raise CACHE_TTL","rationale":"latency follows cache misses","risk":"low"}`, 1200, 70),
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// reconciler eval records against a provider (a scripted server on
// 127.0.0.1: a hosted model cannot run here), replays offline with the
// same results, fails with positions, and writes a metrics file promtool
// accepts.
func TestEvalCommand(t *testing.T) {
	dir := evalFixture(t, nil)
	rec := filepath.Join(t.TempDir(), "rec")
	srv := evaltest.NewServer(t, ttlScript()...)
	t.Setenv("OPENAI_BASE_URL", srv.URL)
	t.Setenv("OPENAI_API_KEY", srv.Key)

	code, out, errs := runCLI("eval", dir, "--record", rec)
	want := []string{
		"PASS evals/responder/latency.hcl:1:1 responder/latency alert raises the cache TTL (live, 3 steps, $0.000591)",
		"PASS evals/sorter/sort.hcl:1:1 sorter/unsorted keys are sorted (exec)",
		"PASS evals/sorter/sort.hcl:13:1 sorter/a sorted file is left alone (exec)",
		"3 passed, 0 failed",
	}
	if code != exitOK || out != strings.Join(want, "\n")+"\n" || errs != "" {
		t.Fatalf("record: exit %d\n%s\nstderr %s", code, out, errs)
	}
	if srv.Left() != 0 {
		t.Fatalf("%d responses not asked for", srv.Left())
	}

	// Offline: nothing answers, and the recording does.
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
	metrics := filepath.Join(t.TempDir(), "evals.prom")
	code, out, errs = runCLI("eval", "--replay", rec, dir, "--metrics-file", metrics)
	if code != exitOK || !strings.Contains(out, "PASS evals/responder/latency.hcl:1:1 responder/latency alert raises the cache TTL (recording, 3 steps, $0.000591)\n") || !strings.HasSuffix(out, "3 passed, 0 failed\n") {
		t.Fatalf("replay: exit %d\n%s\nstderr %s", code, out, errs)
	}
	prom, err := os.ReadFile(metrics)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`reconciler_eval_pass_ratio{agent="responder"} 1`, `reconciler_eval_pass_ratio{agent="sorter"} 1`, `reconciler_eval_scenarios{agent="sorter",result="passed"} 2`} {
		if !strings.Contains(string(prom), line+"\n") {
			t.Errorf("metrics file lacks %q:\n%s", line, prom)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(prom)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	// JSON, against the documented schema.
	code, out, _ = runCLI("eval", dir, "--replay", rec, "--format", "json", "--agent", "responder")
	if code != exitOK {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
	checkEvalSchema(t, []byte(out))
	var rep struct {
		Passed    int `json:"passed"`
		Scenarios []struct {
			Agent, Source, Recording string
			RunID                    string `json:"run_id"`
			Steps                    int
			Usage                    struct {
				InputTokens int64 `json:"input_tokens"`
			}
			Changed  []string
			Decision struct{ Outcome string }
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Passed != 1 || len(rep.Scenarios) != 1 || rep.Scenarios[0].Source != "recording" || rep.Scenarios[0].Usage.InputTokens != 3300 ||
		rep.Scenarios[0].Decision.Outcome != "require_approval" || strings.Join(rep.Scenarios[0].Changed, ",") != "config/app.env" ||
		rep.Scenarios[0].Recording != filepath.Join(rec, "responder", "latency-alert-raises-the-cache-ttl.json") {
		t.Errorf("json report: %s", out)
	}

	// A failing scenario: exit 1, FAIL at its position, each failure at
	// the expectation's, and the counts last.
	failing := evalFixture(t, map[string]string{"evals/sorter/wrong.hcl": `scenario "expects too much" {
  file "config/new.env" {
    content = "Z=26\nA=1\n"
  }
  expect {
    unchanged = ["config/new.env"]
    decision  = "deny"
  }
}
`})
	code, out, _ = runCLI("eval", failing, "--agent", "sorter")
	want = []string{
		"PASS evals/sorter/sort.hcl:1:1 sorter/unsorted keys are sorted (exec)",
		"PASS evals/sorter/sort.hcl:13:1 sorter/a sorted file is left alone (exec)",
		"FAIL evals/sorter/wrong.hcl:1:1 sorter/expects too much (exec)",
		`    evals/sorter/wrong.hcl:6:18: "config/new.env" must not change, but the run changed config/new.env`,
		`    evals/sorter/wrong.hcl:7:5: decision is "require_approval", expected "deny": require_approval config/config (1 of sre)`,
		"2 passed, 1 failed",
	}
	if code != exitFail || out != strings.Join(want, "\n")+"\n" {
		t.Errorf("failing: exit %d\n%s\nwant\n%s", code, out, strings.Join(want, "\n"))
	}
	code, out, _ = runCLI("eval", failing, "--agent", "sorter", "--format", "json")
	checkEvalSchema(t, []byte(out))
	if code != exitFail || !strings.Contains(out, `"pos": "evals/sorter/wrong.hcl:6:18"`) {
		t.Errorf("failing json: exit %d\n%s", code, out)
	}

	// Replay without a recording fails the scenario, naming the fix.
	code, out, _ = runCLI("eval", dir, "--replay", t.TempDir(), "--agent", "responder")
	if code != exitFail || !strings.Contains(out, "no recording for this scenario") || !strings.Contains(out, "--record") {
		t.Errorf("missing recording: exit %d\n%s", code, out)
	}

	// A broken eval file is reported like validate reports the spec.
	broken := evalFixture(t, map[string]string{"evals/responder/bad.hcl": "scenario \"x\" {\n  trigger = \"alrt\"\n  expect {\n    max_steps = 1\n  }\n}\n"})
	code, out, _ = runCLI("eval", broken)
	if code != exitFail || !strings.Contains(out, "Error: Invalid trigger") || !strings.Contains(out, "on evals/responder/bad.hcl line 2") || !strings.Contains(out, `Did you mean "alert"?`) || strings.Contains(out, "passed") {
		t.Errorf("broken: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI("eval", broken, "--format", "json")
	checkEvalSchema(t, []byte(out))
	if code != exitFail || !strings.Contains(out, `"summary": "Invalid trigger"`) {
		t.Errorf("broken json: exit %d\n%s", code, out)
	}
}

func TestEvalUsage(t *testing.T) {
	dir := evalFixture(t, nil)
	for _, tt := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"eval", dir, "--record", "a", "--replay", "b"}, exitUsage, "--record and --replay exclude each other"},
		{[]string{"eval", dir, "--format", "xml"}, exitUsage, "use text or json"},
		{[]string{"eval", dir, "x"}, exitUsage, "one directory"},
		{[]string{"eval", dir, "--agent", "respondr"}, exitUsage, `--agent "respondr": no such agent`},
		{[]string{"eval", t.TempDir()}, exitFail, "holds no desired-state spec"},
		{[]string{"eval", "-h"}, exitOK, "--replay DIR   replay only"},
	} {
		code, _, errs := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.err) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tt.args, code, errs, tt.code, tt.err)
		}
	}
}

func checkEvalSchema(t *testing.T, out []byte) {
	t.Helper()
	const schemaPath = "../../docs/eval-report.schema.json"
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaPath, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("output does not match %s: %v\n%s", schemaPath, err, out)
	}
}

// The example's evals pass offline, from the committed recording of the
// incident-responder (and the exec agents' commands in the sandbox), with
// no provider reachable. -update-evals records the model agent's scenario
// again from examples/incident/conversation.json, served by a scripted
// server on 127.0.0.1 (a hosted model cannot run here): run it after
// changing the agent, its prompt or its provider.
func TestExampleEvals(t *testing.T) {
	examples := filepath.Join("..", "..", "examples", "repo-layout")
	rec := filepath.Join(examples, "evals", "recordings")
	if *updateEvals {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "incident", "conversation.json"))
		if err != nil {
			t.Fatal(err)
		}
		var script []openai.ChatCompletionResponse
		if err := json.Unmarshal(b, &script); err != nil {
			t.Fatal(err)
		}
		srv := evaltest.NewServer(t, script...)
		t.Setenv("OPENAI_BASE_URL", srv.URL)
		t.Setenv("OPENAI_API_KEY", srv.Key)
		if code, out, errs := runCLI("eval", examples, "--agent", "incident-responder", "--record", rec); code != exitOK {
			t.Fatalf("record: exit %d\n%s%s", code, out, errs)
		}
	}
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
	t.Setenv("OPENAI_API_KEY", "")
	code, out, errs := runCLI("eval", examples, "--replay", rec)
	for _, line := range []string{
		"PASS evals/env-normaliser/normalise.hcl:1:1 env-normaliser/a repeated key keeps its last value (exec)",
		"PASS evals/image-pinner/pin.hcl:6:1 image-pinner/tags are pinned to the approved digests (exec)",
		"PASS evals/incident-responder/latency.hcl:7:1 incident-responder/latency alert raises the cache TTL (recording, 4 steps, $0.001764)",
		"5 passed, 0 failed",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("missing %q", line)
		}
	}
	if code != exitOK || errs != "" {
		t.Errorf("exit %d\n%s\nstderr %s\n(after changing the incident-responder, record again: go test ./cmd/reconciler -run TestExampleEvals -update-evals)", code, out, errs)
	}
}
