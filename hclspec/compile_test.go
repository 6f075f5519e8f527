package hclspec

import (
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The compiled form of a condition and HCL agree on every input.
func TestCompiledMatchesHCL(t *testing.T) {
	compiles := []string{
		`anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])`,
		`anytrue([for f in change.files : glob(f.path, "**/secrets/**") || endswith(f.path, ".pem")])`,
		`change.added + change.removed > 400`,
		`change.added - change.removed <= -3`,
		`change.count >= 2 && !(change.added < 10)`,
		`anytrue([for f in change.files : anytrue([for g in ["agents/**", "policies/**", "providers.hcl", "reviewers.hcl", ".reconciler/**"] : glob(f.path, g)])])`,
		`alltrue([for f in change.files : glob(f.path, "agents/*.hcl") && f.status == "added"])`,
		`anytrue([for f in change.files : f.status == "deleted"])`,
		`anytrue([for p in change.paths : startswith(p, "config/")])`,
		`alltrue([for f in change.files : f.added + f.removed < 50])`,
		`agent.name == "image-pinner" && run.trigger != "spec"`,
		`agent.provider == "provider.exec.local" || agent.model == "gpt-4o-mini"`,
		`run.id != "" && run.spec_commit == "abc" || agent.work_unit_kind == "image-pin"`,
		`anytrue([for f in change.files : anytrue([for f in ["a", "b"] : f == "a"])])`,
		`true`,
		`(change.count == 0)`,
		`anytrue([for f in change.files : f.removed > 0 && glob(f.path, "**/*.{yaml,yml}")])`,
		`change.evals.failed > 0`,
		`change.evals.passed + change.evals.failed == 0 && anytrue([for f in change.files : glob(f.path, "agents/**")])`,
		`change.evals.failed > 0 || change.evals.passed < 1`,
	}
	falls := []string{
		`length(regexall("(?m)^deploy/prod/", join("\n", change.paths))) > 0`,
		`anytrue([for i, f in change.files : i > 2])`,
		`contains(change.paths, "x")`,
		`anytrue([for f in change.files : f.path if f.added > 0])`,
		`change.evals == null`,
	}
	paths := []string{"deploy/prod/a.yaml", "deploy/staging/b.yml", "config/x.env", "agents/new.hcl", "policies/p.hcl",
		"providers.hcl", ".reconciler/keys/k.pub", "secrets/db.pem", "x/secrets/y", "README.md", "", "é/ü.yaml", "a", "b"}
	statuses := []string{"added", "modified", "deleted"}
	rng := rand.New(rand.NewPCG(1, 2))
	input := func() ConditionInput {
		var files []ChangeFile
		for range rng.IntN(5) {
			files = append(files, ChangeFile{Path: paths[rng.IntN(len(paths))], Status: statuses[rng.IntN(3)], Added: rng.IntN(300), Removed: rng.IntN(300)})
		}
		provider := &Provider{Kind: "exec", Name: "local"}
		if rng.IntN(2) == 0 {
			provider = &Provider{Kind: "openai", Name: "default"}
		}
		return ConditionInput{
			Agent:  &Agent{Name: []string{"image-pinner", "env-normaliser"}[rng.IntN(2)], Provider: provider, Model: []string{"", "gpt-4o-mini"}[rng.IntN(2)], WorkUnit: WorkUnit{Kind: "image-pin"}},
			Run:    RunInfo{ID: []string{"", "r1"}[rng.IntN(2)], Trigger: []string{"spec", "manual"}[rng.IntN(2)], SpecCommit: "abc"},
			Change: files,
			Evals:  EvalCounts{Passed: rng.IntN(3), Failed: rng.IntN(3)},
		}
	}
	parse := func(src string) hcl.Expression {
		expr, diags := hclsyntax.ParseExpression([]byte(src), "c.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", src, diags)
		}
		return expr
	}
	for _, src := range compiles {
		t.Run(src, func(t *testing.T) {
			expr := parse(src)
			fast := compileCondition(expr)
			if fast == nil {
				t.Fatal("not compiled")
			}
			for i := range 300 {
				in := input()
				c := in.Context()
				got, ok := fast(c.env)
				want, diags := c.Eval(expr)
				if diags.HasErrors() {
					if ok {
						t.Fatalf("input %d: HCL fails (%v) but the compiled form gives %v", i, diags, got.b)
					}
					continue
				}
				if !ok || got.b != want {
					t.Fatalf("input %d %+v: compiled %v (ok %v), HCL %v", i, in.Change, got.b, ok, want)
				}
			}
		})
	}
	for _, src := range falls {
		if compileCondition(parse(src)) != nil {
			t.Errorf("%s compiled; it should fall back to HCL", src)
		}
	}
	// A path in another Unicode normal form than the policy's literal: HCL
	// compares in NFC, and so does the rule, by not using the compiled form.
	nfd := ConditionInput{Agent: &Agent{}, Change: []ChangeFile{{Path: "cafe\u0301/x", Status: "added"}}}
	rule := &DenyRule{Condition: parse(`anytrue([for f in change.files : f.path == "caf\u00e9/x"])`)}
	rule.fast = compileCondition(rule.Condition)
	if got, diags := rule.Eval(nfd.Context()); diags.HasErrors() || !got {
		t.Errorf("NFD path against an NFC literal = %v %v, want true as HCL has it", got, diags)
	}

	// A pattern that only fails at run time falls back, and HCL reports it.
	expr := parse(`anytrue([for g in ["["] : glob("x", g)])`)
	fast := compileCondition(expr)
	c := ConditionInput{Agent: &Agent{}}.Context()
	if _, ok := fast(c.env); ok {
		t.Error("an invalid pattern was matched by the compiled form")
	}
	if _, diags := (&DenyRule{Condition: expr, fast: fast}).Eval(c); !diags.HasErrors() {
		t.Error("an invalid pattern did not give HCL's error")
	}
}

// Every condition of the example's policies compiles.
func TestExampleConditionsCompile(t *testing.T) {
	spec := load(t, copyFS(t, exampleDir))
	n := 0
	for _, p := range spec.Policies {
		for _, r := range p.Denies {
			n++
			if r.fast == nil {
				t.Errorf("%s/%s does not compile", p.Name, r.Name)
			}
		}
		for _, r := range p.Approvals {
			n++
			if r.Condition != nil && r.fast == nil {
				t.Errorf("%s/%s does not compile", p.Name, r.Name)
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules in the example")
	}
}
