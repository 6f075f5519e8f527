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
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/signing"
)

// Verifier checks a bundle's signature and returns the signed statement.
type Verifier interface {
	Verify(bundle []byte) (signing.Verified, error)
}

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

func (e *VerifyError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// Report is the result of a successful verification.
type Report struct {
	Entries int
	Head    plumbing.Hash
	// Signers counts entries per verifying key source.
	Signers map[string]int
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
}

// Verify checks the evidence branch of repo: the branch is a single chain of
// commits from a root, each adding exactly the next entry file (and nothing
// that changes an earlier file); every bundle verifies against v; each
// statement is a ledger statement whose seq is its position and whose prev is
// the sha256 of the previous bundle's bytes; each commit's message is the
// entry's summary; the spec commits entries name exist; and no commit on the
// protected or proposal branches references an entry the ledger does not
// have. The error is a *VerifyError naming the first bad entry, wrapping
// ErrInvalid.
func Verify(ctx context.Context, repo *gitstore.Repo, v Verifier, opts VerifyOptions) (*Report, error) {
	rep := &Report{Signers: map[string]int{}}
	head, err := repo.Branch(Branch)
	if err != nil && !errors.Is(err, gitstore.ErrNotFound) {
		return nil, fmt.Errorf("verify ledger: %w", err)
	}
	var chain []*object.Commit
	for h := head; !h.IsZero(); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := repo.Commit(h)
		if err != nil {
			return nil, fmt.Errorf("verify ledger: %w", err)
		}
		chain = append(chain, c)
		switch len(c.ParentHashes) {
		case 0:
			h = plumbing.ZeroHash
		case 1:
			h = c.ParentHashes[0]
		default:
			// Position is only known once the chain is read; report it
			// by commit.
			return nil, &VerifyError{Commit: c.Hash, Reason: fmt.Sprintf("commit %s is a merge; the evidence branch must be a single chain", c.Hash)}
		}
	}
	rep.Head = head
	prev := ""
	var prevTree *object.Tree
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		seq := uint64(len(chain) - i)
		path := EntryPath(seq)
		fail := func(reason string, err error) error {
			return &VerifyError{Seq: seq, Path: path, Commit: c.Hash, Reason: reason, Err: err}
		}
		tree, err := c.Tree()
		if err != nil {
			return nil, fail("cannot read tree", err)
		}
		transcripts, err := checkTreeChange(prevTree, tree, path)
		if err != nil {
			return nil, fail("commit does not add exactly this entry", err)
		}
		prevTree = tree
		bundle, err := repo.ReadFile(c.Hash, path)
		if err != nil {
			return nil, fail("entry file missing", err)
		}
		verified, err := v.Verify(bundle)
		if err != nil {
			return nil, fail("signature does not verify against the trusted keys", err)
		}
		p, _, err := parseStatement(verified.Statement)
		if err != nil {
			return nil, fail("not a ledger statement", err)
		}
		if p.Seq != seq {
			return nil, fail(fmt.Sprintf("statement says seq %d at position %d: entries were removed, reordered or moved", p.Seq, seq), nil)
		}
		if p.Prev != prev {
			return nil, fail(fmt.Sprintf("prev is %q but the previous entry's digest is %q: the chain is broken", short(p.Prev), short(prev)), nil)
		}
		if msg := strings.TrimRight(c.Message, "\n"); msg != p.Summary {
			return nil, fail(fmt.Sprintf("commit message %q differs from the signed summary %q", msg, p.Summary), nil)
		}
		for _, t := range transcripts {
			if p.TranscriptDigest == "" || t != TranscriptPath(p.RunID) {
				return nil, fail(fmt.Sprintf("commit adds %s, which the entry does not sign", t), nil)
			}
		}
		if p.TranscriptDigest != "" {
			b, err := repo.ReadFile(c.Hash, TranscriptPath(p.RunID))
			if err != nil {
				return nil, fail("transcript missing", err)
			}
			if digest(b) != p.TranscriptDigest {
				return nil, fail(fmt.Sprintf("%s does not match the transcript digest the entry signed", TranscriptPath(p.RunID)), nil)
			}
		}
		if p.SpecCommit != "" {
			if _, err := repo.Commit(plumbing.NewHash(p.SpecCommit)); err != nil {
				return nil, fail(fmt.Sprintf("spec commit %s does not exist: the protected branch was rewritten", p.SpecCommit), nil)
			}
		}
		if p.Type == ProposalMerged && p.Proposal != nil && p.Proposal.MergeCommit != "" {
			if _, err := repo.Commit(plumbing.NewHash(p.Proposal.MergeCommit)); err != nil {
				return nil, fail(fmt.Sprintf("merge commit %s does not exist: the protected branch was rewritten", p.Proposal.MergeCommit), nil)
			}
		}
		rep.Signers[verified.Key.Source]++
		prev = digest(bundle)
	}
	rep.Entries = len(chain)
	if err := checkReferences(repo, uint64(len(chain)), opts); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkTreeChange checks that tree equals prev plus the file at path, plus
// files added under transcripts/, which it returns; nothing is modified or
// removed.
func checkTreeChange(prev, tree *object.Tree, path string) ([]string, error) {
	if prev == nil {
		prev = &object.Tree{}
	}
	changes, err := object.DiffTree(prev, tree)
	if err != nil {
		return nil, err
	}
	var transcripts []string
	added := false
	for _, ch := range changes {
		action, err := ch.Action()
		if err != nil {
			return nil, err
		}
		name := ch.To.Name
		if name == "" {
			name = ch.From.Name
		}
		switch {
		case action.String() != "Insert":
			return nil, fmt.Errorf("%s %s", strings.ToLower(action.String()), name)
		case name == path:
			added = true
		case strings.HasPrefix(name, "transcripts/"):
			transcripts = append(transcripts, name)
		default:
			return nil, fmt.Errorf("unexpected file %s", name)
		}
	}
	if !added {
		return nil, fmt.Errorf("%s not added", path)
	}
	return transcripts, nil
}

// checkReferences looks for Ledger-Entry trailers that point past the end of
// the ledger on the protected branch and on proposal branches.
func checkReferences(repo *gitstore.Repo, last uint64, opts VerifyOptions) error {
	max := opts.MaxTrailerScan
	if max == 0 {
		max = 10000
	}
	var heads []plumbing.Hash
	if opts.Protected != "" {
		if h, err := repo.Branch(opts.Protected); err == nil {
			heads = append(heads, h)
		}
	}
	proposals, err := repo.Branches("agents/")
	if err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(proposals)) {
		heads = append(heads, proposals[name])
	}
	for _, h := range heads {
		commits, err := repo.FirstParents(h, max)
		if err != nil {
			return fmt.Errorf("verify ledger: %w", err)
		}
		for _, c := range commits {
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
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err == nil && n > last {
					return &VerifyError{Seq: last + 1, Path: EntryPath(last + 1), Reason: fmt.Sprintf("missing: commit %s references entry %d but the ledger ends at %d (entries were cut off or the branch was force-pushed)", pc.Hash.String()[:12], n, last)}
				}
			}
		}
	}
	return nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "(none)"
	}
	return s
}
