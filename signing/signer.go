package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// PayloadType is the DSSE payload type of the statements this package signs
// and the only one Verify accepts.
const PayloadType = "application/vnd.in-toto+json"

// statementTypeV1 is the _type of an in-toto Statement v1.
const statementTypeV1 = "https://in-toto.io/Statement/v1"

// Signer signs in-toto statements into Sigstore bundles with a stored
// ECDSA P-256 key. It implements sign.Keypair, so it can also be passed to
// sigstore-go's sign.Bundle directly. A Signer is safe for concurrent use.
type Signer struct {
	priv   *ecdsa.PrivateKey
	pub    PublicKey
	pubPEM []byte
}

var _ sign.Keypair = (*Signer)(nil)

// NewSigner returns a Signer for priv. It returns an error if priv is nil,
// not on the P-256 curve, or inconsistent (its public half does not match
// its private scalar).
func NewSigner(priv *ecdsa.PrivateKey) (*Signer, error) {
	s, err := newSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("new signer: %w", err)
	}
	return s, nil
}

func newSigner(priv *ecdsa.PrivateKey) (*Signer, error) {
	if priv == nil {
		return nil, errors.New("no private key")
	}
	if priv.Curve != elliptic.P256() {
		return nil, errors.New("unsupported ECDSA curve; want P-256")
	}
	ecdhPriv, err := priv.ECDH()
	if err != nil {
		return nil, fmt.Errorf("invalid private key: %w", err)
	}
	ecdhPub, err := priv.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("invalid public key: %w", err)
	}
	if !ecdhPriv.PublicKey().Equal(ecdhPub) {
		return nil, errors.New("public key does not match private key")
	}
	pub, err := newPublicKey(&priv.PublicKey, "")
	if err != nil {
		return nil, err
	}
	return &Signer{priv: priv, pub: pub, pubPEM: pub.PEM()}, nil
}

// LoadSigner reads a private key written by GenerateKey: a PKCS#8 "PRIVATE
// KEY" PEM block holding an ECDSA P-256 key (a SEC 1 "EC PRIVATE KEY" block,
// as openssl ecparam writes, is accepted too). The returned Signer's public
// key has path as its Source. Errors name path and say what is wrong: the file
// is missing or unreadable, holds no PEM, holds a public key, an encrypted
// key, a key that does not parse, or a key that is not ECDSA P-256. They never
// quote key material.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	return ParseSigner(data, path)
}

// ParseSigner is LoadSigner for a key already in memory (a Kubernetes
// Secret's value, for one): source names where it came from, in errors
// and as the public key's Source. Errors never quote key material.
func ParseSigner(data []byte, source string) (*Signer, error) {
	priv, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load signing key %q: %w", source, err)
	}
	s, err := newSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("load signing key %q: %w", source, err)
	}
	s.pub.Source = source
	return s, nil
}

// parsePrivateKeyPEM returns the ECDSA P-256 key in data. Its errors do not
// include any of data.
func parsePrivateKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	var block *pem.Block
	rest := data
	for {
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("no PEM block found; want a %q PEM block", pemPrivateKey)
		}
		// openssl ecparam -genkey writes the curve parameters first.
		if block.Type != "EC PARAMETERS" {
			break
		}
	}
	if _, encrypted := block.Headers["DEK-Info"]; encrypted {
		return nil, errors.New("the key is encrypted; give an unencrypted PKCS#8 key")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
		}
	case pemECPrivateKey:
		key, err = x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse SEC 1 EC private key: %w", err)
		}
	case pemPublicKey:
		return nil, errors.New("file holds a public key, not a private key")
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the key is encrypted; give an unencrypted PKCS#8 key")
	case "RSA PRIVATE KEY":
		return nil, errors.New("file holds an RSA key; want ECDSA P-256")
	case "OPENSSH PRIVATE KEY":
		return nil, errors.New("file holds an OpenSSH key; want a PKCS#8 ECDSA P-256 key")
	default:
		return nil, fmt.Errorf("unexpected PEM block type %q; want %q", block.Type, pemPrivateKey)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on curve %s; want P-256", k.Curve.Params().Name)
		}
		return k, nil
	case *rsa.PrivateKey:
		return nil, errors.New("file holds an RSA key; want ECDSA P-256")
	case ed25519.PrivateKey:
		return nil, errors.New("file holds an Ed25519 key; want ECDSA P-256")
	default:
		return nil, fmt.Errorf("file holds a %T key; want ECDSA P-256", key)
	}
}

// KeyID returns the ID of the signer's public key: base64 of the SHA-256 of
// its PKIX DER encoding. It is the key hint placed in every bundle.
func (s *Signer) KeyID() string { return s.pub.ID }

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() PublicKey { return s.pub }

// PublicKeyPEM returns the signer's public key as a PKIX "PUBLIC KEY" PEM
// block. The caller may modify the returned slice.
func (s *Signer) PublicKeyPEM() []byte { return bytes.Clone(s.pubPEM) }

// SignStatement signs statement, an in-toto Statement v1 as JSON, as a DSSE
// envelope of type PayloadType inside a Sigstore bundle, and returns the
// bundle's JSON. The statement bytes are signed as given. It returns an error
// if ctx is done, if statement is not a JSON object whose _type is
// "https://in-toto.io/Statement/v1", or if signing fails. The bundle JSON
// is not byte-stable across calls: store it and hash the stored bytes.
func (s *Signer) SignStatement(ctx context.Context, statement []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	if err := checkStatement(statement); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	b, err := sign.Bundle(&sign.DSSEData{Data: statement, PayloadType: PayloadType}, s, sign.BundleOptions{Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	out, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("sign statement: marshal bundle: %w", err)
	}
	return out, nil
}

// checkStatement returns an error unless statement is a JSON object with the
// in-toto Statement v1 _type.
func checkStatement(statement []byte) error {
	if len(statement) == 0 {
		return errors.New("empty statement")
	}
	var head struct {
		Type *string `json:"_type"`
	}
	if err := json.Unmarshal(statement, &head); err != nil {
		return fmt.Errorf("statement is not a JSON object: %w", err)
	}
	if head.Type == nil {
		return fmt.Errorf("statement has no _type; want %q", statementTypeV1)
	}
	if *head.Type != statementTypeV1 {
		return fmt.Errorf("statement _type is %q; want %q", *head.Type, statementTypeV1)
	}
	return nil
}

// GetHashAlgorithm implements sign.Keypair: signatures are over SHA-256.
func (s *Signer) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}

// GetSigningAlgorithm implements sign.Keypair: ECDSA P-256 with SHA-256.
func (s *Signer) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}

// GetHint implements sign.Keypair. It returns KeyID as bytes.
func (s *Signer) GetHint() []byte { return []byte(s.pub.ID) }

// GetKeyAlgorithm implements sign.Keypair. It returns "ECDSA".
func (s *Signer) GetKeyAlgorithm() string { return "ECDSA" }

// GetPublicKey implements sign.Keypair. It returns the *ecdsa.PublicKey.
func (s *Signer) GetPublicKey() crypto.PublicKey { return s.pub.Key }

// GetPublicKeyPem implements sign.Keypair. It returns PublicKeyPEM as a
// string and never fails.
func (s *Signer) GetPublicKeyPem() (string, error) { return string(s.pubPEM), nil }

// SignData implements sign.Keypair. It returns an ASN.1 DER ECDSA signature
// over the SHA-256 of data, and that digest. It returns an error if ctx is
// done or signing fails.
func (s *Signer) SignData(ctx context.Context, data []byte) ([]byte, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("sign data: %w", err)
	}
	digest := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, digest[:])
	if err != nil {
		return nil, nil, fmt.Errorf("sign data: %w", err)
	}
	return sig, digest[:], nil
}
