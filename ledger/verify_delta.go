package ledger

import (
	"bytes"

	"github.com/go-git/go-git/v5/plumbing"
)

// deltaSource is an objectSource that can say how its packs store an
// object as a delta against another (gitstore.ObjectReader.Delta).
type deltaSource interface {
	Delta(h, base plumbing.Hash) ([]byte, bool)
	// hasDeltas is false when Delta would say false for every object.
	hasDeltas() bool
}

// deltaYields reports whether applying delta (git's pack delta format) to
// base gives exactly want, reading the delta as packfile.PatchDelta reads
// it, only more strictly: whatever it does not take for sure is false.
// When base is want's prefix in the same memory (base = want[:len(base)]),
// a copy from base to the same offset needs no comparison, so checking
// that a delta appends to its base costs what the delta's length costs,
// not the object's.
func deltaYields(delta, base, want []byte) bool {
	src, delta, ok := deltaSize(delta)
	if !ok || src != len(base) || len(base) == 0 {
		return false
	}
	tgt, delta, ok := deltaSize(delta)
	if !ok || tgt != len(want) {
		return false
	}
	same := len(base) <= len(want) && &base[0] == &want[0]
	return walkDelta(delta, base, len(want), func(t int, b []byte, sameOffset bool) bool {
		return same && sameOffset || bytes.Equal(b, want[t:t+len(b)])
	})
}

// walkDelta reads the commands of delta (after its two sizes) that build
// a target of tgt bytes from base, and calls put with the bytes each
// writes at offset t of the target (sameOffset when they are copied from
// the same offset of base). It is false when a command is malformed or
// out of range, when put is, or when the commands do not build exactly
// tgt bytes.
func walkDelta(delta, base []byte, tgt int, put func(t int, b []byte, sameOffset bool) bool) bool {
	t := 0
	for t < tgt {
		if len(delta) == 0 {
			return false
		}
		cmd := delta[0]
		delta = delta[1:]
		switch {
		case cmd&0x80 != 0: // copy from base
			off, sz, rest, ok := deltaCopy(cmd, delta)
			if !ok {
				return false
			}
			delta = rest
			if sz > tgt-t || off > len(base)-sz || !put(t, base[off:off+sz], off == t) {
				return false
			}
			t += sz
		case cmd != 0: // insert cmd bytes
			sz := int(cmd)
			if sz > tgt-t || sz > len(delta) || !put(t, delta[:sz], false) {
				return false
			}
			delta = delta[sz:]
			t += sz
		default:
			return false
		}
	}
	return len(delta) == 0
}

// deltaCopy reads the operands of a copy command cmd (its high bit set):
// the offset in the base and the size, whose bytes follow cmd as its low
// seven bits say; a size of zero means 0x10000.
func deltaCopy(cmd byte, delta []byte) (off, sz int, rest []byte, ok bool) {
	for i := range 7 {
		if cmd&(1<<i) == 0 {
			continue
		}
		if len(delta) == 0 {
			return 0, 0, nil, false
		}
		if i < 4 {
			off |= int(delta[0]) << (8 * i)
		} else {
			sz |= int(delta[0]) << (8 * (i - 4))
		}
		delta = delta[1:]
	}
	if sz == 0 {
		sz = 0x10000
	}
	return off, sz, delta, true
}

// deltaSize reads one of a delta's two leading sizes (little-endian base
// 128), of at most 32 bits.
func deltaSize(b []byte) (int, []byte, bool) {
	n := 0
	for i := 0; i < 5 && i < len(b); i++ {
		n |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return n, b[i+1:], n < 1<<32
		}
	}
	return 0, nil, false
}

// deltaTail reports whether applying delta to base gives base with its
// last len(tail) bytes replaced, and writes those into tail: what a delta
// that changes only the hash of a tree's last entry gives. It reads the
// delta as deltaYields does.
func deltaTail(delta, base, tail []byte) bool {
	keep := len(base) - len(tail)
	src, delta, ok := deltaSize(delta)
	if !ok || src != len(base) || keep <= 0 {
		return false
	}
	tgt, delta, ok := deltaSize(delta)
	if !ok || tgt != len(base) {
		return false
	}
	// put checks the bytes b the delta writes at t of the target: before
	// keep they must be base's (same is set when b is base[t:], known
	// equal), after it they are the tail's.
	put := func(t int, b []byte, same bool) bool {
		if t < keep {
			n := min(len(b), keep-t)
			if !same && !bytes.Equal(b[:n], base[t:t+n]) {
				return false
			}
			t, b = t+n, b[n:]
		}
		if len(b) > 0 {
			copy(tail[t-keep:], b)
		}
		return true
	}
	return walkDelta(delta, base, len(base), put)
}
