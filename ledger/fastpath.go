package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"strconv"

	"github.com/agentgitops/reconciler/signing"
)

// dsseParts are the parts of a bundle in the exact shape signing.Signer
// writes it.
type dsseParts struct {
	hint         string
	payload, sig []byte
}

// canonical is the shape of the bundles signing.Signer writes, as JSON
// tokens; "" stands for a base64 string.
var canonical = []string{
	`{`, `"mediaType"`, `:`, `"application/vnd.dev.sigstore.bundle.v0.3+json"`, `,`,
	`"verificationMaterial"`, `:`, `{`, `"publicKey"`, `:`, `{`, `"hint"`, `:`, ``, `}`, `}`, `,`,
	`"dsseEnvelope"`, `:`, `{`, `"payload"`, `:`, ``, `,`,
	`"payloadType"`, `:`, `"` + PayloadType + `"`, `,`,
	`"signatures"`, `:`, `[`, `{`, `"sig"`, `:`, ``, `}`, `]`, `}`, `}`,
}

// parseCanonical reads a bundle that has exactly the shape signing.Signer
// writes (any JSON whitespace between tokens, standard padded base64):
// nothing more, nothing less, no escapes. Whatever else sigstore-go may
// accept is left to it (ok is false).
func parseCanonical(b []byte) (dsseParts, bool) {
	var parts dsseParts
	var strs [3][]byte
	n := 0
	for _, tok := range canonical {
		b = skipSpace(b)
		if tok != "" {
			if !bytes.HasPrefix(b, []byte(tok)) {
				return parts, false
			}
			b = b[len(tok):]
			continue
		}
		if len(b) == 0 || b[0] != '"' {
			return parts, false
		}
		end := 1
		for end < len(b) && isBase64Char(b[end]) {
			end++
		}
		if end == len(b) || b[end] != '"' {
			return parts, false
		}
		strs[n], n = b[1:end], n+1
		b = b[end+1:]
	}
	if len(skipSpace(b)) != 0 {
		return parts, false
	}
	parts.hint = string(strs[0])
	var ok bool
	if parts.payload, ok = decodeBase64(strs[1]); !ok {
		return parts, false
	}
	if parts.sig, ok = decodeBase64(strs[2]); !ok {
		return parts, false
	}
	return parts, true
}

// decodeBase64 is base64.StdEncoding.DecodeString without the string.
func decodeBase64(b []byte) ([]byte, bool) {
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Decode(out, b)
	return out[:n], err == nil
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

func isBase64Char(c byte) bool { return base64Chars[c] }

var base64Chars = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
		t[c] = true
	}
	return t
}()

// verifyEntry is t.verify(seq, bundle) with a fast path for the bundles
// signing.Signer writes: for an entry after the first whose bundle has that
// shape (parts) and whose key hint is a trusted ECDSA P-256 key's ID, it
// checks the signature over the DSSE pre-authentication encoding with
// ecdsa.VerifyASN1 (what sigstore-go ends up doing for such a bundle), then
// decodes the statement as t.verify does. Anything else, including every
// failure, goes through t.verify and sigstore-go, so that what is rejected
// and why is exactly what t.verify says.
func verifyEntry(t *trustAt, seq uint64, bundle []byte, parts *dsseParts) (Predicate, signing.PublicKey, error) {
	if seq > 1 && parts != nil {
		if p, key, ok := t.fastVerify(parts); ok {
			return p, key, nil
		}
	}
	return t.t.verify(seq, bundle)
}

// fastVerify is verifyEntry's fast path for an entry after the first; ok
// is false for whatever it does not accept.
func (t *trustAt) fastVerify(parts *dsseParts) (Predicate, signing.PublicKey, bool) {
	k, ok := t.fast[parts.hint]
	if !ok || t.t.verifier == nil {
		return Predicate{}, signing.PublicKey{}, false
	}
	h := sha256.Sum256(pae(PayloadType, parts.payload))
	if !ecdsa.VerifyASN1(k.key, h[:], parts.sig) {
		return Predicate{}, signing.PublicKey{}, false
	}
	p, err := parseStatementOnce(parts.payload)
	if err != nil || p.Type == Genesis {
		return Predicate{}, signing.PublicKey{}, false
	}
	return p, k.pub, true
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, 32+len(payloadType)+len(payload))
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}
