package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/hclspec"
)

// SecretFinding is a secret found in a change: where it is and which rule
// found it, never the value.
type SecretFinding struct {
	Path string
	Line int // 1-based; 0 for the whole file
	Rule string
}

func (f SecretFinding) String() string {
	if f.Line == 0 {
		return fmt.Sprintf("%s (%s)", f.Path, f.Rule)
	}
	return fmt.Sprintf("%s:%d (%s)", f.Path, f.Line, f.Rule)
}

// SecretRule is the built-in rule that denies a change holding a secret.
const SecretRule = "secret-detected"

// maxListedFindings is how many findings the rule's message names; the
// rest are counted.
const maxListedFindings = 20

// DenySecrets returns d denied by the hard guard builtin/secret-detected
// when findings is not empty, and d unchanged when it is. The rule's
// message counts the findings and names each one's file, line and rule
// (the first 20, sorted; never a value); it comes first among d's rules,
// d's approval requirements and overrides are dropped (a denial needs
// none), and the summary names every rule that denies, as Decide's does.
// No policy, review or override lifts it.
func DenySecrets(d Decision, findings []SecretFinding) Decision {
	if len(findings) == 0 {
		return d
	}
	fs := slices.Clone(findings)
	slices.SortFunc(fs, func(a, b SecretFinding) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), cmp.Compare(a.Line, b.Line), strings.Compare(a.Rule, b.Rule))
	})
	fs = slices.Compact(fs)
	var listed []string
	for _, f := range fs[:min(len(fs), maxListedFindings)] {
		listed = append(listed, f.String())
	}
	msg := fmt.Sprintf("%d secret(s) found: %s", len(fs), strings.Join(listed, ", "))
	if len(fs) > maxListedFindings {
		msg += fmt.Sprintf(", and %d more", len(fs)-maxListedFindings)
	}
	guard := Rule{Policy: BuiltinPolicy, Rule: SecretRule, Kind: KindGuard, Enforcement: hclspec.Hard, Blocking: true, Message: msg}
	rules := slices.DeleteFunc(slices.Clone(d.Rules), func(r Rule) bool { return r.Name() == guard.Name() })
	d.Rules = append([]Rule{guard}, rules...)
	d.Outcome, d.Requirements, d.Overrides = Deny, nil, nil
	d.Summary = "deny " + strings.Join(names(d.Rules, func(r Rule) bool {
		return r.Blocking && (r.Kind == KindGuard || r.Kind == KindDeny && r.Enforcement != hclspec.Soft)
	}), ", ")
	return d
}
