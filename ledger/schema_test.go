package ledger

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/agentgitops/reconciler/policy"
	"github.com/agentgitops/reconciler/signing"
)

// The predicate's published contract lives in docs/: a JSON schema, one
// example per event type and a page describing each. These tests keep the
// three in step with the Go types: the examples are built here from real
// Events (go test ./ledger/ -run 'Schema|Docs' -update rewrites them), each
// must satisfy both the JSON schema and Event.Validate, and an example that
// lacks a field its type requires must fail both.

var updateGolden = flag.Bool("update", false, "rewrite docs/examples/ledger/*.json and the examples in docs/ledger-events.md from the events in schema_test.go")

const (
	schemaPath  = "../docs/ledger-predicate.schema.json"
	examplesDir = "../docs/examples/ledger"
	eventsDoc   = "../docs/ledger-events.md"
)

// exampleCommit returns a made-up git commit id, the same for a label.
func exampleCommit(label string) string {
	sum := sha1.Sum([]byte(label))
	return hex.EncodeToString(sum[:])
}

// exampleDigest returns a made-up sha256, the same for a label.
func exampleDigest(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

// Public keys of the examples (the private halves were thrown away).
const (
	exampleReconcilerKey = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECtPuepnZACL7dzvKQCQZlsq6nHMq
jVJ7ZLjc+u1euqYOkzXqKMSXOrhP7vUfw6dNxJnzQUf98P6Syl28oz6BYA==
-----END PUBLIC KEY-----
`
	exampleOpsKey = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECFIXEXDYN5nanEAWcnRfEJe48+AR
cwJTxaGu+1sLWGtW+/zZWoElodIYXkmocfRYDGe+G/WoE4KYRINnSh1gFw==
-----END PUBLIC KEY-----
`
)

func exampleKey(t testing.TB, pemText, source string) signing.PublicKey {
	t.Helper()
	k, err := signing.ParsePublicKeyPEM([]byte(pemText), source)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// schemaExamples returns one predicate per event type, in the order a
// ledger could hold them, each with the subject its entry's statement
// names. The summaries follow the formats reconcile writes.
func schemaExamples(t testing.TB) []Predicate {
	t.Helper()
	const (
		bumper = "dependency-bumper"
		writer = "docs-writer"
		run    = "7c4a1f0e2b9d" // the dependency bumper's run that is proposed and merged
		older  = "1d2e3f4a5b6c" // its earlier run, superseded
		other  = "5a6b7c8d9e0f" // another run, whose proposal is rejected
		failed = "9e8d7c6b5a4f" // the docs writer's run that fails
	)
	var (
		badSpec   = exampleCommit("spec with an error")
		spec      = exampleCommit("spec")
		head      = exampleCommit("proposal head")
		olderHead = exampleCommit("older proposal head")
		otherHead = exampleCommit("rejected proposal head")
		merge     = exampleCommit("merge commit")
		fixedHead = exampleCommit("proposal head after a reviewer's fix")
		keysMerge = exampleCommit("merge of a new key")
		branch    = "agents/" + bumper + "/" + run
		reviewer  = "alice <alice@example.com>, signed by ssh key SHA256:u2b8IpX4oK3i2mD0TqkZ3sS1b8iVqk1kT2vM3n7Q9hY of alice (sre)"
		change    = exampleDigest("change")[:16]
		// overloaded is a model provider's answer that can pass on retry.
		overloaded = "run docs-writer: model call 2: provider openai.default: chat completion failed after 5 attempts: error, status code: 503, status: 503 Service Unavailable, message: the model is overloaded"
	)
	reconciler := exampleKey(t, exampleReconcilerKey, "reconciler")
	ops := exampleKey(t, exampleOpsKey, "main:.reconciler/keys/ops.pub")
	genesisKeys := KeySet(reconciler)
	changedKeys := KeySet(reconciler, ops)

	decision, err := json.Marshal(policy.Decision{
		Outcome: policy.RequireApproval,
		Summary: "require_approval deps/needs-sre (2 of sre); override deps/no-major-bumps",
		Rules: []policy.Rule{
			{Policy: "deps", Rule: "needs-sre", Kind: policy.KindApproval, Enforcement: "hard", Blocking: true,
				Message: "dependency changes need two SREs", Reviewers: []string{"sre"}, Min: 2, Pos: "policies/deps.hcl:12:3"},
			{Policy: "deps", Rule: "no-major-bumps", Kind: policy.KindDeny, Enforcement: "soft", Blocking: true,
				Message: "major version bumps need an override", Pos: "policies/deps.hcl:20:3"},
		},
		Requirements: []policy.Requirement{{Groups: []string{"sre"}, Min: 2}},
		Overrides:    []string{"deps/no-major-bumps"},
		PolicyDigest: exampleDigest("policies"),
	})
	if err != nil {
		t.Fatal(err)
	}
	proposal := &Proposal{Branch: branch, Head: head, ChangeID: change}
	fixedChange := exampleDigest("change with the reviewer's fix")[:16]
	merged := &Proposal{Branch: branch, Head: fixedHead, ChangeID: fixedChange, MergeCommit: merge}
	runOf := func(ev Event) Event {
		ev.Agent, ev.RunID, ev.Trigger = bumper, run, "spec"
		ev.SpecCommit, ev.SpecDigest = spec, exampleDigest("agent "+bumper)
		return ev
	}
	events := []Event{
		{
			Type: Genesis, Subject: spec, SubjectName: "main", Keys: genesisKeys,
			Summary: fmt.Sprintf("ledger.genesis: %d trusted key(s): %s", len(genesisKeys), keyIDs(genesisKeys)),
		},
		{
			Type: SpecInvalid, Subject: badSpec, SubjectName: "main", SpecCommit: badSpec,
			Diagnostics: []string{
				`agents/dependency-bumper.hcl:7:3: Unsupported argument; An argument named "modle" is not expected here. Did you mean "model"?`,
			},
			Summary: fmt.Sprintf("spec.invalid %s: 1 error(s), first: agents/dependency-bumper.hcl:7:3: Unsupported argument", badSpec[:12]),
		},
		{
			Type: SpecLoaded, Subject: spec, SubjectName: "main", SpecCommit: spec, SpecDigest: exampleDigest("spec files"),
			Summary: fmt.Sprintf("spec.loaded %s: 2 agent(s), 1 polic(ies)", spec[:12]),
		},
		runOf(Event{
			Type: RunStarted, Subject: spec, SubjectName: "main", ReservedUSD: 0.6,
			Summary: fmt.Sprintf("run.started %s %s (trigger spec)", bumper, run),
		}),
		runOf(Event{
			Type: RunFinished, Subject: spec, SubjectName: "main",
			Model: "gpt-4.1-mini", Usage: &Usage{InputTokens: 18250, OutputTokens: 1320}, CostUSD: 0.0094,
			WorkUnit: &WorkUnit{Kind: "dependency-bump", HumanMinutes: 20},
			Outcome:  OutcomeChanged,
			Change:   &Change{ID: change, Files: []string{"go.mod", "go.sum"}, Added: 4, Removed: 4},
			// The transcript is stored beside the entry; the predicate
			// holds its digest.
			TranscriptDigest: exampleDigest("transcript"),
			Summary:          fmt.Sprintf("run.finished %s %s: 2 file(s) changed", bumper, run),
		}),
		runOf(Event{
			Type: PolicyDecision, Subject: spec, SubjectName: "main", Decision: decision,
			Summary: fmt.Sprintf("policy.decision %s %s: require_approval deps/needs-sre (2 of sre); override deps/no-major-bumps", bumper, run),
		}),
		runOf(Event{
			Type: ProposalOpened, Subject: head, SubjectName: branch, Proposal: proposal,
			Summary: fmt.Sprintf("proposal.opened %s %s -> %s (deps/needs-sre (2 of sre); override deps/no-major-bumps)", bumper, run, branch),
		}),
		{
			Type: ProposalSuperseded, Agent: bumper, RunID: older, SpecCommit: spec,
			Subject: olderHead, SubjectName: "agents/" + bumper + "/" + older,
			Proposal: &Proposal{Branch: "agents/" + bumper + "/" + older, Head: olderHead, ChangeID: exampleDigest("older change")[:16]},
			Summary:  fmt.Sprintf("proposal.superseded %s %s by %s", bumper, older, run),
		},
		runOf(Event{
			Type: ProposalUpdated, Subject: fixedHead, SubjectName: branch, Decision: decision,
			Proposal: &Proposal{Branch: branch, Head: fixedHead, ChangeID: fixedChange, PreviousHead: head},
			Change:   &Change{ID: fixedChange, Files: []string{"go.mod", "go.sum"}, Added: 5, Removed: 4},
			Summary: fmt.Sprintf("proposal.updated %s %s: %s moved to %s; require_approval deps/needs-sre (2 of sre); override deps/no-major-bumps",
				bumper, run, branch, fixedHead[:12]),
		}),
		runOf(Event{
			Type: ProposalApproved, Subject: merge, SubjectName: "main", Reviewer: reviewer, Proposal: merged,
			Approval: &Approval{Method: ApprovalSSH, Via: "merge", Member: "alice", Email: "alice@example.com",
				Fingerprint: "SHA256:u2b8IpX4oK3i2mD0TqkZ3sS1b8iVqk1kT2vM3n7Q9hY", Head: fixedHead,
				Satisfies: []Satisfied{{Group: "sre", Rules: []string{"deps/needs-sre"}}}},
			Overrides: []string{"deps/no-major-bumps"},
			Summary:   fmt.Sprintf("proposal.approved %s %s by %s", bumper, run, reviewer),
		}),
		runOf(Event{
			Type: ProposalMerged, Subject: merge, SubjectName: "main", Proposal: merged,
			WorkUnit: &WorkUnit{Kind: "dependency-bump", HumanMinutes: 20},
			Summary:  fmt.Sprintf("proposal.merged %s %s into main at %s", bumper, run, merge[:12]),
		}),
		runOf(Event{
			Type: PolicyViolation, Subject: merge, SubjectName: "main", Proposal: merged, Decision: decision,
			Error:   "needs 2 of sre, has 1",
			Summary: fmt.Sprintf("policy.violation %s %s: merged at %s by alice@example.com; needs 2 of sre, has 1", bumper, run, merge[:12]),
		}),
		{
			Type: ProposalRejected, Agent: bumper, RunID: other, SpecCommit: spec, Trigger: "schedule:2025-03-03T06:00:00Z",
			SpecDigest: exampleDigest("agent " + bumper),
			Subject:    otherHead, SubjectName: "agents/" + bumper + "/" + other,
			Proposal: &Proposal{Branch: "agents/" + bumper + "/" + other, Head: otherHead, ChangeID: exampleDigest("rejected change")[:16]},
			// What people wrote on its pull request, as the forge
			// reported it (a Gitea or GitHub forge).
			Comments: &Comments{Items: []Comment{
				{Kind: CommentReview, State: ReviewRequestChanges, ForgeLogin: "rita", Time: time.Date(2025, 3, 3, 10, 15, 4, 0, time.UTC),
					Body: "golang.org/x/net v0.36 breaks our HTTP/2 proxy tests; stay on v0.35 until the upstream fix lands."},
				{Kind: CommentConversation, ForgeLogin: "sam", Time: time.Date(2025, 3, 3, 10, 20, 40, 0, time.UTC),
					Body: "Agreed, closing. Token for the canary was [REDACTED], rotated."},
			}},
			Summary: fmt.Sprintf("proposal.rejected %s %s: agents/%s/%s deleted without merge; never proposed again", bumper, other, bumper, other),
		},
		{
			Type: RunFailed, Agent: writer, RunID: failed, Trigger: "spec", SpecCommit: spec, SpecDigest: exampleDigest("agent " + writer),
			Subject: spec, SubjectName: "main",
			Model: "gpt-4.1-mini", Usage: &Usage{InputTokens: 4100, OutputTokens: 0}, CostUSD: 0.0016,
			Error:            overloaded,
			TranscriptDigest: exampleDigest("failed transcript"),
			Attempt:          1, RetryAfter: time.Date(2025, 3, 3, 10, 31, 30, 0, time.UTC),
			Summary: fmt.Sprintf("run.failed %s %s (attempt 1, retry after 2025-03-03T10:31:30Z): %s", writer, failed, overloaded),
		},
		{
			Type: RunRetried, Agent: writer, RunID: failed, Trigger: "spec", SpecCommit: spec, SpecDigest: exampleDigest("agent " + writer),
			Subject: spec, SubjectName: "main", Attempt: 2, ReservedUSD: 0.2,
			Claimant: "reconciler-1.example.com/1733/1a2b", LeaseUntil: time.Date(2025, 3, 3, 10, 40, 0, 0, time.UTC),
			Summary: fmt.Sprintf("run.retried %s %s: attempt 2 of 3 (trigger spec)", writer, failed),
		},
		{
			Type: RunAbandoned, Agent: writer, RunID: failed, Trigger: "spec", SpecCommit: spec, SpecDigest: exampleDigest("agent " + writer),
			Subject: spec, SubjectName: "main",
			Claimant: "reconciler-2.example.com/4242/9f3c", LeaseUntil: time.Date(2025, 3, 3, 10, 57, 0, 0, time.UTC),
			Error:   "the claim of reconciler-1.example.com/1733/1a2b expired at 2025-03-03T10:40:00Z without an outcome",
			Summary: fmt.Sprintf("run.abandoned %s %s: the claim of reconciler-1.example.com/1733/1a2b expired at 2025-03-03T10:40:00Z; taken over", writer, failed),
		},
		{
			Type: RunHeld, Agent: bumper, Trigger: "schedule:2025-03-07T06:00:00Z", SpecCommit: spec, SpecDigest: exampleDigest("agent " + bumper),
			Subject: spec, SubjectName: "main",
			Hold: &Hold{Kind: policy.HoldFreeze, Policy: "deps", Rule: "release-week", Until: time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC),
				Reason: "freeze deps/release-week is in force until 2025-03-10T00:00:00Z (policies/deps.hcl:30:3)"},
			Summary: fmt.Sprintf("run.held %s: freeze until 2025-03-10T00:00:00Z", bumper),
		},
		{
			Type: BudgetExceeded, Agent: writer, Trigger: "schedule:2025-03-07T06:00:00Z", SpecCommit: spec, SpecDigest: exampleDigest("agent " + writer),
			Subject: spec, SubjectName: "main",
			Hold: &Hold{Kind: policy.HoldBudgetDay, Policy: "spend", Rule: "max_cost_usd_per_day", Until: time.Date(2025, 3, 8, 0, 0, 0, 0, time.UTC),
				Reason: "docs-writer spent $2.00 today with this run's reservation; policy spend allows $2.00 (policies/spend.hcl:4:3)"},
			Summary: fmt.Sprintf("budget.exceeded %s: cost_per_day until 2025-03-08T00:00:00Z", writer),
		},
		func() Event {
			al := &Alert{Receiver: "reconciler", Status: "resolved", GroupKey: `{}:{alertname="PaymentsHighLatency"}`,
				GroupLabels:  map[string]string{"alertname": "PaymentsHighLatency"},
				CommonLabels: map[string]string{"alertname": "PaymentsHighLatency", "service": "payments-api", "severity": "warning"},
				ExternalURL:  "http://alertmanager:9093",
				Alerts: []AlertItem{{Status: "resolved", Fingerprint: "5f3a0c2b9d1e4a77",
					Labels:   map[string]string{"alertname": "PaymentsHighLatency", "service": "payments-api", "severity": "warning"},
					StartsAt: time.Date(2025, 3, 7, 9, 12, 0, 0, time.UTC), EndsAt: time.Date(2025, 3, 7, 9, 40, 0, 0, time.UTC)}}}
			return Event{
				Type: AlertResolved, Agent: "incident-responder", Trigger: al.Trigger(), Alert: al, SpecCommit: spec,
				Subject: spec, SubjectName: "main",
				Summary: "alert.resolved incident-responder: PaymentsHighLatency resolved (1 alert), not run",
			}
		}(),
		{
			Type: KeysChanged, Subject: keysMerge, SubjectName: "main", SpecCommit: keysMerge, Keys: changedKeys, Reviewer: reviewer,
			Summary: fmt.Sprintf("keys.changed at %s merged by %s: 2 trusted key(s): reconciler, ops.pub", keysMerge[:12], reviewer),
		},
	}
	out := make([]Predicate, len(events))
	prev := ""
	at := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
	for i, ev := range events {
		seq := uint64(i + 1)
		out[i] = Predicate{Seq: seq, Prev: prev, Time: at.Add(time.Duration(i)*7*time.Minute + 125*time.Millisecond), Event: ev}
		prev = exampleDigest(fmt.Sprintf("bundle of entry %d", seq))
	}
	return out
}

// encodeExample is how an example predicate is written: indented JSON, with
// "<" and ">" as themselves.
func encodeExample(t testing.TB, p Predicate) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// loadSchema compiles docs/ledger-predicate.schema.json (checking it against
// the draft 2020-12 meta-schema) with format assertions on.
func loadSchema(t testing.TB) (*jsonschema.Schema, map[string]any) {
	t.Helper()
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(schemaPath, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemaPath)
	if err != nil {
		t.Fatalf("compile %s: %v", schemaPath, err)
	}
	return sch, doc.(map[string]any)
}

func instance(t testing.TB, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// decodeExample decodes an example predicate as a reader does, refusing
// fields the Go types do not have, and gives it back its subject.
func decodeExample(b []byte, subject string) (Predicate, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Predicate
	if err := dec.Decode(&p); err != nil {
		return Predicate{}, err
	}
	p.Event.Subject = subject
	return p, nil
}

func examplePath(typ string) string { return filepath.Join(examplesDir, typ+".json") }

func TestSchemaExamples(t *testing.T) {
	sch, _ := loadSchema(t)
	examples := schemaExamples(t)
	byType := map[string]Predicate{}
	for _, p := range examples {
		if _, dup := byType[p.Type]; dup {
			t.Errorf("two examples of %s", p.Type)
		}
		byType[p.Type] = p
	}
	types := EventTypes()
	slices.Sort(types)
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			p, ok := byType[typ]
			if !ok {
				t.Fatalf("no example of %s: add one to schemaExamples and run go test ./ledger/ -run Schema -update", typ)
			}
			want := encodeExample(t, p)
			path := examplePath(typ)
			if *updateGolden {
				if err := os.MkdirAll(examplesDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v: run go test ./ledger/ -run Schema -update", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the example built from the Go event; run go test ./ledger/ -run Schema -update\ngot:\n%s\nwant:\n%s", path, got, want)
			}
			if err := sch.Validate(instance(t, got)); err != nil {
				t.Errorf("%s does not satisfy the JSON schema: %#v", path, err)
			}
			back, err := decodeExample(got, p.Subject)
			if err != nil {
				t.Fatalf("%s does not decode into ledger.Predicate: %v", path, err)
			}
			if err := back.Event.Validate(); err != nil {
				t.Errorf("%s: Validate: %v", path, err)
			}
			if again := encodeExample(t, back); !bytes.Equal(again, got) {
				t.Errorf("%s does not survive a decode and encode:\n%s", path, again)
			}
		})
	}
	// No example of a type that no longer exists.
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if typ := strings.TrimSuffix(filepath.Base(f), ".json"); !slices.Contains(types, typ) {
			t.Errorf("%s is the example of %q, which is not an event type: remove it", f, typ)
		}
	}
}

