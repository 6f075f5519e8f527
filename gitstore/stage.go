package gitstore

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Stage builds the objects of one push in memory: trees written on a base
// commit (WriteTree) and commits (CreateCommit), each tree made by splicing
// the raw bytes of the tree it replaces, never decoded into entries. Seal
// writes them all into the repository as one pack (on disk, one pack file
// and its index instead of a loose file per object), in which each tree
// that replaces a tree of the same Stage is a delta against it; PushStage
// sends those very bytes. A Stage reads the objects of the Stage it was
// started on (Next), so that a chain can be built on a push still in
// flight. What it holds is nobody's until sealed: a Stage that is dropped
// leaves nothing behind.
//
// A Stage is used by one goroutine at a time; the Repo's other methods run
// alongside it.
type Stage struct {
	r      *Repo
	parent *Stage
	objs   map[plumbing.Hash]*stagedObject
	order  []plumbing.Hash

	sealOnce sync.Once
	pack     []byte
	sealErr  error
}

type stagedObject struct {
	typ  plumbing.ObjectType
	data []byte
	base plumbing.Hash // for a tree: the tree it replaces, if any
}

// NewStage starts an empty Stage on r.
func (r *Repo) NewStage() *Stage {
	return &Stage{r: r, objs: make(map[plumbing.Hash]*stagedObject)}
}

// Next starts a Stage whose objects may be built on s's (s's tip commit as
// a WriteTree base, its trees as parents); s need not be sealed yet. The
// new Stage reads s's objects and the repository's, not those of the
// stages before s.
func (s *Stage) Next() *Stage {
	n := s.r.NewStage()
	n.parent = &Stage{r: s.r, objs: s.objs}
	return n
}

// raw returns object h from the Stage, its parent, or the repository.
func (s *Stage) raw(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	for st := s; st != nil; st = st.parent {
		if o, ok := st.objs[h]; ok {
			return o.typ, o.data, nil
		}
	}
	return s.r.RawObject(h)
}

func (s *Stage) has(h plumbing.Hash, typ plumbing.ObjectType) error {
	got, _, err := s.raw(h)
	if err != nil {
		return err
	}
	if got != typ {
		return fmt.Errorf("object %s is a %s, not a %s: %w", h, got, typ, ErrNotFound)
	}
	return nil
}

// add stores an object in the Stage and returns its hash.
func (s *Stage) add(typ plumbing.ObjectType, data []byte, base plumbing.Hash) plumbing.Hash {
	h := objectHash(typ, data)
	if _, ok := s.objs[h]; !ok {
		s.objs[h] = &stagedObject{typ: typ, data: data, base: base}
		s.order = append(s.order, h)
	}
	return h
}

// objectHash is git's name for an object: the SHA-1 of its header and
// content.
func objectHash(typ plumbing.ObjectType, data []byte) plumbing.Hash {
	hw := sha1.New()
	hw.Write(typ.Bytes())
	hw.Write([]byte{' '})
	hw.Write(strconv.AppendInt(nil, int64(len(data)), 10))
	hw.Write([]byte{0})
	hw.Write(data)
	var h plumbing.Hash
	hw.Sum(h[:0])
	return h
}

// commitTree returns the tree of commit h, from its raw text.
func (s *Stage) commitTree(h plumbing.Hash) (plumbing.Hash, error) {
	typ, data, err := s.raw(h)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if typ != plumbing.CommitObject {
		return plumbing.ZeroHash, fmt.Errorf("object %s is a %s, not a commit: %w", h, typ, ErrNotFound)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	hexTree, ok := bytes.CutPrefix(line, []byte("tree "))
	if !ok || len(hexTree) != 40 {
		return plumbing.ZeroHash, fmt.Errorf("commit %s: malformed: no tree line", h)
	}
	var t plumbing.Hash
	if _, err := hex.Decode(t[:], hexTree); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("commit %s: malformed tree line: %w", h, err)
	}
	return t, nil
}

