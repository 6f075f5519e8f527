// Package controller is the reconciler's Kubernetes controller mode (DESIGN
// §7): a controller-runtime reconciler of AgentRepository objects
// (agents.reconciler.dev/v1) that runs, for each object, the same pass as
// `reconciler run` and `once` (reconcile.Reconciler.Pass) and reports it as
// a Flux object does: conditions Ready, Reconciling and Stalled set with
// fluxcd/pkg/runtime/conditions, status patched with its patch helper,
// on-demand passes through the reconcile.fluxcd.io/requestedAt annotation,
// suspend, and events for what the pass's ledger entries show. Git and the
// ledger stay the only state: the objects' reconcilers are a cache, rebuilt
// when the object's generation or its Secrets change.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/fluxcd/pkg/runtime/predicates"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/metrics"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/signing"
)

// Condition reasons of the controller's own failures, beside those of
// fluxcd/pkg/apis/meta and the reconcile package.
const (
	// ReasonSecretNotFound: a referenced Secret or key is missing; the
	// pass is retried with backoff.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonInvalidSigningKey: the signing key Secret does not hold a
	// usable key; Stalled until the Secret or the spec changes.
	ReasonInvalidSigningKey = "InvalidSigningKey"
	// ReasonInvalidSpec: the object's spec cannot be used (identity, cache
	// path); Stalled until the spec changes.
	ReasonInvalidSpec = "InvalidSpec"
)

// Event reasons of the events the controller records.
const (
	EventProposalOpened   = "ProposalOpened"
	EventProposalMerged   = "ProposalMerged"
	EventProposalRejected = "ProposalRejected"
	EventPolicyViolation  = "PolicyViolation"
	EventStalled          = "Stalled"
	EventReconcileFailed  = "ReconcileFailed"
	// EventRequestDropped: a pending alert or manual-run request will not
	// run (no agent matches it, or it does not decode).
	EventRequestDropped = "RequestDropped"
	// EventOverlapping: runs of the repository were claimed by another
	// reconciler (another shard whose selector matches the object, or a
	// daemon): harmless thanks to the ledger's claims, but a mistake.
	EventOverlapping = "OverlappingReconcilers"
)

// FieldOwner is the field manager of the controller's status patches.
const FieldOwner = "reconciler-controller"

// DefaultIdentity commits proposals and ledger entries of an object that
// names no identity.
var DefaultIdentity = object.Signature{Name: "Reconciler", Email: "reconciler@localhost"}

// minRequeue bounds how soon a pass is requeued when work is due at once.
const minRequeue = time.Second

// Options configure an AgentRepositoryReconciler.
type Options struct {
	// CacheDir is the root of the repositories' mirrors and saved ledger
	// states (a volume of the controller's pod): an object's cache is
	// CacheDir/<spec.cacheVolumePath>, by default CacheDir/<namespace>/<name>.
	// Required: a controller pass starts from a fetch into its cache, and
	// one process at a time holds a cache.
	CacheDir string
	// WorkDir holds the runs' temporary workspaces; "" means os.TempDir().
	WorkDir string
	// Configure completes each object's reconcile.Config (agent runners,
	// forges) before reconcile.New; env resolves the object's secret
	// references by variable name. Nil leaves the defaults (exec agents
	// only).
	Configure func(cfg *reconcile.Config, env func(string) (string, bool))
	// Logger logs the passes; nil discards.
	Logger *slog.Logger
	// Now is the reconcilers' clock; nil means time.Now.
	Now func() time.Time
	// Jitter spreads the requeue interval; nil means ±10%.
	Jitter jitter.Duration
	// MaxConcurrentReconciles is how many objects are reconciled at once
	// (one pass per object at a time in any case); 0 means 1.
	MaxConcurrentReconciles int
	// Registerer, when set, gets the daemon's reconciler_* series of every
	// object this process reconciles, with a repository label
	// (<namespace>/<name>): NewManager sets the manager's registry.
	Registerer prometheus.Registerer
	// HumanHourlyUSD values an hour of human work, for the work-unit value
	// and ROI series.
	HumanHourlyUSD float64
	// Instance names this controller process in the claims its runs make
	// in the ledger, as <instance>/<namespace>/<name>; "" means the host
	// name (the pod's name). Two live processes must not share one.
	Instance string
	// SkipNameValidation lets several managers in one process (tests)
	// each run the controller, whose name is otherwise unique per process.
	SkipNameValidation bool
}

