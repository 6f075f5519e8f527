package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/bmatcuk/doublestar/v4"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/agentgitops/reconciler/hclspec"
)

// Glob is where eval files live: evals/<agent>/*.hcl, the directory
// naming the agent they test.
const Glob = "evals/*/*.hcl"

// Triggers are the trigger kinds a scenario may give its run.
var Triggers = []string{"manual", "schedule", "alert", "spec"}

// The decisions a scenario may expect: the outcomes of policy.Decide.
// There is no "allow": every change needs at least one reviewed merge.
var Decisions = []string{hclspec.DecisionRequireApproval, hclspec.DecisionDeny}

// Scenario is a `scenario "<name>"` block of evals/<agent>/*.hcl: one run
// of the agent and what it must do.
//
//	scenario "latency alert raises the cache TTL" {
//	  trigger = "alert"             # manual | schedule | alert | spec; default manual
//	  input   = file("alert.json")  # JSON text, or an object; optional
//	  file "config/payments-api.env" {
//	    content = "CACHE_TTL=30s\n" # laid over the repository before the run
//	  }
//	  expect {
//	    changed      = ["config/payments-api.env"] # each glob matches a changed file
//	    unchanged    = ["deploy/**"]               # no changed file matches
//	    contains     = ["CACHE_TTL=120s"]          # in some changed file
//	    not_contains = ["CACHE_TTL=30s"]
//	    matches      = ["CACHE_TTL=[0-9]+s"]       # regular expressions
//	    not_matches  = ["(?i)password"]
//	    decision     = "require_approval"          # or "deny"
//	    max_cost_usd = 0.01
//	    max_steps    = 6
//	  }
//	}
type Scenario struct {
	Name  string
	Agent *hclspec.Agent
	// Trigger is the trigger kind, one of Triggers.
	Trigger string
	// Input is the trigger's payload as JSON; nil for none.
	Input []byte
	// Files are laid over the agent's workspace before the run, in
	// source order.
	Files  []Overlay
	Expect Expect

	// DeclRange is the block's header, scenario "<name>".
	DeclRange hcl.Range
}

// Overlay is a `file "<path>"` block: a file of the workspace replaced,
// added or (delete = true) removed before the run.
type Overlay struct {
	Path    string
	Content string
	Delete  bool
	Range   hcl.Range
}

// Expect is what a scenario expects of the run. Every item keeps the range
// of the list element or attribute that states it, so a failure points at
// the line to edit.
type Expect struct {
	Changed     []Item
	Unchanged   []Item
	Contains    []Item
	NotContains []Item
	Matches     []Item
	NotMatches  []Item

	// Decision is "" when the scenario does not check it.
	Decision      string
	DecisionRange hcl.Range
	// MaxCostUSD is negative when the scenario does not check it.
	MaxCostUSD      float64
	MaxCostUSDRange hcl.Range
	// MaxSteps is 0 when the scenario does not check it.
	MaxSteps      int
	MaxStepsRange hcl.Range
}

// Item is one string of an expectation list, a glob or a regular
// expression, with where it is written.
type Item struct {
	Value string
	re    *regexp.Regexp
	Range hcl.Range
}

var (
	fileSchema     = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "scenario", LabelNames: []string{"name"}}}}
	scenarioSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "trigger"}, {Name: "input"}, {Name: "description"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "file", LabelNames: []string{"path"}}, {Type: "expect"}},
	}
	overlaySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "content"}, {Name: "delete"}}}
	expectSchema  = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "changed"}, {Name: "unchanged"}, {Name: "contains"}, {Name: "not_contains"},
		{Name: "matches"}, {Name: "not_matches"}, {Name: "decision"}, {Name: "max_cost_usd"}, {Name: "max_steps"},
	}}
)

