package gitstore

import (
	"errors"
	"io/fs"
	"net/url"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// ErrStale is wrapped when a push's compare-and-swap failed: the remote ref no
// longer has the expected old value (someone else moved it, or it already
// exists when we expected it absent). Fetch, recompute and retry.
var ErrStale = errors.New("remote ref changed")

// ErrNotFound is wrapped when a repository, ref, commit or path does not
// exist.
var ErrNotFound = errors.New("not found")

// ErrCacheLocked is wrapped when Open could not take the lock of an on-disk
// mirror (see Options.CacheDir) within Options.LockTimeout: another process
// (or another open Repo) is using it. Wait for it, or use another cache
// directory.
var ErrCacheLocked = errors.New("cache locked")

// ErrCacheUnusable is wrapped when an on-disk mirror cannot be used: its
// directory is not writable, or the mirror is corrupt. The message names the
// path and how to fix it (delete the mirror, or use another cache directory).
var ErrCacheUnusable = errors.New("cache unusable")

// cacheError is an error about the on-disk cache: it matches kind
// (ErrCacheLocked or ErrCacheUnusable) and its cause with errors.Is.
type cacheError struct {
	kind error
	msg  string
	err  error
}

func (e *cacheError) Error() string { return e.msg }
func (e *cacheError) Unwrap() []error {
	if e.err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.err}
}

// notFoundError makes err match ErrNotFound without changing its message.
type notFoundError struct{ err error }

func (e notFoundError) Error() string        { return e.err.Error() }
func (e notFoundError) Unwrap() error        { return e.err }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

// classify marks go-git's and the file system's "does not exist" errors as
// ErrNotFound, keeping their messages and chains.
func classify(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrNotFound):
		return err
	case errors.Is(err, plumbing.ErrObjectNotFound),
		errors.Is(err, plumbing.ErrReferenceNotFound),
		errors.Is(err, object.ErrFileNotFound),
		errors.Is(err, object.ErrDirectoryNotFound),
		errors.Is(err, object.ErrEntryNotFound),
		errors.Is(err, transport.ErrRepositoryNotFound),
		errors.Is(err, fs.ErrNotExist):
		return notFoundError{err}
	}
	return err
}

// redactedError replaces the message of an error that quoted credentials,
// keeping the chain for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError removes the credentials embedded in rawURL from err's message.
func redactError(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	redacted := msg
	for _, secret := range secrets(rawURL) {
		redacted = strings.ReplaceAll(redacted, secret, redactedSecret)
	}
	if redacted == msg {
		return err
	}
	return &redactedError{msg: redacted, err: err}
}

// secrets returns the credential strings embedded in rawURL, raw and escaped.
func secrets(rawURL string) []string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s))
	}
	if pw, ok := u.User.Password(); ok {
		add(pw)
	} else if isHTTP(u.Scheme) {
		add(u.User.Username())
	}
	return out
}
