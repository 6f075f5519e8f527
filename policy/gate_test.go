package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/hclspec"
)

// usage is a ledger summary written down by hand: Gate is pure, so its
// tests need no repository.
type usage struct {
	starts  map[string][]time.Time
	open    map[string]int
	running map[string]int
	spent   map[string][]spend
}

type spend struct {
	at  time.Time
	usd float64
}

func (u usage) RunStarts(agent string, since time.Time) []time.Time {
	var out []time.Time
	for _, t := range u.starts[agent] {
		if !t.Before(since) {
			out = append(out, t)
		}
	}
	return out
}
func (u usage) OpenProposals(agent string) int { return u.open[agent] }
func (u usage) Running(agent string) int       { return u.running[agent] }
func (u usage) Spent(agent string, since time.Time) float64 {
	total := 0.0
	for _, s := range u.spent[agent] {
		if !s.at.Before(since) {
			total += s.usd
		}
	}
	return total
}

const gateSpec = `
-- providers.hcl --
provider "exec" "local" {}
provider "openai" "default" {
  price "m" {
    input_per_mtok  = 2
    output_per_mtok = 10
  }
  price "big" {
    input_per_mtok  = 5
    output_per_mtok = 40
  }
}
-- agents/tiered.hcl --
agent "tiered" {
  provider = provider.openai.default
  models   = ["m", "big"]
  prompt   = "p"
  escalate {
    on = ["failure"]
  }
  trigger {
    manual = true
  }
  scope {
    paths = ["**"]
  }
}
-- agents/bot.hcl --
agent "bot" {
  provider = provider.openai.default
  model    = "m"
  prompt   = "p"
  trigger {
    manual = true
  }
  scope {
    paths = ["**"]
  }
  limits {
    max_tokens = 100000
  }
}
-- agents/other.hcl --
agent "other" {
  provider = provider.openai.default
  model    = "m"
  prompt   = "p"
  trigger {
    manual = true
  }
  scope {
    paths = ["**"]
  }
}
-- agents/sleepy.hcl --
agent "sleepy" {
  provider = provider.exec.local
  command  = ["true"]
  suspend  = true
  trigger {
    manual = true
  }
  scope {
    paths = ["**"]
  }
}
-- policies/limits.hcl --
policy "limits" {
  applies_to = ["bot", "other"]
  budget {
    max_tokens_per_run     = 50000
    max_cost_usd_per_day   = 2
    max_cost_usd_per_month = 20
    max_runs_per_hour      = 2
    max_open_proposals     = 1
    max_concurrent_runs    = 1
  }
}
-- policies/freeze.hcl --
policy "weekend" {
  applies_to = ["*"]
  enforcement = "advisory"
  freeze "weekend" {
    cron     = "0 16 * * FRI"
    duration = "64h"
    timezone = "Europe/Berlin"
  }
}
`

func gateFixture(t *testing.T) *hclspec.Spec { return specFromText(t, gateSpec) }

func TestGate(t *testing.T) {
	spec := gateFixture(t)
	// A Wednesday noon, UTC.
	now := time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name  string
		agent string
		now   time.Time
		u     usage
		kind  string
		rule  string
		until time.Time
	}{
		{name: "nothing in the way", agent: "bot"},
		{name: "suspended", agent: "sleepy", kind: HoldSuspended},
		{name: "freeze holds every agent, whatever its enforcement", agent: "bot",
			now: time.Date(2026, 11, 20, 16, 30, 0, 0, time.UTC), kind: HoldFreeze, rule: "weekend",
			until: time.Date(2026, 11, 23, 7, 0, 0, 0, time.UTC)},
		{name: "suspend is reported before a freeze", agent: "sleepy",
			now: time.Date(2026, 11, 20, 16, 30, 0, 0, time.UTC), kind: HoldSuspended},
		{name: "runs per hour", agent: "bot", u: usage{starts: map[string][]time.Time{"bot": {ago(50 * time.Minute), ago(10 * time.Minute), ago(2 * time.Hour)}}},
			kind: HoldRate, rule: "max_runs_per_hour", until: ago(50 * time.Minute).Add(time.Hour)},
		{name: "runs an hour ago no longer count", agent: "bot", u: usage{starts: map[string][]time.Time{"bot": {ago(61 * time.Minute), ago(10 * time.Minute)}}}},
		{name: "open proposals", agent: "bot", u: usage{open: map[string]int{"bot": 1}}, kind: HoldOpenProposals, rule: "max_open_proposals"},
		{name: "concurrency counts every agent of the policy", agent: "bot", u: usage{running: map[string]int{"other": 1}}, kind: HoldConcurrency, rule: "max_concurrent_runs"},
		// The reservation is 50,000 tokens (the policy's limit) at $10/Mtok = $0.50.
		{name: "day budget counts this run's reservation", agent: "bot", u: usage{spent: map[string][]spend{"other": {{ago(time.Hour), 1.6}}}},
			kind: HoldBudgetDay, rule: "max_cost_usd_per_day", until: time.Date(2026, 11, 19, 0, 0, 0, 0, time.UTC)},
		{name: "day budget with room for the reservation", agent: "bot", u: usage{spent: map[string][]spend{"other": {{ago(time.Hour), 1.5}}}}},
		{name: "yesterday's spend counts for the month only", agent: "bot", u: usage{spent: map[string][]spend{"bot": {{ago(24 * time.Hour), 19.6}}}},
			kind: HoldBudgetMonth, rule: "max_cost_usd_per_month", until: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.now
			if at.IsZero() {
				at = now
			}
			adm := Gate(spec, spec.Agent(tt.agent), at, tt.u)
			if tt.kind == "" {
				if adm.Hold != nil {
					t.Fatalf("held: %+v", adm.Hold)
				}
				return
			}
			h := adm.Hold
			if h == nil {
				t.Fatalf("not held, want %s", tt.kind)
			}
			if h.Kind != tt.kind || h.Rule != tt.rule || !h.Until.Equal(tt.until) || h.Reason == "" {
				t.Errorf("hold = %+v, want kind %s rule %s until %s", h, tt.kind, tt.rule, tt.until)
			}
			if (tt.kind == HoldBudgetDay || tt.kind == HoldBudgetMonth) != h.Budget() {
				t.Errorf("Budget() = %v", h.Budget())
			}
		})
	}
}

