package eval

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// maxWorkspaceFile bounds a file copied into a workspace.
const maxWorkspaceFile = 8 << 20

// snapshot is a workspace's files: content and git mode by path.
type snapshot map[string]fileState

type fileState struct {
	content []byte
	mode    filemode.FileMode
}

// materialize writes the agent's view of fsys (its scope and the files its
// command runs, as the reconciler's workspaces hold) into dir, then the
// scenario's overlay, and returns what dir holds.
func materialize(fsys fs.FS, a *hclspec.Agent, overlays []Overlay, dir string) (snapshot, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (d.Name() == ".git" || p == "evals") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !inView(a, p) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > maxWorkspaceFile {
			return fmt.Errorf("%s is over %d bytes", p, maxWorkspaceFile)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		perm := os.FileMode(0o644)
		if info.Mode().Perm()&0o100 != 0 {
			perm = 0o755
		}
		return writeFile(dir, p, b, perm)
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	for _, o := range overlays {
		if o.Delete {
			if err := os.Remove(filepath.Join(dir, filepath.FromSlash(o.Path))); err != nil && !os.IsNotExist(err) {
				return nil, fmt.Errorf("workspace: %w", err)
			}
			continue
		}
		if err := writeFile(dir, o.Path, []byte(o.Content), 0o644); err != nil {
			return nil, fmt.Errorf("workspace: %w", err)
		}
	}
	return readSnapshot(dir)
}

func writeFile(dir, p string, b []byte, perm os.FileMode) error {
	full := filepath.Join(dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	return os.WriteFile(full, b, perm)
}

// readSnapshot reads every file under dir, except .git. Symbolic links
// are recorded with their target as content.
func readSnapshot(dir string) (snapshot, error) {
	snap := snapshot{}
	root := os.DirFS(dir)
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" && p != "." {
				return fs.SkipDir
			}
			return nil
		}
		full := filepath.Join(dir, filepath.FromSlash(p))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			snap[p] = fileState{content: []byte(target), mode: filemode.Symlink}
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			if info.Size() > maxWorkspaceFile {
				return fmt.Errorf("%s is over %d bytes", p, maxWorkspaceFile)
			}
			b, err := os.ReadFile(full)
			if err != nil {
				return err
			}
			mode := filemode.Regular
			if info.Mode().Perm()&0o100 != 0 {
				mode = filemode.Executable
			}
			snap[p] = fileState{content: b, mode: mode}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	return snap, nil
}

// changes lists what differs from before to after, sorted by path, as
// gitstore.Repo.ChangesView reports a workspace's changes.
func changes(before, after snapshot) []gitstore.FileChange {
	var out []gitstore.FileChange
	for p, a := range after {
		b, had := before[p]
		switch {
		case !had:
			added, removed, bin := gitstore.LineCounts(nil, a.content)
			out = append(out, gitstore.FileChange{Path: p, Status: gitstore.StatusAdded, Mode: a.mode, Content: a.content, Added: added, Removed: removed, Binary: bin})
		case !bytes.Equal(a.content, b.content) || a.mode != b.mode:
			added, removed, bin := gitstore.LineCounts(b.content, a.content)
			out = append(out, gitstore.FileChange{Path: p, Status: gitstore.StatusModified, Mode: a.mode, Content: a.content, Added: added, Removed: removed, Binary: bin})
		}
	}
	for p, b := range before {
		if _, ok := after[p]; !ok {
			_, removed, bin := gitstore.LineCounts(b.content, nil)
			out = append(out, gitstore.FileChange{Path: p, Status: gitstore.StatusDeleted, Removed: removed, Binary: bin})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// conditionChanges is a change as policy conditions see it, as the
// reconciler builds it.
func conditionChanges(cs []gitstore.FileChange) []hclspec.ChangeFile {
	out := make([]hclspec.ChangeFile, 0, len(cs))
	for _, c := range cs {
		f := hclspec.ChangeFile{Path: c.Path, Status: c.Status, Added: c.Added, Removed: c.Removed}
		if c.Status != gitstore.StatusDeleted {
			f.Bytes = int64(len(c.Content))
			f.Mode = modeString(c.Mode)
		}
		out = append(out, f)
	}
	return out
}

func modeString(m filemode.FileMode) string {
	switch m {
	case filemode.Executable:
		return hclspec.ModeExecutable
	case filemode.Symlink:
		return hclspec.ModeSymlink
	}
	return hclspec.ModeRegular
}
