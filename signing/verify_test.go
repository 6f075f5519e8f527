package signing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// editBundle decodes bundle JSON, lets edit change it, and encodes it again.
func editBundle(t testing.TB, bundleJSON []byte, edit func(b map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(bundleJSON, &b); err != nil {
		t.Fatalf("decode bundle: %v", err)
	}
	edit(b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatalf("encode bundle: %v", err)
	}
	return out
}

func envelope(b map[string]any) map[string]any { return b["dsseEnvelope"].(map[string]any) }

func firstSignature(b map[string]any) map[string]any {
	return envelope(b)["signatures"].([]any)[0].(map[string]any)
}

func decodeB64(t testing.TB, s any) []byte {
	t.Helper()
	out, err := base64.StdEncoding.DecodeString(s.(string))
	if err != nil {
		t.Fatalf("decode base64: %v", err)
	}
	return out
}

// selfSignedCertDER returns a certificate for key, to put in a bundle's
// verification material.
func selfSignedCertDER(t testing.TB, s *Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.priv.Public(), s.priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t)
	other := newTestSigner(t)
	statement := testStatement(testCommit)
	good, err := signer.SignStatement(ctx, statement)
	if err != nil {
		t.Fatalf("SignStatement: %v", err)
	}

	// The edited payload changes one hex digit of the commit, so it is still
	// a well-formed statement: only the signature can reject it.
	editedStatement := bytes.Replace(statement, []byte(testCommit), []byte("1"+testCommit[1:]), 1)
	if bytes.Equal(editedStatement, statement) || len(editedStatement) != len(statement) {
		t.Fatal("test statement edit did not change exactly one byte")
	}
	resigned, err := signer.SignStatement(ctx, editedStatement)
	if err != nil {
		t.Fatal(err)
	}

	messageSig, err := sign.Bundle(&sign.PlainData{Data: statement}, signer, sign.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	messageSigJSON, err := protojson.Marshal(messageSig)
	if err != nil {
		t.Fatal(err)
	}
	// A valid signature by a trusted key over a payload that is not JSON.
	notJSON, err := sign.Bundle(&sign.DSSEData{Data: []byte("not json"), PayloadType: PayloadType}, signer, sign.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	notJSONBundle, err := protojson.Marshal(notJSON)
	if err != nil {
		t.Fatal(err)
	}
	// A valid signature by a trusted key over a payload of another type.
	otherType, err := sign.Bundle(&sign.DSSEData{Data: statement, PayloadType: "application/json"}, signer, sign.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherTypeBundle, err := protojson.Marshal(otherType)
	if err != nil {
		t.Fatal(err)
	}
	certDER := selfSignedCertDER(t, signer)

	both, err := NewVerifier(signer.PublicKey(), other.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	onlySigner, err := NewVerifier(signer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	onlyOther, err := NewVerifier(other.PublicKey())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name          string
		verifier      *Verifier
		bundle        []byte
		wantStatement []byte // nil: want ErrVerification
		wantErr       string // substring of the error, if any
	}{
		{"valid", onlySigner, good, statement, ""},
		{"valid, among two trusted keys", both, good, statement, ""},
		{"edited payload re-signed", onlySigner, resigned, editedStatement, ""},
		{"wrong key", onlyOther, good, nil, "names no trusted key"},
		{"edited payload", both, editBundle(t, good, func(b map[string]any) {
			envelope(b)["payload"] = base64.StdEncoding.EncodeToString(editedStatement)
		}), nil, "named by the bundle's key hint"},
		{"edited signature", onlySigner, editBundle(t, good, func(b map[string]any) {
			sig := decodeB64(t, firstSignature(b)["sig"])
			sig[len(sig)-1] ^= 0x01
			firstSignature(b)["sig"] = base64.StdEncoding.EncodeToString(sig)
		}), nil, "named by the bundle's key hint"},
		{"signature of another statement", onlySigner, editBundle(t, good, func(b map[string]any) {
			var r map[string]any
			if err := json.Unmarshal(resigned, &r); err != nil {
				t.Fatal(err)
			}
			firstSignature(b)["sig"] = firstSignature(r)["sig"]
		}), nil, "named by the bundle's key hint"},
		{"payload type edited", onlySigner, editBundle(t, good, func(b map[string]any) {
			envelope(b)["payloadType"] = "application/json"
		}), nil, "payload type"},
		{"payload type other, validly signed", onlySigner, otherTypeBundle, nil, "payload type"},
		{"payload not JSON, validly signed", onlySigner, notJSONBundle, nil, ""},
		{"two signatures", onlySigner, editBundle(t, good, func(b map[string]any) {
			sigs := envelope(b)["signatures"].([]any)
			envelope(b)["signatures"] = append(sigs, sigs[0])
		}), nil, "2 signatures"},
		{"no signatures", onlySigner, editBundle(t, good, func(b map[string]any) {
			envelope(b)["signatures"] = []any{}
		}), nil, "0 signatures"},
		{"message signature", onlySigner, messageSigJSON, nil, "message signature"},
		{"certificate instead of key", onlySigner, editBundle(t, good, func(b map[string]any) {
			b["verificationMaterial"] = map[string]any{"certificate": map[string]any{"rawBytes": base64.StdEncoding.EncodeToString(certDER)}}
		}), nil, "not signed with a public key"},
		{"no verification material", onlySigner, editBundle(t, good, func(b map[string]any) {
			delete(b, "verificationMaterial")
		}), nil, "malformed bundle"},
		{"no hint", onlySigner, editBundle(t, good, func(b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{}
		}), statement, ""},
		{"unknown hint", both, editBundle(t, good, func(b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{"hint": "someone else"}
		}), statement, ""},
		{"hint names the other trusted key", both, editBundle(t, good, func(b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{"hint": other.KeyID()}
		}), nil, "named by the bundle's key hint"},
		{"hint is the SSH fingerprint", onlySigner, editBundle(t, good, func(b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{"hint": sshFingerprint(signer.PublicKey().Key)}
		}), statement, ""},
		{"DSSE keyid is the SSH fingerprint", onlySigner, editBundle(t, good, func(b map[string]any) {
			firstSignature(b)["keyid"] = sshFingerprint(signer.PublicKey().Key)
		}), statement, ""},
		// go-securesystemslib skips a signature whose keyid is set and is not
		// the verifier's SSH fingerprint.
		{"DSSE keyid is the key ID", onlySigner, editBundle(t, good, func(b map[string]any) {
			firstSignature(b)["keyid"] = signer.KeyID()
		}), nil, "named by the bundle's key hint"},
		{"unsupported bundle version", onlySigner, editBundle(t, good, func(b map[string]any) {
			b["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.4+json"
		}), nil, "malformed bundle"},
		{"unknown field", onlySigner, editBundle(t, good, func(b map[string]any) {
			b["extra"] = true
		}), nil, "malformed bundle"},
		{"truncated", onlySigner, good[:len(good)/2], nil, "malformed bundle"},
		{"garbage", onlySigner, []byte("\x00\xffnot a bundle"), nil, "malformed bundle"},
		{"empty", onlySigner, nil, nil, "empty bundle"},
		{"JSON null", onlySigner, []byte("null"), nil, ""},
		{"empty object", onlySigner, []byte("{}"), nil, ""},
		{"payload not base64", onlySigner, editBundle(t, good, func(b map[string]any) {
			envelope(b)["payload"] = "%%%"
		}), nil, "malformed bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.verifier.Verify(tt.bundle)
			if tt.wantStatement == nil {
				if err == nil {
					t.Fatalf("Verify succeeded with key %s", got.Key)
				}
				t.Logf("error: %v", err)
				if !errors.Is(err, ErrVerification) {
					t.Errorf("error %v does not wrap ErrVerification", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not say %q", err, tt.wantErr)
				}
				if got.Statement != nil || got.Key.Key != nil {
					t.Errorf("failed Verify returned a result: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !bytes.Equal(got.Statement, tt.wantStatement) {
				t.Errorf("Statement = %q, want the bytes as signed %q", got.Statement, tt.wantStatement)
			}
			if got.Key.ID != signer.KeyID() {
				t.Errorf("Key = %s, want %s", got.Key, signer.KeyID())
			}
		})
	}
}

func TestNewVerifier(t *testing.T) {
	s := newTestSigner(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name    string
		keys    []PublicKey
		wantErr string
	}{
		{"no keys", nil, "no trusted keys"},
		{"zero key", []PublicKey{{}}, "no key"},
		{"P-384 key", []PublicKey{{Key: &p384.PublicKey, Source: "p384.pub"}}, "want P-256"},
		{"ID of another key", []PublicKey{{ID: newTestSigner(t).KeyID(), Key: s.PublicKey().Key}}, "ID does not match"},
		{"ID computed", []PublicKey{{Key: s.PublicKey().Key}}, ""},
		{"duplicate", []PublicKey{s.PublicKey(), s.PublicKey()}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.keys...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewVerifier error = %v, want one saying %q", err, tt.wantErr)
				}
				if v != nil {
					t.Errorf("NewVerifier returned a verifier with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			b, err := s.SignStatement(context.Background(), testStatement(testCommit))
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(b)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Key.ID != s.KeyID() {
				t.Errorf("Key.ID = %q, want %q", got.Key.ID, s.KeyID())
			}
		})
	}
}

// TestVerifyOtherAlgorithms signs with sigstore-go's own ephemeral keys of
// each supported algorithm and checks that Verify accepts the bundles.
func TestVerifyOtherAlgorithms(t *testing.T) {
	statement := testStatement(testCommit)
	for _, alg := range []protocommon.PublicKeyDetails{
		protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256,
		protocommon.PublicKeyDetails_PKIX_ED25519,
		protocommon.PublicKeyDetails_PKIX_RSA_PKCS1V15_2048_SHA256,
	} {
		t.Run(alg.String(), func(t *testing.T) {
			kp, err := sign.NewEphemeralKeypair(&sign.EphemeralKeypairOptions{Algorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			pemStr, err := kp.GetPublicKeyPem()
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ParsePublicKeyPEM([]byte(pemStr), "ephemeral")
			if err != nil {
				t.Fatalf("ParsePublicKeyPEM: %v", err)
			}
			if pub.ID != string(kp.GetHint()) {
				t.Errorf("ID = %q, want sigstore-go's hint %q", pub.ID, kp.GetHint())
			}
			pb, err := sign.Bundle(&sign.DSSEData{Data: statement, PayloadType: PayloadType}, kp, sign.BundleOptions{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := protojson.Marshal(pb)
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier(newTestSigner(t).PublicKey(), pub)
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			got, err := v.Verify(b)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Key.ID != pub.ID || !bytes.Equal(got.Statement, statement) {
				t.Errorf("Verify = key %s statement %q", got.Key, got.Statement)
			}
			tampered := editBundle(t, b, func(m map[string]any) {
				envelope(m)["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(statement, []byte("r-1"), []byte("r-2"), 1))
			})
			if _, err := v.Verify(tampered); !errors.Is(err, ErrVerification) {
				t.Errorf("Verify(tampered) error = %v, want ErrVerification", err)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	s := newTestSigner(f)
	good, err := s.SignStatement(context.Background(), testStatement(testCommit))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("{}"))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payload":"","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":""}]},"verificationMaterial":{"publicKey":{}}}`))
	v, err := NewVerifier(s.PublicKey())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, bundleJSON []byte) {
		got, err := v.Verify(bundleJSON)
		if err != nil {
			if !errors.Is(err, ErrVerification) {
				t.Fatalf("error %v does not wrap ErrVerification", err)
			}
			return
		}
		if got.Key.ID != s.KeyID() || !json.Valid(got.Statement) {
			t.Fatalf("Verify accepted key %s, statement %q", got.Key, got.Statement)
		}
	})
}

// TestConcurrentUse signs and verifies from several goroutines with one
// Signer and one Verifier; run with -race.
func TestConcurrentUse(t *testing.T) {
	s := newTestSigner(t)
	v, err := NewVerifier(s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			statement := testStatement(strings.Repeat(string("0123456789abcdef"[i]), 40))
			b, err := s.SignStatement(context.Background(), statement)
			if err != nil {
				errs <- err
				return
			}
			got, err := v.Verify(b)
			if err == nil && !bytes.Equal(got.Statement, statement) {
				err = errors.New("statement changed")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