// AgentRepositoryReconciler reconciles AgentRepository objects.
type AgentRepositoryReconciler struct {
	client.Client
	// APIReader reads the referenced Secrets straight from the API
	// server, so the controller needs no list or watch on Secrets.
	APIReader client.Reader
	// EventRecorder records the events of the passes; nil records none.
	EventRecorder events.EventRecorder

	opts Options
	log  *slog.Logger

	metrics *repoMetrics

	mu    sync.Mutex
	repos map[types.NamespacedName]*repoEntry
}

// repoEntry is an object's reconciler, built for one generation of the
// object and one resourceVersion of each Secret it references.
type repoEntry struct {
	key string
	r   *reconcile.Reconciler
	// claimant names this process in the runs' claims; overlap is the
	// other claimants last reported.
	claimant string
	overlap  string
}

// New returns a reconciler of AgentRepository objects; SetupWithManager
// registers it.
func New(c client.Client, apiReader client.Reader, rec events.EventRecorder, opts Options) (*AgentRepositoryReconciler, error) {
	if opts.CacheDir == "" {
		return nil, errors.New("controller: a cache directory is required (the repositories' mirrors and ledger states)")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Jitter == nil {
		opts.Jitter = jitter.Percent(0.1, nil)
	}
	if apiReader == nil {
		apiReader = c
	}
	if opts.Instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return nil, fmt.Errorf("controller: no instance name given and no host name: %v", err)
		}
		opts.Instance = host
	}
	ar := &AgentRepositoryReconciler{Client: c, APIReader: apiReader, EventRecorder: rec, opts: opts,
		log: opts.Logger, repos: map[types.NamespacedName]*repoEntry{}}
	if opts.Registerer != nil {
		ar.metrics = newRepoMetrics()
		if err := opts.Registerer.Register(ar.metrics); err != nil {
			return nil, fmt.Errorf("controller: register the repositories' metrics: %w", err)
		}
	}
	return ar, nil
}

// SetupWithManager registers the reconciler with mgr: it reconciles on a
// change of an object's generation and on a new requestedAt annotation.
// The watch's label selector (sharding) is the manager cache's: see
// NewManager.
func (c *AgentRepositoryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	n := c.opts.MaxConcurrentReconciles
	if n < 1 {
		n = 1
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentsv1.AgentRepository{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}),
		)).
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: n, SkipNameValidation: &c.opts.SkipNameValidation}).
		Complete(c)
}

// Close closes every object's reconciler (saving its ledger state and
// releasing its cache).
func (c *AgentRepositoryReconciler) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for nn, e := range c.repos {
		errs = append(errs, e.r.Close())
		delete(c.repos, nn)
		if c.metrics != nil {
			c.metrics.set(nn.String(), nil)
		}
	}
	return errors.Join(errs...)
}

// forget closes and drops an object's reconciler: the object was deleted
// (or left this shard). The repository and its ledger are left as they are.
func (c *AgentRepositoryReconciler) forget(nn types.NamespacedName) {
	c.mu.Lock()
	e := c.repos[nn]
	delete(c.repos, nn)
	c.mu.Unlock()
	if c.metrics != nil {
		c.metrics.set(nn.String(), nil)
	}
	if e != nil {
		if err := e.r.Close(); err != nil {
			c.log.Warn("close reconciler", "object", nn.String(), "err", err)
		}
	}
}

//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 rbac:roleName=reconciler-controller paths=./ output:rbac:artifacts:config=../config/rbac

