package reconcile_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/signing"
)

// stalled runs a pass that must fail as Stalled for reason, and checks that
// it appended nothing.
func (e *env) stalled(r *reconcile.Reconciler, reason string) error {
	e.t.Helper()
	before := e.git("", "--git-dir", e.bare, "for-each-ref", "refs/heads/")
	err := r.Reconcile(context.Background())
	var se *reconcile.StalledError
	if !errors.As(err, &se) || se.Reason != reason {
		e.t.Fatalf("pass = %v, want Stalled %s", err, reason)
	}
	if strings.Contains(err.Error(), "\n") {
		e.t.Errorf("error is not one line: %q", err)
	}
	st := r.Status()
	var got []string
	for _, c := range st.Conditions {
		got = append(got, c.Type+"="+string(c.Status)+"/"+c.Reason)
	}
	if !strings.Contains(strings.Join(got, " "), "Stalled=True/"+reason) {
		e.t.Errorf("conditions = %v, want Stalled=True/%s", got, reason)
	}
	if after := e.git("", "--git-dir", e.bare, "for-each-ref", "refs/heads/"); after != before {
		e.t.Errorf("a stalled pass moved branches:\n%s\n->\n%s", before, after)
	}
	return err
}

func (e *env) cachedReconciler(signer ledger.Signer, cache string) *reconcile.Reconciler {
	e.t.Helper()
	return e.reconcilerConfig(signer, func(c *reconcile.Config) { c.CacheDir = cache })
}

func newKey(t *testing.T) *signing.Signer {
	t.Helper()
	k, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A key committed to the protected branch by a direct push is never
// trusted: the push is recorded once as a policy.violation, and a
// reconciler signing with that key refuses to run.
func TestKeyPushedDirectlyIsNotTrusted(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, transport == "http", nil)
			r := e.reconciler(nil)
			e.pass(r)
			mallory := newKey(t)
			e.commitAs("Mallory", "mallory@example.com", "add my key", func(work string) {
				os.WriteFile(filepath.Join(work, ".reconciler/keys/mallory.pub"), mallory.PublicKeyPEM(), 0o644)
			})
			e.pass(r)
			e.pass(r)
			es := e.entries()
			if n := count(es, ledger.PolicyViolation); n != 1 {
				t.Fatalf("%d policy.violation entries, want 1: %q", n, e.events())
			}
			v, _ := find(es, ledger.PolicyViolation, "")
			if !strings.Contains(v.Error, "without an approved merge") || !strings.Contains(v.Error, "mallory@example.com") {
				t.Errorf("violation = %q", v.Error)
			}
			if count(es, ledger.KeysChanged) != 0 {
				t.Errorf("a directly pushed key was admitted")
			}
			// Mallory's key signs nothing: her reconciler stalls.
			e.stalled(e.reconciler(mallory), reconcile.ReasonLedgerUntrusted)
			// Entries she signs and pushes herself are refused by every reader.
			e.forgeEntry(mallory)
			e.stalled(e.reconciler(nil), reconcile.ReasonLedgerUntrusted)
			e.stalled(r, reconcile.ReasonLedgerUntrusted)
		})
	}
}

// forgeEntry appends an entry signed by key to agent-evidence and pushes it,
// as someone with push access but without the ledger's key would.
func (e *env) forgeEntry(key *signing.Signer) {
	e.t.Helper()
	work := e.clone()
	e.git(work, "checkout", "-q", ledger.Branch)
	es := e.entries()
	last := es[len(es)-1]
	st := forgedStatement(e.t, last, key)
	path := filepath.Join(work, ledger.EntryPath(last.Seq+1))
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, st, 0o644)
	e.git(work, "add", "-A")
	e.git(work, "commit", "-q", "-m", "run.started forged")
	e.git(work, "push", "-q", "origin", ledger.Branch)
}

