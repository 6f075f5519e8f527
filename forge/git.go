package forge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/approval"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/policy"
)

// MergeScanDepth bounds how far back the protected branch is searched for
// the commit that merged a proposal.
const MergeScanDepth = 2000

// Git is the git-native forge: a proposal is its branch; a reviewer
// approves by merging it with a merge commit signed by their signing_key,
// and further reviewers by signed tags approve/<run-id>/<member> on the
// head; deleting the branch without merging rejects it.
type Git struct {
	repo *gitstore.Repo

	mu sync.Mutex
	// chain is the protected branch's first parents at chainHead, with an
	// index of the commits it brought in, rebuilt when the head moves: one
	// walk a pass whatever the number of open proposals.
	chainHead plumbing.Hash
	chain     []*object.Commit
	byHash    map[plumbing.Hash]int // first-parent commit -> index
	brought   map[plumbing.Hash]broughtIn
	byRun     map[string][]int // Agent-Run trailer value -> first-parent indexes
}

// NewGit returns the git-native forge of repo.
func NewGit(repo *gitstore.Repo) *Git { return &Git{repo: repo} }

// Open does nothing more: the pushed branch is the proposal.
func (g *Git) Open(ctx context.Context, p Proposal) error { return nil }

// Close deletes the proposal's branch if it is still at p.Head; a branch
// that moved since (a person pushed to it) or is gone is left as it is.
func (g *Git) Close(ctx context.Context, p Proposal, why string) error {
	cur, err := g.repo.Branch(p.Branch)
	if errors.Is(err, gitstore.ErrNotFound) || (err == nil && cur != p.Head) {
		return nil
	}
	if err != nil {
		return err
	}
	err = g.repo.Push(ctx, gitstore.RefUpdate{Branch: p.Branch, Old: cur, New: plumbing.ZeroHash})
	if err != nil && !errors.Is(err, gitstore.ErrStale) {
		return fmt.Errorf("close %s (%s): %w", p.Branch, why, err)
	}
	return nil
}

// Observe reports the proposal's branch head and whether, and how, it
// reached the protected branch at protected: heads are every head decided
// on, oldest first (a merge of an older one, or of a head never decided,
// is found too and reported as merged so the loop can judge it).
func (g *Git) Observe(ctx context.Context, p Proposal, protected plumbing.Hash, heads []plumbing.Hash) (Observation, error) {
	var o Observation
	cur, err := g.repo.Branch(p.Branch)
	switch {
	case err == nil:
		o.Head = cur
	case !errors.Is(err, gitstore.ErrNotFound):
		return o, err
	}
	if err := g.index(protected); err != nil {
		return o, err
	}
	candidates := slices.Clone(heads)
	slices.Reverse(candidates)
	if !o.Head.IsZero() {
		candidates = append([]plumbing.Hash{o.Head}, candidates...)
	}
	for _, h := range candidates {
		if err := ctx.Err(); err != nil {
			return o, err
		}
		if merge, merged, ff := g.mergeOf(h); merge != nil {
			o.Merge, o.MergedHead, o.FastForward = merge, merged, ff
			return o, nil
		}
	}
	// A squash or rebase: a first-parent commit carrying the run's
	// Agent-Run trailer that is none of the proposal's own commits.
	for _, i := range g.byRun[p.RunID] {
		if c := g.chain[i]; !slices.Contains(candidates, c.Hash) {
			o.Merge, o.Squash = c, true
			return o, nil
		}
	}
	o.Closed = o.Head.IsZero()
	return o, nil
}

// maxBrought bounds how many commits index visits in the history each
// merge of the protected branch's scanned first parents brought in. The
// bound is per merge, so that one merge of a long history (an upstream
// project, a branch forked before the scanned first parents) cannot use it
// up and hide the merges after it.
const maxBrought = 100000

// broughtIn is where a commit reached the protected branch: the merge at
// chain[idx], through its parent.
type broughtIn struct {
	idx    int
	parent plumbing.Hash
}

