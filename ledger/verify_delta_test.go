package ledger

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/format/packfile"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// dirTree is a raw ledger/<dir> tree of n entries, as the ledger writes it.
func dirTree(n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "100644 %012d.json\x00", i)
		for j := range 20 {
			b = append(b, byte(i*31+j*7))
		}
	}
	return b
}

// appendDelta is the delta git writes for a tree that gains entries: copy
// the base, insert the rest.
func appendDelta(base, want []byte) []byte {
	d := deltaHeader(len(base), len(want))
	d = append(d, 0x80|0x10|0x20|0x40, byte(len(base)), byte(len(base)>>8), byte(len(base)>>16))
	for rest := want[len(base):]; len(rest) > 0; {
		n := min(len(rest), 0x7f)
		d = append(d, byte(n))
		d = append(d, rest[:n]...)
		rest = rest[n:]
	}
	return d
}

func deltaHeader(sizes ...int) []byte {
	var d []byte
	for _, n := range sizes {
		for n >= 0x80 {
			d = append(d, byte(n)|0x80)
			n >>= 7
		}
		d = append(d, byte(n))
	}
	return d
}

// deltaYields takes the deltas that turn the parent's directory tree into
// the commit's, as git and go-git write them, and nothing that gives any
// other tree: whatever it takes, packfile.PatchDelta applies to exactly
// the expected tree.
func TestDeltaYields(t *testing.T) {
	full := dirTree(40)
	base, want := full[:45*30], full[:45*31]
	// A tree that looks like the insertion but changes an old entry's hash.
	edited := bytes.Clone(want)
	edited[45*3+30]++
	// One that adds the entry with another file's hash.
	otherHash := bytes.Clone(want)
	otherHash[len(otherHash)-1]++
	// One that repeats an old entry instead of adding the new one.
	repeated := append(bytes.Clone(base), base[:45]...)
	cases := []struct {
		name  string
		delta []byte
		want  bool
	}{
		{"append", appendDelta(base, want), true},
		{"go-git's delta", packfile.DiffDelta(base, want), true},
		{"copy in two parts", append(append(deltaHeader(len(base), len(want)), 0x80|0x10|0x20, 100, 0, 0x80|0x01|0x10|0x20, 100, byte((len(base)-100)&0xff), byte((len(base)-100)>>8)), append([]byte{45}, want[len(base):]...)...), true},
		{"edits an old entry", packfile.DiffDelta(base, edited), false},
		{"adds another file", appendDelta(base, otherHash), false},
		{"repeats an entry", appendDelta(base, repeated), false},
		{"copies from the wrong offset", append(append(deltaHeader(len(base), len(want)), 0x80|0x01|0x10|0x20, 45, byte(len(base)-45), byte((len(base)-45)>>8), 0x80|0x10, 45), append([]byte{45}, want[len(base):]...)...), false},
		{"wrong base size", appendDelta(base[:len(base)-1], want), false},
		{"wrong target size", append(deltaHeader(len(base), len(want)+1), appendDelta(base, want)[len(deltaHeader(len(base), len(want))):]...), false},
		{"trailing instruction", append(appendDelta(base, want), 1, 'x'), false},
		{"truncated", appendDelta(base, want)[:20], false},
		{"command 0", append(appendDelta(base, want)[:len(deltaHeader(len(base), len(want)))], 0), false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := deltaYields(c.delta, base, want)
			if got != c.want {
				t.Fatalf("deltaYields = %v, want %v", got, c.want)
			}
			// The same with the base in other memory (compared, not assumed).
			if other := deltaYields(c.delta, bytes.Clone(base), want); other != got {
				t.Fatalf("deltaYields with a copy of the base = %v, with the base in want's memory %v", other, got)
			}
			patched, err := packfile.PatchDelta(base, c.delta)
			if c.want && (err != nil || !bytes.Equal(patched, want)) {
				t.Fatalf("PatchDelta = %q, %v; want the expected tree", patched, err)
			}
			if !c.want && err == nil && bytes.Equal(patched, want) {
				t.Fatal("the case gives the expected tree")
			}
		})
	}
}

// Whatever the delta, deltaYields takes it only if packfile.PatchDelta
// applies it to exactly the expected tree.
func FuzzDeltaYields(f *testing.F) {
	full := dirTree(8)
	base, want := full[:45*5], full[:45*6]
	f.Add(appendDelta(base, want), false)
	f.Add(packfile.DiffDelta(base, want), true)
	f.Add(packfile.DiffDelta(base, full[:45*7]), false)
	f.Fuzz(func(t *testing.T, delta []byte, copied bool) {
		b := base
		if copied {
			b = bytes.Clone(base)
		}
		if !deltaYields(delta, b, want) {
			return
		}
		patched, err := packfile.PatchDelta(base, delta)
		if err != nil || !bytes.Equal(patched, want) {
			t.Fatalf("deltaYields takes %x, which PatchDelta applies as %q, %v", delta, patched, err)
		}
	})
}

