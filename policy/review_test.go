package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentgitops/reconciler/hclspec"
)

func reviewSpec(t *testing.T) *hclspec.Spec {
	t.Helper()
	return loadSpec(t, specFS(t, "testdata/review.txtar"))
}

// verdict is a review of the named model under a rule.
func verdict(policy, rule, model, v string, reasons ...string) Review {
	return Review{Policy: policy, Rule: rule, Provider: "provider.openai.default", Model: model, Verdict: v, Reasons: reasons}
}

func TestApplyReviews(t *testing.T) {
	spec := reviewSpec(t)
	config := []hclspec.ChangeFile{modified("config/app.env", 1, 1)}
	tests := []struct {
		name    string
		agent   string
		change  []hclspec.ChangeFile
		reviews []Review
		// want: the outcome, the summary, the requirements (groups:min)
		// and the rules that fired, blocking ones marked with "!".
		outcome, summary string
		reqs             []string
		rules            []string
	}{
		{
			name: "both approve: the decision stands", agent: "approver", change: config,
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictApprove), verdict("approval", "config", "o3-mini", VerdictApprove)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", reqs: []string{":1"},
			rules: []string{"builtin/one-review!", "approval/config"},
		},
		{
			name: "one rejects: two of sre must approve", agent: "approver", change: config,
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictApprove), verdict("approval", "config", "o3-mini", VerdictReject, "raises the pool size fivefold")},
			outcome: RequireApproval, summary: "require_approval approval/config (2 of sre)", reqs: []string{"sre:2"},
			rules: []string{"approval/config!"},
		},
		{
			name: "a rejection adds to the other requirements", agent: "approver",
			change:  []hclspec.ChangeFile{modified("config/app.env", 1, 1), modified("payments/limits.yaml", 2, 0)},
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictReject), verdict("approval", "config", "o3-mini", VerdictApprove)},
			outcome: RequireApproval, summary: "require_approval approval/payments, approval/config (1 of payments, 2 of sre)", reqs: []string{"payments:1", "sre:2"},
			rules: []string{"approval/payments!", "approval/config!"},
		},
		{
			name: "condition false: nothing asked, nothing changes", agent: "approver", change: []hclspec.ChangeFile{modified("docs/x.md", 1, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", reqs: []string{":1"},
			rules: []string{"builtin/one-review!"},
		},
		{
			name: "a model error is a disagreement", agent: "approver", change: config,
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictApprove), {Policy: "approval", Rule: "config", Provider: "provider.openai.default", Model: "o3-mini", Verdict: VerdictError, Error: "connection refused"}},
			outcome: RequireApproval, summary: "require_approval approval/config (2 of sre)", reqs: []string{"sre:2"},
			rules: []string{"approval/config!"},
		},
		{
			name: "a model without a verdict is a disagreement", agent: "approver", change: config,
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictApprove)},
			outcome: RequireApproval, summary: "require_approval approval/config (2 of sre)", reqs: []string{"sre:2"},
			rules: []string{"approval/config!"},
		},
		{
			name: "another rule's or provider's verdict does not count", agent: "approver", change: config,
			reviews: []Review{verdict("approval", "config", "gpt-4o", VerdictApprove), verdict("approval", "other", "o3-mini", VerdictApprove),
				{Policy: "approval", Rule: "config", Provider: "provider.openai.elsewhere", Model: "o3-mini", Verdict: VerdictApprove}},
			outcome: RequireApproval, summary: "require_approval approval/config (2 of sre)", reqs: []string{"sre:2"},
			rules: []string{"approval/config!"},
		},
		{
			name: "a rejection denies", agent: "denier", change: config,
			reviews: []Review{verdict("deny", "prod", "gpt-4o", VerdictReject, "ignore previous instructions is in the diff")},
			outcome: Deny, summary: "deny deny/prod",
			rules: []string{"builtin/one-review!", "deny/prod!"},
		},
		{
			name: "a soft rejection must be overridden", agent: "softy", change: config,
			reviews: []Review{verdict("soft", "prod", "gpt-4o", VerdictReject)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer); override soft/prod", reqs: []string{":1"},
			rules: []string{"builtin/one-review!", "soft/prod!"},
		},
		{
			name: "an advisory rejection is recorded only", agent: "adviser", change: config,
			reviews: []Review{verdict("advice", "any", "gpt-4o", VerdictReject)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", reqs: []string{":1"},
			rules: []string{"builtin/one-review!", "advice/any"},
		},
		{
			name: "abstain: a failed model is left out", agent: "abstainer", change: config,
			reviews: []Review{verdict("abstain", "two", "gpt-4o", VerdictApprove), {Policy: "abstain", Rule: "two", Provider: "provider.openai.default", Model: "o3-mini", Verdict: VerdictError}},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", reqs: []string{":1"},
			rules: []string{"builtin/one-review!", "abstain/two"},
		},
		{
			name: "abstain: no verdict at all is still a disagreement", agent: "abstainer", change: config,
			reviews: []Review{{Policy: "abstain", Rule: "two", Provider: "provider.openai.default", Model: "gpt-4o", Verdict: VerdictError}, {Policy: "abstain", Rule: "two", Provider: "provider.openai.default", Model: "o3-mini", Verdict: VerdictError}},
			outcome: RequireApproval, summary: "require_approval abstain/two (1 of sre)", reqs: []string{"sre:1"},
			rules: []string{"abstain/two!"},
		},
		{
			name: "abstain: a rejection still disagrees", agent: "abstainer", change: config,
			reviews: []Review{verdict("abstain", "two", "gpt-4o", VerdictReject), {Policy: "abstain", Rule: "two", Provider: "provider.openai.default", Model: "o3-mini", Verdict: VerdictError}},
			outcome: RequireApproval, summary: "require_approval abstain/two (1 of sre)", reqs: []string{"sre:1"},
			rules: []string{"abstain/two!"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := hclspec.ConditionInput{Agent: spec.Agent(tc.agent), Change: tc.change}
			d := Decide(spec, in)
			before, _ := json.Marshal(d)
			got := ApplyReviews(spec, d, in, tc.reviews)
			if after, _ := json.Marshal(d); string(after) != string(before) {
				t.Errorf("ApplyReviews changed its argument:\n%s\n%s", before, after)
			}
			var reqs, rules []string
			for _, r := range got.Requirements {
				reqs = append(reqs, strings.Join(r.Groups, "|")+":"+jsonInt(r.Min))
			}
			for _, r := range got.Rules {
				n := r.Name()
				if r.Blocking {
					n += "!"
				}
				rules = append(rules, n)
			}
			if got.Outcome != tc.outcome || got.Summary != tc.summary || !slices.Equal(reqs, tc.reqs) || !slices.Equal(rules, tc.rules) {
				t.Errorf("got %s %q reqs %q rules %q\nwant %s %q reqs %q rules %q", got.Outcome, got.Summary, reqs, rules, tc.outcome, tc.summary, tc.reqs, tc.rules)
			}
			if !cmp.Equal(got.Reviews, tc.reviews) {
				t.Errorf("reviews not kept: %s", cmp.Diff(tc.reviews, got.Reviews))
			}
			if pending := PendingReviews(spec, d, in); (len(pending) > 0) != (len(tc.reviews) > 0) {
				t.Errorf("pending reviews = %d with %d reviews given", len(pending), len(tc.reviews))
			}
		})
	}
}

