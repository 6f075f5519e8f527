package policy

import (
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/agentgitops/reconciler/hclspec"
)

// loadPolicyTests loads testdata/spec.txtar with one test file added.
func loadPolicyTests(t *testing.T, src string) (*hclspec.Spec, []*hclspec.PolicyTest) {
	t.Helper()
	fsys := specFS(t, "testdata/spec.txtar")
	fsys["policies/t_test.hcl"] = &fstest.MapFile{Data: []byte(src)}
	spec := loadSpec(t, fsys)
	tests, diags := hclspec.LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	return spec, tests
}

func TestRunTests(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		failures []string // nil: the test passes
	}{
		{"production change", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/prod/payments-api.yaml" }
  }
  expect {
    decision  = "require_approval"
    rules     = ["protect-prod/production", "payments/payments"]
    reviewers = { sre = 1, payments = 1 }
  }
}
`, nil},
		{"decision only", `test "t" {
  agent = "image-pinner"
  change {
    file {
      path   = "deploy/staging/secrets/db.yaml"
      status = "added"
    }
  }
  expect { decision = "deny" }
}
`, nil},
		{"advisory rules fire without blocking", `test "t" {
  agent = "env-normaliser"
  change {
    file {
      path  = "db/schema.sql"
      added = 60
    }
  }
  expect {
    decision  = "require_approval"
    rules     = ["advice/dba", "advice/large", "builtin/one-review"]
    reviewers = { any = 1 }
  }
}
`, nil},
		{"order of groups and rules does not matter", `test "t" {
  agent = "image-pinner"
  change {
    file {
      path  = "deploy/prod/payments-api.yaml"
      added = 101
    }
  }
  run { trigger = "spec" }
  expect {
    decision  = "require_approval"
    rules     = ["protect-prod/production", "protect-prod/large-production", "payments/payments", "advice/large"]
    reviewers = { payments = 1, sre = 2 }
  }
}
`, nil},
		{"wrong decision", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/staging/app.yaml" }
  }
  expect { decision = "deny" }
}
`, []string{
			`policies/t_test.hcl:6:12: decision: expected "deny", got "require_approval" (require_approval default (1 reviewer))`,
		}},
		{"unexpected denial names the rules and their messages", `test "t" {
  agent = "env-normaliser"
  change {
    file {
      path   = "config/secrets/app.env"
      status = "deleted"
    }
  }
  expect {
    decision = "require_approval"
  }
}
`, []string{
			`policies/t_test.hcl:10:5: decision: expected "require_approval", got "deny" (deny protect-prod/secrets: agents must not touch secrets; soft/deletes: env files are never deleted)`,
		}},
		{"wrong rules", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/prod/app.yaml" }
  }
  expect {
    decision = "require_approval"
    rules    = ["builtin/one-review", "protect-prod/large-production"]
  }
}
`, []string{
			`policies/t_test.hcl:8:5: rules: expected ["builtin/one-review", "protect-prod/large-production"], got ["protect-prod/production"] (did not fire: builtin/one-review, protect-prod/large-production; also fired: protect-prod/production)`,
		}},
		{"rules expected empty", `test "t" {
  agent = "image-pinner"
  expect {
    decision = "require_approval"
    rules    = []
  }
}
`, []string{
			`policies/t_test.hcl:5:5: rules: expected [], got ["builtin/one-review"] (also fired: builtin/one-review)`,
		}},
		{"wrong reviewers", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/prod/app.yaml" }
  }
  expect {
    decision  = "require_approval"
    reviewers = { sre = 2, "payments|sre" = 1 }
  }
}
`, []string{
			`policies/t_test.hcl:8:5: reviewers: expected { "payments|sre" = 1, sre = 2 }, got { sre = 1 }`,
		}},
		{"reviewers of a denial", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/prod/secrets/key.yaml" }
  }
  expect {
    decision  = "deny"
    reviewers = { sre = 1 }
  }
}
`, []string{
			`policies/t_test.hcl:8:5: reviewers: expected { sre = 1 }, got {} (a denied change has no approval requirements)`,
		}},
		{"every expectation wrong", `test "t" {
  agent = "image-pinner"
  change {
    file { path = "deploy/prod/secrets/key.yaml" }
  }
  expect {
    decision  = "require_approval"
    rules     = ["protect-prod/production"]
    reviewers = { sre = 1 }
  }
}
`, []string{
			`policies/t_test.hcl:7:5: decision: expected "require_approval", got "deny" (deny protect-prod/secrets: agents must not touch secrets)`,
			`policies/t_test.hcl:8:5: rules: expected ["protect-prod/production"], got ["protect-prod/production", "protect-prod/secrets"] (also fired: protect-prod/secrets)`,
			`policies/t_test.hcl:9:5: reviewers: expected { sre = 1 }, got {} (a denied change has no approval requirements)`,
		}},
		// Decide denies when a condition cannot be evaluated; a test that
		// expects the denial still fails, naming the condition.
		{"condition that cannot be evaluated", `test "t" {
  agent = "flaky"
  expect { decision = "deny" }
}
`, []string{
			`policies/t_test.hcl:1:1: condition of flaky/first-file could not be evaluated, so the decision denies: policies/flaky.hcl:6,40-43: Invalid index; The given key does not identify an element in this collection value: the collection has no elements.`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, pts := loadPolicyTests(t, tc.src)
			results := RunTests(spec, pts)
			if len(results) != 1 {
				t.Fatalf("got %d results, want 1", len(results))
			}
			r := results[0]
			if r.Test != pts[0] {
				t.Errorf("result is of another test")
			}
			if r.Pass != (tc.failures == nil) {
				t.Errorf("Pass = %v, want %v", r.Pass, tc.failures == nil)
			}
			if diff := cmp.Diff(tc.failures, r.Failures); diff != "" {
				t.Errorf("failures (-want +got):\n%s", diff)
			}
		})
	}
}

// BuiltinRules names exactly the rules Decide applies on its own, so that
// LoadTests accepts them in expect.rules.
func TestBuiltinRules(t *testing.T) {
	_, bare := testSpecs(t)
	agent := bare.Agent("image-pinner")
	var fired []string
	for _, change := range [][]hclspec.ChangeFile{nil, {modified("agents/image-pinner.hcl", 1, 1)}} {
		d := Decide(bare, hclspec.ConditionInput{Agent: agent, Change: change})
		for _, r := range d.Rules {
			if r.Policy == BuiltinPolicy {
				fired = append(fired, r.Name())
			}
		}
	}
	slices.Sort(fired)
	if !slices.Equal(fired, hclspec.BuiltinRules) {
		t.Errorf("Decide's builtin rules are %v; hclspec.BuiltinRules is %v", fired, hclspec.BuiltinRules)
	}
}

// The example repository's policy tests pass.
func TestExamplePolicyTests(t *testing.T) {
	fsys := os.DirFS("../examples/repo-layout")
	spec, diags := hclspec.Load(fsys, hclspec.Options{})
	if diags.HasErrors() {
		t.Fatalf("Load: %v", diags)
	}
	pts, diags := hclspec.LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(pts) < 6 {
		t.Errorf("the example has %d policy tests, want at least 6", len(pts))
	}
	for _, r := range RunTests(spec, pts) {
		if !r.Pass {
			t.Errorf("%s %q: %v", pos(r.Test.DeclRange), r.Test.Name, r.Failures)
		}
	}
}

// testdata/size.txtar's policy reads bytes and modes as well as lines; its
// tests pass, and would not with a rule on lines alone.
func TestSizePolicyTests(t *testing.T) {
	fsys := specFS(t, "testdata/size.txtar")
	spec := loadSpec(t, fsys)
	pts, diags := hclspec.LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(pts) != 6 {
		t.Fatalf("%d tests, want 6", len(pts))
	}
	for _, r := range RunTests(spec, pts) {
		if !r.Pass {
			t.Errorf("%s %q: %v", pos(r.Test.DeclRange), r.Test.Name, r.Failures)
		}
	}
}

// A policy test states what a proposal's evals gave (change.evals), and a
// policy gating on it is tested like any other.
func TestRunTestsEvals(t *testing.T) {
	fsys := specFS(t, "testdata/spec.txtar")
	fsys["policies/evals.hcl"] = &fstest.MapFile{Data: []byte(`policy "evals" {
  applies_to = ["image-pinner"]
  deny "failing" {
    condition = change.evals.failed > 0
    message   = "its evals fail"
  }
}
`)}
	fsys["policies/t_test.hcl"] = &fstest.MapFile{Data: []byte(`test "evals fail" {
  agent = "image-pinner"
  change {
    file { path = "deploy/staging/api.yaml" }
    evals {
      passed = 4
      failed = 1
    }
  }
  expect { decision = "deny" }
}

