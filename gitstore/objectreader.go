package gitstore

import (
	"bytes"
	"compress/zlib"
	"container/list"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// ObjectReader reads the objects of a Repo, like Repo.RawObject, from any
// number of goroutines at once, also for an on-disk mirror (whose go-git
// storage serializes its readers). It reads the mirror's packs as they were
// when it was made, each through its pack index read in place (packIndex)
// and positioned reads of the pack file (pread: no shared file offset), and
// resolves deltas with go-git's packfile.PatchDelta and a bounded cache of
// recently read objects shared by its readers (so a chain of deltas read in
// order, as git lays out successive versions of a file, costs one patch an
// object).
// Whatever it does not find in those packs (loose objects, packs fetched
// since) or cannot read itself, it reads through Repo.RawObject, whose error
// is then the one returned. Every object is inflated in full and checked
// against its declared size and zlib checksum.
//
// An ObjectReader of an in-memory Repo reads through Repo.RawObject, which
// runs in parallel there. It must be closed, and not used after the Repo
// is closed.
type ObjectReader struct {
	repo  *Repo
	packs []*readerPack
	cache *objectCache
	pool  sync.Pool // *inflater
	// fallbacks counts the reads that went through Repo.RawObject.
	fallbacks atomic.Int64
}

// readerPack is one pack of an ObjectReader: its index and file.
type readerPack struct {
	f   *os.File
	end int64 // where the objects end: the trailing checksum
	idx *packIndex
}

const (
	// readerCacheSize bounds the bytes of objects an ObjectReader keeps for
	// deltas (git's default delta chain is at most 50 objects long).
	readerCacheSize = 8 << 20
	// maxReaderObject is the largest object an ObjectReader inflates
	// itself; larger ones go through go-git's streaming reads.
	maxReaderObject = 64 << 20
	// maxReaderDepth bounds the delta chains it follows (git's limit is
	// 4095; a longer chain, or a cycle of REF_DELTA bases, goes to go-git).
	maxReaderDepth = 10000
)

// NewObjectReader returns an ObjectReader of r's objects. For an on-disk
// mirror it maps every pack index there (see packIndex): its cost does not
// grow with the number of objects.
func (r *Repo) NewObjectReader() (*ObjectReader, error) {
	o := &ObjectReader{repo: r, cache: newObjectCache(readerCacheSize)}
	if r.disk == nil {
		return o, nil
	}
	r.rlock()
	defer r.runlock()
	hashes, err := r.disk.st.ObjectPacks()
	if err != nil {
		return nil, fmt.Errorf("read packs of %q: %w", r.disk.mirror, err)
	}
	for _, h := range hashes {
		base := filepath.Join(r.disk.mirror, "objects", "pack", "pack-"+h.String())
		p, err := openReaderPack(base)
		if err != nil {
			o.Close()
			return nil, fmt.Errorf("read pack %s of %q: %w", h, r.disk.mirror, err)
		}
		o.packs = append(o.packs, p)
	}
	return o, nil
}

func openReaderPack(base string) (*readerPack, error) {
	idx, err := openPackIndex(base + ".idx")
	if err != nil {
		return nil, err
	}
	want, err := idx.packChecksum()
	if err != nil {
		idx.close()
		return nil, err
	}
	f, err := os.Open(base + ".pack")
	if err != nil {
		idx.close()
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < 12+20 {
		err = errors.New("pack file too short")
	}
	var sum [20]byte
	if err == nil {
		_, err = f.ReadAt(sum[:], fi.Size()-20)
	}
	if err == nil && sum != want {
		err = errors.New("pack file does not match its index")
	}
	if err != nil {
		f.Close()
		idx.close()
		return nil, err
	}
	return &readerPack{f: f, end: fi.Size() - 20, idx: idx}, nil
}

// Close closes the pack files.
func (o *ObjectReader) Close() error {
	var errs []error
	for _, p := range o.packs {
		errs = append(errs, p.f.Close(), p.idx.close())
	}
	o.packs = nil
	return errors.Join(errs...)
}

// RawObject is Repo.RawObject. The caller owns the returned slice.
func (o *ObjectReader) RawObject(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	if p, off, ok := o.find(h); ok {
		in := o.inflater()
		typ, b, err := o.readOwned(in, p, off)
		o.pool.Put(in)
		if err == nil {
			return typ, b, nil
		}
		// go-git reads it, or says what is wrong with it.
	}
	o.fallbacks.Add(1)
	return o.repo.RawObject(h)
}

// Delta returns the delta instructions (git's pack delta format) with
// which the ObjectReader's packs store object h against object base: ok is
// false unless h is stored there as a delta (OFS_DELTA or REF_DELTA) whose
// base is base, as the packs' indexes name it, and its delta inflates
// whole. Applying the delta to base's content gives h's, as RawObject
// reads it. The caller owns the returned slice.
//
// The packs' indexes map each hash to the object whose content has that
// hash: a mirror's packs come from go-git's fetch, which indexes a
// received pack by hashing every object in it (packfile.Parser), as git's
// index-pack does, and from the mirror's own repacking of those. (Reading
// any object by its hash, as RawObject does, relies on the same.) So a
// caller that knows base's content can learn h's from the delta, without
// reading h in full.
func (o *ObjectReader) Delta(h, base plumbing.Hash) ([]byte, bool) {
	p, off, ok := o.find(h)
	if !ok {
		return nil, false
	}
	in := o.inflater()
	defer o.pool.Put(in)
	in.rd.reset(p.f, off, p.end)
	typ, size, err := in.header()
	if err != nil {
		return nil, false
	}
	switch typ {
	case plumbing.OFSDeltaObject:
		rel, err := in.ofsDelta()
		if err != nil {
			return nil, false
		}
		bp, boff, ok := o.find(base)
		if !ok || bp != p || boff != off-rel {
			return nil, false
		}
	case plumbing.REFDeltaObject:
		var ref plumbing.Hash
		if _, err := io.ReadFull(&in.rd, ref[:]); err != nil || ref != base {
			return nil, false
		}
		if _, _, ok := o.find(base); !ok {
			return nil, false
		}
	default:
		return nil, false
	}
	delta, err := in.inflate(size, nil)
	if err != nil {
		return nil, false
	}
	return delta, true
}

func (o *ObjectReader) inflater() *inflater {
	if in, ok := o.pool.Get().(*inflater); ok {
		return in
	}
	return &inflater{}
}

// find returns the pack holding h and its offset there.
func (o *ObjectReader) find(h plumbing.Hash) (*readerPack, int64, bool) {
	for _, p := range o.packs {
		if off, ok := p.find(h); ok {
			return p, off, true
		}
	}
	return nil, 0, false
}

// find looks h up in p's index (see packIndex.find).
func (p *readerPack) find(h plumbing.Hash) (int64, bool) {
	off, ok, err := p.idx.find(h)
	return off, ok && err == nil
}

// readOwned is readAt for RawObject, whose caller owns the content: an
// object stored whole (a commit, an entry file) is inflated for it, neither
// copied nor cached (a delta whose base it is reads it again, through
// readAt, which caches it); anything else is readAt's, copied.
func (o *ObjectReader) readOwned(in *inflater, p *readerPack, off int64) (plumbing.ObjectType, []byte, error) {
	if off >= 12 && off < p.end && !o.cache.has(p, off) {
		in.rd.reset(p.f, off, p.end)
		typ, size, err := in.header()
		if err == nil {
			switch typ {
			case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
				out, err := in.inflate(size, nil)
				return typ, out, err
			}
		}
	}
	typ, b, err := o.readAt(in, p, off, 0)
	return typ, bytes.Clone(b), err
}

// readAt returns the object at off in p; the content may be shared with
// the cache and must not be modified.
func (o *ObjectReader) readAt(in *inflater, p *readerPack, off int64, depth int) (plumbing.ObjectType, []byte, error) {
	if typ, b, ok := o.cache.get(p, off); ok {
		return typ, b, nil
	}
	if depth > maxReaderDepth {
		return plumbing.InvalidObject, nil, errors.New("delta chain too long")
	}
	if off < 12 || off >= p.end {
		return plumbing.InvalidObject, nil, fmt.Errorf("offset %d outside the pack", off)
	}
	in.rd.reset(p.f, off, p.end)
	typ, size, err := in.header()
	if err != nil {
		return plumbing.InvalidObject, nil, err
	}
	var out []byte
	switch typ {
	case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
		if out, err = in.inflate(size, nil); err != nil {
			return plumbing.InvalidObject, nil, err
		}
	case plumbing.OFSDeltaObject, plumbing.REFDeltaObject:
		var bp *readerPack
		var boff int64
		if typ == plumbing.OFSDeltaObject {
			rel, err := in.ofsDelta()
			if err != nil {
				return plumbing.InvalidObject, nil, err
			}
			bp, boff = p, off-rel
		} else {
			var ref plumbing.Hash
			if _, err := io.ReadFull(&in.rd, ref[:]); err != nil {
				return plumbing.InvalidObject, nil, err
			}
			var ok bool
			if bp, boff, ok = o.find(ref); !ok {
				return plumbing.InvalidObject, nil, fmt.Errorf("delta base %s is not in a pack", ref)
			}
		}
		// The delta is inflated into in.delta after the base is read
		// (which reuses in), then patched into a new slice.
		deltaAt := in.rd.pos()
		btyp, base, err := o.readAt(in, bp, boff, depth+1)
		if err != nil {
			return plumbing.InvalidObject, nil, err
		}
		in.rd.reset(p.f, deltaAt, p.end)
		if in.delta, err = in.inflate(size, in.delta); err != nil {
			return plumbing.InvalidObject, nil, err
		}
		if out, err = packfile.PatchDelta(base, in.delta); err != nil {
			return plumbing.InvalidObject, nil, err
		}
		typ = btyp
	default:
		return plumbing.InvalidObject, nil, fmt.Errorf("object of type %d", typ)
	}
	o.cache.put(p, off, typ, out)
	return typ, out, nil
}

// inflater is the state of one read: a positioned reader over the pack
// file, a zlib reader and a buffer for deltas, reused from read to read.
type inflater struct {
	rd    atReader
	zr    io.ReadCloser
	delta []byte
	one   [1]byte
}

// header reads an object header: its type and inflated size.
func (in *inflater) header() (plumbing.ObjectType, int64, error) {
	c, err := in.rd.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ := plumbing.ObjectType((c >> 4) & 7)
	size := int64(c & 15)
	for shift := uint(4); c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, errors.New("malformed object header")
		}
		if c, err = in.rd.ReadByte(); err != nil {
			return 0, 0, err
		}
		size |= int64(c&0x7f) << shift
	}
	return typ, size, nil
}

