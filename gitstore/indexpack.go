package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// A fetch into an on-disk mirror hands the pack it receives to
// packIndexer, the one place besides ObjectReader that handles pack
// entries without go-git's storage. go-git's own PackWriter indexes a pack
// on one goroutine and reads it twice (every object is inflated once as it
// arrives and again, deltas patched more than once, when deltas are
// resolved): at 100k ledger entries that was 19 s of a cold pass, on one
// core. packIndexer does what git's index-pack does, out of go-git's
// pieces: go-git's packfile.Scanner reads the stream as it arrives (entry
// headers, inflating with the declared size enforced, the CRC-32 of each
// entry, the pack's trailing checksum), keeping each delta's instructions;
// then the delta trees are resolved on every core with go-git's
// packfile.PatchDelta, one tree per base object at a time. Every object's
// id is computed from its content with go-git's plumbing.NewHasher (the
// collision-detecting SHA-1 go-git uses), and the index is built by
// go-git's idxfile.Writer and Encoder from the same (id, offset, CRC-32)
// of every entry, in pack order, as go-git's PackWriter feeds them: the
// .idx is byte for byte the one go-git writes (tested on real packs).

const (
	// maxDeltaDepth is the longest delta chain accepted, git's own limit
	// (pack-objects' OE_DEPTH_BITS), as go-git's parser enforces it.
	maxDeltaDepth = 4095
	// maxKeptDeltas bounds the bytes of delta instructions kept in memory
	// between the scan and the resolution; the rest are read again from
	// the pack file.
	maxKeptDeltas = 128 << 20
	// maxCountHint caps what the pack header's object count may preallocate.
	maxCountHint = 1 << 16
	// indexerChunks is how many chunks of the stream may wait for the scan.
	indexerChunks = 64
)

// packEntry is what the index needs of one pack entry, and what resolving
// a delta needs.
type packEntry struct {
	offset int64
	size   int64 // declared inflated size
	crc    uint32
	typ    plumbing.ObjectType // the object's type (a delta's once resolved)
	delta  plumbing.ObjectType // OFSDeltaObject, REFDeltaObject, or 0
	parent int32               // an OFS_DELTA's base, by index; -1 otherwise
	ref    plumbing.Hash       // a REF_DELTA's base
	hash   plumbing.Hash
	done   bool // hash is set
}

// packIndexer receives a pack (Write), scanning it as it arrives, and on
// Close resolves its deltas, writes its index and moves both into place,
// then calls reindex so that the storage sees the new pack.
type packIndexer struct {
	dir     string
	f       *os.File // the pack, being written
	reindex func()
	n       int64
	werr    error
	closed  bool

	chunks chan []byte
	failed chan struct{} // closed when the scan fails
	scan   chan scanResult
	ferr   error // the scan's error, set before failed is closed
}

// scanResult is what the scan of a whole pack found.
type scanResult struct {
	entries  []packEntry
	deltas   [][]byte // by entry: a delta's instructions, nil when not kept
	checksum plumbing.Hash
	err      error
}

func newPackIndexer(dir string, reindex func()) (*packIndexer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write pack: %w", err)
	}
	f, err := os.CreateTemp(dir, "tmp_pack_")
	if err != nil {
		return nil, fmt.Errorf("write pack: %w", err)
	}
	w := &packIndexer{
		dir: dir, f: f, reindex: reindex,
		chunks: make(chan []byte, indexerChunks),
		failed: make(chan struct{}),
		scan:   make(chan scanResult, 1),
	}
	go w.scanStream()
	return w, nil
}

// Write appends p to the pack file and hands a copy to the scan. It fails
// once the scan has found the pack malformed.
func (w *packIndexer) Write(p []byte) (int, error) {
	if w.werr != nil {
		return 0, w.werr
	}
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := w.f.Write(p); err != nil {
		w.werr = fmt.Errorf("write pack: %w", err)
		return 0, w.werr
	}
	c := make([]byte, len(p))
	copy(c, p)
	select {
	case w.chunks <- c:
	case <-w.failed:
		w.werr = w.ferr
		return 0, w.werr
	}
	w.n += int64(len(p))
	return len(p), nil
}

