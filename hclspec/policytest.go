package hclspec

import (
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
)

// PolicyTestsGlob is where policy tests live. Load skips these files;
// LoadTests reads them.
const PolicyTestsGlob = "policies/*" + TestSuffix

// The decisions a test may expect: the outcomes of policy.Decide. There is
// no "allow": every change needs at least one reviewed merge.
const (
	DecisionDeny            = "deny"
	DecisionRequireApproval = "require_approval"
)

// The file statuses of a change.
const (
	StatusAdded    = "added"
	StatusModified = "modified"
	StatusDeleted  = "deleted"
)

// AnyReviewer is the key of PolicyTest.Expect.Reviewers for the
// requirement that names no groups: any reviewer other than the agent.
const AnyReviewer = "any"

// BuiltinRules are the rules the reconciler applies whatever the policies
// say, as policy.Rule.Name() names them. A test may expect them to fire.
var BuiltinRules = []string{"builtin/one-review", "builtin/self-modification"}

// PolicyTest is a `test "<name>"` block of policies/*_test.hcl: a proposed
// change by an agent and the decision the policies must reach on it.
//
//	test "production change needs an SRE" {
//	  agent = "image-pinner"
//	  change {
//	    file {
//	      path    = "deploy/prod/payments-api.yaml"
//	      status  = "modified" # added | modified | deleted; default modified
//	      added   = 1          # default 0
//	      removed = 1          # default 0
//	      bytes   = 812        # the new size; default 0
//	      mode    = "100644"   # 100644 | 100755 | 120000; default 100644, "" when deleted
//	    }
//	  }
//	  run { trigger = "spec" } # optional: id, trigger, model, spec_commit
//	  expect {
//	    decision  = "require_approval"          # or "deny"
//	    rules     = ["protect-prod/production"] # optional: exactly the rules that fire
//	    reviewers = { sre = 1 }                 # optional: exactly the requirements
//	  }
//	}
type PolicyTest struct {
	Name  string
	Agent *Agent
	// Run is the run the change comes from. Its Model defaults to the
	// agent's model, as the reconciler's runs have it.
	Run    RunInfo
	Change []ChangeFile
	// Evals is change.evals as the test states it (an evals block in its
	// change): what the proposal's evals gave.
	Evals EvalCounts
	// Reviews are the verdicts the test states for require_review rules,
	// by rule name, one per model of the rule in its order (review
	// "<rule>" { verdicts = [...] }). A pending review the test states no
	// verdict for counts as failed, as a model that cannot be reached.
	Reviews map[string][]string
	Expect  Expect

	// DeclRange is the block's header, test "<name>".
	DeclRange hcl.Range
	// AgentRange is the agent attribute's value.
	AgentRange hcl.Range
}

// Expect is what a test expects of the decision. The ranges are of the
// whole attributes, so failures point at the line to edit.
type Expect struct {
	// Decision is DecisionDeny or DecisionRequireApproval.
	Decision      string
	DecisionRange hcl.Range

	// Rules is the set of rules that must fire, as policy/rule, sorted;
	// nil when the test does not check them.
	Rules      []string
	RulesRange hcl.Range

	// Reviewers are the approval requirements of the decision: the groups
	// of each, sorted and joined by "|" (AnyReviewer for none), to the
	// minimum number of approvals. Nil when the test does not check them.
	Reviewers      map[string]int
	ReviewersRange hcl.Range
}

// LoadTests reads the policy tests in policies/*_test.hcl of fsys and
// checks them against spec, which must have loaded without errors: the
// agents, the rules in expect.rules and the reviewer groups in
// expect.reviewers must exist. It returns every diagnostic found, each at
// the attribute or block to edit; the tests are nil when any of them is an
// error. A repository without test files has no tests and no diagnostics.
func LoadTests(fsys fs.FS, spec *Spec) ([]*PolicyTest, hcl.Diagnostics) {
	tl := &testLoader{spec: spec, ctx: &hcl.EvalContext{Functions: stdFunctions()}}
	names, err := fs.Glob(fsys, PolicyTestsGlob)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot list files", Detail: fmt.Sprintf("Listing %s: %v.", PolicyTestsGlob, err)}}
	}
	sort.Strings(names)
	for _, name := range names {
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			tl.diags = append(tl.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: fmt.Sprintf("Reading %s: %v.", name, err)})
			continue
		}
		f, diags := ParseFile(src, name)
		tl.diags = append(tl.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		tl.decodeFile(f)
	}
	if tl.diags.HasErrors() {
		return nil, tl.diags
	}
	return tl.tests, tl.diags
}

