package policy

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"

	"github.com/agentgitops/reconciler/hclspec"
)

// specFS reads a txtar archive of spec files into a file system.
func specFS(t testing.TB, archive string) fstest.MapFS {
	t.Helper()
	a, err := txtar.ParseFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for _, f := range a.Files {
		fsys[f.Name] = &fstest.MapFile{Data: f.Data}
	}
	return fsys
}

func loadSpec(t testing.TB, fsys fstest.MapFS) *hclspec.Spec {
	t.Helper()
	spec, diags := hclspec.Load(fsys, hclspec.Options{})
	if len(diags) > 0 {
		t.Fatalf("Load: %v", diags)
	}
	return spec
}

// testSpec is testdata/spec.txtar; bareSpec has its agents, providers and
// reviewers but no policies.
func testSpecs(t testing.TB) (spec, bare *hclspec.Spec) {
	fsys := specFS(t, "testdata/spec.txtar")
	spec = loadSpec(t, fsys)
	for name := range fsys {
		if strings.HasPrefix(name, "policies/") {
			delete(fsys, name)
		}
	}
	bare = loadSpec(t, fsys)
	if len(spec.Policies) != 5 || len(bare.Policies) != 0 {
		t.Fatalf("specs have %d and %d policies, want 5 and 0", len(spec.Policies), len(bare.Policies))
	}
	return spec, bare
}

func modified(path string, added, removed int) hclspec.ChangeFile {
	return hclspec.ChangeFile{Path: path, Status: "modified", Added: added, Removed: removed}
}

// The rules the tests expect to fire.
var (
	ruleDefault = Rule{Policy: "builtin", Rule: "one-review", Kind: KindDefault, Blocking: true, Min: 1, Message: "every proposal needs a reviewed merge"}
	ruleProd    = Rule{Policy: "protect-prod", Rule: "production", Kind: KindApproval, Enforcement: "hard", Blocking: true,
		Reviewers: []string{"sre"}, Min: 1, Pos: "policies/protect-prod.hcl:5:3"}
	ruleLargeProd = Rule{Policy: "protect-prod", Rule: "large-production", Kind: KindApproval, Enforcement: "hard", Blocking: true,
		Reviewers: []string{"sre"}, Min: 2, Pos: "policies/protect-prod.hcl:10:3"}
	ruleSecrets = Rule{Policy: "protect-prod", Rule: "secrets", Kind: KindDeny, Enforcement: "hard", Blocking: true,
		Message: "agents must not touch secrets", Pos: "policies/protect-prod.hcl:16:3"}
	rulePayments = Rule{Policy: "payments", Rule: "payments", Kind: KindApproval, Enforcement: "hard", Blocking: true,
		Reviewers: []string{"payments"}, Min: 1, Pos: "policies/payments.hcl:4:3"}
	ruleAdviceLarge = Rule{Policy: "advice", Rule: "large", Kind: KindDeny, Enforcement: "advisory", Blocking: false,
		Message: "consider splitting changes over 50 added lines", Pos: "policies/advice.hcl:5:3"}
	ruleAdviceDBA = Rule{Policy: "advice", Rule: "dba", Kind: KindApproval, Enforcement: "advisory", Blocking: false,
		Reviewers: []string{"dba"}, Min: 1, Pos: "policies/advice.hcl:10:3"}
	ruleSoftDeletes = Rule{Policy: "soft", Rule: "deletes", Kind: KindDeny, Enforcement: "soft", Blocking: true,
		Message: "env files are never deleted", Pos: "policies/soft.hcl:5:3"}
)

func guard(paths ...string) Rule {
	return Rule{Policy: "builtin", Rule: "self-modification", Kind: KindGuard, Enforcement: "hard", Blocking: true,
		Message: "agents may not change the files that define or steer them (agents/, policies/, providers.hcl, reviewers.hcl, .reconciler/, the files the agents' digests cover, CI and forge files): " + strings.Join(paths, ", ")}
}

