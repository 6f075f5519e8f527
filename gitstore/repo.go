package gitstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

const (
	remoteName  = "origin"
	branchSpace = "refs/heads/"
	// mirrorSpec maps every remote branch onto the local branch of the same
	// name. It has no '+': go-git's prune reverses refspecs textually, and
	// forced updates come from FetchOptions.Force instead.
	mirrorSpec = config.RefSpec("refs/heads/*:refs/heads/*")
	// approveSpec mirrors the approval tags, approve/<run-id>/<member>:
	// the only tags the reconciler reads.
	approveSpec = config.RefSpec("refs/tags/approve/*:refs/tags/approve/*")
	tagSpace    = "refs/tags/"
)

// Options configures how a Repo talks to its remote.
type Options struct {
	// Auth authenticates to the remote; nil means anonymous access (or the
	// credentials embedded in an http(s) URL).
	Auth transport.AuthMethod

	// CacheDir, when not empty, keeps the mirror on disk as a bare
	// repository in a directory of CacheDir named after the URL (without its
	// credentials), reused by later Opens in this and other processes, so
	// that fetches are incremental. The mirror is locked from Open to Close.
	// "" keeps the mirror in memory. See DefaultCacheDir.
	CacheDir string

	// LockTimeout is how long Open waits for another holder of the on-disk
	// mirror's lock before failing with ErrCacheLocked; zero means 10s.
	LockTimeout time.Duration

	// NoFetch makes Open skip its fetch: the Repo starts as the on-disk
	// mirror was left (empty, in memory) and the caller's first Fetch
	// brings it up to date. A caller that fetches first thing anyway saves
	// a round trip, and can start while the remote is unreachable.
	NoFetch bool
}

// Repo is a mirror of a remote repository's branches (refs/heads/* only; tags
// are not fetched), in memory or on disk (Options.CacheDir), kept up to date
// with Fetch and written to with Push. Local branch refs always mirror the
// remote as of the last Fetch or successful Push.
//
// A Repo is safe for concurrent use by multiple goroutines, except through the
// *git.Repository returned by Git, which must not be used while any other
// method runs. Readers (Branch, Commit, ReadFile, RawObject, TreeEntry, ...)
// of an in-memory Repo run in parallel; those of an on-disk Repo are
// serialized, as go-git's filesystem storage is not safe for concurrent
// reads. A Repo must not be used after Close.
type Repo struct {
	// mu guards repo's storage: go-git's memory storage is a set of plain maps,
	// its filesystem storage caches without locks. Writers (Fetch, Push,
	// WriteTree, CreateCommit) take it exclusively; readers share it for
	// memory storage only (see rlock).
	mu      sync.RWMutex
	repo    *git.Repository
	rawURL  string // normalized, with credentials: only for go-git
	safeURL string // redacted, for errors and logs
	auth    transport.AuthMethod

	// pending holds the objects WriteTree and CreateCommit stored that no
	// successful Push has delivered yet; Push sends those reachable from its
	// New commits. Guarded by mu.
	pending map[plumbing.Hash]struct{}

	disk *diskCache // nil for an in-memory Repo

	trees treeCache
}

// rlock takes r.mu for reading: shared for memory storage, exclusive for
// filesystem storage.
func (r *Repo) rlock() {
	if r.disk != nil {
		r.mu.Lock()
		return
	}
	r.mu.RLock()
}

func (r *Repo) runlock() {
	if r.disk != nil {
		r.mu.Unlock()
		return
	}
	r.mu.RUnlock()
}

