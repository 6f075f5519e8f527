package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/agentgitops/reconciler/hclspec"
)

// ErrRefused is wrapped by the errors of file operations the agent may not
// do: paths outside the workspace or its scope, control files, .git,
// symbolic links and files over the size limit. The model sees them as
// tool errors and the run goes on.
var ErrRefused = errors.New("refused")

// defaultMaxFileBytes is the largest file the tools read or write.
const defaultMaxFileBytes = 1 << 20

// binarySniffLen is how much of a file is checked for a NUL byte.
const binarySniffLen = 8 << 10

// tempPrefix names the temporary files of atomic writes; list_files and
// search never show them.
const tempPrefix = ".reconciler-tmp-"

// workspace is an agent's view of its task directory. Every path is a
// slash path relative to the directory, opened through an os.Root so it
// cannot leave it, and must be in the agent's scope, not a control file,
// not under .git and not through a symbolic link.
type workspace struct {
	root     *os.Root
	scope    []string
	maxBytes int64
	// meter counts reads and writes against the run's limits; nil counts
	// nothing.
	meter *meter
}

// meter counts a run's work on files against its limits on work. The
// checks come before the work: a read or write that would pass a limit
// is not done, and fails the run with a *LimitError. A nil meter counts
// nothing.
type meter struct {
	maxFiles   int
	maxWritten int64
	maxRead    int64

	// sizes holds each file written or deleted, with its last size (0
	// when deleted); written is their sum.
	sizes   map[string]int64
	written int64
	read    int64
	// callRead is what the current tool call read.
	callRead int64
}

func newMeter(maxFiles int, maxWritten, maxRead int64) *meter {
	return &meter{maxFiles: maxFiles, maxWritten: maxWritten, maxRead: maxRead, sizes: map[string]int64{}}
}

// reading checks a read of n bytes of rel against max_bytes_read.
func (m *meter) reading(rel string, n int64) error {
	if m == nil || m.read+n <= m.maxRead {
		return nil
	}
	return limitErrorf("max_bytes_read", m.maxRead, "reading %s (%d bytes) would make %d bytes of file content read in this run", rel, n, m.read+n)
}

// addRead counts n bytes read.
func (m *meter) addRead(n int64) {
	if m != nil {
		m.read += n
		m.callRead += n
	}
}

// writing checks that rel may become n bytes (0: deleted) against
// max_files_written and max_bytes_written.
func (m *meter) writing(rel string, n int64) error {
	if m == nil {
		return nil
	}
	old, seen := m.sizes[rel]
	if !seen && len(m.sizes) >= m.maxFiles {
		return limitErrorf("max_files_written", int64(m.maxFiles), "changing %s would make %d files written, edited or deleted in this run", rel, len(m.sizes)+1)
	}
	if total := m.written - old + n; n > old && total > m.maxWritten {
		return limitErrorf("max_bytes_written", m.maxWritten, "writing %s (%d bytes) would make the files written in this run %d bytes in total", rel, n, total)
	}
	return nil
}

// wrote counts rel as n bytes (0: deleted).
func (m *meter) wrote(rel string, n int64) {
	if m != nil {
		m.written += n - m.sizes[rel]
		m.sizes[rel] = n
	}
}

// openWorkspace opens dir for an agent with the given scope globs.
func openWorkspace(dir string, scope []string, maxBytes int64) (*workspace, error) {
	if dir == "" {
		return nil, errors.New("open workspace: no directory")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open workspace: %w", err)
	}
	if maxBytes <= 0 {
		maxBytes = defaultMaxFileBytes
	}
	return &workspace{root: root, scope: scope, maxBytes: maxBytes}, nil
}

func (w *workspace) Close() error { return w.root.Close() }

