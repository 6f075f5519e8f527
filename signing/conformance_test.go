package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// conformanceDir returns the shared, externally written conformance
// material (../../shared/conformance from this package), or skips the test.
func conformanceDir(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Clean(filepath.Join(wd, "..", "..", "shared", "conformance"))
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Skipf("shared conformance material not found at %s", dir)
	}
	return dir
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestConformanceBundlePublish verifies sigstore-go's example bundle-publish
// (an npm publish attestation: a key-signed DSSE envelope holding an in-toto
// Statement v0.1, bundle media type v0.1, with one intoto tlog entry that our
// verifier neither requires nor checks). Its key hint is the OpenSSH SHA256
// fingerprint of publish_key.pub, not our key ID.
func TestConformanceBundlePublish(t *testing.T) {
	dir := filepath.Join(conformanceDir(t), "sigstore", "sigstore-go", "examples")
	bundleJSON := readFile(t, filepath.Join(dir, "bundle-publish.json"))
	publishKey, err := LoadPublicKey(filepath.Join(dir, "publish_key.pub"))
	if err != nil {
		t.Fatalf("LoadPublicKey: %v", err)
	}
	// A key that signed a different conformance bundle: the wrong key.
	wrongKey, err := LoadPublicKey(filepath.Join(conformanceDir(t), "sigstore", "conformance", "test", "assets", "bundle-verify", "managed-key-happy-path", "key.pub"))
	if err != nil {
		t.Fatalf("LoadPublicKey: %v", err)
	}

	tests := []struct {
		name   string
		keys   []PublicKey
		bundle []byte
		pass   bool
	}{
		{"publish key", []PublicKey{publishKey}, bundleJSON, true},
		{"publish key among others", []PublicKey{wrongKey, newTestSigner(t).PublicKey(), publishKey}, bundleJSON, true},
		{"wrong key", []PublicKey{wrongKey}, bundleJSON, false},
		{"edited payload", []PublicKey{publishKey}, editBundle(t, bundleJSON, func(b map[string]any) {
			p := decodeB64(t, envelope(b)["payload"])
			i := bytes.Index(p, []byte("76176ffa"))
			if i < 0 {
				t.Fatal("subject digest not found in payload")
			}
			p[i] = '8'
			envelope(b)["payload"] = base64.StdEncoding.EncodeToString(p)
		}), false},
		{"hint removed", []PublicKey{publishKey}, editBundle(t, bundleJSON, func(b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{}
		}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.keys...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tt.bundle)
			if !tt.pass {
				if !errors.Is(err, ErrVerification) {
					t.Fatalf("Verify error = %v, want ErrVerification", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Key.ID != publishKey.ID || got.Key.Source != publishKey.Source {
				t.Errorf("verified by %s, want %s", got.Key, publishKey)
			}
			var st struct {
				Type    string `json:"_type"`
				Subject []struct {
					Name   string            `json:"name"`
					Digest map[string]string `json:"digest"`
				} `json:"subject"`
			}
			if err := json.Unmarshal(got.Statement, &st); err != nil {
				t.Fatalf("statement: %v", err)
			}
			if st.Type != "https://in-toto.io/Statement/v0.1" || len(st.Subject) != 1 || st.Subject[0].Name != "pkg:npm/sigstore@1.3.0" ||
				!strings.HasPrefix(st.Subject[0].Digest["sha512"], "76176ffa3380") {
				t.Errorf("unexpected statement %s", got.Statement)
			}
			var raw struct {
				DsseEnvelope struct {
					Payload []byte `json:"payload"`
				} `json:"dsseEnvelope"`
			}
			if err := json.Unmarshal(tt.bundle, &raw); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Statement, raw.DsseEnvelope.Payload) {
				t.Errorf("Statement is not the DSSE payload byte for byte")
			}
		})
	}
}

// TestConformanceManagedKey runs the sigstore-conformance managed-key cases.
// They are message-signature bundles (hashedrekord over a.txt), not DSSE,
// so by our contract Verify rejects them with ErrVerification even with the
// right key. To show that the rejection is the contract and not a broken key,
// the happy path is also verified directly with sigstore-go against a.txt.
// managed-key-wrong-key_fail ships a key.pub whose base64 was edited
// ("...++++wrongkey=="): it does not parse, so nothing can verify with it.
func TestConformanceManagedKey(t *testing.T) {
	base := filepath.Join(conformanceDir(t), "sigstore", "conformance", "test", "assets", "bundle-verify")
	artifact := readFile(t, filepath.Join(base, "a.txt"))

	t.Run("managed-key-happy-path", func(t *testing.T) {
		dir := filepath.Join(base, "managed-key-happy-path")
		bundleJSON := readFile(t, filepath.Join(dir, "bundle.sigstore.json"))
		key, err := LoadPublicKey(filepath.Join(dir, "key.pub"))
		if err != nil {
			t.Fatalf("LoadPublicKey: %v", err)
		}
		// Our key ID convention is the one these bundles use as hint.
		if hint := bundleHint(t, bundleJSON); hint != key.ID {
			t.Errorf("bundle hint %q != key ID %q", hint, key.ID)
		}

		v, err := NewVerifier(key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(bundleJSON)
		if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "message signature") {
			t.Errorf("Verify error = %v, want ErrVerification for a message signature", err)
		}

		// The bundle itself is valid for this key and artifact.
		var b bundle.Bundle
		if err := b.UnmarshalJSON(bundleJSON); err != nil {
			t.Fatal(err)
		}
		sv, err := signature.LoadECDSAVerifier(key.Key.(*ecdsa.PublicKey), crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{key.ID: root.NewExpiringKey(sv, time.Time{}, time.Time{})})
		ref, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ref.Verify(&b, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(artifact)), verify.WithKey())); err != nil {
			t.Errorf("sigstore-go rejects the happy-path bundle with its key: %v", err)
		}
		if _, err := ref.Verify(&b, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(append(artifact, '!'))), verify.WithKey())); err == nil {
			t.Errorf("sigstore-go accepts the happy-path bundle for another artifact")
		}
	})

	t.Run("managed-key-wrong-key_fail", func(t *testing.T) {
		dir := filepath.Join(base, "managed-key-wrong-key_fail")
		keyPath := filepath.Join(dir, "key.pub")
		if _, err := LoadPublicKey(keyPath); err == nil || !strings.Contains(err.Error(), keyPath) {
			t.Errorf("LoadPublicKey(wrong key) error = %v, want a parse error naming the file", err)
		}
		// With any key we do trust, the bundle is still rejected.
		v, err := NewVerifier(newTestSigner(t).PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(readFile(t, filepath.Join(dir, "bundle.sigstore.json"))); !errors.Is(err, ErrVerification) {
			t.Errorf("Verify error = %v, want ErrVerification", err)
		}
	})
}

// TestConformanceRejectsOthers runs every other bundle in the conformance
// material through a verifier trusting publish_key.pub: none of them is a
// DSSE bundle signed by that key, so each must fail with ErrVerification,
// and none may panic.
func TestConformanceRejectsOthers(t *testing.T) {
	base := filepath.Join(conformanceDir(t), "sigstore")
	key, err := LoadPublicKey(filepath.Join(base, "sigstore-go", "examples", "publish_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, pattern := range []string{
		filepath.Join(base, "conformance", "test", "assets", "bundle-verify", "*", "bundle.sigstore.json"),
		filepath.Join(base, "sigstore-go", "pkg", "testing", "data", "bundles", "*.json"),
		filepath.Join(base, "sigstore-go", "examples", "bundle-provenance.json"),
	} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d conformance bundles", len(files))
	}
	for _, f := range files {
		rel, _ := filepath.Rel(base, f) // f is under base
		t.Run(rel, func(t *testing.T) {
			_, err := v.Verify(readFile(t, f))
			if !errors.Is(err, ErrVerification) {
				t.Errorf("Verify error = %v, want ErrVerification", err)
			}
		})
	}
}

// TestConformanceDSSEVector checks sigstore-go's DSSE pre-authentication
// encoding, which SignStatement signs, against the DSSE specification's test
// vector, and that the vector's signature verifies over it.
func TestConformanceDSSEVector(t *testing.T) {
	path := filepath.Join(conformanceDir(t), "sigstore", "dsse-spec", "dsse-test-vector.json")
	var vec struct {
		PayloadType string `json:"payloadType"`
		PayloadUTF8 string `json:"payload_utf8"`
		ExpectedPAE string `json:"expected_PAE"`
		Key         struct {
			X         string `json:"x"`
			Y         string `json:"y"`
			PublicPEM string `json:"public_key_pem_DERIVED"`
		} `json:"key"`
		Envelope struct {
			Payload    string `json:"payload"`
			Signatures []struct {
				Sig string `json:"sig"`
			} `json:"signatures"`
		} `json:"envelope"`
		SigDER string `json:"sig_der_DERIVED"`
	}
	if err := json.Unmarshal(readFile(t, path), &vec); err != nil {
		t.Fatal(err)
	}

	pae := (&sign.DSSEData{Data: []byte(vec.PayloadUTF8), PayloadType: vec.PayloadType}).PreAuthEncoding()
	if string(pae) != vec.ExpectedPAE || vec.ExpectedPAE != "DSSEv1 29 http://example.com/HelloWorld 11 hello world" {
		t.Fatalf("PAE = %q, want %q", pae, vec.ExpectedPAE)
	}
	if payload := decodeB64(t, vec.Envelope.Payload); string(payload) != vec.PayloadUTF8 {
		t.Fatalf("envelope payload %q != %q", payload, vec.PayloadUTF8)
	}

	key, err := ParsePublicKeyPEM([]byte(vec.Key.PublicPEM), "dsse-test-vector")
	if err != nil {
		t.Fatalf("ParsePublicKeyPEM: %v", err)
	}
	pub := key.Key.(*ecdsa.PublicKey)
	x, okX := new(big.Int).SetString(vec.Key.X, 10)
	y, okY := new(big.Int).SetString(vec.Key.Y, 10)
	if !okX || !okY {
		t.Fatalf("vector x, y are not decimal integers")
	}
	point := append([]byte{4}, append(x.FillBytes(make([]byte, 32)), y.FillBytes(make([]byte, 32))...)...)
	if pubBytes, err := pub.Bytes(); err != nil || !bytes.Equal(pubBytes, point) {
		t.Fatalf("derived PEM key does not match the vector's x, y (err %v)", err)
	}

	raw := decodeB64(t, vec.Envelope.Signatures[0].Sig)
	der := decodeB64(t, vec.SigDER)
	digest := sha256.Sum256(pae)
	if len(raw) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])) {
		t.Errorf("raw r||s signature does not verify over the PAE")
	}
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		t.Errorf("DER signature does not verify over the PAE")
	}
	payloadDigest := sha256.Sum256([]byte(vec.PayloadUTF8))
	if ecdsa.VerifyASN1(pub, payloadDigest[:], der) {
		t.Errorf("signature verifies over the raw payload without PAE")
	}
	tampered := sha256.Sum256((&sign.DSSEData{Data: []byte("hello worle"), PayloadType: vec.PayloadType}).PreAuthEncoding())
	if ecdsa.VerifyASN1(pub, tampered[:], der) {
		t.Errorf("signature verifies over a tampered payload")
	}

	// The vector's payload type is not ours: a bundle wrapping its validly
	// signed envelope is rejected.
	v, err := NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := json.Marshal(map[string]any{
		"mediaType":            "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{"publicKey": map[string]any{"hint": key.ID}},
		"dsseEnvelope": map[string]any{
			"payload":     vec.Envelope.Payload,
			"payloadType": vec.PayloadType,
			"signatures":  []any{map[string]any{"sig": vec.SigDER}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(wrapped); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "payload type") {
		t.Errorf("Verify(spec vector) error = %v, want ErrVerification for the payload type", err)
	}
}
