package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/hclspec"
)

// TestResult is the outcome of one policy test.
type TestResult struct {
	Test *hclspec.PolicyTest
	// Decision is what Decide made of the test's change.
	Decision Decision
	Pass     bool
	// Failures say, one per expectation that was not met, what the test
	// expected and what the decision was, each starting with the
	// file:line:col of the expect attribute.
	Failures []string
}

// RunTests decides each test's change with Decide and compares the
// decision with what the test expects: the outcome always, and the set of
// rules that fired and the approval requirements when the test names them.
func RunTests(spec *hclspec.Spec, tests []*hclspec.PolicyTest) []TestResult {
	results := make([]TestResult, 0, len(tests))
	for _, t := range tests {
		results = append(results, RunTest(spec, t))
	}
	return results
}

// RunTest runs one policy test; see RunTests.
func RunTest(spec *hclspec.Spec, t *hclspec.PolicyTest) TestResult {
	in := hclspec.ConditionInput{Agent: t.Agent, Run: t.Run, Change: t.Change, Evals: t.Evals}
	d := testReviews(spec, Decide(spec, in), in, t.Reviews)
	res := TestResult{Test: t, Decision: d}
	// Decide denies when a condition fails to evaluate; a test that
	// expects a denial must not pass because of a broken condition.
	res.Failures = append(res.Failures, evalErrors(spec, t, in)...)
	e := t.Expect
	if d.Outcome != e.Decision {
		res.Failures = append(res.Failures, fmt.Sprintf("%s: decision: expected %q, got %q (%s)", pos(e.DecisionRange), e.Decision, d.Outcome, explain(d)))
	}
	if e.Rules != nil {
		got := FiredRules(d)
		if !slices.Equal(got, e.Rules) {
			missing := difference(e.Rules, got)
			extra := difference(got, e.Rules)
			var why []string
			if len(missing) > 0 {
				why = append(why, "did not fire: "+strings.Join(missing, ", "))
			}
			if len(extra) > 0 {
				why = append(why, "also fired: "+strings.Join(extra, ", "))
			}
			res.Failures = append(res.Failures, fmt.Sprintf("%s: rules: expected %s, got %s (%s)",
				pos(e.RulesRange), list(e.Rules), list(got), strings.Join(why, "; ")))
		}
	}
	if e.Reviewers != nil {
		got := Reviewers(d)
		if !maps.Equal(got, e.Reviewers) {
			note := ""
			if d.Outcome == Deny {
				note = " (a denied change has no approval requirements)"
			}
			res.Failures = append(res.Failures, fmt.Sprintf("%s: reviewers: expected %s, got %s%s",
				pos(e.ReviewersRange), object(e.Reviewers), object(got), note))
		}
	}
	res.Pass = len(res.Failures) == 0
	return res
}

// evalErrors reports the conditions that cannot be evaluated on the test's
// change.
func evalErrors(spec *hclspec.Spec, t *hclspec.PolicyTest, in hclspec.ConditionInput) []string {
	var out []string
	cond := in.Context()
	check := func(p *hclspec.Policy, rule string, expr hcl.Expression) {
		if _, diags := cond.Eval(expr); diags.HasErrors() {
			out = append(out, fmt.Sprintf("%s: condition of %s/%s could not be evaluated, so the decision denies: %s", pos(t.DeclRange), p.Name, rule, diags.Error()))
		}
	}
	for _, p := range spec.PoliciesFor(t.Agent.Name) {
		for _, r := range p.Denies {
			check(p, r.Name, r.Condition)
		}
		for _, r := range p.Approvals {
			check(p, r.Name, r.Condition)
		}
	}
	return out
}

// FiredRules returns the names of the rules that fired, sorted: the set a
// test's expect.rules is compared with.
func FiredRules(d Decision) []string {
	out := []string{}
	for _, r := range d.Rules {
		if !slices.Contains(out, r.Name()) {
			out = append(out, r.Name())
		}
	}
	slices.Sort(out)
	return out
}

// Reviewers returns the decision's requirements as a test's
// expect.reviewers writes them: the groups joined by "|", or
// hclspec.AnyReviewer for a requirement with no groups, to the minimum.
func Reviewers(d Decision) map[string]int {
	out := map[string]int{}
	for _, r := range d.Requirements {
		key := hclspec.AnyReviewer
		if len(r.Groups) > 0 {
			groups := slices.Sorted(slices.Values(r.Groups))
			key = strings.Join(groups, "|")
		}
		out[key] = r.Min
	}
	return out
}

// explain is the decision's summary, with the messages of the rules that
// denied it.
func explain(d Decision) string {
	if d.Outcome != Deny {
		return d.Summary
	}
	var parts []string
	for _, r := range d.Rules {
		if r.Blocking && r.Kind != KindApproval {
			parts = append(parts, r.Name()+": "+r.Message)
		}
	}
	return "deny " + strings.Join(parts, "; ")
}

// difference returns the elements of a that are not in b.
func difference(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func list(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// object writes requirements as HCL, as a test would.
func object(m map[string]int) string {
	if len(m) == 0 {
		return "{}"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key := k
		if !hclIdent(k) {
			key = strconv.Quote(k)
		}
		parts = append(parts, fmt.Sprintf("%s = %d", key, m[k]))
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func hclIdent(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || i > 0 && (r >= '0' && r <= '9' || r == '-')) {
			return false
		}
	}
	return s != ""
}

// testReviews folds the verdicts a test states into d, as the reconciler
// folds its reviewer models' (ApplyReviews): one per model of each pending
// review, in order; a model without one failed.
func testReviews(spec *hclspec.Spec, d Decision, in hclspec.ConditionInput, stated map[string][]string) Decision {
	pending := PendingReviews(spec, d, in)
	if len(pending) == 0 {
		return d
	}
	var reviews []Review
	for _, p := range pending {
		verdicts := stated[p.Rule.Name]
		for i, m := range p.Rule.Models {
			rv := Review{Policy: p.Policy.Name, Rule: p.Rule.Name, Provider: m.Provider.Ref(), Model: m.Model,
				Verdict: VerdictError, Error: "the test states no verdict for this model"}
			if i < len(verdicts) {
				rv.Verdict, rv.Error = verdicts[i], ""
			}
			reviews = append(reviews, rv)
		}
	}
	return ApplyReviews(spec, d, in, reviews).Decision
}
