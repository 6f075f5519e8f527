package gitstore

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

// historyRepo makes a bare repository of commits commits with the git CLI
// (fast-import): each changes one line of a 400-line file and adds a file,
// so that packs of it hold long delta chains of the big file and its trees.
func historyRepo(t testing.TB, commits int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "history.git")
	gittest.Git(t, "", "init", "--quiet", "--bare", dir)
	var in bytes.Buffer
	lines := make([]string, 400)
	for i := range lines {
		lines[i] = fmt.Sprintf("line %d of a file that changes one line a commit", i)
	}
	for c := 0; c < commits; c++ {
		lines[(c*7)%len(lines)] = fmt.Sprintf("line changed by commit %d", c)
		big := strings.Join(lines, "\n") + "\n"
		small := fmt.Sprintf("file %d\n", c)
		msg := fmt.Sprintf("commit %d\n", c)
		fmt.Fprintf(&in, "commit refs/heads/main\ncommitter A <a@example.com> %d +0000\ndata %d\n%s", 1700000000+c, len(msg), msg)
		fmt.Fprintf(&in, "M 100644 inline big.txt\ndata %d\n%s\n", len(big), big)
		fmt.Fprintf(&in, "M 100644 inline dir/f%04d.txt\ndata %d\n%s\n", c, len(small), small)
	}
	cmd := exec.Command("git", "--git-dir", dir, "fast-import", "--quiet")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fast-import: %v\n%s", err, out)
	}
	return dir
}

// packOf returns a pack of every object of the bare repository at dir,
// written by git pack-objects with the given extra arguments (without
// --delta-base-offset its deltas are REF_DELTAs).
func packOf(t testing.TB, dir string, args ...string) []byte {
	t.Helper()
	list := exec.Command("git", "--git-dir", dir, "rev-list", "--objects", "--all")
	objs, err := list.Output()
	if err != nil {
		t.Fatalf("rev-list: %v", err)
	}
	cmd := exec.Command("git", append([]string{"--git-dir", dir, "pack-objects", "--quiet", "--stdout"}, args...)...)
	cmd.Stdin = bytes.NewReader(objs)
	pack, err := cmd.Output()
	if err != nil {
		t.Fatalf("pack-objects %v: %v", args, err)
	}
	return pack
}

// goGitIndex indexes pack with go-git's own PackWriter in a new repository
// and returns the index it wrote.
func goGitPackIndex(t testing.TB, pack []byte) (idx []byte, err error) {
	t.Helper()
	dir := t.TempDir()
	st := filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault())
	w, err := st.PackfileWriter()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(w, bytes.NewReader(pack))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return onlyFile(t, filepath.Join(dir, "objects", "pack"), ".idx"), nil
}

// ourIndex writes pack through a packIndexer in chunks of random sizes (as
// a fetch's side-band hands it over) and returns the pack directory.
func ourIndex(t testing.TB, pack []byte, seed uint64) (dir string, reindexed bool, err error) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "pack")
	w, err := newPackIndexer(dir, func() { reindexed = true })
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for rest := pack; len(rest) > 0 && err == nil; {
		n := min(len(rest), 1+rng.IntN(70000))
		_, err = w.Write(rest[:n])
		rest = rest[n:]
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return dir, reindexed, err
}

