package approval

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// sshNamespace is the SSHSIG namespace git signs and verifies in.
const sshNamespace = "git"

// maxSignatureSize bounds a signature block; real ones are a few KiB.
const maxSignatureSize = 64 << 10

// VerifyCommit verifies the signature of a commit object. raw is the object's
// content as git stores it and git cat-file commit prints it, without the
// "commit <size>" object header. The signed payload is cut out as
// git verify-commit does (SHA-1 repositories: the gpgsig header).
//
// VerifyCommit returns the first of keys whose key made the signature. It
// fails closed: with no keys nothing verifies. Every error is a
// *VerificationError wrapping ErrUnsigned (no gpgsig header),
// ErrUnknownSigner (the signature's key is none of keys; the error names its
// fingerprint) or ErrBadSignature (not a commit, malformed or unsupported
// signature, another SSH namespace than "git", or a signature that does not
// verify). OpenPGP keys and signatures are checked against the time of the
// call, as gpg does: a key that has expired or been revoked since (in the
// key block given) no longer verifies, so record the verdict when it is
// made. An SSH security key (sk-*) signature counts only when it asserts
// user presence, which is stricter than ssh-keygen -Y verify.
func VerifyCommit(raw []byte, keys []Key) (Key, error) {
	if !bytes.HasPrefix(raw, []byte("tree ")) {
		return Key{}, &VerificationError{Object: "commit", Kind: ErrBadSignature, Err: errors.New("not a commit object: it does not start with a tree header")}
	}
	payload, sig, signed := splitCommit(raw)
	if !signed {
		return Key{}, &VerificationError{Object: "commit", Kind: ErrUnsigned, Err: errors.New("no gpgsig header; sign the merge with git merge -S (git -c gpg.format=ssh for an SSH key)")}
	}
	return verify("commit", payload, sig, keys)
}

// VerifyTag verifies the signature of an annotated tag object, such as an
// approval tag approve/<run-id>/<member>. raw is the object's content as
// git cat-file tag prints it. The signature is the armored block at the end
// of the message and the signed payload is everything before it, as
// git verify-tag cuts them. The errors and the key returned are those of
// VerifyCommit; a tag without a signature block is ErrUnsigned, and a tag
// whose header carries a gpgsig header (signed in both hash algorithms) is
// ErrBadSignature.
//
// VerifyTag checks the signature only: the caller checks that the signed
// object and tag headers are the proposal head and the expected tag name.
func VerifyTag(raw []byte, keys []Key) (Key, error) {
	if !bytes.HasPrefix(raw, []byte("object ")) {
		return Key{}, &VerificationError{Object: "tag", Kind: ErrBadSignature, Err: errors.New("not a tag object: it does not start with an object header")}
	}
	payload, sig, signed, hasSigHeader := splitTag(raw)
	if !signed {
		return Key{}, &VerificationError{Object: "tag", Kind: ErrUnsigned, Err: errors.New("no signature block; sign the tag with git tag -s (git -c gpg.format=ssh for an SSH key)")}
	}
	if hasSigHeader {
		return Key{}, &VerificationError{Object: "tag", Kind: ErrBadSignature, Err: errors.New("the tag header carries a gpgsig header; tags signed in both hash algorithms are not supported")}
	}
	return verify("tag", payload, sig, keys)
}

func verify(object string, payload, sig []byte, keys []Key) (Key, error) {
	if len(sig) > maxSignatureSize {
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Err: fmt.Errorf("signature of %d bytes is larger than %d", len(sig), maxSignatureSize)}
	}
	switch {
	case bytes.HasPrefix(sig, sshArmor):
		return verifySSH(object, payload, sig, keys)
	case bytes.HasPrefix(sig, pgpArmor):
		return verifyOpenPGP(object, payload, sig, keys)
	case bytes.HasPrefix(sig, pgpMessage):
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Err: errors.New("an OpenPGP message is not a detached signature")}
	case bytes.HasPrefix(sig, x509Armor):
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Err: errors.New("x509 (gpgsm) signatures are not supported; sign with an SSH or OpenPGP key")}
	}
	return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Err: errors.New("unknown signature format")}
}

