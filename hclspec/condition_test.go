package hclspec

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func parseCondition(t *testing.T, src string) hcl.Expression {
	t.Helper()
	expr, diags := hclsyntax.ParseExpression([]byte(src), "cond.hcl", hcl.Pos{Line: 1, Column: 1, Byte: 0})
	if diags.HasErrors() {
		t.Fatalf("parse %s: %v", src, diags)
	}
	return expr
}

var testAgent = &Agent{
	Name:     "image-pinner",
	Provider: &Provider{Kind: ProviderExec, Name: "local"},
	Scope:    []string{"deploy/**"},
	WorkUnit: WorkUnit{Kind: "image-pin", HumanMinutes: 20},
}

func TestEvalCondition(t *testing.T) {
	change := ConditionInput{
		Agent: testAgent,
		Run:   RunInfo{ID: "image-pinner-1", Trigger: "spec", SpecCommit: "0123abcd"},
		Change: []ChangeFile{
			{Path: "deploy/prod/payments-api.yaml", Status: "modified", Added: 3, Removed: 3, Bytes: 1200, Mode: ModeRegular},
			{Path: "deploy/staging/payments-api.yaml", Status: "modified", Added: 3, Removed: 1, Bytes: 1100, Mode: ModeRegular},
			{Path: "config/payments-api.env", Status: "added", Added: 10, Bytes: 40_000_000, Mode: ModeExecutable},
			{Path: "old/secrets/key.pem", Status: "deleted", Removed: 20},
		},
	}
	empty := ConditionInput{Agent: testAgent, Run: change.Run}

	tests := []struct {
		name string
		in   ConditionInput
		expr string
		want bool
	}{
		{"glob matches", change, `anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])`, true},
		{"glob does not match", change, `anytrue([for f in change.files : glob(f.path, "charts/**")])`, false},
		{"glob star stays in a segment", change, `anytrue([for p in change.paths : glob(p, "deploy/*.yaml")])`, false},
		{"alltrue", change, `alltrue([for p in change.paths : glob(p, "**")])`, true},
		{"alltrue false", change, `alltrue([for p in change.paths : startswith(p, "deploy/")])`, false},
		{"anytrue of empty change", empty, `anytrue([for f in change.files : glob(f.path, "**")])`, false},
		{"alltrue of empty change", empty, `alltrue([for f in change.files : glob(f.path, "deploy/**")])`, true},
		{"startswith", change, `anytrue([for p in change.paths : startswith(p, "config/")])`, true},
		{"endswith", change, `anytrue([for f in change.files : endswith(f.path, ".pem") && f.status == "deleted"])`, true},
		{"endswith no match", change, `anytrue([for f in change.files : endswith(f.path, ".key")])`, false},
		{"regexall", change, `length([for p in change.paths : p if length(regexall("^deploy/[a-z]+/payments-api\\.yaml$", p)) > 0]) == 2`, true},
		{"regex capture", change, `regex("^deploy/([a-z]+)/", change.paths[1])[0] == "staging"`, true},
		{"added", change, `change.added == 16`, true},
		{"removed", change, `change.removed == 24`, true},
		{"count", change, `change.count == 4`, true},
		{"count of empty change", empty, `change.count == 0 && change.added == 0 && length(change.paths) == 0`, true},
		{"total over limit", change, `change.added + change.removed > 40`, false},
		{"total under limit", change, `change.added + change.removed > 39`, true},
		{"paths", change, `join(",", change.paths) == "deploy/prod/payments-api.yaml,deploy/staging/payments-api.yaml,config/payments-api.env,old/secrets/key.pem"`, true},
		{"contains path", change, `contains(change.paths, "config/payments-api.env")`, true},
		{"bytes", change, `change.bytes == 40002300`, true},
		{"bytes of empty change", empty, `change.bytes == 0`, true},
		// 40 MB in 10 lines: a rule on lines alone lets it through.
		{"size rule on bytes", change, `change.added <= 40 && change.bytes > 1024 * 1024`, true},
		{"per-file bytes", change, `anytrue([for f in change.files : f.bytes > 1024 * 1024 && f.path == "config/payments-api.env"])`, true},
		{"deleted file has no bytes", change, `alltrue([for f in change.files : f.bytes == 0 if f.status == "deleted"])`, true},
		{"mode", change, `[for f in change.files : f.path if f.mode == "100755"] == ["config/payments-api.env"]`, true},
		{"deleted file has no mode", change, `alltrue([for f in change.files : f.mode == "" if f.status == "deleted"])`, true},
		{"per-file lines", change, `anytrue([for f in change.files : f.removed > 10 && f.added == 0])`, true},
		{"agent", change, `agent.name == "image-pinner" && agent.provider == "provider.exec.local" && agent.model == "" && contains(agent.scope, "deploy/**") && agent.work_unit_kind == "image-pin"`, true},
		{"run", change, `run.trigger == "spec" && run.id == "image-pinner-1" && run.spec_commit == "0123abcd"`, true},
		// A string that converts to a bool is accepted, as HCL converts.
		{"string true", change, `"true"`, true},
		{"string false", change, `"false"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expr := parseCondition(t, tc.expr)
			if diags := CheckCondition(expr); diags.HasErrors() {
				t.Fatalf("CheckCondition: %v", diags)
			}
			got, diags := EvalCondition(expr, tc.in)
			if len(diags) > 0 {
				t.Fatalf("EvalCondition: %v", diags)
			}
			if got != tc.want {
				t.Errorf("EvalCondition(%s) = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}

	t.Run("nil expression", func(t *testing.T) {
		got, diags := EvalCondition(nil, change)
		if !got || diags != nil {
			t.Errorf("EvalCondition(nil) = %v, %v; want true, no diagnostics", got, diags)
		}
	})
}

// Conditions that load but cannot be evaluated on a given change give
// false and an error diagnostic at the failing expression: the caller
// fails closed.
func TestEvalConditionErrors(t *testing.T) {
	one := ConditionInput{Agent: testAgent, Change: []ChangeFile{{Path: "deploy/prod/app.yaml", Status: "modified", Added: 1}}}
	empty := ConditionInput{Agent: testAgent}
	tests := []struct {
		name    string
		in      ConditionInput
		expr    string
		subject string
		summary string
		detail  string
	}{
		{"element of empty list", empty, `element(change.paths, 0) == "x"`, "cond.hcl:1:1-1:9", "Error in function call", "cannot use element function with an empty list"},
		{"index out of range", empty, `change.paths[0] == "x"`, "cond.hcl:1:13-1:16", "Invalid index", "the collection has no elements"},
		{"index past the last file", one, `change.files[1].path == "x"`, "cond.hcl:1:13-1:16", "Invalid index", "greater than or equal to the length of the collection"},
		{"type error", one, `change.added > agent.name`, "cond.hcl:1:16-1:26", "Invalid operand", "a number is required"},
		{"regex without match", one, `regex("^charts/", change.paths[0]) == ""`, "cond.hcl:1:1-1:7", "Error in function call", "pattern did not match"},
		{"invalid glob", one, `glob(change.paths[0], "deploy/[prod")`, "cond.hcl:1:24-1:36", "Invalid function argument", `invalid glob pattern "deploy/[prod"`},
		{"string that is not a bool", one, `agent.name`, "cond.hcl:1:1-1:11", "Condition is not a bool", "this one is string"},
		{"null", one, `null`, "cond.hcl:1:1-1:5", "Condition is not a bool", "must be true or false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, diags := EvalCondition(parseCondition(t, tc.expr), tc.in)
			if got {
				t.Error("EvalCondition = true, want false")
			}
			if !diags.HasErrors() || len(diags) != 1 {
				t.Fatalf("diagnostics = %v, want one error", diags)
			}
			d := diags[0]
			if rangeString(d.Subject) != tc.subject || d.Summary != tc.summary || !strings.Contains(d.Detail, tc.detail) {
				t.Errorf("got %s: %s; %s\nwant %s: %s; ...%s...", rangeString(d.Subject), d.Summary, d.Detail, tc.subject, tc.summary, tc.detail)
			}
		})
	}
}

func TestCheckCondition(t *testing.T) {
	tests := []struct {
		name string
		expr string
		want []string // "range: summary: detail part"
	}{
		{"valid", `anytrue([for f in change.files : glob(f.path, "deploy/prod/**")]) || change.count > 10`, nil},
		// Loads, and fails closed at run time unless agent.name is "true"
		// or "false": HCL converts strings to bool.
		{"string", `agent.name`, nil},
		{"string literal", `"true"`, nil},
		{"number", `change.count`, []string{"cond.hcl:1:1-1:13: Condition is not a bool: gives number"}},
		{"list", `change.paths`, []string{"cond.hcl:1:1-1:13: Condition is not a bool: gives list of string"}},
		{"unknown variable", `chnage.count > 1`, []string{`cond.hcl:1:1-1:13: Unknown variable: Did you mean "change"?`}},
		{"unknown variable without suggestion", `request.user == "x"`, []string{`cond.hcl:1:1-1:13: Unknown variable: there is no variable "request".`}},
		{"unsupported attribute", `change.fiels == []`, []string{`cond.hcl:1:7-1:13: Unsupported attribute: Did you mean "files"?`}},
		{"unsupported attribute of agent", `agent.nmae == "x"`, []string{`cond.hcl:1:6-1:11: Unsupported attribute: Did you mean "name"?`}},
		{"unsupported attribute of a file", `change.files[0].pth == "x"`, []string{`cond.hcl:1:16-1:20: Unsupported attribute: does not have an attribute named "pth"`}},
		{"iterator attribute", `anytrue([for f in change.files : f.pth == "x"])`, []string{`cond.hcl:1:35-1:39: Unsupported attribute: f has no attribute "pth"; it has added, bytes, mode, path, removed, status. Did you mean "path"?`}},
		{"iterator attribute in an if clause", `length([for i, f in change.files : i if f.sttus == "added"]) > 0`, []string{`cond.hcl:1:42-1:48: Unsupported attribute: Did you mean "status"?`}},
		{"iterator attribute in an inner for", `anytrue([for f in change.files : anytrue([for g in ["a/**"] : glob(f.pht, g)])])`, []string{`cond.hcl:1:69-1:73: Unsupported attribute: Did you mean "path"?`}},
		{"inner for rebinds the name", `anytrue([for f in change.files : anytrue([for f in ["a"] : f == "x"])])`, nil},
		{"iterator over strings", `anytrue([for p in change.paths : startswith(p, "x")])`, nil},
		{"unknown function", `globb("a", "b")`, []string{`cond.hcl:1:1-1:6: Call to unknown function: Did you mean "glob"?`}},
		{"file", `file("x") == ""`, []string{"cond.hcl:1:1-1:5: Call to unknown function: file() is not available in policy conditions"}},
		{"templatefile", `templatefile("x", {}) == ""`, []string{"cond.hcl:1:1-1:13: Call to unknown function: templatefile() is not available in policy conditions"}},
		{"env", `env("CI") == "true"`, []string{"cond.hcl:1:1-1:4: Call to unknown function: env() is not available in policy conditions"}},
		{"wrong argument type", `glob(change.files, "x")`, []string{`cond.hcl:1:6-1:18: Invalid function argument: Invalid value for "path" parameter`}},
		{"all at once", `chnage.count > 1 || globb("a", "b")`, []string{
			`cond.hcl:1:1-1:13: Unknown variable: Did you mean "change"?`,
			`cond.hcl:1:21-1:26: Call to unknown function: Did you mean "glob"?`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diags := CheckCondition(parseCondition(t, tc.expr))
			for i := range max(len(diags), len(tc.want)) {
				switch {
				case i >= len(diags):
					t.Errorf("missing diagnostic %s", tc.want[i])
				case i >= len(tc.want):
					t.Errorf("unexpected diagnostic %s: %s: %s", rangeString(diags[i].Subject), diags[i].Summary, diags[i].Detail)
				default:
					d := diags[i]
					prefix := rangeString(d.Subject) + ": " + d.Summary + ": "
					wantPrefix, wantDetail, _ := strings.Cut(tc.want[i], ": "+d.Summary+": ")
					if prefix != wantPrefix+": "+d.Summary+": " || !strings.Contains(d.Detail, wantDetail) || d.Severity != hcl.DiagError {
						t.Errorf("got  %s%s\nwant %s", prefix, d.Detail, tc.want[i])
					}
				}
			}
		})
	}
}
