package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/policy"
)

const policyUsage = "Usage: reconciler policy test [DIR] [--format text|json] [--run REGEXP]"

func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, policyUsage)
		return exitUsage
	}
	switch args[0] {
	case "test":
		return cmdPolicyTest(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, policyUsage)
		return exitOK
	}
	return usageError(stderr, "unknown policy command %q: use test", args[0])
}

const policyTestHelp = `Runs the tests in policies/*_test.hcl of DIR (default .) against the
policies of DIR: each test's change is decided as the reconciler would decide
it, and the decision is compared with the test's expect block.

Prints PASS or FAIL with the test's file:line:col and name, one line per test,
each failure indented below its test, and last "N passed, M failed". Exits 0
when every test passes, and also when there are no tests ("no tests found"),
as go test does; 1 when a test fails, when the spec or a test does not
load, or when DIR holds no spec at all (none of agents/, policies/,
providers.hcl and reviewers.hcl); 2 on usage errors.`

func cmdPolicyTest(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("policy test", "policy test [DIR] [--format text|json] [--run REGEXP]", stderr)
	format := fs.String("format", "text", "output format: text or json")
	runFlag := fs.String("run", "", "run only the tests whose names match `REGEXP`")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprintf(stderr, "\n%s\n", policyTestHelp) }
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 1 {
		return usageError(stderr, "policy test takes one directory, got %d arguments", fs.NArg())
	}
	dir := "."
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	filter, err := regexp.Compile(*runFlag)
	if err != nil {
		return usageError(stderr, "--run %q: %v", *runFlag, err)
	}
	if err := checkSpecDir(dir); err != nil {
		return fail(stderr, fmt.Errorf("policy test: %w", err))
	}

	fsys := os.DirFS(dir)
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: os.LookupEnv})
	var tests []*hclspec.PolicyTest
	if !diags.HasErrors() {
		// Warnings about the spec are validate's business.
		diags = nil
		tests, diags = hclspec.LoadTests(fsys, spec)
	}
	var results []policy.TestResult
	if !diags.HasErrors() {
		var selected []*hclspec.PolicyTest
		for _, t := range tests {
			if filter.MatchString(t.Name) {
				selected = append(selected, t)
			}
		}
		results = policy.RunTests(spec, selected)
	}
	passed, failed := 0, 0
	for _, r := range results {
		if r.Pass {
			passed++
		} else {
			failed++
		}
	}

	if *format == "json" {
		writePolicyTestJSON(stdout, diags, results, passed, failed)
	} else {
		if len(diags) > 0 {
			wr := hcl.NewDiagnosticTextWriter(stdout, parsedFiles(dir, diags), 100, false)
			_ = wr.WriteDiagnostics(diags)
		}
		if !diags.HasErrors() {
			switch {
			case len(tests) == 0:
				fmt.Fprintf(stdout, "no tests found in %s\n", hclspec.PolicyTestsGlob)
			case len(results) == 0:
				fmt.Fprintf(stdout, "no tests match --run %q\n", *runFlag)
			}
			for _, r := range results {
				status := "PASS"
				if !r.Pass {
					status = "FAIL"
				}
				fmt.Fprintf(stdout, "%s %s %s\n", status, position(r.Test.DeclRange), r.Test.Name)
				for _, f := range r.Failures {
					fmt.Fprintf(stdout, "    %s\n", f)
				}
			}
			fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
		}
	}
	if diags.HasErrors() || failed > 0 {
		return exitFail
	}
	return exitOK
}

func position(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

type jsonPolicyTest struct {
	Name     string          `json:"name"`
	Pos      string          `json:"pos"`
	Pass     bool            `json:"pass"`
	Failures []string        `json:"failures"`
	Decision policy.Decision `json:"decision"`
}

// writePolicyTestJSON prints the results, or the diagnostics that kept the
// tests from running, as one JSON object.
func writePolicyTestJSON(w io.Writer, diags hcl.Diagnostics, results []policy.TestResult, passed, failed int) {
	out := struct {
		Passed      int              `json:"passed"`
		Failed      int              `json:"failed"`
		Tests       []jsonPolicyTest `json:"tests"`
		Diagnostics []jsonDiag       `json:"diagnostics"`
	}{Passed: passed, Failed: failed, Tests: []jsonPolicyTest{}, Diagnostics: toJSONDiags(diags)}
	for _, r := range results {
		out.Tests = append(out.Tests, jsonPolicyTest{Name: r.Test.Name, Pos: position(r.Test.DeclRange), Pass: r.Pass,
			Failures: append([]string{}, r.Failures...), Decision: r.Decision})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
