package approval

import "bytes"

// The armor lines git recognises at the start of a signature
// (gpg-interface.c, sigs of each signing format).
var (
	sshArmor     = []byte("-----BEGIN SSH SIGNATURE-----")
	pgpArmor     = []byte("-----BEGIN PGP SIGNATURE-----")
	pgpMessage   = []byte("-----BEGIN PGP MESSAGE-----")
	x509Armor    = []byte("-----BEGIN SIGNED MESSAGE-----")
	sigHeader    = []byte("gpgsig ")
	sigHeaderAny = []byte("gpgsig")
)

// startsSignature reports whether b begins with a signature git knows
// (get_format_by_sig).
func startsSignature(b []byte) bool {
	return bytes.HasPrefix(b, sshArmor) || bytes.HasPrefix(b, pgpArmor) ||
		bytes.HasPrefix(b, pgpMessage) || bytes.HasPrefix(b, x509Armor)
}

// splitCommit cuts a commit object into the signed payload and the
// signature exactly as git's parse_buffer_signed_by_header does in a SHA-1
// repository: the signature is the value of the gpgsig header and its
// continuation lines (each without its leading space), the payload is the
// object without them and without any other gpgsig* header (such as
// gpgsig-sha256) and its continuation lines. Only the header is searched:
// everything from the first empty line on is payload. signed reports whether
// a gpgsig header was found.
func splitCommit(raw []byte) (payload, sig []byte, signed bool) {
	payload = make([]byte, 0, len(raw))
	inSig, other := false, false
	for pos := 0; pos < len(raw); {
		next := len(raw)
		if i := bytes.IndexByte(raw[pos:], '\n'); i >= 0 {
			next = pos + i + 1
		}
		line := raw[pos:next]
		var value []byte
		isSig := false
		switch {
		case inSig && line[0] == ' ':
			value, isSig = line[1:], true
		case bytes.HasPrefix(line, sigHeader):
			value, isSig = line[len(sigHeader):], true
			other = false
		case bytes.HasPrefix(line, sigHeaderAny):
			other = true
		case other && line[0] != ' ':
			other = false
		}
		if isSig {
			sig = append(sig, value...)
			signed, inSig = true, true
		} else {
			if line[0] == '\n' {
				// The end of the header: the rest is the message.
				next = len(raw)
				line = raw[pos:]
			}
			if !other {
				payload = append(payload, line...)
			}
			inSig = false
		}
		pos = next
	}
	return payload, sig, signed
}

// splitTag cuts a tag object into the signed payload and the signature as
// git's parse_signature does: the signature starts at the last line that
// begins a signature git knows (parse_signed_buffer) and runs to the end;
// the payload is everything before it. signed reports whether such a line
// was found.
//
// git also removes gpgsig and gpgsig-sha256 headers from a tag's payload
// (remove_signature, for tags signed in both hash algorithms); hasSigHeader
// reports such a header, which VerifyTag refuses rather than reproduce.
func splitTag(raw []byte) (payload, sig []byte, signed, hasSigHeader bool) {
	match := len(raw)
	for pos := 0; pos < len(raw); {
		if startsSignature(raw[pos:]) {
			match = pos
		}
		i := bytes.IndexByte(raw[pos:], '\n')
		if i < 0 {
			break
		}
		pos += i + 1
	}
	if match == len(raw) {
		return nil, nil, false, false
	}
	payload, sig = raw[:match], raw[match:]
	for pos := 0; pos < len(payload); {
		line := payload[pos:]
		if line[0] == '\n' {
			break
		}
		if bytes.HasPrefix(line, sigHeaderAny) {
			hasSigHeader = true
			break
		}
		i := bytes.IndexByte(line, '\n')
		if i < 0 {
			break
		}
		pos += i + 1
	}
	return payload, sig, true, hasSigHeader
}
