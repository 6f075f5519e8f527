package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/gitstore/gittest"
	"github.com/agentgitops/reconciler/signing"
)

// verifyFixture is a bare repository with a main branch and a ledger
// signed by signer.
type verifyFixture struct {
	bare   string
	signer *signing.Signer
	spec   string
}

func newVerifyFixture(t *testing.T, events int) *verifyFixture {
	t.Helper()
	bare := gittest.NewBare(t, "")
	work := t.TempDir()
	gittest.Git(t, work, "init", "-q", "-b", "main")
	gittest.Git(t, work, "commit", "-q", "--allow-empty", "-m", "desired state")
	gittest.Git(t, work, "push", "-q", bare, "main")
	signer, err := signing.GenerateKey(filepath.Join(t.TempDir(), "ledger.key"))
	if err != nil {
		t.Fatal(err)
	}
	f := &verifyFixture{bare: bare, signer: signer, spec: gittest.Git(t, "", "--git-dir", bare, "rev-parse", "main")}
	f.append(t, events)
	return f
}

// append appends n run.started events (starting the ledger first), in
// batches of 100.
func (f *verifyFixture) append(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	l := New(f.open(t), Options{Signer: f.signer, Identity: object.Signature{Name: "Reconciler", Email: "r@example.com"}})
	if _, err := l.Init(ctx, f.spec, "main", nil); err != nil {
		t.Fatal(err)
	}
	for done := 0; done < n; {
		var evs []Event
		for ; len(evs) < 100 && done < n; done++ {
			evs = append(evs, Event{Type: RunStarted, Agent: "a", RunID: fmt.Sprintf("run%09d", done), SpecCommit: f.spec,
				Trigger: "manual", SpecDigest: "d1", Subject: f.spec, Summary: fmt.Sprintf("run.started a run%d", done)})
		}
		if _, err := l.Append(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *verifyFixture) open(t *testing.T) *gitstore.Repo {
	t.Helper()
	repo, err := gitstore.Open(context.Background(), f.bare, gitstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

func (f *verifyFixture) verify(t *testing.T) (*Report, error) {
	t.Helper()
	return VerifyMemoryAndDisk(t, f.bare, VerifyOptions{Protected: "main", TrustedKeys: []signing.PublicKey{f.signer.PublicKey()}})
}

// commit changes a checkout of the evidence branch with change, then
// commits (amending the last commit when amend is set) and pushes.
func (f *verifyFixture) commit(t *testing.T, amend bool, change func(work string)) {
	t.Helper()
	work := gittest.Clone(t, f.bare)
	gittest.Git(t, work, "checkout", "-q", Branch)
	change(work)
	gittest.Git(t, work, "add", "-A")
	if amend {
		gittest.Git(t, work, "commit", "-q", "--amend", "--no-edit")
		gittest.Git(t, work, "push", "-q", "--force", "origin", Branch)
		return
	}
	gittest.Git(t, work, "commit", "-q", "-m", "cleanup")
	gittest.Git(t, work, "push", "-q", "origin", Branch)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func wantVerifyError(t *testing.T, err error, seq uint64, reason string) {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrUntrusted)) {
		t.Fatalf("Verify = %v, want a *VerifyError", err)
	}
	if ve.Seq != seq || !strings.Contains(err.Error(), reason) || !strings.HasPrefix(err.Error(), fmt.Sprintf("entry %d ", seq)) {
		t.Errorf("Verify error = %q, want entry %d and %q", err, seq, reason)
	}
}

// Verify names the entry and the path a tampering commit changed, after
// checking every entry before it.
func TestVerifyNamesTheChange(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, f *verifyFixture)
		seq    uint64
		reason string
	}{{
		name: "modify an old entry in a new commit",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, false, func(work string) {
				writeFile(t, filepath.Join(work, EntryPath(1)), "{}")
			})
		},
		seq: 7, reason: "commit does not add exactly this entry: modifies ledger/000000000/000000000001.json",
	}, {
		name: "modify an old entry in the entry's own commit",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, true, func(work string) {
				writeFile(t, filepath.Join(work, EntryPath(2)), "{}")
			})
		},
		seq: 6, reason: "commit does not add exactly this entry: modifies ledger/000000000/000000000002.json",
	}, {
		name: "add a stray file at the root",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, false, func(work string) {
				writeFile(t, filepath.Join(work, "notes.txt"), "nothing to see")
			})
		},
		seq: 7, reason: "commit does not add exactly this entry: adds notes.txt",
	}, {
		name: "add a stray file beside the entry",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, true, func(work string) {
				writeFile(t, filepath.Join(work, EntryPath(9)), "{}")
			})
		},
		seq: 6, reason: "commit does not add exactly this entry: adds ledger/000000000/000000000009.json",
	}, {
		name: "add an unsigned transcript",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, true, func(work string) {
				writeFile(t, filepath.Join(work, TranscriptPath("run000000004")), `{"version":1}`)
			})
		},
		seq: 6, reason: "commit adds transcripts/run000000004.json, which the entry does not sign",
	}, {
		name: "a commit without an entry",
		tamper: func(t *testing.T, f *verifyFixture) {
			f.commit(t, false, func(work string) {
				writeFile(t, filepath.Join(work, TranscriptPath("run000000004")), `{"version":1}`)
			})
		},
		seq: 7, reason: "entry file missing",
	}, {
		name: "a merge commit in the chain",
		tamper: func(t *testing.T, f *verifyFixture) {
			work := gittest.Clone(t, f.bare)
			gittest.Git(t, work, "checkout", "-q", Branch)
			gittest.Git(t, work, "merge", "-q", "--allow-unrelated-histories", "-s", "ours", "-m", "merge main", "origin/main")
			gittest.Git(t, work, "push", "-q", "origin", Branch)
		},
		seq: 7, reason: "is a merge; the evidence branch must be a single chain",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVerifyFixture(t, 5)
			if _, err := f.verify(t); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tt.tamper(t, f)
			_, err := f.verify(t)
			wantVerifyError(t, err, tt.seq, tt.reason)
		})
	}
}

