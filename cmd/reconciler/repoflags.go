package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"runtime"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/metrics"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/signing"
)

// repoFlags are the flags of once and run.
type repoFlags struct {
	repo      string
	branch    string
	key       string
	identity  string
	logFormat string
	hourlyUSD float64
	cacheDir  string
	trusted   multiFlag
	newLedger bool
	sandbox   string
	parallel  int
}

func (f *repoFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.repo, "repo", "", "desired-state repository: a local path, file:// or http(s):// URL (required)")
	fs.StringVar(&f.branch, "branch", "main", "protected branch holding the desired state")
	fs.StringVar(&f.key, "key", os.Getenv("RECONCILER_KEY"), "ledger signing key written by 'reconciler keygen' (default $RECONCILER_KEY)")
	fs.StringVar(&f.identity, "identity", "Reconciler <reconciler@localhost>", "committer of proposals and ledger entries, \"Name <email>\"")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.Float64Var(&f.hourlyUSD, "human-hourly-usd", 100, "value of one hour of human work, for work-unit value and ROI")
	def, _ := gitstore.DefaultCacheDir()
	fs.StringVar(&f.cacheDir, "cache-dir", def, "directory of the on-disk mirror and saved ledger state, reused across passes and processes (\"\" keeps the mirror in memory)")
	fs.Var(&f.trusted, "trusted-key", "public key the ledger's genesis entry must be signed by (repeatable; default: trust it on first use)")
	fs.IntVar(&f.parallel, "concurrency", runtime.NumCPU(), "how many agents run at once (their ledger entries and proposals are still written in order per run)")
	fs.StringVar(&f.sandbox, "sandbox", string(sandbox.Strict), "what an exec agent's run does when the kernel lacks a sandbox mechanism (user, PID, network, IPC or mount namespaces, Landlock, rlimits): strict fails it, permissive runs it with what is available; either way the ledger records the mechanisms in force")
	fs.BoolVar(&f.newLedger, "start-new-ledger", false, "start a new ledger although commits reference entries of a missing one (deleted, or archived after an upgrade); the genesis entry records it")
}

// reconciler builds a Reconciler from the flags.
func (f *repoFlags) reconciler(ctx context.Context, stderr io.Writer, m *metrics.Metrics) (*reconcile.Reconciler, error) {
	if f.repo == "" {
		return nil, errUsage("--repo is required")
	}
	if f.key == "" {
		return nil, errUsage("--key is required: create one with 'reconciler keygen --out FILE'")
	}
	id, err := parseIdentity(f.identity)
	if err != nil {
		return nil, err
	}
	signer, err := signing.LoadSigner(f.key)
	if err != nil {
		return nil, err
	}
	logger, err := newLogger(stderr, f.logFormat)
	if err != nil {
		return nil, err
	}
	pins, err := pinnedKeys(f.trusted)
	if err != nil {
		return nil, err
	}
	mode, err := sandbox.ParseMode(f.sandbox)
	if err != nil {
		return nil, errUsage("--sandbox: " + err.Error())
	}
	if f.parallel < 1 {
		return nil, errUsage(fmt.Sprintf("--concurrency %d: use at least 1", f.parallel))
	}
	cfg := reconcile.Config{
		Concurrency: f.parallel,
		Repo:        f.repo, Branch: f.branch, Identity: id, Signer: signer,
		LookupEnv: os.LookupEnv, Logger: logger, Runners: runners(f.sandboxConfig(mode)),
		CacheDir: f.cacheDir, TrustedKeys: pins, StartNewLedger: f.newLedger,
	}
	if m != nil {
		cfg.Recorder = m
	}
	return reconcile.New(ctx, cfg)
}

type usageErr string

func (e usageErr) Error() string { return string(e) }

func errUsage(msg string) error { return usageErr(msg) }

func parseIdentity(s string) (object.Signature, error) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name == "" {
		return object.Signature{}, fmt.Errorf("--identity %q: want \"Name <email>\"", s)
	}
	return object.Signature{Name: a.Name, Email: a.Address}, nil
}

func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, errUsage(fmt.Sprintf("--log-format %q: use text or json", format))
}

// sandboxConfig is the exec agents' sandbox: in mode, and never showing
// them the signing key, the cache directory or a local origin (which the
// sandbox's view leaves out anyway, unless they lie in what it exposes).
func (f *repoFlags) sandboxConfig(mode sandbox.Mode) sandbox.Config {
	hide := []string{f.key, f.cacheDir}
	if !strings.Contains(f.repo, "://") || strings.HasPrefix(f.repo, "file://") {
		hide = append(hide, strings.TrimPrefix(f.repo, "file://"))
	}
	return sandbox.Config{Mode: mode, Hide: hide}
}

// runners are the agent runners of a production reconciler: exec agents,
// in sb, and model-backed agents on their provider's OpenAI-compatible
// endpoint with the key from the variable the provider names.
func runners(sb sandbox.Config) map[string]agent.Runner {
	return map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{Sandbox: sb},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: os.LookupEnv})
			},
			LookupEnv: os.LookupEnv,
		},
	}
}