// Load reads the scenarios of evals/<agent>/*.hcl in fsys (rooted at the
// repository's top) and checks them against spec, which must have loaded
// without errors: the directory must name an agent of the spec, and the
// files a scenario lays over the workspace must lie in the agent's scope.
// file() in a scenario reads a file relative to the eval file's directory,
// never outside the repository. Load returns every diagnostic found, each
// at the attribute, element or block to edit; the scenarios are nil when
// any of them is an error. A repository without evals has no scenarios and
// no diagnostics. When agent is not "", only that agent's evals are read.
func Load(fsys fs.FS, spec *hclspec.Spec, agentName string) ([]*Scenario, hcl.Diagnostics) {
	l := &loader{fsys: fsys, spec: spec}
	names, err := fs.Glob(fsys, Glob)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot list files", Detail: fmt.Sprintf("Listing %s: %v.", Glob, err)}}
	}
	sort.Strings(names)
	slugs := map[string]map[string]hcl.Range{} // agent -> slug -> first declaration
	for _, name := range names {
		dirAgent := path.Base(path.Dir(name))
		if agentName != "" && dirAgent != agentName {
			continue
		}
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: fmt.Sprintf("Reading %s: %v.", name, err)})
			continue
		}
		f, diags := hclspec.ParseFile(src, name)
		l.diags = append(l.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		a := spec.Agent(dirAgent)
		if a == nil {
			var known []string
			for _, ag := range spec.Agents {
				known = append(known, ag.Name)
			}
			rng := hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos}
			l.errorf(rng, "Unknown agent", "%s tests agent %q, which %s does not declare: put the evals of an agent in evals/<agent name>/ (%s).%s",
				name, dirAgent, hclspec.AgentsGlob, orNone(known), suggest(dirAgent, known))
			continue
		}
		if slugs[a.Name] == nil {
			slugs[a.Name] = map[string]hcl.Range{}
		}
		l.decodeFile(f, name, a, slugs[a.Name])
	}
	if l.diags.HasErrors() {
		return nil, l.diags
	}
	return l.scenarios, l.diags
}

type loader struct {
	fsys      fs.FS
	spec      *hclspec.Spec
	diags     hcl.Diagnostics
	scenarios []*Scenario
}

func (l *loader) errorf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: &r})
}

func (l *loader) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	l.diags = append(l.diags, diags...)
	return c
}

// evalContext is a file's evaluation context: file() relative to the
// file's directory, and jsonencode for inline payloads.
func (l *loader) evalContext(name string) *hcl.EvalContext {
	dir := path.Dir(name)
	file := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if p == "" || path.IsAbs(p) || strings.HasPrefix(p, "\\") {
				return cty.NilVal, function.NewArgErrorf(0, "path %q: use a path relative to %s/", p, dir)
			}
			clean := path.Join(dir, p)
			if clean == ".." || strings.HasPrefix(clean, "../") || !fs.ValidPath(clean) {
				return cty.NilVal, function.NewArgErrorf(0, "path %q leaves the repository", p)
			}
			b, err := fs.ReadFile(l.fsys, clean)
			if err != nil {
				return cty.NilVal, function.NewArgErrorf(0, "read %q: %v", clean, fs.ErrNotExist)
			}
			return cty.StringVal(string(b)), nil
		},
	})
	return &hcl.EvalContext{Functions: map[string]function.Function{
		"file": file, "jsonencode": stdlib.JSONEncodeFunc, "trimspace": stdlib.TrimSpaceFunc,
	}}
}

// decodeExpr evaluates expr into target (a pointer), recording
// diagnostics, and reports whether it succeeded.
func (l *loader) decodeExpr(ctx *hcl.EvalContext, expr hcl.Expression, target any) bool {
	diags := gohcl.DecodeExpression(expr, ctx, target)
	l.diags = append(l.diags, diags...)
	return !diags.HasErrors()
}

func (l *loader) decodeFile(f *hcl.File, name string, a *hclspec.Agent, slugs map[string]hcl.Range) {
	c := l.content(f.Body, fileSchema)
	if c == nil {
		return
	}
	ctx := l.evalContext(name)
	for _, b := range c.Blocks {
		sname := b.Labels[0]
		slug := Slug(sname)
		if slug == "" {
			l.errorf(b.LabelRanges[0], "Invalid scenario name", "A scenario needs a name that says what it checks, such as \"latency alert raises the cache TTL\".")
			continue
		}
		if prev, dup := slugs[slug]; dup {
			l.errorf(b.LabelRanges[0], "Duplicate scenario", "A scenario of agent %q named %q (recorded as %s.json) is already declared at %s; scenario names must be unique per agent.", a.Name, sname, slug, prev)
			continue
		}
		slugs[slug] = b.DefRange
		if sc := l.decodeScenario(ctx, b, a); sc != nil {
			l.scenarios = append(l.scenarios, sc)
		}
	}
}

