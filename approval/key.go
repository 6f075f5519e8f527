package approval

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/crypto/ssh"
)

// Methods of a Key: how the reviewer signs.
const (
	MethodSSH     = "ssh"     // git -c gpg.format=ssh
	MethodOpenPGP = "openpgp" // git's default gpg.format
)

// minRSABits is the smallest RSA key ParseKey accepts.
const minRSABits = 2048

// Key is a reviewer's signing key. ParseKey fills Method, Fingerprint and
// the parsed key; Member and Group say whose key it is, for the caller to
// fill from reviewers.hcl and read back from VerifyCommit and VerifyTag. A
// Key not made by ParseKey verifies nothing.
type Key struct {
	Member string
	Group  string
	// Method is MethodSSH or MethodOpenPGP.
	Method string
	// Fingerprint is "SHA256:<base64>" for an SSH key, as ssh-keygen -lf
	// prints it, and the primary key's fingerprint in uppercase hex for an
	// OpenPGP key, as gpg --fingerprint prints it without spaces.
	Fingerprint string

	ssh ssh.PublicKey
	pgp openpgp.EntityList
}

// String names the key for messages: "rita (sre) ssh SHA256:...".
func (k Key) String() string {
	var b strings.Builder
	if k.Member != "" {
		b.WriteString(k.Member)
		if k.Group != "" {
			fmt.Fprintf(&b, " (%s)", k.Group)
		}
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%s %s", k.Method, k.Fingerprint)
	return b.String()
}

// ParseKey parses a member's signing_key as reviewers.hcl holds it: an SSH
// public key line as in authorized_keys ("ssh-ed25519 AAAA... rita@laptop";
// ssh-ed25519, ssh-rsa of at least 2048 bits, ecdsa-sha2-nistp256/384/521
// and the sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com
// security keys, whose signatures must assert user presence), or one
// ASCII-armored OpenPGP public key block (gpg --armor --export) with a
// currently valid signing key. Certificates, authorized_keys options,
// several keys in one value and secret keys are errors.
func ParseKey(signingKey string) (Key, error) {
	s := strings.TrimSpace(signingKey)
	if s == "" {
		return Key{}, errors.New("parse signing key: empty; paste an SSH public key (the .pub file) or gpg --armor --export output")
	}
	if strings.HasPrefix(s, "-----BEGIN PGP") {
		return parseOpenPGP(s)
	}
	return parseSSH(s)
}

func parseSSH(s string) (Key, error) {
	pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return Key{}, fmt.Errorf("parse ssh signing key: %w; use the public key line of the .pub file, such as \"ssh-ed25519 AAAA... name\"", err)
	}
	if len(options) > 0 {
		return Key{}, fmt.Errorf("parse ssh signing key: options %q are not supported; remove them and keep the bare public key", strings.Join(options, ","))
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return Key{}, errors.New("parse ssh signing key: more than one key; give each member exactly one signing_key")
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return Key{}, errors.New("parse ssh signing key: certificates are not supported; use the plain public key (ssh-keygen -y -f KEY, or the .pub beside the -cert.pub)")
	}
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
	case ssh.KeyAlgoRSA:
		cpk, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return Key{}, errors.New("parse ssh signing key: unreadable rsa key")
		}
		rk, ok := cpk.CryptoPublicKey().(*rsa.PublicKey)
		if !ok || rk.N.BitLen() < minRSABits {
			return Key{}, fmt.Errorf("parse ssh signing key: rsa keys need at least %d bits; generate one with ssh-keygen -t ed25519", minRSABits)
		}
	default:
		return Key{}, fmt.Errorf("parse ssh signing key: key type %q cannot sign git objects; use ssh-ed25519", pub.Type())
	}
	return Key{Method: MethodSSH, Fingerprint: ssh.FingerprintSHA256(pub), ssh: pub}, nil
}

func parseOpenPGP(s string) (Key, error) {
	if !strings.HasPrefix(s, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		return Key{}, errors.New("parse openpgp signing key: not a public key block; paste the output of gpg --armor --export KEYID, never the secret key")
	}
	var el openpgp.EntityList
	err := noPanic(func() (err error) { el, err = openpgp.ReadArmoredKeyRing(strings.NewReader(s)); return err })
	if err != nil {
		return Key{}, fmt.Errorf("parse openpgp signing key: %w; paste the whole output of gpg --armor --export KEYID", err)
	}
	if len(el) != 1 {
		return Key{}, fmt.Errorf("parse openpgp signing key: the block holds %d keys; export exactly one (gpg --armor --export KEYID)", len(el))
	}
	e := el[0]
	if e.PrivateKey != nil {
		return Key{}, errors.New("parse openpgp signing key: the block holds a secret key; paste gpg --armor --export output and revoke this key")
	}
	if _, ok := e.SigningKey(time.Now()); !ok {
		return Key{}, fmt.Errorf("parse openpgp signing key %X: no valid signing key (expired, revoked, or encryption only)", e.PrimaryKey.Fingerprint)
	}
	return Key{Method: MethodOpenPGP, Fingerprint: strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)), pgp: el}, nil
}
