package approval

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

const (
	runID    = "3f2a9c0d41be"
	proposal = "agents/dependency-bumper/" + runID
)

// fixture is a repository with a proposal branch, merges of it signed by
// listed and unlisted keys of each kind, and approval tags on its head.
type fixture struct {
	e    *gitEnv
	r    *repo
	head string // the proposal head

	rita, bob, ron, mallory sshKey // listed: rita (ed25519), bob (ecdsa), ron (rsa)
	carol, mallet           pgpKey // listed: carol
	keys                    []Key  // the listed keys, as reviewers.hcl would give them

	commits map[string]string // merge commits by who signed them ("" unsigned)
	tags    map[string]string // approval tag objects by who signed them

	allowed string // an allowed_signers file of the listed SSH keys
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := newGitEnv(t)
	f := &fixture{
		e:       e,
		rita:    e.sshKey("rita", "ed25519", 0),
		bob:     e.sshKey("bob", "ecdsa", 256),
		ron:     e.sshKey("ron", "rsa", 3072),
		mallory: e.sshKey("mallory", "ed25519", 0),
		carol:   e.pgpKey("carol"),
		mallet:  e.pgpKey("mallet"),
		commits: map[string]string{},
		tags:    map[string]string{},
	}
	for _, m := range []struct{ member, group, key string }{
		{"rita", "sre", f.rita.pub},
		{"bob", "sre", f.bob.pub},
		{"ron", "security", f.ron.pub},
		{"carol", "security", f.carol.armored},
	} {
		k, err := ParseKey(m.key)
		if err != nil {
			t.Fatalf("ParseKey(%s): %v", m.member, err)
		}
		k.Member, k.Group = m.member, m.group
		f.keys = append(f.keys, k)
	}

	r := e.repo()
	f.r = r
	if err := os.WriteFile(filepath.Join(r.dir, "deps.txt"), []byte("lib v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.git(nil, nil, "add", "deps.txt")
	r.git(nil, nil, "commit", "-q", "-m", "base")
	base := r.git(nil, nil, "rev-parse", "HEAD")
	r.git(nil, nil, "switch", "-q", "-c", proposal)
	if err := os.WriteFile(filepath.Join(r.dir, "deps.txt"), []byte("lib v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.git(nil, nil, "commit", "-q", "-a", "-m", "Bump lib to v2\n\nAgent: dependency-bumper\nAgent-Run: "+runID)
	f.head = r.git(nil, nil, "rev-parse", "HEAD")
	r.git(nil, nil, "switch", "-q", "main")

	// A merge of the proposal into main per signer, each from base.
	merge := func(who string, env, opts []string) {
		r.git(nil, nil, "reset", "-q", "--hard", base)
		args := []string{"merge", "-q", "--no-ff", "-m", "Merge " + proposal + " (" + who + ")"}
		if opts != nil {
			args = append(args, "-S")
		}
		r.git(env, opts, append(args, proposal)...)
		f.commits[who] = r.git(nil, nil, "rev-parse", "HEAD")
	}
	merge("", nil, nil)
	merge("rita", nil, signSSH(f.rita))
	merge("bob", nil, signSSH(f.bob))
	merge("ron", nil, signSSH(f.ron))
	merge("mallory", nil, signSSH(f.mallory))
	merge("carol", f.carol.env(), signPGP(f.carol))
	merge("mallet", f.mallet.env(), signPGP(f.mallet))

	// Approval tags on the proposal head.
	tag := func(who string, env, opts []string) {
		name := "approve/" + runID + "/" + who
		args := []string{"tag", "-a", "-m", "ok"}
		if opts != nil {
			args = append(args, "-s")
		}
		r.git(env, opts, append(args, name, f.head)...)
		f.tags[who] = r.git(nil, nil, "rev-parse", "refs/tags/"+name)
	}
	tag("nobody", nil, nil)
	tag("rita", nil, signSSH(f.rita))
	tag("bob", nil, signSSH(f.bob))
	tag("mallory", nil, signSSH(f.mallory))
	tag("carol", f.carol.env(), signPGP(f.carol))
	tag("mallet", f.mallet.env(), signPGP(f.mallet))

	f.allowed = r.allowedSigners(f.rita, f.bob, f.ron)
	return f
}

// key returns the listed key of member.
func (f *fixture) key(t *testing.T, member string) Key {
	t.Helper()
	for _, k := range f.keys {
		if k.Member == member {
			return k
		}
	}
	t.Fatalf("no key for %s", member)
	return Key{}
}

// editMessage returns raw with the message's first occurrence of old
// replaced, as someone rewriting a signed object would.
func editMessage(t *testing.T, raw []byte, old, new string) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("\n\n"))
	j := bytes.LastIndex(raw, []byte(old))
	if i < 0 || j < i {
		t.Fatalf("%q not in the message of\n%s", old, raw)
	}
	return append(append(append([]byte{}, raw[:j]...), new...), raw[j+len(old):]...)
}

// graftSignature returns commit raw with its gpgsig header's value replaced
// by sig, indented as git stores it.
func graftSignature(t *testing.T, raw []byte, sig string) []byte {
	t.Helper()
	payload, _, signed := splitCommit(raw)
	if !signed {
		t.Fatal("graft onto an unsigned commit")
	}
	hdr := "gpgsig " + strings.ReplaceAll(strings.TrimRight(sig, "\n"), "\n", "\n ") + "\n"
	end := bytes.Index(payload, []byte("\n\n")) + 1
	return append(append(append([]byte{}, payload[:end]...), hdr...), payload[end:]...)
}

type wantResult struct {
	member      string // the key returned, or "" for an error
	kind        error  // the sentinel, or nil
	fingerprint string // the fingerprint the error names, or ""
}

func check(t *testing.T, got Key, err error, want wantResult) {
	t.Helper()
	if want.kind == nil {
		if err != nil {
			t.Fatalf("err = %v, want signed by %s", err, want.member)
		}
		if got.Member != want.member {
			t.Fatalf("signed by %q, want %q", got.Member, want.member)
		}
		return
	}
	if !errors.Is(err, want.kind) {
		t.Fatalf("err = %v, want %v", err, want.kind)
	}
	for _, other := range []error{ErrUnsigned, ErrUnknownSigner, ErrBadSignature} {
		if other != want.kind && errors.Is(err, other) {
			t.Errorf("err = %v wraps %v too", err, other)
		}
	}
	var ve *VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %T, want *VerificationError", err)
	}
	if want.fingerprint != "" {
		if ve.Fingerprint != want.fingerprint || !strings.Contains(err.Error(), want.fingerprint) {
			t.Errorf("err = %v (Fingerprint %q), want it to name %s", err, ve.Fingerprint, want.fingerprint)
		}
	}
	if got.Method != "" || got.Member != "" {
		t.Errorf("returned key %v with an error", got)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.r

	// Keys parse to the fingerprints ssh-keygen -lf and gpg --fingerprint print.
	for member, fpr := range map[string]string{"rita": f.rita.fingerprint, "bob": f.bob.fingerprint, "ron": f.ron.fingerprint, "carol": f.carol.fingerprint} {
		k := f.key(t, member)
		method := MethodSSH
		if member == "carol" {
			method = MethodOpenPGP
		}
		if k.Fingerprint != fpr || k.Method != method {
			t.Errorf("%s: key %s %s, want %s %s", member, k.Method, k.Fingerprint, method, fpr)
		}
	}

	ritaMerge := r.catFile("commit", f.commits["rita"])
	carolMerge := r.catFile("commit", f.commits["carol"])

	// An SSH signature of rita's merge payload in another namespace.
	payload, _, _ := splitCommit(ritaMerge)
	payloadFile := filepath.Join(f.e.dir, "payload")
	if err := os.WriteFile(payloadFile, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	f.e.run(f.e.dir, nil, nil, "ssh-keygen", "-q", "-Y", "sign", "-n", "file", "-f", f.rita.path, payloadFile)
	fileSig, err := os.ReadFile(payloadFile + ".sig")
	if err != nil {
		t.Fatal(err)
	}

	commits := []struct {
		name string
		raw  []byte
		keys []Key
		want wantResult
	}{
		{"unsigned merge", r.catFile("commit", f.commits[""]), f.keys, wantResult{kind: ErrUnsigned}},
		{"ssh ed25519 merge", ritaMerge, f.keys, wantResult{member: "rita"}},
		{"ssh ecdsa merge", r.catFile("commit", f.commits["bob"]), f.keys, wantResult{member: "bob"}},
		{"ssh rsa merge", r.catFile("commit", f.commits["ron"]), f.keys, wantResult{member: "ron"}},
		{"openpgp merge", carolMerge, f.keys, wantResult{member: "carol"}},
		{"ssh unlisted signer", r.catFile("commit", f.commits["mallory"]), f.keys, wantResult{kind: ErrUnknownSigner, fingerprint: f.mallory.fingerprint}},
		{"openpgp unlisted signer", r.catFile("commit", f.commits["mallet"]), f.keys, wantResult{kind: ErrUnknownSigner, fingerprint: f.mallet.fingerprint}},
		{"ssh message edited after signing", editMessage(t, ritaMerge, "(rita)", "(rita, and more)"), f.keys, wantResult{kind: ErrBadSignature, fingerprint: f.rita.fingerprint}},
		{"openpgp message edited after signing", editMessage(t, carolMerge, "(carol)", "(carol, and more)"), f.keys, wantResult{kind: ErrBadSignature, fingerprint: f.carol.fingerprint}},
		{"ssh header edited after signing", bytes.Replace(ritaMerge, []byte("committer dependency-bumper"), []byte("committer rita"), 1), f.keys, wantResult{kind: ErrBadSignature}},
		{"ssh signature in namespace file", graftSignature(t, ritaMerge, string(fileSig)), f.keys, wantResult{kind: ErrBadSignature, fingerprint: f.rita.fingerprint}},
		{"ssh signature, only openpgp keys", ritaMerge, []Key{f.key(t, "carol")}, wantResult{kind: ErrUnknownSigner, fingerprint: f.rita.fingerprint}},
		{"openpgp signature, only ssh keys", carolMerge, []Key{f.key(t, "rita"), f.key(t, "bob")}, wantResult{kind: ErrUnknownSigner, fingerprint: f.carol.fingerprint}},
		{"no keys", ritaMerge, nil, wantResult{kind: ErrUnknownSigner, fingerprint: f.rita.fingerprint}},
		{"key not made by ParseKey", ritaMerge, []Key{{Member: "rita", Method: MethodSSH, Fingerprint: f.rita.fingerprint}}, wantResult{kind: ErrUnknownSigner}},
		{"a tag is not a commit", r.catFile("tag", f.tags["rita"]), f.keys, wantResult{kind: ErrBadSignature}},
	}
	for _, tc := range commits {
		t.Run("commit/"+tc.name, func(t *testing.T) {
			got, err := VerifyCommit(tc.raw, tc.keys)
			check(t, got, err, tc.want)
			if tc.want.kind == nil && (got.Method == "" || got.Fingerprint == "") {
				t.Errorf("returned key %v lacks method or fingerprint", got)
			}
		})
	}

	ritaTag := r.catFile("tag", f.tags["rita"])
	tags := []struct {
		name string
		raw  []byte
		keys []Key
		want wantResult
	}{
		{"unsigned tag", r.catFile("tag", f.tags["nobody"]), f.keys, wantResult{kind: ErrUnsigned}},
		{"ssh ed25519 tag", ritaTag, f.keys, wantResult{member: "rita"}},
		{"ssh ecdsa tag", r.catFile("tag", f.tags["bob"]), f.keys, wantResult{member: "bob"}},
		{"openpgp tag", r.catFile("tag", f.tags["carol"]), f.keys, wantResult{member: "carol"}},
		{"ssh unlisted signer", r.catFile("tag", f.tags["mallory"]), f.keys, wantResult{kind: ErrUnknownSigner, fingerprint: f.mallory.fingerprint}},
		{"openpgp unlisted signer", r.catFile("tag", f.tags["mallet"]), f.keys, wantResult{kind: ErrUnknownSigner, fingerprint: f.mallet.fingerprint}},
		{"ssh tag renamed after signing", bytes.Replace(ritaTag, []byte("/rita\n"), []byte("/rita2\n"), 1), f.keys, wantResult{kind: ErrBadSignature, fingerprint: f.rita.fingerprint}},
		{"ssh tag message edited", bytes.Replace(ritaTag, []byte("\n\nok\n"), []byte("\n\nok!\n"), 1), f.keys, wantResult{kind: ErrBadSignature}},
		{"no keys", ritaTag, nil, wantResult{kind: ErrUnknownSigner}},
		{"a commit is not a tag", ritaMerge, f.keys, wantResult{kind: ErrBadSignature}},
	}
	for _, tc := range tags {
		t.Run("tag/"+tc.name, func(t *testing.T) {
			got, err := VerifyTag(tc.raw, tc.keys)
			check(t, got, err, tc.want)
		})
	}

	// git agrees: every commit and tag above that verifies for us verifies
	// for git verify-commit/verify-tag with the listed SSH keys in
	// allowed_signers and the listed OpenPGP key in GNUPGHOME, and every
	// one that does not, does not; and git verifies the same payload.
	t.Run("git agrees", func(t *testing.T) {
		verdicts := map[bool]int{}
		defer func() {
			if verdicts[true] < 6 || verdicts[false] < 8 {
				t.Errorf("git accepted %d and refused %d objects; the cross-check covers too little", verdicts[true], verdicts[false])
			}
		}()
		for _, tc := range commits {
			if !bytes.HasPrefix(tc.raw, []byte("tree ")) || len(tc.keys) != len(f.keys) {
				continue
			}
			id := r.write("commit", tc.raw)
			_, err := VerifyCommit(tc.raw, f.keys)
			gitOK := r.gitVerifies("verify-commit", id, f.allowed, f.carol.env())
			verdicts[gitOK]++
			if gitOK != (err == nil) {
				t.Errorf("%s: git verify-commit ok = %v, VerifyCommit err = %v", tc.name, gitOK, err)
			}
			if p, _, signed := splitCommit(tc.raw); signed {
				if gp := r.gitPayload("verify-commit", id); gp != string(p) {
					t.Errorf("%s: payload\n%s\ngit verifies\n%s", tc.name, p, gp)
				}
			}
		}
		for _, tc := range tags {
			if !bytes.HasPrefix(tc.raw, []byte("object ")) || len(tc.keys) != len(f.keys) {
				continue
			}
			id := r.write("tag", tc.raw)
			_, err := VerifyTag(tc.raw, f.keys)
			gitOK := r.gitVerifies("verify-tag", id, f.allowed, f.carol.env())
			verdicts[gitOK]++
			if gitOK != (err == nil) {
				t.Errorf("%s: git verify-tag ok = %v, VerifyTag err = %v", tc.name, gitOK, err)
			}
			if p, _, signed, _ := splitTag(tc.raw); signed {
				if gp := r.gitPayload("verify-tag", id); gp != string(p) {
					t.Errorf("%s: payload\n%s\ngit verifies\n%s", tc.name, p, gp)
				}
			}
		}
	})

	t.Run("member in two groups", func(t *testing.T) {
		rita2 := f.key(t, "rita")
		rita2.Group = "security"
		keys := append([]Key{f.key(t, "bob")}, f.key(t, "rita"), rita2)
		got, err := VerifyCommit(ritaMerge, keys)
		if err != nil || got.Group != "sre" {
			t.Fatalf("got %v, %v; want the first listed key, rita (sre)", got, err)
		}
	})

	t.Run("VerifyObject reads go-git objects", func(t *testing.T) {
		repo, err := git.PlainOpen(r.dir)
		if err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]wantResult{
			f.commits["rita"]:  {member: "rita"},
			f.commits["carol"]: {member: "carol"},
			f.commits[""]:      {kind: ErrUnsigned},
			f.tags["bob"]:      {member: "bob"},
			f.tags["mallory"]:  {kind: ErrUnknownSigner, fingerprint: f.mallory.fingerprint},
			r.git(nil, nil, "rev-parse", f.head+"^{tree}"): {kind: ErrBadSignature},
		} {
			o, err := repo.Storer.EncodedObject(plumbing.AnyObject, plumbing.NewHash(id))
			if err != nil {
				t.Fatal(err)
			}
			got, err := VerifyObject(o, f.keys)
			check(t, got, err, want)
		}
	})
}
