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
// groups means any reviewer other than the agent.
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
// in.Change. Deny wins over approval; approval requirements from several
// rules combine, keeping the strictest minimum per reviewer set; every
// change needs at least one reviewer. A change to control files (agents/,
// policies/, providers.hcl, reviewers.hcl, .reconciler/) is always denied:
// no agent may widen its own permissions.
func Decide(spec *hclspec.Spec, in hclspec.ConditionInput) Decision {
	d := Decision{PolicyDigest: PolicyDigest(spec)}

	var control []string
	for _, f := range in.Change {
		if hclspec.IsControlPath(f.Path) {
			control = append(control, f.Path)
		}
	}
	if len(control) > 0 {
		d.Rules = append(d.Rules, Rule{
			Policy: BuiltinPolicy, Rule: "self-modification", Kind: KindGuard, Enforcement: hclspec.Hard, Blocking: true,
			Message: "agents may not change agents/, policies/, providers.hcl, reviewers.hcl or .reconciler/: " + strings.Join(control, ", "),
		})
	}
	reqs := map[string]Requirement{}
	cond := in.Context()
	for _, p := range spec.PoliciesFor(in.Agent.Name) {
		for _, r := range p.Denies {
			fired, diags := cond.Eval(r.Condition)
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
			fired, diags := cond.Eval(r.Condition)
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
	for _, r := range d.Rules {
		if r.Blocking && (r.Kind == KindDeny || r.Kind == KindGuard) {
			d.Outcome = Deny
		}
	}
	if d.Outcome == Deny {
		d.Summary = "deny " + strings.Join(names(d.Rules, func(r Rule) bool { return r.Blocking && r.Kind != KindApproval }), ", ")
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
// signed approval tag or a forge review.
type Approver struct {
	Email string
	Login string
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
	var all []string
	for _, g := range spec.Groups {
		all = append(all, g.Name)
	}
	var unmet []string
	for _, req := range d.Requirements {
		seen := map[string]bool{}
		for _, a := range approvers {
			if a.Email == "" && a.Login == "" {
				continue
			}
			// A member counts once however they approved: by a merge
			// (email) or a forge review (login).
			if m := member(spec, req.Groups, a); m != nil {
				seen[personID(m.Email, m.ForgeLogin)] = true
			} else if len(req.Groups) == 0 {
				if m := member(spec, all, a); m != nil {
					seen[personID(m.Email, m.ForgeLogin)] = true
				} else {
					seen[personID(a.Email, a.Login)] = true
				}
			}
		}
		if len(seen) < req.Min {
			unmet = append(unmet, fmt.Sprintf("needs %s, has %d", req, len(seen)))
		}
	}
	return unmet
}

// member returns the member of one of the groups that a is, or nil.
func member(spec *hclspec.Spec, groups []string, a Approver) *hclspec.Member {
	for _, gname := range groups {
		g := spec.Group(gname)
		if g == nil {
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
