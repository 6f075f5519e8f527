package gitstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/revlist"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"

	"github.com/agentgitops/reconciler/internal/crashpoint"
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
// Old == New only checks the remote value (against the refs the server
// advertises, not under its lock). On success the local branches are set to
// the new values; on failure nothing local moves.
//
// A compare-and-swap failure wraps ErrStale and names the branch; fetch,
// recompute and retry. Other failures (network, permissions, hooks) are
// returned as they are, naming the redacted URL; the objects the push did
// not deliver are sent by the next one.
//
// How: Push opens one receive-pack session, compares the refs the server
// advertises with each Old (failing with ErrStale before sending anything),
// and sends one command per update with Old as the old value, which
// git-receive-pack checks under its ref lock, creation included (an old value
// of zero: the ref must not exist). That is a true compare-and-swap. The pack
// holds only the objects this Repo created (WriteTree, CreateCommit) and has
// not delivered yet that are reachable from the New commits, so its cost does
// not depend on the size of the repository or of its history. Should the
// server find objects missing (they were created by another Repo or
// process), Push retries once with every object reachable from New and not
// from the advertised refs, the walk go-git's Remote.Push does.
func (r *Repo) Push(ctx context.Context, updates ...RefUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	var (
		cmds  []*packp.Command
		names = make(map[string]bool, len(updates))
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
		if u.Old != u.New {
			cmds = append(cmds, &packp.Command{Name: ref, Old: u.Old, New: u.New})
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	var news []plumbing.Hash
	for _, u := range updates {
		if u.New.IsZero() || u.Old == u.New {
			continue
		}
		if _, err := r.commit(u.New); err != nil {
			return fmt.Errorf("push to %s: branch %q: %w", r.safeURL, u.Branch, err)
		}
		news = append(news, u.New)
	}
	objects, err := r.pendingFrom(news)
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	missing, err := r.send(ctx, updates, cmds, func(map[string]plumbing.Hash) ([]plumbing.Hash, error) { return objects, nil })
	if missing {
		// The server lacks objects this Repo did not create (or a previous
		// push's were lost): send everything it does not provably have.
		missing, err = r.send(ctx, updates, cmds, func(remote map[string]plumbing.Hash) ([]plumbing.Hash, error) {
			return r.objectsNotIn(news, remote)
		})
		if missing {
			err = fmt.Errorf("server reports missing objects after a full pack: %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	crashpoint.Hit("push")
	return r.pushed(objects, updates)
}

// pushed records a push the server took: objects are no longer pending and
// the local branches move as updates say; then the mirror's upkeep. r.mu
// must be held exclusively.
func (r *Repo) pushed(objects []plumbing.Hash, updates []RefUpdate) error {
	for _, h := range objects {
		delete(r.pending, h)
	}
	for _, u := range updates {
		if u.Old == u.New {
			continue
		}
		ref := plumbing.ReferenceName(branchSpace + u.Branch)
		var err error
		if u.New.IsZero() {
			err = r.repo.Storer.RemoveReference(ref)
		} else {
			err = r.repo.Storer.SetReference(plumbing.NewHashReference(ref, u.New))
		}
		if err != nil {
			return fmt.Errorf("push to %s: pushed, but updating local branch %q failed: %w", r.safeURL, u.Branch, err)
		}
	}
	if err := r.maintain(); err != nil {
		return fmt.Errorf("push to %s: pushed, but %w", r.safeURL, err)
	}
	return nil
}

// send runs one receive-pack session: it checks the advertised refs against
// updates, then sends cmds with a pack of the objects pack returns (given the
// advertised branches). missing reports that the server refused the pack for
// lack of objects, so that a fuller one may help. r.mu must be held
// exclusively.
func (r *Repo) send(ctx context.Context, updates []RefUpdate, cmds []*packp.Command,
	pack func(remote map[string]plumbing.Hash) ([]plumbing.Hash, error)) (missing bool, err error) {
	return r.receive(ctx, updates, cmds, func(caps *capability.List, remote map[string]plumbing.Hash) (io.Reader, error) {
		allDelete := true
		for _, c := range cmds {
			if c.New.IsZero() {
				if !caps.Supports(capability.DeleteRefs) {
					return nil, errors.New("the server does not support deleting branches")
				}
			} else {
				allDelete = false
			}
		}
		if allDelete {
			return nil, nil
		}
		// A pack is due whenever a command is not a deletion, even empty
		// (New may already be on the remote).
		objs, err := pack(remote)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if _, err := packfile.NewEncoder(&buf, r.repo.Storer, !caps.Supports(capability.OFSDelta)).Encode(objs, packWindow); err != nil {
			return nil, fmt.Errorf("encode pack of %d objects: %w", len(objs), err)
		}
		return &buf, nil
	})
}

// receive runs one receive-pack session for send and sendRaw: it checks
// the advertised refs against updates and, unless cmds is empty, sends
// them with the pack body returns (nil for none).
func (r *Repo) receive(ctx context.Context, updates []RefUpdate, cmds []*packp.Command,
	body func(caps *capability.List, remote map[string]plumbing.Hash) (io.Reader, error)) (missing bool, err error) {
	sess, err := r.receivePackSession()
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := sess.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close session: %w", redactError(cerr, r.rawURL))
		}
	}()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return false, fmt.Errorf("list remote branches: %w", classify(redactError(err, r.rawURL)))
	}
	remote := advertisedBranches(adv)
	if err := stale(remote, updates, false); err != nil {
		return false, err
	}
	if len(cmds) == 0 {
		return false, nil
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(adv.Capabilities)
	req.Commands = cmds
	if adv.Capabilities.Supports(capability.Atomic) {
		req.Capabilities.Set(capability.Atomic)
	}
	pack, err := body(adv.Capabilities, remote)
	if err != nil {
		return false, err
	}
	if pack != nil {
		req.Packfile = io.NopCloser(pack)
	}
	report, err := sess.ReceivePack(ctx, req)
	return r.receiveResult(ctx, updates, req.Capabilities.Supports(capability.ReportStatus), report, err)
}

// receiveResult reads a receive-pack session's outcome (see send).
// asked says the request asked for a report (capability report-status).
func (r *Repo) receiveResult(ctx context.Context, updates []RefUpdate, asked bool, report *packp.ReportStatus, err error) (missing bool, _ error) {
	if report == nil && err == nil {
		if !asked {
			return false, nil // no report-status: the server's exit status said yes
		}
		// Asked for a report and got none: over smart HTTP, the body of a
		// receive-pack that died is empty. The push landed only if the
		// remote's branches now say so.
		now, lerr := r.remoteBranches(ctx)
		if lerr != nil {
			return false, fmt.Errorf("the server sent no report of the push, and listing its branches failed: %w", lerr)
		}
		for _, u := range updates {
			if now[u.Branch] != u.New {
				err = errors.New("the server ended the push without a report (its receive-pack died?)")
				if serr := stale(now, updates, true); serr != nil {
					return false, fmt.Errorf("%w (push error: %v)", serr, err)
				}
				return false, err
			}
		}
		return false, nil
	}
	if err == nil {
		err = report.Error()
	}
	if err == nil {
		return false, nil
	}
	err = redactError(err, r.rawURL)
	if report != nil && missingObjects(report) {
		return true, err
	}
	if report == nil && ctx.Err() != nil {
		return false, err
	}
	// A refused command is a lost race when the remote's branch is now
	// neither Old nor New; anything else (hooks, permissions, network) is
	// returned as it is.
	if now, lerr := r.remoteBranches(ctx); lerr == nil {
		if serr := stale(now, updates, true); serr != nil {
			return false, fmt.Errorf("%w (push error: %v)", serr, err)
		}
	}
	return false, err
}

// missingObjects reports whether git-receive-pack refused commands because
// objects they need are neither in the pack nor in the repository.
func missingObjects(rs *packp.ReportStatus) bool {
	for _, c := range rs.CommandStatuses {
		if strings.Contains(c.Status, "missing necessary objects") || strings.Contains(c.Status, "bad pack") {
			return true
		}
	}
	return false
}

func (r *Repo) receivePackSession() (transport.ReceivePackSession, error) {
	c, ep, err := r.transport()
	if err != nil {
		return nil, err
	}
	s, err := c.NewReceivePackSession(ep, r.auth)
	if err != nil {
		return nil, fmt.Errorf("start receive-pack: %w", classify(redactError(err, r.rawURL)))
	}
	return s, nil
}

func (r *Repo) uploadPackSession() (transport.UploadPackSession, error) {
	c, ep, err := r.transport()
	if err != nil {
		return nil, err
	}
	s, err := c.NewUploadPackSession(ep, r.auth)
	if err != nil {
		return nil, fmt.Errorf("start upload-pack: %w", classify(redactError(err, r.rawURL)))
	}
	return s, nil
}

// transport returns go-git's client for the remote and its endpoint.
func (r *Repo) transport() (transport.Transport, *transport.Endpoint, error) {
	ep, err := transport.NewEndpoint(r.rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse remote url: %w", redactError(err, r.rawURL))
	}
	c, err := client.NewClient(ep)
	if err != nil {
		return nil, nil, fmt.Errorf("transport for %s: %w", r.safeURL, redactError(err, r.rawURL))
	}
	return c, ep, nil
}

// advertisedBranches returns the branches of an advertisement, short name ->
// commit.
func advertisedBranches(adv *packp.AdvRefs) map[string]plumbing.Hash {
	out := make(map[string]plumbing.Hash)
	for name, h := range adv.References {
		if short, ok := strings.CutPrefix(name, branchSpace); ok {
			out[short] = h
		}
	}
	return out
}

// pendingFrom returns the pending objects (created here, not yet pushed)
// reachable from commits without leaving the pending set: its cost is the
// number of objects created, whatever the size of the history. r.mu must be
// held.
func (r *Repo) pendingFrom(commits []plumbing.Hash) ([]plumbing.Hash, error) {
	var (
		out  []plumbing.Hash
		seen = make(map[plumbing.Hash]bool)
	)
	var walkTree func(h plumbing.Hash, depth int) error
	walkTree = func(h plumbing.Hash, depth int) error {
		if seen[h] {
			return nil
		}
		seen[h] = true
		if _, ok := r.pending[h]; !ok {
			return nil
		}
		if depth > maxTreeDepth {
			return fmt.Errorf("tree %s: nested deeper than %d directories", h, maxTreeDepth)
		}
		out = append(out, h)
		entries, err := r.treeEntries(h)
		if err != nil {
			return err
		}
		for _, e := range entries {
			switch {
			case e.Mode == filemode.Dir:
				if err := walkTree(e.Hash, depth+1); err != nil {
					return err
				}
			case e.Mode == filemode.Submodule || seen[e.Hash]:
			default:
				seen[e.Hash] = true
				if _, ok := r.pending[e.Hash]; ok {
					out = append(out, e.Hash)
				}
			}
		}
		return nil
	}
	queue := append([]plumbing.Hash(nil), commits...)
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if seen[h] {
			continue
		}
		seen[h] = true
		if _, ok := r.pending[h]; !ok {
			continue
		}
		out = append(out, h)
		c, err := r.commit(h)
		if err != nil {
			return nil, err
		}
		if err := walkTree(c.TreeHash, 0); err != nil {
			return nil, err
		}
		queue = append(queue, c.ParentHashes...)
	}
	return out, nil
}

// objectsNotIn returns the objects reachable from commits and not from the
// remote branches that are in the local store, with go-git's revlist: a walk
// of the whole history, for Push's fallback only. r.mu must be held.
func (r *Repo) objectsNotIn(commits []plumbing.Hash, remote map[string]plumbing.Hash) ([]plumbing.Hash, error) {
	var haves []plumbing.Hash
	for _, h := range remote {
		if _, err := r.commit(h); err == nil {
			haves = append(haves, h)
		}
	}
	objs, err := revlist.Objects(r.repo.Storer, commits, haves)
	if err != nil {
		return nil, fmt.Errorf("list objects to push: %w", classify(err))
	}
	return objs, nil
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
	sess, err := r.uploadPackSession()
	if err != nil {
		return nil, fmt.Errorf("list remote branches: %w", err)
	}
	defer sess.Close()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	switch {
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return map[string]plumbing.Hash{}, nil
	case err != nil:
		return nil, fmt.Errorf("list remote branches: %w", classify(redactError(err, r.rawURL)))
	}
	return advertisedBranches(adv), nil
}

// PushStage is Push of one update whose new objects are those of s: it
// seals s (see Stage.Seal) and sends the pack Seal wrote, as it is, without
// holding the Repo for the network round trip, so that the next Stage can
// be built (and other readers run) while the server works. Errors are
// Push's; should the server lack objects the Stage does not hold (made by
// another Repo), it falls back to Push's full pack.
func (r *Repo) PushStage(ctx context.Context, s *Stage, u RefUpdate) error {
	ref, err := branchRef(u.Branch)
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	if s.r != r {
		return fmt.Errorf("push to %s: the stage belongs to another repository", r.safeURL)
	}
	if u.New.IsZero() || u.Old == u.New {
		return r.Push(ctx, u)
	}
	if err := s.Seal(); err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	if _, ok := s.objs[u.New]; !ok {
		return r.Push(ctx, u)
	}
	r.mu.Lock()
	err = r.usable()
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	updates := []RefUpdate{u}
	cmds := []*packp.Command{{Name: ref, Old: u.Old, New: u.New}}
	missing, err := r.sendRaw(ctx, updates, cmds, s.pack)
	if missing {
		return r.Push(ctx, u)
	}
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.safeURL, err)
	}
	crashpoint.Hit("push")
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pushed(s.order, updates)
}

// sendRaw is send with a pack already encoded; it touches no storage, so
// r.mu need not be held.
func (r *Repo) sendRaw(ctx context.Context, updates []RefUpdate, cmds []*packp.Command, pack []byte) (missing bool, err error) {
	return r.receive(ctx, updates, cmds, func(*capability.List, map[string]plumbing.Hash) (io.Reader, error) {
		return bytes.NewReader(pack), nil
	})
}
