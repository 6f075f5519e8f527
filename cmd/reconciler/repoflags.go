package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"path/filepath"
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
	sandbox   sandboxFlags
	parallel  int
	// forgeAllow are the base URLs a spec's forge block may name; the
	// forge's token is sent to no other.
	forgeAllow multiFlag
	instance   string
	// otlpEndpoint turns on trace export (tracing.go).
	otlpEndpoint string
	// fs is the FlagSet the flags were registered on: its positional
	// arguments, which once and run do not take, are a usage error.
	fs *flag.FlagSet
}

func (f *repoFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.repo, "repo", "", "desired-state repository: a local path, file:// or http(s):// URL (required)")
	fs.StringVar(&f.branch, "branch", "main", "protected branch holding the desired state")
	fs.StringVar(&f.key, "key", os.Getenv("RECONCILER_KEY"), "ledger signing key written by 'reconciler keygen' (default $RECONCILER_KEY)")
	fs.StringVar(&f.identity, "identity", "Reconciler <reconciler@localhost>", "committer of proposals and ledger entries, as `\"Name <email>\"`")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.Float64Var(&f.hourlyUSD, "human-hourly-usd", 100, "value of one hour of human work, for work-unit value and ROI")
	def, _ := gitstore.DefaultCacheDir()
	fs.StringVar(&f.cacheDir, "cache-dir", def, "directory of the on-disk mirror and saved ledger state, reused across passes and processes (\"\" keeps the mirror in memory)")
	fs.Var(&f.trusted, "trusted-key", "public key the ledger's genesis entry must be signed by (repeatable; default: trust it on first use)")
	fs.IntVar(&f.parallel, "concurrency", runtime.NumCPU(), "how many agents run at once (their ledger entries and proposals are still written in order per run)")
	f.sandbox.register(fs)
	fs.Var(&f.forgeAllow, "forge-allow", "base URL a forge block of providers.hcl may name, such as https://gitea.example.com/ (repeatable): the forge's token is sent only to one of these, since anyone who can push can edit the block")
	host, _ := os.Hostname()
	fs.StringVar(&f.instance, "instance", host, "names this reconciler in its pull requests' commit status context (reconciler/<instance>), so two instances never overwrite each other's status")
	otlpFlag(fs, &f.otlpEndpoint)
	fs.BoolVar(&f.newLedger, "start-new-ledger", false, "start a new ledger although commits reference entries of a missing one (deleted, or archived after an upgrade); the genesis entry records it")
}

// reconciler builds a Reconciler from the flags. Usage problems (a
// missing --repo or --key, a positional argument, a malformed --identity)
// are a usageErr. A --key file others can read is warned about on stderr.
func (f *repoFlags) reconciler(ctx context.Context, stderr io.Writer, m *metrics.Metrics) (*reconcile.Reconciler, error) {
	if f.fs != nil && f.fs.NArg() > 0 {
		return nil, errUsage(fmt.Sprintf("%s takes no arguments, got %q", strings.TrimPrefix(f.fs.Name(), "reconciler "), f.fs.Args()))
	}
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
	warnKeyMode(stderr, f.key)
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
	mode, err := f.sandbox.parse()
	if err != nil {
		return nil, err
	}
	if f.parallel < 1 {
		return nil, errUsage(fmt.Sprintf("--concurrency %d: use at least 1", f.parallel))
	}
	cfg := reconcile.Config{
		Concurrency: f.parallel,
		Repo:        f.repo, Branch: f.branch, Identity: id, Signer: signer,
		LookupEnv: os.LookupEnv, Logger: logger, Runners: cachedRunners(f.sandboxConfig(mode), f.cacheDir),
		CacheDir: f.cacheDir, TrustedKeys: pins, StartNewLedger: f.newLedger,
		ForgeFactory: forgeFactory(os.LookupEnv, f.instance, f.branch), ForgeAllowed: f.forgeAllow,
	}
	if m != nil {
		cfg.Recorder = m
	}
	return reconcile.New(ctx, cfg)
}

type usageErr string

func (e usageErr) Error() string { return string(e) }

func errUsage(msg string) error { return usageErr(msg) }

// sandboxFlags are the exec agents' sandbox flags, shared by the commands
// that run agents.
type sandboxFlags struct{ mode, helper string }

func (s *sandboxFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.mode, "sandbox", string(sandbox.Strict), "what an exec agent's run does when the kernel lacks a sandbox mechanism (user, PID, network, IPC or mount namespaces, Landlock, rlimits): strict fails it, permissive runs it with what is available; either way the ledger records the mechanisms in force")
	fs.StringVar(&s.helper, "sandbox-helper", "", "`PATH` of the sandbox's helper program (default: "+sandbox.HelperName+" next to this program when it is installed there, else this program itself); "+sandbox.HelperName+" starts each sandboxed command several times faster")
}

// parse checks --sandbox (a usageErr when bad) and installs
// --sandbox-helper (an error when it does not answer as this build's
// helper).
func (s *sandboxFlags) parse() (sandbox.Mode, error) {
	mode, err := sandbox.ParseMode(s.mode)
	if err != nil {
		return "", errUsage("--sandbox: " + err.Error())
	}
	if err := sandbox.UseHelper(s.helper); err != nil {
		return "", fmt.Errorf("--sandbox-helper: %w", err)
	}
	return mode, nil
}

// parseIdentity parses --identity; a malformed one is a usageErr.
func parseIdentity(s string) (object.Signature, error) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name == "" {
		return object.Signature{}, errUsage(fmt.Sprintf("--identity %q: want the form \"Name <email>\", such as \"Reconciler <reconciler@example.com>\"", s))
	}
	return object.Signature{Name: a.Name, Email: a.Address}, nil
}

// warnKeyMode warns on stderr, as ssh does, when the private key file
// path can be read or written by its group or others (mode & 0o077). It
// warns instead of refusing, as ssh would: a Kubernetes Secret volume
// mounts its files 0644 unless defaultMode says otherwise, and refusing
// would crash-loop such a deployment. A file that cannot be stat'ed is
// left to the loader to report.
func warnKeyMode(stderr io.Writer, path string) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		fmt.Fprintf(stderr, "reconciler: WARNING: UNPROTECTED PRIVATE KEY FILE: permissions %04o for %q are too open: the key must not be accessible by others; run 'chmod 600 %s' (or set the Secret's defaultMode to 0400)\n", perm, path, path)
	}
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
func runners(sb sandbox.Config) map[string]agent.Runner { return cachedRunners(sb, "") }

// cachedRunners are runners whose model agents with cache = true share
// the response cache in <cacheDir>/responses; "" caches nothing. Exec
// agents never see it: the sandbox hides the cache directory.
func cachedRunners(sb sandbox.Config, cacheDir string) map[string]agent.Runner {
	var cache *agent.ResponseCache
	if cacheDir != "" {
		cache = agent.NewResponseCache(filepath.Join(cacheDir, "responses"), 0)
	}
	return map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{Sandbox: sb},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: os.LookupEnv})
			},
			LookupEnv: os.LookupEnv,
			Cache:     cache,
		},
	}
}
