package controller

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/fluxcd/pkg/runtime/leaderelection"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	agentsv1 "github.com/agentgitops/reconciler/api/v1"
	"github.com/agentgitops/reconciler/server"
)

// ShardKeyLabel is the label that assigns an object to a shard, as Flux's
// controllers shard: a controller started with --watch-label-selector
// sharding.fluxcd.io/key=shard1 reconciles only the objects so labelled,
// and the main one with sharding.fluxcd.io/key notin (shard1) the rest.
const ShardKeyLabel = "sharding.fluxcd.io/key"

// DefaultLeaderElectionID names the Lease of the controller's leader
// election.
const DefaultLeaderElectionID = "reconciler-controller-leader-election"

// ManagerOptions configure NewManager.
type ManagerOptions struct {
	// MetricsAddr is the address of /metrics ("0" turns it off).
	MetricsAddr string
	// HealthAddr is the address of /healthz and /readyz ("" or "0" turns
	// them off).
	HealthAddr string
	// LeaderElection elects one leader among the replicas on a Lease;
	// only the leader reconciles. Enable turns it on.
	LeaderElection leaderelection.Options
	// LeaderElectionID names the Lease; "" means DefaultLeaderElectionID.
	// Shards need one each (see ShardKeyLabel): add the shard's name.
	LeaderElectionID string
	// LeaderElectionNamespace is the Lease's namespace; "" means the
	// namespace the pod runs in.
	LeaderElectionNamespace string
	// WatchLabelSelector limits the objects this controller sees (and so
	// reconciles) to those it selects: sharding by ShardKeyLabel.
	WatchLabelSelector string
	// Namespace limits the controller to one namespace; "" watches all.
	Namespace string
	// WebhookAddr is the address of /hooks/git (push events of GitHub,
	// Gitea and GitLab, routed to the objects of the pushed repository);
	// "" or "0" turns it off. Served by every replica, leader or not.
	WebhookAddr string
	// WebhookSecret is the hooks' shared secret; without one they answer
	// 403.
	WebhookSecret server.Secret
	// WebhookSecretFile, when set, is read instead of WebhookSecret, and
	// again whenever it changes (a Secret mounted with optional: true may
	// appear after the controller started).
	WebhookSecretFile string
	// Controller configures the AgentRepository reconciler.
	Controller Options
}

// Scheme returns a scheme with the built-in types and AgentRepository.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := agentsv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// NewManager returns a controller-runtime manager running the
// AgentRepository reconciler (also returned, to Close once the manager
// stopped), with leader election, health and readiness probes, metrics on
// the manager's registry, and the watch label selector in its cache.
func NewManager(cfg *rest.Config, o ManagerOptions) (ctrl.Manager, *AgentRepositoryReconciler, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, nil, err
	}
	sel := labels.Everything()
	if o.WatchLabelSelector != "" {
		if sel, err = labels.Parse(o.WatchLabelSelector); err != nil {
			return nil, nil, fmt.Errorf("watch label selector %q: %w", o.WatchLabelSelector, err)
		}
	}
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&agentsv1.AgentRepository{}: {Label: sel},
	}}
	if o.Namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{o.Namespace: {}}
	}
	id := o.LeaderElectionID
	if id == "" {
		id = DefaultLeaderElectionID
	}
	le := o.LeaderElection
	lease := durationOr(le.LeaseDuration, 35*time.Second)
	renew := durationOr(le.RenewDeadline, 30*time.Second)
	retry := durationOr(le.RetryPeriod, 5*time.Second)
	if le.Enable && lease <= renew {
		return nil, nil, errors.New("leader election: the lease duration must be longer than the renew deadline")
	}
	mo := ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: orOff(o.MetricsAddr)},
		HealthProbeBindAddress:        orOff(o.HealthAddr),
		LeaderElection:                le.Enable,
		LeaderElectionID:              id,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionResourceLock:    "leases",
		LeaderElectionReleaseOnCancel: le.ReleaseOnCancel,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, nil, fmt.Errorf("controller manager: %w", err)
	}
	if o.HealthAddr != "" && o.HealthAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return nil, nil, err
		}
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return nil, nil, err
		}
	}
	if o.WebhookAddr != "" && o.WebhookAddr != "0" {
		mux := http.NewServeMux()
		secret := func() server.Secret { return o.WebhookSecret }
		if o.WebhookSecretFile != "" {
			sf := &SecretFile{Path: o.WebhookSecretFile, Logger: o.Controller.Logger}
			sf.Get() // log its state at start
			secret = sf.Get
		}
		mux.Handle("/hooks/git", &GitHook{Client: mgr.GetClient(), SecretFunc: secret, Logger: o.Controller.Logger})
		mux.Handle("/hooks/forge", &GitHook{Client: mgr.GetClient(), SecretFunc: secret, Logger: o.Controller.Logger, Forge: true})
		(&RequestHook{Client: mgr.GetClient(), Secret: secret, Logger: o.Controller.Logger}).Register(mux)
		if err := mgr.Add(&manager.Server{Name: "webhooks", Server: &http.Server{
			Addr: o.WebhookAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		}}); err != nil {
			return nil, nil, err
		}
	}
	copts := o.Controller
	if copts.Registerer == nil {
		copts.Registerer = ctrlmetrics.Registry
	}
	rec, err := New(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder(FieldOwner), copts)
	if err != nil {
		return nil, nil, err
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	return mgr, rec, nil
}

func orOff(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
