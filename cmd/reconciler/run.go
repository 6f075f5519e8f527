package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/fluxcd/pkg/runtime/jitter"

	"github.com/agentgitops/reconciler/metrics"
	"github.com/agentgitops/reconciler/reconcile"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", "run --repo URL [--interval 1m] [--listen :8080] [once flags]", stderr)
	var f repoFlags
	f.register(fs)
	interval := fs.Duration("interval", time.Minute, "time between passes (jittered by 10%)")
	listen := fs.String("listen", "127.0.0.1:8080", "address of /metrics, /healthz, /readyz and /api/v1/status")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *interval < time.Second {
		return usageError(stderr, "--interval %s is too short: use at least 1s", *interval)
	}
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
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(stderr, fmt.Errorf("listen: %w", err))
	}
	var ready atomic.Bool
	srv := &http.Server{Handler: handler(r, m, &ready), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "reconciler: serving on http://%s\n", ln.Addr())

	err = loop(ctx, r, *interval, jitter.Percent(0.1, nil), func(err error) {
		// Ready while the last pass succeeded (and so the ledger was
		// trusted); back to 503 as soon as one fails.
		ready.Store(err == nil)
	})
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fail(stderr, err)
	}
	return exitOK
}

// loop runs a pass, then one every jittered interval, until ctx ends. A
// failed pass is reported and retried at the next tick.
func loop(ctx context.Context, r *reconcile.Reconciler, interval time.Duration, jit jitter.Duration, done func(error)) error {
	for {
		err := r.Reconcile(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		done(err)
		t := time.NewTimer(jit(interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func handler(r *reconcile.Reconciler, m *metrics.Metrics, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: no successful pass yet", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r.Status())
	})
	return mux
}
