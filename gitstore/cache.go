package gitstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

const (
	// defaultLockTimeout is Options.LockTimeout's zero value.
	defaultLockTimeout = 10 * time.Second
	// stateDirName is the directory of a mirror returned by StateDir.
	stateDirName = "reconciler-state"
	// maxOpenPacks bounds the pack file descriptors go-git keeps open.
	maxOpenPacks = 32
	// objectCacheSize bounds go-git's cache of decoded objects (delta
	// bases, mostly): long scans read each object once, so a small cache
	// keeps memory flat without costing reads.
	objectCacheSize = 32 * cache.MiByte
	// lockPoll is how often Open retries a lock held by someone else.
	lockPoll = 50 * time.Millisecond
)

// DefaultCacheDir returns the directory to use as Options.CacheDir when the
// user gives none: "agentgitops-reconciler" in the user's cache directory
// (os.UserCacheDir, e.g. ~/.cache on Linux). It fails when there is no such
// directory ($HOME and $XDG_CACHE_HOME unset).
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("default cache directory: %w: pass a cache directory explicitly", err)
	}
	return filepath.Join(dir, "agentgitops-reconciler"), nil
}

// diskCache is the on-disk side of a Repo opened with Options.CacheDir.
type diskCache struct {
	mirror string // the bare repository
	state  string // StateDir
	lock   *os.File
	st     *mirrorStorage
	loose  int // loose objects, counted at Open and by stored
	closed bool
}

// cacheKey names the mirror of normalized (a NormalizeURL result) in a cache
// directory: a readable prefix of its host and path, and the first 16 hex
// digits of the sha256 of the URL without credentials, so that different
// credentials share a mirror and different repositories never do.
func cacheKey(normalized string) string {
	plain := stripCredentials(normalized)
	sum := sha256.Sum256([]byte(plain))
	readable := plain
	if i := strings.Index(readable, "://"); i >= 0 {
		readable = readable[i+3:]
	}
	var b strings.Builder
	dash := false
	for _, c := range readable {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_'
		switch {
		case ok:
			b.WriteRune(c)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	prefix := strings.Trim(b.String(), "-.")
	if len(prefix) > 64 {
		prefix = strings.Trim(prefix[len(prefix)-64:], "-.")
	}
	if prefix == "" {
		prefix = "repo"
	}
	return prefix + "-" + hex.EncodeToString(sum[:8])
}

// stripCredentials returns rawURL without its userinfo; other strings (local
// paths, scp-like addresses) unchanged.
func stripCredentials(rawURL string) string {
	if !strings.Contains(rawURL, "://") {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	u.User = nil
	return u.String()
}

// openDisk opens (creating it on first use) the on-disk mirror of r's URL
// under opts.CacheDir and takes its lock; it does not fetch.
func (r *Repo) openDisk(ctx context.Context, opts Options) (err error) {
	dir, err := filepath.Abs(opts.CacheDir)
	if err != nil {
		return &cacheError{kind: ErrCacheUnusable, err: err,
			msg: fmt.Sprintf("cache directory %q: %v: pass another cache directory", opts.CacheDir, err)}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return notWritable(dir, err)
	}
	d := &diskCache{mirror: filepath.Join(dir, cacheKey(r.rawURL))}
	d.state = filepath.Join(d.mirror, stateDirName)
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	if d.lock, err = lockCache(ctx, d.mirror, timeout); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = d.corrupt(fmt.Errorf("go-git panicked: %v", p))
		}
		if err != nil {
			d.close()
		}
	}()
	if _, err := os.Stat(d.mirror); errors.Is(err, fs.ErrNotExist) {
		if err := initMirror(d.mirror, stripCredentials(r.rawURL)); err != nil {
			return err
		}
	} else if err != nil {
		return d.corrupt(err)
	}
	if err := checkPacks(filepath.Join(d.mirror, "objects", "pack")); err != nil {
		return d.corrupt(err)
	}
	st := filesystem.NewStorageWithOptions(osfs.New(d.mirror), cache.NewObjectLRU(objectCacheSize),
		filesystem.Options{MaxOpenDescriptors: maxOpenPacks})
	// Packed objects are read through packIndex and fetched packs are
	// indexed by a packIndexer (mirrorstore.go, indexpack.go).
	if d.st, err = newMirrorStorage(d.mirror, st); err != nil {
		st.Close()
		return d.corrupt(fmt.Errorf("read pack indexes: %w", err))
	}
	repo, err := git.Open(d.st, nil)
	if err != nil {
		return d.corrupt(fmt.Errorf("open repository: %w", err))
	}
	// The packs were checked and opened above.
	if err := d.check(repo, false); err != nil {
		return err
	}
	if err := os.MkdirAll(d.state, 0o755); err != nil {
		return notWritable(d.state, err)
	}
	if d.loose, err = d.countLoose(); err != nil {
		return d.corrupt(fmt.Errorf("count loose objects: %w", err))
	}
	r.repo, r.disk = repo, d
	return nil
}

// initMirror creates an empty bare repository with the remote configured at
// mirror, atomically: in a scratch directory renamed into place. The cache
// lock must be held.
func initMirror(mirror, remoteURL string) error {
	tmp := mirror + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return notWritable(tmp, err)
	}
	st := filesystem.NewStorage(osfs.New(tmp), cache.NewObjectLRUDefault())
	repo, err := git.Init(st, nil)
	if err == nil {
		_, err = repo.CreateRemote(&config.RemoteConfig{
			Name:  remoteName,
			URLs:  []string{remoteURL},
			Fetch: []config.RefSpec{mirrorSpec},
		})
	}
	if err == nil {
		err = os.Rename(tmp, mirror)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return notWritable(filepath.Dir(mirror), err)
	}
	return nil
}