// sshReviewerKey makes an SSH key for a reviewer with ssh-keygen and
// returns its private key file and public key line.
func sshReviewerKey(t *testing.T, name string) (string, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file).CombinedOutput(); err != nil {
		t.Skipf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(file + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return file, strings.TrimSpace(string(pub))
}

// withSigningKey gives member a signing_key in reviewers.hcl.
func withSigningKey(member, pub string) func(dir string) {
	return func(dir string) {
		p := filepath.Join(dir, "reviewers.hcl")
		b, _ := os.ReadFile(p)
		s := strings.Replace(string(b), `member "`+member+`" {`, `member "`+member+`" {
    signing_key = "`+pub+`"`, 1)
		os.WriteFile(p, []byte(s), 0o644)
	}
}

// proposeKey pushes a branch adding key as .reconciler/keys/ops.pub and
// merges it into main as Rita, signing the merge with signKey ("" for an
// unsigned merge).
func (e *env) proposeKey(key *signing.Signer, signKey string) {
	e.t.Helper()
	work := e.clone()
	e.git(work, "checkout", "-q", "-b", "rotate")
	os.WriteFile(filepath.Join(work, ".reconciler/keys/ops.pub"), key.PublicKeyPEM(), 0o644)
	e.git(work, "add", "-A")
	e.gitAs("Sam", "sam@example.com", work, "commit", "-q", "-m", "trust the ops key")
	e.git(work, "checkout", "-q", "main")
	args := []string{"merge", "-q", "--no-ff", "-m", "Merge rotate", "rotate"}
	if signKey != "" {
		args = append([]string{"-c", "gpg.format=ssh", "-c", "user.signingKey=" + signKey}, append([]string{"merge", "-S"}, args[1:]...)...)
	}
	e.gitAs("Rita", "rita@example.com", work, args...)
	e.git(work, "push", "-q", "origin", "main")
}

// A key admitted through an approved merge (a merge commit signed by a
// reviewer's signing_key) is recorded as keys.changed and signs from that
// entry on, not before. The merger's name and email prove nothing: an
// unsigned merge, or one signed by a key in no reviewers.hcl, admits
// nothing and is a policy.violation.
func TestKeyAdmittedThroughApprovedMerge(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			ritaKey, ritaPub := sshReviewerKey(t, "rita")
			e := newEnv(t, transport == "http", withSigningKey("rita", ritaPub))
			r := e.reconciler(nil)
			e.pass(r)
			ops := newKey(t)
			// Before the merge, the new key is refused.
			e.stalled(e.reconciler(ops), reconcile.ReasonLedgerUntrusted)
			e.proposeKey(ops, ritaKey)
			e.pass(r)
			es := e.entries()
			kc, ok := find(es, ledger.KeysChanged, "")
			if !ok || count(es, ledger.PolicyViolation) != 0 {
				t.Fatalf("no keys.changed, or a violation: %q", e.events())
			}
			out, _ := exec.Command("ssh-keygen", "-lf", ritaKey+".pub").Output()
			wantFpr := strings.Fields(string(out))[1]
			if !ledger.HasKey(kc.Keys, ops.KeyID()) || !ledger.HasKey(kc.Keys, e.signer.KeyID()) || kc.Signer != e.signer.KeyID() ||
				!strings.Contains(kc.Reviewer, "rita (sre)") || !strings.Contains(kc.Reviewer, wantFpr) {
				t.Errorf("keys.changed = %+v, want the reviewer rita (sre) with key %s", kc.Event, wantFpr)
			}
			// The ops key now runs the reconciler and signs.
			e.commitAs("Sam", "sam@example.com", "tweak", func(work string) {
				f, _ := os.OpenFile(filepath.Join(work, "providers.hcl"), os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("\n# reviewed\n")
				f.Close()
			})
			e.pass(e.reconciler(ops))
			es = e.entries()
			if last := es[len(es)-1]; last.Signer != ops.KeyID() || last.Seq <= kc.Seq {
				t.Errorf("last entry %d signed by %s, want the ops key after entry %d", last.Seq, last.Signer, kc.Seq)
			}
			e.verify()
		})
	}
	for _, tc := range []struct{ name, sign, why string }{
		{"unsigned merge with a reviewer's name and email", "", "not signed by a reviewer's signing_key"},
		{"merge signed by a key in no reviewers.hcl", "stranger", "not signed by a reviewer's signing_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ritaPub := sshReviewerKey(t, "rita")
			e := newEnv(t, false, withSigningKey("rita", ritaPub))
			r := e.reconciler(nil)
			e.pass(r)
			ops := newKey(t)
			sign := ""
			if tc.sign != "" {
				sign, _ = sshReviewerKey(t, tc.sign)
			}
			e.proposeKey(ops, sign)
			e.pass(r)
			es := e.entries()
			if count(es, ledger.KeysChanged) != 0 {
				t.Fatalf("a key was admitted by %s: %q", tc.name, e.events())
			}
			v, ok := find(es, ledger.PolicyViolation, "")
			if !ok || !strings.Contains(v.Error, tc.why) {
				t.Fatalf("violation = %+v, want %q", v.Event, tc.why)
			}
			e.stalled(e.reconciler(ops), reconcile.ReasonLedgerUntrusted)
		})
	}
}

