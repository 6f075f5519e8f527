package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// ledgerUsage is the synopsis of the ledger subcommands.
const ledgerUsage = `Usage: reconciler ledger verify|log|show|export|checkpoint --repo URL [flags]

Commands:
  verify      check every entry's signature, chain and trust history
  log         list entries, filtered by agent, run, event type or time
  show        print one entry (SEQ) or every entry of a run (RUN_ID)
  export      write every entry with its bundle as JSON Lines
  checkpoint  print a signed checkpoint of the ledger's head

None of them writes to the repository: none needs --key or --identity.
Run 'reconciler ledger <command> -h' for a command's flags.`

func cmdLedger(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, ledgerUsage)
		return exitUsage
	}
	switch args[0] {
	case "verify":
		return cmdLedgerVerify(ctx, args[1:], stdout, stderr)
	case "log":
		return cmdLedgerLog(ctx, args[1:], stdout, stderr)
	case "show":
		return cmdLedgerShow(ctx, args[1:], stdout, stderr)
	case "export":
		return cmdLedgerExport(ctx, args[1:], stdout, stderr)
	case "checkpoint":
		return cmdLedgerCheckpoint(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, ledgerUsage)
		return exitOK
	}
	return usageError(stderr, "unknown ledger command %q: use verify, log, show, export or checkpoint", args[0])
}

// ledgerFlags are the flags of the read-only ledger commands.
type ledgerFlags struct {
	repo     string
	cacheDir string
	trusted  multiFlag
}

func (f *ledgerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.repo, "repo", "", "repository holding the agent-evidence branch: a local path, file:// or http(s):// `URL` (required)")
	fs.Var(&f.trusted, "trusted-key", "public key `FILE` the ledger's genesis entry must be signed by (repeatable; default: trust it on first use)")
	fs.StringVar(&f.cacheDir, "cache-dir", "", "reuse the on-disk mirror in `DIR`, as 'run --cache-dir' keeps it (default: a temporary on-disk mirror, removed afterwards, which never waits on a running daemon's cache lock)")
}

// open returns a read-only Ledger over the --repo's evidence branch, its
// genesis keys pinned by --trusted-key, and a func that releases the
// mirror. A missing --repo is a usage error (see errUsage).
func (f *ledgerFlags) open(ctx context.Context) (*ledger.Ledger, func(), error) {
	if f.repo == "" {
		return nil, nil, errUsage("--repo is required")
	}
	keys, err := pinnedKeys(f.trusted)
	if err != nil {
		return nil, nil, err
	}
	repo, closeRepo, err := openMirror(ctx, f.repo, f.cacheDir)
	if err != nil {
		return nil, nil, err
	}
	return ledger.New(repo, ledger.Options{TrustedKeys: keys}), closeRepo, nil
}

// openMirror opens an on-disk mirror of url: the one in cacheDir (see
// gitstore.Options.CacheDir), or, when cacheDir is "", a temporary one (on
// disk, so that a long ledger is not held in memory). The returned func
// closes it and removes a temporary one.
func openMirror(ctx context.Context, url, cacheDir string) (*gitstore.Repo, func(), error) {
	u, err := gitstore.NormalizeURL(url)
	if err != nil {
		return nil, nil, err
	}
	tmp := ""
	if cacheDir == "" {
		if tmp, err = os.MkdirTemp("", "reconciler-mirror-"); err != nil {
			return nil, nil, fmt.Errorf("temporary mirror: %w", err)
		}
		cacheDir = tmp
	}
	repo, err := gitstore.Open(ctx, u, gitstore.Options{CacheDir: cacheDir})
	if err != nil {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		return nil, nil, err
	}
	return repo, func() {
		_ = repo.Close()
		if tmp != "" {
			_ = os.RemoveAll(tmp)
		}
	}, nil
}

// pinnedKeys loads the --trusted-key files: the keys the ledger's genesis
// entry must be signed by. Keys committed to the repository are never
// trusted on their own: anyone who can push could add one.
func pinnedKeys(files []string) ([]signing.PublicKey, error) {
	var keys []signing.PublicKey
	for _, f := range files {
		k, err := signing.LoadPublicKey(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}
