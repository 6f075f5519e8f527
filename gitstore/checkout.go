package gitstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"
)

// Status values of a FileChange.
const (
	StatusAdded    = "added"
	StatusModified = "modified"
	StatusDeleted  = "deleted"
)

// FileChange is one changed path between a commit's tree and a directory, as
// returned by Changes and accepted by WriteTree.
type FileChange struct {
	Path    string            // slash-separated, relative to the repository root
	Status  string            // StatusAdded, StatusModified or StatusDeleted
	Mode    filemode.FileMode // new mode (filemode.Regular, Executable, Symlink); zero for deleted
	Content []byte            // new content (link target for symlinks); nil for deleted
	Added   int               // lines added (text files; 0 for binary)
	Removed int               // lines removed (text files; 0 for binary)
	Binary  bool              // old or new content is binary (a NUL byte in its first 8000 bytes)
}

// Checkout writes the tree of commit into dir, which must be empty or absent
// (it is then created, with its parents). Regular files get mode 0644, or 0755
// when executable; symbolic links are created as links and never followed;
// submodule entries are skipped; no .git directory is written.
//
// Every tree entry name is validated first: a tree with an entry that could
// escape dir or write repository metadata ("..", names containing a separator,
// ".git" in any spelling, see validName) is refused, as are entries that clash
// with one already written (duplicate names in a crafted tree). Files are
// created exclusively through an os.Root, so nothing is ever written outside
// dir. On error dir may hold a partial checkout: remove it.
//
// The error wraps ErrNotFound when the commit is missing, and ctx.Err() when
// ctx ends.
func (r *Repo) Checkout(ctx context.Context, commit plumbing.Hash, dir string) error {
	return r.CheckoutView(ctx, commit, dir, nil)
}

// CheckoutView is Checkout of the files of view only (nil: the whole tree):
// subtrees the view cannot hold are neither read nor written.
func (r *Repo) CheckoutView(ctx context.Context, commit plumbing.Hash, dir string, view *View) error {
	r.rlock()
	defer r.runlock()
	t, err := r.commitTree(commit)
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	// The entries of the view, validated before touching the file system.
	var entries []viewEntry
	err = r.walkTree(t, func(p string, e object.TreeEntry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Mode == filemode.Dir {
			if !view.mayContain(p) {
				return fs.SkipDir
			}
		} else if !view.includes(p) {
			return nil
		}
		entries = append(entries, viewEntry{p, e})
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	if err := emptyDir(dir); err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	defer root.Close()
	for _, ve := range entries {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("checkout %s into %q: %w", commit, dir, err)
		}
		if err := r.writeEntry(root, ve.path, ve.entry); err != nil {
			return fmt.Errorf("checkout %s into %q: %w", commit, dir, err)
		}
	}
	return nil
}

type viewEntry struct {
	path  string
	entry object.TreeEntry
}

// emptyDir creates dir if absent and fails if it exists and is not an empty
// directory.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("target directory %q: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("target directory %q is not empty: give an empty or absent directory", dir)
	}
	return nil
}

// writeEntry materializes one tree entry below root, never replacing or
// following an existing file.
func (r *Repo) writeEntry(root *os.Root, p string, e object.TreeEntry) error {
	switch {
	case e.Mode == filemode.Dir:
		if err := root.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("create directory %q: %w", p, err)
		}
		return nil
	case e.Mode == filemode.Submodule:
		return nil
	case e.Mode == filemode.Symlink:
		target, err := r.readBlob(e.Hash)
		if err != nil {
			return fmt.Errorf("symlink %q: %w", p, err)
		}
		if len(target) == 0 || bytes.IndexByte(target, 0) >= 0 {
			return fmt.Errorf("symlink %q: invalid target %q", p, target)
		}
		if err := root.Symlink(string(target), p); err != nil {
			return fmt.Errorf("create symlink %q: %w", p, err)
		}
		return nil
	case isRegular(e.Mode):
		perm := os.FileMode(0o644)
		if e.Mode == filemode.Executable {
			perm = 0o755
		}
		return r.writeFile(root, p, e.Hash, perm)
	}
	return fmt.Errorf("entry %q: unsupported mode %s", p, e.Mode)
}

func (r *Repo) writeFile(root *os.Root, p string, h plumbing.Hash, perm os.FileMode) (err error) {
	blob, err := object.GetBlob(r.repo.Storer, h)
	if err != nil {
		return fmt.Errorf("write %q: read blob %s: %w", p, h, classify(err))
	}
	src, err := blob.Reader()
	if err != nil {
		return fmt.Errorf("write %q: read blob %s: %w", p, h, err)
	}
	defer src.Close()
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create %q: %w", p, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write %q: %w", p, cerr)
		}
	}()
	if _, err := io.Copy(f, src); err != nil {
		return fmt.Errorf("write %q: %w", p, err)
	}
	// The umask may have removed bits; git's modes are exact.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %q: %w", p, err)
	}
	return nil
}

// treeFile is a file (blob or link) recorded in a tree.
type treeFile struct {
	mode filemode.FileMode // Regular, Executable or Symlink
	hash plumbing.Hash
}

// diffTimeout bounds the time spent computing the line counts of one file;
// past it, counts are still correct for a valid (if not minimal) diff.
const diffTimeout = 5 * time.Second

// Changes compares dir, a former Checkout of commit possibly modified since,
// with the commit's tree and returns what changed, sorted by path. Files count
// as modified when their content, executable bit or type (file or link)
// differ. Symbolic links are compared by target and never followed. Entries
// named ".git" (in any spelling, at any depth) are ignored, as are empty
// directories, special files (sockets, pipes, devices) and the tree's
// submodule entries.
//
// The error wraps ErrNotFound when the commit or dir is missing, and
// ctx.Err() when ctx ends. A file name that cannot be stored in git (one
// containing a backslash or a control character) is an error.
func (r *Repo) Changes(ctx context.Context, commit plumbing.Hash, dir string) ([]FileChange, error) {
	return r.ChangesView(ctx, commit, dir, nil)
}