// Close finishes the pack: it waits for the scan, resolves every delta,
// and moves the pack and its index into place, or removes the temporary
// file and returns why the pack cannot be used. Nothing written means no
// pack, as with go-git's PackWriter.
func (w *packIndexer) Close() (err error) {
	if w.closed {
		return nil
	}
	w.closed = true
	close(w.chunks)
	res := <-w.scan
	tmp := w.f.Name()
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	if cerr := w.f.Close(); cerr != nil && w.werr == nil {
		w.werr = fmt.Errorf("write pack: %w", cerr)
	}
	if w.n == 0 && w.werr == nil {
		return nil
	}
	if w.werr != nil && !errors.Is(w.werr, res.err) {
		return w.werr
	}
	if res.err != nil {
		return fmt.Errorf("index fetched pack: %w", res.err)
	}
	if err := resolvePack(tmp, res.entries, res.deltas); err != nil {
		return fmt.Errorf("index fetched pack: %w", err)
	}
	idx, err := encodeIndex(res.entries, res.checksum)
	if err != nil {
		return fmt.Errorf("index fetched pack: %w", err)
	}
	base := filepath.Join(w.dir, "pack-"+res.checksum.String())
	if err := installPack(tmp, base, idx); err != nil {
		return err
	}
	keep = true
	w.reindex()
	return nil
}

