package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is the shared secret of the webhooks and the API. It prints as
// <secret>, also through slog, so it never reaches a log.
type Secret struct{ b []byte }

// NewSecret returns the secret s. An empty s is no secret (IsZero).
func NewSecret(s string) Secret { return Secret{b: []byte(s)} }

// LoadSecret reads the secret from the file at path, without its trailing
// newline. It fails when the file cannot be read, is empty, or is readable
// or writable by users other than its owner and group.
func LoadSecret(path string) (Secret, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Secret{}, fmt.Errorf("webhook secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Secret{}, fmt.Errorf("webhook secret file %q is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return Secret{}, fmt.Errorf("webhook secret file %q is accessible by other users (mode %04o): run chmod 600 %q (in Kubernetes, mount the Secret with defaultMode: 0400)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Secret{}, fmt.Errorf("webhook secret file: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(s) == "" {
		return Secret{}, fmt.Errorf("webhook secret file %q is empty: write a random secret into it, for example with: openssl rand -hex 32 > %q", path, path)
	}
	return Secret{b: []byte(s)}, nil
}

// IsZero reports whether there is no secret.
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// String returns "<secret>".
func (s Secret) String() string { return "<secret>" }

// GoString returns "<secret>".
func (s Secret) GoString() string { return "<secret>" }

// LogValue returns "<secret>".
func (s Secret) LogValue() slog.Value { return slog.StringValue("<secret>") }

// Equal reports, in constant time, whether token is the secret. It is
// false when there is no secret.
func (s Secret) Equal(token string) bool {
	if s.IsZero() {
		return false
	}
	return subtle.ConstantTimeCompare(s.b, []byte(token)) == 1
}

// errSignature is a signature that does not verify.
var errSignature = errors.New("the signature does not match the body: check that the webhook's secret is the reconciler's --webhook-secret-file")

// VerifyHMAC reports whether sigHex is the hex HMAC-SHA256 of body keyed
// with the secret, compared in constant time. It is false when there is no
// secret.
func (s Secret) VerifyHMAC(body []byte, sigHex string) bool {
	if s.IsZero() {
		return false
	}
	sig, err := hex.DecodeString(strings.TrimSpace(sigHex))
	if err != nil || len(sig) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, s.b)
	m.Write(body)
	return hmac.Equal(m.Sum(nil), sig)
}

// Reveal returns the secret itself, for a client that must send it.
func (s Secret) Reveal() string { return string(s.b) }
