package approval

import (
	"bytes"
	"strings"
	"testing"
)

// TestPayloadAgreesWithGit crafts commit and tag objects with the header
// shapes git's signature parsing treats specially and checks that the
// payload cut out is the one git verify-commit/verify-tag -v prints, and
// that nothing verifies here that git refuses.
func TestPayloadAgreesWithGit(t *testing.T) {
	t.Parallel()
	e := newGitEnv(t)
	rita := e.sshKey("rita", "ed25519", 0)
	key, err := ParseKey(rita.pub)
	if err != nil {
		t.Fatal(err)
	}
	keys := []Key{key}
	r := e.repo()
	r.git(nil, nil, "commit", "-q", "--allow-empty", "-m", "base")
	r.git(nil, signSSH(rita), "commit", "-q", "-S", "--allow-empty", "-m", "signed\n\ngpgsig in the message is not a header\n-----BEGIN SSH SIGNATURE-----\nnor is this")
	signed := r.catFile("commit", "HEAD")
	r.git(nil, signSSH(rita), "tag", "-s", "-m", "ok\n-----BEGIN PGP SIGNATURE-----\nnot the signature", "approve/"+runID+"/rita", "HEAD")
	tag := r.catFile("tag", "approve/"+runID+"/rita")
	allowed := r.allowedSigners(rita)

	hdrEnd := bytes.Index(signed, []byte("\n\n")) + 1
	sigStart := bytes.Index(signed, []byte("gpgsig "))
	sigEnd := sigStart + bytes.Index(signed[sigStart:], []byte(" -----END SSH SIGNATURE-----\n")) + len(" -----END SSH SIGNATURE-----\n")
	gpgsig := signed[sigStart:sigEnd]
	insert := func(raw []byte, at int, s string) []byte {
		return append(append(append([]byte{}, raw[:at]...), s...), raw[at:]...)
	}
	without := append(append([]byte{}, signed[:sigStart]...), signed[sigEnd:]...)

	commits := []struct {
		name     string
		raw      []byte
		ok       bool // VerifyCommit accepts it
		stricter bool // we refuse what git accepts
	}{
		{"as git signs it", signed, true, false},
		{"gpgsig-sha256 header is not payload", insert(signed, sigEnd, "gpgsig-sha256 -----BEGIN SSH SIGNATURE-----\n AAAA\n -----END SSH SIGNATURE-----\n"), true, false},
		{"gpgsig-sha256 before gpgsig", insert(signed, sigStart, "gpgsig-sha256 x\n y\n"), true, false},
		{"other gpgsig* header is dropped with its continuation", insert(signed, sigEnd, "gpgsigx y\n z\n"), true, false},
		{"extra header after the signature is payload", insert(signed, sigEnd, "encoding UTF-8\n"), false, false},
		{"mergetag header is payload", insert(signed, sigStart, "mergetag object 0000000000000000000000000000000000000000\n type commit\n tag v1\n"), false, false},
		{"two gpgsig headers are one signature", insert(signed, sigEnd, "encoding UTF-8\n"+string(gpgsig)), false, false},
		{"signature moved to the end of the header", insert(without, bytes.Index(without, []byte("\n\n"))+1, string(gpgsig)), true, false},
		{"gpgsig without the space", bytes.Replace(signed, []byte("gpgsig "), []byte("gpgsig\t"), 1), false, false},
		{"no message", append([]byte{}, signed[:hdrEnd]...), false, false},
		{"no newline at the end", bytes.TrimRight(signed, "\n"), false, false},
		// git cannot parse it, so it prints no payload.
		{"crlf", bytes.ReplaceAll(signed, []byte("\n"), []byte("\r\n")), false, false},
	}
	for _, tc := range commits {
		t.Run("commit/"+tc.name, func(t *testing.T) {
			id := r.write("commit", tc.raw)
			p, _, isSigned := splitCommit(tc.raw)
			if isSigned && !bytes.Contains(tc.raw, []byte("\r")) {
				if gp := r.gitPayload("verify-commit", id); gp != string(p) {
					t.Errorf("payload\n%q\ngit verifies\n%q", p, gp)
				}
			}
			_, err := VerifyCommit(tc.raw, keys)
			if (err == nil) != tc.ok {
				t.Errorf("VerifyCommit: %v, want ok = %v", err, tc.ok)
			}
			gitOK := r.gitVerifies("verify-commit", id, allowed, nil)
			if err == nil && !gitOK {
				t.Errorf("VerifyCommit accepts what git verify-commit refuses")
			}
			if err != nil && gitOK && !tc.stricter {
				t.Errorf("VerifyCommit refuses what git verify-commit accepts: %v", err)
			}
		})
	}

	tags := []struct {
		name     string
		raw      []byte
		ok       bool
		stricter bool
	}{
		{"as git signs it, a signature line in the message", tag, true, false},
		{"second signature block appended", append(append([]byte{}, tag...), tag[bytes.LastIndex(tag, sshArmor):]...), false, false},
		{"trailing text after the block", append(append([]byte{}, tag...), "trailing\n"...), false, true},
		{"gpgsig header in the tag header", insert(tag, bytes.Index(tag, []byte("\n\n"))+1, "gpgsig-sha256 x\n y\n"), false, true},
		{"no newline at the end", bytes.TrimRight(tag, "\n"), true, false},
	}
	for _, tc := range tags {
		t.Run("tag/"+tc.name, func(t *testing.T) {
			id := r.write("tag", tc.raw)
			p, _, isSigned, hasHdr := splitTag(tc.raw)
			if isSigned && !hasHdr {
				if gp := r.gitPayload("verify-tag", id); gp != string(p) {
					t.Errorf("payload\n%q\ngit verifies\n%q", p, gp)
				}
			}
			_, err := VerifyTag(tc.raw, keys)
			if (err == nil) != tc.ok {
				t.Errorf("VerifyTag: %v, want ok = %v", err, tc.ok)
			}
			gitOK := r.gitVerifies("verify-tag", id, allowed, nil)
			if err == nil && !gitOK {
				t.Errorf("VerifyTag accepts what git verify-tag refuses")
			}
			if err != nil && gitOK && !tc.stricter {
				t.Errorf("VerifyTag refuses what git verify-tag accepts: %v", err)
			}
		})
	}
	if !strings.Contains(string(tag), "\n-----BEGIN PGP SIGNATURE-----\nnot the signature\n") {
		t.Fatalf("the tag message lost its decoy signature line:\n%s", tag)
	}
}