// onlyFile returns the content of the one file in dir ending in ext.
func onlyFile(t testing.TB, dir, ext string) []byte {
	t.Helper()
	var found []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ext) {
			found = append(found, e.Name())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: want one *%s file, found %v", dir, ext, found)
	}
	b, err := os.ReadFile(filepath.Join(dir, found[0]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPackIndexerMatchesGoGit indexes real packs written by git (long
// delta chains, OFS and REF deltas, no deltas at all) and checks that the
// index is byte for byte the one go-git's PackWriter writes, and the one
// git index-pack writes, and the pack is stored unchanged.
func TestPackIndexerMatchesGoGit(t *testing.T) {
	repo := historyRepo(t, 300)
	cases := []struct {
		name string
		args []string
	}{
		{"ofs-delta", []string{"--delta-base-offset"}},
		{"ofs-delta-deep", []string{"--delta-base-offset", "--depth=4095", "--window=300", "--no-reuse-delta"}},
		{"ref-delta", nil},
		{"ref-delta-deep", []string{"--depth=4095", "--window=300", "--no-reuse-delta"}},
		{"no-deltas", []string{"--window=0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pack := packOf(t, repo, tc.args...)
			want, err := goGitPackIndex(t, pack)
			if err != nil {
				t.Fatalf("go-git: %v", err)
			}
			for seed := uint64(1); seed <= 3; seed++ {
				dir, reindexed, err := ourIndex(t, pack, seed)
				if err != nil {
					t.Fatalf("packIndexer: %v", err)
				}
				if !reindexed {
					t.Error("the storage was not told to reindex")
				}
				if got := onlyFile(t, dir, ".idx"); !bytes.Equal(got, want) {
					t.Fatalf("index differs from go-git's (%d bytes, want %d)", len(got), len(want))
				}
				if got := onlyFile(t, dir, ".pack"); !bytes.Equal(got, pack) {
					t.Fatal("stored pack differs from the one received")
				}
				if leftovers, _ := filepath.Glob(filepath.Join(dir, "tmp_*")); len(leftovers) > 0 {
					t.Errorf("temporary files left: %v", leftovers)
				}
			}
			// git's own index of the same pack is the same file too.
			gitDir := t.TempDir()
			cmd := exec.Command("git", "index-pack", "-o", filepath.Join(gitDir, "x.idx"), "--stdin", filepath.Join(gitDir, "x.pack"))
			cmd.Stdin = bytes.NewReader(pack)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git index-pack: %v\n%s", err, out)
			}
			if got, _ := os.ReadFile(filepath.Join(gitDir, "x.idx")); !bytes.Equal(got, want) {
				t.Fatal("go-git's index differs from git's")
			}
			if strings.HasSuffix(tc.name, "-deep") {
				if depth := maxChain(t, filepath.Join(gitDir, "x.idx")); depth < 100 {
					t.Fatalf("longest delta chain is %d: the case is not deep", depth)
				}
			}
		})
	}
}

// maxChain returns the longest delta chain of the pack of idx, as git
// verify-pack counts it.
func maxChain(t *testing.T, idx string) int {
	t.Helper()
	out, err := exec.Command("git", "verify-pack", "-s", idx).Output()
	if err != nil {
		t.Fatalf("verify-pack: %v", err)
	}
	depth := 0
	for _, l := range strings.Split(string(out), "\n") {
		var n, m int
		if _, err := fmt.Sscanf(l, "chain length = %d: %d", &n, &m); err == nil {
			depth = max(depth, n)
		}
	}
	return depth
}

// TestPackIndexerDeltaDepth builds chains of OFS_DELTAs by hand: git's
// limit of 4095 deltas is accepted, one more is refused, as go-git does.
func TestPackIndexerDeltaDepth(t *testing.T) {
	for _, depth := range []int{maxDeltaDepth, maxDeltaDepth + 1} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			var pb packBuilder
			prev := []byte("version 0\n")
			pb.whole(plumbing.BlobObject, prev)
			for i := 1; i <= depth; i++ {
				next := []byte(fmt.Sprintf("version %d\n%s", i, prev[:min(len(prev), 200)]))
				pb.ofsDelta(i-1, packfile.DiffDelta(prev, next))
				prev = next
			}
			pack := pb.bytes()
			_, wantErr := goGitPackIndex(t, pack)
			_, _, err := ourIndex(t, pack, 1)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("packIndexer: %v; go-git: %v", err, wantErr)
			}
			if depth > maxDeltaDepth && !errors.Is(err, packfile.ErrMalformedPackFile) {
				t.Fatalf("error %v does not wrap ErrMalformedPackFile", err)
			}
		})
	}
}