// requiredBySchemaDoc returns, per event type, the fields the JSON schema's
// if-then for that type requires, with a nested requirement on the
// proposal named as event.go names it ("proposal.merge_commit").
func requiredBySchemaDoc(t *testing.T, doc map[string]any) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	allOf, _ := doc["allOf"].([]any)
	for _, c := range allOf {
		cond, _ := c.(map[string]any)
		ifs, _ := cond["if"].(map[string]any)
		props, _ := ifs["properties"].(map[string]any)
		event, _ := props["event"].(map[string]any)
		typ, ok := event["const"].(string)
		if !ok {
			continue
		}
		then, _ := cond["then"].(map[string]any)
		var fields []string
		req, _ := then["required"].([]any)
		for _, r := range req {
			fields = append(fields, r.(string))
		}
		thenProps, _ := then["properties"].(map[string]any)
		for name, sub := range thenProps {
			subReq, _ := sub.(map[string]any)["required"].([]any)
			for _, r := range subReq {
				fields = append(fields, name+"."+r.(string))
			}
		}
		out[typ] = append(out[typ], fields...)
	}
	for typ := range out {
		slices.Sort(out[typ])
	}
	return out
}

// requiredByGo returns the names of the fields event.go requires of typ.
func requiredByGo(typ string) []string {
	var names []string
	for _, f := range schema[typ] {
		names = append(names, f.name)
	}
	slices.Sort(names)
	return names
}

