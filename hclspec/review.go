package hclspec

import (
	"fmt"
	"math"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// What a require_review rule does when a reviewer model disagrees.
const (
	// OnDisagreementApproval requires the rule's reviewers to approve.
	OnDisagreementApproval = "require_approval"
	// OnDisagreementDeny denies the change.
	OnDisagreementDeny = "deny"
)

// What a require_review rule makes of a reviewer model that fails (an
// error, or a reply that is not a valid verdict).
const (
	// OnErrorDisagree counts the failure as a disagreement: the default,
	// so a review that could not happen never lets a change through.
	OnErrorDisagree = "disagree"
	// OnErrorAbstain leaves the failed model out; the others decide. When
	// every model fails, that is still a disagreement.
	OnErrorAbstain = "abstain"
)

// MaxReviewModels bounds the models of one require_review rule.
const MaxReviewModels = 5

// ReviewRule is a `require_review "<name>"` block: when Condition is true
// the proposal's diff and rationale are sent to each of Models for a
// verdict; when one rejects, the change needs Min approvals from the
// Reviewers groups, or is denied, as OnDisagreement says.
type ReviewRule struct {
	Name      string
	Condition hcl.Expression
	// Models are the reviewer models, in the order written.
	Models []ReviewModel
	// Prompt is the review prompt; "" means the built-in one.
	Prompt string
	// OnDisagreement is OnDisagreementApproval or OnDisagreementDeny.
	OnDisagreement string
	// OnError is OnErrorDisagree or OnErrorAbstain.
	OnError string
	// Reviewers and Min are the approval a disagreement requires (with
	// OnDisagreementApproval).
	Reviewers []string
	Min       int

	DeclRange      hcl.Range
	ModelsRange    hcl.Range
	ReviewersRange hcl.Range

	fast compiled
}

// ReviewModel is one reviewer model: a model of an openai provider.
type ReviewModel struct {
	Provider *Provider
	Model    string
}

// String names the model as the rule writes it: <provider name>/<model>.
func (m ReviewModel) String() string { return m.Provider.Name + "/" + m.Model }

// Eval evaluates the rule's condition in c; no condition is true.
func (r *ReviewRule) Eval(c *ConditionContext) (bool, hcl.Diagnostics) {
	return c.evalCompiled(r.fast, r.Condition)
}

// Cost returns what a review by m that used the given tokens costs in US
// dollars at its provider's price; 0 without a price.
func (m ReviewModel) Cost(inputTokens, outputTokens int64) float64 {
	if m.Provider == nil {
		return 0
	}
	p, ok := m.Provider.Prices[m.Model]
	if !ok {
		return 0
	}
	return (float64(inputTokens)*p.InputPerMTok + float64(outputTokens)*p.OutputPerMTok) / 1e6
}

var reviewSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "condition"}, {Name: "models", Required: true}, {Name: "provider"}, {Name: "prompt"},
	{Name: "on_disagreement"}, {Name: "on_error"}, {Name: "reviewers"}, {Name: "min"},
}}

// decodeReview decodes a require_review block of policy p. Providers and
// reviewer groups are decoded before policies, so models and groups are
// checked here, where they are written.
func (l *loader) decodeReview(blk *hcl.Block, ctx *hcl.EvalContext, p *Policy) *ReviewRule {
	c := l.content(blk.Body, reviewSchema)
	if c == nil || c.Attributes["models"] == nil {
		return nil // a missing models is reported by Content
	}
	r := &ReviewRule{Name: blk.Labels[0], DeclRange: blk.DefRange, OnDisagreement: OnDisagreementApproval, OnError: OnErrorDisagree, Min: 1}
	ok := true
	if a, has := c.Attributes["condition"]; has {
		r.Condition = a.Expr
		if d := CheckCondition(r.Condition); d.HasErrors() {
			l.diags = append(l.diags, d...)
			ok = false
		} else {
			r.fast = compileCondition(r.Condition)
		}
	}
	var provider *Provider
	if a, has := c.Attributes["provider"]; has {
		if provider = l.providerRef(a); provider == nil {
			ok = false
		} else if provider.Kind != ProviderOpenAI {
			l.errorf(a.Expr.Range(), "Not a model provider", "A reviewer is a model: provider must be an openai provider, not %s.", provider.Ref())
			ok = false
			provider = nil
		}
	}
	r.ModelsRange = c.Attributes["models"].Expr.Range()
	var models []string
	if !l.decodeAttr(c.Attributes, "models", ctx, &models) {
		ok = false
	}
	if ok && !l.reviewModels(r, models, provider, c.Attributes["provider"] != nil) {
		ok = false
	}
	if l.decodeAttr(c.Attributes, "prompt", ctx, &r.Prompt) && strings.TrimSpace(r.Prompt) == "" {
		l.errorf(c.Attributes["prompt"].Expr.Range(), "Empty prompt", "prompt is the review prompt; leave it out for the built-in one, or write one, such as prompt = file(\"prompts/review.md\").")
		ok = false
	}
	if l.decodeAttr(c.Attributes, "on_disagreement", ctx, &r.OnDisagreement) {
		switch r.OnDisagreement {
		case OnDisagreementApproval, OnDisagreementDeny:
		default:
			l.errorf(c.Attributes["on_disagreement"].Expr.Range(), "Invalid on_disagreement", "%q is not what a disagreement can do: use %q (the reviewers this rule names must approve) or %q (the change is refused).%s",
				r.OnDisagreement, OnDisagreementApproval, OnDisagreementDeny, suggest(r.OnDisagreement, []string{OnDisagreementApproval, OnDisagreementDeny}))
			ok = false
		}
	}
	if l.decodeAttr(c.Attributes, "on_error", ctx, &r.OnError) {
		switch r.OnError {
		case OnErrorDisagree, OnErrorAbstain:
		default:
			l.errorf(c.Attributes["on_error"].Expr.Range(), "Invalid on_error", "%q is not what a failed review can count as: use %q (the default: a model that fails or answers no valid verdict disagrees) or %q (it is left out; the others decide).%s",
				r.OnError, OnErrorDisagree, OnErrorAbstain, suggest(r.OnError, []string{OnErrorDisagree, OnErrorAbstain}))
			ok = false
		}
	}
	if r.OnDisagreement == OnDisagreementDeny {
		for _, n := range []string{"reviewers", "min"} {
			if a, has := c.Attributes[n]; has {
				l.errorf(a.NameRange, "Unused argument", "%s names the approval a disagreement requires, but this rule denies on disagreement; remove %s, or set on_disagreement = %q.", n, n, OnDisagreementApproval)
				ok = false
			}
		}
	} else if !l.reviewApproval(r, c.Attributes, ctx, p) {
		ok = false
	}
	if !ok {
		return nil
	}
	return r
}