// fastImported replaces f's repository by a copy written by git
// fast-import, which stores each version of a tree as a delta of the one
// before (as ledgergen's ledgers are stored), so that the on-disk scan's
// fast path checks each ledger/<dir> tree by its delta (byDelta).
func fastImported(t *testing.T, f *verifyFixture) {
	t.Helper()
	stream := gittest.Git(t, "", "--git-dir", f.bare, "fast-export", "--all", "--reencode=no")
	copied := gittest.NewBare(t, "")
	cmd := exec.Command("git", "--git-dir", copied, "fast-import", "--quiet", "--force")
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	cmd.Stdin = strings.NewReader(stream)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git fast-import: %v: %s", err, out)
	}
	f.bare = copied
}

// On a mirror whose pack stores each directory tree as a delta of its
// parent's, the walker checks the commits by those deltas; the ledger
// verifies as before, and so does a tampered one: a commit whose delta
// changes an old entry as it adds its own is found and named as without
// the deltas (and as in memory, which VerifyMemoryAndDisk compares).
func TestVerifyByDelta(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		f := newVerifyFixture(t, 30)
		fastImported(t, f)
		before := deltaTaken.Load()
		rep, err := f.verify(t)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entries != 31 {
			t.Fatalf("verified %d entries, want 31", rep.Entries)
		}
		if got := deltaTaken.Load() - before; got < 20 {
			t.Errorf("byDelta checked %d commits, want most of the 31", got)
		}
	})
	// Entry 25's commit changes entry 2's file, entry 26's changes it
	// back: the tip's trees are right, and entry 25's directory tree is
	// stored as a delta of entry 24's that changes an old entry as it adds
	// entry 25.
	t.Run("old entry modified and restored", func(t *testing.T) {
		f := newVerifyFixture(t, 29) // entries 1..30
		rewriteOldEntry(t, f, 24, 30, func(seq int) bool { return seq == 25 })
		fastImported(t, f)
		before := deltaTaken.Load()
		_, err := f.verify(t)
		wantVerifyError(t, err, 25, "modifies ledger/000000000/000000000002.json")
		if got := deltaTaken.Load() - before; got < 10 {
			t.Errorf("byDelta checked %d commits before entry 25, want most of them", got)
		}
	})
}

// deltaTail takes the deltas that change only the hash of a ledger tree's
// last entry, and gives that hash; whatever it takes, packfile.PatchDelta
// applies to the base with that tail.
func TestDeltaTail(t *testing.T) {
	base := dirTree(12)
	keep := len(base) - 20
	next := bytes.Clone(base)
	for i := keep; i < len(next); i++ {
		next[i] ^= 0x5a
	}
	edited := bytes.Clone(next)
	edited[10]++
	cases := []struct {
		name  string
		delta []byte
		want  bool
	}{
		{"go-git's delta", packfile.DiffDelta(base, next), true},
		{"copy and insert", append(append(deltaHeader(len(base), len(base)), 0x80|0x10|0x20, byte(keep), byte(keep>>8), 20), next[keep:]...), true},
		{"changes an earlier byte", packfile.DiffDelta(base, edited), false},
		{"longer", packfile.DiffDelta(base, append(bytes.Clone(next), 'x')), false},
		{"wrong base size", packfile.DiffDelta(base[:len(base)-1], next), false},
		{"trailing instruction", append(packfile.DiffDelta(base, next), 1, 'x'), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tail := make([]byte, 20)
			if got := deltaTail(c.delta, base, tail); got != c.want {
				t.Fatalf("deltaTail = %v, want %v", got, c.want)
			}
			if c.want && !bytes.Equal(tail, next[keep:]) {
				t.Fatalf("tail = %x, want %x", tail, next[keep:])
			}
		})
	}
}

func FuzzDeltaTail(f *testing.F) {
	base := dirTree(4)
	next := bytes.Clone(base)
	next[len(next)-1]++
	f.Add(packfile.DiffDelta(base, next))
	f.Add(packfile.DiffDelta(base, base))
	f.Fuzz(func(t *testing.T, delta []byte) {
		tail := make([]byte, 20)
		if !deltaTail(delta, base, tail) {
			return
		}
		want := append(bytes.Clone(base[:len(base)-20]), tail...)
		patched, err := packfile.PatchDelta(base, delta)
		if err != nil || !bytes.Equal(patched, want) {
			t.Fatalf("deltaTail takes %x with tail %x, which PatchDelta applies as %q, %v", delta, tail, patched, err)
		}
	})
}