// installPack writes the index at base.idx and renames the pack at tmp to
// base.pack, as go-git does: index first, both read-only, and an existing
// file (the same content, by its name) left as it is.
func installPack(tmp, base string, idx []byte) error {
	if _, err := os.Lstat(base + ".idx"); errors.Is(err, os.ErrNotExist) {
		if err := writeFileAtomic(base+".idx", idx, 0o444); err != nil {
			return fmt.Errorf("write pack index: %w", err)
		}
	}
	if _, err := os.Lstat(base + ".pack"); err == nil {
		return os.Remove(tmp)
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	if err := os.Rename(tmp, base+".pack"); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file renamed into
// place.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "tmp_idx_")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), mode)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// encodeIndex builds the pack index with go-git's idxfile.Writer, fed as
// go-git's parser feeds it (every entry in pack order), and encodes it with
// go-git's idxfile.Encoder.
func encodeIndex(entries []packEntry, checksum plumbing.Hash) ([]byte, error) {
	iw := new(idxfile.Writer)
	if err := iw.OnHeader(uint32(len(entries))); err != nil {
		return nil, err
	}
	for i := range entries {
		e := &entries[i]
		if err := iw.OnInflatedObjectContent(e.hash, e.offset, e.crc, nil); err != nil {
			return nil, err
		}
	}
	if err := iw.OnFooter(checksum); err != nil {
		return nil, err
	}
	idx, err := iw.Index()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := idxfile.NewEncoder(&buf).Encode(idx); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// chunkReader reads the chunks Write hands over, in order.
type chunkReader struct {
	ch  <-chan []byte
	cur []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		c, ok := <-r.ch
		if !ok {
			return 0, io.ErrUnexpectedEOF
		}
		r.cur = c
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// scanStream scans the pack as Write hands it over and sends the result on
// w.scan. On failure it closes w.failed (so that Write stops) and drains
// the rest of the stream.
func (w *packIndexer) scanStream() {
	res := scanPack(&chunkReader{ch: w.chunks})
	if res.err != nil {
		w.ferr = res.err
		close(w.failed)
	}
	for range w.chunks {
	}
	w.scan <- res
}

// scanPack reads a whole pack from r with go-git's Scanner: every entry's
// header, offset and CRC-32, the id of every object stored whole (hashed
// as it is inflated), the instructions of deltas (up to maxKeptDeltas
// bytes of them), and the trailing checksum, checked against the pack.
func scanPack(r io.Reader) (res scanResult) {
	defer func() {
		if p := recover(); p != nil {
			res = scanResult{err: fmt.Errorf("%w: %v", packfile.ErrMalformedPackFile, p)}
		}
	}()
	sc := packfile.NewScanner(r)
	_, count, err := sc.Header()
	if err != nil {
		return scanResult{err: malformed(err)}
	}
	hint := min(int(count), maxCountHint)
	entries := make([]packEntry, 0, hint)
	deltas := make([][]byte, 0, hint)
	byOffset := make(map[int64]int32, hint)
	kept := 0
	var buf bytes.Buffer
	for i := uint32(0); i < count; i++ {
		oh, err := sc.NextObjectHeader()
		if err != nil {
			return scanResult{err: malformed(err)}
		}
		if oh.Length < 0 {
			return scanResult{err: fmt.Errorf("%w: entry at offset %d has a negative size", packfile.ErrMalformedPackFile, oh.Offset)}
		}
		e := packEntry{offset: oh.Offset, size: oh.Length, typ: oh.Type, parent: -1}
		var data []byte
		switch oh.Type {
		case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
			h := plumbing.NewHasher(oh.Type, oh.Length)
			n, crc, err := sc.NextObject(h)
			if err != nil {
				return scanResult{err: malformed(err)}
			}
			if n != oh.Length {
				return scanResult{err: fmt.Errorf("%w: entry at offset %d inflates to %d bytes, its header says %d", packfile.ErrMalformedPackFile, oh.Offset, n, oh.Length)}
			}
			e.crc, e.hash, e.done = crc, h.Sum(), true
		case plumbing.OFSDeltaObject, plumbing.REFDeltaObject:
			e.delta, e.typ = oh.Type, plumbing.InvalidObject
			if oh.Type == plumbing.OFSDeltaObject {
				p, ok := byOffset[oh.OffsetReference]
				if !ok {
					return scanResult{err: fmt.Errorf("%w: delta at offset %d names a base at offset %d where no entry starts", packfile.ErrMalformedPackFile, oh.Offset, oh.OffsetReference)}
				}
				e.parent = p
			} else {
				e.ref = oh.Reference
			}
			buf.Reset()
			n, crc, err := sc.NextObject(&buf)
			if err != nil {
				return scanResult{err: malformed(err)}
			}
			if n != oh.Length {
				return scanResult{err: fmt.Errorf("%w: delta at offset %d inflates to %d bytes, its header says %d", packfile.ErrMalformedPackFile, oh.Offset, n, oh.Length)}
			}
			e.crc = crc
			if kept+buf.Len() <= maxKeptDeltas {
				data = bytes.Clone(buf.Bytes())
				if data == nil {
					data = []byte{}
				}
				kept += len(data)
			}
		default:
			return scanResult{err: fmt.Errorf("%w: entry at offset %d has invalid type %d", packfile.ErrMalformedPackFile, oh.Offset, oh.Type)}
		}
		byOffset[oh.Offset] = int32(len(entries))
		entries = append(entries, e)
		deltas = append(deltas, data)
	}
	checksum, err := sc.Checksum()
	if err != nil {
		return scanResult{err: malformed(err)}
	}
	return scanResult{entries: entries, deltas: deltas, checksum: checksum}
}

// malformed makes an error of go-git's Scanner (a truncated stream, a
// size that lies, a bad header) one wrapping packfile.ErrMalformedPackFile.
func malformed(err error) error {
	if errors.Is(err, packfile.ErrMalformedPackFile) {
		return err
	}
	return fmt.Errorf("%w: %w", packfile.ErrMalformedPackFile, err)
}

// resolver resolves the deltas of a scanned pack.
type resolver struct {
	entries []packEntry
	deltas  [][]byte
	// kids lists the OFS_DELTA children of each entry: those of entry i are
	// kids[first[i]:first[i+1]].
	first []int32
	kids  []int32
	// refs are the REF_DELTA entries waiting for a base, by the base's id;
	// the first object resolved with that id claims them.
	refs map[plumbing.Hash]*refGroup

	failed  atomic.Bool
	errOnce sync.Once
	err     error
}

type refGroup struct {
	kids    []int32
	claimed atomic.Bool
}

// resolvePack computes the id and type of every delta of the pack at path,
// whose entries were scanned (deltas holds the kept instructions), on
// runtime.GOMAXPROCS workers, each resolving the delta trees of whole base
// objects. It fails when a delta cannot be applied, names a base that is
// not in the pack (a thin pack) or one that never resolves (a cycle of
// REF_DELTAs), or chains more than maxDeltaDepth deltas.
func resolvePack(path string, entries []packEntry, deltas [][]byte) error {
	r := &resolver{entries: entries, deltas: deltas, refs: map[plumbing.Hash]*refGroup{}}
	r.first = make([]int32, len(entries)+1)
	for i := range entries {
		e := &entries[i]
		switch {
		case e.parent >= 0:
			r.first[e.parent+1]++
		case e.delta == plumbing.REFDeltaObject:
			g := r.refs[e.ref]
			if g == nil {
				g = &refGroup{}
				r.refs[e.ref] = g
			}
			g.kids = append(g.kids, int32(i))
		}
	}
	for i := 1; i < len(r.first); i++ {
		r.first[i] += r.first[i-1]
	}
	r.kids = make([]int32, r.first[len(entries)])
	fill := append([]int32(nil), r.first[:len(entries)]...)
	for i := range entries {
		if p := entries[i].parent; p >= 0 {
			r.kids[fill[p]] = int32(i)
			fill[p]++
		}
	}
	var roots []int32
	for i := range entries {
		e := &entries[i]
		if e.delta == 0 && (r.first[i+1] > r.first[i] || r.refs[e.hash] != nil) {
			roots = append(roots, int32(i))
		}
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), len(roots)))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					r.fail(fmt.Errorf("%w: %v", packfile.ErrMalformedPackFile, p))
				}
			}()
			rd, err := newEntryReader(path)
			if err != nil {
				r.fail(err)
				return
			}
			defer rd.close()
			for !r.failed.Load() {
				k := next.Add(1) - 1
				if k >= int64(len(roots)) {
					return
				}
				i := roots[k]
				content, err := rd.read(entries[i].offset, entries[i].size)
				if err != nil {
					r.fail(err)
					return
				}
				r.resolveChildren(rd, i, content, 0)
			}
		}()
	}
	wg.Wait()
	if r.err != nil {
		return r.err
	}
	for i := range entries {
		if e := &entries[i]; !e.done {
			if e.delta == plumbing.REFDeltaObject {
				return fmt.Errorf("%w: delta at offset %d: base %s is not in the pack", packfile.ErrReferenceDeltaNotFound, e.offset, e.ref)
			}
			return fmt.Errorf("%w: delta at offset %d does not resolve", packfile.ErrMalformedPackFile, e.offset)
		}
	}
	return nil
}

