package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentgitops/reconciler/hclspec"
)

func TestDenySecrets(t *testing.T) {
	approval := Decision{
		Outcome: RequireApproval, Summary: "require_approval protect-prod/prod (2 of sre); override soft/rule",
		Rules: []Rule{
			{Policy: "protect-prod", Rule: "prod", Kind: KindApproval, Enforcement: hclspec.Hard, Blocking: true, Reviewers: []string{"sre"}, Min: 2},
			{Policy: "soft", Rule: "rule", Kind: KindDeny, Enforcement: hclspec.Soft, Blocking: true},
			{Policy: "note", Rule: "rule", Kind: KindDeny, Enforcement: hclspec.Advisory},
		},
		Requirements: []Requirement{{Groups: []string{"sre"}, Min: 2}},
		Overrides:    []string{"soft/rule"},
		PolicyDigest: "sha256:abc",
	}
	denied := Decision{
		Outcome: Deny, Summary: "deny builtin/self-modification, control-files/control-files",
		Rules: []Rule{
			{Policy: BuiltinPolicy, Rule: "self-modification", Kind: KindGuard, Enforcement: hclspec.Hard, Blocking: true},
			{Policy: "control-files", Rule: "control-files", Kind: KindDeny, Enforcement: hclspec.Hard, Blocking: true},
		},
	}
	findings := []SecretFinding{
		{Path: "config/b.env", Line: 3, Rule: "github-pat"},
		{Path: "config/a.env", Line: 12, Rule: "known-secret"},
		{Path: "config/b.env", Line: 3, Rule: "github-pat"}, // twice: once
		{Path: "big.bin", Rule: "too-large-to-scan"},
	}
	const msg = "3 secret(s) found: big.bin (too-large-to-scan), config/a.env:12 (known-secret), config/b.env:3 (github-pat)"
	guard := Rule{Policy: BuiltinPolicy, Rule: "secret-detected", Kind: KindGuard, Enforcement: "hard", Blocking: true, Message: msg}

	tests := []struct {
		name string
		in   Decision
		want Decision
	}{
		{"approval becomes a denial", approval, Decision{
			Outcome: Deny, Summary: "deny builtin/secret-detected",
			Rules:        append([]Rule{guard}, approval.Rules...),
			PolicyDigest: "sha256:abc",
		}},
		{"a denial names every denying rule", denied, Decision{
			Outcome: Deny, Summary: "deny builtin/secret-detected, builtin/self-modification, control-files/control-files",
			Rules: append([]Rule{guard}, denied.Rules...),
		}},
		{"denied twice: one guard", DenySecrets(approval, findings[:1]), Decision{
			Outcome: Deny, Summary: "deny builtin/secret-detected",
			Rules:        append([]Rule{guard}, approval.Rules...),
			PolicyDigest: "sha256:abc",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fmt.Sprintf("%+v", tt.in)
			got := DenySecrets(tt.in, findings)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DenySecrets (-want +got):\n%s", diff)
			}
			if fmt.Sprintf("%+v", tt.in) != in {
				t.Error("DenySecrets changed its argument")
			}
			if unmet := Check(nil, got, nil); len(unmet) != 1 || !strings.Contains(unmet[0], "builtin/secret-detected") {
				t.Errorf("Check = %q", unmet)
			}
		})
	}

	t.Run("no findings", func(t *testing.T) {
		if diff := cmp.Diff(approval, DenySecrets(approval, nil)); diff != "" {
			t.Errorf("changed without findings (-want +got):\n%s", diff)
		}
	})
	t.Run("many findings are counted", func(t *testing.T) {
		var many []SecretFinding
		for i := range 25 {
			many = append(many, SecretFinding{Path: fmt.Sprintf("f%02d", i), Line: 1, Rule: "github-pat"})
		}
		m := DenySecrets(approval, many).Rules[0].Message
		if !strings.HasPrefix(m, "25 secret(s) found: f00:1 (github-pat), ") || !strings.HasSuffix(m, "f19:1 (github-pat), and 5 more") {
			t.Errorf("message = %q", m)
		}
	})
}
