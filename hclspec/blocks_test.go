package hclspec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// loadBlocks loads base.txtar with extra files laid over it.
func loadBlocks(t *testing.T, files map[string]string) (*Spec, hcl.Diagnostics) {
	t.Helper()
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	for name, src := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
	}
	return Load(fsys, Options{})
}

func TestAlertTrigger(t *testing.T) {
	spec, diags := loadBlocks(t, map[string]string{"agents/paged.hcl": `
agent "paged" {
  provider = provider.exec.local
  command  = ["sh", "tools/fix.sh"]
  trigger {
    on_alert {
      match    = { alertname = "HighErrorRate", severity = "critical" }
      match_re = { service = "payments-.*" }
    }
  }
  scope {
    paths = ["deploy/**"]
  }
}
`})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m := spec.Agent("paged").Triggers[0].Alert
	if m == nil {
		t.Fatal("no alert matcher")
	}
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"alertname": "HighErrorRate", "severity": "critical", "service": "payments-api"}, true},
		{map[string]string{"alertname": "HighErrorRate", "severity": "critical", "service": "payments-api", "extra": "x"}, true},
		{map[string]string{"alertname": "HighErrorRate", "severity": "warning", "service": "payments-api"}, false},
		{map[string]string{"alertname": "HighErrorRate", "severity": "critical", "service": "ledger"}, false},
		// Regular expressions are anchored, as Alertmanager's are.
		{map[string]string{"alertname": "HighErrorRate", "severity": "critical", "service": "old-payments-api"}, false},
		{map[string]string{"alertname": "HighErrorRate", "severity": "critical"}, false},
	}
	for _, tt := range tests {
		if got := m.Matches(tt.labels); got != tt.want {
			t.Errorf("Matches(%v) = %v, want %v", tt.labels, got, tt.want)
		}
	}
}

func TestBudgetAndFreeze(t *testing.T) {
	spec, diags := loadBlocks(t, map[string]string{"policies/limits.hcl": `
policy "limits" {
  applies_to = ["*"]
  budget {
    max_tokens_per_run     = 50000
    max_cost_usd_per_day   = 25
    max_cost_usd_per_month = 400.5
    max_runs_per_hour      = 4
    max_open_proposals     = 3
    max_concurrent_runs    = 1
  }
  freeze "weekend" {
    cron     = "0 16 * * FRI"
    duration = "64h"
    timezone = "Europe/Berlin"
  }
}
`})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var p *Policy
	for _, q := range spec.Policies {
		if q.Name == "limits" {
			p = q
		}
	}
	b := p.Budget
	if b == nil || b.MaxTokensPerRun != 50000 || b.MaxCostUSDPerDay != 25 || b.MaxCostUSDPerMonth != 400.5 ||
		b.MaxRunsPerHour != 4 || b.MaxOpenProposals != 3 || b.MaxConcurrentRuns != 1 {
		t.Fatalf("budget = %+v", b)
	}
	if len(p.Freezes) != 1 {
		t.Fatalf("freezes = %+v", p.Freezes)
	}
	f := p.Freezes[0]
	berlin, _ := time.LoadLocation("Europe/Berlin")
	tests := []struct {
		now   time.Time
		want  bool
		until time.Time
	}{
		// Winter: Friday 16:00 CET is 15:00 UTC; 64h later is Monday 08:00 CET.
		{time.Date(2026, 1, 9, 14, 59, 0, 0, time.UTC), false, time.Time{}},
		{time.Date(2026, 1, 9, 15, 0, 0, 0, time.UTC), true, time.Date(2026, 1, 12, 8, 0, 0, 0, berlin)},
		{time.Date(2026, 1, 11, 12, 0, 0, 0, time.UTC), true, time.Date(2026, 1, 12, 8, 0, 0, 0, berlin)},
		{time.Date(2026, 1, 12, 7, 0, 0, 0, time.UTC), false, time.Time{}},
		// Summer: 16:00 CEST is 14:00 UTC.
		{time.Date(2026, 7, 10, 14, 30, 0, 0, time.UTC), true, time.Date(2026, 7, 13, 8, 0, 0, 0, berlin)},
		// The weekend the clocks go back (2026-10-25): 64 hours of
		// elapsed time end at 07:00 local on Monday.
		{time.Date(2026, 10, 26, 5, 30, 0, 0, time.UTC), true, time.Date(2026, 10, 26, 7, 0, 0, 0, berlin)},
		{time.Date(2026, 10, 26, 6, 30, 0, 0, time.UTC), false, time.Time{}},
	}
	for _, tt := range tests {
		active, until := f.Active(tt.now)
		if active != tt.want || !until.Equal(tt.until) {
			t.Errorf("Active(%s) = %v until %s, want %v until %s", tt.now, active, until, tt.want, tt.until)
		}
	}
}

func TestUnpricedModelWarns(t *testing.T) {
	spec, diags := loadBlocks(t, map[string]string{"agents/model.hcl": `
agent "model" {
  provider = provider.openai.default
  model    = "llama3.1:8b"
  prompt   = "Tidy deploy/."
  tools    = ["list_files", "read_file", "edit_file", "finish"]
  trigger {
    manual = true
  }
  scope {
    paths = ["deploy/**"]
  }
}
`})
	if diags.HasErrors() || spec == nil {
		t.Fatal(diags)
	}
	if len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || diags[0].Summary != "Model has no price" ||
		rangeString(diags[0].Subject) != "agents/model.hcl:4:14-4:27" {
		t.Errorf("diags = %v", diags)
	}
}

func TestDanglingPolicyIsAnError(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"agents", "policies"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../nowhere/p.hcl", filepath.Join(dir, "policies", "p.hcl")); err != nil {
		t.Fatal(err)
	}
	_, diags := Load(os.DirFS(dir), Options{})
	if !diags.HasErrors() || diags[0].Summary != "Cannot read file" || diags[0].Subject == nil || diags[0].Subject.Filename != "policies/p.hcl" {
		t.Fatalf("diags = %v", diags)
	}
}

func TestHugeBudgetIsAnError(t *testing.T) {
	_, diags := loadBlocks(t, map[string]string{"policies/huge.hcl": `
policy "huge" {
  applies_to = ["*"]
  budget {
    max_tokens_per_run = 1e19
  }
}
`})
	if !diags.HasErrors() || diags[0].Summary != "Invalid budget" || rangeString(diags[0].Subject) != "policies/huge.hcl:5:26-5:30" {
		t.Fatalf("diags = %v", diags)
	}
}

func TestExampleModelAgent(t *testing.T) {
	spec, diags := Load(os.DirFS(exampleDir), Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	a := spec.Agent("incident-responder")
	if a == nil || a.Provider.Ref() != "provider.openai.default" || a.Model != "gpt-4o-mini" || a.Limits.MaxTokens != 60000 || a.WorkUnit.HumanMinutes != 45 {
		t.Fatalf("agent = %+v", a)
	}
	if !strings.Contains(a.Prompt, "on-call assistant for the payments-api service") || !strings.Contains(a.Prompt, "config/payments-api.env") {
		t.Errorf("prompt not rendered with its vars: %q", a.Prompt)
	}
	m := a.Triggers[0].Alert
	if m == nil || !m.Matches(map[string]string{"alertname": "PaymentsHighLatency", "severity": "critical"}) ||
		m.Matches(map[string]string{"alertname": "PaymentsHighLatency", "severity": "info"}) {
		t.Errorf("alert matcher = %+v", m)
	}
	if got := a.Cost(10000, 1000); got != (10000*0.15+1000*0.60)/1e6 {
		t.Errorf("Cost = %v", got)
	}
}
