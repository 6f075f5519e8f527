package reconcile

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hashicorp/hcl/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/signing"
)

// Recorder observes what the reconciler does, for metrics: the ledger's
// fold after every pass (rebuilt from the ledger at start, so totals
// survive a restart), and each pass.
type Recorder interface {
	Observe(s *ledger.State)
	Pass(d time.Duration, err error)
}

// SpecRecorder is a Recorder that also observes the spec in force after
// each pass (nil before one loaded) and whether the spec at the head of
// the protected branch loaded: metrics export a zero series for every
// agent of the spec from the start.
type SpecRecorder interface {
	ObserveSpec(spec *hclspec.Spec, loaded bool)
}

// Config configures a Reconciler.
type Config struct {
	// Repo is the desired-state repository: a local path, file:// or
	// http(s):// URL.
	Repo string
	// Branch is the protected branch; "" means main.
	Branch string
	// Identity commits proposals and ledger entries. It never counts as a
	// reviewer, nor do the agents' own identities derived from it.
	Identity object.Signature
	// Signer signs ledger entries.
	Signer ledger.Signer
	// Runners run agents, by provider kind. Nil means the exec runner only.
	Runners map[string]agent.Runner
	// LookupEnv resolves env() in providers.hcl; nil means unset.
	LookupEnv func(string) (string, bool)
	Logger    *slog.Logger
	Recorder  Recorder
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// WorkDir holds temporary workspaces; "" means os.TempDir().
	WorkDir string
	// CacheDir holds the on-disk mirror of the repository and the saved
	// ledger state, reused across passes and processes; "" keeps the
	// mirror in memory (the whole repository is fetched by every process).
	CacheDir string
	// TrustedKeys pins the keys the ledger's genesis entry must be signed
	// by; empty trusts the genesis entry's keys on first use.
	TrustedKeys []signing.PublicKey
	// Claimant names this process in the claims it makes on runs
	// (run.started, run.abandoned, run.retried); "" means host/cache-<id>
	// with a CacheDir (one process at a time holds a cache), else
	// host/pid/random. Two live processes must never share one.
	Claimant string
	// StartNewLedger starts a ledger when there is none although commits
	// reference entries of one (it was deleted, or archived after an
	// upgrade); the genesis entry records why. Without it the reconciler
	// stalls instead. An operator's deliberate, recorded act: never a
	// default.
	StartNewLedger bool
	// Concurrency is how many agents run at once; 0 means one per core.
	Concurrency int
	// Forge makes the forge proposals are reviewed on, given the opened
	// repository, whatever the spec says; nil means the forge the spec's
	// forge block names (ForgeFactory), or the git-native one (forge.Git)
	// without one.
	Forge func(*gitstore.Repo) Forge
	// ForgeFactory builds the forge a spec's forge block names; nil
	// refuses forge blocks (the pass stalls).
	ForgeFactory ForgeFactory
	// ForgeAllowed are the base URLs the operator allows a forge block to
	// name (--forge-allow): the forge's token is sent only to one of them.
	ForgeAllowed []string
	// TracerProvider makes the spans of passes, runs, model calls and
	// tool calls (trace.go); nil means OpenTelemetry's global provider,
	// a no-op one unless tracing.Setup installed another.
	TracerProvider trace.TracerProvider
}

// Reconciler reconciles one repository.
type Reconciler struct {
	cfg    Config
	log    *slog.Logger
	repo   *gitstore.Repo
	ledger *ledger.Ledger
	forge  Forge
	// forgeKey is the forge block r.forge was built for (forgeKey).
	forgeKey string
	// shown is, per open run, the approval status last shown on the forge
	// (approvalStatus), so that it is set only when it changes.
	shown map[string]string

	spec       *hclspec.Spec
	specCommit plumbing.Hash
	// specs caches the specs merges were verified against (the protected
	// branch before each merge); nil for one that did not load.
	specs map[plumbing.Hash]*hclspec.Spec
	// keysHead is the protected-branch head whose key changes were last
	// checked.
	keysHead plumbing.Hash
	// claimant names this process in its claims on runs.
	claimant string

	mu     sync.Mutex
	status Status
	// revertView is the ledger's runs as the last pass saw them, for
	// RevertTarget (revert.go); guarded by mu.
	revertView *revertFacts

	recalled recallCache // what recall read of transcripts (recall.go)
}