// ChangesView is Changes against the files of view only (nil: the whole
// tree), for a work tree made by CheckoutView with the same view: files
// the view leaves out are not seen as deleted.
func (r *Repo) ChangesView(ctx context.Context, commit plumbing.Hash, dir string, view *View) ([]FileChange, error) {
	r.rlock()
	defer r.runlock()
	t, err := r.commitTree(commit)
	if err != nil {
		return nil, fmt.Errorf("changes: %w", err)
	}
	old := make(map[string]treeFile)
	err = r.walkTree(t, func(p string, e object.TreeEntry) error {
		if e.Mode == filemode.Dir && !view.mayContain(p) {
			return fs.SkipDir
		}
		if e.Mode != filemode.Dir && !view.includes(p) {
			return nil
		}
		switch {
		case isRegular(e.Mode):
			mode := filemode.Regular
			if e.Mode == filemode.Executable {
				mode = filemode.Executable
			}
			old[p] = treeFile{mode: mode, hash: e.Hash}
		case e.Mode == filemode.Symlink:
			old[p] = treeFile{mode: e.Mode, hash: e.Hash}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("changes against %s: %w", commit, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("changes against %s: %w", commit, classify(err))
	}
	defer root.Close()

	var out []FileChange
	seen := make(map[string]bool)
	err = walkDir(ctx, root, ".", func(p string, mode filemode.FileMode, content []byte) error {
		seen[p] = true
		prev, existed := old[p]
		if existed && prev.mode == mode && prev.hash == plumbing.ComputeHash(plumbing.BlobObject, content) {
			return nil
		}
		c := FileChange{Path: p, Status: StatusAdded, Mode: mode, Content: content}
		var before []byte
		if existed {
			c.Status = StatusModified
			b, err := r.readBlob(prev.hash)
			if err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
			before = b
		}
		c.Added, c.Removed, c.Binary = lineCounts(before, content)
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("changes in %q against %s: %w", dir, commit, err)
	}
	for p, prev := range old {
		if seen[p] {
			continue
		}
		before, err := r.readBlob(prev.hash)
		if err != nil {
			return nil, fmt.Errorf("changes against %s: %q: %w", commit, p, err)
		}
		c := FileChange{Path: p, Status: StatusDeleted}
		c.Added, c.Removed, c.Binary = lineCounts(before, nil)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// walkDir calls fn for every regular file and symbolic link below dir in root,
// with its slash-separated path relative to root, its git mode and its content
// (the target for links). It never follows links.
func walkDir(ctx context.Context, root *os.Root, dir string, fn func(string, filemode.FileMode, []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read directory %q: %w", dir, err)
	}
	for _, e := range entries {
		if isDotGit(e.Name()) {
			continue
		}
		p := path.Join(dir, e.Name()) // path.Join drops the leading "./"
		if err := validName(e.Name()); err != nil {
			return fmt.Errorf("file %q cannot be stored in git: %w", p, err)
		}
		switch e.Type() {
		case fs.ModeDir:
			if err := walkDir(ctx, root, p, fn); err != nil {
				return err
			}
		case fs.ModeSymlink:
			target, err := root.Readlink(p)
			if err != nil {
				return fmt.Errorf("read symlink: %w", err)
			}
			if err := fn(p, filemode.Symlink, []byte(target)); err != nil {
				return err
			}
		case 0: // regular file
			content, mode, err := readRegular(root, p)
			if err != nil {
				return err
			}
			if err := fn(p, mode, content); err != nil {
				return err
			}
		}
	}
	return nil
}

// readRegular reads a regular file and returns its content and git mode.
func readRegular(root *os.Root, p string) ([]byte, filemode.FileMode, error) {
	f, err := root.Open(p)
	if err != nil {
		return nil, 0, fmt.Errorf("read file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("read file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("read file %q: replaced while reading", p)
	}
	content, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, fmt.Errorf("read file: %w", err)
	}
	mode := filemode.Regular
	if fi.Mode().Perm()&0o100 != 0 { // git looks at the owner's execute bit
		mode = filemode.Executable
	}
	return content, mode, nil
}

// lineCounts returns the lines added and removed from before to after, as
// git diff --numstat counts them, or binary when either side is binary.
// LineCounts counts the lines added and removed from before to after as
// git diff --numstat does (binary content counts none, and binary is
// true), for callers that build FileChanges of their own.
func LineCounts(before, after []byte) (added, removed int, binary bool) {
	return lineCounts(before, after)
}

func lineCounts(before, after []byte) (added, removed int, binary bool) {
	if isBinary(before) || isBinary(after) {
		return 0, 0, true
	}
	if len(before) == 0 {
		return countLines(string(after)), 0, false
	}
	if len(after) == 0 {
		return 0, countLines(string(before)), false
	}
	for _, d := range diff.DoWithTimeout(string(before), string(after), diffTimeout) {
		switch d.Type {
		case diffmatchpatch.DiffInsert:
			added += countLines(d.Text)
		case diffmatchpatch.DiffDelete:
			removed += countLines(d.Text)
		}
	}
	return added, removed, false
}

// countLines counts lines, the last one possibly without a newline.
func countLines(s string) int {
	n := strings.Count(s, "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		n++
	}
	return n
}

// isBinary applies git's heuristic: a NUL byte in the first 8000 bytes.
func isBinary(b []byte) bool {
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}
