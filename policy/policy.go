// Package policy decides what happens to an agent's change: deny it, or
// which reviewers must approve it before it may be merged.
//
// Decide is pure: it reads the loaded spec and the change, never the
// network or the clock, so the same inputs always give the same Decision.
// It fails closed: a condition that cannot be evaluated denies.
package policy

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/agentgitops/reconciler/hclspec"
)

// Outcomes.
const (
	Deny            = "deny"
	RequireApproval = "require_approval"
)

// Rule kinds.
const (
	KindDeny     = "deny"
	KindApproval = "require_approval"
	KindGuard    = "guard"
	KindDefault  = "default"
)

// Decision is the explained result of evaluating the policies on a change.
type Decision struct {
	Outcome      string        `json:"outcome"`
	Summary      string        `json:"summary"`
	Rules        []Rule        `json:"rules"`
	Requirements []Requirement `json:"requirements,omitempty"`
	// Overrides are the soft rules that blocked the change: a merge must
	// name each in a Policy-Override trailer, made by an allowed reviewer.
	Overrides []string `json:"overrides,omitempty"`
	// PolicyDigest is the sha256 of the policy files at the spec commit.
	PolicyDigest string `json:"policy_digest"`
}

// Rule is a rule that fired.
type Rule struct {
	Policy      string   `json:"policy"`
	Rule        string   `json:"rule"`
	Kind        string   `json:"kind"`
	Enforcement string   `json:"enforcement,omitempty"`
	Blocking    bool     `json:"blocking"`
	Message     string   `json:"message,omitempty"`
	Reviewers   []string `json:"reviewers,omitempty"`
	Min         int      `json:"min,omitempty"`
	// Pos is where the rule is written, file:line:col.
	Pos string `json:"pos,omitempty"`
}

// Requirement is how many distinct reviewers from Groups must approve. No
// groups means members of any group (the default review).
type Requirement struct {
	Groups []string `json:"groups,omitempty"`
	Min    int      `json:"min"`
}

func (r Requirement) String() string {
	if len(r.Groups) == 0 {
		if r.Min == 1 {
			return "1 reviewer"
		}
		return fmt.Sprintf("%d reviewers", r.Min)
	}
	return fmt.Sprintf("%d of %s", r.Min, strings.Join(r.Groups, "|"))
}

// Name identifies a fired rule as policy/rule.
func (r Rule) Name() string { return r.Policy + "/" + r.Rule }

// BuiltinPolicy names the rules the reconciler always applies.
const BuiltinPolicy = "builtin"

// Decide evaluates every policy that applies to in.Agent on the change in
// in.Change. A hard deny wins over everything; a soft deny blocks until a
// reviewer overrides it on the merge; an advisory rule is recorded and never
// blocks. Approval requirements from several rules combine, keeping the
// strictest minimum per reviewer set; every change needs at least one
// reviewer. A change to protected files (agents/, policies/, providers.hcl,
// reviewers.hcl, .reconciler/, every file the agents' digests cover, and the
// files that steer CI and the forge: see Spec.IsProtected) is denied unless
// a hard policy's
// require_approval rule with allow_control_changes = true fires for it,
// which turns the denial into that rule's requirement: no agent can lift
// this through its own proposal, because decisions use the spec as it was
// before the change.
func Decide(spec *hclspec.Spec, in hclspec.ConditionInput) Decision {
	d := Decision{PolicyDigest: PolicyDigest(spec)}

	var control []string
	for _, f := range in.Change {
		if spec.IsProtected(f.Path) {
			control = append(control, f.Path)
		}
	}
	var lifted []string // rules that allow control changes and fired
	reqs := map[string]Requirement{}
	cond := in.Context()
	for _, p := range spec.PoliciesFor(in.Agent.Name) {
		for _, r := range p.Denies {
			fired, diags := r.Eval(cond)
			if diags.HasErrors() {
				d.Rules = append(d.Rules, evalError(p, r.Name, r.DeclRange, diags))
				continue
			}
			if fired {
				d.Rules = append(d.Rules, Rule{
					Policy: p.Name, Rule: r.Name, Kind: KindDeny, Enforcement: p.Enforcement,
					Blocking: p.Enforcement != hclspec.Advisory, Message: r.Message, Pos: pos(r.DeclRange),
				})
			}
		}
		for _, r := range p.Approvals {
			fired, diags := r.Eval(cond)
			if diags.HasErrors() {
				d.Rules = append(d.Rules, evalError(p, r.Name, r.DeclRange, diags))
				continue
			}
			if !fired {
				continue
			}
			d.Rules = append(d.Rules, Rule{
				Policy: p.Name, Rule: r.Name, Kind: KindApproval, Enforcement: p.Enforcement,
				Blocking: p.Enforcement != hclspec.Advisory, Reviewers: r.Reviewers, Min: r.Min, Pos: pos(r.DeclRange),
			})
			if r.AllowControlChanges && p.Enforcement == hclspec.Hard {
				lifted = append(lifted, p.Name+"/"+r.Name)
			}
			if p.Enforcement == hclspec.Advisory {
				continue
			}
			groups := append([]string(nil), r.Reviewers...)
			sort.Strings(groups)
			key := strings.Join(groups, "|")
			if cur, ok := reqs[key]; !ok || r.Min > cur.Min {
				reqs[key] = Requirement{Groups: groups, Min: r.Min}
			}
		}
	}
	if len(control) > 0 {
		guard := Rule{
			Policy: BuiltinPolicy, Rule: "self-modification", Kind: KindGuard, Enforcement: hclspec.Hard, Blocking: len(lifted) == 0,
			Message: "agents may not change the files that define or steer them (agents/, policies/, providers.hcl, reviewers.hcl, .reconciler/, the files the agents' digests cover, CI and forge files): " + strings.Join(control, ", "),
		}
		if len(lifted) > 0 {
			guard.Message = "control files changed (" + strings.Join(control, ", ") + "); allowed only with the approval " + strings.Join(lifted, ", ") + " requires"
		}
		d.Rules = append([]Rule{guard}, d.Rules...)
	}
	denied := len(control) > 0 && len(lifted) == 0
	for _, r := range d.Rules {
		if r.Blocking && r.Kind == KindDeny {
			if r.Enforcement == hclspec.Soft {
				d.Overrides = append(d.Overrides, r.Name())
			} else {
				denied = true
			}
		}
	}
	if denied {
		d.Outcome, d.Overrides = Deny, nil
		d.Summary = "deny " + strings.Join(names(d.Rules, func(r Rule) bool {
			return r.Blocking && (r.Kind == KindGuard || r.Kind == KindDeny && r.Enforcement != hclspec.Soft)
		}), ", ")
		return d
	}
	d.Outcome = RequireApproval
	if len(reqs) == 0 {
		reqs[""] = Requirement{Min: 1}
		d.Rules = append(d.Rules, Rule{Policy: BuiltinPolicy, Rule: "one-review", Kind: KindDefault, Blocking: true, Min: 1,
			Message: "every proposal needs a reviewed merge"})
	}
	for _, k := range slices.Sorted(maps.Keys(reqs)) {
		d.Requirements = append(d.Requirements, reqs[k])
	}
	var parts []string
	for _, r := range d.Requirements {
		parts = append(parts, r.String())
	}
	fired := names(d.Rules, func(r Rule) bool { return r.Kind == KindApproval && r.Blocking })
	if len(fired) == 0 {
		fired = []string{"default"}
	}
	d.Summary = fmt.Sprintf("require_approval %s (%s)", strings.Join(fired, ", "), strings.Join(parts, ", "))
	if len(d.Overrides) > 0 {
		d.Summary += "; override " + strings.Join(d.Overrides, ", ")
	}
	return d
}

func evalError(p *hclspec.Policy, rule string, rng hcl.Range, diags hcl.Diagnostics) Rule {
	return Rule{
		Policy: p.Name, Rule: rule, Kind: KindDeny, Enforcement: hclspec.Hard, Blocking: true,
		Message: "condition could not be evaluated, denying: " + diags.Error(), Pos: pos(rng),
	}
}

func names(rules []Rule, keep func(Rule) bool) []string {
	var out []string
	for _, r := range rules {
		if keep(r) {
			out = append(out, r.Name())
		}
	}
	return out
}

func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// PolicyDigest returns the sha256 of the spec's policy files, computed when
// the spec was loaded.
func PolicyDigest(spec *hclspec.Spec) string { return spec.PolicyDigest }

// Approver is a person whose approval counts: the author of a merge, a
// signed approval tag or a forge review. Unsigned marks an approval proven
// by nothing but a commit's email (an unsigned merge, or one signed by no
// reviewer's key): it counts only in groups with accept_unsigned.
type Approver struct {
	Email    string
	Login    string
	Unsigned bool
}

// Check reports which requirements of d the approvers do not satisfy. A
// denied decision is never satisfied. Approvers who are the agent or the
// reconciler itself must be removed by the caller; Check counts distinct
// members of the required groups, a member who approved both by email and
// by forge login once, and ignores approvers with neither.
func Check(spec *hclspec.Spec, d Decision, approvers []Approver) []string {
	if d.Outcome == Deny {
		return []string{"the decision denied this change: " + d.Summary}
	}
	var unmet []string
	for _, req := range d.Requirements {
		seen := map[string]bool{}
		for _, a := range approvers {
			// A member counts once however they approved: by a merge
			// (email) or a forge review (login).
			if m, _ := satisfier(spec, req, a); m != nil {
				seen[personID(m.Email, m.ForgeLogin)] = true
			}
		}
		if len(seen) < req.Min {
			unmet = append(unmet, fmt.Sprintf("needs %s, has %d", req, len(seen)))
		}
	}
	return unmet
}

// satisfier returns the member a is of a group req accepts, and that
// group, or nil. The default review (no groups) accepts a member of any
// group, proven as that group requires (signed, or unsigned where it
// accepts that): a name and an email alone are claims. An approver with
// neither email nor login is nobody.
func satisfier(spec *hclspec.Spec, req Requirement, a Approver) (*hclspec.Member, string) {
	if a.Email == "" && a.Login == "" {
		return nil, ""
	}
	groups := req.Groups
	if len(groups) == 0 {
		for _, g := range spec.Groups {
			groups = append(groups, g.Name)
		}
	}
	for _, g := range groups {
		if m := member(spec, []string{g}, a); m != nil {
			return m, g
		}
	}
	return nil, ""
}

// Counted is a requirement an approval counts for: the group of the
// requirement the approver is a member of, and the blocking rules
// (policy/rule) that required it.
type Counted struct {
	Group string
	Rules []string
}

// Counts returns the requirements of d that a counts for, by the same test
// Check applies (satisfier); none for a denied decision.
func Counts(spec *hclspec.Spec, d Decision, a Approver) []Counted {
	if d.Outcome == Deny {
		return nil
	}
	var out []Counted
	for _, req := range d.Requirements {
		_, g := satisfier(spec, req, a)
		if g == "" {
			continue
		}
		c := Counted{Group: g}
		for _, r := range d.Rules {
			// The rules with this requirement's groups (none: the
			// default review, or a rule naming no group).
			if r.Kind == KindDefault || ((r.Kind == KindApproval || r.Kind == KindReview && r.Min > 0) && r.Blocking && sameSet(r.Reviewers, req.Groups)) {
				c.Rules = append(c.Rules, r.Name())
			}
		}
		out = append(out, c)
	}
	return out
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// member returns the member of one of the groups that a is, or nil; an
// unsigned approver is a member only of groups that accept unsigned merges.
func member(spec *hclspec.Spec, groups []string, a Approver) *hclspec.Member {
	for _, gname := range groups {
		g := spec.Group(gname)
		if g == nil || (a.Unsigned && !g.AcceptUnsigned) {
			continue
		}
		for _, m := range g.Members {
			if (a.Email != "" && strings.EqualFold(m.Email, a.Email)) || (a.Login != "" && m.ForgeLogin == a.Login) {
				return m
			}
		}
	}
	return nil
}

func personID(email, login string) string {
	if email != "" {
		return strings.ToLower(email)
	}
	return "login:" + login
}

// OverrideTrailer is the trailer of a merge commit that overrides a soft
// rule: "Policy-Override: <policy>/<rule>".
const OverrideTrailer = "Policy-Override"

// CheckOverrides reports which of d's soft rules the merge does not
// override: each must be named in a Policy-Override trailer, and the merger
// must be a reviewer the decision allows (a member of a required group, or
// of any group when only the default review is required).
func CheckOverrides(spec *hclspec.Spec, d Decision, merger Approver, named []string) []string {
	if len(d.Overrides) == 0 {
		return nil
	}
	var groups []string
	for _, req := range d.Requirements {
		groups = append(groups, req.Groups...)
	}
	if len(groups) == 0 {
		for _, g := range spec.Groups {
			groups = append(groups, g.Name)
		}
	}
	allowed := member(spec, groups, merger) != nil
	var unmet []string
	for _, o := range d.Overrides {
		switch {
		case !slices.Contains(named, o):
			unmet = append(unmet, fmt.Sprintf("soft rule %s was not overridden (add \"%s: %s\" to the merge commit)", o, OverrideTrailer, o))
		case !allowed:
			unmet = append(unmet, fmt.Sprintf("soft rule %s was overridden by %s, who is not in %s", o, merger.Email, strings.Join(groups, "|")))
		}
	}
	return unmet
}
