package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// deltaRepo returns a bare repository whose objects git has packed with
// long delta chains (successive versions of a growing file and directory,
// as the ledger's).
func deltaRepo(t *testing.T) string {
	t.Helper()
	bare := chainRepo(t, t.TempDir(), 300)
	gittest.Git(t, bare, "repack", "-adf", "--depth=50", "--window=50", "-q")
	return bare
}

// packDeltas returns how many objects the packs under dir store as deltas.
func packDeltas(t *testing.T, dir string) int {
	t.Helper()
	idxs, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
	if len(idxs) == 0 {
		t.Fatalf("no pack in %s", dir)
	}
	deltas := 0
	for _, idx := range idxs {
		for _, line := range lines(gittest.Git(t, "", "verify-pack", "-v", idx)) {
			// "<hash> <type> <size> <size-in-pack> <offset> <depth> <base>"
			if f := strings.Fields(line); len(f) == 7 && len(f[0]) == 40 {
				deltas++
			}
		}
	}
	return deltas
}

func allObjects(t *testing.T, bare string) []plumbing.Hash {
	t.Helper()
	var hs []plumbing.Hash
	for _, line := range lines(gittest.Git(t, bare, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")) {
		hs = append(hs, plumbing.NewHash(line))
	}
	return hs
}

// An ObjectReader reads every object of an on-disk mirror itself, deltas
// included, from several goroutines at once, exactly as go-git reads it;
// objects it does not have in its packs (written after it was made, or
// missing) go through Repo.RawObject.
func TestObjectReader(t *testing.T) {
	t.Parallel()
	bare := deltaRepo(t)
	cache := t.TempDir()
	r := openCached(t, bare, cache)
	if n := packDeltas(t, filepath.Join(r.disk.mirror, "objects", "pack")); n < 100 {
		t.Fatalf("the mirror's pack has %d deltas; the test needs delta chains", n)
	}
	hashes := allObjects(t, bare)
	type object struct {
		typ plumbing.ObjectType
		b   []byte
	}
	want := map[plumbing.Hash]object{}
	for _, h := range hashes {
		typ, b, err := r.RawObject(h)
		if err != nil {
			t.Fatal(err)
		}
		want[h] = object{typ, b}
	}
	o, err := r.NewObjectReader()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if len(o.packs) == 0 {
		t.Fatal("the reader found no pack in the mirror")
	}
	// Forward, backward and strided, so that delta bases are both cached
	// and resolved down their chain.
	orders := [][]plumbing.Hash{hashes, reversed(hashes), strided(hashes, 7)}
	var wg sync.WaitGroup
	errs := make(chan error, len(orders)*2)
	for range 2 {
		for _, order := range orders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, h := range order {
					typ, b, err := o.RawObject(h)
					if err != nil {
						errs <- err
						return
					}
					if w := want[h]; typ != w.typ || !bytes.Equal(b, w.b) {
						errs <- errors.New("object " + h.String() + " differs from go-git's")
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := o.fallbacks.Load(); n != 0 {
		t.Errorf("%d packed objects were read through go-git, want 0", n)
	}
	// The caller owns what it gets: changing it changes nothing cached.
	_, b, _ := o.RawObject(hashes[0])
	for i := range b {
		b[i] = 'x'
	}
	if _, again, _ := o.RawObject(hashes[0]); !bytes.Equal(again, want[hashes[0]].b) {
		t.Error("changing a returned object changed the reader's copy")
	}

	// A tree written after the reader was made is loose: read through go-git.
	tree, err := r.WriteTree(plumbing.ZeroHash, []FileChange{{Path: "new.txt", Status: StatusAdded, Mode: filemode.Regular, Content: []byte("new\n")}})
	if err != nil {
		t.Fatal(err)
	}
	if typ, _, err := o.RawObject(tree); err != nil || typ != plumbing.TreeObject {
		t.Errorf("RawObject(new tree) = %v, %v; want a tree", typ, err)
	}
	if n := o.fallbacks.Load(); n != 1 {
		t.Errorf("fallbacks = %d after reading a loose object, want 1", n)
	}
	if _, _, err := o.RawObject(plumbing.NewHash(strings.Repeat("ab", 20))); !errors.Is(err, ErrNotFound) {
		t.Errorf("RawObject(missing) error = %v, want ErrNotFound", err)
	}
}

// A damaged object in the pack is an error, not content: zlib's checksum
// fails in the reader, and go-git, which then reads it, fails too.
func TestObjectReaderCorruptPack(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	gittest.Git(t, work, "init", "-q", "-b", "main")
	var big strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&big, "line %d of a file large enough to corrupt in the middle\n", i*7919%10007)
	}
	if err := os.WriteFile(filepath.Join(work, "big.txt"), []byte(big.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, work, "add", "big.txt")
	gittest.Git(t, work, "commit", "-q", "-m", "big")
	blob := plumbing.NewHash(gittest.Git(t, work, "rev-parse", "HEAD:big.txt"))
	bare := filepath.Join(t.TempDir(), "big.git")
	gittest.Git(t, "", "init", "-q", "--bare", "-b", "main", bare)
	gittest.Git(t, work, "push", "-q", bare, "main")
	cache := t.TempDir()
	r := openCached(t, bare, cache)
	o, err := r.NewObjectReader()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, b, err := o.RawObject(blob); err != nil || string(b) != big.String() {
		t.Fatalf("RawObject(big.txt) = %d bytes, %v; want its %d bytes", len(b), err, big.Len())
	}
	_, off, ok := o.find(blob)
	if !ok {
		t.Fatal("the reader does not find the blob")
	}
	packs, _ := filepath.Glob(filepath.Join(cache, "*", "objects", "pack", "*.pack"))
	if len(packs) != 1 {
		t.Fatalf("mirror packs: %v", packs)
	}
	if err := os.Chmod(packs[0], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Well past the object's header and zlib's, inside its deflate data.
	if _, err := f.WriteAt([]byte("XXXXXXXXXXXXXXXX"), off+200); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fresh, err := r.NewObjectReader() // nothing cached
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, b, err := fresh.RawObject(blob); err == nil {
		t.Errorf("RawObject(corrupt blob) = %d bytes, want an error", len(b))
	}
	if n := fresh.fallbacks.Load(); n != 1 {
		t.Errorf("fallbacks = %d, want 1 (the reader fails, then go-git)", n)
	}
}

func reversed(hs []plumbing.Hash) []plumbing.Hash {
	out := make([]plumbing.Hash, len(hs))
	for i, h := range hs {
		out[len(hs)-1-i] = h
	}
	return out
}

func strided(hs []plumbing.Hash, k int) []plumbing.Hash {
	var out []plumbing.Hash
	for s := range k {
		for i := s; i < len(hs); i += k {
			out = append(out, hs[i])
		}
	}
	return out
}

// Delta returns the delta a pack stores an object as, only against the
// base the pack names for it: applied to the base, it gives the object.
func TestObjectReaderDelta(t *testing.T) {
	t.Parallel()
	bare := deltaRepo(t)
	r := openCached(t, bare, t.TempDir())
	rd, err := r.NewObjectReader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	idxs, _ := filepath.Glob(filepath.Join(r.disk.mirror, "objects", "pack", "*.idx"))
	checked := 0
	var full plumbing.Hash
	for _, idx := range idxs {
		for _, line := range lines(gittest.Git(t, "", "verify-pack", "-v", idx)) {
			// "<hash> <type> <size> <size-in-pack> <offset> [<depth> <base>]"
			f := strings.Fields(line)
			if len(f) == 5 && len(f[0]) == 40 {
				full = plumbing.NewHash(f[0])
			}
			if len(f) != 7 || len(f[0]) != 40 {
				continue
			}
			h, base := plumbing.NewHash(f[0]), plumbing.NewHash(f[6])
			delta, ok := rd.Delta(h, base)
			if !ok {
				t.Fatalf("Delta(%s, %s): not a delta", h, base)
			}
			_, b, err := rd.RawObject(base)
			if err != nil {
				t.Fatal(err)
			}
			_, want, err := rd.RawObject(h)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := packfile.PatchDelta(b, delta); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the delta of %s applied to %s = %v; want the object", h, base, err)
			}
			if _, ok := rd.Delta(h, h); ok {
				t.Fatalf("Delta(%s, itself) is a delta", h)
			}
			if !full.IsZero() {
				if _, ok := rd.Delta(h, full); ok && full != base {
					t.Fatalf("Delta(%s, %s) is a delta, but the pack's base is %s", h, full, base)
				}
				if _, ok := rd.Delta(full, h); ok {
					t.Fatalf("Delta(%s, %s): %s is stored whole", full, h, full)
				}
			}
			checked++
		}
	}
	if checked < 100 {
		t.Fatalf("checked %d deltas", checked)
	}
}
