package gitstore

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// treeNode is a tree being edited: untouched subtrees keep their hash and are
// never loaded.
type treeNode struct {
	entries map[string]*nodeEntry
}

type nodeEntry struct {
	mode filemode.FileMode
	hash plumbing.Hash
	sub  *treeNode // loaded (and possibly edited) subtree; nil if untouched
}

// WriteTree stores a tree equal to base's tree (plumbing.ZeroHash for the
// empty tree) with changes applied and returns its hash. base is a commit
// hash. Deletions are applied first, then additions and modifications;
// missing directories are created and directories left empty are removed.
// Blobs and trees go into the repository's object store; no ref moves.
//
// Changes are checked strictly: StatusAdded needs the path to be absent,
// StatusModified and StatusDeleted need a file or symlink there (else the
// error wraps ErrNotFound). Mode may be zero (a regular file), Regular,
// Executable or Symlink. Paths are validated as Checkout validates tree
// entries; a path may appear once. A missing base wraps ErrNotFound.
func (r *Repo) WriteTree(base plumbing.Hash, changes []FileChange) (plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	root := &treeNode{entries: map[string]*nodeEntry{}}
	if !base.IsZero() {
		c, err := r.commit(base)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %w", err)
		}
		if root, err = r.loadNode(c.TreeHash); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree on %s: %w", base, err)
		}
	}
	ordered := make([]FileChange, len(changes))
	copy(ordered, changes)
	sort.SliceStable(ordered, func(i, j int) bool {
		return ordered[i].Status == StatusDeleted && ordered[j].Status != StatusDeleted
	})
	seen := make(map[string]bool, len(changes))
	for _, c := range ordered {
		if err := validPath(c.Path); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %w", err)
		}
		if seen[c.Path] {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %q changed twice", c.Path)
		}
		seen[c.Path] = true
		if err := r.apply(root, c); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %s %q: %w", c.Status, c.Path, err)
		}
	}
	h, err := r.storeNode(root)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write tree: %w", err)
	}
	return h, nil
}

// loadNode reads tree h into an editable node.
func (r *Repo) loadNode(h plumbing.Hash) (*treeNode, error) {
	entries, err := r.treeEntries(h)
	if err != nil {
		return nil, err
	}
	n := &treeNode{entries: make(map[string]*nodeEntry, len(entries))}
	for _, e := range entries {
		n.entries[e.Name] = &nodeEntry{mode: e.Mode, hash: e.Hash}
	}
	return n, nil
}

// apply applies one change below n.
func (r *Repo) apply(n *treeNode, c FileChange) error {
	parts := strings.Split(c.Path, "/")
	dirs, name := parts[:len(parts)-1], parts[len(parts)-1]
	mode, err := changeMode(c)
	if err != nil {
		return err
	}
	if c.Status == StatusDeleted {
		return r.remove(n, dirs, name)
	}
	for i, d := range dirs {
		e := n.entries[d]
		switch {
		case e == nil:
			if c.Status == StatusModified {
				return fmt.Errorf("directory %q: %w", strings.Join(dirs[:i+1], "/"), ErrNotFound)
			}
			e = &nodeEntry{mode: filemode.Dir, sub: &treeNode{entries: map[string]*nodeEntry{}}}
			n.entries[d] = e
		case e.mode != filemode.Dir:
			return fmt.Errorf("%q is not a directory", strings.Join(dirs[:i+1], "/"))
		case e.sub == nil:
			sub, err := r.loadNode(e.hash)
			if err != nil {
				return err
			}
			e.sub = sub
		}
		n = e.sub
	}
	existing := n.entries[name]
	switch {
	case c.Status == StatusAdded && existing != nil:
		return errors.New("path already exists: use StatusModified to replace it")
	case c.Status == StatusModified && (existing == nil || !isFileMode(existing.mode)):
		return fmt.Errorf("no file to modify: %w", ErrNotFound)
	}
	h, err := r.storeBlob(c.Content)
	if err != nil {
		return err
	}
	n.entries[name] = &nodeEntry{mode: mode, hash: h}
	return nil
}

