package gitstore

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// redactedSecret replaces credentials in URLs and error messages.
const redactedSecret = "xxxxx"

// NormalizeURL returns s in the form go-git's transports accept. It accepts a
// local path (relative or absolute, to a bare repository or to a working copy,
// for which the .git directory is used), a file:// URL, an http(s):// URL, an
// ssh:// URL or an scp-like address such as git@host:org/repo.git. Local paths
// and file:// URLs come back as clean absolute paths.
//
// It fails for an empty string, for unsupported schemes, and for a local path
// that does not exist (wrapping [ErrNotFound]) or is not a directory. Errors
// never contain the credentials of s.
func NormalizeURL(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", errors.New("normalize repository url: empty url: give a local path, file://, http(s):// or ssh:// url")
	}
	if i := strings.Index(s, "://"); i > 0 {
		u, err := url.Parse(s)
		if err != nil {
			// url.Parse quotes its input, credentials included: keep only the cause.
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			return "", fmt.Errorf("normalize repository url %q: %w", Redact(s), err)
		}
		switch strings.ToLower(u.Scheme) {
		case "http", "https", "ssh":
			if u.Host == "" {
				return "", fmt.Errorf("normalize repository url %q: missing host", Redact(s))
			}
			return s, nil
		case "file":
			if u.Host != "" && u.Host != "localhost" {
				return "", fmt.Errorf("normalize repository url %q: file urls cannot name a remote host", Redact(s))
			}
			return localRepoPath(u.Path)
		default:
			return "", fmt.Errorf("normalize repository url %q: unsupported scheme %q: use a local path, file://, http(s):// or ssh://", Redact(s), u.Scheme)
		}
	}
	if _, err := os.Lstat(s); err == nil || filepath.IsAbs(s) || strings.HasPrefix(s, ".") {
		return localRepoPath(s)
	}
	if ep, err := transport.NewEndpoint(s); err == nil && ep.Protocol == "ssh" {
		return s, nil // scp-like: user@host:path
	}
	return localRepoPath(s)
}

// localRepoPath returns the absolute path of the repository at p, preferring
// the .git directory of a working copy.
func localRepoPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("normalize repository path %q: %w", p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("normalize repository path %q: %w", p, notFoundError{err})
		}
		return "", fmt.Errorf("normalize repository path %q: %w", p, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("normalize repository path %q: not a directory", p)
	}
	if fi, err := os.Stat(filepath.Join(abs, ".git")); err == nil && fi.IsDir() {
		return filepath.Join(abs, ".git"), nil
	}
	return abs, nil
}

// Redact returns s with the password of its userinfo replaced by "xxxxx", for
// logs and errors. For http(s) URLs that carry a user name and no password
// (a common way to pass a token), the user name is replaced instead. Strings
// that are not URLs (local paths, scp-like addresses) are returned unchanged.
func Redact(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Unparseable: drop everything before the last '@' of the authority.
		rest := s[i+3:]
		authority := rest
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			authority = rest[:j]
		}
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			return s[:i+3] + redactedSecret + rest[at:]
		}
		return s
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redactedSecret)
	} else if isHTTP(u.Scheme) && u.User.Username() != "" {
		u.User = url.User(redactedSecret)
	} else {
		return s
	}
	return u.String()
}

func isHTTP(scheme string) bool {
	s := strings.ToLower(scheme)
	return s == "http" || s == "https"
}