// A ledger of more than one directory verifies, and a change to the first
// directory is named when a later commit makes it.
func TestVerifyTwoDirectories(t *testing.T) {
	f := newVerifyFixture(t, 1100)
	rep, err := f.verify(t)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 1101 || rep.Signers[f.signer.KeyID()] != 1101 {
		t.Fatalf("report = %d entries, signers %v; want 1101 by %s", rep.Entries, rep.Signers, f.signer.KeyID())
	}
	f.commit(t, false, func(work string) {
		writeFile(t, filepath.Join(work, EntryPath(5)), "{}")
	})
	_, err = f.verify(t)
	wantVerifyError(t, err, 1102, "modifies ledger/000000000/000000000005.json")
}

// A ledger of more than one directory whose first directory is removed by
// a later commit names the directory.
func TestVerifyRemovedDirectory(t *testing.T) {
	f := newVerifyFixture(t, 1000)
	f.commit(t, false, func(work string) {
		if err := os.RemoveAll(filepath.Join(work, "ledger", "000000000")); err != nil {
			t.Fatal(err)
		}
	})
	_, err := f.verify(t)
	wantVerifyError(t, err, 1002, "removes ledger/000000000")
}

// Verify stops, without reading the rest, when the context is cancelled.
func TestVerifyCancelled(t *testing.T) {
	f := newVerifyFixture(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, f.open(t), VerifyOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with a cancelled context = %v", err)
	}
}

// fastPathCase is a bundle of entry 2 and whether it is expected to take
// the fast path.
type fastPathCase struct {
	name   string
	bundle []byte
	fast   bool
}

