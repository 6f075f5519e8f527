package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
)

// checkpointKeyName names the note keys ledger verify and ledger
// checkpoint create.
const checkpointKeyName = "reconciler-checkpoint"

// verifyFlags are the flags ledger verify and ledger checkpoint share.
type verifyFlags struct {
	ledgerFlags
	branch string
}

func (f *verifyFlags) register(fs *flag.FlagSet) {
	f.ledgerFlags.register(fs)
	fs.StringVar(&f.branch, "branch", "main", "protected `BRANCH`: a Ledger-Entry trailer on it (or on an agents/* branch) naming an entry the ledger lacks means the ledger was cut")
}

// verify verifies the --repo's ledger. The caller must close repo.
func (f *verifyFlags) verify(ctx context.Context) (*gitstore.Repo, func(), *ledger.Report, error) {
	if f.repo == "" {
		return nil, nil, nil, errUsage("--repo is required")
	}
	keys, err := pinnedKeys(f.trusted)
	if err != nil {
		return nil, nil, nil, err
	}
	repo, closeRepo, err := openMirror(ctx, f.repo, f.cacheDir)
	if err != nil {
		return nil, nil, nil, err
	}
	rep, err := ledger.Verify(ctx, repo, ledger.VerifyOptions{Protected: f.branch, TrustedKeys: keys})
	return repo, closeRepo, rep, err
}

func cmdLedgerVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger verify", "ledger verify --repo URL [--branch main] [--trusted-key FILE]... [--checkpoint FILE [--checkpoint-key FILE]] [--format text|json]", stderr)
	var f verifyFlags
	f.register(fs)
	checkpoint := fs.String("checkpoint", "", "signed checkpoint `FILE`: fail unless the ledger extends the one there, then write the new one there (created when missing)")
	cpKey := fs.String("checkpoint-key", "", "note signing key `FILE` checkpoints are signed with, created when missing, its verifier key in FILE.pub (default: the --checkpoint FILE with .key appended)")
	format := fs.String("format", "text", "output format: text or json")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if f.repo == "" {
		return usageError(stderr, "--repo is required")
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	if *cpKey != "" && *checkpoint == "" {
		return usageError(stderr, "--checkpoint-key needs --checkpoint FILE")
	}
	if *cpKey == "" && *checkpoint != "" {
		*cpKey = *checkpoint + ".key"
	}
	if *cpKey != "" {
		warnKeyMode(stderr, *cpKey)
	}
	defer ledger.LimitMemoryForVerify()()
	repo, closeRepo, rep, verr := f.verify(ctx)
	if closeRepo != nil {
		defer closeRepo()
	}
	var cp *checkpointResult
	if verr == nil && *checkpoint != "" {
		cp, verr = updateCheckpoint(repo, rep, *checkpoint, *cpKey)
	}
	if *format == "json" {
		out := map[string]any{"valid": verr == nil}
		if verr != nil {
			out["error"] = verr.Error()
			var ve *ledger.VerifyError
			if errors.As(verr, &ve) {
				out["entry"] = ve.Seq
				out["path"] = ve.Path
			}
		} else {
			out["entries"] = rep.Entries
			out["head"] = rep.Head.String()
			out["signers"] = rep.Signers
			out["genesis_keys"] = keyIDs(rep.GenesisKeys)
			out["pinned"] = rep.Pinned
			if rep.StartedOver != "" {
				out["started_over"] = rep.StartedOver
			}
			if cp != nil {
				out["checkpoint"] = map[string]any{"file": cp.file, "previous_entries": cp.prev, "entries": rep.Entries}
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}
	if verr != nil {
		return fail(stderr, fmt.Errorf("ledger verify: %w", verr))
	}
	if *format == "text" {
		var signers []string
		for _, k := range slices.Sorted(maps.Keys(rep.Signers)) {
			signers = append(signers, fmt.Sprintf("%s (%d)", k, rep.Signers[k]))
		}
		fmt.Fprintf(stdout, "ledger OK: %d entries on %s verified (head %s), chain and sequence intact\n", rep.Entries, ledger.Branch, shortHead(rep))
		if len(signers) > 0 {
			fmt.Fprintf(stdout, "signed by: %s\n", strings.Join(signers, ", "))
		}
		if rep.Entries > 0 {
			if rep.Pinned {
				fmt.Fprintf(stdout, "genesis keys: %s, the genesis entry signed by a --trusted-key\n", strings.Join(keyIDs(rep.GenesisKeys), ", "))
			} else {
				fmt.Fprintf(stdout, "genesis keys: %s, trusted on first use: pin them with --trusted-key\n", strings.Join(keyIDs(rep.GenesisKeys), ", "))
			}
		}
		if rep.StartedOver != "" {
			fmt.Fprintf(stdout, "this ledger started over: %s\n", rep.StartedOver)
		}
		if cp != nil {
			if cp.prev >= 0 {
				fmt.Fprintf(stdout, "checkpoint %s: the ledger extends its %d entries; now %d entries (head %s)\n", cp.file, cp.prev, rep.Entries, shortHead(rep))
			} else {
				fmt.Fprintf(stdout, "checkpoint %s: written, %d entries (head %s)\n", cp.file, rep.Entries, shortHead(rep))
			}
		}
	}
	return exitOK
}

// checkpointResult is what ledger verify did with --checkpoint: the number
// of entries the previous checkpoint recorded (-1 when there was none).
type checkpointResult struct {
	file string
	prev int64
}

// updateCheckpoint checks that the verified ledger extends the checkpoint in
// file, when there is one, then writes the ledger's checkpoint there.
func updateCheckpoint(repo *gitstore.Repo, rep *ledger.Report, file, keyFile string) (*checkpointResult, error) {
	signer, verifier, err := ledger.LoadOrCreateNoteKey(keyFile, checkpointKeyName)
	if err != nil {
		return nil, err
	}
	res := &checkpointResult{file: file, prev: -1}
	origin := ledger.Origin(repo)
	switch b, err := os.ReadFile(file); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read checkpoint: %w", err)
	default:
		old, err := ledger.OpenCheckpoint(b, verifier)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w (signed with another key than %s.pub?)", file, err, keyFile)
		}
		if old.Origin != origin {
			return nil, fmt.Errorf("checkpoint %s is of %q, not of %q: pass the --repo it was written for, or another --checkpoint file", file, old.Origin, origin)
		}
		if err := old.Check(repo); err != nil {
			return nil, err
		}
		res.prev = int64(old.Size)
	}
	msg, err := ledger.NewCheckpoint(rep, origin).Sign(signer)
	if err != nil {
		return nil, err
	}
	if err := ledger.SaveCheckpoint(file, msg); err != nil {
		return nil, err
	}
	return res, nil
}

func cmdLedgerCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger checkpoint", "ledger checkpoint --repo URL [--branch main] [--trusted-key FILE]... [--checkpoint-key FILE]", stderr)
	var f verifyFlags
	f.register(fs)
	cpKey := fs.String("checkpoint-key", "", "note signing key `FILE`, created when missing, its verifier key in FILE.pub (default: reconciler/checkpoint.key in the user's config directory)")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if f.repo == "" {
		return usageError(stderr, "--repo is required")
	}
	if *cpKey == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return fail(stderr, fmt.Errorf("ledger checkpoint: %w: pass --checkpoint-key FILE", err))
		}
		*cpKey = filepath.Join(dir, "reconciler", "checkpoint.key")
		if err := os.MkdirAll(filepath.Dir(*cpKey), 0o700); err != nil {
			return fail(stderr, fmt.Errorf("ledger checkpoint: %w", err))
		}
	}
	warnKeyMode(stderr, *cpKey)
	signer, _, err := ledger.LoadOrCreateNoteKey(*cpKey, checkpointKeyName)
	if err != nil {
		return fail(stderr, fmt.Errorf("ledger checkpoint: %w", err))
	}
	repo, closeRepo, rep, err := f.verify(ctx)
	if closeRepo != nil {
		defer closeRepo()
	}
	if err != nil {
		return fail(stderr, fmt.Errorf("ledger checkpoint: %w", err))
	}
	msg, err := ledger.NewCheckpoint(rep, ledger.Origin(repo)).Sign(signer)
	if err != nil {
		return fail(stderr, fmt.Errorf("ledger checkpoint: %w", err))
	}
	_, _ = stdout.Write(msg)
	return exitOK
}

func shortHead(rep *ledger.Report) string {
	if rep.Head.IsZero() {
		return "none"
	}
	return rep.Head.String()[:12]
}

func keyIDs(keys []ledger.Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}
