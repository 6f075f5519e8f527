package gitstore

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
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
	var hashes []plumbing.Hash
	for _, p := range sizes[:split] {
		f, err := os.Open(d.packPath(p.hash, "idx"))
		if err != nil {
			return fmt.Errorf("read index of pack %s: %w", p.hash, err)
		}
		idx := idxfile.NewMemoryIndex()
		err = idxfile.NewDecoder(f).Decode(idx)
		f.Close()
		if err != nil {
			return fmt.Errorf("read index of pack %s: %w", p.hash, err)
		}
		entries, err := idx.Entries()
		if err != nil {
			return fmt.Errorf("read index of pack %s: %w", p.hash, err)
		}
		for {
			e, err := entries.Next()
			if err != nil {
				break // io.EOF
			}
			hashes = append(hashes, e.Hash)
		}
		entries.Close()
	}
	if err := d.writePack(dedupe(hashes)); err != nil {
		return err
	}
	for _, p := range sizes[:split] {
		if err := d.st.DeleteOldObjectPackAndIndex(p.hash, time.Time{}); err != nil {
			return fmt.Errorf("delete merged pack %s: %w", p.hash, err)
		}
	}
	d.st.Reindex()
	return nil
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
