package hclspec

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// llmopsFS is the base repository with a model agent "tiered" whose body
// (between its provider and scope) is body.
func llmopsFS(t *testing.T, body string) fstest.MapFS {
	t.Helper()
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	edit(t, fsys, "providers.hcl", "  price \"gpt-4o-mini\" {", "  price \"gpt-4o\" {\n    input_per_mtok  = 2.5\n    output_per_mtok = 10\n  }\n\n  price \"gpt-4o-mini\" {")
	fsys["prompts/tiered.md"] = &fstest.MapFile{Data: []byte("Fix it.\n")}
	fsys["agents/tiered.hcl"] = &fstest.MapFile{Data: []byte("agent \"tiered\" {\n" +
		"  provider = provider.openai.default\n" +
		"  prompt   = file(\"prompts/tiered.md\")\n" +
		body +
		"  trigger {\n    manual = true\n  }\n" +
		"  scope {\n    paths = [\"deploy/**\"]\n  }\n}\n")}
	return fsys
}

func TestLoadLLMOps(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		models     []string
		model      string
		on         []string
		risk       string
		cache      bool
	}{
		{name: "one model, no cache", body: "  model = \"gpt-4o-mini\"\n", model: "gpt-4o-mini"},
		{name: "models without model", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"failure\", \"step_limit\"]\n  }\n",
			models: []string{"gpt-4o-mini", "gpt-4o"}, model: "gpt-4o-mini", on: []string{"failure", "step_limit"}},
		{name: "model and models agree", body: "  model = \"gpt-4o-mini\"\n  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"risk\"]\n    risk_at_least = \"medium\"\n  }\n  cache = true\n",
			models: []string{"gpt-4o-mini", "gpt-4o"}, model: "gpt-4o-mini", on: []string{"risk"}, risk: "medium", cache: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, diags := Load(llmopsFS(t, tc.body), Options{})
			if len(diags) > 0 {
				t.Fatal(diags)
			}
			a := spec.Agent("tiered")
			if a.Model != tc.model || !slices.Equal(a.Models, tc.models) || a.Cache != tc.cache {
				t.Errorf("Model %q, Models %v, Cache %v; want %q, %v, %v", a.Model, a.Models, a.Cache, tc.model, tc.models, tc.cache)
			}
			if tc.on == nil {
				if a.Escalate != nil {
					t.Errorf("Escalate = %+v, want none", a.Escalate)
				}
			} else if a.Escalate == nil || !slices.Equal(a.Escalate.On, tc.on) || a.Escalate.RiskAtLeast != tc.risk {
				t.Errorf("Escalate = %+v, want on %v at %q", a.Escalate, tc.on, tc.risk)
			}
			want := tc.models
			if want == nil {
				want = []string{tc.model}
			}
			if !slices.Equal(a.Tiers(), want) {
				t.Errorf("Tiers() = %v, want %v", a.Tiers(), want)
			}
		})
	}
}

