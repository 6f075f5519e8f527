package gitstore

import (
	"context"
	"fmt"
	"sort"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Diff returns what changed from commit from to commit to, as Changes
// reports a work tree: files (regular, executable, links) added, modified
// or deleted, with their new content and line counts, sorted by path.
// Subtrees with the same hash are skipped whole, so the cost grows with
// the change, not the repository. Submodule entries are ignored.
func (r *Repo) Diff(ctx context.Context, from, to plumbing.Hash) ([]FileChange, error) {
	r.rlock()
	defer r.runlock()
	ft, err := r.commitTree(from)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	tt, err := r.commitTree(to)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	changes, err := object.DiffTreeWithOptions(ctx, ft, tt, &object.DiffTreeOptions{})
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", from, to, classify(err))
	}
	var out []FileChange
	for _, ch := range changes {
		before, err := r.diffSide(ch.From)
		if err != nil {
			return nil, fmt.Errorf("diff %s..%s: %w", from, to, err)
		}
		after, err := r.diffSide(ch.To)
		if err != nil {
			return nil, fmt.Errorf("diff %s..%s: %w", from, to, err)
		}
		switch {
		case after.ok && before.ok:
			if after.mode == before.mode && after.hash == before.hash {
				continue
			}
			c := FileChange{Path: ch.To.Name, Status: StatusModified, Mode: after.mode, Content: after.content}
			c.Added, c.Removed, c.Binary = lineCounts(before.content, after.content)
			out = append(out, c)
		case after.ok:
			c := FileChange{Path: ch.To.Name, Status: StatusAdded, Mode: after.mode, Content: after.content}
			c.Added, c.Removed, c.Binary = lineCounts(nil, after.content)
			out = append(out, c)
		case before.ok:
			c := FileChange{Path: ch.From.Name, Status: StatusDeleted}
			c.Added, c.Removed, c.Binary = lineCounts(before.content, nil)
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

type diffFile struct {
	ok      bool
	mode    filemode.FileMode
	hash    plumbing.Hash
	content []byte
}

// diffSide reads one side of a tree change: a file or link, or !ok for
// nothing (or a submodule).
func (r *Repo) diffSide(e object.ChangeEntry) (diffFile, error) {
	m := e.TreeEntry.Mode
	if e.Name == "" || !isFileMode(m) {
		return diffFile{}, nil
	}
	if isRegular(m) && m != filemode.Executable {
		m = filemode.Regular
	}
	b, err := r.readBlob(e.TreeEntry.Hash)
	if err != nil {
		return diffFile{}, fmt.Errorf("%q: %w", e.Name, err)
	}
	return diffFile{ok: true, mode: m, hash: e.TreeEntry.Hash, content: b}, nil
}

// MergeBase returns the best common ancestor of a and b, as git merge-base
// does (the first one when there are several); the error wraps ErrNotFound
// when either commit is missing or they share no history.
func (r *Repo) MergeBase(a, b plumbing.Hash) (plumbing.Hash, error) {
	r.rlock()
	defer r.runlock()
	ca, err := r.commit(a)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("merge base: %w", err)
	}
	cb, err := r.commit(b)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("merge base: %w", err)
	}
	bases, err := ca.MergeBase(cb)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("merge base of %s and %s: %w", a, b, classify(err))
	}
	if len(bases) == 0 {
		return plumbing.ZeroHash, fmt.Errorf("merge base of %s and %s: %w: no common history", a, b, ErrNotFound)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i].Hash.String() < bases[j].Hash.String() })
	return bases[0].Hash, nil
}