// stageChange is a FileChange below a directory: the path's remaining
// components.
type stageChange struct {
	parts []string
	c     *FileChange
	mode  filemode.FileMode
}

// WriteTree is Repo.WriteTree into the Stage: the same changes, checks and
// errors, and the same tree hash. base is a commit of the Stage, of the
// Stage it was started on, or of the repository.
func (s *Stage) WriteTree(base plumbing.Hash, changes []FileChange) (plumbing.Hash, error) {
	var (
		root     []byte
		rootHash plumbing.Hash
	)
	if !base.IsZero() {
		t, err := s.commitTree(base)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %w", err)
		}
		typ, data, err := s.raw(t)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree on %s: %w", base, err)
		}
		if typ != plumbing.TreeObject {
			return plumbing.ZeroHash, fmt.Errorf("write tree on %s: object %s is a %s, not a tree", base, t, typ)
		}
		root, rootHash = data, t
	}
	seen := make(map[string]bool, len(changes))
	list := make([]stageChange, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		if err := validPath(c.Path); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %w", err)
		}
		if seen[c.Path] {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %q changed twice", c.Path)
		}
		seen[c.Path] = true
		mode, err := changeMode(*c)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree: %s %q: %w", c.Status, c.Path, err)
		}
		list = append(list, stageChange{parts: strings.Split(c.Path, "/"), c: c, mode: mode})
	}
	// Deletions first, as Repo.WriteTree applies them.
	sort.SliceStable(list, func(i, j int) bool {
		return list[i].c.Status == StatusDeleted && list[j].c.Status != StatusDeleted
	})
	out, _, err := s.edit(root, rootHash, list, 0)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if out == nil {
		out = []byte{}
	}
	return s.add(plumbing.TreeObject, out, rootHash), nil
}

// changeMode checks a change's status, mode and content and returns the
// mode to store (none for a deletion), for Repo.WriteTree and Stage.WriteTree.
func changeMode(c FileChange) (filemode.FileMode, error) {
	switch c.Status {
	case StatusDeleted:
		return 0, nil
	case StatusAdded, StatusModified:
	default:
		return 0, fmt.Errorf("unknown status: use %q, %q or %q", StatusAdded, StatusModified, StatusDeleted)
	}
	var mode filemode.FileMode
	switch c.Mode {
	case 0, filemode.Regular, filemode.Deprecated:
		mode = filemode.Regular
	case filemode.Executable, filemode.Symlink:
		mode = c.Mode
	default:
		return 0, fmt.Errorf("unsupported mode %s: use filemode.Regular, Executable or Symlink", c.Mode)
	}
	if mode == filemode.Symlink && (len(c.Content) == 0 || bytes.IndexByte(c.Content, 0) >= 0) {
		return 0, fmt.Errorf("invalid symlink target %q", c.Content)
	}
	return mode, nil
}

// edit applies changes (paths relative to this tree, at the given depth)
// to raw tree tree (hash self, zero for a new one) and returns the new raw
// tree; empty reports that no entry is left (the directory goes away).
func (s *Stage) edit(tree []byte, self plumbing.Hash, changes []stageChange, depth int) (out []byte, empty bool, err error) {
	if depth > maxTreeDepth {
		return nil, false, fmt.Errorf("write tree: nested deeper than %d directories", maxTreeDepth)
	}
	out = tree
	// Group the changes below each subdirectory, in order of first use.
	var dirs []string
	below := map[string][]stageChange{}
	for _, ch := range changes {
		if len(ch.parts) == 1 {
			continue
		}
		d := ch.parts[0]
		if _, ok := below[d]; !ok {
			dirs = append(dirs, d)
		}
		below[d] = append(below[d], stageChange{parts: ch.parts[1:], c: ch.c, mode: ch.mode})
	}
	for _, ch := range changes {
		if len(ch.parts) != 1 {
			continue
		}
		if out, err = s.editFile(out, ch); err != nil {
			return nil, false, fmt.Errorf("write tree: %s %q: %w", ch.c.Status, ch.c.Path, err)
		}
	}
	for _, d := range dirs {
		sub := below[d]
		h, mode, ok, err := findEntry(out, d)
		if err != nil {
			return nil, false, fmt.Errorf("write tree: tree %s: %w", self, err)
		}
		var subTree []byte
		var subHash plumbing.Hash
		switch {
		case !ok:
			for _, ch := range sub {
				if ch.c.Status != StatusAdded {
					what := "no file to delete"
					if ch.c.Status == StatusModified {
						return nil, false, fmt.Errorf("write tree: %s %q: directory %q: %w", ch.c.Status, ch.c.Path, dirOf(ch), ErrNotFound)
					}
					return nil, false, fmt.Errorf("write tree: %s %q: %s: %w", ch.c.Status, ch.c.Path, what, ErrNotFound)
				}
			}
		case mode != filemode.Dir:
			ch := sub[0]
			if ch.c.Status == StatusDeleted {
				return nil, false, fmt.Errorf("write tree: %s %q: no file to delete: %w", ch.c.Status, ch.c.Path, ErrNotFound)
			}
			return nil, false, fmt.Errorf("write tree: %s %q: %q is not a directory", ch.c.Status, ch.c.Path, dirOf(ch))
		default:
			typ, data, err := s.raw(h)
			if err != nil {
				return nil, false, fmt.Errorf("write tree: %w", err)
			}
			if typ != plumbing.TreeObject {
				return nil, false, fmt.Errorf("write tree: object %s is a %s, not a tree", h, typ)
			}
			subTree, subHash = data, h
		}
		newSub, subEmpty, err := s.edit(subTree, subHash, sub, depth+1)
		if err != nil {
			return nil, false, err
		}
		if subEmpty {
			if ok {
				out = spliceEntry(out, d, true, nil)
			}
			continue
		}
		nh := s.add(plumbing.TreeObject, newSub, subHash)
		out = spliceEntry(out, d, true, treeEntryBytes(filemode.Dir, d, nh))
	}
	return out, len(out) == 0, nil
}

// dirOf names the directory of a change that failed below this tree, as
// Repo.WriteTree names it: the path up to the failing component.
func dirOf(ch stageChange) string {
	full := strings.Split(ch.c.Path, "/")
	return strings.Join(full[:len(full)-len(ch.parts)+1], "/")
}

// editFile applies a change to a file directly in tree.
func (s *Stage) editFile(tree []byte, ch stageChange) ([]byte, error) {
	name := ch.parts[0]
	_, mode, ok, err := findEntry(tree, name)
	if err != nil {
		return nil, err
	}
	switch ch.c.Status {
	case StatusDeleted:
		if !ok || !isFileMode(mode) {
			return nil, fmt.Errorf("no file to delete: %w", ErrNotFound)
		}
		return spliceEntry(tree, name, false, nil), nil
	case StatusAdded:
		if ok {
			return nil, errors.New("path already exists: use StatusModified to replace it")
		}
	case StatusModified:
		if !ok || !isFileMode(mode) {
			return nil, fmt.Errorf("no file to modify: %w", ErrNotFound)
		}
	}
	h := s.add(plumbing.BlobObject, ch.c.Content, plumbing.ZeroHash)
	return spliceEntry(tree, name, false, treeEntryBytes(ch.mode, name, h)), nil
}

// treeEntryBytes is one raw tree entry.
func treeEntryBytes(mode filemode.FileMode, name string, h plumbing.Hash) []byte {
	b := make([]byte, 0, 8+len(name)+20)
	b = strconv.AppendUint(b, uint64(mode), 8)
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, 0)
	return append(b, h[:]...)
}

// spliceEntry returns tree with the entry called name (a directory when
// dir, which git sorts as name + "/") replaced by entry, removed when entry
// is nil, or inserted at its place in git's order when absent. tree must be
// well formed (findEntry checked it); the result shares no memory with it.
func spliceEntry(tree []byte, name string, dir bool, entry []byte) []byte {
	key := name
	if dir {
		key += "/"
	}
	pos, end := len(tree), len(tree)
	for off := 0; off < len(tree); {
		sp := bytes.IndexByte(tree[off:], ' ')
		nul := bytes.IndexByte(tree[off+sp+1:], 0)
		n := string(tree[off+sp+1 : off+sp+1+nul])
		next := off + sp + 1 + nul + 1 + 20
		k := n
		if string(tree[off:off+sp]) == "40000" {
			k += "/"
		}
		if n == name {
			pos, end = off, next
			break
		}
		if k > key {
			pos, end = off, off
			break
		}
		off = next
	}
	out := make([]byte, 0, len(tree)-(end-pos)+len(entry))
	out = append(out, tree[:pos]...)
	out = append(out, entry...)
	return append(out, tree[end:]...)
}

// CreateCommit is Repo.CreateCommit into the Stage: the same checks and the
// same hash. The tree and parents may be in the Stage, the Stage it was
// started on, or the repository.
func (s *Stage) CreateCommit(c NewCommit) (plumbing.Hash, error) {
	committer, err := c.signatures()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if err := s.has(c.Tree, plumbing.TreeObject); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: tree %s: %w", c.Tree, err)
	}
	for _, p := range c.Parents {
		if err := s.has(p, plumbing.CommitObject); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("create commit: parent: %w", err)
		}
	}
	commit := &object.Commit{Author: c.Author, Committer: committer, Message: c.Message, TreeHash: c.Tree, ParentHashes: c.Parents}
	obj := &plumbing.MemoryObject{}
	if err := commit.Encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: encode: %w", err)
	}
	rd, err := obj.Reader()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: encode: %w", err)
	}
	data, err := io.ReadAll(rd)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create commit: encode: %w", err)
	}
	return s.add(plumbing.CommitObject, data, plumbing.ZeroHash), nil
}

// Seal writes the Stage's objects into the repository as one pack (see
// Stage) and keeps its bytes for PushStage; later calls return the first
// one's result. After Seal the Stage takes no more objects.
func (s *Stage) Seal() error {
	s.sealOnce.Do(func() { s.sealErr = s.seal() })
	return s.sealErr
}

func (s *Stage) seal() error {
	if len(s.order) == 0 {
		return nil
	}
	pack, err := s.encode()
	if err != nil {
		return fmt.Errorf("seal stage: %w", err)
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return fmt.Errorf("seal stage: %w", err)
	}
	if r.disk != nil {
		w, err := r.disk.st.PackfileWriter()
		if err != nil {
			return fmt.Errorf("seal stage: %w", err)
		}
		if _, err := w.Write(pack); err != nil {
			w.Close()
			return fmt.Errorf("seal stage: write pack: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("seal stage: write pack: %w", err)
		}
	} else {
		for _, h := range s.order {
			o := s.objs[h]
			obj := r.repo.Storer.NewEncodedObject()
			obj.SetType(o.typ)
			obj.SetSize(int64(len(o.data)))
			w, err := obj.Writer()
			if err == nil {
				_, err = w.Write(o.data)
				if cerr := w.Close(); err == nil {
					err = cerr
				}
			}
			if err == nil {
				_, err = r.repo.Storer.SetEncodedObject(obj)
			}
			if err != nil {
				return fmt.Errorf("seal stage: store object %s: %w", h, err)
			}
		}
	}
	for _, h := range s.order {
		r.pending[h] = struct{}{}
	}
	s.pack = pack
	return nil
}

// encode writes the Stage's objects as a pack, in the order they were
// made: a tree whose base (the tree it replaces) came before it in the pack
// is an offset delta against it (a copy of their common prefix and suffix,
// the rest inserted), everything else whole.
func (s *Stage) encode() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("PACK")
	buf.Write([]byte{0, 0, 0, 2})
	n := uint32(len(s.order))
	buf.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	offsets := make(map[plumbing.Hash]int, len(s.order))
	zw, err := zlib.NewWriterLevel(&buf, zlib.BestSpeed)
	if err != nil {
		return nil, err
	}
	var delta []byte
	for _, h := range s.order {
		o := s.objs[h]
		off := buf.Len()
		offsets[h] = off
		body := o.data
		if baseOff, ok := offsets[o.base]; ok && !o.base.IsZero() {
			delta = prefixSuffixDelta(delta[:0], s.objs[o.base].data, o.data)
			if len(delta) < len(o.data)/2 {
				writeObjectHeader(&buf, 6, len(delta)) // OBJ_OFS_DELTA
				writeOffset(&buf, off-baseOff)
				body = delta
			} else {
				writeObjectHeader(&buf, o.typ, len(o.data))
			}
		} else {
			writeObjectHeader(&buf, o.typ, len(o.data))
		}
		zw.Reset(&buf)
		if _, err := zw.Write(body); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	}
	var sum hash.Hash = sha1.New()
	sum.Write(buf.Bytes())
	return sum.Sum(buf.Bytes()), nil
}

