package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sashabaranov/go-openai"

	"github.com/agentgitops/reconciler/examples"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/metrics"
)

// roiFixture is examples/repo-layout with two more agents, so that a
// pass has every kind of figure ROI reports: runbook-writer, a model
// agent on a scripted OpenAI-compatible server (the one fake: no model
// runs here), which costs money; and broken, an exec agent whose command
// fails. With the example's two exec agents, one pass opens three
// proposals, which mergeAll merges as the reviewer rita.
type roiFixture struct {
	dir, bare, key string
	model          *scriptedModel
}

const (
	runbookAgent = `agent "runbook-writer" {
  description = "Keep a runbook for payments-api"
  provider    = provider.openai.default
  model       = "gpt-4o-mini"
  prompt      = "Write runbooks/payments-api.md from config/payments-api.env."
  tools       = ["read_file", "write_file", "finish"]

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["runbooks/**"]
  }

  limits {
    max_steps  = 6
    max_tokens = 1000000
    timeout    = "1m"
  }

  work_unit {
    kind          = "runbook"
    human_minutes = 30
  }
}
`
	brokenAgent = `agent "broken" {
  description = "An agent whose command fails"
  provider    = provider.exec.local
  command     = ["sh", "tools/broken.sh"]

  trigger {
    on_spec_change = true
  }

  scope {
    paths = ["out/**"]
  }

  work_unit {
    kind          = "chore"
    human_minutes = 5
  }
}
`
	// Tokens the scripted model reports per reply; at gpt-4o-mini's
	// price in the example (0.15 and 0.60 USD per million) a run of
	// three replies costs 3 * (0.015 + 0.006) = 0.063 USD.
	scriptedIn, scriptedOut = 100000, 10000
)

func newROIFixture(t *testing.T) *roiFixture {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	f := &roiFixture{dir: t.TempDir()}
	f.key = filepath.Join(f.dir, "ledger.key")
	var out, errb syncBuffer
	if code := run(context.Background(), []string{"keygen", "--out", f.key}, &out, &errb); code != exitOK {
		t.Fatalf("keygen: %s", errb.String())
	}
	spec := filepath.Join(f.dir, "spec")
	if err := copyFS(spec, examples.RepoLayout()); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"agents/runbook-writer.hcl": runbookAgent,
		"agents/broken.hcl":         brokenAgent,
		"tools/broken.sh":           "#!/bin/sh\necho 'the check this agent runs failed' >&2\nexit 3\n",
	} {
		if err := os.WriteFile(filepath.Join(spec, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.bare = gittest.NewBare(t, spec)
	f.model = newScriptedModel(t)
	t.Setenv("OPENAI_BASE_URL", f.model.srv.URL+"/v1")
	t.Setenv("OPENAI_API_KEY", "sk-roi-test")
	return f
}

// scriptedModel answers the runbook-writer's three steps: read the config,
// write the runbook, finish.
type scriptedModel struct {
	srv  *httptest.Server
	mu   sync.Mutex
	errs []string
}

func newScriptedModel(t *testing.T) *scriptedModel {
	m := &scriptedModel{}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(func() {
		m.srv.Close()
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range m.errs {
			t.Errorf("scripted model: %s", e)
		}
	})
	return m
}

func (m *scriptedModel) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(format string, args ...any) {
		m.mu.Lock()
		m.errs = append(m.errs, fmt.Sprintf(format, args...))
		m.mu.Unlock()
		http.Error(w, fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-roi-test" {
		fail("unexpected %s %s", r.Method, r.URL.Path)
		return
	}
	var req openai.ChatCompletionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail("decode: %v", err)
		return
	}
	step := 0
	for _, msg := range req.Messages {
		if msg.Role == openai.ChatMessageRoleTool {
			step++
		}
	}
	name, args := "read_file", `{"path":"config/payments-api.env"}`
	switch step {
	case 0:
	case 1:
		name, args = "write_file", `{"path":"runbooks/payments-api.md","content":"# payments-api\n\nRestart with care: DB_POOL_SIZE is 20.\n"}`
	default:
		name, args = "finish", `{"summary":"Add a runbook for payments-api","rationale":"Read config/payments-api.env.","risk":"low"}`
	}
	resp := openai.ChatCompletionResponse{
		ID: fmt.Sprintf("chatcmpl-%d", step), Object: "chat.completion", Created: 1767225600, Model: req.Model,
		Choices: []openai.ChatCompletionChoice{{
			Message: openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, ToolCalls: []openai.ToolCall{{
				ID: fmt.Sprintf("call_%d", step), Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args},
			}}},
			FinishReason: openai.FinishReasonToolCalls,
		}},
		Usage: openai.Usage{PromptTokens: scriptedIn, CompletionTokens: scriptedOut, TotalTokens: scriptedIn + scriptedOut},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// daemon is a `reconciler run` started in process with the CLI's entry.
type daemon struct {
	base     string // http://ADDR
	cancel   context.CancelFunc
	done     chan int
	out, err *syncBuffer
}

var servingLine = regexp.MustCompile(`reconciler: serving on (http://\S+)`)

// startDaemon runs `reconciler run` on the fixture's repository with the
// cache directory and listen address, every second, and waits until it
// serves.
func (f *roiFixture) startDaemon(t *testing.T, cache, listen string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan int, 1), out: &syncBuffer{}, err: &syncBuffer{}}
	go func() {
		d.done <- run(ctx, []string{"run", "--repo", f.bare, "--key", f.key, "--interval", "1s", "--listen", listen,
			"--cache-dir", cache, "--human-hourly-usd", "100", "--identity", "Reconciler <reconciler@example.com>"}, d.out, d.err)
	}()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := servingLine.FindStringSubmatch(d.out.String()); m != nil {
			d.base = m[1]
			return d
		}
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("the daemon exited %d before serving: %s", code, d.err.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("the daemon did not start serving: %s", d.err.String())
	return nil
}