test "evals pass" {
  agent = "image-pinner"
  change {
    file { path = "deploy/staging/api.yaml" }
    evals { passed = 5 }
  }
  expect { decision = "require_approval" }
}
`)}
	spec := loadSpec(t, fsys)
	pts, diags := hclspec.LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(pts) != 2 || pts[0].Evals != (hclspec.EvalCounts{Passed: 4, Failed: 1}) {
		t.Fatalf("tests %+v", pts)
	}
	for _, r := range RunTests(spec, pts) {
		if !r.Pass {
			t.Errorf("%s: %v", r.Test.Name, r.Failures)
		}
	}
}

// A policy test states the verdicts of a require_review rule's models: a
// rejection requires the rule's approval, approvals leave the decision as
// it is, and a model the test gives no verdict counts as failed.
func TestRunTestsReviews(t *testing.T) {
	fsys := specFS(t, "testdata/spec.txtar")
	fsys["providers.hcl"] = &fstest.MapFile{Data: []byte(`provider "exec" "local" {
}
provider "openai" "second" {
  api_key_env = "OPENAI_API_KEY"
  price "gpt-4o" {
    input_per_mtok  = 2.5
    output_per_mtok = 10
  }
  price "o3-mini" {
    input_per_mtok  = 1.1
    output_per_mtok = 4.4
  }
}
`)}
	fsys["policies/review.hcl"] = &fstest.MapFile{Data: []byte(`policy "review" {
  applies_to = ["image-pinner"]
  require_review "second-opinion" {
    condition = anytrue([for p in change.paths : startswith(p, "deploy/staging/")])
    models    = ["second/gpt-4o", "second/o3-mini"]
    reviewers = ["sre"]
  }
}
`)}
	change := `
  change {
    file { path = "deploy/staging/api.yaml" }
  }`
	fsys["policies/t_test.hcl"] = &fstest.MapFile{Data: []byte(`test "both approve" {
  agent = "image-pinner"` + change + `
  review "second-opinion" { verdicts = ["approve", "approve"] }
  expect {
    decision  = "require_approval"
    reviewers = { any = 1 }
  }
}