// New opens the repository's mirror (on disk under CacheDir, when set)
// without fetching: every pass fetches first. It fails when the cache is
// unusable or locked by another process. Whether
// the ledger can be trusted is checked by every pass (see Reconcile).
func New(ctx context.Context, cfg Config) (*Reconciler, error) {
	if cfg.Branch == "" {
		cfg.Branch = "main"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Runners == nil {
		cfg.Runners = map[string]agent.Runner{hclspec.ProviderExec: agent.Exec{}}
	}
	if cfg.Identity.Email == "" || cfg.Identity.Name == "" {
		return nil, errors.New("reconciler identity needs a name and an email, like \"Reconciler <reconciler@example.com>\"")
	}
	url, err := gitstore.NormalizeURL(cfg.Repo)
	if err != nil {
		return nil, err
	}
	// Every pass starts with a fetch: Open need not fetch too, and the
	// reconciler starts (and reports why) while the remote is unreachable.
	repo, err := gitstore.Open(ctx, url, gitstore.Options{CacheDir: cfg.CacheDir, NoFetch: true})
	if err != nil {
		return nil, err
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger, repo: repo, claimant: cfg.Claimant, forge: newForge(cfg, repo), specs: map[plumbing.Hash]*hclspec.Spec{}, shown: map[string]string{}}
	if r.claimant == "" {
		r.claimant = defaultClaimant(repo.StateDir())
	}
	var stateFile string
	if dir := repo.StateDir(); dir != "" {
		stateFile = filepath.Join(dir, "ledger.state")
	}
	r.ledger = ledger.New(repo, ledger.Options{
		Signer: cfg.Signer, Identity: cfg.Identity, Now: cfg.Now,
		TrustedKeys: cfg.TrustedKeys, StateFile: stateFile,
	})
	// Totals survive a restart from the moment the process starts, also
	// while the remote is unreachable: the saved state is what this
	// process's cache last verified.
	r.ledger.Load()
	if cfg.Recorder != nil {
		cfg.Recorder.Observe(r.ledger.State())
	}
	return r, nil
}

// Close saves the ledger's state and releases the repository's cache.
func (r *Reconciler) Close() error {
	return errors.Join(r.ledger.Save(), r.repo.Close())
}

// Repo returns the repository mirror.
func (r *Reconciler) Repo() *gitstore.Repo { return r.repo }

// Ledger returns the ledger.
func (r *Reconciler) Ledger() *ledger.Ledger { return r.ledger }

// Spec returns the spec in force (the last one that loaded) and its commit.
func (r *Reconciler) Spec() (*hclspec.Spec, plumbing.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec, r.specCommit
}

// pass is the context of one reconcile pass.
type pass struct {
	head  plumbing.Hash // protected branch head
	state *ledger.State
	// diags of the spec at head when it did not load.
	diags hcl.Diagnostics
	// until stops runs after this phase (Advance); zero runs them through.
	until Phase
	// mu guards the pass's state and the ledger while agents run in
	// parallel (runAgents): held by each agent's goroutine except while its
	// agent works.
	mu sync.Mutex
	// batch groups the appends and pushes of runs driven in parallel
	// (runAgents); nil appends at once.
	batch *batcher
	// work bounds the agents working at once (Config.Concurrency).
	work chan struct{}
	// failed holds errors that do not stop the pass's later steps (one
	// proposal that cannot be observed); the pass fails with them at its
	// end.
	failed []error
	// requests are the pass's requests (Pass), outcomes its answers.
	requests []Request
	outcomes []RequestOutcome
}

type step func(ctx context.Context, p *pass) error

// Reconcile runs one pass: fetch, load the spec, observe proposals, run due
// agents. It stops at the first step that fails and always updates the
// status. Errors of one agent do not stop the others; they are joined.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	_, err := r.Pass(ctx, nil)
	return err
}

