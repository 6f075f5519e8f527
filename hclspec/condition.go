package hclspec

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/text/unicode/norm"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// The types of the variables policy conditions see.
var (
	fileType = cty.Object(map[string]cty.Type{
		"path": cty.String, "status": cty.String, "added": cty.Number, "removed": cty.Number,
		"bytes": cty.Number, "mode": cty.String,
	})
	// evalsType is change.evals: the outcome of the evals the decision
	// ran (see EvalCounts).
	evalsType  = cty.Object(map[string]cty.Type{"passed": cty.Number, "failed": cty.Number})
	changeType = cty.Object(map[string]cty.Type{
		"files": cty.List(fileType), "paths": cty.List(cty.String),
		"added": cty.Number, "removed": cty.Number, "count": cty.Number, "bytes": cty.Number,
		"evals": evalsType,
	})
	agentType = cty.Object(map[string]cty.Type{
		"name": cty.String, "provider": cty.String, "model": cty.String,
		"scope": cty.List(cty.String), "work_unit_kind": cty.String,
	})
	runType = cty.Object(map[string]cty.Type{
		"id": cty.String, "trigger": cty.String, "model": cty.String, "spec_commit": cty.String,
	})
	conditionVars = map[string]cty.Type{"agent": agentType, "run": runType, "change": changeType}
)

// ChangeFile is one file of a proposed change, as conditions see it.
type ChangeFile struct {
	Path    string
	Status  string // added, modified, deleted
	Added   int
	Removed int
	// Bytes is the file's new size in bytes (a symbolic link's: the length
	// of its target); 0 when it is deleted.
	Bytes int64
	// Mode is the file's new git mode: ModeRegular, ModeExecutable or
	// ModeSymlink; "" when it is deleted.
	Mode string
}

// The git modes of a changed file, as ChangeFile.Mode and conditions'
// f.mode have them.
const (
	ModeRegular    = "100644"
	ModeExecutable = "100755"
	ModeSymlink    = "120000"
)

// RunInfo is the run a decision is about.
type RunInfo struct {
	ID         string
	Trigger    string
	Model      string
	SpecCommit string
}

// ConditionInput is everything a policy condition may refer to.
type ConditionInput struct {
	Agent  *Agent
	Run    RunInfo
	Change []ChangeFile

	// Evals is change.evals: the outcome of the prompt regression evals
	// run for the change (package eval, docs/evals.md); zero when none ran.
	Evals EvalCounts
}

// EvalCounts counts the eval scenarios run for a change: those of every
// agent whose definition (its Digest) the change alters.
type EvalCounts struct {
	Passed int
	Failed int
}

func (in ConditionInput) vars() map[string]cty.Value {
	files := make([]cty.Value, 0, len(in.Change))
	paths := make([]cty.Value, 0, len(in.Change))
	added, removed, size := 0, 0, int64(0)
	for _, f := range in.Change {
		files = append(files, cty.ObjectVal(map[string]cty.Value{
			"path": cty.StringVal(f.Path), "status": cty.StringVal(f.Status),
			"added": cty.NumberIntVal(int64(f.Added)), "removed": cty.NumberIntVal(int64(f.Removed)),
			"bytes": cty.NumberIntVal(f.Bytes), "mode": cty.StringVal(f.Mode),
		}))
		paths = append(paths, cty.StringVal(f.Path))
		added += f.Added
		removed += f.Removed
		size += f.Bytes
	}
	fileList, pathList := cty.ListValEmpty(fileType), cty.ListValEmpty(cty.String)
	if len(files) > 0 {
		fileList, pathList = cty.ListVal(files), cty.ListVal(paths)
	}
	a := in.Agent
	scope := cty.ListValEmpty(cty.String)
	if len(a.Scope) > 0 {
		var s []cty.Value
		for _, p := range a.Scope {
			s = append(s, cty.StringVal(p))
		}
		scope = cty.ListVal(s)
	}
	provider := ""
	if a.Provider != nil {
		provider = a.Provider.Ref()
	}
	return map[string]cty.Value{
		"agent": cty.ObjectVal(map[string]cty.Value{
			"name": cty.StringVal(a.Name), "provider": cty.StringVal(provider), "model": cty.StringVal(a.Model),
			"scope": scope, "work_unit_kind": cty.StringVal(a.WorkUnit.Kind),
		}),
		"run": cty.ObjectVal(map[string]cty.Value{
			"id": cty.StringVal(in.Run.ID), "trigger": cty.StringVal(in.Run.Trigger),
			"model": cty.StringVal(in.Run.Model), "spec_commit": cty.StringVal(in.Run.SpecCommit),
		}),
		"change": cty.ObjectVal(map[string]cty.Value{
			"files": fileList, "paths": pathList,
			"added": cty.NumberIntVal(int64(added)), "removed": cty.NumberIntVal(int64(removed)),
			"count": cty.NumberIntVal(int64(len(in.Change))), "bytes": cty.NumberIntVal(size),
			"evals": cty.ObjectVal(map[string]cty.Value{
				"passed": cty.NumberIntVal(int64(in.Evals.Passed)), "failed": cty.NumberIntVal(int64(in.Evals.Failed)),
			}),
		}),
	}
}

