package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pkixPEM(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestParsePublicKeyPEM(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})

	tests := []struct {
		name    string
		data    []byte
		wantKey any    // nil if an error is expected
		wantErr string // substring
	}{
		{"ECDSA P-256", pkixPEM(t, &p256.PublicKey), &p256.PublicKey, ""},
		{"ECDSA P-256 with surrounding text", append(append([]byte("# ops key\n"), pkixPEM(t, &p256.PublicKey)...), "\n\n"...), &p256.PublicKey, ""},
		{"Ed25519", pkixPEM(t, edPub), edPub, ""},
		{"RSA 2048", pkixPEM(t, &rsa2048.PublicKey), &rsa2048.PublicKey, ""},
		{"RSA 1024", pkixPEM(t, &rsa1024.PublicKey), nil, "too small"},
		{"ECDSA P-384", pkixPEM(t, &p384.PublicKey), nil, "want P-256"},
		{"private key", privPEM, nil, "holds a private key"},
		{"two keys", append(pkixPEM(t, &p256.PublicKey), pkixPEM(t, edPub)...), nil, "more than one PEM block"},
		{"not PEM", []byte("ssh-ed25519 AAAA... ops"), nil, "no PEM block"},
		{"empty", nil, nil, "no PEM block"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), nil, `"CERTIFICATE"`},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nope")}), nil, "parse public key"},
	}
	const source = "refs/heads/main:.reconciler/keys/ops.pub"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePublicKeyPEM(tt.data, source)
			if tt.wantKey == nil {
				if err == nil {
					t.Fatalf("ParsePublicKeyPEM succeeded, key %s", k.ID)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), source) {
					t.Errorf("error %q should say %q and name %q", err, tt.wantErr, source)
				}
				if strings.Contains(err.Error(), "BEGIN") || strings.Contains(err.Error(), "MI") {
					t.Errorf("error %q seems to quote key material", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePublicKeyPEM: %v", err)
			}
			if k.Source != source {
				t.Errorf("Source = %q, want %q", k.Source, source)
			}
			if k.ID != wantKeyID(t, tt.wantKey) {
				t.Errorf("ID = %q, want %q", k.ID, wantKeyID(t, tt.wantKey))
			}
			if !samePublicKey(k.Key, tt.wantKey) {
				t.Errorf("parsed key differs from the encoded one")
			}
			if !bytes.Equal(k.PEM(), pkixPEM(t, tt.wantKey)) {
				t.Errorf("PEM() = %s, want the PKIX PEM of the key", k.PEM())
			}
		})
	}
}

func TestPublicKeyPEMZero(t *testing.T) {
	if got := (PublicKey{}).PEM(); got != nil {
		t.Errorf("PEM of the zero PublicKey = %q, want nil", got)
	}
}

func TestLoadPublicKey(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t)
	path := filepath.Join(dir, "ops.pub")
	if err := os.WriteFile(path, s.PublicKeyPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := LoadPublicKey(path)
	if err != nil {
		t.Fatalf("LoadPublicKey: %v", err)
	}
	if k.ID != s.KeyID() || k.Source != path {
		t.Errorf("LoadPublicKey = ID %q source %q, want %q %q", k.ID, k.Source, s.KeyID(), path)
	}

	missing := filepath.Join(dir, "absent.pub")
	_, err = LoadPublicKey(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadPublicKey(missing) error = %v, want fs.ErrNotExist naming %q", err, missing)
	}
}