// TestPackIndexerBadPacks feeds packs that a broken or hostile server could
// send: each is refused with an error, leaves no pack behind, and go-git's
// own PackWriter refuses it too.
func TestPackIndexerBadPacks(t *testing.T) {
	good := packOf(t, historyRepo(t, 20), "--delta-base-offset")
	blob := []byte("a blob\n")
	cases := []struct {
		name string
		pack func() []byte
		is   error // what the error wraps, when it must
		// goGitAccepts records the packs go-git's own PackWriter indexes
		// without a word (with an id that is not the hash of any object,
		// or an entry of no valid type): the packIndexer is stricter.
		goGitAccepts bool
	}{
		{"flipped-byte", func() []byte {
			p := bytes.Clone(good)
			p[len(p)/2] ^= 0x40
			return p
		}, nil, false},
		{"truncated", func() []byte { return good[:len(good)-100] }, packfile.ErrMalformedPackFile, false},
		{"bad-trailer", func() []byte {
			p := bytes.Clone(good)
			p[len(p)-1] ^= 1
			return p
		}, packfile.ErrMalformedPackFile, false},
		{"bad-signature", func() []byte {
			p := bytes.Clone(good)
			copy(p, "KCAP")
			return p
		}, nil, false},
		{"size-lies", func() []byte {
			var pb packBuilder
			pb.entry(plumbing.BlobObject, int64(len(blob)+5), nil, blob)
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, true},
		{"size-lies-short", func() []byte {
			var pb packBuilder
			pb.entry(plumbing.BlobObject, int64(len(blob)-2), nil, blob)
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, false},
		{"thin-pack", func() []byte {
			var pb packBuilder
			pb.whole(plumbing.BlobObject, blob)
			missing := plumbing.ComputeHash(plumbing.BlobObject, []byte("not in the pack"))
			pb.refDelta(missing, packfile.DiffDelta([]byte("not in the pack"), blob))
			return pb.bytes()
		}, packfile.ErrReferenceDeltaNotFound, false},
		{"ref-delta-cycle", func() []byte {
			// Two REF_DELTAs naming each other's ids: neither resolves.
			a, b := []byte("object a\n"), []byte("object b\n")
			var pb packBuilder
			pb.refDelta(plumbing.ComputeHash(plumbing.BlobObject, b), packfile.DiffDelta(b, a))
			pb.refDelta(plumbing.ComputeHash(plumbing.BlobObject, a), packfile.DiffDelta(a, b))
			return pb.bytes()
		}, packfile.ErrReferenceDeltaNotFound, false},
		{"delta-base-wrong-size", func() []byte {
			var pb packBuilder
			pb.whole(plumbing.BlobObject, blob)
			pb.ofsDelta(0, packfile.DiffDelta([]byte("a different base of another size\n"), blob))
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, false},
		{"delta-on-empty-base", func() []byte {
			// go-git's PatchDelta refuses an empty base, which git never
			// deltifies against (pack-objects skips objects that small).
			var pb packBuilder
			pb.whole(plumbing.BlobObject, nil)
			pb.ofsDelta(0, packfile.DiffDelta(nil, blob))
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, true},
		{"ofs-into-the-middle", func() []byte {
			var pb packBuilder
			pb.whole(plumbing.BlobObject, blob)
			pb.entryAt(plumbing.OFSDeltaObject, 3, packfile.DiffDelta(blob, []byte("x\n")))
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, false},
		{"invalid-type", func() []byte {
			var pb packBuilder
			pb.entry(plumbing.ObjectType(5), int64(len(blob)), nil, blob)
			return pb.bytes()
		}, packfile.ErrMalformedPackFile, true},
		{"more-objects-than-sent", func() []byte {
			var pb packBuilder
			pb.whole(plumbing.BlobObject, blob)
			pb.count = 3
			return pb.bytes()
		}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pack := tc.pack()
			if _, err := goGitPackIndex(t, pack); (err == nil) != tc.goGitAccepts {
				t.Fatalf("go-git's PackWriter: %v; want accepted = %v", err, tc.goGitAccepts)
			}
			dir, _, err := ourIndex(t, pack, 7)
			if err == nil {
				t.Fatal("packIndexer accepted the pack")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %q does not wrap %q", err, tc.is)
			}
			if left, _ := os.ReadDir(dir); len(left) > 0 {
				t.Fatalf("files left behind: %v", left)
			}
		})
	}
}

// TestPackIndexerEmpty: nothing written stores nothing; an empty pack (no
// objects) is stored with its index, as go-git stores it.
func TestPackIndexerEmpty(t *testing.T) {
	dir, reindexed, err := ourIndex(t, nil, 1)
	if err != nil || reindexed {
		t.Fatalf("nothing written: err %v, reindexed %v", err, reindexed)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Fatalf("files left behind: %v", left)
	}
	var pb packBuilder
	pack := pb.bytes()
	want, err := goGitPackIndex(t, pack)
	if err != nil {
		t.Fatal(err)
	}
	dir, _, err = ourIndex(t, pack, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := onlyFile(t, dir, ".idx"); !bytes.Equal(got, want) {
		t.Fatal("index of an empty pack differs from go-git's")
	}
}

// TestPackIndexerFetch fetches into an on-disk mirror, cold and then
// incrementally, over a local path and smart HTTP, and has git itself check
// the mirror (git fsck reads every object through the indexes written).
func TestPackIndexerFetch(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			bare := historyRepo(t, 150)
			gittest.Git(t, bare, "repack", "-adq", "--depth=4095", "--window=100")
			url := tr.url(t, bare)
			cache := t.TempDir()
			r, err := Open(context.Background(), url, Options{CacheDir: cache})
			if err != nil {
				t.Fatal(err)
			}
			mirror := r.disk.mirror
			head, err := r.Branch("main")
			if err != nil || head != remoteHead(t, bare, "main") {
				t.Fatalf("main = %s, %v; want %s", head, err, remoteHead(t, bare, "main"))
			}
			if _, err := r.ReadFile(head, "big.txt"); err != nil {
				t.Fatal(err)
			}
			r.Close()
			pushFiles(t, bare, "main", "main", map[string]string{"big.txt": "rewritten\n", "new.txt": "new\n"}, "more")
			r, err = Open(context.Background(), url, Options{CacheDir: cache})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			head, _ = r.Branch("main")
			if b, err := r.ReadFile(head, "big.txt"); err != nil || string(b) != "rewritten\n" {
				t.Fatalf("big.txt after the second fetch: %q, %v", b, err)
			}
			gittest.Git(t, mirror, "fsck", "--strict", "--no-dangling")
			packs, _ := filepath.Glob(filepath.Join(mirror, "objects", "pack", "*.pack"))
			if len(packs) != 2 {
				t.Fatalf("want the two fetched packs, found %v", packs)
			}
		})
	}
}

// packBuilder writes packs by hand, for the cases git never writes.
type packBuilder struct {
	body    bytes.Buffer
	offsets []int64
	count   int // when not 0, the header's object count
}

func (pb *packBuilder) whole(typ plumbing.ObjectType, data []byte) {
	pb.entry(typ, int64(len(data)), nil, data)
}

// ofsDelta adds an OFS_DELTA against entry base.
func (pb *packBuilder) ofsDelta(base int, delta []byte) {
	pb.entryAt(plumbing.OFSDeltaObject, pb.offsets[base], delta)
}

// entryAt adds an OFS_DELTA whose base is at offset off of the pack.
func (pb *packBuilder) entryAt(typ plumbing.ObjectType, off int64, delta []byte) {
	here := int64(12 + pb.body.Len())
	n := here - off
	var enc []byte
	enc = append(enc, byte(n&127))
	for n >>= 7; n != 0; n >>= 7 {
		n--
		enc = append([]byte{byte(128 | n&127)}, enc...)
	}
	pb.entry(typ, int64(len(delta)), enc, delta)
}

func (pb *packBuilder) refDelta(base plumbing.Hash, delta []byte) {
	pb.entry(plumbing.REFDeltaObject, int64(len(delta)), base[:], delta)
}

// entry adds an entry of type typ declaring size, with extra after its
// header (a delta's base) and data deflated.
func (pb *packBuilder) entry(typ plumbing.ObjectType, size int64, extra, data []byte) {
	pb.offsets = append(pb.offsets, int64(12+pb.body.Len()))
	c := byte(typ)<<4 | byte(size&15)
	size >>= 4
	for size > 0 {
		pb.body.WriteByte(c | 0x80)
		c = byte(size & 127)
		size >>= 7
	}
	pb.body.WriteByte(c)
	pb.body.Write(extra)
	zw := zlib.NewWriter(&pb.body)
	zw.Write(data)
	zw.Close()
}

func (pb *packBuilder) bytes() []byte {
	count := len(pb.offsets)
	if pb.count != 0 {
		count = pb.count
	}
	var p bytes.Buffer
	p.WriteString("PACK")
	p.Write([]byte{0, 0, 0, 2, byte(count >> 24), byte(count >> 16), byte(count >> 8), byte(count)})
	p.Write(pb.body.Bytes())
	sum := sha1.Sum(p.Bytes())
	p.Write(sum[:])
	return p.Bytes()
}

// FuzzPackIndexer: whatever a server sends, the packIndexer never panics,
// and a pack it accepts go-git accepts too, with the same index.
func FuzzPackIndexer(f *testing.F) {
	blob := []byte("a blob of some length\n")
	var one packBuilder
	one.whole(plumbing.BlobObject, blob)
	f.Add(one.bytes())
	var chain packBuilder
	chain.whole(plumbing.BlobObject, blob)
	chain.ofsDelta(0, packfile.DiffDelta(blob, []byte("a blob of another length\n")))
	chain.refDelta(plumbing.ComputeHash(plumbing.BlobObject, blob), packfile.DiffDelta(blob, []byte("third\n")))
	f.Add(chain.bytes())
	f.Fuzz(func(t *testing.T, pack []byte) {
		dir, _, err := ourIndex(t, pack, 3)
		if err != nil {
			return
		}
		if len(pack) == 0 {
			return
		}
		want, gerr := goGitPackIndex(t, pack)
		if gerr != nil {
			t.Fatalf("packIndexer accepted a pack go-git refuses: %v", gerr)
		}
		if got := onlyFile(t, dir, ".idx"); !bytes.Equal(got, want) {
			t.Fatal("index differs from go-git's")
		}
	})
}

// corruptingProxy serves url through a reverse proxy that flips one byte in
// the middle of the largest side-band data packet of every upload-pack
// response while corrupt is true: a man in the middle (or a broken server)
// damaging the pack of a fetch without breaking the protocol's framing.
func corruptingProxy(t *testing.T, target string, corrupt *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !corrupt.Load() || !strings.HasSuffix(resp.Request.URL.Path, "/git-upload-pack") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		best, bestLen := -1, 0
		for pos := 0; pos+4 <= len(body); {
			n, err := strconv.ParseUint(string(body[pos:pos+4]), 16, 16)
			if err != nil {
				break
			}
			if n >= 5 && body[pos+4] == 1 && int(n) > bestLen {
				best, bestLen = pos, int(n)
			}
			if n < 4 {
				n = 4 // flush and delimiter packets
			}
			pos += int(n)
		}
		if best >= 0 && bestLen > 200 {
			body[best+bestLen/2] ^= 0x5a
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL + u.Path
}

// TestPackIndexerCorruptedInTransit: a pack damaged on the way fails the
// fetch with an error naming a malformed pack, stores nothing, and the
// mirror recovers on the next fetch from an honest server.
func TestPackIndexerCorruptedInTransit(t *testing.T) {
	bare := historyRepo(t, 60)
	var corrupt atomic.Bool
	corrupt.Store(true)
	url := corruptingProxy(t, gittest.ServeHTTP(t, bare), &corrupt)
	cache := t.TempDir()
	_, err := Open(context.Background(), url, Options{CacheDir: cache})
	if err == nil {
		t.Fatal("Open accepted a corrupted pack")
	}
	if !errors.Is(err, packfile.ErrMalformedPackFile) {
		t.Fatalf("error %q does not wrap ErrMalformedPackFile", err)
	}
	t.Logf("corrupted pack: %v", err)
	packs, _ := filepath.Glob(filepath.Join(cache, "*", "objects", "pack", "*"))
	if len(packs) > 0 {
		t.Fatalf("files left in the mirror: %v", packs)
	}
	corrupt.Store(false)
	r, err := Open(context.Background(), url, Options{CacheDir: cache})
	if err != nil {
		t.Fatalf("Open after an honest server answers: %v", err)
	}
	defer r.Close()
	if head, err := r.Branch("main"); err != nil || head != remoteHead(t, bare, "main") {
		t.Fatalf("main = %s, %v; want %s", head, err, remoteHead(t, bare, "main"))
	}
	gittest.Git(t, r.disk.mirror, "fsck", "--strict", "--no-dangling")
}
