package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const testCommit = "0123456789abcdef0123456789abcdef01234567"

// testStatement returns an in-toto Statement v1 about a git commit, with
// irregular whitespace so that tests notice any re-serialisation.
func testStatement(commit string) []byte {
	return []byte(`{"_type": "https://in-toto.io/Statement/v1",
  "subject": [{"name": "git+https://example.com/ops.git", "digest": {"gitCommit": "` + commit + `"}}],
  "predicateType": "https://agentgitops.example/reconcile/v1",   "predicate": {"run": "r-1"}}`)
}

func newTestSigner(t testing.TB) *Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

// bundleHint returns verificationMaterial.publicKey.hint from bundle JSON.
func bundleHint(t *testing.T, bundleJSON []byte) string {
	t.Helper()
	var b struct {
		VerificationMaterial struct {
			PublicKey struct {
				Hint string `json:"hint"`
			} `json:"publicKey"`
		} `json:"verificationMaterial"`
	}
	if err := json.Unmarshal(bundleJSON, &b); err != nil {
		t.Fatalf("decode bundle: %v", err)
	}
	return b.VerificationMaterial.PublicKey.Hint
}

// wantKeyID computes base64(sha256(PKIX DER)) independently of the package.
func wantKeyID(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestGenerateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ops.key")

	s, err := GenerateKey(path)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}

	for _, f := range []struct {
		path     string
		mode     fs.FileMode
		pemType  string
		parseKey func([]byte) (any, error)
	}{
		{path, 0o600, "PRIVATE KEY", func(der []byte) (any, error) { return x509.ParsePKCS8PrivateKey(der) }},
		{path + ".pub", 0o644, "PUBLIC KEY", x509.ParsePKIXPublicKey},
	} {
		t.Run(filepath.Base(f.path), func(t *testing.T) {
			fi, err := os.Stat(f.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != f.mode {
				t.Errorf("mode = %v, want %v", got, f.mode)
			}
			data, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode(data)
			if block == nil || block.Type != f.pemType {
				t.Fatalf("want one %q PEM block, got %v", f.pemType, block)
			}
			if len(bytes.TrimSpace(rest)) != 0 {
				t.Errorf("trailing data after PEM block: %q", rest)
			}
			if _, err := f.parseKey(block.Bytes); err != nil {
				t.Errorf("parse %s: %v", f.pemType, err)
			}
		})
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the key and .pub (no temporary files)", names)
	}

	t.Run("load round trip", func(t *testing.T) {
		loaded, err := LoadSigner(path)
		if err != nil {
			t.Fatalf("LoadSigner: %v", err)
		}
		if loaded.KeyID() != s.KeyID() {
			t.Errorf("loaded KeyID = %q, generated %q", loaded.KeyID(), s.KeyID())
		}
		if !bytes.Equal(loaded.PublicKeyPEM(), s.PublicKeyPEM()) {
			t.Errorf("loaded public key PEM differs")
		}
		if loaded.PublicKey().Source != path || s.PublicKey().Source != path {
			t.Errorf("Source = %q (loaded), %q (generated); want %q", loaded.PublicKey().Source, s.PublicKey().Source, path)
		}
		pub, err := LoadPublicKey(path + ".pub")
		if err != nil {
			t.Fatalf("LoadPublicKey: %v", err)
		}
		if pub.ID != s.KeyID() {
			t.Errorf(".pub key ID = %q, want %q", pub.ID, s.KeyID())
		}
		if !bytes.Equal(pub.PEM(), s.PublicKeyPEM()) {
			t.Errorf(".pub PEM differs from PublicKeyPEM")
		}
		if got := wantKeyID(t, pub.Key); got != s.KeyID() {
			t.Errorf("KeyID = %q, want base64(sha256(PKIX DER)) = %q", s.KeyID(), got)
		}

		// A bundle from the loaded key carries the key ID as its hint and
		// verifies with the .pub file.
		b, err := loaded.SignStatement(context.Background(), testStatement(testCommit))
		if err != nil {
			t.Fatalf("SignStatement: %v", err)
		}
		if hint := bundleHint(t, b); hint != s.KeyID() {
			t.Errorf("bundle hint = %q, want KeyID %q", hint, s.KeyID())
		}
		if hint := string(loaded.GetHint()); hint != s.KeyID() {
			t.Errorf("GetHint = %q, want KeyID %q", hint, s.KeyID())
		}
		v, err := NewVerifier(pub)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(b); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})

	t.Run("refuses to overwrite", func(t *testing.T) {
		privBefore, _ := os.ReadFile(path)
		pubBefore, _ := os.ReadFile(path + ".pub")

		onlyPub := filepath.Join(dir, "only-pub.key")
		if err := os.WriteFile(onlyPub+".pub", []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, onlyPub} {
			_, err := GenerateKey(p)
			if err == nil {
				t.Fatalf("GenerateKey(%q) over an existing file succeeded", p)
			}
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("GenerateKey(%q) error = %v, want errors.Is fs.ErrExist", p, err)
			}
		}
		if _, err := os.Stat(onlyPub); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("GenerateKey wrote %q although its .pub existed (stat: %v)", onlyPub, err)
		}
		privAfter, _ := os.ReadFile(path)
		pubAfter, _ := os.ReadFile(path + ".pub")
		keep, _ := os.ReadFile(onlyPub + ".pub")
		if !bytes.Equal(privBefore, privAfter) || !bytes.Equal(pubBefore, pubAfter) || string(keep) != "keep me" {
			t.Errorf("existing files were modified")
		}
	})

	t.Run("missing directory", func(t *testing.T) {
		_, err := GenerateKey(filepath.Join(dir, "no-such-dir", "k"))
		if err == nil {
			t.Fatal("GenerateKey into a missing directory succeeded")
		}
	})
}

func TestLoadSignerErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384PKCS8, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPKCS8, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSigner(t)

	tests := []struct {
		name    string
		path    string
		wantErr string // substring, besides the path
		wantIs  error
	}{
		{"missing file", filepath.Join(dir, "absent.key"), "no such file", fs.ErrNotExist},
		{"directory", dir, "is a directory", nil},
		{"empty file", write("empty.key", nil), "no PEM block", nil},
		{"garbage", write("garbage.key", []byte("this is not a key\n\x00\x01")), "no PEM block", nil},
		{"PKCS#8 RSA key", write("rsa-pkcs8.key", pemOf("PRIVATE KEY", rsaPKCS8)), "RSA key", nil},
		{"PKCS#1 RSA key", write("rsa-pkcs1.key", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))), "RSA key", nil},
		{"ECDSA P-384 key", write("p384.key", pemOf("PRIVATE KEY", p384PKCS8)), "P-384; want P-256", nil},
		{"Ed25519 key", write("ed25519.key", pemOf("PRIVATE KEY", edPKCS8)), "Ed25519 key", nil},
		{"public key as private key", write("ops.pub", s.PublicKeyPEM()), "public key, not a private key", nil},
		{"corrupt PKCS#8", write("corrupt.key", pemOf("PRIVATE KEY", []byte("not DER"))), "parse PKCS#8", nil},
		{"encrypted PKCS#8", write("enc.key", pemOf("ENCRYPTED PRIVATE KEY", []byte("x"))), "encrypted", nil},
		{"unknown PEM type", write("cert.pem", pemOf("CERTIFICATE", []byte("x"))), `"CERTIFICATE"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, err := LoadSigner(tt.path)
			if err == nil {
				t.Fatalf("LoadSigner succeeded with key %s", signer.KeyID())
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.path) {
				t.Errorf("error %q does not name the file %q", msg, tt.path)
			}
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error %q does not say %q", msg, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
			if strings.Contains(msg, "BEGIN") || strings.Contains(msg, "MII") || strings.Contains(msg, "MFk") {
				t.Errorf("error %q seems to quote key material", msg)
			}
			// The same bytes from memory (a Secret's value): the error
			// names the source instead of a file.
			data, rerr := os.ReadFile(tt.path)
			if rerr != nil {
				return
			}
			const source = "agents/ledger-key/key.pem"
			if signer, err := ParseSigner(data, source); err == nil {
				t.Fatalf("ParseSigner succeeded with key %s", signer.KeyID())
			} else if msg := err.Error(); !strings.Contains(msg, source) || !strings.Contains(msg, tt.wantErr) ||
				strings.Contains(msg, "BEGIN") || strings.Contains(msg, "MII") || strings.Contains(msg, "MFk") {
				t.Errorf("ParseSigner error %q: want it to name %q, say %q and quote no key material", msg, source, tt.wantErr)
			}
		})
	}
}

func TestLoadSignerFormats(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	// openssl ecparam -name prime256v1 -genkey writes an EC PARAMETERS block
	// before the key.
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})

	want := wantKeyID(t, &priv.PublicKey)
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{"SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{"openssl ecparam", append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := LoadSigner(p)
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			if s.KeyID() != want {
				t.Errorf("KeyID = %q, want %q", s.KeyID(), want)
			}
			m, err := ParseSigner(tt.data, "secret")
			if err != nil || m.KeyID() != want || m.PublicKey().Source != "secret" {
				t.Errorf("ParseSigner = %v, %v; want key %q from %q", m, err, want, "secret")
			}
		})
	}
}

func TestNewSignerErrors(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mismatched := new(ecdsa.PrivateKey)
	*mismatched = *a
	mismatched.PublicKey = b.PublicKey

	for _, tt := range []struct {
		name string
		key  *ecdsa.PrivateKey
		want string
	}{
		{"nil", nil, "no private key"},
		{"P-384", p384, "want P-256"},
		{"public half of another key", mismatched, "does not match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSigner(tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSigner error = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestSignStatementRejects(t *testing.T) {
	s := newTestSigner(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tt := range []struct {
		name      string
		ctx       context.Context
		statement []byte
		want      string
	}{
		{"empty", context.Background(), nil, "empty statement"},
		{"not JSON", context.Background(), []byte("hello"), "not a JSON object"},
		{"JSON array", context.Background(), []byte(`[1]`), "not a JSON object"},
		{"no _type", context.Background(), []byte(`{"subject":[]}`), "no _type"},
		{"Statement v0.1", context.Background(), []byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`), "want \"https://in-toto.io/Statement/v1\""},
		{"cancelled context", cancelled, testStatement(testCommit), context.Canceled.Error()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := s.SignStatement(tt.ctx, tt.statement)
			if err == nil {
				t.Fatalf("SignStatement succeeded: %s", b)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestSignStatementBundleShape(t *testing.T) {
	s := newTestSigner(t)
	statement := testStatement(testCommit)
	b, err := s.SignStatement(context.Background(), statement)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		MediaType            string `json:"mediaType"`
		VerificationMaterial struct {
			PublicKey                 *struct{ Hint string } `json:"publicKey"`
			TlogEntries               []json.RawMessage      `json:"tlogEntries"`
			TimestampVerificationData json.RawMessage        `json:"timestampVerificationData"`
		} `json:"verificationMaterial"`
		DsseEnvelope struct {
			Payload     []byte `json:"payload"`
			PayloadType string `json:"payloadType"`
			Signatures  []struct {
				Sig   []byte `json:"sig"`
				Keyid string `json:"keyid"`
			} `json:"signatures"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.MediaType != "application/vnd.dev.sigstore.bundle.v0.3+json" {
		t.Errorf("mediaType = %q", got.MediaType)
	}
	if got.VerificationMaterial.PublicKey == nil || got.VerificationMaterial.PublicKey.Hint != s.KeyID() {
		t.Errorf("publicKey = %+v, want hint %q", got.VerificationMaterial.PublicKey, s.KeyID())
	}
	if len(got.VerificationMaterial.TlogEntries) != 0 || got.VerificationMaterial.TimestampVerificationData != nil {
		t.Errorf("bundle has transparency log entries or timestamps; want none")
	}
	env := got.DsseEnvelope
	if env.PayloadType != PayloadType || !bytes.Equal(env.Payload, statement) || len(env.Signatures) != 1 {
		t.Fatalf("envelope = type %q, %d signatures, payload %q", env.PayloadType, len(env.Signatures), env.Payload)
	}
	if env.Signatures[0].Keyid != "" {
		t.Errorf("DSSE signature keyid = %q; want none (sigstore-go would require it to be the SSH fingerprint)", env.Signatures[0].Keyid)
	}
	// The signature is ECDSA over SHA-256 of the DSSE PAE.
	pae := "DSSEv1 " + strconv.Itoa(len(PayloadType)) + " " + PayloadType + " " + strconv.Itoa(len(statement)) + " " + string(statement)
	digest := sha256.Sum256([]byte(pae))
	if !ecdsa.VerifyASN1(s.PublicKey().Key.(*ecdsa.PublicKey), digest[:], env.Signatures[0].Sig) {
		t.Errorf("DSSE signature does not verify over the PAE with crypto/ecdsa")
	}
}