func (l *loader) decodeScenario(ctx *hcl.EvalContext, b *hcl.Block, a *hclspec.Agent) *Scenario {
	sc := &Scenario{Name: b.Labels[0], Agent: a, Trigger: "manual", DeclRange: b.DefRange}
	c := l.content(b.Body, scenarioSchema)
	if c == nil {
		return nil
	}
	n := len(l.diags.Errs())
	if attr, ok := c.Attributes["trigger"]; ok && l.decodeExpr(ctx, attr.Expr, &sc.Trigger) {
		if !slices.Contains(Triggers, sc.Trigger) {
			l.errorf(attr.Expr.Range(), "Invalid trigger", "%q is not a trigger: use %s.%s", sc.Trigger, strings.Join(quoteAll(Triggers), ", "), suggest(sc.Trigger, Triggers))
		}
	}
	if attr, ok := c.Attributes["input"]; ok {
		sc.Input = l.decodeInput(ctx, attr)
	}
	if attr, ok := c.Attributes["description"]; ok {
		var s string
		l.decodeExpr(ctx, attr.Expr, &s)
	}
	var expect *hcl.Block
	paths := map[string]hcl.Range{}
	for _, blk := range c.Blocks {
		switch blk.Type {
		case "file":
			if o, ok := l.decodeOverlay(ctx, blk, a); ok {
				if prev, dup := paths[o.Path]; dup {
					l.errorf(blk.LabelRanges[0], "Duplicate file", "%q is already laid over the workspace at %s; a scenario lists each file once.", o.Path, prev)
					continue
				}
				paths[o.Path] = blk.DefRange
				sc.Files = append(sc.Files, o)
			}
		case "expect":
			if expect != nil {
				l.errorf(blk.DefRange, "Duplicate expect block", "A scenario has one expect block; the first is at %s.", expect.DefRange)
				continue
			}
			expect = blk
		}
	}
	if expect == nil {
		l.errorf(b.DefRange, "Missing expect block", "Scenario %q checks nothing: add expect { } with what the run must do, such as changed = [\"config/*.env\"] or decision = %q.", sc.Name, hclspec.DecisionRequireApproval)
		return nil
	}
	l.decodeExpect(ctx, sc, expect)
	if len(l.diags.Errs()) > n {
		return nil
	}
	return sc
}

// decodeInput decodes a scenario's payload: JSON text (as file() reads
// it), or an object or list written in HCL, encoded as JSON.
func (l *loader) decodeInput(ctx *hcl.EvalContext, attr *hcl.Attribute) []byte {
	v, diags := attr.Expr.Value(ctx)
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	rng := attr.Expr.Range()
	switch {
	case v.IsNull() || !v.IsWhollyKnown():
		l.errorf(rng, "Invalid input", "input is the trigger's payload: JSON text such as file(\"alert.json\"), or an object.")
		return nil
	case v.Type() == cty.String:
		raw := bytes.TrimSpace([]byte(v.AsString()))
		if !json.Valid(raw) {
			l.errorf(rng, "Invalid input", "input is not valid JSON: write the payload as JSON (an Alertmanager notification for an alert trigger), or as an HCL object.")
			return nil
		}
		var out bytes.Buffer
		if err := json.Compact(&out, raw); err != nil {
			l.errorf(rng, "Invalid input", "input is not valid JSON: %v.", err)
			return nil
		}
		return out.Bytes()
	case v.Type().IsObjectType() || v.Type().IsMapType() || v.Type().IsTupleType() || v.Type().IsListType():
		raw, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			l.errorf(rng, "Invalid input", "input cannot be encoded as JSON: %v.", err)
			return nil
		}
		return raw
	}
	l.errorf(rng, "Invalid input", "input is %s; write JSON text, such as file(\"alert.json\"), or an object.", v.Type().FriendlyName())
	return nil
}

func (l *loader) decodeOverlay(ctx *hcl.EvalContext, blk *hcl.Block, a *hclspec.Agent) (Overlay, bool) {
	o := Overlay{Path: blk.Labels[0], Range: blk.DefRange}
	fc := l.content(blk.Body, overlaySchema)
	if fc == nil {
		return o, false
	}
	ok := true
	lr := blk.LabelRanges[0]
	if clean := path.Clean(o.Path); o.Path == "" || clean != o.Path || path.IsAbs(o.Path) || !fs.ValidPath(o.Path) || strings.HasPrefix(o.Path, "../") {
		l.errorf(lr, "Invalid path", "%q is not a clean path relative to the repository root; write it as git shows it, like \"config/app.env\".", o.Path)
		ok = false
	} else if !inView(a, o.Path) {
		l.errorf(lr, "File outside the agent's workspace", "Agent %q sees only its scope (%s) and the files its command runs, so %q would not be in its workspace: lay over a file it can see, or widen its scope.",
			a.Name, strings.Join(quoteAll(a.Scope), ", "), o.Path)
		ok = false
	}
	content, hasContent := fc.Attributes["content"]
	del, hasDelete := fc.Attributes["delete"]
	if hasContent && !l.decodeExpr(ctx, content.Expr, &o.Content) {
		ok = false
	}
	if hasDelete && !l.decodeExpr(ctx, del.Expr, &o.Delete) {
		ok = false
	}
	switch {
	case hasContent && o.Delete:
		l.errorf(del.Range, "Conflicting file block", "A file is either written (content) or removed (delete = true), not both.")
		ok = false
	case !hasContent && !o.Delete:
		l.errorf(blk.DefRange, "Missing content", "file %q needs content = \"...\" (or file(\"name\")), or delete = true to remove it from the workspace.", o.Path)
		ok = false
	}
	return o, ok
}

