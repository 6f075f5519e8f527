package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/reconcile"
)

// The attack matrix of issue 9: real repositories, signatures made by the
// git CLI with keys from ssh-keygen, every case over a local path and over
// smart HTTP (people clone and push over the same transport the reconciler
// fetches from). Every bypass ends with no approval that counts for the
// decision and a policy.violation naming why; the approvals that are
// allowed end with one proposal.approved per approver and no violation.
//
// The spec is examples/repo-layout with no group accepting unsigned merges:
// sre is rita, tom and sam, payments is paula, each with an SSH signing_key;
// mallory's key is in no reviewers.hcl.

// atkProposalUpdated is the event recording a proposal branch that moved
// and the decision on its new head (DESIGN §3).
const atkProposalUpdated = "proposal.updated"

// atkPerson is who runs the git CLI: the author and committer it records.
type atkPerson struct{ name, email string }

var (
	atkRita    = atkPerson{"Rita Reviewer", "rita@example.com"}
	atkSam     = atkPerson{"Sam", "sam@example.com"}
	atkTom     = atkPerson{"Tom", "tom@example.com"}
	atkPaula   = atkPerson{"Paula", "paula@example.com"}
	atkMallory = atkPerson{"Mallory", "mallory@example.com"}
	atkDev     = atkPerson{"Dev", "dev@example.com"}
)

// atkKey is a person's SSH key made with ssh-keygen: the private key file,
// the public key line and its SHA256 fingerprint.
type atkKey struct{ file, pub, fpr string }

// atkEnv is an env whose reviewers sign with SSH keys, with one reconciler.
type atkEnv struct {
	*env
	r    *reconcile.Reconciler
	keys map[string]atkKey
}

// atkNewEnv makes the spec of the attack tests: no group accepts unsigned
// merges, rita, sam and tom (sre) and paula (payments) have signing keys,
// mallory has a key in no reviewers.hcl; min, when above 1, is how many of
// sre the production rule needs; extra changes the spec further.
func atkNewEnv(t *testing.T, http bool, min int, extra func(dir string)) *atkEnv {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not found: the attack tests sign merges and tags with SSH keys it makes")
	}
	keys := map[string]atkKey{}
	for _, m := range []string{"rita", "sam", "tom", "paula", "mallory"} {
		file, pub := sshReviewerKey(t, m)
		out, err := exec.Command("ssh-keygen", "-lf", file+".pub").Output()
		if err != nil {
			t.Fatalf("ssh-keygen -lf %s: %v", file, err)
		}
		keys[m] = atkKey{file: file, pub: pub, fpr: strings.Fields(string(out))[1]}
	}
	e := newEnv(t, http, func(dir string) {
		atkEdit(t, dir, "reviewers.hcl", "  accept_unsigned = true\n", "")
		atkEdit(t, dir, "reviewers.hcl", `  member "sam" {`, `  member "tom" {
    email       = "tom@example.com"
    forge_login = "tom"
  }
  member "sam" {`)
		for _, m := range []string{"rita", "sam", "tom", "paula"} {
			withSigningKey(m, keys[m].pub)(dir)
		}
		if min > 1 {
			atkEdit(t, dir, "policies/protect-prod.hcl", "reviewers = [\"sre\"]\n    min       = 1", fmt.Sprintf("reviewers = [\"sre\"]\n    min       = %d", min))
		}
		if extra != nil {
			extra(dir)
		}
	})
	return &atkEnv{env: e, r: e.reconciler(nil), keys: keys}
}