func refusef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// cleanPath checks a path the model gave and returns it clean: relative,
// slash-separated, without "." or ".." elements. The workspace root is ".".
func cleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "", refusef("a path is required")
	case strings.ContainsRune(p, 0):
		return "", refusef("path %q contains a NUL byte", p)
	case strings.Contains(p, `\`):
		return "", refusef("path %q contains a backslash: use forward slashes", p)
	case path.IsAbs(p) || filepath.IsAbs(p) || filepath.VolumeName(p) != "":
		return "", refusef("path %q is absolute: use a path relative to the repository root", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", refusef("path %q leaves the workspace: \"..\" is not allowed", p)
		}
	}
	return path.Clean(p), nil
}

// isGitPath reports whether a clean path is .git or inside one, at any
// depth and in any case (case-insensitive file systems).
func isGitPath(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if strings.EqualFold(el, ".git") {
			return true
		}
	}
	return false
}

// allowed checks a clean file path against .git, the control files and
// the agent's scope.
func (w *workspace) allowed(p string) error {
	switch {
	case isGitPath(p):
		return refusef("%q is inside .git, which agents may not read or change", p)
	case hclspec.IsControlPath(p) || hclspec.IsControlPath(strings.ToLower(p)):
		return refusef("%q is a control file (%s): agents may not read or change what defines their own permissions", p, strings.Join(hclspec.ControlPaths, ", "))
	case !hclspec.MatchAny(w.scope, p):
		return refusef("%q is outside the agent's scope (%s)", p, strings.Join(w.scope, ", "))
	}
	return nil
}

// noLinks refuses a path any existing element of which is a symbolic
// link. os.Root already stops links that leave the workspace; links
// inside it would bypass the scope and control checks.
func (w *workspace) noLinks(p string) error {
	if p == "." {
		return nil
	}
	els := strings.Split(p, "/")
	for i := range els {
		sub := strings.Join(els[:i+1], "/")
		fi, err := w.root.Lstat(sub)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return w.pathError(sub, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return refusef("%q is a symbolic link; links are not followed", sub)
		}
	}
	return nil
}

// pathError turns an os error into one the model can act on, without the
// workspace's absolute location.
func (w *workspace) pathError(p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%q does not exist (list_files shows the files in scope)", p)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%q: permission denied", p)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// os.Root reports links and ".." that leave it this way.
		return refusef("%q: %v", p, pe.Err)
	}
	return fmt.Errorf("%q: %v", p, err)
}

// file resolves a path the model gave to a file it may use.
func (w *workspace) file(p string) (string, error) {
	rel, err := cleanPath(p)
	if err != nil {
		return "", err
	}
	if rel == "." {
		return "", fmt.Errorf("%q is the repository root, not a file", p)
	}
	if err := w.allowed(rel); err != nil {
		return "", err
	}
	if err := w.noLinks(rel); err != nil {
		return "", err
	}
	return rel, nil
}

// stat returns the file info of an existing regular file.
func (w *workspace) stat(rel string) (fs.FileInfo, error) {
	fi, err := w.root.Lstat(rel)
	if err != nil {
		return nil, w.pathError(rel, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%q is a directory (list_files shows what is in it)", rel)
	}
	if !fi.Mode().IsRegular() {
		return nil, refusef("%q is not a regular file", rel)
	}
	return fi, nil
}

// read returns the content of a file in scope. Files over the size limit
// are refused.
func (w *workspace) read(p string) (string, []byte, error) {
	rel, err := w.file(p)
	if err != nil {
		return rel, nil, err
	}
	fi, err := w.stat(rel)
	if err != nil {
		return rel, nil, err
	}
	if fi.Size() > w.maxBytes {
		return rel, nil, refusef("%q is %d bytes, over the %d-byte limit", rel, fi.Size(), w.maxBytes)
	}
	if err := w.meter.reading(rel, fi.Size()); err != nil {
		return rel, nil, err
	}
	f, err := w.root.Open(rel)
	if err != nil {
		return rel, nil, w.pathError(rel, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, w.maxBytes+1))
	w.meter.addRead(int64(len(data)))
	if err != nil {
		return rel, nil, w.pathError(rel, err)
	}
	if int64(len(data)) > w.maxBytes {
		return rel, nil, refusef("%q is over the %d-byte limit", rel, w.maxBytes)
	}
	return rel, data, nil
}

// write replaces or creates a file in scope atomically (temporary file,
// fsync, rename), creating its directories. An existing file keeps its
// permissions.
func (w *workspace) write(p string, data []byte) (string, error) {
	rel, err := w.file(p)
	if err != nil {
		return rel, err
	}
	if int64(len(data)) > w.maxBytes {
		return rel, refusef("the content is %d bytes, over the %d-byte limit", len(data), w.maxBytes)
	}
	if err := w.meter.writing(rel, int64(len(data))); err != nil {
		return rel, err
	}
	perm := fs.FileMode(0o644)
	_, err = w.root.Lstat(rel)
	switch {
	case err == nil:
		fi, err := w.stat(rel)
		if err != nil {
			return rel, err
		}
		perm = fi.Mode().Perm()
	case !errors.Is(err, fs.ErrNotExist):
		return rel, w.pathError(rel, err)
	}
	dir := path.Dir(rel)
	if dir != "." {
		if err := w.root.MkdirAll(dir, 0o755); err != nil {
			return rel, w.pathError(dir, err)
		}
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := path.Join(dir, tempPrefix+hex.EncodeToString(suffix[:]))
	f, err := w.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return rel, w.pathError(rel, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.root.Rename(tmp, rel)
	}
	if err != nil {
		w.root.Remove(tmp)
		return rel, w.pathError(rel, err)
	}
	w.meter.wrote(rel, int64(len(data)))
	return rel, nil
}

// remove deletes a file in scope.
func (w *workspace) remove(p string) (string, error) {
	rel, err := w.file(p)
	if err != nil {
		return rel, err
	}
	if _, err := w.stat(rel); err != nil {
		return rel, err
	}
	if err := w.meter.writing(rel, 0); err != nil {
		return rel, err
	}
	if err := w.root.Remove(rel); err != nil {
		return rel, w.pathError(rel, err)
	}
	w.meter.wrote(rel, 0)
	return rel, nil
}

// fileEntry is a file list_files and search see.
type fileEntry struct {
	Path string
	Size int64
}

// files returns the files in scope under a directory (or the one file a
// path names) in lexical order. It skips .git, symbolic links, control
// files, files outside the scope and temporary files of writes.
func (w *workspace) files(ctx context.Context, p string) (string, []fileEntry, error) {
	if p == "" {
		p = "."
	}
	rel, err := cleanPath(p)
	if err != nil {
		return rel, nil, err
	}
	if isGitPath(rel) {
		return rel, nil, refusef("%q is inside .git, which agents may not read or change", rel)
	}
	if err := w.noLinks(rel); err != nil {
		return rel, nil, err
	}
	fi, err := w.root.Lstat(rel)
	if err != nil {
		return rel, nil, w.pathError(rel, err)
	}
	if !fi.IsDir() {
		if err := w.allowed(rel); err != nil {
			return rel, nil, err
		}
		if !fi.Mode().IsRegular() {
			return rel, nil, refusef("%q is not a regular file", rel)
		}
		return rel, []fileEntry{{Path: rel, Size: fi.Size()}}, nil
	}
	var out []fileEntry
	n := 0
	err = fs.WalkDir(w.root.FS(), rel, func(name string, d fs.DirEntry, err error) error {
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err != nil {
			if name == rel {
				return err
			}
			return nil // an unreadable directory shows nothing
		}
		if d.IsDir() {
			if strings.EqualFold(d.Name(), ".git") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) || w.allowed(name) != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		out = append(out, fileEntry{Path: name, Size: info.Size()})
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return rel, nil, ctx.Err()
		}
		return rel, nil, w.pathError(rel, err)
	}
	return rel, out, nil
}

// isBinary reports whether data looks binary: a NUL byte in its first
// 8 KiB, as git decides.
func isBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), binarySniffLen)], 0) >= 0
}
