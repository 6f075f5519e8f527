package approval

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

func TestParseKey(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	rita := e.sshKey("rita", "ed25519", 0)
	bob := e.sshKey("bob", "ecdsa", 384)
	small := e.sshKey("small", "rsa", 1024)
	e.run(e.dir, nil, nil, "ssh-keygen", "-q", "-s", rita.path, "-I", "rita", "-n", "rita", bob.path+".pub")
	cert, err := os.ReadFile(bob.path + "-cert.pub")
	if err != nil {
		t.Fatal(err)
	}
	carol := e.pgpKey("carol")
	secret := e.run(e.dir, carol.env(), nil, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--export-secret-keys", carol.fingerprint)
	mallet := e.pgpKey("mallet")
	e.run(e.dir, carol.env(), []byte(mallet.armored), "gpg", "--batch", "--import")
	both := e.run(e.dir, carol.env(), nil, "gpg", "--batch", "--armor", "--export", carol.fingerprint, mallet.fingerprint)
	sk := skKey(t)

	ok := []struct {
		name, key, method, fingerprint string
	}{
		{"ssh ed25519", rita.pub, MethodSSH, rita.fingerprint},
		{"ssh ed25519 without comment, indented", "\n  " + strings.Join(strings.Fields(rita.pub)[:2], " ") + "\n", MethodSSH, rita.fingerprint},
		{"ssh ecdsa p384", bob.pub, MethodSSH, bob.fingerprint},
		{"ssh sk-ed25519", sk.pub, MethodSSH, e.skFingerprint(sk.pub)},
		{"openpgp", carol.armored, MethodOpenPGP, carol.fingerprint},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if k.Method != tc.method || k.Fingerprint != tc.fingerprint {
				t.Errorf("ParseKey = %s %s, want %s %s", k.Method, k.Fingerprint, tc.method, tc.fingerprint)
			}
		})
	}

	bad := []struct {
		name, key, want string
	}{
		{"empty", " \n", "empty"},
		{"garbage", "not a key", "ssh-ed25519 AAAA"},
		{"authorized_keys options", `no-touch-required,from="10.0.0.1" ` + rita.pub, "options"},
		{"two keys", rita.pub + "\n" + bob.pub, "more than one key"},
		{"certificate", string(cert), "certificates"},
		{"rsa 1024", small.pub, "at least 2048 bits"},
		{"openpgp secret key", secret, "never the secret key"},
		{"openpgp two keys", both, "holds 2 keys"},
		{"openpgp truncated", carol.armored[:len(carol.armored)/2], "gpg --armor --export"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey(tc.key)
			if err == nil {
				t.Fatalf("ParseKey = %v, want an error", k)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// skFingerprint is ssh-keygen -lf of a public key line.
func (e *gitEnv) skFingerprint(pub string) string {
	e.t.Helper()
	path := filepath.Join(e.dir, "sk.pub")
	if err := os.WriteFile(path, []byte(pub+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return strings.Fields(e.run(e.dir, nil, nil, "ssh-keygen", "-lf", path))[1]
}

// testSKKey is an sk-ssh-ed25519@openssh.com key with its private half in
// software, signing as a FIDO authenticator does.
type testSKKey struct {
	pub  string
	key  ssh.PublicKey
	priv ed25519.PrivateKey
}

const skApplication = "ssh:"

func skKey(t *testing.T) testSKKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.ParsePublicKey(ssh.Marshal(struct {
		Name        string
		Key         []byte
		Application string
	}{ssh.KeyAlgoSKED25519, pub, skApplication}))
	if err != nil {
		t.Fatal(err)
	}
	return testSKKey{pub: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))) + " sk@example.com", key: key, priv: priv}
}

// sign makes an armored SSHSIG signature of message in namespace git, with
// the authenticator flags given (0x01: user present).
func (k testSKKey) sign(message []byte, flags byte) string {
	h := sha512.Sum512(message)
	signed := append([]byte("SSHSIG"), ssh.Marshal(struct {
		Namespace, Reserved, HashAlgorithm, Hash string
	}{sshNamespace, "", string(sshsig.HashSHA512), string(h[:])})...)
	app, data := sha256.Sum256([]byte(skApplication)), sha256.Sum256(signed)
	counter := binary.BigEndian.AppendUint32(nil, 7)
	msg := append(append(append(app[:], flags), counter...), data[:]...)
	sig := &sshsig.Signature{
		Version:       1,
		PublicKey:     k.key,
		Namespace:     sshNamespace,
		HashAlgorithm: sshsig.HashSHA512,
		Signature: &ssh.Signature{
			Format: ssh.KeyAlgoSKED25519,
			Blob:   ed25519.Sign(k.priv, msg),
			Rest:   append([]byte{flags}, counter...),
		},
	}
	return string(sshsig.Armor(sig))
}

// TestSecurityKey verifies signatures of an sk-ssh-ed25519 key: they count
// only when the authenticator asserted user presence (a touch). That is
// stricter than git: ssh-keygen -Y verify (OpenSSH 9.2) accepts a signature
// without it, which the test records.
func TestSecurityKey(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	rita := e.sshKey("rita", "ed25519", 0)
	sk := skKey(t)
	key, err := ParseKey(sk.pub)
	if err != nil {
		t.Fatal(err)
	}
	key.Member = "sam"
	r := e.repo()
	r.git(nil, signSSH(rita), "commit", "-q", "-S", "--allow-empty", "-m", "Merge proposal")
	raw := r.catFile("commit", "HEAD")
	payload, _, _ := splitCommit(raw)
	path := filepath.Join(e.dir, "allowed_signers")
	if err := os.WriteFile(path, []byte("sam@example.com namespaces=\"git\" "+sk.pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		flags byte
		ok    bool
		gitOK bool
	}{
		{"user present", 0x01, true, true},
		{"user present and verified", 0x05, true, true},
		{"no user presence", 0x00, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grafted := graftSignature(t, raw, sk.sign(payload, tc.flags))
			got, err := VerifyCommit(grafted, []Key{key})
			if tc.ok {
				check(t, got, err, wantResult{member: "sam"})
			} else {
				check(t, got, err, wantResult{kind: ErrBadSignature, fingerprint: key.Fingerprint})
			}
			if gitOK := r.gitVerifies("verify-commit", r.write("commit", grafted), path, nil); gitOK != tc.gitOK {
				t.Errorf("git verify-commit ok = %v, want %v", gitOK, tc.gitOK)
			}
		})
	}
}

// TestOpenPGPKeyLifetime: a signature by a signing subkey counts for the
// primary key's Key, and one by a key that has since expired does not, as
// git verify-commit (gpg's EXPKEYSIG) refuses it too.
func TestOpenPGPKeyLifetime(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	dana := e.pgpKey("dana")
	e.run(e.dir, dana.env(), nil, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
		"--quick-add-key", dana.fingerprint, "ed25519", "sign", "never")
	dana.armored = e.run(e.dir, dana.env(), nil, "gpg", "--batch", "--armor", "--export", dana.fingerprint)
	key, err := ParseKey(dana.armored)
	if err != nil {
		t.Fatal(err)
	}
	key.Member = "dana"
	if key.Fingerprint != dana.fingerprint {
		t.Fatalf("fingerprint %s, want the primary key's %s", key.Fingerprint, dana.fingerprint)
	}
	r := e.repo()
	r.git(dana.env(), signPGP(dana), "commit", "-q", "-S", "--allow-empty", "-m", "by the subkey")
	raw := r.catFile("commit", "HEAD")
	_, sig, _ := splitCommit(raw)
	if s, err := onePGPSignature(armorBody(t, sig)); err != nil || strings.EqualFold(hex.EncodeToString(s.IssuerFingerprint), dana.fingerprint) {
		t.Fatalf("the commit is not signed by the subkey: %v", err)
	}
	got, err := VerifyCommit(raw, []Key{key})
	check(t, got, err, wantResult{member: "dana"})
	if !r.gitVerifies("verify-commit", "HEAD", "/dev/null", dana.env()) {
		t.Error("git verify-commit refuses the subkey's signature")
	}

	// A key valid for 2 seconds: it signs, parses and verifies now, and
	// verifies no more once it expired.
	eve := pgpKeyExpiring(e, "eve", "seconds=2")
	eveKey, err := ParseKey(eve.armored)
	if err != nil {
		t.Fatal(err)
	}
	eveKey.Member = "eve"
	r.git(eve.env(), signPGP(eve), "commit", "-q", "-S", "--allow-empty", "-m", "before expiry")
	raw = r.catFile("commit", "HEAD")
	if _, err := VerifyCommit(raw, []Key{eveKey}); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	time.Sleep(3 * time.Second)
	got, err = VerifyCommit(raw, []Key{eveKey})
	check(t, got, err, wantResult{kind: ErrBadSignature, fingerprint: eve.fingerprint})
	if r.gitVerifies("verify-commit", "HEAD", "/dev/null", eve.env()) {
		t.Error("git verify-commit accepts a signature by an expired key")
	}
	if _, err := ParseKey(eve.armored); err == nil {
		t.Error("ParseKey accepts an expired key")
	}
}

func armorBody(t *testing.T, sig []byte) []byte {
	t.Helper()
	b, err := armor.Decode(bytes.NewReader(sig))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(b.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// pgpKeyExpiring is gitEnv.pgpKey with an expiry.
func pgpKeyExpiring(e *gitEnv, name, expire string) pgpKey {
	e.t.Helper()
	home := filepath.Join(e.dir, "gpg-"+name)
	if err := os.Mkdir(home, 0o700); err != nil {
		e.t.Fatal(err)
	}
	e.gpgs = append(e.gpgs, home)
	k := pgpKey{home: home}
	uid := name + " <" + name + "@example.com>"
	e.run(e.dir, k.env(), nil, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
		"--quick-generate-key", uid, "ed25519", "sign", expire)
	for _, line := range strings.Split(e.run(e.dir, k.env(), nil, "gpg", "--batch", "--with-colons", "--fingerprint", uid), "\n") {
		if strings.HasPrefix(line, "fpr:") {
			k.fingerprint = strings.Split(line, ":")[9]
			break
		}
	}
	if k.fingerprint == "" {
		e.t.Fatal("gpg printed no fingerprint")
	}
	k.armored = e.run(e.dir, k.env(), nil, "gpg", "--batch", "--armor", "--export", k.fingerprint)
	return k
}