// atkEdit replaces every old in the spec file with new, failing the test
// when the file has no old (the example changed under the test).
func atkEdit(t *testing.T, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), old, new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// atkAppend appends line to the file at path under work.
func atkAppend(t testing.TB, work, path, line string) {
	t.Helper()
	p := filepath.Join(work, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// reconcile runs a pass of the env's reconciler.
func (a *atkEnv) reconcile() { a.t.Helper(); a.pass(a.r) }

// work clones the repository over the env's transport (local path or
// smart HTTP): what people push goes the way the reconciler fetches.
func (a *atkEnv) work() string { a.t.Helper(); return gittest.Clone(a.t, a.url) }

// gitBy runs the git CLI in work as who, signing with signer's key unless
// signer is "".
func (a *atkEnv) gitBy(who atkPerson, signer, work string, args ...string) {
	a.t.Helper()
	if signer != "" {
		args = append([]string{"-c", "gpg.format=ssh", "-c", "user.signingKey=" + a.keys[signer].file}, args...)
	}
	a.gitAs(who.name, who.email, work, args...)
}

// merge merges rev (origin/<branch>, or a commit of it) into main as who
// with a merge commit, signed by signer's key unless signer is "", and
// pushes main.
func (a *atkEnv) merge(who atkPerson, signer, branch, rev string) {
	a.t.Helper()
	work := a.work()
	args := []string{"merge", "-q", "--no-ff", "-m", "Merge " + branch, rev}
	if signer != "" {
		args = slices.Insert(args, 1, "-S")
	}
	a.gitBy(who, signer, work, args...)
	a.git(work, "push", "-q", "origin", "main")
}

// pushTo commits change on branch as who and pushes it: the branch moves.
func (a *atkEnv) pushTo(who atkPerson, branch, msg string, change func(work string)) {
	a.t.Helper()
	work := a.work()
	a.git(work, "checkout", "-q", branch)
	change(work)
	a.git(work, "add", "-A")
	a.gitBy(who, "", work, "commit", "-q", "-m", msg)
	a.git(work, "push", "-q", "origin", branch)
}

// approveTag pushes the tag approve/<runID>/<member> on rev, made as who
// with `git tag -s` and signer's key.
func (a *atkEnv) approveTag(who atkPerson, signer, runID, member, rev string) {
	a.t.Helper()
	work := a.work()
	name := "approve/" + runID + "/" + member
	a.gitBy(who, signer, work, "tag", "-s", "-m", "approve", name, rev)
	a.git(work, "push", "-q", "origin", "refs/tags/"+name)
}

// opened returns the agent's proposal.opened entry.
func (a *atkEnv) opened(agent string) ledger.Entry {
	a.t.Helper()
	op, ok := find(a.entries(), ledger.ProposalOpened, agent)
	if !ok || op.Proposal == nil {
		a.t.Fatalf("no proposal for %s: %q", agent, a.events())
	}
	return op
}

// atkApproval is the structured approval a proposal.approved entry may
// carry besides its reviewer text.
type atkApproval struct {
	Method      string `json:"method"`
	Member      string `json:"member"`
	Fingerprint string `json:"fingerprint"`
	Satisfies   []struct {
		Group string `json:"group"`
	} `json:"satisfies"`
}

// atkApprovalOf returns the structured approval of en, or nil.
func atkApprovalOf(t testing.TB, en ledger.Entry) *atkApproval {
	t.Helper()
	b, err := json.Marshal(en.Predicate)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Approval *atkApproval `json:"approval"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p.Approval
}

// atkSignedBy finds the member and group of a signature in a reviewer
// text: "rita <rita@example.com>, signed by rita (sre) ssh SHA256:...".
var atkSignedBy = regexp.MustCompile(`signed by (\S+) \(([^)]+)\) (\S+) (\S+)`)

// atkCounts reports whether the approval en counts for the decision whose
// requirements are reqs: the entry says it satisfied a requirement, or its
// reviewer is a signature by a member of a group a requirement needs, or
// a requirement takes any reviewer (none of these spec's groups accepts
// unsigned merges). A deny, having no requirements, counts nothing.
func atkCounts(t testing.TB, en ledger.Entry, reqs []policy.Requirement) bool {
	t.Helper()
	if ap := atkApprovalOf(t, en); ap != nil && len(ap.Satisfies) > 0 {
		return true
	}
	m := atkSignedBy.FindStringSubmatch(en.Reviewer)
	signed := m != nil && !strings.Contains(en.Reviewer, "unsigned")
	for _, req := range reqs {
		if len(req.Groups) == 0 || (signed && slices.Contains(req.Groups, m[2])) {
			return true
		}
	}
	return false
}

// atkApprovedBy reports whether en is member's approval signed with key
// and counted for group.
func atkApprovedBy(t testing.TB, en ledger.Entry, member, group string, key atkKey) bool {
	t.Helper()
	if ap := atkApprovalOf(t, en); ap != nil {
		for _, s := range ap.Satisfies {
			if ap.Member == member && ap.Fingerprint == key.fpr && s.Group == group {
				return true
			}
		}
	}
	m := atkSignedBy.FindStringSubmatch(en.Reviewer)
	return m != nil && m[1] == member && m[2] == group && m[3] == "ssh" && m[4] == key.fpr
}

// atkCase is one way of getting a proposal into main.
type atkCase struct {
	name string
	// min is how many of sre the production rule needs (0: as the
	// example, 1); spec changes the spec further.
	min  int
	spec func(dir string)
	// attack does it, running the passes it needs, and returns the run id
	// it is about.
	attack func(a *atkEnv) string
	// reasons: the run's policy.violation mentions one of them (any case).
	// Empty for an approval that must count.
	reasons []string
	// approvers are the sre members whose approvals must count.
	approvers []string
	// present and absent are event types the run must and must not have.
	present, absent []string
}

// proposal runs the first pass and returns the agent's proposal.
func (a *atkEnv) proposal(agent string) ledger.Entry {
	a.t.Helper()
	a.reconcile()
	return a.opened(agent)
}

// atkStager is an agent whose own change (deploy/staging) needs only the
// default single review.
func atkStager(dir string) {
	writeAgent(dir, "stager", `"deploy/**"`, "echo '# staged' >> deploy/staging/payments-api.yaml\necho 'Mark staging as staged'")
}

func atkAttacks() []atkCase {
	signedMergeOf := func(who atkPerson, signer string) func(a *atkEnv) string {
		return func(a *atkEnv) string {
			op := a.proposal("image-pinner")
			a.merge(who, signer, op.Proposal.Branch, "origin/"+op.Proposal.Branch)
			a.reconcile()
			return op.RunID
		}
	}
	machineMerge := func(who atkPerson) func(a *atkEnv) string {
		// env-normaliser's change needs one reviewer of any group, which
		// an unsigned merge by anyone gives: only the identity check
		// stands between the machine's merge and an approval.
		return func(a *atkEnv) string {
			op := a.proposal("env-normaliser")
			a.merge(who, "", op.Proposal.Branch, "origin/"+op.Proposal.Branch)
			a.reconcile()
			return op.RunID
		}
	}
	humanCommitMerged := func(path, content string) func(a *atkEnv) string {
		// A person adds a file to the stager's proposal; the reconciler
		// decides again on the whole change; paula (payments, signed),
		// whom the first decision would have counted, merges it.
		return func(a *atkEnv) string {
			op := a.proposal("stager")
			a.pushTo(atkMallory, op.Proposal.Branch, "Also this", func(work string) {
				atkAppend(a.t, work, path, content)
			})
			a.reconcile()
			a.merge(atkPaula, "paula", op.Proposal.Branch, "origin/"+op.Proposal.Branch)
			a.reconcile()
			return op.RunID
		}
	}
	needsSRE := []string{"needs 1 of sre, has 0"}
	return []atkCase{
		{
			name:    "unsigned merge with a member's name and email",
			attack:  signedMergeOf(atkRita, ""),
			reasons: needsSRE,
		},
		{
			name:    "merge signed by a key in no reviewers.hcl",
			attack:  signedMergeOf(atkRita, "mallory"),
			reasons: needsSRE,
		},
		{
			name:    "merge signed by a member of another group",
			attack:  signedMergeOf(atkPaula, "paula"),
			reasons: needsSRE,
		},
		{
			name:    "merge by the reconciler identity in another case",
			attack:  machineMerge(atkPerson{"Reconciler", "RECONCILER@Example.COM"}),
			reasons: []string{"never count"},
		},
		{
			name:    "merge by the agent identity in another case",
			attack:  machineMerge(atkPerson{"env-normaliser (agent)", "Reconciler+Env-Normaliser@EXAMPLE.com"}),
			reasons: []string{"never count"},
		},
		{
			name: "fast-forward",
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				work := a.work()
				a.gitBy(atkRita, "", work, "merge", "-q", "--ff-only", "origin/"+op.Proposal.Branch)
				a.git(work, "push", "-q", "origin", "main")
				a.reconcile()
				return op.RunID
			},
			reasons: []string{"fast-forward"},
		},
		{
			// Sam pushes to the proposal; the reconciler decides on the new
			// head; rita signs a merge of the head decided before.
			name: "signed merge of an old head",
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				a.pushTo(atkSam, op.Proposal.Branch, "Note the pin", func(work string) {
					atkAppend(a.t, work, "deploy/staging/payments-api.yaml", "# pinned")
				})
				a.reconcile()
				a.merge(atkRita, "rita", op.Proposal.Branch, op.Proposal.Head)
				a.reconcile()
				return op.RunID
			},
			reasons: []string{"head", "decided"},
			present: []string{atkProposalUpdated},
		},
		{
			name:    "human commit adding a production path, merged by a non-member",
			spec:    atkStager,
			attack:  humanCommitMerged("deploy/prod/backdoor.yaml", "image: evil.example/backdoor:latest"),
			reasons: needsSRE,
			present: []string{atkProposalUpdated},
		},
		{
			name:    "human commit adding a protected path, merged by a non-member",
			spec:    atkStager,
			attack:  humanCommitMerged("policies/zz-allow.hcl", "policy \"allow-all\" {\n  applies_to  = [\"*\"]\n  enforcement = \"advisory\"\n}"),
			reasons: []string{"denied"},
			present: []string{atkProposalUpdated},
		},
		{
			// Rita squashes the proposal with an extra production file and
			// the proposal's message, trailers and all, and signs it.
			name: "signed squash with a copied Agent-Run trailer and different content",
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				work := a.work()
				a.git(work, "merge", "-q", "--squash", "origin/"+op.Proposal.Branch)
				atkAppend(a.t, work, "deploy/prod/backdoor.yaml", "image: evil.example/backdoor:latest")
				a.git(work, "add", "-A")
				msg := a.git(work, "log", "-1", "--format=%B", "origin/"+op.Proposal.Branch)
				if !strings.Contains(msg, "Agent-Run: "+op.RunID) {
					a.t.Fatalf("proposal message has no Agent-Run trailer:\n%s", msg)
				}
				a.gitBy(atkRita, "rita", work, "commit", "-q", "-S", "-m", msg)
				a.git(work, "push", "-q", "origin", "main")
				a.reconcile()
				return op.RunID
			},
			reasons: []string{"differ", "decided change"},
		},
		{
			// Mallory reads the run id from plan and pushes the branch first.
			name: "branch squatting on a run's name before the first push",
			attack: func(a *atkEnv) string {
				plan, err := a.r.Plan(context.Background())
				if err != nil {
					a.t.Fatal(err)
				}
				var runID string
				for _, ap := range plan.Agents {
					if ap.Agent == "image-pinner" {
						runID = ap.RunID
					}
				}
				if runID == "" {
					a.t.Fatalf("plan = %+v", plan)
				}
				branch := reconcile.ProposalBranch("image-pinner", runID)
				work := a.work()
				a.git(work, "checkout", "-q", "-b", branch)
				atkAppend(a.t, work, "deploy/prod/backdoor.yaml", "image: evil.example/backdoor:latest")
				a.git(work, "add", "-A")
				a.gitBy(atkMallory, "", work, "commit", "-q", "-m", "Pin images")
				a.git(work, "push", "-q", "origin", branch)
				a.reconcile()
				return runID
			},
			reasons: []string{"branch squatting"},
			absent:  []string{ledger.ProposalOpened},
		},
		{
			// Sam signs an approval tag on the proposal head; Dev pushes to
			// the branch and the reconciler decides on the new head; Sam
			// merges it unsigned, counting on his tag.
			name: "signed tag on an old head",
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				a.approveTag(atkSam, "sam", op.RunID, "sam", op.Proposal.Head)
				a.pushTo(atkDev, op.Proposal.Branch, "Note the pin", func(work string) {
					atkAppend(a.t, work, "deploy/staging/payments-api.yaml", "# pinned")
				})
				a.reconcile()
				a.merge(atkSam, "", op.Proposal.Branch, "origin/"+op.Proposal.Branch)
				a.reconcile()
				return op.RunID
			},
			reasons: needsSRE,
			present: []string{atkProposalUpdated},
		},
	}
}

func atkAllowed() []atkCase {
	return []atkCase{
		{
			name: "merge signed by an allowed member",
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				a.merge(atkRita, "rita", op.Proposal.Branch, "origin/"+op.Proposal.Branch)
				a.reconcile()
				return op.RunID
			},
			approvers: []string{"rita"},
			present:   []string{ledger.ProposalMerged},
		},
		{
			name: "two signed tags and a signed merge for min = 3",
			min:  3,
			attack: func(a *atkEnv) string {
				op := a.proposal("image-pinner")
				if !strings.Contains(op.Summary, "3 of sre") {
					a.t.Fatalf("proposal = %q, want it to need 3 of sre", op.Summary)
				}
				a.approveTag(atkSam, "sam", op.RunID, "sam", op.Proposal.Head)
				a.approveTag(atkTom, "tom", op.RunID, "tom", op.Proposal.Head)
				a.merge(atkRita, "rita", op.Proposal.Branch, "origin/"+op.Proposal.Branch)
				a.reconcile()
				return op.RunID
			},
			approvers: []string{"rita", "sam", "tom"},
			present:   []string{ledger.ProposalMerged},
		},
	}
}

// TestApprovalAttacks runs every bypass of issue 9: each ends with no
// approval that counts for the decision and a policy.violation saying why.
func TestApprovalAttacks(t *testing.T) { atkRun(t, atkAttacks()) }

// TestApprovalsThatCount runs the approvals of issue 9 that must pass: one
// proposal.approved per approver and no policy.violation.
func TestApprovalsThatCount(t *testing.T) { atkRun(t, atkAllowed()) }

func atkRun(t *testing.T, cases []atkCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, transport := range []string{"local", "http"} {
				t.Run(transport, func(t *testing.T) {
					a := atkNewEnv(t, transport == "http", tc.min, tc.spec)
					runID := tc.attack(a)
					// A restarted reconciler sees the same and adds nothing
					// that would change the outcome.
					a.pass(a.reconciler(nil))
					a.check(tc, runID)
					a.verify()
				})
			}
		})
	}
}

// check asserts the run's entries end as tc says.
func (a *atkEnv) check(tc atkCase, runID string) {
	t := a.t
	t.Helper()
	var run []ledger.Entry
	for _, en := range a.entries() {
		if en.RunID == runID {
			run = append(run, en)
		}
	}
	var trail []string
	for _, en := range run {
		trail = append(trail, en.Type+": "+en.Summary)
	}
	log := strings.Join(trail, "\n  ")
	t.Logf("run %s:\n  %s", runID, log)

	// The decision in force: the last one made on the run's head.
	var reqs []policy.Requirement
	decided := false
	for _, en := range run {
		if (en.Type == ledger.PolicyDecision || en.Type == atkProposalUpdated) && len(en.Decision) > 0 {
			var d policy.Decision
			if err := json.Unmarshal(en.Decision, &d); err != nil {
				t.Fatalf("decision of entry %d: %v", en.Seq, err)
			}
			reqs, decided = d.Requirements, true
		}
	}
	var counted, violations []ledger.Entry
	for _, en := range run {
		switch {
		case en.Type == ledger.ProposalApproved && (!decided || atkCounts(t, en, reqs)):
			counted = append(counted, en)
		case en.Type == ledger.PolicyViolation:
			violations = append(violations, en)
		}
	}
	for _, typ := range tc.present {
		if !slices.ContainsFunc(run, func(en ledger.Entry) bool { return en.Type == typ }) {
			t.Errorf("run %s has no %s entry:\n  %s", runID, typ, log)
		}
	}
	for _, typ := range tc.absent {
		if slices.ContainsFunc(run, func(en ledger.Entry) bool { return en.Type == typ }) {
			t.Errorf("run %s has a %s entry:\n  %s", runID, typ, log)
		}
	}

	if len(tc.reasons) > 0 {
		for _, en := range counted {
			t.Errorf("approval recorded for the bypass: %s (reviewer %q)", en.Summary, en.Reviewer)
		}
		if len(violations) == 0 {
			t.Errorf("no policy.violation for run %s, want one mentioning %q:\n  %s", runID, tc.reasons, log)
			return
		}
		for _, v := range violations {
			for _, r := range tc.reasons {
				if strings.Contains(strings.ToLower(v.Error), strings.ToLower(r)) {
					return
				}
			}
		}
		var errs []string
		for _, v := range violations {
			errs = append(errs, v.Error)
		}
		t.Errorf("policy.violation errors %q mention none of %q", errs, tc.reasons)
		return
	}

	for _, v := range violations {
		t.Errorf("violation for an allowed approval: %s", v.Error)
	}
	if len(counted) != len(tc.approvers) {
		t.Errorf("%d approvals counted, want %d (%v):\n  %s", len(counted), len(tc.approvers), tc.approvers, log)
	}
	for _, m := range tc.approvers {
		if !slices.ContainsFunc(counted, func(en ledger.Entry) bool { return atkApprovedBy(t, en, m, "sre", a.keys[m]) }) {
			t.Errorf("no proposal.approved by %s (sre) signed with %s:\n  %s", m, a.keys[m].fpr, log)
		}
	}
}