// The controller's permissions (config/rbac/role.yaml, generated with
// controller-gen rbac from these markers). Secrets are read only with get,
// in the namespaces an operator grants (config/rbac/secrets_role.yaml).
// Patch on the objects is for the git webhook's requestedAt annotation.
//
// +kubebuilder:rbac:groups=agents.reconciler.dev,resources=agentrepositories,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=agents.reconciler.dev,resources=agentrepositories/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile runs one pass for the object named by req.
func (c *AgentRepositoryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &agentsv1.AgentRepository{}
	if err := c.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			c.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !obj.DeletionTimestamp.IsZero() {
		c.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	log := c.log.With("object", req.NamespacedName.String())
	if obj.Spec.Suspend {
		log.Info("reconciliation is suspended")
		return ctrl.Result{}, nil
	}

	patcher := patch.NewSerialPatcher(obj, c.Client)
	owned := patch.WithOwnedConditions{Conditions: []string{meta.ReadyCondition, meta.ReconcilingCondition, meta.StalledCondition}}
	defer func() {
		if err := patcher.Patch(ctx, obj, owned, patch.WithFieldOwner(FieldOwner)); err != nil {
			if apierrors.IsNotFound(err) {
				return
			}
			retErr = errors.Join(retErr, fmt.Errorf("patch status: %w", err))
		}
	}()

	// Show the pass in progress before it runs (it may run agents for
	// minutes), as Flux's controllers do.
	conditions.MarkReconciling(obj, meta.ProgressingReason, "reconciliation in progress")
	if !conditions.Has(obj, meta.ReadyCondition) {
		conditions.MarkUnknown(obj, meta.ReadyCondition, meta.ProgressingReason, "reconciliation in progress")
	}
	if err := patcher.Patch(ctx, obj, owned, patch.WithFieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patch status: %w", err)
	}
	reqAt, hasReq := meta.ReconcileAnnotationValue(obj.GetAnnotations())

	e, err := c.reconcilerFor(ctx, obj)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) && ce.stalled {
			// A person must change the spec or the Secret: retrying
			// sooner than the interval would not help.
			c.stall(obj, ce.reason, err.Error())
			obj.Status.ObservedGeneration = obj.Generation
			if hasReq {
				obj.Status.SetLastHandledReconcileRequest(reqAt)
			}
			return ctrl.Result{RequeueAfter: c.opts.Jitter(obj.GetRequeueAfter())}, nil
		}
		reason := meta.FailedReason
		if errors.As(err, &ce) {
			reason = ce.reason
		}
		conditions.Delete(obj, meta.ReconcilingCondition)
		conditions.Delete(obj, meta.StalledCondition)
		conditions.MarkFalse(obj, meta.ReadyCondition, reason, "%s", err.Error())
		c.event(obj, corev1.EventTypeWarning, EventReconcileFailed, "%s", err.Error())
		return ctrl.Result{}, err
	}

	r := e.r
	before := snapshot(r.Ledger().State())
	passCtx, cancel := context.WithTimeout(ctx, obj.GetTimeout())
	pending, qerr := pendingRequests(obj)
	if qerr != nil {
		log.Error("pending requests dropped", "err", qerr)
		c.event(obj, corev1.EventTypeWarning, EventRequestDropped, "%s", qerr.Error())
	}
	reqs := make([]reconcile.Request, 0, len(pending))
	for _, p := range pending {
		reqs = append(reqs, p.request())
	}
	res, perr := r.Pass(passCtx, reqs)
	cancel()
	for _, o := range res.Requests {
		if o.State == reconcile.RequestDropped {
			c.event(obj, corev1.EventTypeWarning, EventRequestDropped, "request %s: %s", o.Request, o.Reason)
		}
	}
	if len(res.Requests) > 0 || qerr != nil {
		if err := answerRequests(ctx, c.Client, req.NamespacedName, res.Requests, qerr != nil); err != nil {
			log.Error("remove answered requests", "err", err)
		}
	}
	st := r.Status()
	c.recordEvents(obj, before, r.Ledger().State())
	c.reportOverlap(obj, e, r.Ledger().State())

	obj.Status.LastAppliedRevision = st.LastAppliedRevision
	obj.Status.LastAttemptedRevision = st.LastAttemptedRevision
	obj.Status.LedgerSeq = st.Ledger.Seq
	obj.Status.LedgerHead = st.Ledger.Head
	obj.Status.OpenProposals = openProposals(st)
	obj.Status.Agents = agentStates(st)
	if hasReq {
		obj.Status.SetLastHandledReconcileRequest(reqAt)
	}
	conditions.Delete(obj, meta.ReconcilingCondition)

	var se *reconcile.StalledError
	stalledCond := findCondition(st.Conditions, meta.StalledCondition)
	switch {
	case errors.As(perr, &se) || (stalledCond != nil && stalledCond.Status == metav1.ConditionTrue):
		reason, msg := reconcile.ReasonLedgerUntrusted, ""
		if se != nil {
			reason, msg = se.Reason, se.Error()
		}
		if stalledCond != nil && stalledCond.Status == metav1.ConditionTrue {
			reason, msg = stalledCond.Reason, stalledCond.Message
		}
		c.stall(obj, reason, msg)
		obj.Status.ObservedGeneration = obj.Generation
		log.Error("reconcile pass stalled", "reason", reason, "err", msg)
		return ctrl.Result{RequeueAfter: c.opts.Jitter(obj.GetRequeueAfter())}, nil
	case perr != nil:
		conditions.Delete(obj, meta.StalledCondition)
		reason := meta.FailedReason
		if rc := findCondition(st.Conditions, meta.ReadyCondition); rc != nil && rc.Status == metav1.ConditionFalse {
			reason = rc.Reason
		}
		conditions.MarkFalse(obj, meta.ReadyCondition, reason, "%s", perr.Error())
		c.event(obj, corev1.EventTypeWarning, EventReconcileFailed, "%s", perr.Error())
		// Returning the error requeues with the controller's backoff.
		return ctrl.Result{}, perr
	}
	conditions.Delete(obj, meta.StalledCondition)
	msg := "Applied revision: " + st.LastAppliedRevision
	if rc := findCondition(st.Conditions, meta.ReadyCondition); rc != nil && rc.Status == metav1.ConditionTrue && rc.Message != "" {
		msg = rc.Message
	}
	conditions.MarkTrue(obj, meta.ReadyCondition, meta.SucceededReason, "%s", msg)
	obj.Status.ObservedGeneration = obj.Generation
	return ctrl.Result{RequeueAfter: c.requeueAfter(obj, res.NextDue)}, nil
}