// index walks the protected branch's first parents once per head, and the
// histories its merges brought in, so that finding the merge of any head
// costs a map lookup whatever the number of open proposals.
func (g *Git) index(protected plumbing.Hash) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.chainHead == protected && g.chain != nil {
		return nil
	}
	chain, err := g.repo.FirstParents(protected, MergeScanDepth)
	if err != nil {
		return err
	}
	byHash := make(map[plumbing.Hash]int, len(chain))
	for i, c := range chain {
		byHash[c.Hash] = i
	}
	// Oldest merge first: a commit two merges brought in was brought by
	// the older.
	brought := map[plumbing.Hash]broughtIn{}
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		visits := 0
		for _, parent := range c.ParentHashes[min(1, len(c.ParentHashes)):] {
			stack := []plumbing.Hash{parent}
			for len(stack) > 0 && visits < maxBrought {
				h := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if _, ok := byHash[h]; ok {
					continue
				}
				if _, ok := brought[h]; ok {
					continue
				}
				brought[h] = broughtIn{idx: i, parent: parent}
				visits++
				mc, err := g.repo.Commit(h)
				if err != nil {
					continue // a shallow or partial history: stop there
				}
				stack = append(stack, mc.ParentHashes...)
			}
		}
	}
	// The Agent-Run trailers of the first parents, newest first, read once
	// (as git interpret-trailers reads them).
	byRun := map[string][]int{}
	for i, c := range chain {
		for _, v := range gitstore.TrailerValues(c.Message, "Agent-Run") {
			id := strings.TrimSpace(v)
			if n := len(byRun[id]); n == 0 || byRun[id][n-1] != i {
				byRun[id] = append(byRun[id], i)
			}
		}
	}
	g.chain, g.chainHead, g.byHash, g.brought, g.byRun = chain, protected, byHash, brought, byRun
	return nil
}

// mergeOf finds the commit of the protected branch that brought h in: h
// itself on the first-parent chain (a fast-forward), or the merge whose
// merged history contains h. merged is the commit that merge brought in,
// which is h or a descendant of it.
func (g *Git) mergeOf(h plumbing.Hash) (merge *object.Commit, merged plumbing.Hash, ff bool) {
	if i, ok := g.byHash[h]; ok {
		return g.chain[i], h, true
	}
	if b, ok := g.brought[h]; ok {
		return g.chain[b.idx], b.parent, false
	}
	return nil, plumbing.ZeroHash, false
}