func verifySSH(object string, payload, sig []byte, keys []Key) (Key, error) {
	bad := func(fpr string, err error) (Key, error) {
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Method: MethodSSH, Fingerprint: fpr, Err: err}
	}
	block, rest := pem.Decode(sig)
	switch {
	case block == nil:
		return bad("", errors.New("malformed SSH signature armor"))
	case block.Type != sshsig.PEMType || len(block.Headers) > 0:
		return bad("", errors.New("malformed SSH signature armor"))
	case len(bytes.TrimSpace(rest)) > 0:
		return bad("", errors.New("data after the SSH signature"))
	}
	s, err := sshsig.ParseSignature(block.Bytes)
	if err != nil {
		return bad("", fmt.Errorf("parse SSH signature: %w", err))
	}
	blob := s.PublicKey.Marshal()
	fpr := ssh.FingerprintSHA256(s.PublicKey)
	var found []Key
	for _, k := range keys {
		if k.Method == MethodSSH && k.ssh != nil && bytes.Equal(k.ssh.Marshal(), blob) {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return Key{}, unknown(object, MethodSSH, fpr, keys)
	}
	if s.Namespace != sshNamespace {
		return bad(fpr, fmt.Errorf("signed in namespace %q, not %q: not a git signature", s.Namespace, sshNamespace))
	}
	// sshsig.Verify hashes with the signature's own algorithm (git signs
	// with sha512); it accepts sha256 and sha512 only.
	if err := sshsig.Verify(bytes.NewReader(payload), s, found[0].ssh, s.HashAlgorithm, sshNamespace); err != nil {
		return bad(fpr, err)
	}
	return found[0], nil
}

// allowedPGPHashes are the digests a signature may use; SHA-1 and weaker
// ones are refused, as git's gpg does by default for new signatures.
var allowedPGPHashes = []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA224, crypto.SHA3_256, crypto.SHA3_512}

func verifyOpenPGP(object string, payload, sig []byte, keys []Key) (Key, error) {
	bad := func(fpr string, err error) (Key, error) {
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature, Method: MethodOpenPGP, Fingerprint: fpr, Err: err}
	}
	block, err := armor.Decode(bytes.NewReader(sig))
	if err != nil {
		return bad("", fmt.Errorf("malformed OpenPGP signature armor: %w", err))
	}
	if block.Type != openpgp.SignatureType {
		return bad("", fmt.Errorf("OpenPGP armor of type %q, not %q", block.Type, openpgp.SignatureType))
	}
	body, err := io.ReadAll(io.LimitReader(block.Body, maxSignatureSize))
	if err != nil {
		return bad("", fmt.Errorf("malformed OpenPGP signature armor: %w", err))
	}
	var s *packet.Signature
	err = noPanic(func() (err error) { s, err = onePGPSignature(body); return err })
	if err != nil {
		return bad("", err)
	}
	fpr := fmt.Sprintf("%016X", *s.IssuerKeyId)
	if len(s.IssuerFingerprint) > 0 {
		fpr = strings.ToUpper(hex.EncodeToString(s.IssuerFingerprint))
	}
	var found []Key
	for _, k := range keys {
		if k.Method == MethodOpenPGP && len(k.pgp) > 0 && len(k.pgp.KeysByIdUsage(*s.IssuerKeyId, packet.KeyFlagSign)) > 0 {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return Key{}, unknown(object, MethodOpenPGP, fpr, keys)
	}
	if s.SigType != packet.SigTypeBinary {
		return bad(fpr, fmt.Errorf("OpenPGP signature of type %#x, not a binary document signature", int(s.SigType)))
	}
	var lastErr error
	for _, k := range found {
		err := noPanic(func() error {
			_, err := openpgp.CheckDetachedSignatureAndHash(k.pgp, bytes.NewReader(payload), bytes.NewReader(body), allowedPGPHashes, nil)
			return err
		})
		if err == nil {
			return k, nil
		}
		lastErr = err
	}
	return bad(fpr, lastErr)
}

// noPanic runs f, turning a panic into an error: go-crypto's parsers have
// panicked on crafted packets (v1.1.6 on an empty exportable-certification
// subpacket, which FuzzVerifyCommit found), and a signature from a stranger
// must not stop the reconciler.
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("openpgp: malformed packet (%v)", r)
		}
	}()
	return f()
}

// onePGPSignature parses body as exactly one signature packet that names its
// issuer.
func onePGPSignature(body []byte) (*packet.Signature, error) {
	r := packet.NewReader(bytes.NewReader(body))
	p, err := r.Next()
	if err != nil {
		return nil, fmt.Errorf("parse OpenPGP signature: %w", err)
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		return nil, fmt.Errorf("parse OpenPGP signature: a %T packet, not a signature", p)
	}
	if s.IssuerKeyId == nil {
		return nil, errors.New("parse OpenPGP signature: it names no issuer key")
	}
	if _, err := r.Next(); err != io.EOF {
		return nil, errors.New("parse OpenPGP signature: more than one packet; git signs with exactly one signature")
	}
	return s, nil
}

func unknown(object, method, fpr string, keys []Key) error {
	n := 0
	for _, k := range keys {
		if k.Method == method && (k.ssh != nil || len(k.pgp) > 0) {
			n++
		}
	}
	var err error
	if n == 0 {
		err = fmt.Errorf("no %s signing keys are listed (of %d keys given)", method, len(keys))
	} else {
		err = fmt.Errorf("none of the %d %s signing keys listed; sign with your signing_key from reviewers.hcl, or add this key there", n, method)
	}
	return &VerificationError{Object: object, Kind: ErrUnknownSigner, Method: method, Fingerprint: fpr, Err: err}
}