// ofsDelta reads an OFS_DELTA's distance back to its base.
func (in *inflater) ofsDelta() (int64, error) {
	c, err := in.rd.ReadByte()
	if err != nil {
		return 0, err
	}
	rel := int64(c & 0x7f)
	for c&0x80 != 0 {
		if rel >= 1<<55 {
			return 0, errors.New("malformed delta offset")
		}
		if c, err = in.rd.ReadByte(); err != nil {
			return 0, err
		}
		rel = ((rel + 1) << 7) | int64(c&0x7f)
	}
	if rel == 0 {
		return 0, errors.New("delta is its own base")
	}
	return rel, nil
}

// inflate inflates the zlib stream at the reader's position, which must
// hold exactly size bytes, into buf (grown as needed) and returns it.
func (in *inflater) inflate(size int64, buf []byte) ([]byte, error) {
	if size > maxReaderObject {
		return nil, fmt.Errorf("object of %d bytes", size)
	}
	var err error
	if in.zr == nil {
		in.zr, err = zlib.NewReader(&in.rd)
	} else {
		err = in.zr.(zlib.Resetter).Reset(&in.rd, nil)
	}
	if err != nil {
		return nil, err
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(in.zr, buf); err != nil {
		return nil, err
	}
	// The stream must end here: reading on checks the zlib checksum.
	if n, err := in.zr.Read(in.one[:]); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("object longer than its header says")
		}
		return nil, err
	}
	return buf, nil
}