// stop ends the daemon and waits for it; stopping twice is a no-op.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case code := <-d.done:
		if code != exitOK {
			t.Errorf("the daemon exited %d: %s", code, d.err.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop")
	}
}

// scrape returns the daemon's /metrics as sample -> value.
func (d *daemon) scrape(t *testing.T) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get(d.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s %v", resp.Status, err)
	}
	return parseExposition(t, string(b)), string(b)
}

// parseExposition reads the reconciler_ samples of a text exposition:
// `name{labels} value` -> value, labels as the exporter writes them.
func parseExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "reconciler_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitFor scrapes until cond holds on the samples.
func (d *daemon) waitFor(t *testing.T, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, text := d.scrape(t)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: /metrics\n%s\nstderr:\n%s", what, grepLines(text, "reconciler_"), d.err.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grepLines(text, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// proposalAgents are the agents whose first run proposes a change.
var proposalAgents = []string{"env-normaliser", "image-pinner", "runbook-writer"}

func openProposals(s map[string]float64) bool {
	for _, a := range proposalAgents {
		if s[`reconciler_proposals_open{agent="`+a+`"}`] != 1 {
			return false
		}
	}
	return s[`reconciler_agent_runs_total{agent="broken",outcome="failed"}`] == 1
}

func mergedAll(s map[string]float64) bool {
	n := 0.0
	for k, v := range s {
		if strings.HasPrefix(k, "reconciler_work_units_total{") && strings.Contains(k, `outcome="merged"`) {
			n += v
		}
	}
	return n == float64(len(proposalAgents))
}

// mergeAll merges every proposal branch into main as rita, whose group
// accepts unsigned merges in the example, and pushes.
func (f *roiFixture) mergeAll(t *testing.T) {
	t.Helper()
	work := gittest.Clone(t, f.bare)
	rita := gittest.Env("Rita Reviewer", "rita@example.com")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = work, rita
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	branches := strings.Fields(git("for-each-ref", "--format=%(refname:short)", "refs/remotes/origin/agents/"))
	if len(branches) != len(proposalAgents) {
		t.Fatalf("proposal branches %v, want one of each of %v", branches, proposalAgents)
	}
	for _, b := range branches {
		git("merge", "-q", "--no-ff", "-m", "Merge "+b, b)
	}
	git("push", "-q", "origin", "main")
}

// roiReport runs `reconciler roi` on the fixture and decodes its JSON.
func (f *roiFixture) roiReport(t *testing.T, args ...string) metrics.Report {
	t.Helper()
	var out, errb syncBuffer
	if code := run(context.Background(), append([]string{"roi", "--repo", f.bare, "--format", "json", "--human-hourly-usd", "100"}, args...), &out, &errb); code != exitOK {
		t.Fatalf("roi exited %d: %s", code, errb.String())
	}
	var rep metrics.Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("roi --format json: %v\n%s", err, out.String())
	}
	return rep
}

