package reconcile

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/approval"
	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// KeysDir holds the public keys trusted to sign the ledger.
const KeysDir = ".reconciler/keys"

// Stalled reasons: a person must act; the loop keeps retrying at its
// interval but never appends.
const (
	ReasonLedgerUntrusted = "LedgerUntrusted"
	ReasonLedgerRewritten = "LedgerRewritten"
)

// StalledError is a failure that retrying does not fix: the ledger cannot
// be trusted or was rewritten. Status reports it as Stalled with Reason.
type StalledError struct {
	Reason string
	Err    error
}

func (e *StalledError) Error() string { return e.Err.Error() }
func (e *StalledError) Unwrap() error { return e.Err }

// ledgerError sorts the ledger's refusals into stalled errors.
func ledgerError(err error) error {
	var se *StalledError
	switch {
	case err == nil, errors.As(err, &se):
		return err
	case errors.Is(err, ledger.ErrRewritten):
		return &StalledError{Reason: ReasonLedgerRewritten, Err: err}
	case errors.Is(err, ledger.ErrUntrusted), errors.Is(err, ledger.ErrInvalid):
		return &StalledError{Reason: ReasonLedgerUntrusted, Err: err}
	}
	return err
}

// trustLedger reads and verifies what was appended to the ledger since the
// last pass, and refuses to go on when the ledger cannot be trusted: an
// entry that does not verify, a branch that no longer extends what was
// read (also by an earlier process, through the saved state), a missing
// ledger that commits on the protected or proposal branches reference, or
// a signing key the ledger does not trust. An empty ledger is started with
// a genesis entry trusting the reconciler's key and the keys in
// .reconciler/keys at the protected branch's head.
func (r *Reconciler) trustLedger(ctx context.Context, p *pass) error {
	if _, err := r.ledger.Update(ctx); err != nil {
		return ledgerError(err)
	}
	if r.ledger.State().Seq == 0 {
		n, at, err := ledger.MaxReference(r.repo, r.cfg.Branch, 0, plumbing.ZeroHash)
		if err != nil {
			return fmt.Errorf("look for ledger references: %w", err)
		}
		reason := ""
		if n > 0 {
			missing := fmt.Sprintf("there is no %s branch, but commit %s references ledger entry %d", ledger.Branch, at.String()[:12], n)
			if !r.cfg.StartNewLedger {
				return &StalledError{Reason: ReasonLedgerRewritten, Err: fmt.Errorf("%w: %s: the ledger was deleted; restore it, or start a new one deliberately with --start-new-ledger", ledger.ErrRewritten, missing)}
			}
			reason = missing
			r.log.Warn("starting a new ledger although commits reference a missing one", "reason", missing)
		}
		keys, err := repoKeys(r.repo, p.head, r.cfg.Branch)
		if err != nil {
			return err
		}
		stored, err := r.ledger.InitOver(ctx, p.head.String(), r.cfg.Branch, keys, reason)
		if err != nil {
			return ledgerError(err)
		}
		if stored {
			r.log.Info("ledger started", "keys", len(keys)+1)
		}
	}
	if err := r.ledger.CheckSigner(); err != nil {
		return &StalledError{Reason: ReasonLedgerUntrusted, Err: err}
	}
	p.state = r.ledger.State()
	return nil
}

// repoKeys returns the public keys in .reconciler/keys/*.pub at commit.
func repoKeys(repo *gitstore.Repo, commit plumbing.Hash, branch string) ([]signing.PublicKey, error) {
	names, err := repo.ListFiles(commit, KeysDir+"/*.pub")
	if err != nil {
		return nil, fmt.Errorf("list trusted keys at %s: %w", commit, err)
	}
	var keys []signing.PublicKey
	for _, name := range names {
		b, err := repo.ReadFile(commit, name)
		if err != nil {
			return nil, err
		}
		k, err := signing.ParsePublicKeyPEM(b, branch+":"+name)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s:%s: %w", branch, name, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// keysDirHash returns the tree hash of .reconciler/keys at commit, zero
// when there is none.
func keysDirHash(repo *gitstore.Repo, commit plumbing.Hash) (plumbing.Hash, error) {
	h, _, err := repo.TreeEntry(commit, KeysDir)
	if errors.Is(err, gitstore.ErrNotFound) {
		return plumbing.ZeroHash, nil
	}
	return h, err
}

// keyScanDepth bounds how far back the protected branch is searched for
// the commits that changed .reconciler/keys.
const keyScanDepth = 10000

// checkKeys turns changes of .reconciler/keys on the protected branch into
// trust: a change that arrived through an approved merge (a merge commit
// by a member of a reviewer group of the spec before it, never the
// reconciler or an agent) is recorded as keys.changed, signed by a key
// trusted before it, and its keys sign from the next entry on. A change
// pushed any other way is recorded once as a policy.violation and never
// trusted.
func (r *Reconciler) checkKeys(ctx context.Context, p *pass) error {
	if p.head == r.keysHead {
		return nil
	}
	st := r.ledger.State()
	since := plumbing.NewHash(st.KeysSubject)
	now, err := keysDirHash(r.repo, p.head)
	if err != nil {
		return err
	}
	then, err := keysDirHash(r.repo, since)
	if err != nil && !errors.Is(err, gitstore.ErrNotFound) {
		return err
	}
	if now == then {
		r.keysHead = p.head
		return nil
	}
	// Walk the first-parent history back to the commit the trusted keys
	// were taken from, and judge each commit that changed the keys.
	chain, err := r.repo.FirstParents(p.head, keyScanDepth)
	if err != nil {
		return err
	}
	var changed []plumbing.Hash // oldest first
	for i, c := range chain {
		if c.Hash == since {
			break
		}
		if len(c.ParentHashes) == 0 {
			break
		}
		if i == len(chain)-1 && len(chain) == keyScanDepth {
			return fmt.Errorf("check trusted keys: commit %s, where the trusted keys were taken from, is not among the last %d commits of %s", short(st.KeysSubject), keyScanDepth, r.cfg.Branch)
		}
		a, err := keysDirHash(r.repo, c.Hash)
		if err != nil {
			return err
		}
		b, err := keysDirHash(r.repo, c.ParentHashes[0])
		if err != nil {
			return err
		}
		if a != b {
			changed = append([]plumbing.Hash{c.Hash}, changed...)
		}
	}
	for _, h := range changed {
		if err := r.judgeKeyChange(ctx, p, h); err != nil {
			return err
		}
	}
	r.keysHead = p.head
	return nil
}

// judgeKeyChange records one commit that changed .reconciler/keys.
func (r *Reconciler) judgeKeyChange(ctx context.Context, p *pass, h plumbing.Hash) error {
	c, err := r.repo.Commit(h)
	if err != nil {
		return err
	}
	st := r.ledger.State()
	if st.ViolationSubjects[h.String()] || st.KeysSubject == h.String() {
		return nil
	}
	before, err := repoKeys(r.repo, c.ParentHashes[0], r.cfg.Branch)
	if err != nil {
		return err
	}
	after, err := repoKeys(r.repo, h, r.cfg.Branch)
	if err != nil {
		return r.keyViolation(ctx, p, h, fmt.Sprintf("its keys do not parse: %v", err))
	}
	approver, why := r.approvedMerge(c)
	if approver == "" {
		return r.keyViolation(ctx, p, h, why)
	}
	// The new trusted set: what was trusted, minus the repository keys the
	// change removed, plus those it added.
	keep := map[string]bool{}
	for _, k := range after {
		keep[k.ID] = true
	}
	var next []ledger.Key
	for _, k := range st.Keys {
		removed := false
		for _, b := range before {
			if b.ID == k.ID && !keep[k.ID] {
				removed = true
			}
		}
		if !removed {
			next = append(next, k)
		}
	}
	for _, k := range after {
		if !ledger.HasKey(next, k.ID) {
			next = append(next, ledger.KeyOf(k))
		}
	}
	if len(next) == 0 {
		return r.keyViolation(ctx, p, h, "it would leave no key trusted")
	}
	slices.SortFunc(next, func(a, b ledger.Key) int { return strings.Compare(a.ID, b.ID) })
	ev := ledger.Event{
		Type: ledger.KeysChanged, Subject: h.String(), SubjectName: r.cfg.Branch, SpecCommit: h.String(),
		Keys: next, Reviewer: approver,
		Summary: oneLine(fmt.Sprintf("keys.changed at %s merged by %s: %d trusted key(s): %s", h.String()[:12], approver, len(next), keyList(next))),
	}
	_, err = r.append(ctx, p, ev)
	return err
}

func (r *Reconciler) keyViolation(ctx context.Context, p *pass, h plumbing.Hash, why string) error {
	c, err := r.repo.Commit(h)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%s changed at %s by %s without an approved merge (%s); the keys are not trusted", KeysDir, h.String()[:12], c.Committer.Email, why)
	r.log.Error("untrusted key change", "commit", h.String(), "committer", c.Committer.Email, "reason", why)
	_, err = r.append(ctx, p, ledger.Event{
		Type: ledger.PolicyViolation, Subject: h.String(), SubjectName: r.cfg.Branch, SpecCommit: h.String(),
		Error: msg, Summary: oneLine("policy.violation: " + msg),
	})
	return err
}

// approvedMerge returns who approved a commit that changed the keys: a
// merge commit signed (SSH or OpenPGP, as git verify-commit checks it) by
// the signing_key of a member of a reviewer group in the spec of its first
// parent (the spec before the merge), whose committer is neither the
// reconciler nor an agent. The committer's name and email are claims and
// count for nothing; a group's accept_unsigned does not apply here, where
// the ledger's trust is at stake. Otherwise it returns "" and why not.
func (r *Reconciler) approvedMerge(c *object.Commit) (string, string) {
	if len(c.ParentHashes) < 2 {
		return "", "a direct push, not a merge"
	}
	email := c.Committer.Email
	if isMachine(r.cfg.Identity, email) {
		return "", fmt.Sprintf("merged by the reconciler or an agent (%s)", email)
	}
	spec, diags, err := r.loadAt(c.ParentHashes[0])
	if err != nil || diags.HasErrors() {
		return "", "the spec before the merge does not load, so no reviewer can be checked"
	}
	keys := forge.ReviewerKeys(spec)
	if len(keys) == 0 {
		return "", "no reviewer in reviewers.hcl has a signing_key, so no merge can be verified"
	}
	_, raw, err := r.repo.RawObject(c.Hash)
	if err != nil {
		return "", fmt.Sprintf("cannot read the merge commit: %v", err)
	}
	signer, err := approval.VerifyCommit(raw, keys)
	if err != nil {
		return "", fmt.Sprintf("the merge commit is not signed by a reviewer's signing_key: %v", err)
	}
	return fmt.Sprintf("%s <%s>, signed by %s", c.Committer.Name, email, signer), ""
}

func keyList(keys []ledger.Key) string {
	var parts []string
	for _, k := range keys {
		src := k.Source
		if src == "" {
			src = k.ID
		}
		parts = append(parts, path.Base(src))
	}
	return strings.Join(parts, ", ")
}