// remove deletes the file dirs/name below n and prunes directories it leaves
// empty.
func (r *Repo) remove(n *treeNode, dirs []string, name string) error {
	if len(dirs) == 0 {
		e := n.entries[name]
		if e == nil || !isFileMode(e.mode) {
			return fmt.Errorf("no file to delete: %w", ErrNotFound)
		}
		delete(n.entries, name)
		return nil
	}
	e := n.entries[dirs[0]]
	if e == nil || e.mode != filemode.Dir {
		return fmt.Errorf("no file to delete: %w", ErrNotFound)
	}
	if e.sub == nil {
		sub, err := r.loadNode(e.hash)
		if err != nil {
			return err
		}
		e.sub = sub
	}
	if err := r.remove(e.sub, dirs[1:], name); err != nil {
		return err
	}
	if len(e.sub.entries) == 0 {
		delete(n.entries, dirs[0])
	}
	return nil
}

func isFileMode(m filemode.FileMode) bool { return isRegular(m) || m == filemode.Symlink }

// storeNode stores n and its loaded subtrees and returns n's hash.
func (r *Repo) storeNode(n *treeNode) (plumbing.Hash, error) {
	t := &object.Tree{Entries: make([]object.TreeEntry, 0, len(n.entries))}
	for name, e := range n.entries {
		if e.sub != nil {
			h, err := r.storeNode(e.sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			e.hash = h
		}
		t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: e.mode, Hash: e.hash})
	}
	sort.Sort(object.TreeEntrySorter(t.Entries))
	obj := r.repo.Storer.NewEncodedObject()
	if err := t.Encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode tree: %w", err)
	}
	h, err := r.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store tree: %w", err)
	}
	r.stored(h)
	r.trees.put(h, t.Entries)
	return h, nil
}

// storeBlob stores content as a blob and returns its hash.
func (r *Repo) storeBlob(content []byte) (plumbing.Hash, error) {
	obj := r.repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	obj.SetSize(int64(len(content)))
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store blob: %w", err)
	}
	if _, err := w.Write(content); err != nil {
		w.Close()
		return plumbing.ZeroHash, fmt.Errorf("store blob: %w", err)
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store blob: %w", err)
	}
	h, err := r.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store blob: %w", err)
	}
	r.stored(h)
	return h, nil
}

// NewCommit describes a commit for CreateCommit.
type NewCommit struct {
	Tree      plumbing.Hash
	Parents   []plumbing.Hash // none for the root of an orphan branch
	Author    object.Signature
	Committer object.Signature // zero value means same as Author
	Message   string           // stored as given (git conventionally ends it with "\n")
}

// signatures checks the author and committer and returns the committer
// (the author when Committer is zero).
func (c NewCommit) signatures() (object.Signature, error) {
	committer := c.Committer
	if committer.Name == "" && committer.Email == "" && committer.When.IsZero() {
		committer = c.Author
	}
	for _, s := range []struct {
		role string
		sig  object.Signature
	}{{"author", c.Author}, {"committer", committer}} {
		if err := validSignature(s.sig); err != nil {
			return object.Signature{}, fmt.Errorf("create commit: %s: %w", s.role, err)
		}
	}
	return committer, nil
}

// CreateCommit stores a commit object and returns its hash; no ref moves. The
// tree and parents must already be in the repository (the error wraps
// ErrNotFound otherwise), and the author (and committer, if given) need a
// name, an email and a time.
func (r *Repo) CreateCommit(c NewCommit) (plumbing.Hash, error) {
	committer, err := c.signatures()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.repo.Storer.EncodedObject(plumbing.TreeObject, c.Tree); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: tree %s: %w", c.Tree, classify(err))
	}
	for _, p := range c.Parents {
		if _, err := r.commit(p); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("create commit: parent: %w", err)
		}
	}
	commit := &object.Commit{
		Author:       c.Author,
		Committer:    committer,
		Message:      c.Message,
		TreeHash:     c.Tree,
		ParentHashes: c.Parents,
	}
	obj := r.repo.Storer.NewEncodedObject()
	if err := commit.Encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: encode: %w", err)
	}
	h, err := r.repo.Storer.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: store: %w", err)
	}
	r.stored(h)
	return h, nil
}

// stored records an object this Repo wrote, for Push to send; r.mu must be
// held exclusively.
func (r *Repo) stored(h plumbing.Hash) {
	r.pending[h] = struct{}{}
	if r.disk != nil {
		r.disk.loose++
	}
}

func validSignature(s object.Signature) error {
	switch {
	case s.Name == "" || s.Email == "":
		return errors.New("name and email are required")
	case strings.ContainsAny(s.Name+s.Email, "<>\n\r\x00"):
		return fmt.Errorf("name %q or email %q contains '<', '>' or a control character", s.Name, s.Email)
	case s.When.IsZero():
		return errors.New("time is required")
	}
	return nil
}
