package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// mirrorStorage is the go-git storage of an on-disk mirror: go-git's
// filesystem storage, except that objects in packs are found through
// packIndex and read as ObjectReader reads them, and new packs are written
// without go-git's index of every object.
//
// go-git's filesystem storage decodes every pack index into memory on the
// first read of a packed object, and builds a map of every object's offset
// on the first object it decodes from a pack: O(objects) once per process,
// ~100 ms for a mirror of 500k objects, paid by every `reconciler once`
// whatever it then reads. Through mirrorStorage a read costs what the object
// costs. go-git's own index is loaded only for what mirrorStorage leaves to
// it: the iteration over every object, and reads after a pack index turned
// out to be unreadable.
//
// Loose objects and everything else (references, configuration) are read by
// the embedded go-git storage. The pack list is read when the storage is made
// and again after every pack this process writes (PackfileWriter) or
// deletes (refresh); the mirror's lock keeps other processes from changing
// it meanwhile. Callers serialize their use, as for go-git's storage.
type mirrorStorage struct {
	*filesystem.Storage
	packs  *ObjectReader // of the current packs; its repo is nil
	mirror string
}

// newMirrorStorage wraps st, the go-git storage of the bare repository at
// mirror, and opens and checks the index of every pack there. A pack
// without a readable index is an error naming the pack.
func newMirrorStorage(mirror string, st *filesystem.Storage) (*mirrorStorage, error) {
	s := &mirrorStorage{
		Storage: st,
		mirror:  mirror,
	}
	if err := s.refresh(); err != nil {
		return nil, err
	}
	return s, nil
}

// refresh reopens the current packs. On error the previous packs stay.
func (s *mirrorStorage) refresh() error {
	hashes, err := s.Storage.ObjectPacks()
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	o := &ObjectReader{cache: newObjectCache(readerCacheSize)}
	for _, h := range hashes {
		p, err := openReaderPack(filepath.Join(s.mirror, "objects", "pack", "pack-"+h.String()))
		if err == nil {
			var sum [20]byte
			if sum, err = p.idx.packChecksum(); err == nil && plumbing.Hash(sum) != h {
				err = fmt.Errorf("index is of pack %x", sum)
			}
			if err != nil {
				p.f.Close()
				p.idx.close()
			}
		}
		if err != nil {
			o.Close()
			return fmt.Errorf("pack %s: %w", h, err)
		}
		o.packs = append(o.packs, p)
	}
	if s.packs != nil {
		s.packs.Close()
	}
	s.packs = o
	// go-git's index, if a fallback loaded it, no longer lists every pack.
	s.Storage.Reindex()
	return nil
}

// Reindex reopens the packs (after some were deleted), keeping the old
// ones, still readable, if that fails.
func (s *mirrorStorage) Reindex() {
	s.refresh()
}

// Close closes the packs and the go-git storage.
func (s *mirrorStorage) Close() error {
	var err error
	if s.packs != nil {
		err = s.packs.Close()
		s.packs = nil
	}
	return errors.Join(err, s.Storage.Close())
}

// packed reads h from the packs: found is false when no pack index lists
// it. The content is shared with the reader's cache and must not be
// modified.
func (s *mirrorStorage) packed(h plumbing.Hash) (typ plumbing.ObjectType, b []byte, found bool, err error) {
	p, off, found, err := s.find(h)
	if err != nil || !found {
		return plumbing.InvalidObject, nil, found, err
	}
	in := s.packs.inflater()
	typ, b, err = s.packs.readAt(in, p, off, 0)
	s.packs.pool.Put(in)
	if err != nil {
		return plumbing.InvalidObject, nil, true, fmt.Errorf("read object %s from pack %s: %w", h, filepath.Base(p.f.Name()), err)
	}
	return typ, b, true, nil
}

