package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"
)

// stateVersion is the version of the state file's format.
const stateVersion = 1

// dedup is what was notified, kept in Config.StateFile between processes.
//
// Floor is the ledger seq up to which every notification was handled (sent,
// or refused by the receiver): entries at or below it are never notified
// again, so Sent need only hold the keys above it, and the keys of
// violations, whose entry the fold does not keep. Those are bounded by
// Config.MaxKeys, the oldest dropped first; the count of violations
// decides how many are new (see Notifier.newViolations).
type dedup struct {
	Version  int    `json:"version"`
	Instance string `json:"instance"`
	Floor    uint64 `json:"floor"`
	// Baseline says a pass took the ledger as a baseline (a state saved
	// before, with a stall, has none).
	Baseline bool `json:"baseline"`
	// Violations is the ledger's count of policy.violation entries when
	// every violation was last handled.
	Violations uint64 `json:"violations"`
	// Sent are the handled notifications by key.
	Sent map[string]sent `json:"sent"`
	// Owed are the violations found new and not handled yet.
	Owed map[string]bool `json:"owed,omitempty"`
	// Stalls are the stalls notified that no successful pass has cleared
	// yet, by key.
	Stalls map[string]sent `json:"stalls,omitempty"`
}

type sent struct {
	// Seq is the entry the notification was about, 0 for none.
	Seq uint64    `json:"seq,omitempty"`
	At  time.Time `json:"at"`
	// Refused says the receiver answered 4xx: the notification was given
	// up, not delivered.
	Refused bool `json:"refused,omitempty"`
	// Skipped says the notification was never sent: a violation whose
	// key had been pruned, found old by the count of violations.
	Skipped bool `json:"skipped,omitempty"`
}

func newDedup(instance string) *dedup {
	return &dedup{Version: stateVersion, Instance: instance, Sent: map[string]sent{}, Owed: map[string]bool{}, Stalls: map[string]sent{}}
}

// loadDedup reads the state file. It returns (nil, nil) when there is no
// file, or one that does not decode or is another instance's: the first
// pass then takes the ledger as a baseline. Only a file that cannot be
// read is an error.
func loadDedup(path, instance string) (*dedup, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read notification state: %w", err)
	}
	var d dedup
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Sprintf("the state file does not decode (%v)", err), nil
	}
	if d.Version != stateVersion {
		return nil, fmt.Sprintf("the state file has version %d, not %d", d.Version, stateVersion), nil
	}
	if d.Instance != instance {
		return nil, fmt.Sprintf("the state file is of instance %q", d.Instance), nil
	}
	if d.Sent == nil {
		d.Sent = map[string]sent{}
	}
	if d.Stalls == nil {
		d.Stalls = map[string]sent{}
	}
	if d.Owed == nil {
		d.Owed = map[string]bool{}
	}
	return &d, "", nil
}

// prune drops the keys at or below the floor, and the oldest keys of no
// entry beyond max.
func (d *dedup) prune(max int) {
	var loose []string
	for k, s := range d.Sent {
		switch {
		case s.Seq == 0:
			loose = append(loose, k)
		case s.Seq <= d.Floor:
			delete(d.Sent, k)
		}
	}
	if len(loose) <= max {
		return
	}
	slices.SortFunc(loose, func(a, b string) int { return d.Sent[a].At.Compare(d.Sent[b].At) })
	for _, k := range loose[:len(loose)-max] {
		delete(d.Sent, k)
	}
}

// encode returns the state file's content.
func (d *dedup) encode() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode notification state: %w", err)
	}
	return append(b, '\n'), nil
}