// requeueAfter is the jittered interval, or the time until the pass's next
// due work when that is sooner.
func (c *AgentRepositoryReconciler) requeueAfter(obj *agentsv1.AgentRepository, nextDue time.Time) time.Duration {
	d := c.opts.Jitter(obj.GetRequeueAfter())
	if !nextDue.IsZero() {
		now := time.Now
		if c.opts.Now != nil {
			now = c.opts.Now
		}
		if until := nextDue.Sub(now()); until < d {
			d = until
		}
	}
	return max(d, minRequeue)
}

// stall marks obj Stalled and not Ready with reason and msg, and records a
// Stalled event when it was not stalled before.
func (c *AgentRepositoryReconciler) stall(obj *agentsv1.AgentRepository, reason, msg string) {
	was := conditions.IsStalled(obj) && conditions.GetReason(obj, meta.StalledCondition) == reason
	conditions.MarkStalled(obj, reason, "%s", msg)
	conditions.MarkFalse(obj, meta.ReadyCondition, reason, "%s", msg)
	if !was {
		c.event(obj, corev1.EventTypeWarning, EventStalled, "%s: %s", reason, msg)
	}
}

func (c *AgentRepositoryReconciler) event(obj *agentsv1.AgentRepository, typ, reason, format string, args ...any) {
	if c.EventRecorder == nil {
		return
	}
	c.EventRecorder.Eventf(obj, nil, typ, reason, "Reconcile", format, args...)
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// openProposals are the branches of the agents' open proposals, as
// <agent>:<branch>, sorted.
// agentStates are the agents' parts of the object's status, sorted by
// name and at most agentsv1.MaxStatusAgents.
func agentStates(st reconcile.Status) []agentsv1.AgentState {
	names := make([]string, 0, len(st.Agents))
	for name := range st.Agents {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) > agentsv1.MaxStatusAgents {
		names = names[:agentsv1.MaxStatusAgents]
	}
	out := make([]agentsv1.AgentState, 0, len(names))
	for _, name := range names {
		as := st.Agents[name]
		a := agentsv1.AgentState{Name: name, OpenProposals: len(as.OpenProposals)}
		for _, c := range as.Conditions {
			if c.Type == meta.ReadyCondition || c.Type == meta.StalledCondition {
				a.Conditions = append(a.Conditions, c)
			}
		}
		if as.LastRun != nil {
			a.LastRun, a.LastRunOutcome = as.LastRun.ID, as.LastRun.Outcome
		}
		if as.NextRun != nil {
			at := as.NextRun.At
			a.NextRun = &at
		}
		if as.Held != nil {
			a.Held = as.Held.Reason
		}
		out = append(out, a)
	}
	return out
}

func openProposals(st reconcile.Status) []string {
	var out []string
	for name, as := range st.Agents {
		for _, b := range as.OpenProposals {
			out = append(out, name+":"+b)
		}
	}
	sort.Strings(out)
	return out
}

// runMark is what the events compare of a run before and after a pass.
type runMark struct {
	opened     bool
	closed     string
	violations int
}

func snapshot(st *ledger.State) map[string]runMark {
	m := make(map[string]runMark, len(st.Runs))
	for _, rn := range st.Runs {
		m[rn.ID] = markOf(rn)
	}
	return m
}

func markOf(rn *ledger.Run) runMark {
	k := runMark{opened: rn.Opened != nil, violations: len(rn.Violations)}
	if rn.Closed != nil {
		k.closed = rn.Closed.Type
	}
	return k
}

// recordEvents records an event for each proposal the pass opened, merged
// (the approval was recorded) or saw rejected, and each new violation.
func (c *AgentRepositoryReconciler) recordEvents(obj *agentsv1.AgentRepository, before map[string]runMark, after *ledger.State) {
	for _, rn := range after.Runs {
		was, now := before[rn.ID], markOf(rn)
		if now.opened && !was.opened {
			c.event(obj, corev1.EventTypeNormal, EventProposalOpened, "agent %s opened a proposal (run %s)", rn.Agent, rn.ID)
		}
		if now.closed != was.closed {
			switch now.closed {
			case ledger.ProposalMerged:
				c.event(obj, corev1.EventTypeNormal, EventProposalMerged, "the proposal of agent %s was merged with its approval recorded (run %s)", rn.Agent, rn.ID)
			case ledger.ProposalRejected:
				c.event(obj, corev1.EventTypeNormal, EventProposalRejected, "the proposal of agent %s was rejected (run %s)", rn.Agent, rn.ID)
			}
		}
		if now.violations > was.violations {
			c.event(obj, corev1.EventTypeWarning, EventPolicyViolation, "agent %s: %d new policy violation(s) (run %s)", rn.Agent, now.violations-was.violations, rn.ID)
		}
	}
}

// configError is a problem of the object's spec or Secrets. Stalled ones
// need a person to act; the others (a Secret not there yet) are retried.
type configError struct {
	reason  string
	stalled bool
	err     error
}

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// reconcilerFor returns the object's reconciler, building it when there is
// none for its generation and its Secrets' versions.
func (c *AgentRepositoryReconciler) reconcilerFor(ctx context.Context, obj *agentsv1.AgentRepository) (*repoEntry, error) {
	nn := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	secrets := map[string]*corev1.Secret{}
	value := func(ref agentsv1.SecretKeyRef, what string) ([]byte, error) {
		s, ok := secrets[ref.Name]
		if !ok {
			s = &corev1.Secret{}
			if err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name}, s); err != nil {
				if apierrors.IsNotFound(err) {
					return nil, &configError{reason: ReasonSecretNotFound, err: fmt.Errorf("%s: Secret %s/%s not found", what, obj.Namespace, ref.Name)}
				}
				return nil, fmt.Errorf("%s: get Secret %s/%s: %w", what, obj.Namespace, ref.Name, err)
			}
			secrets[ref.Name] = s
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return nil, &configError{reason: ReasonSecretNotFound, err: fmt.Errorf("%s: Secret %s/%s has no key %q", what, obj.Namespace, ref.Name, ref.Key)}
		}
		return v, nil
	}
	keyPEM, err := value(obj.Spec.SigningKeySecretRef, "signingKeySecretRef")
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for i, refs := range [][]agentsv1.EnvSecretRef{obj.Spec.ForgeTokenSecretRefs, obj.Spec.ProviderSecretRefs} {
		field := [...]string{"forgeTokenSecretRefs", "providerSecretRefs"}[i]
		for _, ref := range refs {
			v, err := value(ref.SecretKeyRef, field+" "+ref.Env)
			if err != nil {
				return nil, err
			}
			if _, dup := env[ref.Env]; dup {
				return nil, &configError{reason: ReasonInvalidSpec, stalled: true, err: fmt.Errorf("%s: variable %s is given twice", field, ref.Env)}
			}
			env[ref.Env] = string(v)
		}
	}
	key := fmt.Sprint(obj.Generation)
	names := make([]string, 0, len(secrets))
	for name := range secrets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		key += "/" + name + "@" + secrets[name].ResourceVersion
	}

	c.mu.Lock()
	e := c.repos[nn]
	c.mu.Unlock()
	if e != nil && e.key == key {
		return e, nil
	}
	if e != nil {
		c.forget(nn)
	}

	identity := DefaultIdentity
	if obj.Spec.Identity != "" {
		a, err := mail.ParseAddress(obj.Spec.Identity)
		if err != nil || a.Name == "" {
			return nil, &configError{reason: ReasonInvalidSpec, stalled: true, err: fmt.Errorf("spec.identity %q: want the form \"Name <email>\"", obj.Spec.Identity)}
		}
		identity = object.Signature{Name: a.Name, Email: a.Address}
	}
	sub := filepath.Join(obj.Namespace, obj.Name)
	if p := obj.Spec.CacheVolumePath; p != "" {
		if !filepath.IsLocal(p) {
			return nil, &configError{reason: ReasonInvalidSpec, stalled: true, err: fmt.Errorf("spec.cacheVolumePath %q: want a relative path inside the controller's cache directory", p)}
		}
		sub = p
	}
	signer, err := loadSigner(keyPEM, obj.Namespace+"/"+obj.Spec.SigningKeySecretRef.Name+"/"+obj.Spec.SigningKeySecretRef.Key)
	if err != nil {
		return nil, &configError{reason: ReasonInvalidSigningKey, stalled: true, err: err}
	}
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	cfg := reconcile.Config{
		Repo: obj.Spec.URL, Branch: obj.GetBranch(), Identity: identity, Signer: signer,
		LookupEnv: lookup, Logger: c.log.With("object", nn.String()),
		CacheDir: filepath.Join(c.opts.CacheDir, sub), WorkDir: c.opts.WorkDir, Now: c.opts.Now,
		Claimant: c.opts.Instance + "/" + nn.Namespace + "/" + nn.Name,
	}
	var m *metrics.Metrics
	if c.metrics != nil {
		m = metrics.New(c.opts.HumanHourlyUSD)
		cfg.Recorder = m
	}
	if c.opts.Configure != nil {
		c.opts.Configure(&cfg, lookup)
	}
	r, err := reconcile.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", obj.Spec.URL, err)
	}
	e = &repoEntry{key: key, r: r, claimant: cfg.Claimant}
	c.mu.Lock()
	c.repos[nn] = e
	c.mu.Unlock()
	if m != nil {
		c.metrics.set(nn.String(), m.Registry())
	}
	return e, nil
}

