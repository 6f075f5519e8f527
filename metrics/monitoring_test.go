package metrics_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/agentgitops/reconciler/metrics"
)

// monitoring is where the example dashboard and rules live.
var monitoring = filepath.Join("..", "examples", "monitoring")

// promtool returns the path of promtool, skipping the test without it
// outside CI; in CI (.ci/run installs Debian's prometheus package) its
// absence fails the test, so that CI never skips what it must check.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("promtool is not installed, and CI must run this test: .ci/run installs Debian's prometheus package (%v)", err)
	}
	t.Skip("promtool is not installed (apt-get install --no-install-recommends prometheus): the example rules are not checked")
	return ""
}

func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = monitoring
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestRulesCheck(t *testing.T) {
	out := runPromtool(t, "check", "rules", "recording-rules.yml", "alerting-rules.yml")
	if strings.Count(out, "SUCCESS") != 2 {
		t.Errorf("promtool check rules:\n%s", out)
	}
	// The example configuration loads both rule files.
	if out := runPromtool(t, "check", "config", "prometheus.yml"); !strings.Contains(out, "SUCCESS: 2 rule files found") {
		t.Errorf("promtool check config:\n%s", out)
	}
}

// The unit tests of the rules pass, and test every alert, firing and
// not.
func TestRulesUnitTests(t *testing.T) {
	out := runPromtool(t, "test", "rules", "rules-test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
	alerts := readFile(t, "alerting-rules.yml")
	tests := readFile(t, "rules-test.yml")
	names := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(alerts, -1)
	if len(names) < 6 {
		t.Fatalf("alerting-rules.yml has %d alerts", len(names))
	}
	for _, m := range names {
		cases := regexp.MustCompile(`(?m)^\s*alertname: `+regexp.QuoteMeta(m[1])+`\n\s*exp_alerts:(.*)$`).FindAllStringSubmatch(tests, -1)
		fires, quiet := false, false
		for _, c := range cases {
			if strings.TrimSpace(c[1]) == "[]" {
				quiet = true
			} else {
				fires = true
			}
		}
		if !fires || !quiet {
			t.Errorf("rules-test.yml tests %s firing %v, not firing %v: test both", m[1], fires, quiet)
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoring, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exported returns the names the exporter exposes once it has seen a spec,
// a ledger and a pass: each family, and a histogram's _bucket, _sum and
// _count series.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New(120)
	m.ObserveSpec(exampleSpec(t), true)
	m.Observe(busyLedger(t).s)
	m.Pass(time.Second, errors.New("failed"))
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+s] = true
			}
		}
	}
	return names
}

// metricName matches the reconciler's series and recording rules in
// PromQL.
var metricName = regexp.MustCompile(`\breconciler[_:][a-z][A-Za-z0-9_:]*`)

// recorded returns the names recording-rules.yml records.
func recorded(t *testing.T) map[string]bool {
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)`).FindAllStringSubmatch(readFile(t, "recording-rules.yml"), -1) {
		out[m[1]] = true
	}
	return out
}

// Every series the rules and the dashboard query is one the exporter
// exposes or a recording rule records, so that none of them reads a
// series that does not exist.
func TestMonitoringNamesExist(t *testing.T) {
	have := exported(t)
	rules := recorded(t)
	for _, file := range []string{"recording-rules.yml", "alerting-rules.yml", "rules-test.yml", "dashboard.json"} {
		text := readFile(t, file)
		if file == "dashboard.json" {
			text = strings.Join(dashboardExprs(t), "\n")
		}
		used := map[string]bool{}
		for _, name := range metricName.FindAllString(text, -1) {
			used[name] = true
			if !have[name] && !rules[name] {
				t.Errorf("%s queries %s, which the exporter does not expose and no recording rule records", file, name)
			}
		}
		if len(used) == 0 {
			t.Errorf("%s queries no reconciler series", file)
		}
	}
}

// dashboardExprs returns every PromQL expression of the dashboard's
// panels, failing the test unless the dashboard is valid JSON of the
// shape Grafana imports.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var d struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(readFile(t, "dashboard.json")))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard.json has no title, uid or panels")
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type string }) bool { return v.Name == "datasource" && v.Type == "datasource" }) {
		t.Errorf("dashboard.json has no datasource variable")
	}
	var exprs, titles []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %q has a target without expr or refId", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	all := strings.Join(titles, "\n")
	for _, topic := range []string{"roi", "spend", "runs by outcome", "open proposals", "approval latency", "policy decisions", "ledger entries", "spec load"} {
		if !strings.Contains(all, topic) {
			t.Errorf("the dashboard has no panel on %s", topic)
		}
	}
	return exprs
}

func TestDashboard(t *testing.T) {
	exprs := dashboardExprs(t)
	joined := strings.Join(exprs, "\n")
	for _, name := range []string{
		"reconciler_agent_roi_ratio", "reconciler_agent_cost_usd_total", "reconciler_agent_runs_total",
		"reconciler_proposals_open", "reconciler:proposal_approval_seconds_bucket:delta1d", "reconciler_policy_decisions_total",
		"reconciler_ledger_entries_total", "reconciler_spec_load_success", "reconciler_ledger_head_info",
	} {
		if !strings.Contains(joined, name) {
			t.Errorf("no panel queries %s", name)
		}
	}
	// Every expression is valid PromQL, as promtool parses it.
	if _, err := exec.LookPath("promtool"); err == nil {
		for _, e := range exprs {
			q := strings.ReplaceAll(strings.ReplaceAll(e, "$job", ".*"), "$__rate_interval", "5m")
			cmd := exec.Command(promtool(t), "check", "rules", "/dev/stdin")
			cmd.Stdin = strings.NewReader("groups:\n  - name: dashboard\n    rules:\n      - record: dashboard:query\n        expr: " + jsonQuote(q) + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("dashboard query %s: %v\n%s", e, err, out)
			}
		}
	}
}

// jsonQuote quotes s as a JSON string, which is a YAML string too.
func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