// checkAgree fails the test where the report and the exporter's samples
// (from /metrics or read back through Prometheus) differ: every run
// outcome, work unit, value, cost and ratio, per agent, and the ledger's
// length.
func checkAgree(t *testing.T, rep metrics.Report, s map[string]float64) {
	t.Helper()
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s: roi says %g, the metric %g", what, got, want)
		}
	}
	near("ledger entries", float64(rep.LedgerEntries), s["reconciler_ledger_entries_total"])
	for _, a := range rep.Agents {
		l := func(name string, kv ...string) string {
			var parts []string
			for i := 0; i < len(kv); i += 2 {
				parts = append(parts, kv[i]+`="`+kv[i+1]+`"`)
			}
			return name + "{" + strings.Join(parts, ",") + "}"
		}
		for outcome, n := range a.Outcomes {
			near(a.Agent+" "+outcome, float64(n), s[l("reconciler_agent_runs_total", "agent", a.Agent, "outcome", outcome)])
		}
		for _, k := range a.Kinds {
			for outcome, n := range k.WorkUnits {
				near(a.Agent+" "+k.Kind+" "+outcome, float64(n), s[l("reconciler_work_units_total", "agent", a.Agent, "kind", k.Kind, "outcome", outcome)])
			}
		}
		near(a.Agent+" value", a.ValueUSD, s[l("reconciler_work_unit_value_usd_total", "agent", a.Agent)])
		near(a.Agent+" roi", a.ROI, s[l("reconciler_agent_roi_ratio", "agent", a.Agent)])
		spent := 0.0
		for k, v := range s {
			if strings.HasPrefix(k, `reconciler_agent_cost_usd_total{agent="`+a.Agent+`",`) {
				spent += v
			}
		}
		near(a.Agent+" cost", a.CostUSD, spent)
	}
}