test "one rejects" {
  agent = "image-pinner"` + change + `
  review "second-opinion" { verdicts = ["approve", "reject"] }
  expect {
    decision  = "require_approval"
    reviewers = { sre = 1 }
  }
}

test "no verdict stated" {
  agent = "image-pinner"` + change + `
  expect {
    decision  = "require_approval"
    reviewers = { sre = 1 }
  }
}
`)}
	spec := loadSpec(t, fsys)
	pts, diags := hclspec.LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(pts) != 3 || !slices.Equal(pts[1].Reviews["second-opinion"], []string{"approve", "reject"}) {
		t.Fatalf("tests %+v", pts)
	}
	for _, r := range RunTests(spec, pts) {
		if !r.Pass {
			t.Errorf("%s: %v", r.Test.Name, r.Failures)
		}
	}
	fsys["policies/t_test.hcl"] = &fstest.MapFile{Data: []byte(`test "bad" {
  agent = "image-pinner"
  review "second-opinion" { verdicts = ["approved"] }
  expect { decision = "deny" }
}
`)}
	if _, diags := hclspec.LoadTests(fsys, spec); len(diags) != 1 || diags[0].Summary != "Invalid verdict" ||
		diags[0].Subject.String() != "policies/t_test.hcl:3,40-52" || !strings.Contains(diags[0].Detail, `Did you mean "approve"?`) {
		t.Errorf("a bad verdict: %v", diags)
	}
}