// atReader reads a file from an offset with ReadAt through a buffer: an
// io.ByteReader, so that zlib reads through it without a bufio of its own.
// Besides the buffer it reads from, it keeps the last few it read before
// (others), so that reads that go back and forth between a few places of
// a pack (a commit's trees and its entry file, each among their own kind)
// each find their bytes already read.
type atReader struct {
	f        io.ReaderAt
	off, end int64 // the file offset of buf[len(buf)], and where to stop
	buf      []byte
	r        int
	scratch  []byte
	others   [3]atWindow // most recent first
}

// atWindow is a buffer an atReader read before.
type atWindow struct {
	f            io.ReaderAt
	off, end     int64
	buf, scratch []byte
}

func (w *atWindow) holds(f io.ReaderAt, off, end int64) bool {
	return w.f == f && w.end == end && off >= w.off-int64(len(w.buf)) && off < w.off
}

// reset positions a at off in f. When a buffer already holds off (the
// objects of a chain of commits, or of a file's versions, lie one after
// the other in a pack), it is reused without reading again.
func (a *atReader) reset(f io.ReaderAt, off, end int64) {
	if a.scratch == nil {
		a.scratch = make([]byte, 8192)
	}
	cur := atWindow{a.f, a.off, a.end, a.buf, a.scratch}
	if cur.holds(f, off, end) {
		a.r = int(off - (a.off - int64(len(a.buf))))
		return
	}
	i := 0
	for i < len(a.others) && !a.others[i].holds(f, off, end) {
		i++
	}
	if i < len(a.others) {
		w := a.others[i]
		copy(a.others[1:i+1], a.others[:i])
		a.others[0] = cur
		a.f, a.off, a.end, a.buf, a.scratch = w.f, w.off, w.end, w.buf, w.scratch
		a.r = int(off - (a.off - int64(len(a.buf))))
		return
	}
	// Start a new buffer in the scratch space of the oldest.
	scratch := a.others[len(a.others)-1].scratch
	if scratch == nil {
		scratch = make([]byte, 8192)
	}
	copy(a.others[1:], a.others[:len(a.others)-1])
	a.others[0] = cur
	a.f, a.off, a.end, a.buf, a.r, a.scratch = f, off, end, nil, 0, scratch
}

