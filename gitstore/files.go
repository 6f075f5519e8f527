package gitstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// TreeOf returns the tree hash of commit. The error wraps ErrNotFound when the
// commit is missing.
func (r *Repo) TreeOf(commit plumbing.Hash) (plumbing.Hash, error) {
	r.rlock()
	defer r.runlock()
	c, err := r.commit(commit)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return c.TreeHash, nil
}

// commitTree returns the root tree of commit; r.mu must be held.
func (r *Repo) commitTree(commit plumbing.Hash) (*object.Tree, error) {
	c, err := r.commit(commit)
	if err != nil {
		return nil, err
	}
	t, err := object.GetTree(r.repo.Storer, c.TreeHash)
	if err != nil {
		return nil, fmt.Errorf("read tree %s of commit %s: %w", c.TreeHash, commit, classify(err))
	}
	return t, nil
}

// ReadFile returns the content of the file at path (slash-separated, relative
// to the repository root) in commit; for a symbolic link, its target. The
// error wraps ErrNotFound when the commit or the file does not exist, or path
// names a directory.
func (r *Repo) ReadFile(commit plumbing.Hash, path string) ([]byte, error) {
	if !fs.ValidPath(path) || path == "." {
		return nil, fmt.Errorf("read %q at %s: invalid path: use a slash-separated path relative to the repository root", path, commit)
	}
	r.rlock()
	defer r.runlock()
	t, err := r.commitTree(commit)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	e, err := t.FindEntry(path)
	if err != nil {
		return nil, fmt.Errorf("read %q at %s: %w", path, commit, notFoundError{err})
	}
	if !e.Mode.IsFile() {
		return nil, fmt.Errorf("read %q at %s: not a file: %w", path, commit, ErrNotFound)
	}
	b, err := r.readBlob(e.Hash)
	if err != nil {
		return nil, fmt.Errorf("read %q at %s: %w", path, commit, err)
	}
	return b, nil
}

// readBlob returns a blob's content; r.mu must be held.
func (r *Repo) readBlob(h plumbing.Hash) ([]byte, error) {
	blob, err := object.GetBlob(r.repo.Storer, h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, classify(err))
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return b, nil
}

// ListFiles returns the paths (slash-separated, sorted) of the regular files
// (executable or not; not symbolic links or submodules) in commit that match
// at least one of the doublestar globs, such as "agents/**/*.hcl". No globs
// means all regular files. A malformed glob is an error, as is a missing
// commit (wrapping ErrNotFound).
func (r *Repo) ListFiles(commit plumbing.Hash, globs ...string) ([]string, error) {
	for _, g := range globs {
		if !doublestar.ValidatePattern(g) {
			return nil, fmt.Errorf("list files: invalid glob %q", g)
		}
	}
	r.rlock()
	defer r.runlock()
	t, err := r.commitTree(commit)
	if err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	var out []string
	err = r.walkTree(t, func(name string, e object.TreeEntry) error {
		if isRegular(e.Mode) && matchAny(globs, name) {
			out = append(out, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list files at %s: %w", commit, err)
	}
	sort.Strings(out)
	return out, nil
}

// maxTreeDepth bounds the nesting of trees walked, against crafted trees.
const maxTreeDepth = 1024

// walkTree calls fn for every entry under t, depth first, in tree order, with
// its slash-separated path; fn sees a directory before its content. Entry
// names are validated with validName. r.mu must be held.
func (r *Repo) walkTree(t *object.Tree, fn func(path string, e object.TreeEntry) error) error {
	return r.walkTreeAt(t.Hash, t.Entries, "", 0, fn)
}

func (r *Repo) walkTreeAt(h plumbing.Hash, entries []object.TreeEntry, prefix string, depth int, fn func(string, object.TreeEntry) error) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("tree %s: nested deeper than %d directories", h, maxTreeDepth)
	}
	for _, e := range entries {
		p := e.Name
		if prefix != "" {
			p = prefix + "/" + e.Name
		}
		if err := validName(e.Name); err != nil {
			return fmt.Errorf("tree %s: entry %q: %w", h, p, err)
		}
		if err := fn(p, e); errors.Is(err, fs.SkipDir) && e.Mode == filemode.Dir {
			continue
		} else if err != nil {
			return err
		}
		if e.Mode != filemode.Dir {
			continue
		}
		sub, err := r.treeEntries(e.Hash)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		if err := r.walkTreeAt(e.Hash, sub, p, depth+1, fn); err != nil {
			return err
		}
	}
	return nil
}

// isRegular reports whether m is a regular file, executable or not.
func isRegular(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

func matchAny(globs []string, name string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := doublestar.Match(g, name); ok { // patterns were validated
			return true
		}
	}
	return false
}
