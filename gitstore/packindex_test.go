package gitstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// idxEntry is an object of a pack index: its name and offset.
type idxEntry struct {
	hash plumbing.Hash
	off  int64
}

// gitIndex returns the objects of the index at path as git's show-index
// lists them, sorted by name.
func gitIndex(t *testing.T, path string) []idxEntry {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command("git", "show-index")
	cmd.Env = gittest.Env(gittest.Name, gittest.Email)
	cmd.Stdin = in
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("git show-index < %s: %v", path, err)
	}
	var out []idxEntry
	for _, line := range lines(strings.TrimSpace(string(b))) {
		// "<offset> <hash> (<crc32>)"
		f := strings.Fields(line)
		if len(f) < 2 || len(f[1]) != 40 {
			t.Fatalf("git show-index: %q", line)
		}
		off, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("git show-index: %q: %v", line, err)
		}
		out = append(out, idxEntry{plumbing.NewHash(f[1]), off})
	}
	slices.SortFunc(out, func(a, b idxEntry) int { return bytes.Compare(a.hash[:], b.hash[:]) })
	return out
}

// goGitIndex returns the objects of the index at path as go-git's idxfile
// decodes them, sorted by name, and the pack checksum it records.
func goGitIndex(t *testing.T, path string) ([]idxEntry, [20]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		t.Fatal(err)
	}
	entries, err := idx.Entries()
	if err != nil {
		t.Fatal(err)
	}
	defer entries.Close()
	var out []idxEntry
	for {
		e, err := entries.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, idxEntry{e.Hash, int64(e.Offset)})
	}
	slices.SortFunc(out, func(a, b idxEntry) int { return bytes.Compare(a.hash[:], b.hash[:]) })
	return out, idx.PackfileChecksum
}

// checkIndex checks that x lists exactly want, in order, each at its
// offset, and finds nothing else.
func checkIndex(t *testing.T, x *packIndex, want []idxEntry) {
	t.Helper()
	if x.count() != len(want) {
		t.Fatalf("count = %d, want %d", x.count(), len(want))
	}
	listed := map[plumbing.Hash]bool{}
	for _, e := range want {
		listed[e.hash] = true
	}
	for i, e := range want {
		off, ok, err := x.find(e.hash)
		if err != nil || !ok || off != e.off {
			t.Fatalf("find(%s) = %d, %v, %v; want offset %d", e.hash, off, ok, err, e.off)
		}
		if h, err := x.hash(i); err != nil || h != e.hash {
			t.Fatalf("hash(%d) = %s, %v; want %s", i, h, err, e.hash)
		}
		// Neighbours of a listed name are not listed.
		for _, d := range []int{0, 7, 8, 19} {
			near := e.hash
			near[d] ^= 1
			if listed[near] {
				continue
			}
			if _, ok, err := x.find(near); ok || err != nil {
				t.Fatalf("find(%s), a name the index does not list = found %v, %v", near, ok, err)
			}
		}
	}
	for _, h := range []plumbing.Hash{plumbing.ZeroHash, plumbing.NewHash(strings.Repeat("ff", 20))} {
		if _, ok, err := x.find(h); ok || err != nil {
			t.Errorf("find(%s) = %v, %v; want not found", h, ok, err)
		}
	}
}

// packIndexFiles returns the .idx files of a bare repository's packs.
func packIndexFiles(t *testing.T, bare string) []string {
	t.Helper()
	idxs, err := filepath.Glob(filepath.Join(bare, "objects", "pack", "*.idx"))
	if err != nil || len(idxs) == 0 {
		t.Fatalf("no pack index in %s (%v)", bare, err)
	}
	return idxs
}

