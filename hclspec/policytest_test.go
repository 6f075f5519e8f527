package hclspec

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hashicorp/hcl/v2"
)

// ptSpecFiles is the spec the policy tests below are checked against.
var ptSpecFiles = map[string]string{
	"providers.hcl": `provider "exec" "local" {}
`,
	"reviewers.hcl": `group "sre" {
  member "rita" { email = "rita@example.com" }
}
group "payments" {
  member "paula" { email = "paula@example.com" }
}
`,
	"agents/fixer.hcl": `agent "fixer" {
  provider = provider.exec.local
  command  = ["true"]
  scope { paths = ["config/**"] }
  trigger { manual = true }
}
`,
	"agents/pinner.hcl": `agent "pinner" {
  provider = provider.exec.local
  command  = ["true"]
  scope { paths = ["deploy/**"] }
  trigger { manual = true }
}
`,
	"policies/prod.hcl": `policy "prod" {
  applies_to = ["*"]
  require_approval "production" {
    condition = anytrue([for f in change.files : glob(f.path, "deploy/prod/**")])
    reviewers = ["sre"]
  }
  deny "secrets" {
    condition = anytrue([for f in change.files : glob(f.path, "**/secrets/**")])
  }
}
`,
	"policies/pay.hcl": `policy "pay" {
  applies_to = ["fixer"]
  require_approval "payments" {
    condition = anytrue([for f in change.files : glob(f.path, "config/payments*")])
    reviewers = ["payments", "sre"]
  }
}
`,
}

// ptFS returns the spec with the given files added.
func ptFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, src := range ptSpecFiles {
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
	}
	for name, src := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
	}
	return fsys
}

func ptLoad(t *testing.T, files map[string]string) ([]*PolicyTest, hcl.Diagnostics) {
	t.Helper()
	fsys := ptFS(files)
	spec, diags := Load(fsys, Options{})
	if len(diags) > 0 {
		t.Fatalf("Load: %v", diags)
	}
	return LoadTests(fsys, spec)
}

func ptRange(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d-%d:%d", r.Filename, r.Start.Line, r.Start.Column, r.End.Line, r.End.Column)
}

func TestLoadTests(t *testing.T) {
	tests, diags := ptLoad(t, map[string]string{
		"policies/prod_test.hcl": `test "prod" {
  agent = "pinner"
  change {
    file {
      path    = "deploy/prod/app.yaml"
      added   = 3
      removed = 1
    }
    file {
      path   = "deploy/staging/app.yaml"
      status = "deleted"
    }
    file {
      path   = "deploy/prod/rollout.sh"
      status = "added"
      added  = 12
      bytes  = 2 * 1024
      mode   = "100755"
    }
  }
  run {
    trigger = "spec"
    id      = "3f2a9c0d41be"
  }
  expect {
    decision  = "require_approval"
    rules     = ["prod/production", "builtin/one-review"]
    reviewers = { "sre|payments" = 2, any = 1 }
  }
}

test "minimal" {
  agent = "fixer"
  expect { decision = "deny" }
}
`,
		"policies/a_test.hcl": `test "first file" {
  agent = "fixer"
  expect {
    decision = "require_approval"
    rules    = []
  }
}
`,
	})
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(tests) != 3 {
		t.Fatalf("got %d tests, want 3", len(tests))
	}
	first, prod, minimal := tests[0], tests[1], tests[2]
	if first.Name != "first file" || prod.Name != "prod" || minimal.Name != "minimal" {
		t.Errorf("tests are %q, %q, %q; want files in name order, tests in file order", first.Name, prod.Name, minimal.Name)
	}

	if prod.Agent == nil || prod.Agent.Name != "pinner" {
		t.Errorf("agent = %v, want pinner", prod.Agent)
	}
	wantChange := []ChangeFile{
		{Path: "deploy/prod/app.yaml", Status: "modified", Added: 3, Removed: 1, Mode: ModeRegular},
		{Path: "deploy/staging/app.yaml", Status: "deleted"},
		{Path: "deploy/prod/rollout.sh", Status: "added", Added: 12, Bytes: 2048, Mode: ModeExecutable},
	}
	if !reflect.DeepEqual(prod.Change, wantChange) {
		t.Errorf("change = %+v, want %+v", prod.Change, wantChange)
	}
	if want := (RunInfo{ID: "3f2a9c0d41be", Trigger: "spec"}); prod.Run != want {
		t.Errorf("run = %+v, want %+v", prod.Run, want)
	}
	wantExpect := Expect{
		Decision:  "require_approval",
		Rules:     []string{"builtin/one-review", "prod/production"},
		Reviewers: map[string]int{"payments|sre": 2, "any": 1},
	}
	got := prod.Expect
	if got.Decision != wantExpect.Decision || !reflect.DeepEqual(got.Rules, wantExpect.Rules) || !reflect.DeepEqual(got.Reviewers, wantExpect.Reviewers) {
		t.Errorf("expect = %+v, want %+v", got, wantExpect)
	}
	for _, r := range []struct{ name, got, want string }{
		{"test", ptRange(prod.DeclRange), "policies/prod_test.hcl:1:1-1:12"},
		{"agent", ptRange(prod.AgentRange), "policies/prod_test.hcl:2:11-2:19"},
		{"decision", ptRange(got.DecisionRange), "policies/prod_test.hcl:26:5-26:35"},
		{"rules", ptRange(got.RulesRange), "policies/prod_test.hcl:27:5-27:58"},
		{"reviewers", ptRange(got.ReviewersRange), "policies/prod_test.hcl:28:5-28:48"},
	} {
		if r.got != r.want {
			t.Errorf("%s range = %s, want %s", r.name, r.got, r.want)
		}
	}

	// Unset expectations are nil, an empty list is checked as empty.
	if minimal.Expect.Rules != nil || minimal.Expect.Reviewers != nil || minimal.Change != nil {
		t.Errorf("minimal test has rules %v, reviewers %v, change %v; want nil", minimal.Expect.Rules, minimal.Expect.Reviewers, minimal.Change)
	}
	if first.Expect.Rules == nil || len(first.Expect.Rules) != 0 {
		t.Errorf("rules = [] decoded as %#v, want an empty, non-nil list", first.Expect.Rules)
	}
}