// Open clones every branch of the remote at url (see NormalizeURL for the
// accepted forms) into memory, without a worktree, or, when opts.CacheDir is
// set, brings the on-disk mirror of url in CacheDir up to date (creating it
// on first use) and holds its lock until Close. An empty remote gives a Repo
// with no branches, not an error.
//
// Errors name the redacted URL. A path or repository that does not exist
// gives an error wrapping ErrNotFound; authentication failures wrap go-git's
// transport.ErrAuthenticationRequired or transport.ErrAuthorizationFailed.
// A mirror locked by another process past opts.LockTimeout gives an error
// wrapping ErrCacheLocked; a cache directory that is not writable, or a
// corrupt mirror, one wrapping ErrCacheUnusable that names the path.
func Open(ctx context.Context, url string, opts Options) (r *Repo, err error) {
	normalized, err := NormalizeURL(url)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	r = &Repo{
		rawURL:  normalized,
		safeURL: Redact(normalized),
		auth:    opts.Auth,
		pending: make(map[plumbing.Hash]struct{}),
	}
	if opts.CacheDir != "" {
		if err := r.openDisk(ctx, opts); err != nil {
			return nil, fmt.Errorf("open %s: %w", r.safeURL, err)
		}
		if opts.NoFetch {
			return r, nil
		}
		if err := r.fetch(ctx); err != nil {
			r.Close()
			return nil, fmt.Errorf("open %s: %w", r.safeURL, err)
		}
		return r, nil
	}
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, fmt.Errorf("open %s: init in-memory repository: %w", r.safeURL, err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{
		Name:  remoteName,
		URLs:  []string{normalized},
		Fetch: []config.RefSpec{mirrorSpec},
	}); err != nil {
		return nil, fmt.Errorf("open %s: configure remote: %w", r.safeURL, redactError(err, normalized))
	}
	r.repo = repo
	if opts.NoFetch {
		return r, nil
	}
	if err := r.fetch(ctx); err != nil {
		return nil, fmt.Errorf("open %s: %w", r.safeURL, err)
	}
	return r, nil
}

// Git returns the underlying go-git repository (bare, in memory or on disk).
// See Repo for the concurrency rules.
func (r *Repo) Git() *git.Repository { return r.repo }

// URL returns the remote's URL with credentials redacted.
func (r *Repo) URL() string { return r.safeURL }

// Fetch brings every local branch up to date with the remote, forcing
// non-fast-forward updates, and deletes local branches that were deleted on
// the remote. Errors name the redacted URL; a remote that became empty is not
// an error (all local branches are deleted).
func (r *Repo) Fetch(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return fmt.Errorf("fetch %s: %w", r.safeURL, err)
	}
	if err := r.fetch(ctx); err != nil {
		return fmt.Errorf("fetch %s: %w", r.safeURL, err)
	}
	return nil
}

// fetch runs a mirroring fetch; r.mu must be held exclusively. For an on-disk
// mirror, errors (and go-git panics) caused by a corrupt mirror wrap
// ErrCacheUnusable, and the mirror is repacked when it has accumulated loose
// objects or packs.
func (r *Repo) fetch(ctx context.Context) (err error) {
	if r.disk != nil {
		defer func() {
			if p := recover(); p != nil {
				err = r.disk.corrupt(fmt.Errorf("go-git panicked: %v", p))
			}
		}()
		// Cheap (a few reads per pack), and go-git would otherwise read a
		// damaged pack only when it needs one of its objects.
		if err := checkPacks(filepath.Join(r.disk.mirror, "objects", "pack")); err != nil {
			return r.disk.corrupt(err)
		}
	}
	err = r.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RemoteURL:  r.rawURL,
		RefSpecs:   []config.RefSpec{mirrorSpec, approveSpec},
		Auth:       r.auth,
		Tags:       git.NoTags,
		Force:      true,
		Prune:      true,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return r.maintain()
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return r.removeBranches()
	}
	err = redactError(err, r.rawURL)
	if r.disk != nil && ctx.Err() == nil {
		// Tell a broken mirror from a network or server failure.
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return r.disk.corrupt(err)
		}
		if verr := r.disk.validate(r.repo); verr != nil {
			return verr
		}
	}
	return classify(err)
}

// removeBranches deletes every local branch; r.mu must be held exclusively.
func (r *Repo) removeBranches() error {
	branches, err := r.branches("")
	if err != nil {
		return err
	}
	for name := range branches {
		if err := r.repo.Storer.RemoveReference(plumbing.ReferenceName(branchSpace + name)); err != nil {
			return fmt.Errorf("remove local branch %q: %w", name, err)
		}
	}
	return nil
}

// branchRef validates a short branch name and returns its full ref name.
func branchRef(name string) (plumbing.ReferenceName, error) {
	if name == "" || strings.HasPrefix(name, "refs/") {
		return "", fmt.Errorf("invalid branch name %q: give a short name such as \"main\"", name)
	}
	ref := plumbing.ReferenceName(branchSpace + name)
	if err := ref.Validate(); err != nil {
		return "", fmt.Errorf("invalid branch name %q: %w", name, err)
	}
	return ref, nil
}