// A pack index read in place lists every object where git's verify-pack
// and go-git's decoder of the whole file do, for indexes written by git
// (also with every offset in the 8-byte table, as packs over 2 GiB have
// them) and by go-git.
func TestPackIndex(t *testing.T) {
	t.Parallel()
	bare := deltaRepo(t)
	check := func(t *testing.T, path string, goGit bool) *packIndex {
		t.Helper()
		x, err := openPackIndex(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.close() })
		want := gitIndex(t, path)
		if len(want) < 900 {
			t.Fatalf("%d objects: the test needs an index of several pages", len(want))
		}
		checkIndex(t, x, want)
		if goGit {
			entries, sum := goGitIndex(t, path)
			if !slices.Equal(entries, want) {
				t.Fatalf("go-git and git disagree on %s", path)
			}
			if got, err := x.packChecksum(); err != nil || got != sum {
				t.Fatalf("packChecksum = %x, %v; go-git reads %x", got, err, sum)
			}
		}
		return x
	}
	t.Run("git", func(t *testing.T) {
		for _, path := range packIndexFiles(t, bare) {
			check(t, path, true)
		}
	})
	t.Run("git, 64-bit offsets", func(t *testing.T) {
		pack := strings.TrimSuffix(packIndexFiles(t, bare)[0], ".idx") + ".pack"
		path := filepath.Join(t.TempDir(), "pack-big.idx")
		// Every offset above 0 goes to the 8-byte table. (go-git's
		// decoder rejects such an index, so only git is asked.)
		gittest.Git(t, "", "index-pack", "--index-version=2,0", "-o", path, pack)
		x := check(t, path, false)
		if len(x.off64) != 8*x.count() {
			t.Fatalf("%d bytes of 8-byte offsets for %d objects: git did not write them", len(x.off64), x.count())
		}
	})
	t.Run("go-git", func(t *testing.T) {
		r := openCached(t, bare, t.TempDir())
		for _, path := range packIndexFiles(t, r.disk.mirror) {
			check(t, path, true)
		}
	})
}

// A corrupt or truncated index is an error naming the file and saying what
// is wrong, at open or at the lookup that meets it; never a panic.
func TestPackIndexCorrupt(t *testing.T) {
	t.Parallel()
	bare := chainRepo(t, t.TempDir(), 200)
	gittest.Git(t, bare, "repack", "-adq")
	path := packIndexFiles(t, bare)[0]
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int(binary.BigEndian.Uint32(good[8+255*4:]))
	off32 := 8 + 1024 + 24*n // the 4-byte offsets
	// A name the index lists, at position 0.
	var first plumbing.Hash
	copy(first[:], good[8+1024:])
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		data []byte
		open string // the error of openPackIndex, or "" when it opens
		find string // then the error of find(first)
	}{
		{"empty", nil, "too short", ""},
		{"header only", good[:8], "too short", ""},
		{"no trailer", good[:8+1024], "too short", ""},
		{"truncated in the names", good[:8+1024+20*n/2], "do not fit", ""},
		{"one byte short", good[:len(good)-1], "do not fit", ""},
		{"one byte long", append(bytes.Clone(good), 0), "do not fit", ""},
		{"garbage", []byte(strings.Repeat("garbage ", 200)), "bad header", ""},
		{"version 1", edit(func(b []byte) []byte { b[7] = 1; return b }), "unsupported version 1", ""},
		{"version 3", edit(func(b []byte) []byte { b[7] = 3; return b }), "unsupported version 3", ""},
		{"fan-out decreases", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[8+4*10:], 0xffffff); return b }), "fan-out", ""},
		{"fan-out all 0xff", edit(func(b []byte) []byte {
			for i := 8; i < 8+1024; i++ {
				b[i] = 0xff
			}
			return b
		}), "do not fit", ""},
		{"more 8-byte offsets than objects", edit(func(b []byte) []byte {
			return append(b[:len(b)-40], append(make([]byte, 8*(n+1)), b[len(b)-40:]...)...)
		}), "do not fit", ""},
		{"8-byte offset outside the table", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[off32:], 1<<31|5)
			return b
		}), "", "outside the table"},
		{"8-byte offset out of range", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[off32:], 1<<31)
			b = append(b[:len(b)-40], append(bytes.Repeat([]byte{0xff}, 8), b[len(b)-40:]...)...)
			return b
		}), "", "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "pack-x.idx")
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			x, err := openPackIndex(p)
			if tt.open != "" {
				if err == nil || !strings.Contains(err.Error(), tt.open) || !strings.Contains(err.Error(), "pack-x.idx") {
					t.Fatalf("openPackIndex = %v, want an error naming pack-x.idx with %q", err, tt.open)
				}
				return
			}
			if err != nil {
				t.Fatalf("openPackIndex: %v", err)
			}
			defer x.close()
			_, ok, err := x.find(first)
			if err == nil || ok || !strings.Contains(err.Error(), tt.find) {
				t.Fatalf("find = %v, %v; want an error with %q", ok, err, tt.find)
			}
		})
	}

	t.Run("truncated while mapped", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "pack-y.idx")
		if err := os.WriteFile(p, good, 0o644); err != nil {
			t.Fatal(err)
		}
		x, err := openPackIndex(p)
		if err != nil {
			t.Fatal(err)
		}
		defer x.close()
		if _, ok, err := x.find(first); !ok || err != nil {
			t.Fatalf("find before truncation = %v, %v", ok, err)
		}
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := x.find(first); !errors.Is(err, errIndexFault) || !strings.Contains(err.Error(), "pack-y.idx") {
			t.Fatalf("find after truncation: %v, want errIndexFault naming pack-y.idx", err)
		}
		if _, err := x.packChecksum(); !errors.Is(err, errIndexFault) {
			t.Fatalf("packChecksum after truncation: %v, want errIndexFault", err)
		}
	})
}