func TestLoadTestsNone(t *testing.T) {
	tests, diags := ptLoad(t, nil)
	if tests != nil || diags != nil {
		t.Errorf("LoadTests without test files = %v, %v; want nothing", tests, diags)
	}
}

// Load leaves test files to LoadTests: a test file is not a policy file.
func TestLoadSkipsTests(t *testing.T) {
	fsys := ptFS(map[string]string{"policies/prod_test.hcl": `test "x" {
  agent = "nobody"
}
`})
	spec, diags := Load(fsys, Options{})
	if len(diags) > 0 {
		t.Fatalf("Load: %v", diags)
	}
	if len(spec.Policies) != 2 {
		t.Errorf("got %d policies, want 2", len(spec.Policies))
	}
	for name := range spec.Files {
		if strings.HasSuffix(name, TestSuffix) {
			t.Errorf("Load parsed %s", name)
		}
	}
}

// TestLoadTestsDiagnostics checks every mistake in a test file: its
// summary, the exact range of its subject and that the detail says how to
// fix it.
func TestLoadTestsDiagnostics(t *testing.T) {
	type diag struct {
		subject string // file:line:col-line:col
		summary string
		detail  string // must be part of the detail
	}
	tests := []struct {
		name string
		src  string // policies/t_test.hcl
		want []diag
	}{
		{"unknown agent", `test "t" {
  agent = "pinnr"
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:2:11-2:18", "Unknown agent", `Agent "pinnr" is not declared in agents/*.hcl; test an agent that is ("fixer", "pinner"). Did you mean "pinner"?`},
		}},
		{"bad evals", `test "t" {
  agent = "pinner"
  change {
    evals { failed = -1 }
    evals { passed = 1 }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:4:22-4:24", "Invalid eval count", "failed is a number of eval scenarios and must be 0 or more."},
			{"policies/t_test.hcl:5:5-5:10", "Duplicate evals block", "A change has at most one evals block; the first is at policies/t_test.hcl:4,5-10."},
		}},
		{"unknown review rule", `test "t" {
  agent = "pinner"
  review "second-opinion" { verdicts = ["approve"] }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:3:10-3:26", "Unknown review rule", `No policy has a require_review "second-opinion" rule to state verdicts for.`},
		}},
		{"missing agent", `test "t" {
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:1:10-1:10", "Missing required argument", `The argument "agent" is required`},
		}},
		{"bad status", `test "t" {
  agent = "pinner"
  change {
    file {
      path   = "deploy/app.yaml"
      status = "changed"
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:16-6:25", "Invalid file status", `"changed" is not a file status: use "added", "modified" or "deleted".`},
		}},
		{"status typo", `test "t" {
  agent = "pinner"
  change {
    file {
      path   = "deploy/app.yaml"
      status = "delted"
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:16-6:24", "Invalid file status", `Did you mean "deleted"?`},
		}},
		{"negative counts", `test "t" {
  agent = "pinner"
  change {
    file {
      path    = "deploy/app.yaml"
      added   = -1
      removed = -20
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:17-6:19", "Invalid line count", "added is the number of lines the file added and must be 0 or more"},
			{"policies/t_test.hcl:7:17-7:20", "Invalid line count", "removed is the number of lines the file removed and must be 0 or more"},
		}},
		{"bad sizes and modes", `test "t" {
  agent = "pinner"
  change {
    file {
      path  = "deploy/a.yaml"
      bytes = -1
      mode  = "100645"
    }
    file {
      path   = "deploy/b.yaml"
      status = "deleted"
      bytes  = 10
      mode   = "100644"
    }
    file {
      path  = "deploy/c.yaml"
      bytes = 1.5
      mode  = "755"
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:15-6:17", "Invalid size", "bytes is the file's new size and must be 0 or more"},
			{"policies/t_test.hcl:7:15-7:23", "Invalid mode", `"100645" is not a git file mode: use "100644" (a regular file), "100755" (an executable) or "120000" (a symbolic link). Did you mean "100644"?`},
			{"policies/t_test.hcl:12:16-12:18", "Invalid size", "A deleted file has no new content"},
			{"policies/t_test.hcl:13:16-13:24", "Invalid mode", "A deleted file has no new mode"},
			{"policies/t_test.hcl:17:15-17:18", "Unsuitable value type", "value must be a whole number"},
			{"policies/t_test.hcl:18:15-18:20", "Invalid mode", `"755" is not a git file mode`},
		}},
		{"count of wrong type", `test "t" {
  agent = "pinner"
  change {
    file {
      path  = "deploy/app.yaml"
      added = "many"
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:16-6:20", "Unsuitable value type", "a number is required"},
		}},
		{"missing path", `test "t" {
  agent = "pinner"
  change {
    file {
      added = 1
    }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:4:10-4:10", "Missing required argument", `The argument "path" is required`},
		}},
		{"bad paths", `test "t" {
  agent = "pinner"
  change {
    file { path = "/etc/passwd" }
    file { path = "deploy/../../x" }
    file { path = "deploy/app.yaml" }
    file { path = "deploy/app.yaml" }
  }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:4:19-4:32", "Invalid path", `"/etc/passwd" is not a clean path relative to the repository root`},
			{"policies/t_test.hcl:5:19-5:35", "Invalid path", `"deploy/../../x" is not a clean path`},
			{"policies/t_test.hcl:7:19-7:36", "Duplicate file", `"deploy/app.yaml" is already part of this change at policies/t_test.hcl:6,19-36`},
		}},
		{"bad decision", `test "t" {
  agent = "pinner"
  expect { decision = "allow" }
}
`, []diag{
			{"policies/t_test.hcl:3:23-3:30", "Invalid decision", `"allow" is not a decision: expect "require_approval" or "deny". There is no "allow"`},
		}},
		{"decision typo", `test "t" {
  agent = "pinner"
  expect { decision = "dney" }
}
`, []diag{
			{"policies/t_test.hcl:3:23-3:29", "Invalid decision", `Did you mean "deny"?`},
		}},
		{"missing decision", `test "t" {
  agent = "pinner"
  expect { rules = [] }
}
`, []diag{
			{"policies/t_test.hcl:3:12-3:12", "Missing required argument", `The argument "decision" is required`},
		}},
		{"missing expect", `test "t" {
  agent = "pinner"
}
`, []diag{
			{"policies/t_test.hcl:1:1-1:9", "Missing expect block", `Test "t" checks nothing: add expect { decision = "require_approval" }`},
		}},
		{"duplicate blocks", `test "t" {
  agent = "pinner"
  change {}
  change {}
  expect { decision = "deny" }
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:4:3-4:9", "Duplicate change block", "at most one change block; the first is at policies/t_test.hcl:3,3-9"},
			{"policies/t_test.hcl:6:3-6:9", "Duplicate expect block", "at most one expect block; the first is at policies/t_test.hcl:5,3-9"},
		}},
		{"duplicate test", `test "t" {
  agent = "pinner"
  expect { decision = "deny" }
}

test "t" {
  agent = "fixer"
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:6:6-6:9", "Duplicate test", `A test "t" is already declared at policies/t_test.hcl:1,1-9; test names must be unique within a file`},
		}},
		{"empty test name", `test "" {
  agent = "pinner"
  expect { decision = "deny" }
}
`, []diag{
			{"policies/t_test.hcl:1:6-1:8", "Invalid test name", "A test needs a name"},
		}},
		{"unknown rule", `test "t" {
  agent = "pinner"
  expect {
    decision = "deny"
    rules    = ["prod/secret", "builtin/one-reviews", "nope"]
  }
}
`, []diag{
			{"policies/t_test.hcl:5:17-5:30", "Unknown rule", `No policy declares a rule "prod/secret". Rules are named policy/rule; this repository has "builtin/one-review", "builtin/self-modification", "pay/payments", "prod/production", "prod/secrets". Did you mean "prod/secrets"?`},
			{"policies/t_test.hcl:5:32-5:53", "Unknown rule", `Did you mean "builtin/one-review"?`},
			{"policies/t_test.hcl:5:55-5:61", "Unknown rule", `No policy declares a rule "nope"`},
		}},
		{"rule of a policy that does not apply", `test "t" {
  agent = "pinner"
  expect {
    decision = "require_approval"
    rules    = ["pay/payments"]
  }
}
`, []diag{
			{"policies/t_test.hcl:5:17-5:31", "Rule cannot fire", `Policy "pay" applies to "fixer", not to agent "pinner", so "pay/payments" never fires in this test`},
		}},
		{"duplicate rule", `test "t" {
  agent = "pinner"
  expect {
    decision = "deny"
    rules    = ["prod/secrets", "prod/secrets"]
  }
}
`, []diag{
			{"policies/t_test.hcl:5:33-5:47", "Duplicate rule", `"prod/secrets" is listed twice`},
		}},
		{"rules not a list", `test "t" {
  agent = "pinner"
  expect {
    decision = "deny"
    rules    = "prod/secrets"
  }
}
`, []diag{
			{"policies/t_test.hcl:5:17-5:29", "Unsuitable value type", "list of string required"},
		}},
		{"unknown reviewer group", `test "t" {
  agent = "fixer"
  expect {
    decision  = "require_approval"
    reviewers = { sres = 1, "payment|sre" = 1, anyone = 1 }
  }
}
`, []diag{
			{"policies/t_test.hcl:5:19-5:23", "Unknown reviewer group", `"sres" is not a group in reviewers.hcl: use a group name, names joined by "|" for a rule with several groups, or "any" for the requirement with no groups. Did you mean "sre"?`},
			{"policies/t_test.hcl:5:29-5:42", "Unknown reviewer group", `"payment" is not a group in reviewers.hcl: use a group name`},
			{"policies/t_test.hcl:5:48-5:54", "Unknown reviewer group", `"anyone" is not a group`},
		}},
		{"bad reviewer count", `test "t" {
  agent = "fixer"
  expect {
    decision  = "require_approval"
    reviewers = { sre = 0 }
  }
}
`, []diag{
			{"policies/t_test.hcl:5:25-5:26", "Invalid reviewer count", `"sre" = 0: the value is the number of approvals required, at least 1`},
		}},
		{"duplicate reviewer requirement", `test "t" {
  agent = "fixer"
  expect {
    decision  = "require_approval"
    reviewers = { "sre|payments" = 1, "payments|sre" = 2 }
  }
}
`, []diag{
			{"policies/t_test.hcl:5:39-5:53", "Duplicate reviewer requirement", `"payments|sre" names the same groups as another key`},
		}},
		{"unknown block and argument", `test "t" {
  agent  = "pinner"
  agents = "fixer"
  expect { decision = "deny" }
}

tests "u" {}
`, []diag{
			// The file's blocks are checked before their bodies.
			{"policies/t_test.hcl:7:1-7:6", "Unsupported block type", `Did you mean "test"?`},
			{"policies/t_test.hcl:3:3-3:9", "Unsupported argument", `An argument named "agents" is not expected here.`},
		}},
		{"syntax error", `test "t" {
  agent = "pinner"
  expect { decision = "deny" }
`, []diag{
			{"policies/t_test.hcl:1:10-1:11", "Unclosed configuration block", "There is no closing brace for this block before the end of the file."},
		}},
		{"several mistakes, all reported", `test "t" {
  agent = "pinnr"
  change {
    file {
      path   = "deploy/app.yaml"
      status = "modifed"
      added  = -3
    }
  }
  expect {
    decision  = "approve"
    rules     = ["prod/prod"]
    reviewers = { sre = 0 }
  }
}
`, []diag{
			{"policies/t_test.hcl:2:11-2:18", "Unknown agent", `Did you mean "pinner"?`},
			{"policies/t_test.hcl:6:16-6:25", "Invalid file status", `Did you mean "modified"?`},
			{"policies/t_test.hcl:7:16-7:18", "Invalid line count", "must be 0 or more"},
			{"policies/t_test.hcl:11:17-11:26", "Invalid decision", `"approve" is not a decision`},
			{"policies/t_test.hcl:12:18-12:29", "Unknown rule", `No policy declares a rule "prod/prod"`},
			{"policies/t_test.hcl:13:25-13:26", "Invalid reviewer count", "at least 1"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, diags := ptLoad(t, map[string]string{"policies/t_test.hcl": tc.src})
			if got != nil {
				t.Errorf("LoadTests returned tests despite errors")
			}
			for i := range max(len(diags), len(tc.want)) {
				switch {
				case i >= len(diags):
					t.Errorf("missing diagnostic %s: %s", tc.want[i].subject, tc.want[i].summary)
				case i >= len(tc.want):
					t.Errorf("unexpected diagnostic %s: %s; %s", ptRange(*diags[i].Subject), diags[i].Summary, diags[i].Detail)
				default:
					d, w := diags[i], tc.want[i]
					subject := "<nil>"
					if d.Subject != nil {
						subject = ptRange(*d.Subject)
					}
					if subject != w.subject || d.Summary != w.summary || !strings.Contains(d.Detail, w.detail) {
						t.Errorf("diagnostic %d:\n got %s: %s; %s\nwant %s: %s; ...%s...", i, subject, d.Summary, d.Detail, w.subject, w.summary, w.detail)
					}
					if d.Severity != hcl.DiagError {
						t.Errorf("diagnostic %d is not an error", i)
					}
				}
			}
		})
	}
}

// The example repository's policy tests load; policy's tests run them.
func TestLoadTestsExample(t *testing.T) {
	fsys := os.DirFS("../examples/repo-layout")
	spec, diags := Load(fsys, Options{})
	if len(diags) > 0 {
		t.Fatalf("Load: %v", diags)
	}
	tests, diags := LoadTests(fsys, spec)
	if len(diags) > 0 {
		t.Fatalf("LoadTests: %v", diags)
	}
	if len(tests) == 0 {
		t.Fatal("the example has no policy tests")
	}
}

// FuzzLoadTests checks that LoadTests never panics on a test file, that
// every error points into the file, and that what it returns is valid.
func FuzzLoadTests(f *testing.F) {
	for _, name := range []string{"protect-prod_test.hcl", "control-files_test.hcl"} {
		b, err := os.ReadFile("../examples/repo-layout/policies/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(`test "t" {
  agent = "fixer"
  change {
    file {
      path    = "config/payments.env"
      status  = "added"
      added   = 2
    }
  }
  run { trigger = "spec" }
  expect {
    decision  = "require_approval"
    rules     = ["pay/payments"]
    reviewers = { "payments|sre" = 1 }
  }
}
`)
	fsys := ptFS(nil)
	spec, diags := Load(fsys, Options{})
	if len(diags) > 0 {
		f.Fatalf("Load: %v", diags)
	}
	const name = "policies/fuzz_test.hcl"
	f.Fuzz(func(t *testing.T, src string) {
		fsys[name] = &fstest.MapFile{Data: []byte(src)}
		tests, diags := LoadTests(fsys, spec)
		if diags.HasErrors() {
			if tests != nil {
				t.Errorf("tests returned despite errors")
			}
			for _, d := range diags {
				if s := d.Subject; s != nil && (s.Filename != name || s.Start.Line < 1 || s.Start.Column < 1) {
					t.Errorf("diagnostic %q at %s, want a position in %s", d.Summary, ptRange(*s), name)
				}
			}
			return
		}
		for _, pt := range tests {
			if pt.Agent == nil || (pt.Expect.Decision != DecisionDeny && pt.Expect.Decision != DecisionRequireApproval) {
				t.Errorf("test %q: agent %v, decision %q", pt.Name, pt.Agent, pt.Expect.Decision)
			}
			for _, c := range pt.Change {
				if c.Added < 0 || c.Removed < 0 || c.Path == "" {
					t.Errorf("test %q: invalid file %+v", pt.Name, c)
				}
			}
		}
	})
}
