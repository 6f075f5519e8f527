package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// ErrVerification is wrapped by every error Verify returns for a bundle that
// does not verify: a bad signature, an unknown key, a malformed bundle, a
// payload type other than PayloadType, or other than exactly one signature.
var ErrVerification = errors.New("bundle does not verify")

// Verified is the result of a successful Verify.
type Verified struct {
	// Statement is the DSSE payload, the statement JSON exactly as signed.
	Statement []byte
	// Key is the trusted key whose signature verified.
	Key PublicKey
}

// Verifier checks bundles against a fixed set of trusted keys. It is safe
// for concurrent use.
type Verifier struct {
	keys []trustedKey
	// byHint maps each key's ID and its OpenSSH SHA256 fingerprint to its
	// index in keys.
	byHint map[string]int
	policy verify.PolicyBuilder
}

type trustedKey struct {
	key PublicKey
	sv  *verify.Verifier
}

// NewVerifier returns a Verifier that trusts keys and nothing else. It fails
// closed: it returns an error if keys is empty, if a key is of an unsupported
// type or size (see PublicKey), or if a key's ID is set but is not the ID of
// its Key. An empty ID is computed. A key given twice is kept once.
func NewVerifier(keys ...PublicKey) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("new verifier: no trusted keys; give at least one public key")
	}
	v := &Verifier{
		byHint: make(map[string]int, 2*len(keys)),
		policy: verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithKey()),
	}
	for _, k := range keys {
		if err := checkPublicKey(k.Key); err != nil {
			return nil, fmt.Errorf("new verifier: key %s: %w", k, err)
		}
		id, err := keyID(k.Key)
		if err != nil {
			return nil, fmt.Errorf("new verifier: key %s: %w", k, err)
		}
		if k.ID == "" {
			k.ID = id
		} else if k.ID != id {
			return nil, fmt.Errorf("new verifier: key %s: ID does not match the key, whose ID is %q", k, id)
		}
		if _, dup := v.byHint[k.ID]; dup {
			continue
		}
		sv, err := newKeyVerifier(k.Key)
		if err != nil {
			return nil, fmt.Errorf("new verifier: key %s: %w", k, err)
		}
		i := len(v.keys)
		v.keys = append(v.keys, trustedKey{key: k, sv: sv})
		v.byHint[k.ID] = i
		if fp := sshFingerprint(k.Key); fp != "" {
			v.byHint[fp] = i
		}
	}
	return v, nil
}

// newKeyVerifier returns a sigstore-go verifier that trusts exactly key,
// whatever key hint a bundle names, and requires no transparency log entry
// or timestamp.
func newKeyVerifier(key crypto.PublicKey) (*verify.Verifier, error) {
	var (
		sv  signature.Verifier
		err error
	)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		sv, err = signature.LoadECDSAVerifier(k, crypto.SHA256)
	case ed25519.PublicKey:
		sv, err = signature.LoadED25519Verifier(k)
	case *rsa.PublicKey:
		sv, err = signature.LoadRSAPKCS1v15Verifier(k, crypto.SHA256)
	default:
		err = fmt.Errorf("unsupported key type %T", key)
	}
	if err != nil {
		return nil, fmt.Errorf("load signature verifier: %w", err)
	}
	// The zero times make the key valid at any time; with no observer
	// timestamps sigstore-go would not check a validity window anyway.
	ek := root.NewExpiringKey(sv, time.Time{}, time.Time{})
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return ek, nil
	})
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps(), verify.WithoutStatementPredicate())
	if err != nil {
		return nil, fmt.Errorf("configure sigstore verifier: %w", err)
	}
	return v, nil
}

// Verify checks that bundleJSON is a Sigstore bundle (media type v0.1 to
// v0.3) holding a DSSE envelope with payload type PayloadType and exactly one
// signature, made over the DSSE pre-authentication encoding by one of the
// trusted keys, and that the payload is a JSON object. It returns the DSSE
// payload (the statement JSON exactly as signed) and the verifying key.
//
// The bundle's key hint selects the key to try: a trusted key's ID, or its
// OpenSSH SHA256 fingerprint as some signers use. A bundle whose hint names
// no trusted key is tried against every trusted key; the hint is never
// trusted on its own. Message-signature bundles and bundles signed with a
// certificate are rejected. Transparency log entries and timestamps in the
// bundle are neither required nor checked, beyond the structural checks of
// sigstore-go's bundle parser (a v0.2 or later bundle whose log entry lacks
// an inclusion proof is malformed, for instance).
//
// Every error Verify returns wraps ErrVerification.
func (v *Verifier) Verify(bundleJSON []byte) (Verified, error) {
	if len(bundleJSON) == 0 {
		return Verified{}, verificationError(errors.New("empty bundle"))
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return Verified{}, verificationError(fmt.Errorf("malformed bundle: %w", err))
	}
	env := b.GetDsseEnvelope()
	if env == nil {
		if b.GetMessageSignature() != nil {
			return Verified{}, verificationError(errors.New("bundle holds a message signature; want a DSSE envelope"))
		}
		return Verified{}, verificationError(errors.New("bundle holds no DSSE envelope"))
	}
	if env.GetPayloadType() != PayloadType {
		return Verified{}, verificationError(fmt.Errorf("DSSE payload type is %q; want %q", env.GetPayloadType(), PayloadType))
	}
	if n := len(env.GetSignatures()); n != 1 {
		return Verified{}, verificationError(fmt.Errorf("DSSE envelope has %d signatures; want exactly 1", n))
	}
	pk := b.GetVerificationMaterial().GetPublicKey()
	if pk == nil {
		return Verified{}, verificationError(errors.New("bundle is not signed with a public key (certificate-signed bundles are not accepted)"))
	}
	hint := pk.GetHint()

	if i, ok := v.byHint[hint]; ok {
		k := v.keys[i]
		if _, err := k.sv.Verify(&b, v.policy); err != nil {
			return Verified{}, verificationError(fmt.Errorf("check with trusted key %s, named by the bundle's key hint, failed: %w", k.key, err))
		}
		return Verified{Statement: env.GetPayload(), Key: k.key}, nil
	}
	for _, k := range v.keys {
		if _, err := k.sv.Verify(&b, v.policy); err == nil {
			return Verified{Statement: env.GetPayload(), Key: k.key}, nil
		}
	}
	return Verified{}, verificationError(fmt.Errorf("bundle key hint %q names no trusted key, and none of the %d trusted keys verifies the signature", hint, len(v.keys)))
}

// verificationError wraps err as a Verify error.
func verificationError(err error) error {
	return fmt.Errorf("verify bundle: %w: %w", ErrVerification, err)
}
