package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prometheusBinary returns Debian's prometheus (or one on $PATH); without
// it the test skips, except in CI, where .ci/run installs it and its
// absence fails the test.
func prometheusBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI must run this test: .ci/run installs Debian's prometheus package (%v)", name, err)
	}
	t.Skipf("%s is not installed (apt-get install --no-install-recommends prometheus): the real Prometheus test is skipped", name)
	return ""
}

// promServer is a real Prometheus on 127.0.0.1 scraping one target every
// second, with the example rules loaded.
type promServer struct {
	base string
	cmd  *exec.Cmd
	log  *syncBuffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin := prometheusBinary(t, "prometheus")
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join("..", "..", "examples", "monitoring"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
  - %q
scrape_configs:
  - job_name: reconciler
    static_configs:
      - targets: [%q]
`, filepath.Join(rules, "recording-rules.yml"), filepath.Join(rules, "alerting-rules.yml"), target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &promServer{base: "http://" + addr, log: &syncBuffer{}}
	p.cmd = exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("prometheus did not become ready: %s", p.log.String())
	return nil
}

// promSample is one sample of an instant query's vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query through /api/v1/query.
func (p *promServer) query(t *testing.T, q string) []promSample {
	t.Helper()
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		t.Fatalf("query %s: %s %s (%s)", q, r.Status, r.Error, r.Data.ResultType)
	}
	return r.Data.Result
}

// samples runs q and returns its samples keyed as the exporter writes
// them, name{label="value",...} with the labels sorted, leaving out the
// target's job and instance.
func (p *promServer) samples(t *testing.T, q string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range p.query(t, q) {
		var names []string
		for k := range s.Metric {
			if k != "__name__" && k != "job" && k != "instance" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		var parts []string
		for _, k := range names {
			parts = append(parts, k+`="`+s.Metric[k]+`"`)
		}
		key := s.Metric["__name__"]
		if len(parts) > 0 {
			key += "{" + strings.Join(parts, ",") + "}"
		}
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			t.Fatalf("query %s: value %v", q, s.Value)
		}
		out[key] = v
	}
	return out
}

// waitQuery runs q until cond holds on its samples.
func (p *promServer) waitQuery(t *testing.T, what, q string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		s := p.samples(t, q)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s through Prometheus: %s gives %v", what, q, s)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ledgerTotals are the series rebuilt from the ledger, which a restart
// must leave as they were.
const ledgerTotals = `{job="reconciler",__name__=~"reconciler_agent_runs_total|reconciler_agent_tokens_total|reconciler_agent_cost_usd_total|` +
	`reconciler_work_units_total|reconciler_work_unit_value_usd_total|reconciler_agent_roi_ratio|reconciler_proposals_open|` +
	`reconciler_policy_decisions_total|reconciler_policy_violations_total|reconciler_runs_held_total|reconciler_ledger_entries_total|` +
	`reconciler_ledger_head_info|reconciler_proposal_approval_seconds_bucket|reconciler_proposal_approval_seconds_count|` +
	`reconciler_proposal_approval_seconds_sum|reconciler_spec_load_success"}`

// The exporter under a real Prometheus: it scrapes a running daemon on the
// example (two exec agents, a model agent on a scripted server, an agent
// that fails), the ROI and run series read back through the HTTP API agree
// with `reconciler roi`, and after the daemon restarts on the same cache
// Prometheus reads the very same totals. /metrics passes promtool check
// metrics, and the example rules load and evaluate.
func TestPrometheusScrapesTheDaemon(t *testing.T) {
	promtoolBin := prometheusBinary(t, "promtool")
	f := newROIFixture(t)
	cache := filepath.Join(f.dir, "cache")
	d := f.startDaemon(t, cache, "127.0.0.1:0")
	addr := strings.TrimPrefix(d.base, "http://")
	prom := startPrometheus(t, addr)

	// The series exist before anything merged, at zero where nothing
	// happened yet.
	prom.waitQuery(t, "the first pass's runs", `reconciler_agent_runs_total{job="reconciler"}`, func(s map[string]float64) bool {
		return s[`reconciler_agent_runs_total{agent="broken",outcome="failed"}`] == 1 &&
			s[`reconciler_agent_runs_total{agent="runbook-writer",outcome="changed"}`] == 1
	})
	if s := prom.samples(t, `reconciler_agent_roi_ratio{job="reconciler"}`); len(s) != 5 {
		t.Errorf("ROI series before any merge: %v, want one per agent (5), at 0", s)
	}
	d.waitFor(t, "three open proposals", openProposals)
	f.mergeAll(t)
	d.waitFor(t, "the three merges", mergedAll)
	before := prom.waitQuery(t, "the merges", ledgerTotals, mergedAll)
	roi := prom.samples(t, `reconciler_agent_roi_ratio{job="reconciler"}`)
	if v := roi[`reconciler_agent_roi_ratio{agent="runbook-writer"}`]; v < 793 || v > 794 {
		t.Errorf("runbook-writer's ROI through Prometheus: %g, want 50 USD / 0.063 USD = 793.65", v)
	}
	checkAgree(t, f.roiReport(t), before)

	// promtool lints the exposition Prometheus scraped.
	_, text := d.scrape(t)
	cmd := exec.Command(promtoolBin, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("curl /metrics | grep ^reconciler_ (excerpt):\n%s", excerpt(text))

	// The example rules loaded and evaluate without errors.
	checkRules(t, prom)

	// Restart on the same cache and address: once the new process's first
	// pass is scraped (its pass counter started over), the totals are the
	// ones Prometheus read before.
	d.stop(t)
	d2 := f.startDaemon(t, cache, addr)
	if d2.base != d.base {
		t.Fatalf("the restarted daemon serves on %s, not %s", d2.base, d.base)
	}
	prom.waitQuery(t, "a scrape after the restart's first pass",
		`reconciler_reconcile_duration_seconds_count{job="reconciler"} >= 1 and resets(reconciler_reconcile_duration_seconds_count{job="reconciler"}[2m]) > 0`,
		func(s map[string]float64) bool { return len(s) == 1 })
	after := prom.samples(t, ledgerTotals)
	if len(after) != len(before) {
		t.Errorf("%d series after the restart, %d before", len(after), len(before))
	}
	for k, v := range before {
		if w, ok := after[k]; !ok || w != v {
			t.Errorf("%s: %g before the restart, %g after (present %v)", k, v, w, ok)
		}
	}
	checkAgree(t, f.roiReport(t), after)

	// Neither the ledger growing by a scrape's worth of entries at a time
	// nor the restart's zero before its first pass looks like a ledger
	// moving backwards to the alerts.
	time.Sleep(2 * time.Second) // two more evaluations
	if alerts := prom.query(t, `ALERTS{alertname=~"ReconcilerLedger.*"}`); len(alerts) > 0 {
		t.Errorf("ledger alerts pending or firing on an honest ledger: %v", alerts)
	}
}

// checkRules fails the test unless every rule group of the example loaded
// and its last evaluation had no error.
func checkRules(t *testing.T, p *promServer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/api/v1/rules")
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Data struct {
				Groups []struct {
					Name  string `json:"name"`
					Rules []struct {
						Name           string `json:"name"`
						Health         string `json:"health"`
						LastError      string `json:"lastError"`
						LastEvaluation string `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("/api/v1/rules: %v", err)
		}
		n, ok := 0, len(r.Data.Groups) == 2
		var bad []string
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				n++
				if rule.Health != "ok" {
					ok = false
					bad = append(bad, fmt.Sprintf("%s: %s %s", rule.Name, rule.Health, rule.LastError))
				}
			}
		}
		if ok && n >= 15 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules: %d groups, %d rules, not ok: %v\n%s", len(r.Data.Groups), n, bad, bytes.TrimSpace(b))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// excerpt is the reconciler_ series of an exposition that are not zero,
// and the unlabelled ones.
func excerpt(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "reconciler_") || strings.Contains(l, "_bucket{") {
			continue
		}
		if strings.HasSuffix(l, " 0") && strings.Contains(l, "{") && !strings.Contains(l, "head_info") {
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}