func (r *Reconciler) reconcile(ctx context.Context, p *pass) (err error) {
	start := r.cfg.Now()
	ctx, span := r.startPass(ctx, p) // trace.go
	defer func() { r.endPass(span, p, err) }()
	r.beginPass()
	defer func() {
		// The caller reports a failed pass (the daemon once per distinct
		// error, once and the controller with their own outcome): logging
		// it here too would repeat it at every retry.
		if err != nil {
			r.log.Debug("reconcile pass ended with an error", "err", err)
		}
		if serr := r.ledger.Save(); serr != nil {
			r.log.Warn("save ledger state", "err", serr)
		}
		if r.cfg.Recorder != nil {
			r.cfg.Recorder.Observe(r.ledger.State())
			if sr, ok := r.cfg.Recorder.(SpecRecorder); ok {
				sr.ObserveSpec(r.spec, r.spec != nil && r.specCommit == p.head && len(p.diags) == 0)
			}
		}
		r.summarize(p, err)
		if p.state != nil {
			r.refreshRevertView(p.state) // what the daemon's revert API checks against (revert.go)
		}
		if r.cfg.Recorder != nil {
			r.cfg.Recorder.Pass(time.Since(start), err)
		}
	}()
	for _, s := range []step{r.fetch, r.trustLedger, r.checkKeys, r.loadSpec, r.specForge, r.observe, r.mergedSuperseded, r.finishSupersedes, r.runAgents} {
		if err := s(ctx, p); err != nil {
			return errors.Join(append(p.failed, err)...)
		}
	}
	return errors.Join(p.failed...)
}

func (r *Reconciler) fetch(ctx context.Context, p *pass) error {
	if err := r.repo.Fetch(ctx); err != nil {
		return err
	}
	head, err := r.repo.Branch(r.cfg.Branch)
	if err != nil {
		return fmt.Errorf("protected branch %q: %w", r.cfg.Branch, err)
	}
	p.head = head
	return nil
}

// append records events and refreshes the pass's view of the ledger.
func (r *Reconciler) append(ctx context.Context, p *pass, events ...ledger.Event) ([]ledger.Entry, error) {
	return r.appendIf(ctx, p, nil, events...)
}

// appendIf records events if check, given the ledger's state as it is
// when they are appended, allows it.
func (r *Reconciler) appendIf(ctx context.Context, p *pass, check func(*ledger.State) error, events ...ledger.Event) ([]ledger.Entry, error) {
	var stored []ledger.Entry
	var err error
	if p.batch != nil {
		stored, err = r.batchedAppend(ctx, p, check, events)
	} else {
		stored, err = r.ledger.AppendIf(ctx, check, events...)
		err = ledgerError(err)
	}
	if err != nil {
		return nil, err
	}
	for _, e := range stored {
		r.log.Info("ledger entry", "seq", e.Seq, "event", e.Type, "summary", e.Summary)
	}
	p.state = r.ledger.State()
	return stored, nil
}

// loadSpec loads the spec at the head of the protected branch. A spec that
// does not load never replaces the last good one: it is recorded once as
// spec.invalid and the reconciler keeps running on the previous spec (or on
// none, if none ever loaded).
func (r *Reconciler) loadSpec(ctx context.Context, p *pass) error {
	if p.head == r.specCommit && r.spec != nil {
		return nil
	}
	spec, diags, err := r.loadAt(p.head)
	if err != nil {
		return err
	}
	if diags.HasErrors() {
		p.diags = diags
		if last := p.state.LastSpec; last == nil || last.SpecCommit != p.head.String() {
			var lines []string
			for _, d := range diags {
				lines = append(lines, formatDiag(d))
			}
			_, err := r.append(ctx, p, ledger.Event{
				Type: ledger.SpecInvalid, Subject: p.head.String(), SubjectName: r.cfg.Branch, SpecCommit: p.head.String(),
				Summary:     fmt.Sprintf("spec.invalid %s: %d error(s), first: %s", p.head.String()[:12], countErrors(diags), formatDiag(firstError(diags))),
				Diagnostics: lines,
			})
			if err != nil {
				return err
			}
		}
		if r.spec == nil {
			if good := p.state.LastGoodSpec; good != nil {
				old := plumbing.NewHash(good.SpecCommit)
				if spec, d, err := r.loadAt(old); err == nil && !d.HasErrors() {
					r.setSpec(spec, old)
				}
			}
		}
		return nil
	}
	digest := specDigest(spec)
	if last := p.state.LastGoodSpec; last == nil || last.SpecDigest != digest || (p.state.LastSpec != nil && p.state.LastSpec.Type == ledger.SpecInvalid) {
		_, err := r.append(ctx, p, ledger.Event{
			Type: ledger.SpecLoaded, Subject: p.head.String(), SubjectName: r.cfg.Branch, SpecCommit: p.head.String(), SpecDigest: digest,
			Summary: fmt.Sprintf("spec.loaded %s: %d agent(s), %d polic(ies)", p.head.String()[:12], len(spec.Agents), len(spec.Policies)),
		})
		if err != nil {
			// The spec takes effect only once recorded: the next pass
			// tries again.
			return err
		}
	}
	r.setSpec(spec, p.head)
	return nil
}

// specForge puts in force the forge of the spec in force (useForge).
func (r *Reconciler) specForge(_ context.Context, _ *pass) error {
	if r.spec == nil {
		return nil
	}
	return r.useForge(r.spec)
}

// setSpec puts a spec in force. The pass's goroutines read r.spec without
// the lock (only a pass writes it); others (Targets, Spec) take it.
func (r *Reconciler) setSpec(spec *hclspec.Spec, commit plumbing.Hash) {
	r.mu.Lock()
	r.spec, r.specCommit = spec, commit
	r.mu.Unlock()
}

func (r *Reconciler) loadAt(commit plumbing.Hash) (*hclspec.Spec, hcl.Diagnostics, error) {
	fsys, err := newCommitFS(r.repo, commit)
	if err != nil {
		return nil, nil, fmt.Errorf("read spec at %s: %w", commit, err)
	}
	spec, diags := hclspec.Load(fsys, hclspec.Options{LookupEnv: r.cfg.LookupEnv})
	return spec, diags, nil
}

// specDigest covers every spec file and every agent's digest (which adds
// prompts and command files).
func specDigest(s *hclspec.Spec) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(s.Files)) {
		fmt.Fprintf(h, "%s %d\n", name, len(s.Files[name].Bytes))
		h.Write(s.Files[name].Bytes)
	}
	for _, a := range s.Agents {
		fmt.Fprintf(h, "agent %s %s\n", a.Name, a.Digest)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func formatDiag(d *hcl.Diagnostic) string {
	if d == nil {
		return ""
	}
	if d.Subject != nil {
		return fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
	}
	return d.Summary
}

func firstError(diags hcl.Diagnostics) *hcl.Diagnostic {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			return d
		}
	}
	return nil
}

func countErrors(diags hcl.Diagnostics) int {
	n := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return n
}

// defaultClaimant names this process in its claims. With an on-disk cache
// (stateDir), it is the host and the cache: the cache's lock lets one
// process at a time use it, so the name is never held by two live
// processes, and a process restarted on the same cache (after a crash, a
// pod restart on its volume) resumes its own claims at once instead of
// waiting for their leases. Without one, host, pid and a random suffix: a
// restarted process never mistakes a dead one's claim for its own.
func defaultClaimant(stateDir string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	if stateDir != "" {
		if abs, err := filepath.Abs(stateDir); err == nil {
			stateDir = abs
		}
		sum := sha256.Sum256([]byte(stateDir))
		return fmt.Sprintf("%s/cache-%x", host, sum[:6])
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}
