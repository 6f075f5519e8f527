package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

func cmdLedger(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "Usage: reconciler ledger verify|log --repo URL [flags]")
		return exitUsage
	}
	switch args[0] {
	case "verify":
		return cmdLedgerVerify(ctx, args[1:], stdout, stderr)
	case "log":
		return cmdLedgerLog(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stderr, "Usage: reconciler ledger verify|log --repo URL [flags]")
		return exitOK
	}
	return usageError(stderr, "unknown ledger command %q: use verify or log", args[0])
}

func openRepo(ctx context.Context, url string) (*gitstore.Repo, error) {
	u, err := gitstore.NormalizeURL(url)
	if err != nil {
		return nil, err
	}
	return gitstore.Open(ctx, u, gitstore.Options{})
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

func cmdLedgerVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger verify", "ledger verify --repo URL [--branch main] [--trusted-key FILE]... [--format text|json]", stderr)
	repoURL := fs.String("repo", "", "repository holding the agent-evidence branch (required)")
	branch := fs.String("branch", "main", "protected branch: its .reconciler/keys/*.pub are trusted")
	format := fs.String("format", "text", "output format: text or json")
	var keyFiles multiFlag
	fs.Var(&keyFiles, "trusted-key", "public key file to trust besides .reconciler/keys/*.pub (repeatable)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *repoURL == "" {
		return usageError(stderr, "--repo is required")
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	repo, err := openRepo(ctx, *repoURL)
	if err != nil {
		return fail(stderr, err)
	}
	keys, err := pinnedKeys(keyFiles)
	if err != nil {
		return fail(stderr, fmt.Errorf("ledger verify: %w", err))
	}
	rep, verr := ledger.Verify(ctx, repo, ledger.VerifyOptions{Protected: *branch, TrustedKeys: keys})
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
		head := "none"
		if !rep.Head.IsZero() {
			head = rep.Head.String()[:12]
		}
		fmt.Fprintf(stdout, "ledger OK: %d entries on %s verified (head %s), chain and sequence intact\n", rep.Entries, ledger.Branch, head)
		if len(signers) > 0 {
			fmt.Fprintf(stdout, "signed by: %s\n", strings.Join(signers, ", "))
		}
	}
	return exitOK
}

func cmdLedgerLog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ledger log", "ledger log --repo URL [--agent NAME] [--format text|json]", stderr)
	repoURL := fs.String("repo", "", "repository holding the agent-evidence branch (required)")
	agentName := fs.String("agent", "", "only entries of this agent")
	format := fs.String("format", "text", "output format: text or json")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *repoURL == "" {
		return usageError(stderr, "--repo is required")
	}
	repo, err := openRepo(ctx, *repoURL)
	if err != nil {
		return fail(stderr, err)
	}
	entries, err := ledger.New(repo, ledger.Options{}).Entries(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	enc := json.NewEncoder(stdout)
	for _, e := range entries {
		if *agentName != "" && e.Agent != *agentName {
			continue
		}
		if *format == "json" {
			_ = enc.Encode(e.Predicate)
			continue
		}
		fmt.Fprintf(stdout, "%6d  %s  %s\n", e.Seq, e.Time.Format("2006-01-02 15:04:05Z"), e.Summary)
	}
	return exitOK
}