// EvalCondition evaluates a policy condition. A nil expression is true. A
// condition that does not evaluate to a known bool is an error diagnostic
// at the expression: the caller must fail closed.
func EvalCondition(expr hcl.Expression, in ConditionInput) (bool, hcl.Diagnostics) {
	return in.Context().Eval(expr)
}

// conditionFuncs is the read-only function table of conditions, built once.
var conditionFuncs = stdFunctions()

// ConditionContext evaluates many conditions on the same input; building
// the variables once makes a decision over several policies cheap.
// The cty values of the variables are built only when a condition needs
// HCL to evaluate it.
type ConditionContext struct {
	in  *ConditionInput
	env *env
	ctx *hcl.EvalContext
}

// Context returns the evaluation context of the input.
func (in ConditionInput) Context() *ConditionContext {
	c := &ConditionContext{in: &in}
	e := &env{in: c.in}
	nfc := norm.NFC.IsNormalString(in.Agent.Name) && norm.NFC.IsNormalString(in.Agent.Model) &&
		norm.NFC.IsNormalString(in.Run.ID) && norm.NFC.IsNormalString(in.Run.Trigger)
	for _, f := range in.Change {
		e.added += f.Added
		e.removed += f.Removed
		nfc = nfc && norm.NFC.IsNormalString(f.Path) && norm.NFC.IsNormalString(f.Status)
	}
	// cty compares strings in Unicode normal form C; the compiled form
	// compares bytes, so it only runs on input that is already NFC.
	if nfc {
		c.env = e
	}
	return c
}

// EvalRule evaluates a rule's condition, compiled when the loader could
// compile it.
func (c *ConditionContext) evalCompiled(fast compiled, expr hcl.Expression) (bool, hcl.Diagnostics) {
	if fast != nil && c.env != nil {
		if v, ok := fast(c.env); ok {
			return v.b, nil
		}
	}
	return c.Eval(expr)
}

// Eval evaluates a condition with HCL, as EvalCondition does.
func (c *ConditionContext) Eval(expr hcl.Expression) (bool, hcl.Diagnostics) {
	if expr == nil {
		return true, nil
	}
	if c.ctx == nil {
		c.ctx = &hcl.EvalContext{Variables: c.in.vars(), Functions: conditionFuncs}
	}
	v, diags := expr.Value(c.ctx)
	if diags.HasErrors() {
		return false, diags
	}
	b, err := convert.Convert(v, cty.Bool)
	if err != nil || b.IsNull() || !b.IsKnown() {
		rng := expr.Range()
		return false, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Condition is not a bool", Detail: "A condition must be true or false; this one is " + v.Type().FriendlyName() + ".", Subject: &rng}}
	}
	return b.True(), nil
}