// pos is the file offset of the next byte read.
func (a *atReader) pos() int64 { return a.off - int64(len(a.buf)-a.r) }

func (a *atReader) fill() error {
	n := min(int64(len(a.scratch)), a.end-a.off)
	if n <= 0 {
		return io.ErrUnexpectedEOF
	}
	m, err := a.f.ReadAt(a.scratch[:n], a.off)
	if m == 0 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	a.buf, a.r, a.off = a.scratch[:m], 0, a.off+int64(m)
	return nil
}

func (a *atReader) ReadByte() (byte, error) {
	if a.r == len(a.buf) {
		if err := a.fill(); err != nil {
			return 0, err
		}
	}
	c := a.buf[a.r]
	a.r++
	return c, nil
}

func (a *atReader) Read(p []byte) (int, error) {
	if a.r == len(a.buf) {
		if err := a.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, a.buf[a.r:])
	a.r += n
	return n, nil
}

// objectCache is a least-recently-used cache of objects by pack and
// offset, bounded in bytes, safe for concurrent use.
type objectCache struct {
	mu    sync.Mutex
	max   int
	size  int
	lru   *list.List // of *cached, most recent first
	byKey map[cacheKeyOf]*list.Element
}

type cacheKeyOf struct {
	p   *readerPack
	off int64
}

type cached struct {
	key  cacheKeyOf
	typ  plumbing.ObjectType
	data []byte
}

func newObjectCache(max int) *objectCache {
	return &objectCache{max: max, lru: list.New(), byKey: map[cacheKeyOf]*list.Element{}}
}

func (c *objectCache) has(p *readerPack, off int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.byKey[cacheKeyOf{p, off}]
	return ok
}

func (c *objectCache) get(p *readerPack, off int64) (plumbing.ObjectType, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[cacheKeyOf{p, off}]
	if !ok {
		return 0, nil, false
	}
	c.lru.MoveToFront(e)
	v := e.Value.(*cached)
	return v.typ, v.data, true
}

func (c *objectCache) put(p *readerPack, off int64, typ plumbing.ObjectType, data []byte) {
	if len(data) > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKeyOf{p, off}
	if _, ok := c.byKey[k]; ok {
		return
	}
	c.byKey[k] = c.lru.PushFront(&cached{key: k, typ: typ, data: data})
	c.size += len(data)
	for c.size > c.max {
		last := c.lru.Back()
		v := last.Value.(*cached)
		c.lru.Remove(last)
		delete(c.byKey, v.key)
		c.size -= len(v.data)
	}
}