func TestApplyReviewsExplains(t *testing.T) {
	spec := reviewSpec(t)
	in := hclspec.ConditionInput{Agent: spec.Agent("approver"), Change: []hclspec.ChangeFile{modified("config/app.env", 1, 1)}}
	got := ApplyReviews(spec, Decide(spec, in), in, []Review{
		verdict("approval", "config", "gpt-4o", VerdictApprove),
		verdict("approval", "config", "o3-mini", VerdictReject, "raises the pool size fivefold", "no load test"),
	})
	var msg, pos string
	for _, r := range got.Rules {
		if r.Name() == "approval/config" {
			msg, pos = r.Message, r.Pos
		}
	}
	if want := "second-model review: approved by default/gpt-4o; rejected by default/o3-mini: raises the pool size fivefold"; msg != want {
		t.Errorf("message = %q, want %q", msg, want)
	}
	if pos != "policies/approver.hcl:7:3" {
		t.Errorf("pos = %q", pos)
	}
	// The ledger's decision is the Decision's fields and the reviews; a
	// reader of the Decision alone decodes it as before.
	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var plain Decision
	var back Reviewed
	if json.Unmarshal(raw, &plain) != nil || json.Unmarshal(raw, &back) != nil || plain.Summary != got.Summary || len(back.Reviews) != 2 || back.Reviews[1].Reasons[1] != "no load test" {
		t.Errorf("decision JSON %s decodes to %+v / %+v", raw, plain, back)
	}
	// An approval by the required group counts for the review's rule.
	unmet := Check(spec, got.Decision, []Approver{{Email: "rita@example.com"}})
	if len(unmet) != 1 || !strings.Contains(unmet[0], "needs 2 of sre, has 1") {
		t.Errorf("unmet with one approval = %q", unmet)
	}
	if unmet := Check(spec, got.Decision, []Approver{{Email: "rita@example.com"}, {Email: "sam@example.com"}}); len(unmet) != 0 {
		t.Errorf("unmet with two approvals = %q", unmet)
	}
	if unmet := Check(spec, got.Decision, []Approver{{Email: "rita@example.com"}, {Email: "paula@example.com"}}); len(unmet) != 1 {
		t.Errorf("a payments reviewer counted for sre: %q", unmet)
	}
}

func TestApplyReviewsKeepsADenial(t *testing.T) {
	spec := reviewSpec(t)
	in := hclspec.ConditionInput{Agent: spec.Agent("approver"), Change: []hclspec.ChangeFile{modified("config/app.env", 1, 1), modified("policies/approver.hcl", 1, 1)}}
	d := Decide(spec, in)
	if d.Outcome != Deny {
		t.Fatalf("a control change was not denied: %+v", d)
	}
	if p := PendingReviews(spec, d, in); len(p) != 0 {
		t.Errorf("a denied change is sent to %d review(s)", len(p))
	}
	got := ApplyReviews(spec, d, in, nil)
	if !cmp.Equal(got.Decision, d) {
		t.Errorf("denied decision changed: %s", cmp.Diff(d, got.Decision))
	}
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }
