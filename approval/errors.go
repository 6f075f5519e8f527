package approval

import (
	"errors"
	"strings"
)

// Sentinels that every error of VerifyCommit, VerifyTag and VerifyObject
// wraps exactly one of; check them with errors.Is.
var (
	// ErrUnsigned: the object carries no signature.
	ErrUnsigned = errors.New("not signed")
	// ErrUnknownSigner: the signature names a key that is none of the keys
	// given, or of the other kind (an SSH signature with only OpenPGP keys).
	ErrUnknownSigner = errors.New("signed by a key that is not a listed signing_key")
	// ErrBadSignature: the signature or object is malformed, of an
	// unsupported format, or does not verify with the listed key.
	ErrBadSignature = errors.New("bad signature")
)

// VerificationError is why an object does not count as signed by a listed
// key. Kind is one of the sentinels; Method and Fingerprint name the key the
// signature claims, when it could be read that far.
type VerificationError struct {
	Object string // "commit" or "tag"
	Kind   error  // ErrUnsigned, ErrUnknownSigner or ErrBadSignature
	Method string // MethodSSH, MethodOpenPGP, or "" when unknown
	// Fingerprint is the signing key's as the signature names it:
	// "SHA256:..." for SSH; for OpenPGP the issuer fingerprint in uppercase
	// hex (a signing subkey's, when a subkey signed), or the 16-digit key
	// ID when the signature names only that.
	Fingerprint string
	Err         error // the cause, or nil
}

func (e *VerificationError) Error() string {
	var b strings.Builder
	b.WriteString("verify ")
	b.WriteString(e.Object)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Fingerprint != "" {
		b.WriteString(" (")
		if e.Method != "" {
			b.WriteString(e.Method)
			b.WriteByte(' ')
		}
		b.WriteString(e.Fingerprint)
		b.WriteByte(')')
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *VerificationError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