// Branch returns the commit the local mirror of branch name points at. name is
// a short name like "main" or "agents/x/abc". The error wraps ErrNotFound when
// the branch does not exist.
func (r *Repo) Branch(name string) (plumbing.Hash, error) {
	ref, err := branchRef(name)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("resolve branch: %w", err)
	}
	r.rlock()
	defer r.runlock()
	got, err := r.repo.Storer.Reference(ref)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("resolve branch %q: %w", name, classify(err))
	}
	if got.Type() != plumbing.HashReference {
		return plumbing.ZeroHash, fmt.Errorf("resolve branch %q: symbolic reference", name)
	}
	return got.Hash(), nil
}

// Branches returns the branches whose short name starts with prefix ("" for
// all), as short name -> commit. No match gives an empty map, not an error.
func (r *Repo) Branches(prefix string) (map[string]plumbing.Hash, error) {
	r.rlock()
	defer r.runlock()
	return r.branches(prefix)
}

func (r *Repo) branches(prefix string) (map[string]plumbing.Hash, error) {
	iter, err := r.repo.Storer.IterReferences()
	if err != nil {
		return nil, fmt.Errorf("list branches: %w", err)
	}
	defer iter.Close()
	out := make(map[string]plumbing.Hash)
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		name, ok := strings.CutPrefix(ref.Name().String(), branchSpace)
		if ok && ref.Type() == plumbing.HashReference && strings.HasPrefix(name, prefix) {
			out[name] = ref.Hash()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list branches: %w", err)
	}
	return out, nil
}

// Commit returns the commit object h. The error wraps ErrNotFound when the
// commit is not in the local mirror.
func (r *Repo) Commit(h plumbing.Hash) (*object.Commit, error) {
	r.rlock()
	defer r.runlock()
	return r.commit(h)
}

func (r *Repo) commit(h plumbing.Hash) (*object.Commit, error) {
	c, err := object.GetCommit(r.repo.Storer, h)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", h, classify(err))
	}
	return c, nil
}

// IsAncestor reports whether commit a is reachable from commit b, following
// all parents (a == b counts). The error wraps ErrNotFound when either commit
// is missing.
func (r *Repo) IsAncestor(a, b plumbing.Hash) (bool, error) {
	r.rlock()
	defer r.runlock()
	ca, err := r.commit(a)
	if err != nil {
		return false, fmt.Errorf("check ancestry: %w", err)
	}
	cb, err := r.commit(b)
	if err != nil {
		return false, fmt.Errorf("check ancestry: %w", err)
	}
	ok, err := ca.IsAncestor(cb)
	if err != nil {
		return false, fmt.Errorf("check whether %s is an ancestor of %s: %w", a, b, classify(err))
	}
	return ok, nil
}

// FirstParents returns the first-parent chain from head back to the root
// commit, newest first, or only its first max commits when max > 0. The error
// wraps ErrNotFound when a commit of the chain is missing.
func (r *Repo) FirstParents(head plumbing.Hash, max int) ([]*object.Commit, error) {
	r.rlock()
	defer r.runlock()
	var out []*object.Commit
	for h := head; max <= 0 || len(out) < max; {
		c, err := r.commit(h)
		if err != nil {
			return nil, fmt.Errorf("walk first parents of %s: %w", head, err)
		}
		out = append(out, c)
		if len(c.ParentHashes) == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	return out, nil
}

// Tags returns the mirrored tags whose short name starts with prefix, as
// short name -> the tag object (or commit) the tag ref points at. Only
// approve/* tags are mirrored. No match gives an empty map.
func (r *Repo) Tags(prefix string) (map[string]plumbing.Hash, error) {
	r.rlock()
	defer r.runlock()
	iter, err := r.repo.Storer.IterReferences()
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer iter.Close()
	out := make(map[string]plumbing.Hash)
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		name, ok := strings.CutPrefix(ref.Name().String(), tagSpace)
		if ok && ref.Type() == plumbing.HashReference && strings.HasPrefix(name, prefix) {
			out[name] = ref.Hash()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	return out, nil
}