// Approvals returns the approvals of head proven by the merge commit (when
// o has one that is not a fast-forward) and by signed tags
// approve/<run-id>/<member> on head, verified against the signing keys of
// reviewers (the spec before the merge). Any other evidence counts for
// nothing; the loop removes machine identities.
func (g *Git) Approvals(ctx context.Context, p Proposal, o Observation, head plumbing.Hash, reviewers *hclspec.Spec) ([]Approval, error) {
	keys := ReviewerKeys(reviewers)
	var out []Approval
	if o.Merge != nil && !o.FastForward {
		a, err := g.mergeApproval(o.Merge, head, keys, reviewers)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	tags, err := g.tagApprovals(p.RunID, head, keys, reviewers)
	if err != nil {
		return nil, err
	}
	return append(out, tags...), nil
}

// mergeApproval returns what a merge commit proves: the member of a
// reviewer group whose signing_key signed it (SSH or OpenPGP, verified as
// git verify-commit does), counted by the member's email from
// reviewers.hcl; otherwise the committer's email, marked unsigned, which
// counts only in groups with accept_unsigned (and for the default
// one-review rule).
func (g *Git) mergeApproval(merge *object.Commit, head plumbing.Hash, keys []approval.Key, spec *hclspec.Spec) (Approval, error) {
	claimed := fmt.Sprintf("%s <%s>", merge.Committer.Name, merge.Committer.Email)
	unsigned := Approval{
		Approver: policy.Approver{Email: merge.Committer.Email, Unsigned: true},
		Record:   ledger.Approval{Method: ledger.ApprovalUnsigned, Via: "merge", Email: merge.Committer.Email, Head: head.String()},
		Subject:  merge.Hash,
	}
	_, raw, err := g.repo.RawObject(merge.Hash)
	if err != nil {
		return Approval{}, fmt.Errorf("read merge commit %s: %w", merge.Hash, err)
	}
	signer, err := approval.VerifyCommit(raw, keys)
	switch {
	case err == nil:
		return signed(signer, "merge", "", head, merge.Hash, spec), nil
	case errors.Is(err, approval.ErrUnsigned):
		unsigned.Reviewer = claimed + " (unsigned)"
	default:
		unsigned.Reviewer = fmt.Sprintf("%s (unsigned: %v)", claimed, err)
	}
	return unsigned, nil
}

func signed(k approval.Key, via, ref string, head, subject plumbing.Hash, spec *hclspec.Spec) Approval {
	email := memberEmail(spec, k)
	return Approval{
		Approver: policy.Approver{Email: email},
		Reviewer: fmt.Sprintf("%s <%s>, signed by %s", k.Member, email, k),
		Record: ledger.Approval{Method: k.Method, Via: via, Ref: ref, Member: k.Member, Email: email,
			Fingerprint: k.Fingerprint, Head: head.String()},
		Subject: subject,
	}
}

// tagApprovals returns the approvals that signed tags
// approve/<runID>/<member> give head: each must be an annotated tag object
// naming itself and pointing at head, signed by that member's signing_key
// (as git verify-tag checks it). Any other tag counts for nothing.
func (g *Git) tagApprovals(runID string, head plumbing.Hash, keys []approval.Key, spec *hclspec.Spec) ([]Approval, error) {
	prefix := "approve/" + runID + "/"
	tags, err := g.repo.Tags(prefix)
	if err != nil || len(tags) == 0 {
		return nil, err
	}
	var out []Approval
	for _, name := range slices.Sorted(maps.Keys(tags)) {
		typ, raw, err := g.repo.RawObject(tags[name])
		if err != nil || typ != plumbing.TagObject {
			continue
		}
		target, tagName := tagHeaders(raw)
		if target != head.String() || tagName != name {
			continue // an approval of another head, or a tag renamed
		}
		signer, err := approval.VerifyTag(raw, keys)
		if err != nil || signer.Member != strings.TrimPrefix(name, prefix) {
			continue
		}
		out = append(out, signed(signer, "tag", name, head, head, spec))
	}
	return out, nil
}

// ReviewerKeys returns the signing keys of every member of every reviewer
// group of spec, each naming its member and group. Keys that do not parse
// are left out: hclspec reports them where they are written.
func ReviewerKeys(spec *hclspec.Spec) []approval.Key {
	if spec == nil {
		return nil
	}
	var keys []approval.Key
	for _, g := range spec.Groups {
		for _, m := range g.Members {
			if m.SigningKey == "" {
				continue
			}
			k, err := approval.ParseKey(m.SigningKey)
			if err != nil {
				continue
			}
			k.Member, k.Group = m.Name, g.Name
			keys = append(keys, k)
		}
	}
	return keys
}

// memberEmail returns the email reviewers.hcl gives the member whose key
// k is.
func memberEmail(spec *hclspec.Spec, k approval.Key) string {
	if g := spec.Group(k.Group); g != nil {
		for _, m := range g.Members {
			if m.Name == k.Member {
				return m.Email
			}
		}
	}
	return ""
}

// tagHeaders returns the object and tag headers of a raw tag object.
func tagHeaders(raw []byte) (object, tag string) {
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "object "); ok {
			object = v
		} else if v, ok := strings.CutPrefix(line, "tag "); ok {
			tag = v
		}
	}
	return object, tag
}