func notWritable(path string, err error) error {
	return &cacheError{kind: ErrCacheUnusable, err: err,
		msg: fmt.Sprintf("cache directory %q is not a writable directory: %v: fix its permissions or pass another cache directory (--cache-dir)", path, err)}
}

// corrupt wraps err as an ErrCacheUnusable naming the mirror.
func (d *diskCache) corrupt(err error) error {
	return &cacheError{kind: ErrCacheUnusable, err: err,
		msg: fmt.Sprintf("mirror %q is corrupt: %v: delete it (it is only a cache) and retry", d.mirror, err)}
}

// lockCache takes an exclusive flock on mirror+".lock", retrying until
// timeout, and writes the process id into it.
func lockCache(ctx context.Context, mirror string, timeout time.Duration) (*os.File, error) {
	path := mirror + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, notWritable(filepath.Dir(path), err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, &cacheError{kind: ErrCacheUnusable, err: err,
				msg: fmt.Sprintf("lock mirror %q: %v: pass another cache directory (--cache-dir)", mirror, err)}
		}
		if time.Now().After(deadline) {
			holder := ""
			if b, rerr := io.ReadAll(io.LimitReader(f, 32)); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = fmt.Sprintf(" (pid %d)", pid)
				}
			}
			f.Close()
			return nil, &cacheError{kind: ErrCacheLocked, err: err,
				msg: fmt.Sprintf("mirror %q is locked by another process%s after waiting %s: wait for it to finish, or pass another cache directory (--cache-dir)", mirror, holder, timeout)}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock mirror %q: %w", mirror, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) // informational only
	}
	return f, nil
}

// validate checks, cheaply (no object is hashed), that the mirror can be
// used: configuration, HEAD, every pack against its index (header, size and
// trailing checksum), and the commit and root tree of every branch. It
// returns an error wrapping ErrCacheUnusable.
func (d *diskCache) validate(repo *git.Repository) error {
	return d.check(repo, true)
}

