package policy

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/internal/textcut"
)

// KindReview is the kind of a fired require_review rule.
const KindReview = "require_review"

// Verdicts of a reviewer model.
const (
	VerdictApprove = "approve"
	VerdictReject  = "reject"
	// VerdictError is a review that gave no verdict: the model failed,
	// or answered something that is not a valid verdict.
	VerdictError = "error"
)

// Review is one reviewer model's verdict on a change, as the decision
// records it. Reasons and Response are redacted and bounded; the request
// is recorded by its digest, since it is rebuilt from the proposal (see
// package reconcile).
type Review struct {
	Policy   string `json:"policy"`
	Rule     string `json:"rule"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
	// Verdict is VerdictApprove, VerdictReject or VerdictError.
	Verdict string   `json:"verdict"`
	Risk    string   `json:"risk,omitempty"`
	Reasons []string `json:"reasons,omitempty"`
	// Error says why a review has no verdict.
	Error        string  `json:"error,omitempty"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd,omitempty"`
	// Prompt names the review prompt: "builtin/v<n>" or the sha256 of
	// the rule's prompt.
	Prompt string `json:"prompt"`
	// ChangeID is the content id of the change reviewed.
	ChangeID string `json:"change_id"`
	// RequestSHA256 is the sha256 of the request body sent, and Response
	// what the model answered (its verdict call's arguments or its
	// message), so an audit can rebuild the one and parse the other.
	RequestSHA256 string `json:"request_sha256,omitempty"`
	Response      string `json:"response,omitempty"`
	// Reused marks a verdict carried over from an earlier decision on
	// the same change under the same rule: it was paid for there.
	Reused bool `json:"reused,omitempty"`
}

// Reviewed is a decision with the reviews that informed it, as a
// policy.decision entry records it: the Decision's fields and "reviews".
// Readers that need only the decision decode it into a Decision.
type Reviewed struct {
	Decision
	Reviews []Review `json:"reviews,omitempty"`
}

// Pending is a require_review rule whose condition holds for a change:
// its models must be asked.
type Pending struct {
	Policy *hclspec.Policy
	Rule   *hclspec.ReviewRule
}

// Name is the rule's policy/rule.
func (p Pending) Name() string { return p.Policy.Name + "/" + p.Rule.Name }

// PendingReviews returns the require_review rules, of the policies that
// apply to in.Agent, whose condition holds for the change, in file
// order; none for a decision that already denies it (a denied change is
// not sent to any model). A condition that cannot be evaluated is no
// pending review: ApplyReviews denies on it.
func PendingReviews(spec *hclspec.Spec, d Decision, in hclspec.ConditionInput) []Pending {
	if d.Outcome == Deny {
		return nil
	}
	var out []Pending
	cond := in.Context()
	for _, p := range spec.PoliciesFor(in.Agent.Name) {
		for _, r := range p.Reviews {
			if fired, diags := r.Eval(cond); fired && !diags.HasErrors() {
				out = append(out, Pending{Policy: p, Rule: r})
			}
		}
	}
	return out
}

// ApplyReviews folds the verdicts of the reviewer models into d, the
// decision Decide made on the same input. For each require_review rule
// whose condition holds, the verdicts of its models are read from
// reviews (a model without one counts as an error): the reviewers agree
// when every model approves, or, with on_error = "abstain", when the
// models that answered approve and at least one did. Otherwise they
// disagree, and the rule, unless its policy is advisory, adds its
// approval requirement (on_disagreement = "require_approval") or denies
// (on_disagreement = "deny"; a soft policy's deny must be overridden on
// the merge, as a soft deny rule's). A rule whose condition cannot be
// evaluated denies, as in Decide. Every fired rule is listed in the
// decision's rules with what its models said; a decision that already
// denies is returned with the reviews and otherwise unchanged.
func ApplyReviews(spec *hclspec.Spec, d Decision, in hclspec.ConditionInput, reviews []Review) Reviewed {
	out := Reviewed{Decision: d, Reviews: reviews}
	if d.Outcome == Deny {
		return out
	}
	d.Rules = slices.Clone(d.Rules)
	d.Requirements = slices.Clone(d.Requirements)
	d.Overrides = slices.Clone(d.Overrides)
	cond := in.Context()
	changed := false
	for _, p := range spec.PoliciesFor(in.Agent.Name) {
		for _, r := range p.Reviews {
			fired, diags := r.Eval(cond)
			if diags.HasErrors() {
				d.Rules = append(d.Rules, evalError(p, r.Name, r.DeclRange, diags))
				changed = true
				continue
			}
			if !fired {
				continue
			}
			agree, msg := verdictsOf(p, r, reviews)
			rule := Rule{Policy: p.Name, Rule: r.Name, Kind: KindReview, Enforcement: p.Enforcement, Pos: pos(r.DeclRange), Message: msg}
			if !agree && p.Enforcement != hclspec.Advisory {
				rule.Blocking = true
				changed = true
				if r.OnDisagreement == hclspec.OnDisagreementDeny {
					rule.Message = "deny on disagreement: " + msg
				} else {
					rule.Reviewers, rule.Min = r.Reviewers, r.Min
					d.Requirements = addRequirement(&d, r.Reviewers, r.Min)
				}
			}
			d.Rules = append(d.Rules, rule)
		}
	}
	if changed {
		summarize(&d)
	}
	out.Decision = d
	return out
}