func TestDecide(t *testing.T) {
	spec, bare := testSpecs(t)
	tests := []struct {
		name      string
		spec      *hclspec.Spec
		agent     string
		change    []hclspec.ChangeFile
		outcome   string
		summary   string
		rules     []Rule
		reqs      []Requirement
		overrides []string
	}{
		// The guard needs no policy.
		{name: "guard agents/", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("agents/x.hcl", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("agents/x.hcl")}},
		{name: "guard policies/", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("policies/p.hcl", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("policies/p.hcl")}},
		{name: "guard providers.hcl", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("providers.hcl", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("providers.hcl")}},
		{name: "guard reviewers.hcl", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("reviewers.hcl", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("reviewers.hcl")}},
		{name: "guard .reconciler/", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{{Path: ".reconciler/keys/k.pub", Status: "added", Added: 1}},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard(".reconciler/keys/k.pub")}},
		{name: "guard names every control file", spec: bare, agent: "image-pinner",
			change:  []hclspec.ChangeFile{modified("deploy/app.yaml", 1, 1), modified("agents/image-pinner.hcl", 1, 1), {Path: "policies/p.hcl", Status: "deleted", Removed: 9}},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("agents/image-pinner.hcl", "policies/p.hcl")}},
		{name: "guard and a policy deny", spec: spec, agent: "image-pinner",
			change:  []hclspec.ChangeFile{modified("reviewers.hcl", 1, 0), modified("deploy/secrets/db.yaml", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification, protect-prod/secrets", rules: []Rule{guard("reviewers.hcl"), ruleSecrets}},
		// What the agents' digests cover, and what steers CI and the forge.
		{name: "guard another agent's command file", spec: bare, agent: "env-normaliser", change: []hclspec.ChangeFile{modified("tools/fix.sh", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("tools/fix.sh")}},
		{name: "guard a prompt read with file()", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("prompts/flaky.md", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification", rules: []Rule{guard("prompts/flaky.md")}},
		{name: "guard CI and forge files", spec: bare, agent: "image-pinner",
			change: []hclspec.ChangeFile{modified(".github/workflows/ci.yml", 1, 0), modified("CODEOWNERS", 1, 0), modified(".gitattributes", 1, 0),
				modified(".gitlab-ci.yml", 1, 0), modified(".gitea/workflows/x.yaml", 1, 0), modified(".gitmodules", 1, 0)},
			outcome: Deny, summary: "deny builtin/self-modification",
			rules: []Rule{guard(".github/workflows/ci.yml", "CODEOWNERS", ".gitattributes", ".gitlab-ci.yml", ".gitea/workflows/x.yaml", ".gitmodules")}},
		{name: "near misses of digest and forge files", spec: bare, agent: "image-pinner",
			change:  []hclspec.ChangeFile{modified("tools/fix.sh.bak", 1, 0), modified("prompts/other.md", 1, 0), modified("docs/github.md", 1, 0), modified("deploy/CODEOWNERS.md", 1, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "near misses of control files", spec: bare, agent: "image-pinner",
			change:  []hclspec.ChangeFile{modified("agents.md", 1, 0), modified("docs/agents/x.hcl", 1, 0), modified("deploy/providers.hcl", 1, 0), modified("reviewers.hcl.bak", 1, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},

		{name: "no rule fires", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/staging/ledger-worker.yaml", 2, 2)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "no policies", spec: bare, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/payments-api.yaml", 2, 2)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "empty change", spec: spec, agent: "image-pinner",
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "production", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/ledger-worker.yaml", 2, 2)},
			outcome: RequireApproval, summary: "require_approval protect-prod/production (1 of sre)",
			rules: []Rule{ruleProd}, reqs: []Requirement{{Groups: []string{"sre"}, Min: 1}}},
		{name: "same group combines to the strictest min", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/ledger-worker.yaml", 40, 61)},
			outcome: RequireApproval, summary: "require_approval protect-prod/production, protect-prod/large-production (2 of sre)",
			rules: []Rule{ruleProd, ruleLargeProd}, reqs: []Requirement{{Groups: []string{"sre"}, Min: 2}}},
		{name: "different groups are both required", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/payments-api.yaml", 2, 2)},
			outcome: RequireApproval, summary: "require_approval payments/payments, protect-prod/production (1 of payments, 1 of sre)",
			rules: []Rule{rulePayments, ruleProd}, reqs: []Requirement{{Groups: []string{"payments"}, Min: 1}, {Groups: []string{"sre"}, Min: 1}}},
		{name: "policy applies_to does not match", spec: spec, agent: "env-normaliser", change: []hclspec.ChangeFile{modified("deploy/prod/payments-api.yaml", 2, 2)},
			outcome: RequireApproval, summary: "require_approval protect-prod/production (1 of sre)",
			rules: []Rule{ruleProd}, reqs: []Requirement{{Groups: []string{"sre"}, Min: 1}}},
		{name: "deny wins over require_approval", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/secrets/payments.yaml", 1, 1)},
			outcome: Deny, summary: "deny protect-prod/secrets", rules: []Rule{ruleSecrets, ruleProd}},
		{name: "advisory deny is recorded and does not block", spec: spec, agent: "env-normaliser", change: []hclspec.ChangeFile{modified("config/payments-api.env", 60, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)",
			rules: []Rule{ruleAdviceLarge, ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "advisory approval is recorded and not required", spec: spec, agent: "env-normaliser", change: []hclspec.ChangeFile{modified("db/schema.sql", 1, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)",
			rules: []Rule{ruleAdviceDBA, ruleDefault}, reqs: []Requirement{{Min: 1}}},
		{name: "advisory with a blocking approval", spec: spec, agent: "image-pinner", change: []hclspec.ChangeFile{modified("deploy/prod/ledger-worker.yaml", 51, 0)},
			outcome: RequireApproval, summary: "require_approval protect-prod/production (1 of sre)",
			rules: []Rule{ruleAdviceLarge, ruleProd}, reqs: []Requirement{{Groups: []string{"sre"}, Min: 1}}},
		{name: "soft deny blocks until overridden", spec: spec, agent: "env-normaliser", change: []hclspec.ChangeFile{{Path: "config/old.env", Status: "deleted", Removed: 3}},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer); override soft/deletes",
			rules: []Rule{ruleSoftDeletes, ruleDefault}, reqs: []Requirement{{Min: 1}}, overrides: []string{"soft/deletes"}},
		{name: "hard deny blocks", spec: spec, agent: "env-normaliser", change: []hclspec.ChangeFile{modified("config/secrets/db.env", 1, 0)},
			outcome: Deny, summary: "deny protect-prod/secrets", rules: []Rule{ruleSecrets}},
		{name: "condition that cannot be evaluated denies", spec: spec, agent: "flaky",
			outcome: Deny, summary: "deny flaky/first-file", rules: []Rule{{Policy: "flaky", Rule: "first-file", Kind: KindDeny, Enforcement: "hard", Blocking: true,
				Message: "condition could not be evaluated, denying: policies/flaky.hcl:6,40-43: Invalid index; The given key does not identify an element in this collection value: the collection has no elements.",
				Pos:     "policies/flaky.hcl:5:3"}}},
		{name: "same condition evaluates on a change", spec: spec, agent: "flaky", change: []hclspec.ChangeFile{modified("tmp/build.log", 1, 0)},
			outcome: RequireApproval, summary: "require_approval default (1 reviewer)", rules: []Rule{ruleDefault}, reqs: []Requirement{{Min: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.spec, hclspec.ConditionInput{Agent: tc.spec.Agent(tc.agent), Change: tc.change})
			want := Decision{Outcome: tc.outcome, Summary: tc.summary, Rules: tc.rules, Requirements: tc.reqs, Overrides: tc.overrides, PolicyDigest: PolicyDigest(tc.spec)}
			if diff := cmp.Diff(want, d); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

// Decide is pure: the same inputs give the same Decision.
func TestDecideDeterministic(t *testing.T) {
	spec, _ := testSpecs(t)
	in := hclspec.ConditionInput{Agent: spec.Agent("image-pinner"), Change: []hclspec.ChangeFile{
		modified("deploy/prod/payments-api.yaml", 80, 30), modified("deploy/staging/payments-api.yaml", 1, 1),
	}}
	first := Decide(spec, in)
	for range 20 {
		if diff := cmp.Diff(first, Decide(spec, in)); diff != "" {
			t.Fatalf("Decide differs between calls:\n%s", diff)
		}
	}
}

func TestPolicyDigest(t *testing.T) {
	fsys := specFS(t, "testdata/spec.txtar")
	base := PolicyDigest(loadSpec(t, fsys))
	if len(base) != 64 {
		t.Fatalf("PolicyDigest = %q, want 64 hex digits", base)
	}
	if again := PolicyDigest(loadSpec(t, specFS(t, "testdata/spec.txtar"))); again != base {
		t.Errorf("PolicyDigest of the same spec = %s, then %s", base, again)
	}
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, fsys fstest.MapFS)
		changed bool
	}{
		{"policy rule", func(t *testing.T, fsys fstest.MapFS) { replace(t, fsys, "policies/soft.hcl", `"deleted"`, `"removed"`) }, true},
		{"policy comment", func(t *testing.T, fsys fstest.MapFS) { replace(t, fsys, "policies/flaky.hcl", "# Fails", "# Denies") }, true},
		{"policy added", func(t *testing.T, fsys fstest.MapFS) {
			fsys["policies/zz.hcl"] = &fstest.MapFile{Data: []byte("policy \"zz\" {\n  applies_to = [\"nobody\"]\n}\n")}
		}, true},
		{"policy removed", func(t *testing.T, fsys fstest.MapFS) { delete(fsys, "policies/advice.hcl") }, true},
		{"agent", func(t *testing.T, fsys fstest.MapFS) { replace(t, fsys, "agents/flaky.hcl", "tmp/**", "tmp/cache/**") }, false},
		{"reviewers", func(t *testing.T, fsys fstest.MapFS) { replace(t, fsys, "reviewers.hcl", "dora@", "dorothea@") }, false},
		{"policy test file", func(t *testing.T, fsys fstest.MapFS) {
			fsys["policies/soft_test.hcl"] = &fstest.MapFile{Data: []byte("# not loaded\n")}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := specFS(t, "testdata/spec.txtar")
			tc.change(t, fsys)
			got := PolicyDigest(loadSpec(t, fsys))
			if changed := got != base; changed != tc.changed {
				t.Errorf("PolicyDigest changed = %v, want %v", changed, tc.changed)
			}
		})
	}
}

func replace(t *testing.T, fsys fstest.MapFS, name, old, new string) {
	t.Helper()
	f, ok := fsys[name]
	if !ok || !strings.Contains(string(f.Data), old) {
		t.Fatalf("%s does not contain %q", name, old)
	}
	f.Data = []byte(strings.Replace(string(f.Data), old, new, 1))
}

func TestCheck(t *testing.T) {
	spec, _ := testSpecs(t)
	decide := func(agent string, change ...hclspec.ChangeFile) Decision {
		t.Helper()
		return Decide(spec, hclspec.ConditionInput{Agent: spec.Agent(agent), Change: change})
	}
	prod := decide("image-pinner", modified("deploy/prod/ledger-worker.yaml", 2, 2))
	largeProd := decide("image-pinner", modified("deploy/prod/ledger-worker.yaml", 200, 0))
	payments := decide("image-pinner", modified("deploy/prod/payments-api.yaml", 2, 2))
	denied := decide("image-pinner", modified("deploy/prod/secrets/db.yaml", 1, 0))
	anyone := decide("image-pinner", modified("deploy/staging/ledger-worker.yaml", 1, 0))
	if prod.Summary != "require_approval protect-prod/production (1 of sre)" ||
		largeProd.Summary != "require_approval protect-prod/production, protect-prod/large-production (2 of sre)" ||
		payments.Summary != "require_approval payments/payments, protect-prod/production (1 of payments, 1 of sre)" ||
		denied.Summary != "deny protect-prod/secrets" || anyone.Summary != "require_approval default (1 reviewer)" {
		t.Fatalf("the decisions under test are not what the cases assume")
	}

	rita := Approver{Email: "rita@example.com"}
	ritaLogin := Approver{Login: "rita"}
	sam := Approver{Email: "sam@example.com"} // declared as Sam@Example.com
	paula := Approver{Login: "paula"}
	mallory := Approver{Email: "mallory@example.com", Login: "mallory"}

	tests := []struct {
		name      string
		d         Decision
		approvers []Approver
		want      []string
	}{
		{"member by email satisfies", prod, []Approver{rita}, nil},
		{"member by forge login satisfies", prod, []Approver{ritaLogin}, nil},
		{"email matches case-insensitively", prod, []Approver{{Email: "RITA@Example.COM"}}, nil},
		{"declared email matches case-insensitively", prod, []Approver{sam}, nil},
		{"no approvers", prod, nil, []string{"needs 1 of sre, has 0"}},
		{"non-member does not satisfy", prod, []Approver{mallory}, []string{"needs 1 of sre, has 0"}},
		{"member of another group does not satisfy", prod, []Approver{paula}, []string{"needs 1 of sre, has 0"}},
		{"login given as email does not match", prod, []Approver{{Email: "rita"}}, []string{"needs 1 of sre, has 0"}},
		{"email given as login does not match", prod, []Approver{{Login: "rita@example.com"}}, []string{"needs 1 of sre, has 0"}},
		{"min 2 with two members", largeProd, []Approver{rita, sam}, nil},
		{"min 2 with one member", largeProd, []Approver{rita}, []string{"needs 2 of sre, has 1"}},
		{"duplicate approvers count once", largeProd, []Approver{rita, rita}, []string{"needs 2 of sre, has 1"}},
		{"email in another case counts once", largeProd, []Approver{rita, {Email: "RITA@example.com"}}, []string{"needs 2 of sre, has 1"}},
		{"one member by email and by login counts once", largeProd, []Approver{rita, ritaLogin}, []string{"needs 2 of sre, has 1"}},
		{"min 2 with a member and a non-member", largeProd, []Approver{rita, mallory}, []string{"needs 2 of sre, has 1"}},
		{"two groups, both satisfied", payments, []Approver{paula, rita}, nil},
		{"two groups, one satisfied", payments, []Approver{rita, sam}, []string{"needs 1 of payments, has 0"}},
		{"two groups, none satisfied", payments, nil, []string{"needs 1 of payments, has 0", "needs 1 of sre, has 0"}},
		{"deny is never satisfied", denied, []Approver{rita, sam, paula}, []string{"the decision denied this change: deny protect-prod/secrets"}},
		{"default needs a member of any group", anyone, []Approver{paula}, nil},
		{"default is not satisfied by a non-member", anyone, []Approver{mallory}, []string{"needs 1 reviewer, has 0"}},
		{"default needs one", anyone, nil, []string{"needs 1 reviewer, has 0"}},
		{"approver without identity does not count", anyone, []Approver{{}}, []string{"needs 1 reviewer, has 0"}},
		{"group no longer declared", Decision{Outcome: RequireApproval, Requirements: []Requirement{{Groups: []string{"gone"}, Min: 1}}},
			[]Approver{rita}, []string{"needs 1 of gone, has 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Check(spec, tc.d, tc.approvers)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Check = %q, want %q", got, tc.want)
			}
		})
	}
}

// BenchmarkDecide is one typical decision: a production change of an agent
// to which three policies apply.
func BenchmarkDecide(b *testing.B) {
	fsys := specFS(b, "testdata/spec.txtar")
	delete(fsys, "policies/flaky.hcl")
	delete(fsys, "policies/soft.hcl")
	spec := loadSpec(b, fsys)
	in := hclspec.ConditionInput{
		Agent: spec.Agent("image-pinner"),
		Run:   hclspec.RunInfo{ID: "image-pinner-1", Trigger: "spec"},
		Change: []hclspec.ChangeFile{
			modified("deploy/prod/payments-api.yaml", 3, 3),
			modified("deploy/prod/ledger-worker.yaml", 2, 2),
			modified("deploy/staging/payments-api.yaml", 3, 3),
		},
	}
	if n := len(spec.PoliciesFor("image-pinner")); n != 3 {
		b.Fatalf("%d policies apply, want 3", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(spec, in); d.Outcome != RequireApproval || len(d.Requirements) != 2 {
			b.Fatalf("Decide = %+v", d)
		}
	}
}
