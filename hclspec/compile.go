package hclspec

import (
	"math"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The common shapes of policy conditions (comparisons of change totals,
// anytrue/alltrue over change.files with glob, startswith, endswith and
// equality) are compiled at load time into Go closures, so a decision
// does not build cty values. A condition with any other shape is
// evaluated by HCL as written; the two agree on every input the compiled
// form accepts (TestCompiledMatchesHCL checks this).

// kind is the type of a compiled value.
type kind uint8

const (
	kBool kind = iota + 1
	kNumber
	kString
	kFile
	kStrings // a tuple of string literals
)

// value is a compiled expression's value.
type value struct {
	k    kind
	b    bool
	n    float64
	s    string
	file *ChangeFile
	strs []string
}

// env is what compiled code sees: the input and the loop variables, by
// the slot the compiler gave each.
type env struct {
	in      *ConditionInput
	added   int
	removed int
	vars    [maxLoopDepth]value
}

// maxLoopDepth bounds nested for expressions in compiled conditions.
const maxLoopDepth = 4

// slot is a loop variable in scope: its kind and where its value is.
type slot struct {
	k   kind
	idx int
}

// compiled is an expression compiled to Go; ok is false when evaluation
// would need HCL (it then falls back).
type compiled func(e *env) (value, bool)

// compileCondition returns a compiled form of a condition whose result is
// a bool, or nil.
func compileCondition(expr hcl.Expression) compiled {
	se, ok := expr.(hclsyntax.Expression)
	if !ok {
		return nil
	}
	c, k := compileExpr(se, map[string]slot{})
	if c == nil || k != kBool {
		return nil
	}
	return c
}

// compileExpr compiles an expression, given the kinds of the loop
// variables in scope; it returns nil for anything it does not handle.
func compileExpr(x hclsyntax.Expression, scope map[string]slot) (compiled, kind) {
	switch x := x.(type) {
	case *hclsyntax.LiteralValueExpr:
		return literal(x.Val)
	case *hclsyntax.TemplateExpr:
		if !x.IsStringLiteral() {
			return nil, 0
		}
		v, diags := x.Value(nil)
		if diags.HasErrors() {
			return nil, 0
		}
		return literal(v)
	case *hclsyntax.TemplateWrapExpr:
		return compileExpr(x.Wrapped, scope)
	case *hclsyntax.ParenthesesExpr:
		return compileExpr(x.Expression, scope)
	case *hclsyntax.ScopeTraversalExpr:
		return compileTraversal(x.Traversal, scope)
	case *hclsyntax.UnaryOpExpr:
		v, k := compileExpr(x.Val, scope)
		if x.Op == hclsyntax.OpNegate && v != nil && k == kNumber {
			return func(e *env) (value, bool) {
				r, ok := v(e)
				return value{k: kNumber, n: -r.n}, ok
			}, kNumber
		}
		if x.Op != hclsyntax.OpLogicalNot || v == nil || k != kBool {
			return nil, 0
		}
		return func(e *env) (value, bool) {
			r, ok := v(e)
			return value{k: kBool, b: !r.b}, ok
		}, kBool
	case *hclsyntax.BinaryOpExpr:
		return compileBinary(x, scope)
	case *hclsyntax.FunctionCallExpr:
		return compileCall(x, scope)
	case *hclsyntax.TupleConsExpr:
		var strs []string
		for _, item := range x.Exprs {
			c, k := compileExpr(item, scope)
			if c == nil || k != kString {
				return nil, 0
			}
			v, ok := c(nil)
			if !ok {
				return nil, 0
			}
			strs = append(strs, v.s)
		}
		return func(*env) (value, bool) { return value{k: kStrings, strs: strs}, true }, kStrings
	}
	return nil, 0
}

func literal(v cty.Value) (compiled, kind) {
	if v.IsNull() || !v.IsKnown() {
		return nil, 0
	}
	var out value
	switch v.Type() {
	case cty.Bool:
		out = value{k: kBool, b: v.True()}
	case cty.String:
		out = value{k: kString, s: v.AsString()}
	case cty.Number:
		f, acc := v.AsBigFloat().Float64()
		if acc != 0 || math.IsInf(f, 0) {
			return nil, 0
		}
		out = value{k: kNumber, n: f}
	default:
		return nil, 0
	}
	return func(*env) (value, bool) { return out, true }, out.k
}

func compileTraversal(t hcl.Traversal, scope map[string]slot) (compiled, kind) {
	root := t.RootName()
	attr := func(i int) string {
		if len(t) <= i {
			return ""
		}
		a, ok := t[i].(hcl.TraverseAttr)
		if !ok {
			return "\x00"
		}
		return a.Name
	}
	if sl, ok := scope[root]; ok {
		i := sl.idx
		switch {
		case len(t) == 1:
			return func(e *env) (value, bool) { return e.vars[i], true }, sl.k
		case sl.k == kFile && len(t) == 2:
			switch attr(1) {
			case "path":
				return func(e *env) (value, bool) { return value{k: kString, s: e.vars[i].file.Path}, true }, kString
			case "status":
				return func(e *env) (value, bool) { return value{k: kString, s: e.vars[i].file.Status}, true }, kString
			case "added":
				return func(e *env) (value, bool) { return value{k: kNumber, n: float64(e.vars[i].file.Added)}, true }, kNumber
			case "removed":
				return func(e *env) (value, bool) { return value{k: kNumber, n: float64(e.vars[i].file.Removed)}, true }, kNumber
			}
		}
		return nil, 0
	}
	if len(t) == 3 && root == "change" && attr(1) == "evals" {
		switch attr(2) {
		case "passed":
			return func(e *env) (value, bool) { return value{k: kNumber, n: float64(e.in.Evals.Passed)}, true }, kNumber
		case "failed":
			return func(e *env) (value, bool) { return value{k: kNumber, n: float64(e.in.Evals.Failed)}, true }, kNumber
		}
		return nil, 0
	}
	if len(t) != 2 {
		return nil, 0
	}
	str := func(get func(in *ConditionInput) string) (compiled, kind) {
		return func(e *env) (value, bool) { return value{k: kString, s: get(e.in)}, true }, kString
	}
	num := func(get func(e *env) int) (compiled, kind) {
		return func(e *env) (value, bool) { return value{k: kNumber, n: float64(get(e))}, true }, kNumber
	}
	switch root + "." + attr(1) {
	case "change.added":
		return num(func(e *env) int { return e.added })
	case "change.removed":
		return num(func(e *env) int { return e.removed })
	case "change.count":
		return num(func(e *env) int { return len(e.in.Change) })
	case "agent.name":
		return str(func(in *ConditionInput) string { return in.Agent.Name })
	case "agent.model":
		return str(func(in *ConditionInput) string { return in.Agent.Model })
	case "agent.work_unit_kind":
		return str(func(in *ConditionInput) string { return in.Agent.WorkUnit.Kind })
	case "agent.provider":
		return str(func(in *ConditionInput) string {
			if in.Agent.Provider == nil {
				return ""
			}
			return in.Agent.Provider.Ref()
		})
	case "run.id":
		return str(func(in *ConditionInput) string { return in.Run.ID })
	case "run.trigger":
		return str(func(in *ConditionInput) string { return in.Run.Trigger })
	case "run.model":
		return str(func(in *ConditionInput) string { return in.Run.Model })
	case "run.spec_commit":
		return str(func(in *ConditionInput) string { return in.Run.SpecCommit })
	}
	return nil, 0
}

func compileBinary(x *hclsyntax.BinaryOpExpr, scope map[string]slot) (compiled, kind) {
	l, lk := compileExpr(x.LHS, scope)
	r, rk := compileExpr(x.RHS, scope)
	if l == nil || r == nil {
		return nil, 0
	}
	both := func(k kind) bool { return lk == k && rk == k }
	switch x.Op {
	case hclsyntax.OpLogicalAnd, hclsyntax.OpLogicalOr:
		if !both(kBool) {
			return nil, 0
		}
		and := x.Op == hclsyntax.OpLogicalAnd
		return func(e *env) (value, bool) {
			// HCL evaluates both operands; so does this, for the same
			// errors (none here) and the same result.
			a, ok1 := l(e)
			b, ok2 := r(e)
			if and {
				return value{k: kBool, b: a.b && b.b}, ok1 && ok2
			}
			return value{k: kBool, b: a.b || b.b}, ok1 && ok2
		}, kBool
	case hclsyntax.OpEqual, hclsyntax.OpNotEqual:
		if lk != rk || lk == kFile || lk == kStrings {
			return nil, 0
		}
		neg := x.Op == hclsyntax.OpNotEqual
		return func(e *env) (value, bool) {
			a, ok1 := l(e)
			b, ok2 := r(e)
			eq := a.b == b.b && a.n == b.n && a.s == b.s
			return value{k: kBool, b: eq != neg}, ok1 && ok2
		}, kBool
	case hclsyntax.OpGreaterThan, hclsyntax.OpGreaterThanOrEqual, hclsyntax.OpLessThan, hclsyntax.OpLessThanOrEqual:
		if !both(kNumber) {
			return nil, 0
		}
		op := x.Op
		return func(e *env) (value, bool) {
			a, ok1 := l(e)
			b, ok2 := r(e)
			var res bool
			switch op {
			case hclsyntax.OpGreaterThan:
				res = a.n > b.n
			case hclsyntax.OpGreaterThanOrEqual:
				res = a.n >= b.n
			case hclsyntax.OpLessThan:
				res = a.n < b.n
			default:
				res = a.n <= b.n
			}
			return value{k: kBool, b: res}, ok1 && ok2
		}, kBool
	case hclsyntax.OpAdd, hclsyntax.OpSubtract:
		if !both(kNumber) {
			return nil, 0
		}
		sub := x.Op == hclsyntax.OpSubtract
		return func(e *env) (value, bool) {
			a, ok1 := l(e)
			b, ok2 := r(e)
			if sub {
				return value{k: kNumber, n: a.n - b.n}, ok1 && ok2
			}
			return value{k: kNumber, n: a.n + b.n}, ok1 && ok2
		}, kNumber
	}
	return nil, 0
}

func compileCall(x *hclsyntax.FunctionCallExpr, scope map[string]slot) (compiled, kind) {
	if x.ExpandFinal {
		return nil, 0
	}
	switch x.Name {
	case "anytrue", "alltrue":
		if len(x.Args) != 1 {
			return nil, 0
		}
		f, ok := x.Args[0].(*hclsyntax.ForExpr)
		if !ok {
			return nil, 0
		}
		return compileFor(f, scope, x.Name == "alltrue")
	case "glob", "startswith", "endswith":
		if len(x.Args) != 2 {
			return nil, 0
		}
		s, sk := compileExpr(x.Args[0], scope)
		p, pk := compileExpr(x.Args[1], scope)
		if s == nil || p == nil || sk != kString || pk != kString {
			return nil, 0
		}
		name := x.Name
		return func(e *env) (value, bool) {
			a, ok1 := s(e)
			b, ok2 := p(e)
			var res bool
			switch name {
			case "glob":
				if !doublestar.ValidatePattern(b.s) {
					return value{}, false // HCL reports the bad pattern
				}
				res = globMatch(b.s, a.s)
			case "startswith":
				res = strings.HasPrefix(a.s, b.s)
			default:
				res = strings.HasSuffix(a.s, b.s)
			}
			return value{k: kBool, b: res}, ok1 && ok2
		}, kBool
	}
	return nil, 0
}

// compileFor compiles anytrue/alltrue([for v in COLL : BODY]) with no key
// variable and no filter, over change.files, change.paths or a tuple of
// string literals.
func compileFor(f *hclsyntax.ForExpr, scope map[string]slot, all bool) (compiled, kind) {
	if f.KeyVar != "" || f.CondExpr != nil || f.KeyExpr != nil || f.Group {
		return nil, 0
	}
	if len(scope) >= maxLoopDepth {
		return nil, 0
	}
	// each calls fn for every element of the collection, stopping early
	// only when fn says so.
	var elem kind
	var each func(e *env, fn func(value) bool) bool
	if st, ok := f.CollExpr.(*hclsyntax.ScopeTraversalExpr); ok && len(st.Traversal) == 2 && st.Traversal.RootName() == "change" {
		if _, shadowed := scope["change"]; shadowed {
			return nil, 0
		}
		switch a, _ := st.Traversal[1].(hcl.TraverseAttr); a.Name {
		case "files":
			elem = kFile
			each = func(e *env, fn func(value) bool) bool {
				for i := range e.in.Change {
					if !fn(value{k: kFile, file: &e.in.Change[i]}) {
						return false
					}
				}
				return true
			}
		case "paths":
			elem = kString
			each = func(e *env, fn func(value) bool) bool {
				for i := range e.in.Change {
					if !fn(value{k: kString, s: e.in.Change[i].Path}) {
						return false
					}
				}
				return true
			}
		default:
			return nil, 0
		}
	} else {
		c, k := compileExpr(f.CollExpr, scope)
		if c == nil || k != kStrings {
			return nil, 0
		}
		elem = kString
		each = func(e *env, fn func(value) bool) bool {
			v, ok := c(e)
			if !ok {
				return false
			}
			for _, s := range v.strs {
				if !fn(value{k: kString, s: s}) {
					return false
				}
			}
			return true
		}
	}
	idx := len(scope)
	inner := make(map[string]slot, len(scope)+1)
	for k, v := range scope {
		inner[k] = v
	}
	inner[f.ValVar] = slot{k: elem, idx: idx}
	// A shadowed outer variable keeps its slot index; the inner one gets
	// the next free slot, so idx must be past every slot in use.
	for _, v := range scope {
		if v.idx >= idx {
			idx = v.idx + 1
		}
	}
	if idx >= maxLoopDepth {
		return nil, 0
	}
	inner[f.ValVar] = slot{k: elem, idx: idx}
	body, bk := compileExpr(f.ValExpr, inner)
	if body == nil || bk != kBool {
		return nil, 0
	}
	return func(e *env) (value, bool) {
		// Every element is evaluated, as HCL builds the whole list
		// before anytrue sees it.
		res, failed := all, false
		complete := each(e, func(it value) bool {
			e.vars[idx] = it
			v, ok := body(e)
			if !ok {
				failed = true
				return false
			}
			if all {
				res = res && v.b
			} else {
				res = res || v.b
			}
			return true
		})
		if failed || !complete {
			return value{}, false
		}
		return value{k: kBool, b: res}, true
	}, kBool
}