type testLoader struct {
	spec  *Spec
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
	tests []*PolicyTest
}

var (
	testFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "test", LabelNames: []string{"name"}}}}
	testSchema     = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "agent", Required: true}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "change"}, {Type: "run"}, {Type: "expect"}, {Type: "review", LabelNames: []string{"rule"}}},
	}
	testReviewSchema     = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "verdicts", Required: true}}}
	testChangeSchema     = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "file"}, {Type: "evals"}}}
	testEvalsSchema      = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "passed"}, {Name: "failed"}}}
	testChangeFileSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "path", Required: true}, {Name: "status"}, {Name: "added"}, {Name: "removed"},
		{Name: "bytes"}, {Name: "mode"},
	}}
	testRunSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "id"}, {Name: "trigger"}, {Name: "model"}, {Name: "spec_commit"},
	}}
	testExpectSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "decision", Required: true}, {Name: "rules"}, {Name: "reviewers"},
	}}
)

func (tl *testLoader) errorf(rng hcl.Range, summary, detail string, args ...any) {
	r := rng
	tl.diags = append(tl.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: &r})
}

func (tl *testLoader) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	tl.diags = append(tl.diags, diags...)
	return c
}

// decodeExpr evaluates expr into target (a pointer), recording
// diagnostics, and reports whether it succeeded.
func (tl *testLoader) decodeExpr(expr hcl.Expression, target any) bool {
	v, diags := expr.Value(tl.ctx)
	tl.diags = append(tl.diags, diags...)
	if diags.HasErrors() {
		return false
	}
	diags = gohcl.DecodeExpression(evaluated{expr, v}, nil, target)
	tl.diags = append(tl.diags, diags...)
	return !diags.HasErrors()
}

// decodeAttr decodes an attribute if it is present, and reports whether it
// was present and valid.
func (tl *testLoader) decodeAttr(attrs hcl.Attributes, name string, target any) bool {
	a, ok := attrs[name]
	return ok && tl.decodeExpr(a.Expr, target)
}

func (tl *testLoader) decodeFile(f *hcl.File) {
	c := tl.content(f.Body, testFileSchema)
	if c == nil {
		return
	}
	seen := map[string]hcl.Range{}
	for _, b := range c.Blocks {
		name := b.Labels[0]
		if strings.TrimSpace(name) == "" {
			tl.errorf(b.LabelRanges[0], "Invalid test name", "A test needs a name that says what it checks, such as \"production change needs an SRE\".")
			continue
		}
		if prev, dup := seen[name]; dup {
			tl.errorf(b.LabelRanges[0], "Duplicate test", "A test %q is already declared at %s; test names must be unique within a file.", name, prev)
			continue
		}
		seen[name] = b.DefRange
		if t := tl.decodeTest(b); t != nil {
			tl.tests = append(tl.tests, t)
		}
	}
}

func (tl *testLoader) decodeTest(b *hcl.Block) *PolicyTest {
	t := &PolicyTest{Name: b.Labels[0], DeclRange: b.DefRange}
	c := tl.content(b.Body, testSchema)
	if c == nil {
		return nil
	}
	if a, ok := c.Attributes["agent"]; ok {
		t.AgentRange = a.Expr.Range()
		var name string
		if tl.decodeExpr(a.Expr, &name) {
			t.Agent = tl.spec.Agent(name)
			if t.Agent == nil {
				var known []string
				for _, ag := range tl.spec.Agents {
					known = append(known, ag.Name)
				}
				tl.errorf(t.AgentRange, "Unknown agent", "Agent %q is not declared in %s; test an agent that is (%s).%s",
					name, AgentsGlob, orNone(known), suggest(name, known))
			}
		}
	}
	seen := map[string]hcl.Range{}
	var expect *hcl.Block
	for _, blk := range c.Blocks {
		key := strings.Join(append([]string{blk.Type}, blk.Labels...), " ")
		if prev, dup := seen[key]; dup {
			tl.errorf(blk.DefRange, "Duplicate "+blk.Type+" block", "A test has at most one %s block; the first is at %s.", key, prev)
			continue
		}
		seen[key] = blk.DefRange
		switch blk.Type {
		case "review":
			tl.decodeReview(t, blk)
		case "change":
			tl.decodeChange(t, blk)
		case "run":
			if rc := tl.content(blk.Body, testRunSchema); rc != nil {
				tl.decodeAttr(rc.Attributes, "id", &t.Run.ID)
				tl.decodeAttr(rc.Attributes, "trigger", &t.Run.Trigger)
				tl.decodeAttr(rc.Attributes, "model", &t.Run.Model)
				tl.decodeAttr(rc.Attributes, "spec_commit", &t.Run.SpecCommit)
			}
		case "expect":
			expect = blk
		}
	}
	if t.Agent != nil && t.Run.Model == "" {
		t.Run.Model = t.Agent.Model
	}
	if expect == nil {
		tl.errorf(b.DefRange, "Missing expect block", "Test %q checks nothing: add expect { decision = %q } (or %q).", t.Name, DecisionRequireApproval, DecisionDeny)
		return nil
	}
	tl.decodeExpect(t, expect)
	if t.Agent == nil {
		return nil
	}
	return t
}