// An entry whose payload was replaced (its signature kept) stops every
// reader at that entry: nothing after it is acted on or appended.
func TestReplacedPayloadStallsTheReconciler(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) { replacedPayload(t, transport == "http") })
	}
}

func replacedPayload(t *testing.T, http bool) {
	e := newEnv(t, http, nil)
	r := e.reconciler(nil)
	e.pass(r)
	work := e.clone()
	e.git(work, "checkout", "-q", ledger.Branch)
	es := e.entries()
	p := filepath.Join(work, ledger.EntryPath(es[len(es)-1].Seq))
	b, _ := os.ReadFile(p)
	os.WriteFile(p, replacePayload(t, b, `"run_id":"`, `"run_id":"0`), 0o644)
	e.git(work, "commit", "-q", "-a", "--amend", "--no-edit")
	e.git(work, "push", "-q", "--force", "origin", ledger.Branch)
	e.stalled(e.reconciler(nil), reconcile.ReasonLedgerUntrusted)
}

// Truncating the ledger by one or two entries, or deleting it, stalls a
// running reconciler and one that continues from its on-disk cache;
// a missing ledger while main carries Ledger-Entry trailers is never
// started anew.
func TestTruncationStallsTheReconciler(t *testing.T) {
	for _, tc := range []struct{ name, rev string }{{"by one", "~1"}, {"by two", "~2"}, {"deleted", ""}} {
		for _, transport := range []string{"local", "http"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				e := newEnv(t, transport == "http", nil)
				cache := t.TempDir()
				r := e.cachedReconciler(e.signer, cache)
				e.pass(r)
				if tc.rev == "" {
					// A proposal merged into main carries its Ledger-Entry trailer.
					e.mergeAs("Rita", "rita@example.com", e.branches()[0], "--no-ff")
					e.pass(r)
					e.git("", "--git-dir", e.bare, "update-ref", "-d", "refs/heads/"+ledger.Branch)
				} else {
					h := e.git("", "--git-dir", e.bare, "rev-parse", ledger.Branch+tc.rev)
					e.git("", "--git-dir", e.bare, "update-ref", "refs/heads/"+ledger.Branch, h)
				}
				e.stalled(r, reconcile.ReasonLedgerRewritten)
				r.Close()
				// A new process on the same cache remembers what it saw.
				e.stalled(e.cachedReconciler(e.signer, cache), reconcile.ReasonLedgerRewritten)
				if tc.rev == "" {
					// And so does one with no cache: the trailers on main.
					err := e.stalled(e.reconciler(nil), reconcile.ReasonLedgerRewritten)
					if !strings.Contains(err.Error(), "references ledger entry") {
						t.Errorf("error = %v", err)
					}
				}
			})
		}
	}
}

// A restarted reconciler with a warm cache continues from the saved state
// and gives the same status as one reading the ledger from the start.
func TestWarmCacheRestart(t *testing.T) {
	e := newEnv(t, false, nil)
	cache := t.TempDir()
	r := e.cachedReconciler(e.signer, cache)
	e.pass(r)
	r.Close()
	warm := e.cachedReconciler(e.signer, cache)
	e.pass(warm)
	cold := e.reconciler(nil)
	e.pass(cold)
	if a, b := warm.Status(), cold.Status(); a.Ledger.Seq != b.Ledger.Seq || a.Ledger.Head != b.Ledger.Head || len(a.Agents) != len(b.Agents) {
		t.Errorf("warm status %+v differs from cold %+v", a, b)
	}
	e.verify()
}

