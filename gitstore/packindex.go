package gitstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
)

// A pack index (.idx, version 2) is, after an 8-byte header, a fan-out
// table of 256 cumulative counts by first byte, the sorted object names
// (20 bytes each), their CRC32s, their 4-byte offsets (the top bit set
// pointing into a table of 8-byte offsets for packs over 2 GiB), then the
// pack's checksum and the index's own.
const (
	idxHeaderLen = 8
	idxFanoutLen = 256 * 4
	idxTrailer   = 2 * 20
)

var idxMagic = []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}

// packIndex is a pack index read in place, as git reads one: the file is
// mapped into memory, checked for shape when opened (header, version, a
// fan-out table that never decreases, a size that fits its object count),
// and each lookup is a binary search that touches only the pages it reads.
// Opening one costs the same for ten objects as for ten million, where
// go-git's idxfile decodes the whole file into memory first (and builds an
// offset->hash map of every object on first use).
//
// The index's trailing checksum is not hashed on open (git does not hash it
// either; `git verify-pack` does): the mirror's packs were checked when
// they were fetched, the mirror is locked while in use, and checkPack
// compares the index's copy of the pack checksum with the pack's trailer.
type packIndex struct {
	name   string // for errors
	data   []byte // the whole file, mapped read-only (or, in tests, in memory)
	unmap  bool   // data is a mapping to release on close
	n      int
	names  []byte // n * 20
	off32  []byte // n * 4
	off64  []byte // 8 each
	fanout [256]uint32
}

// errIndexFault is the error of a lookup whose read of the mapped index
// faulted: the file was truncated under the mapping.
var errIndexFault = errors.New("pack index changed on disk while in use (truncated?)")

// openPackIndex maps and checks the pack index at path. The error names
// the file and says what is wrong with it.
func openPackIndex(path string) (*packIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < idxHeaderLen+idxFanoutLen+idxTrailer {
		return nil, fmt.Errorf("pack index %s: too short (%d bytes)", filepath.Base(path), size)
	}
	if size != int64(int(size)) {
		return nil, fmt.Errorf("pack index %s: too large (%d bytes)", filepath.Base(path), size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("pack index %s: map: %w", filepath.Base(path), err)
	}
	x, err := parsePackIndex(filepath.Base(path), data)
	if err != nil {
		syscall.Munmap(data)
		return nil, err
	}
	x.unmap = true
	return x, nil
}

// parsePackIndex checks the shape of the index data (see packIndex) and
// returns it; data is read in place, not copied.
func parsePackIndex(name string, data []byte) (x *packIndex, err error) {
	// A fault here is a file truncated between Stat and Mmap.
	defer func() {
		if p := recover(); p != nil {
			x, err = nil, fmt.Errorf("pack index %s: %w", name, errIndexFault)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if len(data) < idxHeaderLen+idxFanoutLen+idxTrailer {
		return nil, fmt.Errorf("pack index %s: too short (%d bytes)", name, len(data))
	}
	if !bytes.Equal(data[:4], idxMagic[:4]) {
		return nil, fmt.Errorf("pack index %s: not a version 2 pack index (bad header)", name)
	}
	if !bytes.Equal(data[4:8], idxMagic[4:]) {
		return nil, fmt.Errorf("pack index %s: unsupported version %d (want 2)", name, binary.BigEndian.Uint32(data[4:8]))
	}
	x = &packIndex{name: name, data: data}
	prev := uint32(0)
	for i := range x.fanout {
		v := binary.BigEndian.Uint32(data[idxHeaderLen+4*i:])
		if v < prev {
			return nil, fmt.Errorf("pack index %s: corrupt fan-out table (entry %d decreases)", name, i)
		}
		x.fanout[i], prev = v, v
	}
	n := int64(prev)
	minSize := idxHeaderLen + idxFanoutLen + n*(20+4+4) + idxTrailer
	extra := int64(len(data)) - minSize
	// Each 8-byte offset is used by at least one object, so there are at
	// most n of them.
	if extra < 0 || extra%8 != 0 || extra/8 > n {
		return nil, fmt.Errorf("pack index %s: %d bytes do not fit its %d objects (truncated or corrupt)", name, len(data), n)
	}
	x.n = int(n)
	at := int64(idxHeaderLen + idxFanoutLen)
	x.names = data[at : at+20*n]
	at += 20*n + 4*n // names, then the CRC32s (unused here)
	x.off32 = data[at : at+4*n]
	at += 4 * n
	x.off64 = data[at : at+extra]
	return x, nil
}

// close releases the mapping; the index must not be used after.
func (x *packIndex) close() error {
	if !x.unmap || x.data == nil {
		return nil
	}
	data := x.data
	x.data, x.names, x.off32, x.off64 = nil, nil, nil, nil
	return syscall.Munmap(data)
}

// packChecksum is the checksum of the pack the index describes.
func (x *packIndex) packChecksum() (sum [20]byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pack index %s: %w", x.name, errIndexFault)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	copy(sum[:], x.data[len(x.data)-idxTrailer:])
	return sum, nil
}

// count is the number of objects in the pack.
func (x *packIndex) count() int { return x.n }

// find returns the offset in the pack of object h, and whether the index
// lists it. An offset the index lists beyond 2^62 is an error, as is a read
// of the mapping that faults.
func (x *packIndex) find(h plumbing.Hash) (off int64, ok bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			off, ok, err = 0, false, fmt.Errorf("pack index %s: look up %s: %w", x.name, h, errIndexFault)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	lo := 0
	if h[0] > 0 {
		lo = int(x.fanout[h[0]-1])
	}
	hi := int(x.fanout[h[0]])
	// Binary search on the names' first 8 bytes, then on the rest.
	key := binary.BigEndian.Uint64(h[:8])
	names := x.names
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		name := names[m*20 : m*20+20]
		if v := binary.BigEndian.Uint64(name); v < key || v == key && bytes.Compare(name[8:], h[8:]) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo >= int(x.fanout[h[0]]) || !bytes.Equal(names[lo*20:lo*20+20], h[:]) {
		return 0, false, nil
	}
	ofs := binary.BigEndian.Uint32(x.off32[4*lo:])
	if ofs&(1<<31) == 0 {
		return int64(ofs), true, nil
	}
	at := 8 * uint64(ofs&^(1<<31))
	if at+8 > uint64(len(x.off64)) {
		return 0, false, fmt.Errorf("pack index %s: object %s: 8-byte offset %d outside the table", x.name, h, at/8)
	}
	o := binary.BigEndian.Uint64(x.off64[at:])
	if o >= 1<<62 {
		return 0, false, fmt.Errorf("pack index %s: object %s: offset %d out of range", x.name, h, o)
	}
	return int64(o), true, nil
}

// hash returns the i-th object name, 0 <= i < count.
func (x *packIndex) hash(i int) (h plumbing.Hash, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pack index %s: %w", x.name, errIndexFault)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	copy(h[:], x.names[i*20:])
	return h, nil
}