// loose reports whether h is a loose object.
func (s *mirrorStorage) loose(h plumbing.Hash) (bool, error) {
	_, err := s.Storage.LooseObjectTime(h)
	if errors.Is(err, plumbing.ErrObjectNotFound) || errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// EncodedObject is go-git's, through the packs first.
func (s *mirrorStorage) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	typ, b, found, err := s.packed(h)
	if err != nil {
		return nil, err
	}
	if !found {
		if ok, err := s.loose(h); err != nil || !ok {
			if err == nil {
				err = plumbing.ErrObjectNotFound
			}
			return nil, err
		}
		return s.Storage.EncodedObject(t, h)
	}
	if t != plumbing.AnyObject && t != typ {
		return nil, plumbing.ErrObjectNotFound
	}
	return &packedObject{h: h, t: typ, b: b}, nil
}

// DeltaObject is EncodedObject: objects are read whole, and a pack writer
// computes its own deltas. (go-git's returns an object's stored delta for
// reuse, which needs its index of every object.)
func (s *mirrorStorage) DeltaObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	return s.EncodedObject(t, h)
}

// HasEncodedObject is go-git's, through the packs first.
func (s *mirrorStorage) HasEncodedObject(h plumbing.Hash) error {
	_, _, found, err := s.find(h)
	if err != nil {
		return err
	}
	if found {
		return nil
	}
	if ok, err := s.loose(h); err != nil || ok {
		return err
	}
	return plumbing.ErrObjectNotFound
}

// find returns the pack listing h and h's offset there.
func (s *mirrorStorage) find(h plumbing.Hash) (*readerPack, int64, bool, error) {
	if s.packs == nil {
		return nil, 0, false, errors.New("storage is closed")
	}
	for _, p := range s.packs.packs {
		off, ok, err := p.idx.find(h)
		if err != nil || ok {
			return p, off, ok, err
		}
	}
	return nil, 0, false, nil
}

// EncodedObjectSize is go-git's, through the packs first.
func (s *mirrorStorage) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	_, b, found, err := s.packed(h)
	if err != nil {
		return 0, err
	}
	if found {
		return int64(len(b)), nil
	}
	if ok, err := s.loose(h); err != nil || !ok {
		if err == nil {
			err = plumbing.ErrObjectNotFound
		}
		return 0, err
	}
	return s.Storage.EncodedObjectSize(h)
}

// PackfileWriter writes a pack (a fetch's) into the mirror through a
// packIndexer, which indexes it on every core, and reopens the packs once
// it is in place. Unlike go-git's, it does not load go-git's index of
// every object first.
func (s *mirrorStorage) PackfileWriter() (io.WriteCloser, error) {
	pw := &packWriter{}
	w, err := newPackIndexer(filepath.Join(s.mirror, "objects", "pack"), func() {
		s.Storage.Reindex()
		pw.refreshErr = s.refresh()
	})
	if err != nil {
		return nil, err
	}
	pw.WriteCloser = w
	return pw, nil
}

// packWriter is a pack being written; Close fails when the pack was
// written but could not be opened.
type packWriter struct {
	io.WriteCloser
	refreshErr error
}

func (w *packWriter) Close() error {
	if err := w.WriteCloser.Close(); err != nil {
		return err
	}
	if w.refreshErr != nil {
		return fmt.Errorf("open the new pack: %w", w.refreshErr)
	}
	return nil
}

// packedObject is an object read from a pack: its hash is the one its pack
// index lists (go-git's MemoryObject would hash the content again).
type packedObject struct {
	h plumbing.Hash
	t plumbing.ObjectType
	b []byte // shared with the reader's cache: never modified
}

func (o *packedObject) Hash() plumbing.Hash           { return o.h }
func (o *packedObject) Type() plumbing.ObjectType     { return o.t }
func (o *packedObject) SetType(t plumbing.ObjectType) { o.t = t }
func (o *packedObject) Size() int64                   { return int64(len(o.b)) }
func (o *packedObject) SetSize(int64)                 {}

func (o *packedObject) Reader() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(o.b)), nil
}

func (o *packedObject) Writer() (io.WriteCloser, error) {
	return nil, errors.New("a packed object is read-only")
}

var _ plumbing.EncodedObject = (*packedObject)(nil)