// The daemon's /metrics and `reconciler roi` give the same figures for
// the same ledger, and the figures are the ones the fixture's runs make.
func TestROICommand(t *testing.T) {
	f := newROIFixture(t)
	d := f.startDaemon(t, filepath.Join(f.dir, "cache"), "127.0.0.1:0")
	d.waitFor(t, "three open proposals and a failed run", openProposals)
	f.mergeAll(t)
	s := d.waitFor(t, "the three merges", mergedAll)
	d.stop(t) // the ledger stays as it is from here on
	rep := f.roiReport(t)
	checkAgree(t, rep, s)

	byAgent := map[string]metrics.AgentROI{}
	for _, a := range rep.Agents {
		byAgent[a.Agent] = a
	}
	rw := byAgent["runbook-writer"]
	if rw.CostUSD != 0.063 && math.Abs(rw.CostUSD-0.063) > 1e-12 {
		t.Errorf("runbook-writer cost %g, want 0.063 (three replies of %d in, %d out at 0.15/0.60 per million)", rw.CostUSD, scriptedIn, scriptedOut)
	}
	if want := 50 / rw.CostUSD; rw.ValueUSD != 50 || rw.ROI != want {
		t.Errorf("runbook-writer value %g ROI %g, want 50 (30 min at 100/h) and %g", rw.ValueUSD, rw.ROI, want)
	}
	if env := byAgent["env-normaliser"]; math.Abs(env.ValueUSD-100.0/6) > 1e-9 || env.ROI != 0 || env.WorkUnits["merged"] != 1 {
		t.Errorf("env-normaliser: %+v, want 10 min at 100/h merged, ROI 0 (nothing spent)", env.Figures)
	}
	// run.failed records the agent's work unit (the default kind, chore,
	// as broken declares none), so the failure counts against its kind.
	if b := byAgent["broken"]; b.Runs != 1 || b.Outcomes["failed"] != 1 || len(b.Kinds) != 1 || b.Kinds[0].Kind != "chore" {
		t.Errorf("broken: %+v", b)
	}
	if rep.Total.Runs != 4 || rep.Total.WorkUnits["merged"] != 3 || rep.Total.ROI != rep.Total.ValueUSD/rep.Total.CostUSD {
		t.Errorf("total: %+v", rep.Total)
	}

	t.Run("since", func(t *testing.T) {
		if rep := f.roiReport(t, "--since", "1h"); rep.Total.Runs != 4 || rep.Since.IsZero() {
			t.Errorf("--since 1h: %+v", rep.Total)
		}
		if rep := f.roiReport(t, "--since", time.Now().Add(time.Minute).UTC().Format(time.RFC3339)); rep.Total.Runs != 0 || len(rep.Agents) != 0 {
			t.Errorf("--since a minute from now: %+v", rep)
		}
	})
	t.Run("text", func(t *testing.T) {
		var out, errb syncBuffer
		if code := run(context.Background(), []string{"roi", "--repo", f.bare}, &out, &errb); code != exitOK {
			t.Fatalf("roi exited %d: %s", code, errb.String())
		}
		text := out.String()
		t.Logf("reconciler roi --repo ORIGIN:\n%s", text)
		for _, re := range []string{
			`(?m)^ROI of every run: ledger of \d+ entries \(head [0-9a-f]{12}\), human work at 100\.00 USD/h$`,
			`(?m)^AGENT +KIND +RUNS +CHANGED +NO-CHANGE +DUPLICATE +FAILED +MERGED +REJECTED +SUPERSEDED +VALUE-USD +COST-USD +ROI\s*$`,
			`(?m)^runbook-writer +runbook +1 +1 +0 +0 +0 +1 +0 +0 +50\.00 +0\.0630 +793\.65\s*$`,
			`(?m)^env-normaliser +config-hygiene +1 +1 +0 +0 +0 +1 +0 +0 +16\.67 +0\.0000 +-\s*$`,
			`(?m)^broken +chore +1 +0 +0 +0 +1 +0 +0 +0 +0\.00 +0\.0000 +-\s*$`,
			`(?m)^TOTAL +- +4 +3 +0 +0 +1 +3 +0 +0 +100\.00 +0\.0630 +1587\.30\s*$`,
		} {
			if !regexp.MustCompile(re).MatchString(text) {
				t.Errorf("the report does not match %s", re)
			}
		}
	})
}

func TestROIUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"roi"}, exitUsage, "--repo is required"},
		{[]string{"roi", "--repo", missing, "--format", "xml"}, exitUsage, `--format "xml"`},
		{[]string{"roi", "--repo", missing, "--since", "last week"}, exitUsage, `--since "last week"`},
		{[]string{"roi", "--repo", missing, "--human-hourly-usd", "-1"}, exitUsage, "--human-hourly-usd -1"},
		{[]string{"roi", "--repo", missing, "--hourly-usd", "NaN"}, exitUsage, "--human-hourly-usd NaN"},
		{[]string{"roi", "--repo", missing, "extra"}, exitUsage, "roi takes no arguments"},
		{[]string{"roi", "--repo", missing}, exitFail, "reconciler: "},
		{[]string{"roi", "-h"}, exitOK, "reconciler_agent_roi_ratio exports the same ratio"},
	} {
		var out, errb syncBuffer
		if code := run(context.Background(), tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}