// TestSchemaRequiresWhatValidateRequires checks that the JSON schema and
// event.go name the same required fields for every type, and that an
// example without one of them fails both.
func TestSchemaRequiresWhatValidateRequires(t *testing.T) {
	sch, doc := loadSchema(t)
	inDoc := requiredBySchemaDoc(t, doc)
	enum := doc["properties"].(map[string]any)["event"].(map[string]any)["enum"].([]any)
	var documented []string
	for _, e := range enum {
		documented = append(documented, e.(string))
	}
	slices.Sort(documented)
	types := EventTypes()
	slices.Sort(types)
	if !slices.Equal(documented, types) {
		t.Errorf("the schema's event enum is %v, want the event types %v", documented, types)
	}
	for typ := range inDoc {
		if !slices.Contains(types, typ) {
			t.Errorf("the schema has requirements for %q, which is not an event type", typ)
		}
	}
	for _, p := range schemaExamples(t) {
		t.Run(p.Type, func(t *testing.T) {
			if got, want := inDoc[p.Type], requiredByGo(p.Type); !slices.Equal(got, want) {
				t.Errorf("the JSON schema requires %v of %s; event.go requires %v", got, p.Type, want)
			}
			drops := requiredByGo(p.Type)
			if p.Outcome == OutcomeChanged {
				drops = append(drops, "change") // the outcome "changed" needs its change
			}
			for _, field := range drops {
				t.Run("without "+field, func(t *testing.T) {
					b := withoutField(t, encodeExample(t, p), field)
					if err := sch.Validate(instance(t, b)); err == nil {
						t.Errorf("the JSON schema accepts %s without %s", p.Type, field)
					}
					back, err := decodeExample(b, p.Subject)
					if err != nil {
						t.Fatal(err)
					}
					if err := back.Event.Validate(); err == nil {
						t.Errorf("Validate accepts %s without %s", p.Type, field)
					}
				})
			}
		})
	}
}