// Each mistake in models, escalate and cache is an error (or a warning)
// at the tightest range, with the fix in its detail.
func TestLoadLLMOpsDiagnostics(t *testing.T) {
	for _, tc := range []struct {
		name, body       string
		summary, subject string
		detail           string
		warning          bool
	}{
		{name: "empty", body: "  models = []\n", summary: "Empty models", subject: "agents/tiered.hcl:4:12-4:14", detail: "at least one"},
		{name: "duplicate", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\", \"gpt-4o-mini\"]\n", summary: "Duplicate model", subject: "agents/tiered.hcl:4:38-4:51", detail: "listed twice"},
		{name: "blank", body: "  models = [\"gpt-4o\", \" \"]\n  escalate {\n    on = [\"failure\"]\n  }\n", summary: "Empty model name", subject: "agents/tiered.hcl:4:23-4:26", detail: "Model 2"},
		{name: "disagree", body: "  model  = \"gpt-4o\"\n  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"failure\"]\n  }\n", summary: "Conflicting model", subject: "agents/tiered.hcl:4:12-4:20", detail: "starts with \"gpt-4o-mini\""},
		{name: "nothing to escalate to", body: "  model = \"gpt-4o-mini\"\n  escalate {\n    on = [\"failure\"]\n  }\n", summary: "Nothing to escalate to", subject: "agents/tiered.hcl:5:3-5:11", detail: "models = ["},
		{name: "unknown condition", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"failures\"]\n  }\n", summary: "Unknown escalation condition", subject: "agents/tiered.hcl:6:10-6:22", detail: "Did you mean \"failure\"?"},
		{name: "repeated condition", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"risk\", \"risk\"]\n    risk_at_least = \"high\"\n  }\n", summary: "Duplicate escalation condition", subject: "agents/tiered.hcl:6:10-6:26", detail: "twice"},
		{name: "risk without threshold", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"risk\"]\n  }\n", summary: "Missing risk threshold", subject: "agents/tiered.hcl:5:3-5:11", detail: "risk_at_least = \"high\""},
		{name: "threshold without risk", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"failure\"]\n    risk_at_least = \"high\"\n  }\n", summary: "Unused risk threshold", subject: "agents/tiered.hcl:7:5-7:18", detail: "on includes \"risk\""},
		{name: "bad threshold", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"risk\"]\n    risk_at_least = \"hgh\"\n  }\n", summary: "Invalid risk", subject: "agents/tiered.hcl:7:21-7:26", detail: "Did you mean \"high\"?"},
		{name: "two escalate blocks", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n  escalate {\n    on = [\"failure\"]\n  }\n  escalate {\n    on = [\"risk\"]\n  }\n", summary: "Duplicate escalate block", subject: "agents/tiered.hcl:8:3-8:11", detail: "at most one"},
		{name: "cache not a bool", body: "  model = \"gpt-4o-mini\"\n  cache = \"yes\"\n", summary: "Unsuitable value type", subject: "agents/tiered.hcl:5:12-5:15", detail: "a bool is required"},
		{name: "no escalate", body: "  models = [\"gpt-4o-mini\", \"gpt-4o\"]\n", summary: "Models never escalate", subject: "agents/tiered.hcl:4:12-4:37", detail: "escalate {", warning: true},
		{name: "unpriced tier", body: "  models = [\"gpt-4o-mini\", \"o3\"]\n  escalate {\n    on = [\"failure\"]\n  }\n", summary: "Model has no price", subject: "agents/tiered.hcl:4:28-4:32", detail: "price \"o3\"", warning: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := Load(llmopsFS(t, tc.body), Options{})
			if diags.HasErrors() == tc.warning {
				t.Fatalf("errors %v, want warning only %v: %v", diags.HasErrors(), tc.warning, diags)
			}
			for _, d := range diags {
				if d.Summary != tc.summary {
					continue
				}
				if got := rangeString(d.Subject); got != tc.subject {
					t.Errorf("%s at %s, want %s", d.Summary, got, tc.subject)
				}
				if !strings.Contains(d.Detail, tc.detail) {
					t.Errorf("detail %q does not mention %q", d.Detail, tc.detail)
				}
				return
			}
			t.Errorf("no %q in %v", tc.summary, diags)
		})
	}
}

// Exec agents run a command: models, escalate and cache are refused.
func TestLoadLLMOpsExec(t *testing.T) {
	fsys := txtarFS(t, "testdata/errors/base.txtar")
	edit(t, fsys, "agents/fixer.hcl", "  scope {", "  models = [\"a\", \"b\"]\n  cache = true\n  escalate {\n    on = [\"failure\"]\n  }\n  scope {")
	_, diags := Load(fsys, Options{})
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary+" "+rangeString(d.Subject))
	}
	want := []string{
		"Unsupported argument agents/fixer.hcl:10:3-10:8",
		"Unsupported argument agents/fixer.hcl:9:3-9:9",
		"Unsupported block agents/fixer.hcl:11:3-11:11",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRiskAtLeast(t *testing.T) {
	for _, tc := range []struct {
		risk, threshold string
		want            bool
	}{
		{"low", "high", false}, {"medium", "high", false}, {"high", "high", true},
		{"medium", "medium", true}, {"high", "medium", true}, {"low", "low", true},
		{" HIGH ", "high", true}, {"", "high", true}, {"catastrophic", "medium", true},
	} {
		if got := RiskAtLeast(tc.risk, tc.threshold); got != tc.want {
			t.Errorf("RiskAtLeast(%q, %q) = %v, want %v", tc.risk, tc.threshold, got, tc.want)
		}
	}
}

func TestModelCost(t *testing.T) {
	a := &Agent{Provider: &Provider{Kind: ProviderOpenAI, Prices: map[string]Price{"big": {InputPerMTok: 2, OutputPerMTok: 8}}}}
	if got := a.ModelCost("big", 1_000_000, 500_000); got != 6 {
		t.Errorf("ModelCost(big) = %v, want 6", got)
	}
	if got := a.ModelCost("unpriced", 1_000_000, 1); got != 0 {
		t.Errorf("ModelCost(unpriced) = %v, want 0", got)
	}
	if got := (&Agent{}).ModelCost("big", 1, 1); got != 0 {
		t.Errorf("ModelCost without provider = %v", got)
	}
}