func (r *resolver) fail(err error) {
	r.errOnce.Do(func() {
		r.err = err
		r.failed.Store(true)
	})
}

// resolveChildren resolves, depth first, the deltas whose base is entry i
// with the given content at chain depth depth: its OFS_DELTA children and,
// when i is the first object resolved with its id, the REF_DELTAs naming it.
func (r *resolver) resolveChildren(rd *entryReader, i int32, content []byte, depth int) {
	kids := r.kids[r.first[i]:r.first[i+1]]
	var refKids []int32
	if g := r.refs[r.entries[i].hash]; g != nil && g.claimed.CompareAndSwap(false, true) {
		refKids = g.kids
	}
	for _, list := range [2][]int32{kids, refKids} {
		for _, c := range list {
			if r.failed.Load() {
				return
			}
			if depth+1 > maxDeltaDepth {
				r.fail(fmt.Errorf("%w: delta chain depth exceeds %d at offset %d", packfile.ErrMalformedPackFile, maxDeltaDepth, r.entries[c].offset))
				return
			}
			target, err := r.apply(rd, c, content)
			if err != nil {
				r.fail(err)
				return
			}
			e := &r.entries[c]
			e.typ = r.entries[i].typ
			e.hash = plumbing.ComputeHash(e.typ, target)
			e.done = true
			r.resolveChildren(rd, c, target, depth+1)
		}
	}
}

// apply patches base with the instructions of delta entry c.
func (r *resolver) apply(rd *entryReader, c int32, base []byte) ([]byte, error) {
	delta := r.deltas[c]
	if delta == nil {
		var err error
		if delta, err = rd.read(r.entries[c].offset, r.entries[c].size); err != nil {
			return nil, err
		}
	} else {
		r.deltas[c] = nil // each delta is applied once
	}
	target, err := packfile.PatchDelta(base, delta)
	if err != nil {
		return nil, fmt.Errorf("%w: delta at offset %d: %w", packfile.ErrMalformedPackFile, r.entries[c].offset, err)
	}
	return target, nil
}

// entryReader reads the inflated content of pack entries at known offsets
// (an object's content, or a delta's instructions) with go-git's Scanner
// over its own file descriptor.
type entryReader struct {
	f  *os.File
	sc *packfile.Scanner
}

func newEntryReader(path string) (*entryReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &entryReader{f: f, sc: packfile.NewScanner(f)}, nil
}

func (rd *entryReader) read(off, size int64) ([]byte, error) {
	if _, err := rd.sc.SeekObjectHeader(off); err != nil {
		return nil, fmt.Errorf("read pack entry at offset %d: %w", off, malformed(err))
	}
	var buf bytes.Buffer
	buf.Grow(int(min(size, 1<<30)))
	n, _, err := rd.sc.NextObject(&buf)
	if err != nil {
		return nil, fmt.Errorf("read pack entry at offset %d: %w", off, malformed(err))
	}
	if n != size {
		return nil, fmt.Errorf("%w: entry at offset %d inflates to %d bytes, its header says %d", packfile.ErrMalformedPackFile, off, n, size)
	}
	return buf.Bytes(), nil
}

func (rd *entryReader) close() { rd.f.Close() }