func (tl *testLoader) decodeChange(t *PolicyTest, blk *hcl.Block) {
	cc := tl.content(blk.Body, testChangeSchema)
	if cc == nil {
		return
	}
	paths := map[string]hcl.Range{}
	var evals *hcl.Block
	for _, fb := range cc.Blocks {
		if fb.Type == "evals" {
			if evals != nil {
				tl.errorf(fb.DefRange, "Duplicate evals block", "A change has at most one evals block; the first is at %s.", evals.DefRange)
				continue
			}
			evals = fb
			tl.decodeEvals(t, fb)
			continue
		}
		fc := tl.content(fb.Body, testChangeFileSchema)
		if fc == nil {
			continue
		}
		f := ChangeFile{Status: StatusModified}
		if tl.decodeAttr(fc.Attributes, "path", &f.Path) {
			rng := fc.Attributes["path"].Expr.Range()
			if clean, err := repoPath(f.Path); err != nil || clean != f.Path {
				tl.errorf(rng, "Invalid path", "%q is not a clean path relative to the repository root; write it as git shows it, like \"deploy/prod/app.yaml\".", f.Path)
			} else if prev, dup := paths[f.Path]; dup {
				tl.errorf(rng, "Duplicate file", "%q is already part of this change at %s; a change lists each file once.", f.Path, prev)
			} else {
				paths[f.Path] = rng
			}
		}
		if tl.decodeAttr(fc.Attributes, "status", &f.Status) {
			switch f.Status {
			case StatusAdded, StatusModified, StatusDeleted:
			default:
				tl.errorf(fc.Attributes["status"].Expr.Range(), "Invalid file status", "%q is not a file status: use %q, %q or %q.%s",
					f.Status, StatusAdded, StatusModified, StatusDeleted, suggest(f.Status, []string{StatusAdded, StatusModified, StatusDeleted}))
			}
		}
		for _, n := range []struct {
			name   string
			target *int
		}{{"added", &f.Added}, {"removed", &f.Removed}} {
			if tl.decodeAttr(fc.Attributes, n.name, n.target) && *n.target < 0 {
				tl.errorf(fc.Attributes[n.name].Expr.Range(), "Invalid line count", "%s is the number of lines the file %s and must be 0 or more.", n.name, n.name)
			}
		}
		tl.decodeFileSize(fc, &f)
		t.Change = append(t.Change, f)
	}
}

// decodeReview decodes a test's review "<rule>" { verdicts = [...] }: the
// verdicts of the rule's models, in their order, as approve, reject or
// error.
func (tl *testLoader) decodeReview(t *PolicyTest, blk *hcl.Block) {
	name := blk.Labels[0]
	var names []string
	known := false
	for _, p := range tl.spec.Policies {
		for _, r := range p.Reviews {
			names = append(names, r.Name)
			known = known || r.Name == name
		}
	}
	if !known {
		tl.errorf(blk.LabelRanges[0], "Unknown review rule", "No policy has a require_review %q rule to state verdicts for.%s", name, suggest(name, names))
		return
	}
	rc := tl.content(blk.Body, testReviewSchema)
	if rc == nil {
		return
	}
	var verdicts []string
	if !tl.decodeAttr(rc.Attributes, "verdicts", &verdicts) {
		return
	}
	for _, v := range verdicts {
		switch v {
		case "approve", "reject", "error":
		default:
			tl.errorf(rc.Attributes["verdicts"].Expr.Range(), "Invalid verdict", "%q is not a verdict: use \"approve\", \"reject\" or \"error\" (a model that failed).%s", v, suggest(v, []string{"approve", "reject", "error"}))
			return
		}
	}
	if t.Reviews == nil {
		t.Reviews = map[string][]string{}
	}
	t.Reviews[name] = verdicts
}

