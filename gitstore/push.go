package gitstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// RefUpdate is one compare-and-swap of a remote branch.
type RefUpdate struct {
	Branch string        // short name, e.g. "agent-evidence"
	Old    plumbing.Hash // value the remote branch must have now; ZeroHash: it must not exist
	New    plumbing.Hash // value to set; ZeroHash deletes the branch
}

// Push applies updates to the remote's branches, atomically when the server
// supports it (git-receive-pack does), each as a compare-and-swap: the remote
// branch must be at Old (absent for plumbing.ZeroHash) and is moved to New
// (deleted for plumbing.ZeroHash), whether or not that is a fast-forward. New
// commits must be in the repository (see CreateCommit). An update with
// Old == New only checks the remote value. On success the local branches are
// set to the new values.
//
// A compare-and-swap failure wraps ErrStale and names the branch; fetch,
// recompute and retry. Other failures (network, permissions, hooks) are
// returned as they are, naming the redacted URL.
//
// How: the remote refs are listed first, failing with ErrStale on a mismatch.
// The push then sends updates and deletions with
// git.PushOptions.RequireRemoteRefs, which go-git checks against the refs the
// receiving server advertises in the same session; the server applies each
// command only if the ref still has the advertised value, under its ref lock.
// That is a true compare-and-swap. go-git cannot require a ref to be absent,
// so creations are pushed without force instead: if another writer creates
// the branch between the listing and the push, the push is refused (ErrStale)
// unless the other writer's commit is an ancestor of New, in which case the
// branch fast-forwards over it: that commit is kept in New's history, never
// overwritten, but the creation is reported as successful.
func (r *Repo) Push(ctx context.Context, updates ...RefUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	var (
		specs   []config.RefSpec
		require []config.RefSpec
		names   = make(map[string]bool, len(updates))
	)
	for _, u := range updates {
		ref, err := branchRef(u.Branch)
		if err != nil {
			return fmt.Errorf("push to %s: %w", r.safeURL, err)
		}
		if names[u.Branch] {
			return fmt.Errorf("push to %s: branch %q updated twice", r.safeURL, u.Branch)
		}
		names[u.Branch] = true
		if !u.Old.IsZero() {
			require = append(require, config.RefSpec(u.Old.String()+":"+ref.String()))
		}
		switch {
		case u.Old == u.New: // check only
		case u.New.IsZero():
			specs = append(specs, config.RefSpec(":"+ref.String()))
		case u.Old.IsZero():
			specs = append(specs, config.RefSpec(u.New.String()+":"+ref.String()))
		default:
			specs = append(specs, config.RefSpec("+"+u.New.String()+":"+ref.String()))
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range updates {
		if u.New.IsZero() {
			continue
		}
		if _, err := r.commit(u.New); err != nil {
			return fmt.Errorf("push to %s: branch %q: %w", r.safeURL, u.Branch, err)
		}
	}
	remote, err := r.remoteBranches(ctx)
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	if err := stale(remote, updates, false); err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	if len(specs) > 0 {
		// A remote without fetch refspecs: go-git then leaves local refs alone
		// and they are set below, under r.mu.
		pusher := git.NewRemote(r.repo.Storer, &config.RemoteConfig{Name: remoteName, URLs: []string{r.rawURL}})
		err := pusher.PushContext(ctx, &git.PushOptions{
			RemoteName:        remoteName,
			RefSpecs:          specs,
			RequireRemoteRefs: require,
			Auth:              r.auth,
			Atomic:            true,
		})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			err = redactError(err, r.rawURL)
			// go-git reports lost races as untyped errors (RequireRemoteRefs
			// mismatch, non-fast-forward creation, "failed to update ref" from
			// the server): look at the remote to tell a lost race from the rest.
			if remote, lerr := r.remoteBranches(ctx); lerr == nil {
				if serr := stale(remote, updates, true); serr != nil {
					return fmt.Errorf("push to %s: %w (push error: %v)", r.safeURL, serr, err)
				}
			}
			return fmt.Errorf("push to %s: %w", r.safeURL, err)
		}
	}
	for _, u := range updates {
		ref := plumbing.ReferenceName(branchSpace + u.Branch)
		if u.New.IsZero() {
			err = r.repo.Storer.RemoveReference(ref)
		} else {
			err = r.repo.Storer.SetReference(plumbing.NewHashReference(ref, u.New))
		}
		if err != nil {
			return fmt.Errorf("push to %s: pushed, but updating local branch %q failed: %w", r.safeURL, u.Branch, err)
		}
	}
	return nil
}

// stale returns an error wrapping ErrStale naming the first update whose
// branch is not at Old on the remote (nor at New, when allowNew).
func stale(remote map[string]plumbing.Hash, updates []RefUpdate, allowNew bool) error {
	for _, u := range updates {
		cur := remote[u.Branch]
		if cur == u.Old || (allowNew && cur == u.New) {
			continue
		}
		switch {
		case u.Old.IsZero():
			return fmt.Errorf("branch %q already exists at %s: %w", u.Branch, cur, ErrStale)
		case cur.IsZero():
			return fmt.Errorf("branch %q no longer exists (expected %s): %w", u.Branch, u.Old, ErrStale)
		default:
			return fmt.Errorf("branch %q is at %s, expected %s: %w", u.Branch, cur, u.Old, ErrStale)
		}
	}
	return nil
}

// remoteBranches lists the remote's branches, short name -> commit.
func (r *Repo) remoteBranches(ctx context.Context) (map[string]plumbing.Hash, error) {
	lister := git.NewRemote(r.repo.Storer, &config.RemoteConfig{Name: remoteName, URLs: []string{r.rawURL}})
	refs, err := lister.ListContext(ctx, &git.ListOptions{Auth: r.auth})
	out := make(map[string]plumbing.Hash)
	switch {
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("list remote branches: %w", classify(redactError(err, r.rawURL)))
	}
	for _, ref := range refs {
		name, ok := strings.CutPrefix(ref.Name().String(), branchSpace)
		if ok && ref.Type() == plumbing.HashReference {
			out[name] = ref.Hash()
		}
	}
	return out, nil
}
