package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentgitops/reconciler/metrics"
	"github.com/agentgitops/reconciler/notify"
	"github.com/agentgitops/reconciler/sandbox"
	"github.com/agentgitops/reconciler/server"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "run --repo URL [--interval 1m] [--listen ADDR] [--webhook-secret-file FILE] [--notify-url-file FILE] [once flags]", stderr)
	var f repoFlags
	f.register(fs)
	interval := fs.Duration("interval", time.Minute, "time between passes (jittered by 10%); passes also run when work is due sooner, on a push and on a trigger")
	listen := fs.String("listen", defaultListen(), "address of /metrics, /healthz, /readyz, /api/v1/status, the hooks and the API (default $RECONCILER_LISTEN, else 127.0.0.1:8080)")
	secretFile := fs.String("webhook-secret-file", "", "file holding the shared secret of /hooks/alertmanager (bearer token), /hooks/git (GitHub and Gitea HMAC, GitLab token) and the API; without it those routes answer 403")
	notifyFile := fs.String("notify-url-file", "", "file holding a Slack-compatible incoming-webhook URL to notify of proposals, approvals needed, violations, holds and stalls (the URL is a secret)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *interval < time.Second {
		return usageError(stderr, "--interval %s is too short: use at least 1s", *interval)
	}
	var secret server.Secret
	if *secretFile != "" {
		var err error
		if secret, err = server.LoadSecret(*secretFile); err != nil {
			return fail(stderr, err)
		}
	}
	var notifyURL string
	if *notifyFile != "" {
		b, err := os.ReadFile(*notifyFile)
		if err != nil {
			return fail(stderr, fmt.Errorf("--notify-url-file: %w", err))
		}
		if notifyURL = strings.TrimSpace(string(b)); notifyURL == "" {
			return fail(stderr, fmt.Errorf("--notify-url-file %q is empty: write the webhook URL into it", *notifyFile))
		}
	}
	stopTracing, err := startTracing(ctx, f.otlpEndpoint, stderr) // tracing.go
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	defer stopTracing()
	m := metrics.New(f.hourlyUSD)
	r, err := f.reconciler(ctx, stderr, m)
	var ue usageErr
	if errors.As(err, &ue) {
		return usageError(stderr, "%s", ue)
	}
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()
	// The pass's status reports the sandbox, which is probed by starting
	// its helper: start that now, alongside the pass, not after it.
	go sandbox.Probe()
	logger, err := newLogger(stderr, f.logFormat)
	if err != nil {
		return usageError(stderr, "%s", err)
	}
	cfg := server.Config{
		Reconciler: r, Metrics: m.Handler(), Interval: *interval,
		Logger: logger, Secret: secret,
	}
	if notifyURL != "" {
		var state string
		if dir := r.Repo().StateDir(); dir != "" {
			state = filepath.Join(dir, "notify.json")
		}
		n, err := notify.New(notify.Config{URL: notifyURL, StateFile: state, Logger: logger, Instance: f.repo})
		if err != nil {
			return fail(stderr, fmt.Errorf("--notify-url-file: %w", err))
		}
		defer n.Close()
		cfg.Notifier = n
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(stderr, fmt.Errorf("listen: %w", err))
	}
	cfg.Listener = ln
	srv, err := server.New(cfg)
	if err != nil {
		ln.Close()
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "reconciler: serving on http://%s\n", ln.Addr())
	if err := srv.Run(ctx); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}
