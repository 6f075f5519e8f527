package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/fluxcd/pkg/runtime/leaderelection"
	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/agentgitops/reconciler/agent"
	"github.com/agentgitops/reconciler/controller"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/reconcile"
	"github.com/agentgitops/reconciler/sandbox"
)

// cmdController runs the Kubernetes controller: AgentRepository objects,
// each reconciled by the same pass as run and once (DESIGN §7).
func cmdController(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("controller", "controller [--kubeconfig FILE] [--metrics-addr ADDR] [--health-addr ADDR] [--leader-elect] [--watch-label-selector SELECTOR]", stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, the pod's service account, ~/.kube/config)")
	metricsAddr := fs.String("metrics-addr", ":8080", "address of /metrics (\"0\" turns it off)")
	healthAddr := fs.String("health-addr", ":9440", "address of /healthz and /readyz (\"0\" turns them off)")
	leaderElect := fs.Bool("leader-elect", false, "elect a leader among the replicas on a Lease; only the leader reconciles")
	leaderID := fs.String("leader-election-id", controller.DefaultLeaderElectionID, "name of the Lease (one per shard)")
	leaderNS := fs.String("leader-election-namespace", "", "namespace of the Lease (default: the pod's)")
	leaseDuration := fs.Duration("leader-election-lease-duration", 35*time.Second, "how long followers wait before taking over a Lease that is not renewed")
	renewDeadline := fs.Duration("leader-election-renew-deadline", 30*time.Second, "how long the leader retries renewing its Lease before it stops")
	retryPeriod := fs.Duration("leader-election-retry-period", 5*time.Second, "time between attempts to take or renew the Lease")
	selector := fs.String("watch-label-selector", "", "reconcile only the AgentRepository objects this label selector matches, e.g. "+controller.ShardKeyLabel+"=shard1 (sharding)")
	namespace := fs.String("namespace", "", "watch one namespace only (default: all)")
	def, _ := gitstore.DefaultCacheDir()
	cacheDir := fs.String("cache-dir", def, "directory of the repositories' mirrors and saved ledger states (a volume): <namespace>/<name> or spec.cacheVolumePath under it")
	workDir := fs.String("work-dir", "", "directory of the runs' temporary workspaces (default: $TMPDIR)")
	var sb sandboxFlags
	sb.register(fs)
	concurrent := fs.Int("concurrent", 2, "how many AgentRepository objects are reconciled at once")
	parallel := fs.Int("concurrency", runtime.NumCPU(), "how many agents of one repository run at once")
	logFormat := fs.String("log-format", "json", "log format: text or json")
	instance := fs.String("instance", "", "names this controller in pull requests' commit status contexts (default: the host name)")
	webhookAddr := fs.String("webhook-addr", "0", "address of the webhooks: /hooks/git (push events, routed to the objects of the pushed repository), /hooks/alertmanager/NAMESPACE/NAME and POST /api/v1/namespaces/NAMESPACE/agentrepositories/NAME/agents/AGENT/runs; \"0\" turns them off")
	secretFile := fs.String("webhook-secret-file", "", "file holding the webhooks' shared secret (GitHub and Gitea HMAC, GitLab token, bearer token of the others), read again when it changes; while it is missing or invalid they answer 403")
	hourlyUSD := fs.Float64("human-hourly-usd", 100, "value of one hour of human work, for work-unit value and ROI")
	var otlpEndpoint string
	otlpFlag(fs, &otlpEndpoint)
	var forgeAllow multiFlag
	fs.Var(&forgeAllow, "forge-allow", "base URL a forge block of providers.hcl may name (repeatable): the forge's token is sent only to one of these")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	logger, err := newLogger(stderr, *logFormat)
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	mode, err := sb.parse()
	if err != nil {
		return flagFailure(stderr, err)
	}
	if *concurrent < 1 || *parallel < 1 {
		return usageError(stderr, "--concurrent and --concurrency must be at least 1")
	}
	if *cacheDir == "" {
		return usageError(stderr, "--cache-dir is required")
	}
	if *instance == "" {
		*instance, _ = os.Hostname()
	}
	stopTracing, err := startTracing(ctx, otlpEndpoint, stderr) // tracing.go
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	defer stopTracing()
	ctrl.SetLogger(logr.FromSlogHandler(logger.Handler()))
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return fail(stderr, err)
	}
	mgr, rec, err := controller.NewManager(cfg, controller.ManagerOptions{
		MetricsAddr: *metricsAddr, HealthAddr: *healthAddr,
		LeaderElection: leaderelection.Options{Enable: *leaderElect, ReleaseOnCancel: true,
			LeaseDuration: *leaseDuration, RenewDeadline: *renewDeadline, RetryPeriod: *retryPeriod},
		LeaderElectionID: *leaderID, LeaderElectionNamespace: *leaderNS,
		WatchLabelSelector: *selector, Namespace: *namespace,
		WebhookAddr: *webhookAddr, WebhookSecretFile: *secretFile,
		Controller: controller.Options{
			CacheDir: *cacheDir, WorkDir: *workDir, Logger: logger, MaxConcurrentReconciles: *concurrent,
			HumanHourlyUSD: *hourlyUSD, Instance: *instance,
			Configure: func(c *reconcile.Config, env func(string) (string, bool)) {
				c.Concurrency = *parallel
				// Exec agents never see the cache (and the signing key,
				// which only ever lives in memory here).
				c.Runners = controllerRunners(sandbox.Config{Mode: mode, Hide: []string{*cacheDir}}, env, c.CacheDir)
				c.ForgeFactory = forgeFactory(env, *instance, c.Branch)
				c.ForgeAllowed = forgeAllow
			},
		},
	})
	if err != nil {
		return fail(stderr, err)
	}
	defer rec.Close()
	fmt.Fprintf(stdout, "reconciler: controller starting (metrics %s, probes %s, leader election %v)\n", *metricsAddr, *healthAddr, *leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// restConfig loads the kubeconfig file, or controller-runtime's default
// ($KUBECONFIG, in-cluster, ~/.kube/config).
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w (give --kubeconfig FILE outside a cluster)", err)
	}
	return cfg, nil
}

// controllerRunners are the agent runners of one AgentRepository: as
// runners, but the model providers' keys resolve from the object's
// Secrets (env), never from the controller's own environment.
func controllerRunners(sb sandbox.Config, env func(string) (string, bool), cacheDir string) map[string]agent.Runner {
	// Each object's model agents with cache = true share a response cache
	// in its own cache directory: never another repository's.
	var cache *agent.ResponseCache
	if cacheDir != "" {
		cache = agent.NewResponseCache(filepath.Join(cacheDir, "responses"), 0)
	}
	return map[string]agent.Runner{
		hclspec.ProviderExec: agent.Exec{Sandbox: sb},
		hclspec.ProviderOpenAI: &agent.OpenAI{
			NewModel: func(p *hclspec.Provider) (agent.Model, error) {
				return agent.NewProvider(p, agent.ProviderOptions{LookupEnv: env})
			},
			LookupEnv: env,
			Cache:     cache,
		},
	}
}