// check is validate; packs says whether to check and reopen the packs too
// (openDisk has just done both).
func (d *diskCache) check(repo *git.Repository, packs bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = d.corrupt(fmt.Errorf("go-git panicked: %v", p))
		}
	}()
	cfg, err := d.st.Config()
	if err != nil {
		return d.corrupt(fmt.Errorf("read config: %w", err))
	}
	if _, ok := cfg.Remotes[remoteName]; !ok {
		return d.corrupt(fmt.Errorf("config has no remote %q", remoteName))
	}
	head, err := d.st.Reference(plumbing.HEAD)
	if err != nil {
		return d.corrupt(fmt.Errorf("read HEAD: %w", err))
	}
	if head.Type() != plumbing.SymbolicReference {
		return d.corrupt(fmt.Errorf("HEAD is %q, not a symbolic reference", head.Hash()))
	}
	if packs {
		if err := checkPacks(filepath.Join(d.mirror, "objects", "pack")); err != nil {
			return d.corrupt(err)
		}
		// Reopening the packs checks every index again (its shape and the
		// pack it names), as cheaply: nothing is read per object.
		if err := d.st.refresh(); err != nil {
			return d.corrupt(fmt.Errorf("read pack indexes: %w", err))
		}
	}
	iter, err := d.st.IterReferences()
	if err != nil {
		return d.corrupt(fmt.Errorf("list references: %w", err))
	}
	defer iter.Close()
	return iter.ForEach(func(ref *plumbing.Reference) error {
		if !ref.Name().IsBranch() {
			return nil
		}
		if ref.Type() != plumbing.HashReference {
			return d.corrupt(fmt.Errorf("branch %s is a symbolic reference", ref.Name()))
		}
		c, err := object.GetCommit(d.st, ref.Hash())
		if err != nil {
			return d.corrupt(fmt.Errorf("branch %s: commit %s: %w", ref.Name(), ref.Hash(), err))
		}
		if err := d.st.HasEncodedObject(c.TreeHash); err != nil {
			return d.corrupt(fmt.Errorf("branch %s: tree %s: %w", ref.Name(), c.TreeHash, err))
		}
		return nil
	})
}

// checkPacks checks each pack-*.pack in dir against its index: a "PACK"
// header, and the checksum the index records equal to the pack's trailer
// (which catches truncation and most overwrites without hashing the pack).
func checkPacks(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pack")
		if !ok || !strings.HasPrefix(name, "pack-") {
			continue
		}
		if err := checkPack(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func checkPack(base string) error {
	idx, err := readEnds(base+".idx", 0, 40)
	if err != nil {
		return fmt.Errorf("pack %s: index: %w", filepath.Base(base), err)
	}
	pack, err := readEnds(base+".pack", 12, 20)
	if err != nil {
		return fmt.Errorf("pack %s: %w", filepath.Base(base), err)
	}
	if !bytes.HasPrefix(pack, []byte("PACK")) {
		return fmt.Errorf("pack %s: bad header", filepath.Base(base))
	}
	if !bytes.Equal(pack[12:], idx[:20]) {
		return fmt.Errorf("pack %s: truncated or overwritten (its checksum does not match its index)", filepath.Base(base))
	}
	return nil
}

// readEnds returns the first head and the last tail bytes of the file at
// path, failing when it is shorter than head+tail.
func readEnds(path string, head, tail int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < int64(head+tail) {
		return nil, fmt.Errorf("%s: too short (%d bytes)", filepath.Base(path), fi.Size())
	}
	b := make([]byte, head+tail)
	if _, err := f.ReadAt(b[:head], 0); err != nil {
		return nil, err
	}
	if _, err := f.ReadAt(b[head:], fi.Size()-int64(tail)); err != nil {
		return nil, err
	}
	return b, nil
}

// close releases the storage and the lock; safe to call twice.
func (d *diskCache) close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var err error
	if d.st != nil {
		err = d.st.Close()
	}
	if d.lock != nil {
		syscall.Flock(int(d.lock.Fd()), syscall.LOCK_UN)
		if cerr := d.lock.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("close mirror %q: %w", d.mirror, err)
	}
	return nil
}

// Close releases an on-disk mirror: its open files and its lock, so that
// another Open (in this process or another) can take it. It is safe to call
// twice, and a no-op for an in-memory Repo. The Repo must not be used after.
func (r *Repo) Close() error {
	if r.disk == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.disk.close()
}

// StateDir returns a directory private to this on-disk mirror, created by
// Open, where callers keep state derived from the repository (for example
// what they have already read). It is guarded by the mirror's lock like the
// mirror itself. It is "" for an in-memory Repo.
func (r *Repo) StateDir() string {
	if r.disk == nil {
		return ""
	}
	return r.disk.state
}

// usable fails once the Repo is closed; r.mu must be held.
func (r *Repo) usable() error {
	if r.disk != nil && r.disk.closed {
		return fmt.Errorf("repository mirror %q is closed", r.disk.mirror)
	}
	return nil
}
