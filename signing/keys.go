package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

const (
	pemPublicKey    = "PUBLIC KEY"
	pemPrivateKey   = "PRIVATE KEY"
	pemECPrivateKey = "EC PRIVATE KEY"

	// minRSABits is the smallest RSA modulus accepted for verification.
	minRSABits = 2048
)

// PublicKey is a trusted verification key.
//
// Supported keys are ECDSA P-256 (signatures over SHA-256), Ed25519 and RSA
// of at least 2048 bits (PKCS #1 v1.5 signatures over SHA-256). Signers in
// this package only produce ECDSA P-256 signatures.
type PublicKey struct {
	// ID is base64 (standard encoding, padded) of the SHA-256 of the key's
	// PKIX DER encoding: the key hint that Sigstore bundles carry.
	ID string
	// Key is an *ecdsa.PublicKey, an ed25519.PublicKey or an *rsa.PublicKey.
	Key crypto.PublicKey
	// Source says where the key came from, such as a file path or
	// "refs/heads/main:.reconciler/keys/ops.pub", for messages.
	Source string
}

// ParsePublicKeyPEM parses a single PKIX "PUBLIC KEY" PEM block holding an
// ECDSA P-256, Ed25519 or RSA (2048 bits or more) key. source says where data
// came from and is kept in the returned key and used in errors. It returns an
// error naming source if data holds no PEM block, more than one, a block of
// another type (a private key is refused, and never quoted), or a key of an
// unsupported type or size.
func ParsePublicKeyPEM(data []byte, source string) (PublicKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return PublicKey{}, fmt.Errorf("parse public key %q: no PEM block found; want a %q PEM block", source, pemPublicKey)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return PublicKey{}, fmt.Errorf("parse public key %q: more than one PEM block; want exactly one %q block", source, pemPublicKey)
	}
	switch block.Type {
	case pemPublicKey:
	case pemPrivateKey, pemECPrivateKey, "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return PublicKey{}, fmt.Errorf("parse public key %q: file holds a private key (%q PEM block); give the public key (the .pub file) instead", source, block.Type)
	default:
		return PublicKey{}, fmt.Errorf("parse public key %q: unexpected PEM block type %q; want %q", source, block.Type, pemPublicKey)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key %q: %w", source, err)
	}
	pk, err := newPublicKey(key, source)
	if err != nil {
		return PublicKey{}, fmt.Errorf("parse public key %q: %w", source, err)
	}
	return pk, nil
}

// LoadPublicKey reads and parses the PEM public key file at path, as
// ParsePublicKeyPEM does, with path as the key's Source. It returns an error
// naming path if the file cannot be read or does not hold a supported key.
func LoadPublicKey(path string) (PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("load public key: %w", err)
	}
	return ParsePublicKeyPEM(data, path)
}

// PEM returns k.Key as a PKIX "PUBLIC KEY" PEM block. It returns nil if
// k.Key is nil or of a type that x509 cannot marshal.
func (k PublicKey) PEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Key)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der})
}

// String returns the key ID and its source, for messages.
func (k PublicKey) String() string {
	if k.Source == "" {
		return k.ID
	}
	return fmt.Sprintf("%s (%s)", k.ID, k.Source)
}

// newPublicKey checks that key is of a supported type and size and returns
// it with its ID computed.
func newPublicKey(key crypto.PublicKey, source string) (PublicKey, error) {
	if err := checkPublicKey(key); err != nil {
		return PublicKey{}, err
	}
	id, err := keyID(key)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{ID: id, Key: key, Source: source}, nil
}

// checkPublicKey returns an error unless key is an ECDSA P-256, Ed25519 or
// large enough RSA public key.
func checkPublicKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			return errors.New("unsupported ECDSA curve; want P-256")
		}
		// ECDH rejects points that are not on the curve.
		if _, err := k.ECDH(); err != nil {
			return fmt.Errorf("invalid ECDSA P-256 key: %w", err)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("invalid Ed25519 key: %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("invalid RSA key")
		}
		if bits := k.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too small; want at least %d", bits, minRSABits)
		}
	case nil:
		return errors.New("no key")
	default:
		return fmt.Errorf("unsupported key type %T; want ECDSA P-256, Ed25519 or RSA", key)
	}
	return nil
}

// keyID returns base64(sha256(PKIX DER of key)), the key hint that
// sigstore-go's EphemeralKeypair also uses.
func keyID(key crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// sshFingerprint returns the OpenSSH SHA256 fingerprint of key
// ("SHA256:" and unpadded base64). Some signers (npm, and DSSE signature key
// IDs from go-securesystemslib) use it as the key hint. It returns "" for
// keys SSH cannot represent.
func sshFingerprint(key crypto.PublicKey) string {
	pk, err := ssh.NewPublicKey(key)
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(pk)
}

// samePublicKey reports whether a and b are the same key.
func samePublicKey(a, b crypto.PublicKey) bool {
	da, err := x509.MarshalPKIXPublicKey(a)
	if err != nil {
		return false
	}
	db, err := x509.MarshalPKIXPublicKey(b)
	if err != nil {
		return false
	}
	return bytes.Equal(da, db)
}