func (l *loader) decodeExpect(ctx *hcl.EvalContext, sc *Scenario, blk *hcl.Block) {
	ec := l.content(blk.Body, expectSchema)
	if ec == nil {
		return
	}
	e := &sc.Expect
	e.MaxCostUSD = -1
	globs := func(name string) []Item {
		items := l.items(ctx, ec.Attributes, name)
		for _, it := range items {
			if !doublestar.ValidatePattern(it.Value) {
				l.errorf(it.Range, "Invalid glob", "%q is not a valid glob: use * within a path segment, ** across segments, {a,b} and [a-z].", it.Value)
			}
		}
		return items
	}
	regexps := func(name string) []Item {
		items := l.items(ctx, ec.Attributes, name)
		for i, it := range items {
			re, err := regexp.Compile(it.Value)
			if err != nil {
				l.errorf(it.Range, "Invalid regular expression", "%q: %v. The syntax is Go's (RE2); to match text as written, use contains instead.", it.Value, err)
				continue
			}
			items[i].re = re
		}
		return items
	}
	e.Changed = globs("changed")
	e.Unchanged = globs("unchanged")
	e.Contains = l.items(ctx, ec.Attributes, "contains")
	e.NotContains = l.items(ctx, ec.Attributes, "not_contains")
	e.Matches = regexps("matches")
	e.NotMatches = regexps("not_matches")
	if a, ok := ec.Attributes["decision"]; ok {
		e.DecisionRange = a.Range
		if l.decodeExpr(ctx, a.Expr, &e.Decision) && !slices.Contains(Decisions, e.Decision) {
			l.errorf(a.Expr.Range(), "Invalid decision", "%q is not a decision: expect %q or %q. There is no \"allow\": every change needs at least one reviewed merge.%s",
				e.Decision, hclspec.DecisionRequireApproval, hclspec.DecisionDeny, suggest(e.Decision, Decisions))
		}
	}
	if a, ok := ec.Attributes["max_cost_usd"]; ok {
		e.MaxCostUSDRange = a.Range
		if l.decodeExpr(ctx, a.Expr, &e.MaxCostUSD) && e.MaxCostUSD < 0 {
			l.errorf(a.Expr.Range(), "Invalid cost", "max_cost_usd is the most the run may cost in US dollars, 0 or more.")
		}
	}
	if a, ok := ec.Attributes["max_steps"]; ok {
		e.MaxStepsRange = a.Range
		if l.decodeExpr(ctx, a.Expr, &e.MaxSteps) && e.MaxSteps < 1 {
			l.errorf(a.Expr.Range(), "Invalid step count", "max_steps is the most model calls the run may make, at least 1.")
		}
	}
	if len(ec.Attributes) == 0 {
		l.errorf(blk.DefRange, "Empty expect block", "Scenario %q checks nothing: add an expectation, such as changed = [\"config/*.env\"] or decision = %q.", sc.Name, hclspec.DecisionRequireApproval)
	}
}

// items decodes a list of strings, each with the range of its element
// when the list is written out, else of the whole value.
func (l *loader) items(ctx *hcl.EvalContext, attrs hcl.Attributes, name string) []Item {
	a, ok := attrs[name]
	if !ok {
		return nil
	}
	var vals []string
	if !l.decodeExpr(ctx, a.Expr, &vals) {
		return nil
	}
	elems, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() || len(elems) != len(vals) {
		elems = nil
	}
	out := make([]Item, len(vals))
	for i, v := range vals {
		rng := a.Expr.Range()
		if elems != nil {
			rng = elems[i].Range()
		}
		out[i] = Item{Value: v, Range: rng}
		if v == "" {
			l.errorf(rng, "Empty expectation", "An empty string in %s checks nothing: remove it.", name)
		}
	}
	return out
}

// inView reports whether p is in the agent's workspace: its scope, or a
// file its command runs.
func inView(a *hclspec.Agent, p string) bool {
	if hclspec.MatchAny(a.Scope, p) {
		return true
	}
	for _, arg := range a.Command {
		if path.Clean(arg) == p {
			return true
		}
	}
	return false
}

// Slug is the file name (without .json) of a scenario's recording: its
// name in lower case, runs of other characters than letters and digits
// replaced by "-".
func Slug(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	s := b.String()
	if len(s) > 100 {
		s = strings.TrimRight(s[:100], "-")
	}
	return s
}

func suggest(given string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := levenshtein.Distance(given, k, nil); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none are declared"
	}
	return strings.Join(quoteAll(names), ", ")
}