// CheckCondition checks a condition at load time: the variables and
// attributes it names exist, the functions it calls exist, and it evaluates
// to a bool for an unknown change of the right types.
func CheckCondition(expr hcl.Expression) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, trav := range expr.Variables() {
		root := trav.RootName()
		typ, ok := conditionVars[root]
		if !ok {
			rng := trav.SourceRange()
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown variable",
				Detail: fmt.Sprintf("Conditions can refer to agent, run and change; there is no variable %q.%s", root, suggest(root, []string{"agent", "run", "change"})), Subject: &rng})
			continue
		}
		if len(trav) < 2 {
			continue
		}
		attr, ok := trav[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		if !typ.HasAttribute(attr.Name) {
			diags = append(diags, unsupportedAttribute(root, typ, attr))
		}
	}
	funcs := stdFunctions()
	var fnames []string
	for n := range funcs {
		fnames = append(fnames, n)
	}
	sort.Strings(fnames)
	if se, ok := expr.(hclsyntax.Expression); ok {
		diags = append(diags, checkIterators(se)...)
		hclsyntax.VisitAll(se, func(n hclsyntax.Node) hcl.Diagnostics {
			call, ok := n.(*hclsyntax.FunctionCallExpr)
			if !ok {
				return nil
			}
			if _, ok := funcs[call.Name]; !ok {
				rng := call.NameRange
				detail := fmt.Sprintf("There is no function %q in policy conditions.%s", call.Name, suggest(call.Name, fnames))
				if call.Name == "file" || call.Name == "templatefile" || call.Name == "env" {
					detail = fmt.Sprintf("%s() is not available in policy conditions: conditions see only agent, run and change, so a decision depends on nothing outside the reviewed spec.", call.Name)
				}
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Call to unknown function", Detail: detail, Subject: &rng})
			}
			return nil
		})
	}
	if diags.HasErrors() {
		return diags
	}
	vars := map[string]cty.Value{}
	for k, t := range conditionVars {
		vars[k] = cty.UnknownVal(t)
	}
	v, d := expr.Value(&hcl.EvalContext{Variables: vars, Functions: funcs})
	diags = append(diags, d...)
	if !d.HasErrors() {
		if _, err := convert.Convert(v, cty.Bool); err != nil {
			rng := expr.Range()
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Condition is not a bool", Detail: "A condition must evaluate to true or false; this one gives " + v.Type().FriendlyName() + ".", Subject: &rng})
		}
	}
	return diags
}

// checkIterators checks the attributes read from the variable of a for
// expression over a list of objects, as f.path in
// [for f in change.files : f.path]. Evaluating with an unknown change never
// reaches the body of such an expression, so without this a misspelt
// attribute would only show, as a denial, when a change arrives.
func checkIterators(expr hclsyntax.Expression) hcl.Diagnostics {
	var diags hcl.Diagnostics
	hclsyntax.VisitAll(expr, func(n hclsyntax.Node) hcl.Diagnostics {
		fe, ok := n.(*hclsyntax.ForExpr)
		if !ok {
			return nil
		}
		coll, ok := fe.CollExpr.(*hclsyntax.ScopeTraversalExpr)
		if !ok {
			return nil
		}
		typ, ok := conditionVars[coll.Traversal.RootName()]
		if !ok {
			return nil
		}
		for _, step := range coll.Traversal[1:] {
			attr, ok := step.(hcl.TraverseAttr)
			if !ok || !typ.IsObjectType() || !typ.HasAttribute(attr.Name) {
				return nil
			}
			typ = typ.AttributeType(attr.Name)
		}
		if !typ.IsListType() || !typ.ElementType().IsObjectType() {
			return nil
		}
		elem := typ.ElementType()
		// Variables leaves out those an inner for expression binds, so a
		// reused name is not checked against the wrong type.
		for _, body := range []hclsyntax.Expression{fe.KeyExpr, fe.ValExpr, fe.CondExpr} {
			if body == nil {
				continue
			}
			for _, trav := range body.Variables() {
				if trav.RootName() != fe.ValVar || len(trav) < 2 {
					continue
				}
				if attr, ok := trav[1].(hcl.TraverseAttr); ok && !elem.HasAttribute(attr.Name) {
					diags = append(diags, unsupportedAttribute(fe.ValVar, elem, attr))
				}
			}
		}
		return nil
	})
	return diags
}

func unsupportedAttribute(name string, typ cty.Type, attr hcl.TraverseAttr) *hcl.Diagnostic {
	var names []string
	for n := range typ.AttributeTypes() {
		names = append(names, n)
	}
	sort.Strings(names)
	rng := attr.SrcRange
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported attribute",
		Detail: fmt.Sprintf("%s has no attribute %q; it has %s.%s", name, attr.Name, strings.Join(names, ", "), suggest(attr.Name, names)), Subject: &rng}
}