func TestGateLimits(t *testing.T) {
	spec := gateFixture(t)
	adm := Gate(spec, spec.Agent("bot"), time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC), usage{})
	if adm.MaxTokens != 50000 {
		t.Errorf("MaxTokens = %d, want the policy's 50000 below the agent's 100000", adm.MaxTokens)
	}
	if adm.ReserveUSD != 0.5 {
		t.Errorf("ReserveUSD = %v, want 0.5 (50,000 tokens at the dearer $10/Mtok)", adm.ReserveUSD)
	}
	if got := spec.Agent("bot").Cost(100000, 10000); got != 0.3 {
		t.Errorf("Cost = %v, want 0.3", got)
	}
}

// Repository-wide limits count every agent a policy applies to together:
// with applies_to = ["*"], open pull requests and runs per hour of the
// whole repository.
func TestGateTotals(t *testing.T) {
	spec := specFromText(t, strings.Replace(gateSpec, "-- policies/freeze.hcl --", `-- policies/repo.hcl --
policy "repository" {
  applies_to = ["*"]
  budget {
    max_open_proposals_total = 3
    max_runs_per_hour_total  = 4
  }
}
-- policies/freeze.hcl --`, 1))
	now := time.Date(2026, 11, 18, 12, 0, 0, 0, time.UTC) // a Wednesday: no freeze
	other := spec.Agent("other")
	if adm := Gate(spec, other, now, usage{open: map[string]int{"bot": 2}}); adm.Hold != nil && adm.Hold.Rule == "max_open_proposals_total" {
		t.Fatalf("held with 2 of 3 open: %+v", adm.Hold)
	}
	adm := Gate(spec, other, now, usage{open: map[string]int{"bot": 2, "sleepy": 1}})
	if adm.Hold == nil || adm.Hold.Kind != HoldOpenProposals || adm.Hold.Policy != "repository" || adm.Hold.Rule != "max_open_proposals_total" ||
		!strings.Contains(adm.Hold.Reason, "3 open proposal(s)") {
		t.Fatalf("3 open in the repository: hold %+v, want max_open_proposals_total", adm.Hold)
	}
	starts := usage{starts: map[string][]time.Time{
		"bot":    {now.Add(-50 * time.Minute), now.Add(-10 * time.Minute)},
		"sleepy": {now.Add(-40 * time.Minute), now.Add(-5 * time.Minute)},
	}}
	adm = Gate(spec, other, now, starts)
	if adm.Hold == nil || adm.Hold.Rule != "max_runs_per_hour_total" || !adm.Hold.Until.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("4 runs in the hour: hold %+v, want max_runs_per_hour_total until the oldest run is an hour old", adm.Hold)
	}
}

// TestReservationTiers: a tiered agent's run is reserved at its dearest
// model's price, since an escalation may spend the whole limit there.
func TestReservationTiers(t *testing.T) {
	spec := gateFixture(t)
	for _, tt := range []struct {
		agent string
		want  float64
	}{{"bot", 0.5}, {"tiered", 2}} {
		if got := reservation(spec.Agent(tt.agent), 50000); got != tt.want {
			t.Errorf("reservation(%s, 50000 tokens) = %v USD, want %v", tt.agent, got, tt.want)
		}
	}
}
