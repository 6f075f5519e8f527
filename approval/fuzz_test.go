package approval

import (
	"errors"
	"testing"
)

// fuzzSeeds makes real signed and unsigned commits and tags, SSH and
// OpenPGP, and returns them with the keys that signed them.
func fuzzSeeds(f *testing.F) (commits, tags [][]byte, keys []Key) {
	e := newGitEnv(f)
	rita := e.sshKey("rita", "ed25519", 0)
	carol := e.pgpKey("carol")
	for _, s := range []string{rita.pub, carol.armored} {
		k, err := ParseKey(s)
		if err != nil {
			f.Fatal(err)
		}
		k.Member = "m"
		keys = append(keys, k)
	}
	r := e.repo()
	r.git(nil, nil, "commit", "-q", "--allow-empty", "-m", "base")
	commits = append(commits, r.catFile("commit", "HEAD"))
	r.git(nil, signSSH(rita), "commit", "-q", "-S", "--allow-empty", "-m", "ssh")
	commits = append(commits, r.catFile("commit", "HEAD"))
	r.git(carol.env(), signPGP(carol), "commit", "-q", "-S", "--allow-empty", "-m", "openpgp")
	commits = append(commits, r.catFile("commit", "HEAD"))
	r.git(nil, signSSH(rita), "tag", "-s", "-m", "ok", "approve/"+runID+"/rita", "HEAD")
	tags = append(tags, r.catFile("tag", "approve/"+runID+"/rita"))
	r.git(carol.env(), signPGP(carol), "tag", "-s", "-m", "ok", "approve/"+runID+"/carol", "HEAD")
	tags = append(tags, r.catFile("tag", "approve/"+runID+"/carol"))
	r.git(nil, nil, "tag", "-a", "-m", "ok", "approve/"+runID+"/nobody", "HEAD")
	tags = append(tags, r.catFile("tag", "approve/"+runID+"/nobody"))
	return commits, tags, keys
}

// checkContract fails unless a result keeps the package's promises: a key
// from keys, or an error wrapping exactly one sentinel.
func checkContract(t *testing.T, got Key, err error) {
	if err == nil {
		if got.Member != "m" || (got.ssh == nil && got.pgp == nil) {
			t.Fatalf("verified with a key that was not given: %v", got)
		}
		return
	}
	n := 0
	for _, s := range []error{ErrUnsigned, ErrUnknownSigner, ErrBadSignature} {
		if errors.Is(err, s) {
			n++
		}
	}
	var ve *VerificationError
	if n != 1 || !errors.As(err, &ve) {
		t.Fatalf("error %v wraps %d sentinels", err, n)
	}
	if got.ssh != nil || got.pgp != nil || got.Member != "" || got.Method != "" {
		t.Fatalf("error %v with key %v", err, got)
	}
}

func FuzzVerifyCommit(f *testing.F) {
	commits, tags, keys := fuzzSeeds(f)
	for _, c := range commits {
		f.Add(c)
	}
	f.Add(tags[0])
	f.Add([]byte("tree \ngpgsig -----BEGIN SSH SIGNATURE-----\n -----END SSH SIGNATURE-----\n\n"))
	f.Add([]byte("tree \ngpgsig -----BEGIN PGP SIGNATURE-----\n\n =AAAA\n -----END PGP SIGNATURE-----\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := VerifyCommit(raw, keys)
		checkContract(t, got, err)
		if _, err := VerifyCommit(raw, nil); err == nil {
			t.Fatal("verified with no keys")
		}
	})
}

func FuzzVerifyTag(f *testing.F) {
	_, tags, keys := fuzzSeeds(f)
	for _, c := range tags {
		f.Add(c)
	}
	f.Add([]byte("object \n\n-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := VerifyTag(raw, keys)
		checkContract(t, got, err)
		if _, err := VerifyTag(raw, nil); err == nil {
			t.Fatal("verified with no keys")
		}
	})
}
