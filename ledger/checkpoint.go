package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/mod/sumdb/note"

	"github.com/agentgitops/reconciler/gitstore"
)

// Checkpoint is what a verifier saw of an evidence branch: its length and
// head commit. Signed as a note (golang.org/x/mod/sumdb/note) whose text is
// "<origin>\n<size>\n<head commit hex>\n", it lets a later verify, or a
// monitor keeping the notes, tell that the ledger was truncated or
// rewritten: every later ledger must extend it.
type Checkpoint struct {
	// Origin names the ledger, as "agent-evidence <redacted repo URL>".
	Origin string
	// Size is the number of entries and Head the commit of the last one
	// (zero for an empty ledger).
	Size uint64
	Head plumbing.Hash
}

// NewCheckpoint returns the checkpoint of a verified ledger.
func NewCheckpoint(rep *Report, origin string) Checkpoint {
	return Checkpoint{Origin: origin, Size: uint64(rep.Entries), Head: rep.Head}
}

// Origin returns the checkpoint origin of repo's ledger: the evidence branch
// and the repository's URL without credentials.
func Origin(repo *gitstore.Repo) string { return Branch + " " + repo.URL() }

// Text returns the checkpoint's note text.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, c.Head)
}

// Sign returns the checkpoint as a note signed by s. It fails when the
// origin is empty or not one line.
func (c Checkpoint) Sign(s note.Signer) ([]byte, error) {
	if c.Origin == "" || strings.ContainsAny(c.Origin, "\r\n") {
		return nil, fmt.Errorf("sign checkpoint: origin %q must be one non-empty line", c.Origin)
	}
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return msg, nil
}

// OpenCheckpoint verifies a signed checkpoint with v and returns it. It
// fails when the note is not signed by v's key (a *note.UnverifiedNoteError)
// or its signature does not verify (a *note.InvalidSignatureError), or when
// its text is not a checkpoint.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" || lines[0] == "" {
		return Checkpoint{}, fmt.Errorf("open checkpoint: want three lines (origin, size, head), got %q", n.Text)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: size %q is not a number", lines[1])
	}
	head, err := parseHex([]byte(lines[2]))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: head: %w", err)
	}
	if (size == 0) != head.IsZero() {
		return Checkpoint{}, fmt.Errorf("open checkpoint: size %d with head %s", size, head)
	}
	return Checkpoint{Origin: lines[0], Size: size, Head: head}, nil
}

// Check returns an error wrapping ErrRewritten, naming what was cut off or
// replaced, unless the evidence branch of repo extends c: its first-parent
// chain holds at least c.Size commits and the c.Size-th from the root is
// c.Head. It reads the commits of the chain, not their trees.
func (c Checkpoint) Check(repo *gitstore.Repo) error {
	tip, err := repo.Branch(Branch)
	if errors.Is(err, gitstore.ErrNotFound) {
		if c.Size == 0 {
			return nil
		}
		return fmt.Errorf("check checkpoint: %w: branch %s is gone but checkpoint %q recorded %d entries (head %s)", ErrRewritten, Branch, c.Origin, c.Size, c.Head)
	}
	if err != nil {
		return fmt.Errorf("check checkpoint: %w", err)
	}
	var chain []plumbing.Hash // newest first
	for h := tip; ; {
		rc, err := readCommit(repo, h)
		if err != nil {
			return fmt.Errorf("check checkpoint: %w", err)
		}
		chain = append(chain, h)
		if rc.parents == 0 {
			break
		}
		h = rc.parent
	}
	n := uint64(len(chain))
	switch {
	case c.Size == 0:
		return nil
	case n < c.Size:
		cut := fmt.Sprintf("entries %d-%d were cut off", n+1, c.Size)
		if n+1 == c.Size {
			cut = fmt.Sprintf("entry %d was cut off", c.Size)
		}
		return fmt.Errorf("check checkpoint: %w: the ledger has %d entries but checkpoint %q recorded %d: %s", ErrRewritten, n, c.Origin, c.Size, cut)
	}
	if at := chain[n-c.Size]; at != c.Head {
		return fmt.Errorf("check checkpoint: %w: entry %d is commit %s, the checkpoint %q recorded %s: the branch was rewritten", ErrRewritten, c.Size, at, c.Origin, c.Head)
	}
	return nil
}

// SaveCheckpoint writes a signed checkpoint to path atomically (a
// temporary file, fsync, rename), readable by all.
func SaveCheckpoint(path string, msg []byte) error {
	if err := writeAtomic(path, msg, 0o644, true); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// LoadOrCreateNoteKey returns the checkpoint signer whose private key (in
// note.GenerateKey's format) is at path, and its verifier. When path does
// not exist it creates a new Ed25519 key called name there (mode 0600,
// created whole or not at all, never replacing a key another process
// created meanwhile) and writes the verifier key to path+".pub", which it
// also rewrites when it is missing.
func LoadOrCreateNoteKey(path, name string) (note.Signer, note.Verifier, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		skey, _, gerr := note.GenerateKey(rand.Reader, name)
		if gerr != nil {
			return nil, nil, fmt.Errorf("create checkpoint key %s: %w", path, gerr)
		}
		if err := writeAtomic(path, []byte(skey+"\n"), 0o600, false); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, nil, fmt.Errorf("create checkpoint key: %w", err)
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load checkpoint key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, fmt.Errorf("load checkpoint key %s: not a note signing key (as note.GenerateKey writes): %w", path, err)
	}
	vkey, err := verifierKey(skey, s.Name())
	if err != nil {
		return nil, nil, fmt.Errorf("load checkpoint key %s: %w", path, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, fmt.Errorf("load checkpoint key %s: %w", path, err)
	}
	pub := path + ".pub"
	if cur, err := os.ReadFile(pub); err != nil || strings.TrimSpace(string(cur)) != vkey {
		if err := writeAtomic(pub, []byte(vkey+"\n"), 0o644, true); err != nil {
			return nil, nil, fmt.Errorf("write checkpoint verifier key: %w", err)
		}
	}
	return s, v, nil
}

// verifierKey derives the verifier key of an Ed25519 note signing key
// "PRIVATE+KEY+<name>+<hash>+<base64 of 0x01 and the seed>".
func verifierKey(skey, name string) (string, error) {
	parts := strings.SplitN(skey, "+", 5) // the base64 may hold '+'
	if len(parts) != 5 {
		return "", errors.New("not a note signing key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an Ed25519 note signing key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(name, pub)
}

// writeAtomic writes data to path through a temporary file in its
// directory; with replace false it fails wrapping fs.ErrExist rather than
// replace an existing file.
func writeAtomic(path string, data []byte, perm fs.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(f.Name(), path)
	} else {
		err = os.Link(f.Name(), path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
