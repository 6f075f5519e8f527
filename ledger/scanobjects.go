package ledger

import (
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
)

// readerAfter is how many commits a scan reads through the Repo before it
// switches to a gitstore.ObjectReader: reading every pack index costs
// O(objects) once, which a scan of a few new entries should not pay, while
// a long scan (Verify, a first read) saves go-git's per-object costs on
// every object after. A variable for the tests, which set it to 0 so that
// every scan of an on-disk mirror goes through the reader.
var readerAfter = 256

// scanObjects is what a scan reads objects through: the Repo, then, once
// upgraded, an ObjectReader of it. Only the walker's goroutine uses it.
type scanObjects struct {
	repo *gitstore.Repo
	rd   *gitstore.ObjectReader
}

func (s *scanObjects) RawObject(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	if s.rd != nil {
		return s.rd.RawObject(h)
	}
	return s.repo.RawObject(h)
}

// upgrade switches to an ObjectReader; when one cannot be made (a pack
// index it cannot read), the scan goes on reading through the Repo, which
// reports what is wrong with the objects it needs.
func (s *scanObjects) upgrade() {
	if s.rd != nil {
		return
	}
	if rd, err := s.repo.NewObjectReader(); err == nil {
		s.rd = rd
	}
}

func (s *scanObjects) close() {
	if s.rd != nil {
		s.rd.Close()
	}
}

// hasDeltas reports whether the scan reads through an ObjectReader yet,
// so that Delta can say anything.
func (s *scanObjects) hasDeltas() bool { return s.rd != nil }

// Delta is gitstore.ObjectReader.Delta once the scan reads through one;
// false before.
func (s *scanObjects) Delta(h, base plumbing.Hash) ([]byte, bool) {
	if s.rd == nil {
		return nil, false
	}
	return s.rd.Delta(h, base)
}