// forgedStatement signs, with key, an entry that chains correctly after
// last: what a pusher holding some key but not a trusted one can make.
func forgedStatement(t testing.TB, last ledger.Entry, key *signing.Signer) []byte {
	t.Helper()
	p := ledger.Predicate{Seq: last.Seq + 1, Prev: last.Digest, Time: time.Now().UTC(), Event: ledger.Event{
		Type: ledger.RunStarted, Agent: "image-pinner", RunID: "deadbeef0000", Trigger: "manual",
		SpecCommit: last.Subject, SpecDigest: "forged", Summary: "run.started forged",
	}}
	pred, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := json.Marshal(map[string]any{
		"_type":         ledger.StatementType,
		"subject":       []any{map[string]any{"name": "main", "digest": map[string]string{"gitCommit": last.Subject}}},
		"predicateType": ledger.PredicateType,
		"predicate":     json.RawMessage(pred),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := key.SignStatement(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replacePayload returns bundle with old replaced by new in its DSSE
// payload, the signature kept.
func replacePayload(t *testing.T, bundle []byte, old, new string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundle, &m); err != nil {
		t.Fatal(err)
	}
	env := m["dsseEnvelope"].(map[string]any)
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(payload), old, new, 1)
	if changed == string(payload) {
		t.Fatalf("payload has no %q", old)
	}
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(changed))
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The remote failing in the middle of a pass (its receive-pack dies on the
// first push) fails that pass only: nothing half-written is left, and the
// next pass picks up where it stopped, with one proposal per agent.
func TestRemoteVanishesMidPush(t *testing.T) {
	for _, transport := range []string{"local", "http"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, transport == "http", nil)
			r := e.cachedReconciler(e.signer, t.TempDir())
			e.pass(r) // genesis, spec, proposals
			e.commitAs("Sam", "sam@example.com", "tweak", func(work string) {
				f, _ := os.OpenFile(filepath.Join(work, "providers.hcl"), os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("\n# reviewed\n")
				f.Close()
			})
			marker := filepath.Join(t.TempDir(), "vanished")
			hook := filepath.Join(e.bare, "hooks", "pre-receive")
			script := "#!/bin/sh\nif [ ! -e " + marker + " ]; then touch " + marker + "; echo 'remote: gone' >&2; exit 1; fi\n"
			if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			before := e.git("", "--git-dir", e.bare, "for-each-ref", "refs/heads/")
			if err := r.Reconcile(context.Background()); err == nil {
				t.Fatal("a pass whose push failed reported success")
			}
			if after := e.git("", "--git-dir", e.bare, "for-each-ref", "refs/heads/"); after != before {
				t.Errorf("a failed push moved branches")
			}
			e.pass(r)
			e.pass(r)
			es := e.entries()
			if n := count(es, ledger.SpecLoaded); n != 2 {
				t.Errorf("%d spec.loaded entries, want 2: %q", n, e.events())
			}
			e.verify()
			gittest.Git(t, "", "--git-dir", e.bare, "fsck", "--strict")
		})
	}
}

// A ledger deleted (or archived after an upgrade) while main carries its
// trailers is started anew only deliberately (StartNewLedger), and the new
// genesis entry says why; verify then checks the trailers after it only.
func TestStartNewLedgerDeliberately(t *testing.T) {
	e := newEnv(t, false, nil)
	r := e.reconciler(nil)
	e.pass(r)
	e.mergeAs("Rita", "rita@example.com", e.branches()[0], "--no-ff")
	e.pass(r)
	e.git("", "--git-dir", e.bare, "update-ref", "-d", "refs/heads/"+ledger.Branch)
	e.stalled(e.reconciler(nil), reconcile.ReasonLedgerRewritten)
	// The operator archives the old proposals too, then starts over.
	for _, b := range e.branches() {
		e.git("", "--git-dir", e.bare, "update-ref", "-d", "refs/heads/"+b)
	}
	nr := e.reconcilerConfig(nil, func(c *reconcile.Config) { c.StartNewLedger = true })
	e.pass(nr)
	es := e.entries()
	if es[0].Type != ledger.Genesis || !strings.Contains(es[0].Error, "references ledger entry") || !strings.Contains(es[0].Summary, "started over") {
		t.Fatalf("genesis = %+v", es[0].Event)
	}
	e.verify()
}
