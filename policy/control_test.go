package policy

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/hclspec"
)

func specFromText(t *testing.T, text string) *hclspec.Spec {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, part := range strings.Split(text, "-- ")[1:] {
		name, body, _ := strings.Cut(part, " --\n")
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	spec, diags := hclspec.Load(fsys, hclspec.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return spec
}

const controlSpec = `
-- providers.hcl --
provider "exec" "local" {}
-- reviewers.hcl --
group "platform" {
  member "pat" {
    email = "pat@example.com"
  }
}
-- agents/onboarder.hcl --
agent "onboarder" {
  provider = provider.exec.local
  command  = ["true"]
  scope {
    paths = ["agents/**", "prompts/**"]
  }
}
-- agents/other.hcl --
agent "other" {
  provider = provider.exec.local
  command  = ["true"]
  scope {
    paths = ["**"]
  }
}
-- policies/onboarding.hcl --
policy "onboarding" {
  applies_to  = ["onboarder"]
  enforcement = "hard"
  require_approval "new-agents" {
    condition             = alltrue([for f in change.files : glob(f.path, "agents/*.hcl") && f.status == "added"])
    reviewers             = ["platform"]
    min                   = 2
    allow_control_changes = true
  }
}
`

func TestControlChanges(t *testing.T) {
	spec := specFromText(t, controlSpec)
	tests := []struct {
		name, agent string
		change      []hclspec.ChangeFile
		outcome     string
		summary     string
	}{
		{"an explicit hard rule lets a new agent file through, with its approval", "onboarder",
			[]hclspec.ChangeFile{{Path: "agents/new.hcl", Status: "added", Added: 10}},
			RequireApproval, "require_approval onboarding/new-agents (2 of platform)"},
		{"editing an existing agent is outside the rule: denied", "onboarder",
			[]hclspec.ChangeFile{{Path: "agents/other.hcl", Status: "modified", Added: 1}},
			Deny, "deny builtin/self-modification"},
		{"the rule does not apply to other agents", "other",
			[]hclspec.ChangeFile{{Path: "agents/new.hcl", Status: "added", Added: 10}},
			Deny, "deny builtin/self-modification"},
		{"policies stay closed even to the onboarder", "onboarder",
			[]hclspec.ChangeFile{{Path: "agents/new.hcl", Status: "added"}, {Path: "policies/onboarding.hcl", Status: "modified"}},
			Deny, "deny builtin/self-modification"},
		{"adding itself to a reviewer group is denied", "other",
			[]hclspec.ChangeFile{{Path: "reviewers.hcl", Status: "modified", Added: 3}},
			Deny, "deny builtin/self-modification"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(spec, hclspec.ConditionInput{Agent: spec.Agent(tt.agent), Change: tt.change})
			if d.Outcome != tt.outcome || d.Summary != tt.summary {
				t.Errorf("decision = %s %q, want %s %q", d.Outcome, d.Summary, tt.outcome, tt.summary)
			}
			if d.Rules[0].Kind != KindGuard || d.Rules[0].Blocking != (tt.outcome == Deny) {
				t.Errorf("guard rule = %+v", d.Rules[0])
			}
		})
	}
}

func TestAllowControlChangesNeedsHard(t *testing.T) {
	fsys := fstest.MapFS{}
	for _, part := range strings.Split(strings.Replace(controlSpec, `enforcement = "hard"`, `enforcement = "soft"`, 1), "-- ")[1:] {
		name, body, _ := strings.Cut(part, " --\n")
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	_, diags := hclspec.Load(fsys, hclspec.Options{})
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	if len(errs) != 1 || errs[0].Summary != "Control changes need a hard policy" || errs[0].Subject.Filename != "policies/onboarding.hcl" || errs[0].Subject.Start.Line != 8 {
		t.Fatalf("errors = %v", errs)
	}
}