// decodeEvals decodes a test change's evals { passed, failed }: the
// outcome change.evals gives the policies, as the reconciler's evals of a
// proposal that alters an agent would.
func (tl *testLoader) decodeEvals(t *PolicyTest, blk *hcl.Block) {
	ec := tl.content(blk.Body, testEvalsSchema)
	if ec == nil {
		return
	}
	for _, n := range []struct {
		name   string
		target *int
	}{{"passed", &t.Evals.Passed}, {"failed", &t.Evals.Failed}} {
		if tl.decodeAttr(ec.Attributes, n.name, n.target) && *n.target < 0 {
			tl.errorf(ec.Attributes[n.name].Expr.Range(), "Invalid eval count", "%s is a number of eval scenarios and must be 0 or more.", n.name)
		}
	}
}

// decodeFileSize decodes a test file's bytes and mode: its new size and
// git mode, 0 and "" for a deleted file; the mode defaults to ModeRegular.
func (tl *testLoader) decodeFileSize(fc *hcl.BodyContent, f *ChangeFile) {
	deleted := f.Status == StatusDeleted
	if a, ok := fc.Attributes["bytes"]; ok && tl.decodeAttr(fc.Attributes, "bytes", &f.Bytes) {
		switch {
		case f.Bytes < 0:
			tl.errorf(a.Expr.Range(), "Invalid size", "bytes is the file's new size and must be 0 or more.")
		case deleted && f.Bytes != 0:
			tl.errorf(a.Expr.Range(), "Invalid size", "A deleted file has no new content: leave bytes out (it is 0).")
		}
	}
	if !deleted {
		f.Mode = ModeRegular
	}
	a, ok := fc.Attributes["mode"]
	if !ok || !tl.decodeAttr(fc.Attributes, "mode", &f.Mode) {
		return
	}
	modes := []string{ModeRegular, ModeExecutable, ModeSymlink}
	switch {
	case deleted:
		tl.errorf(a.Expr.Range(), "Invalid mode", "A deleted file has no new mode: leave mode out (it is \"\").")
	case !slices.Contains(modes, f.Mode):
		tl.errorf(a.Expr.Range(), "Invalid mode", "%q is not a git file mode: use %q (a regular file), %q (an executable) or %q (a symbolic link).%s",
			f.Mode, ModeRegular, ModeExecutable, ModeSymlink, suggest(f.Mode, modes))
	}
}

func (tl *testLoader) decodeExpect(t *PolicyTest, blk *hcl.Block) {
	ec := tl.content(blk.Body, testExpectSchema)
	if ec == nil {
		return
	}
	e := &t.Expect
	if a, ok := ec.Attributes["decision"]; ok {
		e.DecisionRange = a.Range
		if tl.decodeExpr(a.Expr, &e.Decision) {
			switch e.Decision {
			case DecisionDeny, DecisionRequireApproval:
			default:
				tl.errorf(a.Expr.Range(), "Invalid decision", "%q is not a decision: expect %q or %q. There is no \"allow\": every change needs at least one reviewed merge.%s",
					e.Decision, DecisionRequireApproval, DecisionDeny, suggest(e.Decision, []string{DecisionDeny, DecisionRequireApproval}))
			}
		}
	}
	if a, ok := ec.Attributes["rules"]; ok {
		e.RulesRange = a.Range
		tl.decodeRules(t, a)
	}
	if a, ok := ec.Attributes["reviewers"]; ok {
		e.ReviewersRange = a.Range
		tl.decodeReviewers(t, a)
	}
}

