package gitstore

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// RawObject returns the type and the raw content of object h, as git stores
// it without its header: for a tree, entries "<mode> <name>\x00<20-byte
// hash>" one after the other; for a commit, its text. The error wraps
// ErrNotFound when the object is not in the local mirror. Like the other
// readers, it may run alongside other readers (see Repo).
func (r *Repo) RawObject(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	r.rlock()
	defer r.runlock()
	return r.rawObject(h)
}

// rawObject reads object h; r.mu must be held.
func (r *Repo) rawObject(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	obj, err := r.repo.Storer.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return plumbing.InvalidObject, nil, fmt.Errorf("read object %s: %w", h, classify(err))
	}
	rd, err := obj.Reader()
	if err != nil {
		return plumbing.InvalidObject, nil, fmt.Errorf("read object %s: %w", h, err)
	}
	defer rd.Close()
	b := make([]byte, 0, obj.Size())
	buf := bytes.NewBuffer(b)
	if _, err := io.Copy(buf, rd); err != nil {
		return plumbing.InvalidObject, nil, fmt.Errorf("read object %s: %w", h, err)
	}
	return obj.Type(), buf.Bytes(), nil
}

// TreeEntry returns the hash and mode of the entry at path (slash-separated,
// relative to the repository root; "." for the root tree) in commit, reading
// only the trees on the path, each scanned without decoding its other
// entries, and not the entry itself. The error wraps ErrNotFound when the
// commit or the path does not exist, or a directory on the path is a file.
func (r *Repo) TreeEntry(commit plumbing.Hash, path string) (plumbing.Hash, filemode.FileMode, error) {
	if !fs.ValidPath(path) {
		return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: invalid path: use a slash-separated path relative to the repository root", path, commit)
	}
	r.rlock()
	defer r.runlock()
	c, err := r.commit(commit)
	if err != nil {
		return plumbing.ZeroHash, 0, fmt.Errorf("look up %q: %w", path, err)
	}
	h, mode := c.TreeHash, filemode.Dir
	if path == "." {
		return h, mode, nil
	}
	for i, name := range strings.Split(path, "/") {
		if mode != filemode.Dir {
			return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: %q is not a directory: %w",
				path, commit, strings.Join(strings.Split(path, "/")[:i], "/"), ErrNotFound)
		}
		typ, data, err := r.rawObject(h)
		if err != nil {
			return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: %w", path, commit, err)
		}
		if typ != plumbing.TreeObject {
			return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: object %s is a %s, not a tree", path, commit, h, typ)
		}
		var ok bool
		if h, mode, ok, err = findEntry(data, name); err != nil {
			return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: %w", path, commit, err)
		} else if !ok {
			return plumbing.ZeroHash, 0, fmt.Errorf("look up %q at %s: %w", path, commit, ErrNotFound)
		}
	}
	return h, mode, nil
}

// findEntry scans a raw tree for the entry called name.
func findEntry(tree []byte, name string) (plumbing.Hash, filemode.FileMode, bool, error) {
	for len(tree) > 0 {
		sp := bytes.IndexByte(tree, ' ')
		if sp < 0 {
			return plumbing.ZeroHash, 0, false, fmt.Errorf("malformed tree: entry without a mode")
		}
		nul := bytes.IndexByte(tree[sp+1:], 0)
		if nul < 0 || len(tree) < sp+1+nul+1+20 {
			return plumbing.ZeroHash, 0, false, fmt.Errorf("malformed tree: truncated entry")
		}
		entry := tree[sp+1 : sp+1+nul]
		rest := tree[sp+1+nul+1:]
		if string(entry) == name {
			m, err := strconv.ParseUint(string(tree[:sp]), 8, 32)
			if err != nil {
				return plumbing.ZeroHash, 0, false, fmt.Errorf("malformed tree: entry %q: mode %q", name, tree[:sp])
			}
			var h plumbing.Hash
			copy(h[:], rest[:20])
			return h, filemode.FileMode(m), true, nil
		}
		tree = rest[20:]
	}
	return plumbing.ZeroHash, 0, false, nil
}

// DirEntry is an entry of a directory (a tree) of a commit.
type DirEntry struct {
	Name string
	Mode filemode.FileMode
	Hash plumbing.Hash
}

// ReadDir returns the entries of directory dir (slash-separated, relative
// to the repository root; "." for the root) in commit, in git's order,
// reading only the trees on its path. The error wraps ErrNotFound when the
// commit or the directory does not exist, or dir is a file.
func (r *Repo) ReadDir(commit plumbing.Hash, dir string) ([]DirEntry, error) {
	h, mode, err := r.TreeEntry(commit, dir)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	if mode != filemode.Dir {
		return nil, fmt.Errorf("read directory %q at %s: not a directory: %w", dir, commit, ErrNotFound)
	}
	typ, tree, err := r.RawObject(h)
	if err != nil {
		return nil, fmt.Errorf("read directory %q at %s: %w", dir, commit, err)
	}
	if typ != plumbing.TreeObject {
		return nil, fmt.Errorf("read directory %q at %s: object %s is a %s, not a tree", dir, commit, h, typ)
	}
	var out []DirEntry
	for len(tree) > 0 {
		sp := bytes.IndexByte(tree, ' ')
		nul := -1
		if sp >= 0 {
			nul = bytes.IndexByte(tree[sp+1:], 0)
		}
		if sp < 0 || nul < 0 || len(tree) < sp+1+nul+1+20 {
			return nil, fmt.Errorf("read directory %q at %s: malformed tree %s", dir, commit, h)
		}
		m, err := strconv.ParseUint(string(tree[:sp]), 8, 32)
		if err != nil {
			return nil, fmt.Errorf("read directory %q at %s: malformed tree %s: mode %q", dir, commit, h, tree[:sp])
		}
		e := DirEntry{Name: string(tree[sp+1 : sp+1+nul]), Mode: filemode.FileMode(m)}
		copy(e.Hash[:], tree[sp+1+nul+1:])
		out = append(out, e)
		tree = tree[sp+1+nul+1+20:]
	}
	return out, nil
}
