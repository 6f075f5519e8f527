// Package approval verifies git-native approvals: a merge commit, or an
// annotated tag approve/<run-id>/<member>, signed by a reviewer's signing_key
// from reviewers.hcl (DESIGN.md §3, "Approval, git-native").
//
// It promises three things. First, it verifies what git verifies: the signed
// payload of a commit or tag is cut out of the raw object exactly as
// git verify-commit and git verify-tag cut it (SHA-1 repositories), and an SSH
// signature counts only in git's namespace "git". Second, it fails closed: no
// keys, a key of the other kind, an unsigned object, a malformed, expired or
// otherwise unverifiable signature are all refusals, never approvals. Third,
// every refusal is a *VerificationError that wraps exactly one of
// ErrUnsigned, ErrUnknownSigner and ErrBadSignature, so callers branch with
// errors.Is and record the signer's fingerprint from the error.
//
// The committer or tagger name and email are claims, not proof: only the
// signature counts, and deciding what a verified approval is worth (which
// head, which group, which rule) is the caller's job. For a tag that includes
// checking the signed object and tag headers, not the ref the tag was found
// under.
package approval

import (
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
)

// VerifyObject verifies a commit or tag object read from a go-git object
// store, as VerifyCommit or VerifyTag does by its type. Any other object
// type, or an object that cannot be read, is an error wrapping
// ErrBadSignature.
func VerifyObject(o plumbing.EncodedObject, keys []Key) (Key, error) {
	var object string
	switch o.Type() {
	case plumbing.CommitObject:
		object = "commit"
	case plumbing.TagObject:
		object = "tag"
	default:
		return Key{}, &VerificationError{Object: o.Type().String(), Kind: ErrBadSignature,
			Err: fmt.Errorf("object %s is a %s, not a commit or tag", o.Hash(), o.Type())}
	}
	raw, err := readRaw(o)
	if err != nil {
		return Key{}, &VerificationError{Object: object, Kind: ErrBadSignature,
			Err: fmt.Errorf("read %s %s: %w", object, o.Hash(), err)}
	}
	if object == "commit" {
		return VerifyCommit(raw, keys)
	}
	return VerifyTag(raw, keys)
}

// maxObjectSize bounds what VerifyObject reads; commits and tags are small.
const maxObjectSize = 16 << 20

func readRaw(o plumbing.EncodedObject) ([]byte, error) {
	if o.Size() > maxObjectSize {
		return nil, fmt.Errorf("object of %d bytes is larger than %d", o.Size(), maxObjectSize)
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	raw, err := io.ReadAll(io.LimitReader(r, maxObjectSize+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxObjectSize {
		return nil, fmt.Errorf("object is larger than %d bytes", maxObjectSize)
	}
	return raw, nil
}
