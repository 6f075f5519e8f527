package gitstore

import (
	"errors"
	"fmt"
	"strings"
)

// errUnsafePath is wrapped by validName and validPath.
var errUnsafePath = errors.New("unsafe path")

// validName reports whether name is safe as one component of a path
// materialized on disk: not empty, "." or "..", without separators ('/' or
// '\\') or control characters, and not a spelling of ".git" that some file
// system (case-insensitive, NTFS short names and trailing dots, HFS+ ignored
// code points) would resolve to the repository's metadata directory.
func validName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: component %q", errUnsafePath, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: component %q contains a path separator", errUnsafePath, name)
	case strings.ContainsFunc(name, func(c rune) bool { return c < 0x20 || c == 0x7f }):
		return fmt.Errorf("%w: component %q contains a control character", errUnsafePath, name)
	case isDotGit(name):
		return fmt.Errorf("%w: component %q names the .git directory", errUnsafePath, name)
	}
	return nil
}

// validPath checks a slash-separated path relative to the repository root.
func validPath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty path", errUnsafePath)
	}
	for part := range strings.SplitSeq(p, "/") {
		if err := validName(part); err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	return nil
}

// isDotGit reports whether a file system could resolve name to ".git": it
// ignores case, the code points HFS+ ignores, trailing spaces and dots and an
// alternate data stream suffix (NTFS), and accepts the NTFS short name git~1.
func isDotGit(name string) bool {
	var b strings.Builder
	for _, c := range name {
		if isHFSIgnored(c) {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	s := b.String()
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " .")
	return s == ".git" || s == "git~1"
}

// isHFSIgnored reports whether HFS+ ignores c when comparing names.
func isHFSIgnored(c rune) bool {
	switch c {
	case 0x200c, 0x200d, 0x200e, 0x200f,
		0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
		0x206a, 0x206b, 0x206c, 0x206d, 0x206e, 0x206f,
		0xfeff:
		return true
	}
	return false
}