// fastPathCases returns variants of a real bundle: the ones signing.Signer
// writes, and tamperings and re-encodings that sigstore-go accepts or
// rejects.
func fastPathCases(t testing.TB, signer, other *signing.Signer, spec string) []fastPathCase {
	t.Helper()
	ctx := context.Background()
	ev := Event{Type: RunStarted, Agent: "a", RunID: "run000000001", SpecCommit: spec, Trigger: "manual", SpecDigest: "d1", Subject: spec, Summary: "run.started a run1"}
	st, err := newStatement(Predicate{Seq: 2, Prev: strings.Repeat("0", 64), Time: time.Unix(1700000000, 0).UTC(), Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	good, err := signer.SignStatement(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	byOther, err := other.SignStatement(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	gen := Event{Type: Genesis, Subject: spec, Keys: KeySet(signer.PublicKey()), Summary: "ledger.genesis"}
	gst, err := newStatement(Predicate{Seq: 2, Time: time.Unix(1700000000, 0).UTC(), Event: gen})
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := signer.SignStatement(ctx, gst)
	if err != nil {
		t.Fatal(err)
	}
	notLedger, err := signer.SignStatement(ctx, []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	env := m["dsseEnvelope"].(map[string]any)
	sig := env["signatures"].([]any)[0].(map[string]any)["sig"].(string)
	payload := env["payload"].(string)
	edit := func(fn func(m map[string]any)) []byte {
		var c map[string]any
		json.Unmarshal(good, &c)
		fn(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	envOf := func(m map[string]any) map[string]any { return m["dsseEnvelope"].(map[string]any) }
	replace := func(old, new string) []byte { return []byte(strings.Replace(string(good), old, new, 1)) }
	raw, _ := base64.StdEncoding.DecodeString(payload)
	var indented bytes.Buffer
	json.Indent(&indented, good, "", "\t")
	sigBytes, _ := base64.StdEncoding.DecodeString(sig)
	flipped := bytes.Clone(sigBytes)
	flipped[len(flipped)-1] ^= 1
	return []fastPathCase{
		{"as signed", good, true},
		{"re-indented", indented.Bytes(), true},
		{"re-encoded by encoding/json", edit(func(map[string]any) {}), false},
		{"signed by an untrusted key", byOther, false},
		{"signed by an untrusted key with the trusted hint", []byte(strings.Replace(string(byOther), other.KeyID(), signer.KeyID(), 1)), false},
		{"trusted signature with another hint", replace(signer.KeyID(), other.KeyID()), false},
		{"payload edited", replace(payload, base64.StdEncoding.EncodeToString(bytes.Replace(raw, []byte("run1"), []byte("run2"), 1))), false},
		{"signature flipped", replace(sig, base64.StdEncoding.EncodeToString(flipped)), false},
		{"signature url-safe base64", replace(sig, base64.URLEncoding.EncodeToString(sigBytes)), base64.URLEncoding.EncodeToString(sigBytes) == sig},
		{"payload unpadded", replace(payload, base64.RawStdEncoding.EncodeToString(raw)), base64.RawStdEncoding.EncodeToString(raw) == payload},
		{"payload url-safe", replace(payload, base64.URLEncoding.EncodeToString(raw)), base64.URLEncoding.EncodeToString(raw) == payload},
		{"keyid set", edit(func(m map[string]any) {
			envOf(m)["signatures"].([]any)[0].(map[string]any)["keyid"] = "x"
		}), false},
		{"empty keyid", edit(func(m map[string]any) {
			envOf(m)["signatures"].([]any)[0].(map[string]any)["keyid"] = ""
		}), false},
		{"two signatures", edit(func(m map[string]any) {
			s := envOf(m)["signatures"].([]any)
			envOf(m)["signatures"] = append(s, s[0])
		}), false},
		{"no signature", edit(func(m map[string]any) { envOf(m)["signatures"] = []any{} }), false},
		{"unknown field", edit(func(m map[string]any) { m["extra"] = 1 }), false},
		{"proto field name", replace(`"payloadType"`, `"payload_type"`), false},
		{"upper-case field name", replace(`"payload"`, `"PAYLOAD"`), false},
		{"duplicate payload", replace(`"payloadType"`, `"payload":"`+base64.StdEncoding.EncodeToString([]byte(`{}`))+`", "payloadType"`), false},
		{"media type v0.2", replace("bundle.v0.3+json", "bundle+json;version=0.2"), false},
		{"media type v0.4", replace("bundle.v0.3+json", "bundle.v0.4+json"), false},
		{"other payload type", replace(`"application/vnd.in-toto+json"`, `"application/json"`), false},
		{"escaped media type", replace(`"application/vnd.dev`, `"\u0061pplication/vnd.dev`), false},
		{"trailing data", append(bytes.Clone(good), []byte(` {}`)...), false},
		{"trailing space", append(bytes.Clone(good), []byte(" \n")...), true},
		{"genesis after entry 1", genesis, false},
		{"not a ledger statement", notLedger, false},
		{"empty", nil, false},
	}
}

// The fast path accepts only what t.verify (sigstore-go) accepts, with the
// same statement and key, and verifyEntry returns exactly what t.verify
// returns for every bundle.
func TestFastPathMatchesSigning(t *testing.T) {
	signer, other := testKey(t), testKey(t)
	spec := strings.Repeat("ab", 20)
	ta := trustFor(t, signer)
	for _, c := range fastPathCases(t, signer, other, spec) {
		t.Run(c.name, func(t *testing.T) {
			parts, ok := parseCanonical(c.bundle)
			fast := false
			if ok {
				_, _, fast = ta.fastVerify(&parts)
			}
			if fast != c.fast {
				t.Errorf("fast path taken = %v, want %v", fast, c.fast)
			}
			checkSame(t, ta, c.bundle)
		})
	}
}

// FuzzFastPath checks on fuzzed bundles that verifyEntry, fast path or not,
// decides as t.verify (sigstore-go) does.
func FuzzFastPath(f *testing.F) {
	signer, other := testKey(f), testKey(f)
	ta := trustFor(f, signer)
	for _, c := range fastPathCases(f, signer, other, strings.Repeat("ab", 20)) {
		f.Add(c.bundle)
	}
	f.Fuzz(func(t *testing.T, bundle []byte) {
		checkSame(t, ta, bundle)
	})
}

// checkSame checks that verifyEntry at entry 2 and t.verify agree on bundle,
// and that a bundle the fast path accepts is one t.verify accepts.
func checkSame(t *testing.T, ta *trustAt, bundle []byte) {
	t.Helper()
	var parts *dsseParts
	if p, ok := parseCanonical(bundle); ok {
		parts = &p
		if fp, fk, ok := ta.fastVerify(parts); ok {
			sp, sk, err := ta.t.verify(2, bundle)
			if err != nil {
				t.Fatalf("the fast path accepts a bundle sigstore-go rejects: %v\n%s", err, bundle)
			}
			if fk.ID != sk.ID || fp.Summary != sp.Summary || fp.Seq != sp.Seq || fp.Subject != sp.Subject {
				t.Fatalf("the fast path reads %+v signed by %s, sigstore-go %+v signed by %s", fp, fk.ID, sp, sk.ID)
			}
		}
	}
	gp, gk, gerr := verifyEntry(ta, 2, bundle, parts)
	wp, wk, werr := ta.t.verify(2, bundle)
	if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
		t.Fatalf("verifyEntry: %v; t.verify: %v", gerr, werr)
	}
	if gk.ID != wk.ID || gp.Summary != wp.Summary || gp.Seq != wp.Seq {
		t.Fatalf("verifyEntry reads %+v signed by %q, t.verify %+v signed by %q", gp, gk.ID, wp, wk.ID)
	}
}

func testKey(t testing.TB) *signing.Signer {
	t.Helper()
	s, err := signing.GenerateKey(filepath.Join(t.TempDir(), "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// trustFor is the trust after a genesis entry naming signer's key.
func trustFor(t testing.TB, signer *signing.Signer) *trustAt {
	t.Helper()
	var tr trust
	if err := tr.advance(Predicate{Seq: 1, Event: Event{Type: Genesis, Keys: KeySet(signer.PublicKey())}}); err != nil {
		t.Fatal(err)
	}
	return newTrustAt(tr)
}

// An old entry modified in the middle of the chain (in the commit that adds
// a later entry, history rewritten and force-pushed) is named at that
// commit, whether the modification lasts to the tip (where the tip's trees
// agree with it, so the fast path must not trust them) or is undone later.
func TestVerifyMidChainModification(t *testing.T) {
	for _, undo := range []bool{false, true} {
		t.Run(fmt.Sprintf("undone=%v", undo), func(t *testing.T) {
			f := newVerifyFixture(t, 6) // entries 1..7
			rewriteOldEntry(t, f, 4, 7, func(seq int) bool {
				return seq == 5 || seq > 5 && !undo
			})
			_, err := f.verify(t)
			wantVerifyError(t, err, 5, "modifies ledger/000000000/000000000002.json")
			// Every reader stops there too.
			_, err = New(f.open(t), Options{}).Update(context.Background())
			wantVerifyError(t, err, 5, "modifies ledger/000000000/000000000002.json")
		})
	}
}

// rewriteOldEntry rewrites f's ledger from entry keep+1 to last: each
// commit is made again, with a newline added to entry 2's file where
// modified says so for its seq (and the file restored where not), and the
// result force-pushed.
func rewriteOldEntry(t *testing.T, f *verifyFixture, keep, last int, modified func(seq int) bool) {
	t.Helper()
	work := gittest.Clone(t, f.bare)
	gittest.Git(t, work, "checkout", "-q", Branch)
	orig := strings.Fields(gittest.Git(t, work, "rev-list", "--reverse", "HEAD"))
	old := filepath.Join(work, EntryPath(2))
	original, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, work, "reset", "-q", "--hard", orig[keep-1])
	for seq := keep + 1; seq <= last; seq++ {
		c := orig[seq-1]
		gittest.Git(t, work, "checkout", "-q", c, "--", EntryPath(uint64(seq)))
		if modified(seq) {
			writeFile(t, old, string(original)+"\n")
		} else {
			writeFile(t, old, string(original))
		}
		msg := gittest.Git(t, work, "log", "-1", "--format=%B", c)
		gittest.Git(t, work, "add", "-A")
		gittest.Git(t, work, "commit", "-q", "-m", msg)
	}
	gittest.Git(t, work, "push", "-q", "--force", "origin", Branch)
}

// A reader continuing from what it read before checks the first new
// commits against its own trees, and later ones against the right parent:
// a stray file in a later commit is named as itself.
func TestUpdateIncrementalNamesTheChange(t *testing.T) {
	f := newVerifyFixture(t, 4) // entries 1..5
	repo := f.open(t)
	l := New(repo, Options{})
	if _, err := l.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.append(t, 2) // entries 6 and 7
	f.commit(t, true, func(work string) {
		writeFile(t, filepath.Join(work, "ledger/000000000/stray.json"), "{}")
	})
	if err := repo.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := l.Update(context.Background())
	wantVerifyError(t, err, 7, "adds ledger/000000000/stray.json")
	if l.State().Seq != 6 {
		t.Errorf("state at %d, want 6 (entry 6 verified, entry 7 refused)", l.State().Seq)
	}
}