func writeObjectHeader(buf *bytes.Buffer, typ plumbing.ObjectType, size int) {
	c := byte(typ)<<4 | byte(size&0x0f)
	size >>= 4
	for size > 0 {
		buf.WriteByte(c | 0x80)
		c = byte(size & 0x7f)
		size >>= 7
	}
	buf.WriteByte(c)
}

// writeOffset writes an OFS_DELTA's distance back to its base, in git's
// offset encoding.
func writeOffset(buf *bytes.Buffer, n int) {
	var b [10]byte
	i := len(b) - 1
	b[i] = byte(n & 0x7f)
	for n >>= 7; n > 0; n >>= 7 {
		n--
		i--
		b[i] = 0x80 | byte(n&0x7f)
	}
	buf.Write(b[i:])
}

// prefixSuffixDelta appends to dst a git delta turning base into target:
// a copy of their common prefix, the differing middle inserted, a copy of
// their common suffix. A tree that gains, loses or changes one entry is a
// few dozen bytes of it.
func prefixSuffixDelta(dst, base, target []byte) []byte {
	p := 0
	for p < len(base) && p < len(target) && base[p] == target[p] {
		p++
	}
	sfx := 0
	for sfx < len(base)-p && sfx < len(target)-p && base[len(base)-1-sfx] == target[len(target)-1-sfx] {
		sfx++
	}
	dst = appendVarint(dst, len(base))
	dst = appendVarint(dst, len(target))
	dst = appendCopy(dst, 0, p)
	mid := target[p : len(target)-sfx]
	for len(mid) > 0 {
		k := min(len(mid), 127)
		dst = append(dst, byte(k))
		dst = append(dst, mid[:k]...)
		mid = mid[k:]
	}
	return appendCopy(dst, len(base)-sfx, sfx)
}

func appendVarint(dst []byte, n int) []byte {
	for n >= 0x80 {
		dst = append(dst, byte(n)|0x80)
		n >>= 7
	}
	return append(dst, byte(n))
}

// appendCopy appends copy instructions for base[off:off+n].
func appendCopy(dst []byte, off, n int) []byte {
	for n > 0 {
		k := min(n, 0xffffff)
		op := byte(0x80)
		var args []byte
		for i := 0; i < 4; i++ {
			if b := byte(off >> (8 * i)); b != 0 {
				op |= 1 << i
				args = append(args, b)
			}
		}
		for i := 0; i < 3; i++ {
			if b := byte(k >> (8 * i)); b != 0 {
				op |= 0x10 << i
				args = append(args, b)
			}
		}
		dst = append(dst, op)
		dst = append(dst, args...)
		off += k
		n -= k
	}
	return dst
}

// Mark returns the Stage's length, for Rollback.
func (s *Stage) Mark() int { return len(s.order) }

// Rollback drops the objects added since Mark returned mark (an entry
// whose build failed halfway leaves nothing in the pack).
func (s *Stage) Rollback(mark int) {
	for _, h := range s.order[mark:] {
		delete(s.objs, h)
	}
	s.order = s.order[:mark]
}
