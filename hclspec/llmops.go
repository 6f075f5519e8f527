package hclspec

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Model tiers and the response cache of a model agent:
//
//	models   = ["small-model", "large-model"]
//	escalate { on = ["failure", "step_limit", "risk"], risk_at_least = "high" }
//	cache    = true

// Escalation conditions: when the next model of an agent's models takes
// over from the one before.
const (
	// EscalateFailure: the attempt failed (the model's error after the
	// provider's retries, a tool-loop error, a limit on work).
	EscalateFailure = "failure"
	// EscalateStepLimit: the attempt reached limits.max_steps.
	EscalateStepLimit = "step_limit"
	// EscalateRisk: the attempt finished with a self-assessed risk at or
	// above risk_at_least.
	EscalateRisk = "risk"
)

// EscalateConditions are the values of escalate { on }.
var EscalateConditions = []string{EscalateFailure, EscalateStepLimit, EscalateRisk}

// RiskLevels are the risks an agent reports with finish, lowest first.
var RiskLevels = []string{"low", "medium", "high"}

// RiskAtLeast reports whether risk is at or above threshold, both of
// RiskLevels; an unknown risk counts as the highest, so that a model
// cannot dodge escalation by misspelling it.
func RiskAtLeast(risk, threshold string) bool {
	r := slices.Index(RiskLevels, strings.ToLower(strings.TrimSpace(risk)))
	if r < 0 {
		r = len(RiskLevels)
	}
	return r >= slices.Index(RiskLevels, threshold)
}

// Escalate is an agent's `escalate` block: when a run's attempt with one
// of its models hands over to the next.
type Escalate struct {
	// On holds EscalateConditions, each once.
	On []string
	// RiskAtLeast is the risk (of RiskLevels) at which EscalateRisk
	// escalates; set when On holds it.
	RiskAtLeast string
	Range       hcl.Range
}

// When reports whether the block escalates on condition.
func (e *Escalate) When(condition string) bool {
	return e != nil && slices.Contains(e.On, condition)
}

var escalateSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "on", Required: true}, {Name: "risk_at_least"},
}}

// Tiers returns the models a run of the agent may use, in order: its
// models, or its one model. Nil for an agent without a model.
func (a *Agent) Tiers() []string {
	if len(a.Models) > 0 {
		return a.Models
	}
	if a.Model != "" {
		return []string{a.Model}
	}
	return nil
}

// ModelCost is the cost in US dollars of tokens of model at the agent's
// provider's price for it; 0 when the provider declares none.
func (a *Agent) ModelCost(model string, inputTokens, outputTokens int64) float64 {
	if a.Provider == nil {
		return 0
	}
	p, ok := a.Provider.Prices[model]
	if !ok {
		return 0
	}
	return (float64(inputTokens)*p.InputPerMTok + float64(outputTokens)*p.OutputPerMTok) / 1e6
}

// decodeLLMOps decodes an agent's models, escalate and cache, after its
// model: it sets Model to the first of models when model is left out,
// and checks that both agree when both are set.
func (l *loader) decodeLLMOps(c *hcl.BodyContent, a *Agent, ctx *hcl.EvalContext) {
	if a.Provider != nil && a.Provider.Kind != ProviderOpenAI {
		for _, name := range []string{"models", "cache"} {
			if attr, ok := c.Attributes[name]; ok {
				l.errorf(attr.NameRange, "Unsupported argument", "%s is for model agents; agent %q uses %s provider %q, which runs a command. Remove %s.", name, a.Name, a.Provider.Kind, a.Provider.Name, name)
			}
		}
		for _, blk := range c.Blocks {
			if blk.Type == "escalate" {
				l.errorf(blk.DefRange, "Unsupported block", "escalate is for model agents; agent %q uses %s provider %q, which runs a command. Remove the escalate block.", a.Name, a.Provider.Kind, a.Provider.Name)
			}
		}
		return
	}
	l.decodeAttr(c.Attributes, "cache", ctx, &a.Cache)
	if attr, ok := c.Attributes["models"]; ok && l.decodeAttr(c.Attributes, "models", ctx, &a.Models) {
		a.ModelsRange = attr.Expr.Range()
		l.checkModels(c, attr, a)
	}
	for _, blk := range c.Blocks {
		if blk.Type != "escalate" || a.Escalate != nil {
			continue // a second block is reported as a duplicate
		}
		a.Escalate = l.decodeEscalate(blk, ctx)
	}
	if a.Escalate != nil && len(a.Models) < 2 {
		l.errorf(a.Escalate.Range, "Nothing to escalate to", "Agent %q escalates, but has no second model to hand over to: list the models in order, as models = [\"small-model\", \"large-model\"], or remove the escalate block.", a.Name)
	}
	if a.Escalate == nil && len(a.Models) > 1 {
		rng := a.ModelsRange
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Models never escalate",
			Detail:  fmt.Sprintf("Agent %q lists %d models but has no escalate block, so its runs only use %q. Add escalate { on = [\"failure\", \"step_limit\"] } to hand over to the next model.", a.Name, len(a.Models), a.Models[0]),
			Subject: &rng})
	}
}

