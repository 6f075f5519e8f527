package gitstore

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// Loose objects (one file each, from WriteTree and CreateCommit) and packs
// (one per fetch) accumulate in an on-disk mirror, and go-git looks an object
// up in every pack index in turn. maintain keeps both bounded at a cost that
// does not grow with the repository: loose objects are packed on their own,
// and packs are merged geometrically (as git repack --geometric=2 does: only
// the small packs whose sizes do not already form a doubling progression), so
// each object is rewritten O(log n) times over the mirror's life.
const (
	maxLooseObjects = 2000
	maxPacks        = 20
	// packWindow is the delta window used when writing packs, go-git's
	// default (pack.window).
	packWindow = 10
)

// countLoose counts the mirror's loose objects.
func (d *diskCache) countLoose() (int, error) {
	n := 0
	err := d.st.ForEachObjectHash(func(plumbing.Hash) error { n++; return nil })
	return n, err
}

// maintain repacks an on-disk mirror when it has more than maxLooseObjects
// loose objects or more than maxPacks packs; r.mu must be held exclusively.
func (r *Repo) maintain() error {
	d := r.disk
	if d == nil {
		return nil
	}
	if d.loose > maxLooseObjects {
		if err := d.packLoose(); err != nil {
			return fmt.Errorf("repack mirror %q: %w", d.mirror, err)
		}
	}
	packs, err := d.st.ObjectPacks()
	if err != nil {
		return fmt.Errorf("repack mirror %q: %w", d.mirror, err)
	}
	if len(packs) > maxPacks {
		if err := d.mergePacks(packs); err != nil {
			return fmt.Errorf("repack mirror %q: %w", d.mirror, err)
		}
	}
	return nil
}

// packLoose writes the loose objects into one pack and deletes them.
func (d *diskCache) packLoose() error {
	var hashes []plumbing.Hash
	if err := d.st.ForEachObjectHash(func(h plumbing.Hash) error {
		hashes = append(hashes, h)
		return nil
	}); err != nil {
		return fmt.Errorf("list loose objects: %w", err)
	}
	if err := d.writePack(hashes); err != nil {
		return err
	}
	for _, h := range hashes {
		if err := d.st.DeleteLooseObject(h); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("delete packed loose object %s: %w", h, err)
		}
	}
	d.loose = 0
	return nil
}

// writePack writes the objects hashes into a new pack (and its index).
func (d *diskCache) writePack(hashes []plumbing.Hash) (err error) {
	w, err := d.st.PackfileWriter()
	if err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	// Read through go-git's storage, which reuses the deltas packs hold.
	if _, err := packfile.NewEncoder(w, d.st.Storage, false).Encode(hashes, packWindow); err != nil {
		w.Close()
		return fmt.Errorf("write pack: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	return nil
}

type packSize struct {
	hash    plumbing.Hash
	objects int
}

// mergePacks merges the packs that break a geometric progression (factor 2)
// of object counts into one, or, when they all form one, the smallest half.
func (d *diskCache) mergePacks(packs []plumbing.Hash) error {
	sizes := make([]packSize, 0, len(packs))
	for _, h := range packs {
		n, err := d.packObjects(h)
		if err != nil {
			return err
		}
		sizes = append(sizes, packSize{h, n})
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i].objects < sizes[j].objects })
	split := geometricSplit(sizes)
	if split < 2 {
		split = len(sizes) - maxPacks/2
	}
	merge := sizes[:split]
	done, err := d.concatPacks(merge)
	if err != nil {
		return err
	}
	if !done {
		// The packs share objects: write them anew, each once.
		var hashes []plumbing.Hash
		for _, p := range merge {
			entries, err := d.packEntries(p.hash)
			if err != nil {
				return err
			}
			for _, e := range entries {
				hashes = append(hashes, e.Hash)
			}
		}
		if err := d.writePack(dedupe(hashes)); err != nil {
			return err
		}
	}
	for _, p := range merge {
		if err := d.st.DeleteOldObjectPackAndIndex(p.hash, time.Time{}); err != nil {
			return fmt.Errorf("delete merged pack %s: %w", p.hash, err)
		}
	}
	d.st.Reindex()
	return nil
}

// packEntries reads the entries (hash, offset, CRC-32) of a pack's index.
func (d *diskCache) packEntries(h plumbing.Hash) ([]*idxfile.Entry, error) {
	f, err := os.Open(d.packPath(h, "idx"))
	if err != nil {
		return nil, fmt.Errorf("read index of pack %s: %w", h, err)
	}
	defer f.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		return nil, fmt.Errorf("read index of pack %s: %w", h, err)
	}
	iter, err := idx.Entries()
	if err != nil {
		return nil, fmt.Errorf("read index of pack %s: %w", h, err)
	}
	defer iter.Close()
	var out []*idxfile.Entry
	for {
		e, err := iter.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read index of pack %s: %w", h, err)
		}
		out = append(out, e)
	}
}

// concatPacks merges packs into one by copying their entries as they are,
// one pack after the other: an offset delta keeps its distance to its base,
// which stays in the same run of bytes, so nothing is inflated, deltified
// or compressed again, and the index is the packs' entries with their
// offsets moved (CRC-32s unchanged). It writes the pack under a temporary
// name and installs it as a fetched pack is (installPack: the index
// first, so that no pack is ever listed without one). It reports
// false, writing nothing, when an object is in two of the packs.
func (d *diskCache) concatPacks(packs []packSize) (bool, error) {
	var (
		all   [][]*idxfile.Entry
		seen  = map[plumbing.Hash]bool{}
		files [][]byte
		count uint32
	)
	for _, p := range packs {
		entries, err := d.packEntries(p.hash)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if seen[e.Hash] {
				return false, nil
			}
			seen[e.Hash] = true
		}
		b, err := os.ReadFile(d.packPath(p.hash, "pack"))
		if err != nil {
			return false, fmt.Errorf("read pack %s: %w", p.hash, err)
		}
		if len(b) < 32 || string(b[:4]) != "PACK" || binary.BigEndian.Uint32(b[8:12]) != uint32(len(entries)) {
			return false, fmt.Errorf("read pack %s: malformed header", p.hash)
		}
		var sum plumbing.Hash
		copy(sum[:], b[len(b)-20:])
		if sum != p.hash {
			return false, fmt.Errorf("read pack %s: its checksum is %s", p.hash, sum)
		}
		files = append(files, b)
		all = append(all, entries)
		count += uint32(len(entries))
	}
	dir := filepath.Join(d.mirror, "objects", "pack")
	tmp, err := os.CreateTemp(dir, "tmp_concat_")
	if err != nil {
		return false, fmt.Errorf("write pack: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sum := sha1.New()
	w := io.MultiWriter(tmp, sum)
	var hdr [12]byte
	copy(hdr[:], "PACK")
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], count)
	if _, err := w.Write(hdr[:]); err != nil {
		return false, fmt.Errorf("write pack: %w", err)
	}
	entries := make([]packEntry, 0, count)
	pos := int64(12)
	for i, b := range files {
		body := b[12 : len(b)-20]
		for _, e := range all[i] {
			entries = append(entries, packEntry{offset: pos + int64(e.Offset) - 12, crc: e.CRC32, hash: e.Hash})
		}
		if _, err := w.Write(body); err != nil {
			return false, fmt.Errorf("write pack: %w", err)
		}
		pos += int64(len(body))
	}
	var packHash plumbing.Hash
	sum.Sum(packHash[:0])
	if _, err := tmp.Write(packHash[:]); err != nil {
		return false, fmt.Errorf("write pack: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("write pack: %w", err)
	}
	idx, err := encodeIndex(entries, packHash)
	if err != nil {
		return false, fmt.Errorf("write pack index: %w", err)
	}
	if err := installPack(tmp.Name(), strings.TrimSuffix(d.packPath(packHash, "pack"), ".pack"), idx); err != nil {
		return false, err
	}
	return true, nil
}

// geometricSplit returns how many of the smallest packs (sorted by size) to
// merge so that the rest, and the merged pack, form a progression in which
// each pack has at least twice the objects of all smaller ones together
// (git's repack --geometric=2).
func geometricSplit(sizes []packSize) int {
	i := len(sizes) - 1
	for ; i > 0; i-- {
		if sizes[i].objects < 2*sizes[i-1].objects {
			break
		}
	}
	split := i
	if split > 0 {
		split++
	}
	total := 0
	for _, p := range sizes[:split] {
		total += p.objects
	}
	for ; split < len(sizes); split++ {
		if 2*total <= sizes[split].objects {
			break
		}
		total += sizes[split].objects
	}
	return split
}

func dedupe(hs []plumbing.Hash) []plumbing.Hash {
	seen := make(map[plumbing.Hash]struct{}, len(hs))
	out := hs[:0]
	for _, h := range hs {
		if _, ok := seen[h]; !ok {
			seen[h] = struct{}{}
			out = append(out, h)
		}
	}
	return out
}

func (d *diskCache) packPath(h plumbing.Hash, ext string) string {
	return filepath.Join(d.mirror, "objects", "pack", "pack-"+h.String()+"."+ext)
}

// packObjects reads the number of objects of a pack from its index's fan-out
// table (version 2: magic, version, then 256 counts).
func (d *diskCache) packObjects(h plumbing.Hash) (int, error) {
	b, err := readEnds(d.packPath(h, "idx"), 8+256*4, 0)
	if err != nil {
		return 0, fmt.Errorf("read index of pack %s: %w", h, err)
	}
	return int(binary.BigEndian.Uint32(b[8+255*4:])), nil
}