// FuzzPackIndex: whatever the bytes, parsing and lookups return or fail,
// and never panic or read outside the data.
func FuzzPackIndex(f *testing.F) {
	var empty [8 + 1024 + 40]byte
	copy(empty[:], idxMagic)
	f.Add(empty[:], []byte{0})
	one := append(bytes.Clone(empty[:8]), make([]byte, 1024)...)
	for i := 0xab; i < 256; i++ {
		binary.BigEndian.PutUint32(one[8+4*i:], 1)
	}
	one = append(one, bytes.Repeat([]byte{0xab}, 20)...)
	one = append(one, 0, 0, 0, 0, 0x80, 0, 0, 0) // CRC32, offset into the 8-byte table
	one = append(one, make([]byte, 8+40)...)
	f.Add(one, bytes.Repeat([]byte{0xab}, 20))
	f.Fuzz(func(t *testing.T, data, key []byte) {
		x, err := parsePackIndex("fuzz.idx", data)
		if err != nil {
			return
		}
		var h plumbing.Hash
		copy(h[:], key)
		off, ok, err := x.find(h)
		if ok && (err != nil || off < 0) {
			t.Fatalf("find = %d, %v, %v", off, ok, err)
		}
		for i := range min(x.count(), 4) {
			if _, err := x.hash(i); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// The mirror's storage reads every object (deltas, loose objects, objects
// of packs fetched after it was opened) as go-git's own storage of the same
// directory does, and says an absent object is absent.
func TestMirrorStorage(t *testing.T) {
	t.Parallel()
	bare := deltaRepo(t)
	r := openCached(t, bare, t.TempDir())
	// A loose object, and a second pack from a fetch.
	loose, err := r.WriteTree(plumbing.ZeroHash, []FileChange{{Path: "loose.txt", Status: StatusAdded, Content: []byte("only loose\n")}})
	if err != nil {
		t.Fatal(err)
	}
	pushFiles(t, bare, "main", "main", map[string]string{"new.txt": "fetched later\n"}, "more")
	if err := r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.disk.st.packs.packs); n != 2 {
		t.Fatalf("the storage reads %d packs after the fetch, want 2", n)
	}
	ref := filesystem.NewStorage(osfs.New(r.disk.mirror), cache.NewObjectLRUDefault())
	defer ref.Close()
	hashes := append(allObjects(t, bare), loose)
	for _, h := range hashes {
		want, err := ref.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			t.Fatalf("go-git: %s: %v", h, err)
		}
		wantB := readAll(t, want)
		got, err := r.disk.st.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			t.Fatalf("EncodedObject(%s): %v", h, err)
		}
		if got.Hash() != h || got.Type() != want.Type() || got.Size() != want.Size() || !bytes.Equal(readAll(t, got), wantB) {
			t.Fatalf("EncodedObject(%s) = %s %s %d bytes, go-git reads %s %d bytes", h, got.Hash(), got.Type(), got.Size(), want.Type(), want.Size())
		}
		if err := r.disk.st.HasEncodedObject(h); err != nil {
			t.Fatalf("HasEncodedObject(%s): %v", h, err)
		}
		if size, err := r.disk.st.EncodedObjectSize(h); err != nil || size != want.Size() {
			t.Fatalf("EncodedObjectSize(%s) = %d, %v; want %d", h, size, err, want.Size())
		}
		wrong := plumbing.BlobObject
		if want.Type() == plumbing.BlobObject {
			wrong = plumbing.TreeObject
		}
		if _, err := r.disk.st.EncodedObject(wrong, h); !errors.Is(err, plumbing.ErrObjectNotFound) {
			t.Fatalf("EncodedObject(%s, %s) = %v, want ErrObjectNotFound", wrong, h, err)
		}
	}
	absent := plumbing.NewHash(strings.Repeat("ab", 20))
	if _, err := r.disk.st.EncodedObject(plumbing.AnyObject, absent); !errors.Is(err, plumbing.ErrObjectNotFound) {
		t.Errorf("EncodedObject(absent) = %v, want ErrObjectNotFound", err)
	}
	if err := r.disk.st.HasEncodedObject(absent); !errors.Is(err, plumbing.ErrObjectNotFound) {
		t.Errorf("HasEncodedObject(absent) = %v, want ErrObjectNotFound", err)
	}
	if _, err := r.disk.st.EncodedObjectSize(absent); !errors.Is(err, plumbing.ErrObjectNotFound) {
		t.Errorf("EncodedObjectSize(absent) = %v, want ErrObjectNotFound", err)
	}
}

// An index truncated while the mirror is open makes reads fail with an
// error, not a crash.
func TestMirrorStorageIndexTruncated(t *testing.T) {
	t.Parallel()
	bare := deltaRepo(t)
	r := openCached(t, bare, t.TempDir())
	main, err := r.Branch("main")
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range packIndexFiles(t, r.disk.mirror) {
		os.Chmod(idx, 0o644)
		if err := os.Truncate(idx, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Commit(main); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Commit after the index was truncated: %v, want an error", err)
	}
}

func readAll(t *testing.T, o plumbing.EncodedObject) []byte {
	t.Helper()
	rd, err := o.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Opening a warm mirror and reading a file of its head allocates about the
// same for a mirror of 24,000 objects as for one of 6,000 (in both the file
// is alone in its directory): nothing is loaded per object, where go-git's
// storage decodes its index and maps every object's offset (more than 28
// bytes an object) before the first read. Allocation, unlike time, is
// deterministic enough to assert.
func TestOpenReadDoesNotGrowWithObjects(t *testing.T) {
	dir := t.TempDir()
	allocated := func(n int) uint64 {
		bare := chainRepo(t, dir, n)
		cacheDir := filepath.Join(dir, "cache")
		openCached(t, bare, cacheDir).Close()
		read := func() {
			r, err := Open(t.Context(), bare, Options{CacheDir: cacheDir, NoFetch: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			head, err := r.Branch("main")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.ReadFile(head, ledgerPath(n)); err != nil {
				t.Fatal(err)
			}
		}
		read()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		read()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	// Not parallel: TotalAlloc counts every goroutine's allocations.
	small, large := allocated(2000), allocated(8000)
	t.Logf("allocated %d bytes for 6000 objects, %d for 24000", small, large)
	if large > small+128<<10 {
		t.Errorf("opening and reading a mirror of 24000 objects allocated %d bytes, one of 6000 %d: something is loaded per object", large, small)
	}
}