// checkModels checks models: not empty, no empty or repeated name, the
// same first model as model, and a price for each.
func (l *loader) checkModels(c *hcl.BodyContent, attr *hcl.Attribute, a *Agent) {
	if len(a.Models) == 0 {
		l.errorf(attr.Expr.Range(), "Empty models", "models lists the models a run may use, in order: give at least one, as models = [\"small-model\", \"large-model\"], or remove it and set model.")
		return
	}
	elem := func(i int) hcl.Range {
		if t, ok := attr.Expr.(*hclsyntax.TupleConsExpr); ok && i < len(t.Exprs) {
			return t.Exprs[i].Range()
		}
		return attr.Expr.Range()
	}
	ok := true
	for i, m := range a.Models {
		switch {
		case strings.TrimSpace(m) == "":
			l.errorf(elem(i), "Empty model name", "Model %d of models is empty: name a model the provider serves, such as \"gpt-4o-mini\".", i+1)
			ok = false
		case slices.Index(a.Models, m) < i:
			l.errorf(elem(i), "Duplicate model", "%q is listed twice in models (first as model %d); each tier is a different model: remove the repeat.", m, slices.Index(a.Models, m)+1)
			ok = false
		}
	}
	if !ok {
		return
	}
	mattr, hasModel := c.Attributes["model"]
	if hasModel {
		if a.Model != a.Models[0] {
			l.errorf(mattr.Expr.Range(), "Conflicting model", "model is %q but models starts with %q; a run starts with the first of models. Remove model, or make it the first of models.", a.Model, a.Models[0])
		}
	} else {
		a.Model = a.Models[0]
	}
	if a.Provider == nil || a.Provider.Kind != ProviderOpenAI {
		return
	}
	for i, m := range a.Models {
		if _, priced := a.Provider.Prices[m]; priced || (i == 0 && hasModel) {
			continue // model's own warning covers the first
		}
		rng := elem(i)
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Model has no price",
			Detail:  fmt.Sprintf("Provider %q declares no price for %q, so this agent's cost on it counts as zero and money budgets cannot hold it back. Add price %q { input_per_mtok = ..., output_per_mtok = ... } to the provider.", a.Provider.Name, m, m),
			Subject: &rng})
	}
}

func (l *loader) decodeEscalate(blk *hcl.Block, ctx *hcl.EvalContext) *Escalate {
	e := &Escalate{Range: blk.DefRange}
	c := l.content(blk.Body, escalateSchema)
	if c == nil {
		return e
	}
	if attr, ok := c.Attributes["on"]; ok && l.decodeAttr(c.Attributes, "on", ctx, &e.On) {
		if len(e.On) == 0 {
			l.errorf(attr.Expr.Range(), "Empty escalation", "on names when the next model takes over: one or more of %s.", strings.Join(EscalateConditions, ", "))
		}
		for i, on := range e.On {
			switch {
			case !slices.Contains(EscalateConditions, on):
				l.errorf(attr.Expr.Range(), "Unknown escalation condition", "%q is not a condition to escalate on; the conditions are %s.%s", on, strings.Join(EscalateConditions, ", "), suggest(on, EscalateConditions))
			case slices.Index(e.On, on) < i:
				l.errorf(attr.Expr.Range(), "Duplicate escalation condition", "%q is listed twice in on: remove the repeat.", on)
			}
		}
	}
	attr, hasRisk := c.Attributes["risk_at_least"]
	switch {
	case hasRisk && l.decodeAttr(c.Attributes, "risk_at_least", ctx, &e.RiskAtLeast):
		if !slices.Contains(RiskLevels, e.RiskAtLeast) {
			l.errorf(attr.Expr.Range(), "Invalid risk", "risk_at_least is one of %s; %q is not.%s", strings.Join(RiskLevels, ", "), e.RiskAtLeast, suggest(e.RiskAtLeast, RiskLevels))
		}
		if !e.When(EscalateRisk) {
			l.errorf(attr.NameRange, "Unused risk threshold", "risk_at_least only applies when on includes \"risk\": add it, as on = [\"failure\", \"risk\"], or remove risk_at_least.")
		}
	case !hasRisk && e.When(EscalateRisk):
		l.errorf(blk.DefRange, "Missing risk threshold", "on includes \"risk\", which needs the risk at which to escalate: add risk_at_least = \"high\" (or \"medium\").")
	}
	return e
}
