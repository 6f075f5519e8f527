package ledger

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"os"
	"slices"

	"github.com/agentgitops/reconciler/internal/atomicfile"
)

// snapshotVersion changes whenever State's encoding does; a snapshot of
// another version is ignored and the ledger read from its first entry.
const snapshotVersion = 4

type snapshot struct {
	Version int
	// Pinned are the IDs of the keys pinned when the state was built.
	Pinned []string
	State  *State
}

func pinnedIDs(t *trust) []string {
	var ids []string
	for _, k := range t.pinned {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	return ids
}

// load continues from the saved state, if there is a usable one. The
// snapshot lives in the reconciler's own cache, as trusted as its key
// file; one that does not decode, or was built under other pinned keys, is
// ignored (the ledger is then read and verified from its first entry).
func (l *Ledger) load() {
	if l.stateFile == "" {
		return
	}
	b, err := os.ReadFile(l.stateFile)
	if err != nil {
		return
	}
	var s snapshot
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil || s.Version != snapshotVersion || s.State == nil {
		return
	}
	if !slices.Equal(s.Pinned, pinnedIDs(&l.trust)) {
		return
	}
	s.State.init()
	if s.State.Seq > 0 {
		v, err := newVerifier(s.State.Keys)
		if err != nil {
			return
		}
		l.trust.keys, l.trust.verifier = s.State.Keys, v
	}
	l.state, l.savedSeq = s.State, s.State.Seq
}

// Save writes the state to the state file (atomically: a temporary file,
// fsync, rename) when entries were applied since it was last saved. It is
// a no-op without a state file.
func (l *Ledger) Save() error {
	if l.stateFile == "" || l.state.Seq == l.savedSeq {
		return nil
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(snapshot{Version: snapshotVersion, Pinned: pinnedIDs(&l.trust), State: l.state}); err != nil {
		return fmt.Errorf("save ledger state: %w", err)
	}
	if err := atomicfile.Write(l.stateFile, buf.Bytes()); err != nil {
		return fmt.Errorf("save ledger state: %w", err)
	}
	l.savedSeq = l.state.Seq
	return nil
}