// verdictsOf reports whether the models of rule r agree that the change
// may go on as decided, and says what they said.
func verdictsOf(p *hclspec.Policy, r *hclspec.ReviewRule, reviews []Review) (bool, string) {
	var approve, reject, failed []string
	for _, m := range r.Models {
		var got *Review
		for i := range reviews {
			rv := &reviews[i]
			if rv.Policy == p.Name && rv.Rule == r.Name && rv.Provider == m.Provider.Ref() && rv.Model == m.Model {
				got = rv
				break
			}
		}
		switch {
		case got == nil:
			failed = append(failed, m.String()+" (no verdict recorded)")
		case got.Verdict == VerdictApprove:
			approve = append(approve, m.String())
		case got.Verdict == VerdictReject:
			reason := ""
			if len(got.Reasons) > 0 {
				reason = ": " + clip(got.Reasons[0], 200)
			}
			reject = append(reject, m.String()+reason)
		default:
			why := got.Error
			if why == "" {
				why = "no valid verdict"
			}
			failed = append(failed, m.String()+" ("+clip(why, 200)+")")
		}
	}
	var parts []string
	if len(approve) > 0 {
		parts = append(parts, "approved by "+strings.Join(approve, ", "))
	}
	if len(reject) > 0 {
		parts = append(parts, "rejected by "+strings.Join(reject, "; "))
	}
	if len(failed) > 0 {
		parts = append(parts, "no verdict from "+strings.Join(failed, "; "))
	}
	msg := fmt.Sprintf("second-model review: %s", strings.Join(parts, "; "))
	agree := len(reject) == 0 && len(approve) > 0 && (len(failed) == 0 || r.OnError == hclspec.OnErrorAbstain)
	return agree, msg
}

// addRequirement merges a requirement of min approvals from groups into
// d's, keeping the strictest minimum per group set as Decide does; the
// default review gives way to it, as in Decide.
func addRequirement(d *Decision, groups []string, min int) []Requirement {
	reqs := map[string]Requirement{}
	for _, r := range d.Requirements {
		reqs[strings.Join(r.Groups, "|")] = r
	}
	if _, ok := reqs[""]; ok && len(groups) > 0 {
		delete(reqs, "")
		d.Rules = slices.DeleteFunc(d.Rules, func(r Rule) bool { return r.Kind == KindDefault })
	}
	g := slices.Clone(groups)
	sort.Strings(g)
	key := strings.Join(g, "|")
	if cur, ok := reqs[key]; !ok || min > cur.Min {
		reqs[key] = Requirement{Groups: g, Min: min}
	}
	var out []Requirement
	for _, k := range slices.Sorted(maps.Keys(reqs)) {
		out = append(out, reqs[k])
	}
	return out
}

// summarize sets d's outcome and summary from its rules and
// requirements, in the words Decide uses.
func summarize(d *Decision) {
	hardDeny := func(r Rule) bool {
		return r.Blocking && r.Enforcement != hclspec.Soft && (r.Kind == KindGuard || r.Kind == KindDeny || r.Kind == KindReview && r.Min == 0)
	}
	for _, r := range d.Rules {
		if r.Blocking && r.Enforcement == hclspec.Soft && r.Kind == KindReview && r.Min == 0 && !slices.Contains(d.Overrides, r.Name()) {
			d.Overrides = append(d.Overrides, r.Name())
		}
	}
	if denied := names(d.Rules, hardDeny); len(denied) > 0 {
		d.Outcome, d.Overrides, d.Requirements = Deny, nil, nil
		d.Summary = "deny " + strings.Join(denied, ", ")
		return
	}
	d.Outcome = RequireApproval
	var parts []string
	for _, r := range d.Requirements {
		parts = append(parts, r.String())
	}
	fired := names(d.Rules, func(r Rule) bool { return (r.Kind == KindApproval || r.Kind == KindReview && r.Min > 0) && r.Blocking })
	if len(fired) == 0 {
		fired = []string{"default"}
	}
	d.Summary = fmt.Sprintf("require_approval %s (%s)", strings.Join(fired, ", "), strings.Join(parts, ", "))
	if len(d.Overrides) > 0 {
		d.Summary += "; override " + strings.Join(d.Overrides, ", ")
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return textcut.Prefix(s, n) + "..."
}
