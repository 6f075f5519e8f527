package ledger_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// The tests in this file check that a ledger written by this project can be
// verified the way anyone verifies Sigstore bundles, without this project's
// code: the entries are read from the evidence branch with the git CLI, the
// bundles verified with sigstore-go (and with cosign, when it is on PATH),
// the statements decoded with in-toto's Go binding, the predicates checked
// against the published JSON schema, and the hash chain with sha256.
// Only the writing uses the ledger package.

// The published formats, spelled out rather than taken from the ledger
// package, since they are what outside verifiers are told to expect.
const (
	stdPredicateType = "https://github.com/agentgitops/reconciler/ledger/v1"
	stdStatementType = "https://in-toto.io/Statement/v1"
	stdPayloadType   = "application/vnd.in-toto+json"
)

// stdLedger is a real ledger, in a bare repository, written by
// ledger.Ledger with a key made by signing.GenerateKey.
type stdLedger struct {
	bare string
	// pub is the signer's public key file, as `reconciler keygen` writes
	// it.
	pub string
	// want says what each entry, in order, must be about.
	want []stdWant
}

type stdWant struct {
	event       string
	subject     string // the git commit the statement must name
	subjectName string
}

func newStdLedger(t *testing.T) *stdLedger {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("desired state\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := gittest.NewBare(t, src)
	spec := gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main")
	// A proposal head: a real commit on top of the spec commit.
	tree := gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main^{tree}")
	head := gittest.Git(t, "", "--git-dir", bare, "commit-tree", tree, "-p", spec, "-m", "bump")
	branch := "agents/bumper/0123456789ab"

	keyPath := filepath.Join(t.TempDir(), "reconciler.key")
	signer, err := signing.GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gitstore.Open(ctx, bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(repo, ledger.Options{Signer: signer, Identity: object.Signature{Name: "Reconciler", Email: "reconciler@example.com"}})
	if _, err := l.Init(ctx, spec, "main", nil); err != nil {
		t.Fatal(err)
	}
	run := ledger.Event{Agent: "bumper", RunID: "0123456789ab", Trigger: "spec", SpecCommit: spec, SpecDigest: strings.Repeat("d", 64), Subject: spec, SubjectName: "main"}
	started := run
	started.Type, started.ReservedUSD, started.Summary = ledger.RunStarted, 0.5, "run.started bumper 0123456789ab (trigger spec)"
	finished := run
	finished.Type, finished.Outcome, finished.Summary = ledger.RunFinished, ledger.OutcomeChanged, "run.finished bumper 0123456789ab: 1 file(s) changed"
	finished.Change = &ledger.Change{ID: "0123456789abcdef", Files: []string{"go.mod"}, Added: 1, Removed: 1}
	finished.Model, finished.Usage, finished.CostUSD = "gpt-4.1-mini", &ledger.Usage{InputTokens: 1200, OutputTokens: 80}, 0.0007
	finished.Transcript = []byte(`{"messages":[]}`)
	decided := run
	decided.Type, decided.Summary = ledger.PolicyDecision, "policy.decision bumper 0123456789ab: require_approval default (1 reviewer)"
	decided.Decision = json.RawMessage(`{"outcome":"require_approval","summary":"require_approval default (1 reviewer)","rules":[],"policy_digest":"` + strings.Repeat("e", 64) + `"}`)
	opened := run
	opened.Type, opened.Subject, opened.SubjectName = ledger.ProposalOpened, head, branch
	opened.Proposal = &ledger.Proposal{Branch: branch, Head: head, ChangeID: "0123456789abcdef"}
	opened.Summary = "proposal.opened bumper 0123456789ab -> " + branch + " (default (1 reviewer))"
	if _, err := l.Append(ctx, started, finished, decided, opened); err != nil {
		t.Fatal(err)
	}
	return &stdLedger{
		bare: bare, pub: keyPath + ".pub",
		want: []stdWant{
			{ledger.Genesis, spec, "main"},
			{ledger.RunStarted, spec, "main"},
			{ledger.RunFinished, spec, "main"},
			{ledger.PolicyDecision, spec, "main"},
			{ledger.ProposalOpened, head, branch},
		},
	}
}

// gitOut runs git on the bare repository and returns its output byte for
// byte (gittest.Git trims it, which would change a bundle's digest).
func (l *stdLedger) gitOut(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", append([]string{"--git-dir", l.bare}, args...)...)
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// stdEntry is an entry as read with the git CLI.
type stdEntry struct {
	commit  string
	path    string
	message string
	bundle  []byte
}

// entries reads the evidence branch oldest first: each commit, the one
// bundle file it adds under ledger/, and its message.
func (l *stdLedger) entries(t *testing.T) []stdEntry {
	t.Helper()
	var out []stdEntry
	for _, c := range strings.Fields(string(l.gitOut(t, "rev-list", "--reverse", "agent-evidence"))) {
		added := strings.Fields(string(l.gitOut(t, "diff-tree", "--root", "--no-commit-id", "--name-only", "--diff-filter=A", "-r", c, "--", "ledger/")))
		if len(added) != 1 {
			t.Fatalf("evidence commit %s adds %d bundles under ledger/, want 1: %v", c, len(added), added)
		}
		out = append(out, stdEntry{
			commit:  c,
			path:    added[0],
			message: strings.TrimSuffix(string(l.gitOut(t, "log", "-1", "--format=%B", c)), "\n\n"),
			bundle:  l.gitOut(t, "show", c+":"+added[0]),
		})
	}
	return out
}

// verifyStandard verifies a ledger entry as cosign verify-blob-attestation
// --key does, with sigstore-go alone: the bundle must hold a DSSE envelope
// signed by the key in pubPEM (looked up by the bundle's key hint, base64
// of the sha256 of the key's DER), over an in-toto statement with a subject
// whose gitCommit digest is commit. No transparency log entry or timestamp
// is required: ledger entries are key-signed and offline. It returns the
// statement, decoded with in-toto's binding and validated.
func verifyStandard(bundleJSON, pubPEM []byte, commit string) (*intoto.Statement, error) {
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("public key file holds no PUBLIC KEY PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(block.Bytes)
	hint := base64.StdEncoding.EncodeToString(sum[:])
	sv, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{
		hint: root.NewExpiringKey(sv, time.Time{}, time.Time{}),
	})
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		return nil, err
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	digest, err := hex.DecodeString(commit)
	if err != nil {
		return nil, err
	}
	res, err := v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest("gitCommit", digest), verify.WithKey()))
	if err != nil {
		return nil, err
	}
	env := b.GetDsseEnvelope()
	if env == nil || env.GetPayloadType() != stdPayloadType {
		return nil, fmt.Errorf("want a DSSE envelope of type %s", stdPayloadType)
	}
	var st intoto.Statement
	if err := protojson.Unmarshal(env.GetPayload(), &st); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if res.Statement == nil || res.Statement.GetPredicateType() != st.GetPredicateType() {
		return nil, errors.New("sigstore-go verified another statement than the payload")
	}
	return &st, nil
}

// stdSchema compiles the published predicate schema.
func stdSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile("../docs/ledger-predicate.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func TestStandardVerify(t *testing.T) {
	l := newStdLedger(t)
	pub, err := os.ReadFile(l.pub)
	if err != nil {
		t.Fatal(err)
	}
	sch := stdSchema(t)
	entries := l.entries(t)
	if len(entries) != len(l.want) {
		t.Fatalf("evidence branch has %d entries, want %d", len(entries), len(l.want))
	}
	prev := ""
	for i, e := range entries {
		want := l.want[i]
		t.Run(fmt.Sprintf("%d %s", i+1, want.event), func(t *testing.T) {
			st, err := verifyStandard(e.bundle, pub, want.subject)
			if err != nil {
				t.Fatalf("sigstore-go does not verify %s: %v", e.path, err)
			}
			if st.GetType() != stdStatementType || st.GetPredicateType() != stdPredicateType || stdPredicateType != ledger.PredicateType {
				t.Errorf("statement type %q, predicate type %q", st.GetType(), st.GetPredicateType())
			}
			if n := len(st.GetSubject()); n != 1 {
				t.Fatalf("statement has %d subjects, want 1", n)
			}
			sub := st.GetSubject()[0]
			if got := sub.GetDigest()["gitCommit"]; got != want.subject || sub.GetName() != want.subjectName {
				t.Errorf("subject %s %s, want %s %s", sub.GetName(), got, want.subjectName, want.subject)
			}
			// The predicate, exactly as signed, satisfies the published
			// schema.
			raw, err := protojson.Marshal(st.GetPredicate())
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if err := sch.Validate(inst); err != nil {
				t.Errorf("signed predicate does not satisfy docs/ledger-predicate.schema.json: %#v\n%s", err, raw)
			}
			var p struct {
				Seq              uint64 `json:"seq"`
				Prev             string `json:"prev"`
				Event            string `json:"event"`
				Summary          string `json:"summary"`
				RunID            string `json:"run_id"`
				TranscriptDigest string `json:"transcript_digest"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			if wantPath := fmt.Sprintf("ledger/%09d/%012d.json", p.Seq/1000, p.Seq); p.Seq != uint64(i+1) || e.path != wantPath {
				t.Errorf("entry %d is seq %d at %s", i+1, p.Seq, e.path)
			}
			if p.Event != want.event || p.Summary != e.message {
				t.Errorf("event %q summary %q; commit message %q", p.Event, p.Summary, e.message)
			}
			// The chain: prev is the sha256 of the previous bundle file.
			if p.Prev != prev {
				t.Errorf("prev %q, want the sha256 of the previous bundle, %q", p.Prev, prev)
			}
			// The transcript beside the entry is the one it signed.
			if p.TranscriptDigest != "" {
				tr := l.gitOut(t, "show", e.commit+":transcripts/"+p.RunID+".json")
				if sum := sha256.Sum256(tr); hex.EncodeToString(sum[:]) != p.TranscriptDigest {
					t.Errorf("transcript does not match transcript_digest")
				}
			}
		})
		sum := sha256.Sum256(e.bundle)
		prev = hex.EncodeToString(sum[:])
	}
}

// TestStandardVerifyRejects checks that the standard verification above is
// not vacuous: sigstore-go refuses a bundle whose payload was replaced, an
// entry checked against another commit, and another key.
func TestStandardVerifyRejects(t *testing.T) {
	l := newStdLedger(t)
	pub, err := os.ReadFile(l.pub)
	if err != nil {
		t.Fatal(err)
	}
	other, err := signing.GenerateKey(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	entries := l.entries(t)
	finished, opened := entries[2], entries[4]
	spec, head := l.want[2].subject, l.want[4].subject

	// editBundle returns the bundle with its DSSE envelope edited.
	editBundle := func(t *testing.T, b []byte, edit func(env map[string]any)) []byte {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		edit(m["dsseEnvelope"].(map[string]any))
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	payloadOf := func(t *testing.T, b []byte) string {
		t.Helper()
		var m struct {
			DSSE struct {
				Payload string `json:"payload"`
			} `json:"dsseEnvelope"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m.DSSE.Payload
	}
	// The unmodified entries verify: the failures below are the edits'.
	for _, c := range []struct {
		b      []byte
		commit string
	}{{finished.bundle, spec}, {opened.bundle, head}} {
		if _, err := verifyStandard(c.b, pub, c.commit); err != nil {
			t.Fatalf("unmodified entry: %v", err)
		}
	}
	for _, tc := range []struct {
		name   string
		bundle func(t *testing.T) []byte
		commit string
		pub    []byte
	}{
		{"payload replaced by a forged statement", func(t *testing.T) []byte {
			return forgePayload(t, finished.bundle)
		}, spec, pub},
		{"payload replaced by another entry's", func(t *testing.T) []byte {
			p := payloadOf(t, entries[1].bundle)
			return editBundle(t, finished.bundle, func(env map[string]any) { env["payload"] = p })
		}, spec, pub},
		{"payload type changed", func(t *testing.T) []byte {
			return editBundle(t, finished.bundle, func(env map[string]any) { env["payloadType"] = "application/json" })
		}, spec, pub},
		{"checked against another commit", func(*testing.T) []byte { return opened.bundle }, spec, pub},
		{"checked with another key", func(*testing.T) []byte { return finished.bundle }, spec, other.PublicKeyPEM()},
		{"key hint naming another key", func(t *testing.T) []byte {
			var m map[string]any
			if err := json.Unmarshal(finished.bundle, &m); err != nil {
				t.Fatal(err)
			}
			m["verificationMaterial"].(map[string]any)["publicKey"].(map[string]any)["hint"] = other.KeyID()
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}, spec, other.PublicKeyPEM()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyStandard(tc.bundle(t), tc.pub, tc.commit)
			if err == nil {
				t.Fatal("sigstore-go verified it")
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestStandardCosign verifies every entry with the cosign CLI, as the
// README tells users to, and checks that cosign refuses a forged payload
// and the wrong commit. It is skipped when cosign is not on PATH (Debian 12
// has no cosign package; `go install github.com/sigstore/cosign/v3/cmd/cosign`
// builds one).
func TestStandardCosign(t *testing.T) {
	cosign, err := exec.LookPath("cosign")
	if err != nil {
		t.Skip("cosign is not on PATH, so entries are not verified with it; install it with go install github.com/sigstore/cosign/v3/cmd/cosign@latest to run this test")
	}
	l := newStdLedger(t)
	entries := l.entries(t)
	home := t.TempDir() // cosign must not read or write the user's ~/.sigstore
	verifyBlob := func(bundleJSON []byte, predicateType, commit string) ([]byte, error) {
		f := filepath.Join(t.TempDir(), "entry.json")
		if err := os.WriteFile(f, bundleJSON, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(cosign, cosignArgs(f, l.pub, predicateType, commit)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"))
		return cmd.CombinedOutput()
	}
	for i, e := range entries {
		want := l.want[i]
		if out, err := verifyBlob(e.bundle, stdPredicateType, want.subject); err != nil {
			t.Errorf("cosign does not verify entry %d (%s) for %s: %v\n%s", i+1, want.event, want.subject, err, out)
		}
	}
	for _, tc := range []struct {
		name          string
		bundle        []byte
		predicateType string
		commit        string
	}{
		{"proposal.opened checked against the spec commit, not its head", entries[4].bundle, stdPredicateType, l.want[1].subject},
		{"payload replaced by a forged statement", forgePayload(t, entries[2].bundle), stdPredicateType, l.want[2].subject},
		{"another predicate type", entries[2].bundle, "https://slsa.dev/provenance/v1", l.want[2].subject},
	} {
		out, err := verifyBlob(tc.bundle, tc.predicateType, tc.commit)
		if err == nil {
			t.Errorf("%s: cosign verified it:\n%s", tc.name, out)
			continue
		}
		t.Logf("%s: cosign refused it: %s", tc.name, bytes.TrimSpace(out))
	}
}

// forgePayload returns the bundle with its DSSE payload replaced by the
// same statement saying something else (the run's outcome), which no key
// signed.
func forgePayload(t *testing.T, bundleJSON []byte) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(bundleJSON, &b); err != nil {
		t.Fatal(err)
	}
	env := b["dsseEnvelope"].(map[string]any)
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	st["predicate"].(map[string]any)["outcome"] = "no_change"
	payload, err = json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env["payload"] = base64.StdEncoding.EncodeToString(payload)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cosignArgs is the command the README gives for verifying an entry.
func cosignArgs(bundlePath, keyPath, predicateType, commit string) []string {
	return []string{
		"verify-blob-attestation",
		"--bundle", bundlePath,
		"--key", keyPath,
		"--type", predicateType,
		"--digest", commit, "--digestAlg", "gitCommit",
		"--insecure-ignore-tlog",
	}
}
