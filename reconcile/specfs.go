package reconcile

import (
	"errors"
	"io/fs"
	"path"
	"sort"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore"
)

// commitFS is a read-only fs.FS over the files of one commit, enough for
// hclspec.Load: ReadFile and ReadDir (for fs.Glob). It reads only the
// directories and files asked for, so loading the spec costs what the spec
// is, not what the repository holds.
type commitFS struct {
	repo   *gitstore.Repo
	commit plumbing.Hash
}

func newCommitFS(repo *gitstore.Repo, commit plumbing.Hash) (*commitFS, error) {
	if _, err := repo.Commit(commit); err != nil {
		return nil, err
	}
	return &commitFS{repo: repo, commit: commit}, nil
}

var (
	_ fs.ReadFileFS = (*commitFS)(nil)
	_ fs.ReadDirFS  = (*commitFS)(nil)
)

func (c *commitFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: errors.ErrUnsupported}
}

func (c *commitFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrInvalid}
	}
	b, err := c.repo.ReadFile(c.commit, name)
	if errors.Is(err, gitstore.ErrNotFound) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	return b, err
}

func (c *commitFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	entries, err := c.repo.ReadDir(c.commit, name)
	if errors.Is(err, gitstore.ErrNotFound) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, 0, len(entries))
	for _, e := range entries {
		if e.Mode == filemode.Submodule {
			continue
		}
		out = append(out, dirEntry{name: e.Name, dir: e.Mode == filemode.Dir})
	}
	// fs.ReadDir's contract: sorted by name (git sorts directories as if
	// their names ended in "/").
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

type dirEntry struct {
	name string
	dir  bool
}

func (d dirEntry) Name() string { return path.Base(d.name) }
func (d dirEntry) IsDir() bool  { return d.dir }
func (d dirEntry) Type() fs.FileMode {
	if d.dir {
		return fs.ModeDir
	}
	return 0
}
func (d dirEntry) Info() (fs.FileInfo, error) { return fileInfo(d), nil }

type fileInfo dirEntry

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return 0 }
func (f fileInfo) Mode() fs.FileMode  { return dirEntry(f).Type() }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }
