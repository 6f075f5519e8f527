package gitstore

import (
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// View is the part of a tree a workspace holds: the files matching Globs
// (doublestar patterns) and the Files named. Checkout writes only those,
// and Changes compares only those with the work tree, so a file the view
// leaves out is neither written nor seen as deleted; a file created
// outside it is reported as added. A nil View is the whole tree.
//
// A view costs what it holds: subtrees no pattern can match are never read.
type View struct {
	Globs []string
	Files []string
}

// includes reports whether the file at p is in the view.
func (v *View) includes(p string) bool {
	if v == nil {
		return true
	}
	for _, f := range v.Files {
		if f == p {
			return true
		}
	}
	for _, g := range v.Globs {
		if ok, _ := doublestar.Match(g, p); ok {
			return true
		}
	}
	return false
}

// mayContain reports whether the directory dir may hold a file of the
// view: some pattern's literal directory prefix and dir are on one path.
func (v *View) mayContain(dir string) bool {
	if v == nil {
		return true
	}
	d := dir + "/"
	on := func(prefix string) bool { return strings.HasPrefix(d, prefix) || strings.HasPrefix(prefix, d) }
	for _, f := range v.Files {
		if strings.HasPrefix(f, d) {
			return true
		}
	}
	for _, g := range v.Globs {
		if on(literalDir(g)) {
			return true
		}
	}
	return false
}

// literalDir is the directory part of a pattern before its first
// metacharacter, with a trailing slash ("" when the pattern starts with
// one): every match lies below it.
func literalDir(g string) string {
	lit := g
	if i := strings.IndexAny(g, `*?[{\`); i >= 0 {
		lit = g[:i]
	}
	if i := strings.LastIndexByte(lit, '/'); i >= 0 {
		return lit[:i+1]
	}
	return ""
}