// reportOverlap records a Warning event when runs of the repository that
// started within the last interval were claimed by other reconcilers: two
// shards whose selectors both match the object, or a daemon on the same
// repository. The ledger's claims keep them from running anything twice;
// the event says the labels are wrong. It is recorded again only when the
// set of others changes.
func (c *AgentRepositoryReconciler) reportOverlap(obj *agentsv1.AgentRepository, e *repoEntry, st *ledger.State) {
	now := time.Now
	if c.opts.Now != nil {
		now = c.opts.Now
	}
	since := now().Add(-obj.GetRequeueAfter())
	others := map[string]bool{}
	for _, rn := range st.Runs {
		if rn.Claimant != "" && rn.Claimant != e.claimant && rn.Started.After(since) {
			others[rn.Claimant] = true
		}
	}
	names := make([]string, 0, len(others))
	for n := range others {
		names = append(names, n)
	}
	sort.Strings(names)
	list := strings.Join(names, ", ")
	if list == e.overlap {
		return
	}
	e.overlap = list
	if list != "" {
		c.event(obj, corev1.EventTypeWarning, EventOverlapping, "runs of this repository were claimed by other reconcilers within the last %s: %s; the ledger's claims keep them from running twice, but check the shards' %s selectors", obj.GetRequeueAfter(), list, ShardKeyLabel)
	}
}

// loadSigner parses the signing key in data (a Secret's value) in memory:
// it is never written to disk. Errors name source, never the key.
func loadSigner(data []byte, source string) (*signing.Signer, error) {
	s, err := signing.ParseSigner(data, source)
	if err != nil {
		return nil, fmt.Errorf("signingKeySecretRef %s: %w", source, err)
	}
	return s, nil
}
