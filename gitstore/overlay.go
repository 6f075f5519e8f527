package gitstore

import (
	"fmt"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// overlay is an on-disk mirror's storage with the objects this process
// creates (WriteTree, CreateCommit) held in memory until the next flush,
// which writes them all as one pack. go-git's filesystem storage writes each
// object as a loose file (a temporary file, a write and a rename, ~0.3 ms of
// system calls each): an append of one ledger entry creates five, a
// proposal a few more, and they were most of an append's time. Writes and
// reads see the memory first, then the mirror; fetches write their packs
// straight to the mirror (PackfileWriter, from the embedded storage).
//
// Nothing refers to an object in memory but the pending set and the refs
// Push moves after flushing: a crash loses only objects that were either
// pushed (the next fetch brings them back) or referenced by nothing.
// maxHeldObjects bounds the objects held in memory between pushes.
var maxHeldObjects = 10000

type overlay struct {
	*filesystem.Storage

	mu  sync.RWMutex
	mem map[plumbing.Hash]plumbing.EncodedObject
}

func newOverlay(st *filesystem.Storage) *overlay {
	return &overlay{Storage: st, mem: make(map[plumbing.Hash]plumbing.EncodedObject)}
}

// NewEncodedObject returns an in-memory object, whatever the storage.
func (o *overlay) NewEncodedObject() plumbing.EncodedObject { return &plumbing.MemoryObject{} }

func (o *overlay) SetEncodedObject(obj plumbing.EncodedObject) (plumbing.Hash, error) {
	if obj.Type() == plumbing.OFSDeltaObject || obj.Type() == plumbing.REFDeltaObject {
		return plumbing.ZeroHash, plumbing.ErrInvalidType
	}
	h := obj.Hash()
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.mem[h]; !ok {
		o.mem[h] = obj
	}
	return h, nil
}

func (o *overlay) lookup(h plumbing.Hash) (plumbing.EncodedObject, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	obj, ok := o.mem[h]
	return obj, ok
}

func (o *overlay) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if obj, ok := o.lookup(h); ok {
		if t != plumbing.AnyObject && obj.Type() != t {
			return nil, plumbing.ErrObjectNotFound
		}
		return obj, nil
	}
	return o.Storage.EncodedObject(t, h)
}

// DeltaObject is EncodedObject for objects in memory (they are never
// deltas); the packfile encoder asks for it to reuse the mirror's deltas.
func (o *overlay) DeltaObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if obj, ok := o.lookup(h); ok {
		if t != plumbing.AnyObject && obj.Type() != t {
			return nil, plumbing.ErrObjectNotFound
		}
		return obj, nil
	}
	return o.Storage.DeltaObject(t, h)
}

func (o *overlay) HasEncodedObject(h plumbing.Hash) error {
	if _, ok := o.lookup(h); ok {
		return nil
	}
	return o.Storage.HasEncodedObject(h)
}

func (o *overlay) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if obj, ok := o.lookup(h); ok {
		return obj.Size(), nil
	}
	return o.Storage.EncodedObjectSize(h)
}

func (o *overlay) IterEncodedObjects(t plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	disk, err := o.Storage.IterEncodedObjects(t)
	if err != nil {
		return nil, err
	}
	o.mu.RLock()
	var mem []plumbing.EncodedObject
	for _, obj := range o.mem {
		if t == plumbing.AnyObject || obj.Type() == t {
			mem = append(mem, obj)
		}
	}
	o.mu.RUnlock()
	if len(mem) == 0 {
		return disk, nil
	}
	return storer.NewMultiEncodedObjectIter([]storer.EncodedObjectIter{storer.NewEncodedObjectSliceIter(mem), disk}), nil
}

// held is how many objects are in memory.
func (o *overlay) held() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return len(o.mem)
}

// flush writes the objects in memory into one new pack of the mirror (and
// its index) and drops them from memory. Objects the mirror already has
// are left out. On error the objects stay in memory.
func (o *overlay) flush() (err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.mem) == 0 {
		return nil
	}
	hashes := make([]plumbing.Hash, 0, len(o.mem))
	for h := range o.mem {
		if o.Storage.HasEncodedObject(h) == nil {
			continue
		}
		hashes = append(hashes, h)
	}
	if len(hashes) > 0 {
		w, err := o.Storage.PackfileWriter()
		if err != nil {
			return fmt.Errorf("write pack: %w", err)
		}
		// No delta search: the objects are few and the mirror's packs are
		// merged (with deltas) by maintain.
		if _, err := packfile.NewEncoder(w, memSource{o}, false).Encode(hashes, 0); err != nil {
			w.Close()
			return fmt.Errorf("write pack of %d objects: %w", len(hashes), err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("write pack of %d objects: %w", len(hashes), err)
		}
	}
	clear(o.mem)
	return nil
}

// memSource serves the encoder the objects in memory while flush holds
// o.mu.
type memSource struct{ o *overlay }

func (m memSource) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	obj, ok := m.o.mem[h]
	if !ok || (t != plumbing.AnyObject && obj.Type() != t) {
		return nil, plumbing.ErrObjectNotFound
	}
	return obj, nil
}

func (m memSource) NewEncodedObject() plumbing.EncodedObject { return &plumbing.MemoryObject{} }
func (m memSource) SetEncodedObject(plumbing.EncodedObject) (plumbing.Hash, error) {
	return plumbing.ZeroHash, fmt.Errorf("read-only")
}
func (m memSource) IterEncodedObjects(plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	return nil, fmt.Errorf("not supported")
}
func (m memSource) HasEncodedObject(h plumbing.Hash) error {
	if _, ok := m.o.mem[h]; ok {
		return nil
	}
	return plumbing.ErrObjectNotFound
}
func (m memSource) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if obj, ok := m.o.mem[h]; ok {
		return obj.Size(), nil
	}
	return 0, plumbing.ErrObjectNotFound
}
func (m memSource) AddAlternate(string) error { return fmt.Errorf("not supported") }