// ruleNames returns every rule a decision can name, and the policy of each
// (nil for builtin rules).
func (tl *testLoader) ruleNames() ([]string, map[string]*Policy) {
	policies := map[string]*Policy{}
	names := slices.Clone(BuiltinRules)
	for _, p := range tl.spec.Policies {
		for _, r := range p.Denies {
			names = append(names, p.Name+"/"+r.Name)
			policies[p.Name+"/"+r.Name] = p
		}
		for _, r := range p.Approvals {
			names = append(names, p.Name+"/"+r.Name)
			policies[p.Name+"/"+r.Name] = p
		}
	}
	return names, policies
}

func (tl *testLoader) decodeRules(t *PolicyTest, a *hcl.Attribute) {
	var rules []string
	if !tl.decodeExpr(a.Expr, &rules) {
		return
	}
	// Point at the element when the list is written out.
	elems, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() || len(elems) != len(rules) {
		elems = nil
	}
	at := func(i int) hcl.Range {
		if elems != nil {
			return elems[i].Range()
		}
		return a.Expr.Range()
	}
	known, policies := tl.ruleNames()
	slices.Sort(known)
	seen := map[string]bool{}
	ok := true
	for i, name := range rules {
		switch p, declared := policies[name]; {
		case !declared && !slices.Contains(BuiltinRules, name):
			ok = false
			tl.errorf(at(i), "Unknown rule", "No policy declares a rule %q. Rules are named policy/rule; this repository has %s.%s", name, strings.Join(quoteAll(known), ", "), suggest(name, known))
		case seen[name]:
			ok = false
			tl.errorf(at(i), "Duplicate rule", "%q is listed twice; rules is the set of rules that fire.", name)
		case p != nil && t.Agent != nil && !p.AppliesToAgent(t.Agent.Name):
			ok = false
			tl.errorf(at(i), "Rule cannot fire", "Policy %q applies to %s, not to agent %q, so %q never fires in this test: remove it from rules or test another agent.",
				p.Name, strings.Join(quoteAll(p.AppliesTo), ", "), t.Agent.Name, name)
		}
		seen[name] = true
	}
	if ok {
		slices.Sort(rules)
		t.Expect.Rules = append([]string{}, rules...)
	}
}

func (tl *testLoader) decodeReviewers(t *PolicyTest, a *hcl.Attribute) {
	var raw map[string]int
	if !tl.decodeExpr(a.Expr, &raw) {
		return
	}
	// Report in source order and point at the key or value when the
	// object is written out; at the whole value otherwise.
	type item struct {
		key        string
		kRng, vRng hcl.Range
	}
	var items []item
	if pairs, diags := hcl.ExprMap(a.Expr); !diags.HasErrors() {
		for _, p := range pairs {
			if v, d := p.Key.Value(tl.ctx); !d.HasErrors() && v.Type() == cty.String && v.IsKnown() && !v.IsNull() {
				if _, ok := raw[v.AsString()]; ok {
					items = append(items, item{v.AsString(), p.Key.Range(), p.Value.Range()})
				}
			}
		}
	}
	if len(items) != len(raw) {
		items = nil
		for _, k := range slices.Sorted(maps.Keys(raw)) {
			items = append(items, item{k, a.Expr.Range(), a.Expr.Range()})
		}
	}
	var groups []string
	for _, g := range tl.spec.Groups {
		groups = append(groups, g.Name)
	}
	out := map[string]int{}
	ok := true
	for _, it := range items {
		norm := AnyReviewer
		if it.key != AnyReviewer {
			parts := strings.Split(it.key, "|")
			for i, g := range parts {
				parts[i] = strings.TrimSpace(g)
				if tl.spec.Group(parts[i]) == nil {
					ok = false
					tl.errorf(it.kRng, "Unknown reviewer group", "%q is not a group in %s: use a group name, names joined by \"|\" for a rule with several groups, or %q for the requirement with no groups.%s",
						parts[i], ReviewersFile, AnyReviewer, suggest(parts[i], append(groups, AnyReviewer)))
				}
			}
			slices.Sort(parts)
			norm = strings.Join(parts, "|")
		}
		if n := raw[it.key]; n < 1 {
			ok = false
			tl.errorf(it.vRng, "Invalid reviewer count", "%q = %d: the value is the number of approvals required, at least 1.", it.key, n)
		}
		if _, dup := out[norm]; dup {
			ok = false
			tl.errorf(it.kRng, "Duplicate reviewer requirement", "%q names the same groups as another key; the order of groups does not matter.", it.key)
		}
		out[norm] = raw[it.key]
	}
	if ok {
		t.Expect.Reviewers = out
	}
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
