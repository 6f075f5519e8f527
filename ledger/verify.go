package ledger

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/signing"
)

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("ledger verification failed")

// VerifyError names the first bad entry.
type VerifyError struct {
	Seq    uint64
	Path   string
	Commit plumbing.Hash
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "entry %d", e.Seq)
	if e.Path != "" {
		fmt.Fprintf(&b, " (%s", e.Path)
		if !e.Commit.IsZero() {
			fmt.Fprintf(&b, ", commit %s", e.Commit.String()[:12])
		}
		b.WriteString(")")
	}
	b.WriteString(": " + e.Reason)
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *VerifyError) Unwrap() []error {
	if errors.Is(e.Err, ErrUntrusted) || errors.Is(e.Err, ErrInvalid) {
		return []error{e.Err}
	}
	return []error{ErrInvalid, e.Err}
}

// Report is the result of a successful verification.
type Report struct {
	Entries int
	Head    plumbing.Hash
	// Signers counts entries per verifying key ID.
	Signers map[string]int
	// Keys are the keys trusted after the last entry; GenesisKeys those
	// the genesis entry named.
	Keys, GenesisKeys []Key
	// Pinned reports whether the genesis signer was checked against
	// VerifyOptions.TrustedKeys; otherwise the genesis keys were trusted
	// on first use.
	Pinned bool
	// StartedOver is the reason a ledger that started over records in its
	// genesis entry (see Ledger.InitOver); "" for one that did not.
	StartedOver string

	genesisSubject plumbing.Hash
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Protected is the protected branch whose commits (and those of every
	// agents/* proposal branch) may reference entries through Ledger-Entry
	// trailers; a reference past the end of the ledger means it was cut.
	Protected string
	// MaxTrailerScan bounds how many commits of the protected branch are
	// scanned for trailers; 0 means 10000.
	MaxTrailerScan int
	// TrustedKeys pins the keys the genesis entry must be signed by;
	// empty means trusting the genesis entry's own keys on first use.
	TrustedKeys []signing.PublicKey
}

// Verify checks the evidence branch of repo: the branch is a single chain of
// commits from a root, each adding exactly the next entry file (and nothing
// that changes an earlier file; transcripts/ only gains the files the entries
// sign); entry 1 is a genesis entry and every bundle verifies against the
// keys trusted at its position (the genesis keys, then those of each
// keys.changed entry, which a key trusted before it signed); each statement
// is a ledger statement whose seq is its position and whose prev is the
// sha256 of the previous bundle's bytes; each commit's message is the
// entry's summary; the spec commits entries name exist; and no commit on the
// protected or proposal branches references an entry the ledger does not
// have. The error is a *VerifyError naming the first bad entry, wrapping
// ErrInvalid, ErrUntrusted or (for a cut ledger) ErrRewritten.
//
// Verify reads each commit's trees on the entry's path only, comparing them
// with its parent's (so it is linear in the ledger's length), verifies
// signatures on runtime.NumCPU() workers, and holds a bounded number of
// bundles at a time.
func Verify(ctx context.Context, repo *gitstore.Repo, opts VerifyOptions) (*Report, error) {
	rep := &Report{Signers: map[string]int{}, Pinned: len(opts.TrustedKeys) > 0}
	head, err := repo.Branch(Branch)
	switch {
	case errors.Is(err, gitstore.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("verify ledger: %w", err)
	default:
		rep.Head = head
		t := trust{pinned: opts.TrustedKeys}
		err := scan(ctx, repo, head, position{trust: t}, &t, scanOptions{commits: true}, func(e Entry) error {
			if e.Type == Genesis {
				rep.GenesisKeys = e.Keys
				if e.Error != "" {
					rep.StartedOver, rep.genesisSubject = e.Error, plumbing.NewHash(e.Subject)
				}
			}
			if e.Type == Genesis || e.Type == KeysChanged {
				rep.Keys = e.Keys
			}
			rep.Signers[e.Signer]++
			rep.Entries++
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := checkReferences(repo, uint64(rep.Entries), rep.genesisSubject, opts); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkReferences looks for Ledger-Entry trailers that point past the end of
// the ledger on the protected branch and on proposal branches, down to
// stop (the commit a ledger that started over started at: the trailers
// before it name the previous ledger's entries).
func checkReferences(repo *gitstore.Repo, last uint64, stop plumbing.Hash, opts VerifyOptions) error {
	n, commit, err := MaxReference(repo, opts.Protected, opts.MaxTrailerScan, stop)
	if err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	if n > last {
		return &VerifyError{Seq: last + 1, Path: EntryPath(last + 1), Err: ErrRewritten,
			Reason: fmt.Sprintf("missing: commit %s references entry %d but the ledger ends at %d (entries were cut off or the branch was force-pushed)", commit.String()[:12], n, last)}
	}
	return nil
}

// MaxReference returns the highest entry number a Ledger-Entry trailer
// names, and the commit carrying it, among the last max first-parent
// commits of the protected branch (and the commits they merge) and of every
// agents/* proposal branch, each walk ending early at stop when it is not
// zero; 0 when there is none. max 0 means 10000.
func MaxReference(repo *gitstore.Repo, protected string, max int, stop plumbing.Hash) (uint64, plumbing.Hash, error) {
	if max == 0 {
		max = 10000
	}
	var heads []plumbing.Hash
	if protected != "" {
		if h, err := repo.Branch(protected); err == nil {
			heads = append(heads, h)
		}
	}
	proposals, err := repo.Branches("agents/")
	if err != nil {
		return 0, plumbing.ZeroHash, err
	}
	for _, name := range slices.Sorted(maps.Keys(proposals)) {
		heads = append(heads, proposals[name])
	}
	var best uint64
	var at plumbing.Hash
	for _, h := range heads {
		commits, err := repo.FirstParents(h, max)
		if err != nil {
			return 0, plumbing.ZeroHash, err
		}
		for _, c := range commits {
			if !stop.IsZero() && c.Hash == stop {
				break
			}
			for _, parent := range append([]plumbing.Hash{c.Hash}, c.ParentHashes...) {
				pc := c
				if parent != c.Hash {
					if pc, err = repo.Commit(parent); err != nil {
						continue
					}
				}
				v, ok := gitstore.TrailerValue(pc.Message, "Ledger-Entry")
				if !ok {
					continue
				}
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil && n > best {
					best, at = n, pc.Hash
				}
			}
		}
	}
	return best, at, nil
}