// withoutField returns the JSON object b without the field at a dotted
// path.
func withoutField(t testing.TB, b []byte, path string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(path, ".")
	obj := m
	for _, p := range parts[:len(parts)-1] {
		next, ok := obj[p].(map[string]any)
		if !ok {
			t.Fatalf("example has no object %q on the way to %s", p, path)
		}
		obj = next
	}
	last := parts[len(parts)-1]
	if _, ok := obj[last]; !ok {
		t.Fatalf("example has no %s to drop", path)
	}
	delete(obj, last)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSchemaExecRun: the run.finished and run.failed of an exec agent carry
// the sandbox's mechanisms (the examples are model runs, which have none),
// and the schema takes them as the Go types write them.
func TestSchemaExecRun(t *testing.T) {
	sch, _ := loadSchema(t)
	mechs := []string{"userns", "pidns", "netns", "ipcns", "mountns", "landlock-abi-7", "rlimits"}
	for _, p := range schemaExamples(t) {
		if p.Type != RunFinished && p.Type != RunFailed {
			continue
		}
		t.Run(p.Type, func(t *testing.T) {
			p.Model, p.Usage, p.CostUSD, p.TranscriptDigest, p.RetryAfter = "", nil, 0, "", time.Time{}
			p.Sandbox = mechs
			b := encodeExample(t, p)
			if !bytes.Contains(b, []byte(`"sandbox": [`)) {
				t.Fatalf("no sandbox in %s", b)
			}
			if err := sch.Validate(instance(t, b)); err != nil {
				t.Errorf("the schema refuses %s: %v", b, err)
			}
			back, err := decodeExample(b, p.Subject)
			if err != nil {
				t.Fatal(err)
			}
			if err := back.Event.Validate(); err != nil {
				t.Error(err)
			}
			ev, err := back.Event.Typed()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			switch ev := ev.(type) {
			case RunFinishedEvent:
				got = ev.Sandbox
			case RunFailedEvent:
				got = ev.Sandbox
			}
			if strings.Join(got, " ") != strings.Join(mechs, " ") {
				t.Errorf("typed event's sandbox = %v", got)
			}
			var m map[string]any
			json.Unmarshal(b, &m)
			m["sandbox"] = []any{"userns", "userns"}
			dup, _ := json.Marshal(m)
			if sch.Validate(instance(t, dup)) == nil {
				t.Errorf("the schema accepts a mechanism twice: %s", dup)
			}
		})
	}
}

// TestSchemaRejectsWhatValidateRejects: values that are present but wrong
// fail both checks too.
func TestSchemaRejectsWhatValidateRejects(t *testing.T) {
	sch, _ := loadSchema(t)
	byType := map[string]Predicate{}
	for _, p := range schemaExamples(t) {
		byType[p.Type] = p
	}
	for _, tc := range []struct {
		name, typ string
		edit      func(m map[string]any)
	}{
		{"unknown event type", RunStarted, func(m map[string]any) { m["event"] = "run.begun" }},
		{"empty summary", RunStarted, func(m map[string]any) { m["summary"] = "" }},
		{"two-line summary", RunStarted, func(m map[string]any) { m["summary"] = "run.started\nforged line" }},
		{"run id that cannot name a file", RunStarted, func(m map[string]any) { m["run_id"] = "../../etc" }},
		{"short spec commit", SpecLoaded, func(m map[string]any) { m["spec_commit"] = "3f2a9c0d" }},
		{"empty agent", RunFailed, func(m map[string]any) { m["agent"] = "" }},
		{"empty error", PolicyViolation, func(m map[string]any) { m["error"] = "" }},
		{"hold without a reason", RunHeld, func(m map[string]any) { delete(m["hold"].(map[string]any), "reason") }},
		{"hold with an empty kind", BudgetExceeded, func(m map[string]any) { m["hold"].(map[string]any)["kind"] = "" }},
		{"proposal head that is not a commit", ProposalOpened, func(m map[string]any) { m["proposal"].(map[string]any)["head"] = "main" }},
		{"proposal without a branch", ProposalRejected, func(m map[string]any) { delete(m["proposal"].(map[string]any), "branch") }},
		{"merge commit that is not a commit", ProposalMerged, func(m map[string]any) { m["proposal"].(map[string]any)["merge_commit"] = "HEAD" }},
		{"unknown outcome", RunFinished, func(m map[string]any) { m["outcome"] = "merged" }},
		{"change without an id", RunFinished, func(m map[string]any) { m["change"].(map[string]any)["id"] = "" }},
		{"no keys", KeysChanged, func(m map[string]any) { m["keys"] = []any{} }},
		{"key without a pem", Genesis, func(m map[string]any) { delete(m["keys"].([]any)[0].(map[string]any), "pem") }},
		{"no diagnostics", SpecInvalid, func(m map[string]any) { m["diagnostics"] = []any{} }},
		{"empty reviewer", ProposalApproved, func(m map[string]any) { m["reviewer"] = "" }},
		{"retry of the first attempt", RunRetried, func(m map[string]any) { m["attempt"] = 1 }},
		{"reverts that is not a run id", RunStarted, func(m map[string]any) { m["reverts"] = "../7c4a1f0e2b9d" }},
		{"comments on another event", ProposalOpened, func(m map[string]any) {
			m["comments"] = map[string]any{"items": []any{map[string]any{"kind": "comment", "forge_login": "rita", "body": "hi"}}}
		}},
		{"comment of an unknown kind", ProposalRejected, func(m map[string]any) {
			m["comments"].(map[string]any)["items"].([]any)[1].(map[string]any)["kind"] = "note"
		}},
		{"review without a state", ProposalRejected, func(m map[string]any) {
			delete(m["comments"].(map[string]any)["items"].([]any)[0].(map[string]any), "state")
		}},
		{"review of an unknown state", ProposalRejected, func(m map[string]any) {
			m["comments"].(map[string]any)["items"].([]any)[0].(map[string]any)["state"] = "LGTM"
		}},
		{"conversation comment with a state", ProposalRejected, func(m map[string]any) {
			m["comments"].(map[string]any)["items"].([]any)[1].(map[string]any)["state"] = "APPROVED"
		}},
		{"comment without an author", ProposalRejected, func(m map[string]any) {
			m["comments"].(map[string]any)["items"].([]any)[1].(map[string]any)["forge_login"] = ""
		}},
		{"comment body over the bound", ProposalRejected, func(m map[string]any) {
			m["comments"].(map[string]any)["items"].([]any)[1].(map[string]any)["body"] = strings.Repeat("x", MaxCommentBytes+1)
		}},
		{"more comments than the bound", ProposalRejected, func(m map[string]any) {
			c := m["comments"].(map[string]any)
			items := c["items"].([]any)
			for len(items) <= MaxComments {
				items = append(items, items[1])
			}
			c["items"] = items
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := byType[tc.typ]
			if !ok {
				t.Fatalf("no example of %s", tc.typ)
			}
			var m map[string]any
			if err := json.Unmarshal(encodeExample(t, p), &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(instance(t, b)); err == nil {
				t.Errorf("the JSON schema accepts %s", b)
			}
			back, err := decodeExample(b, p.Subject)
			if err != nil {
				t.Fatal(err)
			}
			if err := back.Event.Validate(); err == nil {
				t.Errorf("Validate accepts %s", b)
			}
		})
	}
}

// TestSchemaDocumentsEveryField checks that every object of the schema has
// exactly the properties the Go type it describes encodes, and requires
// exactly the ones Go always writes (no omitempty or omitzero).
func TestSchemaDocumentsEveryField(t *testing.T) {
	_, doc := loadSchema(t)
	defs := doc["$defs"].(map[string]any)
	resolve := func(s map[string]any) map[string]any {
		for {
			ref, ok := s["$ref"].(string)
			if !ok {
				return s
			}
			s = defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
		}
	}
	prop := func(s map[string]any, names ...string) map[string]any {
		for _, n := range names {
			s = resolve(s)
			if n == "[]" {
				s = s["items"].(map[string]any)
				continue
			}
			p, ok := s["properties"].(map[string]any)[n].(map[string]any)
			if !ok {
				t.Fatalf("the schema has no property %q", n)
			}
			s = p
		}
		return resolve(s)
	}
	for _, tc := range []struct {
		path []string
		typ  reflect.Type
	}{
		{nil, reflect.TypeFor[Predicate]()},
		{[]string{"usage"}, reflect.TypeFor[Usage]()},
		{[]string{"hold"}, reflect.TypeFor[Hold]()},
		{[]string{"work_unit"}, reflect.TypeFor[WorkUnit]()},
		{[]string{"change"}, reflect.TypeFor[Change]()},
		{[]string{"evals"}, reflect.TypeFor[Evals]()},
		{[]string{"proposal"}, reflect.TypeFor[Proposal]()},
		{[]string{"comments"}, reflect.TypeFor[Comments]()},
		{[]string{"comments", "items", "[]"}, reflect.TypeFor[Comment]()},
		{[]string{"keys", "[]"}, reflect.TypeFor[Key]()},
		{[]string{"decision"}, reflect.TypeFor[policy.Reviewed]()},
		{[]string{"decision", "reviews", "[]"}, reflect.TypeFor[policy.Review]()},
		{[]string{"decision", "rules", "[]"}, reflect.TypeFor[policy.Rule]()},
		{[]string{"decision", "requirements", "[]"}, reflect.TypeFor[policy.Requirement]()},
	} {
		name := strings.Join(tc.path, ".")
		if name == "" {
			name = "predicate"
		}
		t.Run(name, func(t *testing.T) {
			s := prop(doc, tc.path...)
			var props []string
			for k := range s["properties"].(map[string]any) {
				props = append(props, k)
			}
			var required []string
			for _, r := range s["required"].([]any) {
				required = append(required, r.(string))
			}
			fields, always := jsonFields(tc.typ)
			slices.Sort(props)
			slices.Sort(required)
			if !slices.Equal(props, fields) {
				t.Errorf("the schema's %s has properties %v; %s encodes %v", name, props, tc.typ, fields)
			}
			if !slices.Equal(required, always) {
				t.Errorf("the schema's %s requires %v; %s always encodes %v", name, required, tc.typ, always)
			}
			if s["additionalProperties"] != false {
				t.Errorf("the schema's %s allows properties %s does not have", name, tc.typ)
			}
		})
	}
}

// jsonFields returns the JSON names encoding/json gives the fields of the
// struct type typ (embedded structs flattened), and those it writes
// whatever their value.
func jsonFields(typ reflect.Type) (all, always []string) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			a, b := jsonFields(f.Type)
			all, always = append(all, a...), append(always, b...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		all = append(all, name)
		if !slices.Contains(strings.Split(opts, ","), "omitempty") && !slices.Contains(strings.Split(opts, ","), "omitzero") {
			always = append(always, name)
		}
	}
	slices.Sort(all)
	slices.Sort(always)
	return all, always
}

// exampleBlock finds the JSON block after an example marker in
// docs/ledger-events.md.
func exampleBlock(typ string) *regexp.Regexp {
	return regexp.MustCompile("(?s)(<!-- example " + regexp.QuoteMeta(typ) + " -->\n```json\n)(.*?)(```\n)")
}

// TestDocsLedgerEvents checks that docs/ledger-events.md has a section for
// every event type whose example is the example file, verbatim; -update
// rewrites the blocks.
func TestDocsLedgerEvents(t *testing.T) {
	b, err := os.ReadFile(eventsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	examples := map[string]Predicate{}
	for _, p := range schemaExamples(t) {
		examples[p.Type] = p
	}
	for _, typ := range slices.Sorted(maps.Keys(examples)) {
		if !strings.Contains(doc, "\n## `"+typ+"`\n") {
			t.Errorf("%s has no section \"## `%s`\"", eventsDoc, typ)
		}
		re := exampleBlock(typ)
		m := re.FindStringSubmatch(doc)
		if m == nil {
			t.Errorf("%s has no example block for %s: add \"<!-- example %s -->\" and a json block after it", eventsDoc, typ, typ)
			continue
		}
		want := string(encodeExample(t, examples[typ]))
		if m[2] == want {
			continue
		}
		if *updateGolden {
			doc = re.ReplaceAllLiteralString(doc, m[1]+want+m[3])
			continue
		}
		t.Errorf("%s: the example of %s differs from %s; run go test ./ledger/ -run Docs -update", eventsDoc, typ, examplePath(typ))
	}
	if *updateGolden && doc != string(b) {
		if err := os.WriteFile(eventsDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