// reviewModels resolves the models of a rule: plain model names of the
// rule's provider, or, without one, "<provider name>/<model>" of an
// openai provider.
func (l *loader) reviewModels(r *ReviewRule, models []string, provider *Provider, hasProvider bool) bool {
	if hasProvider && provider == nil {
		return false
	}
	var known []string
	for _, p := range l.spec.Providers {
		if p.Kind == ProviderOpenAI {
			known = append(known, p.Name)
		}
	}
	switch {
	case len(models) == 0:
		l.errorf(r.ModelsRange, "No reviewer models", "A require_review rule needs at least one model to ask, such as models = [\"default/gpt-4o\"].")
		return false
	case len(models) > MaxReviewModels:
		l.errorf(r.ModelsRange, "Too many reviewer models", "A require_review rule asks at most %d models; this one names %d.", MaxReviewModels, len(models))
		return false
	}
	ok := true
	seen := map[string]bool{}
	for _, m := range models {
		rm := ReviewModel{Provider: provider, Model: m}
		if provider == nil {
			name, model, cut := strings.Cut(m, "/")
			if !cut || name == "" || model == "" {
				l.errorf(r.ModelsRange, "Invalid reviewer model", "%q names no provider: write \"<provider>/<model>\", such as \"default/gpt-4o\" for provider \"openai\" \"default\", or set provider = provider.openai.<name> and list its models.", m)
				ok = false
				continue
			}
			for _, p := range l.spec.Providers {
				if p.Kind == ProviderOpenAI && p.Name == name {
					rm = ReviewModel{Provider: p, Model: model}
				}
			}
			if rm.Provider == nil {
				l.errorf(r.ModelsRange, "Unknown provider", "Reviewer model %q names provider %q, which %s does not declare as provider \"openai\" %q.%s", m, name, ProvidersFile, name, suggest(name, known))
				ok = false
				continue
			}
		} else if strings.TrimSpace(m) == "" {
			l.errorf(r.ModelsRange, "Invalid reviewer model", "A model name must not be empty.")
			ok = false
			continue
		}
		if seen[rm.String()] {
			l.errorf(r.ModelsRange, "Duplicate reviewer model", "%s is listed twice; each model gives one verdict.", rm)
			ok = false
			continue
		}
		seen[rm.String()] = true
		if _, priced := rm.Provider.Prices[rm.Model]; !priced {
			rng := r.ModelsRange
			l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Model has no price",
				Detail: fmt.Sprintf("Provider %q declares no price for %q, so this review's cost counts as zero and money budgets cannot hold it back. Add price %q { input_per_mtok = ..., output_per_mtok = ... } to the provider.", rm.Provider.Name, rm.Model, rm.Model), Subject: &rng})
		}
		r.Models = append(r.Models, rm)
	}
	return ok
}

// reviewApproval decodes the approval a disagreement requires: reviewers
// (groups of reviewers.hcl, required) and min.
func (l *loader) reviewApproval(r *ReviewRule, attrs hcl.Attributes, ctx *hcl.EvalContext, p *Policy) bool {
	a, has := attrs["reviewers"]
	if !has {
		l.errorf(r.DeclRange, "Missing reviewers", "Rule %q requires approval when a reviewer model disagrees: name the groups who must approve, such as reviewers = [\"sre\"], or set on_disagreement = %q.", r.Name, OnDisagreementDeny)
		return false
	}
	r.ReviewersRange = a.Expr.Range()
	if !l.decodeAttr(attrs, "reviewers", ctx, &r.Reviewers) {
		return false
	}
	ok := true
	if len(r.Reviewers) == 0 {
		l.errorf(r.ReviewersRange, "No reviewer groups", "reviewers names the groups of %s whose members must approve when a reviewer model disagrees; name at least one.", ReviewersFile)
		ok = false
	}
	var groups []string
	for _, g := range l.spec.Groups {
		groups = append(groups, g.Name)
	}
	for _, name := range r.Reviewers {
		if l.spec.Group(name) == nil {
			l.errorf(r.ReviewersRange, "Unknown reviewer group", "Rule %q of policy %q names group %q, which %s does not declare.%s", r.Name, p.Name, name, ReviewersFile, suggest(name, groups))
			ok = false
		}
	}
	var min float64
	if l.decodeAttr(attrs, "min", ctx, &min) {
		if min < 1 || min != math.Trunc(min) || min > 100 {
			l.errorf(attrs["min"].Expr.Range(), "Invalid minimum", "min is the number of approvals a disagreement requires: a whole number from 1 to 100.")
			ok = false
		} else {
			r.Min = int(min)
		}
	}
	return ok
}
