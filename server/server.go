package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fluxcd/pkg/runtime/jitter"
	"golang.org/x/time/rate"

	"github.com/agentgitops/reconciler/ledger"
	"github.com/agentgitops/reconciler/reconcile"
)

// Notifier is told what each pass left: the ledger's state after a pass
// that succeeded (Observe), or the stall of a pass that failed with a
// *reconcile.StalledError (Stalled, after every such pass: the notifier
// deduplicates). Package notify implements it.
type Notifier interface {
	Observe(ctx context.Context, st *ledger.State)
	Stalled(ctx context.Context, reason, message string)
}

// Limits bound what the hook and API routes accept.
type Limits struct {
	// MaxBody is the largest request body, in bytes; 0 means 1 MiB.
	MaxBody int64
	// MaxQueue is how many requests the trigger queue holds; 0 means 1000.
	MaxQueue int
	// Rate and Burst bound the requests per second of each route (a token
	// bucket); 0 means 10 a second with bursts of 20.
	Rate  rate.Limit
	Burst int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBody <= 0 {
		l.MaxBody = 1 << 20
	}
	if l.MaxQueue <= 0 {
		l.MaxQueue = 1000
	}
	if l.Rate <= 0 {
		l.Rate = 10
	}
	if l.Burst <= 0 {
		l.Burst = 20
	}
	return l
}

// Config configures a Server.
type Config struct {
	// Reconciler runs the passes; required.
	Reconciler *reconcile.Reconciler
	// Metrics serves /metrics; nil serves 404 there.
	Metrics http.Handler
	// Interval is the time between passes, jittered by Jitter; required.
	Interval time.Duration
	// Jitter jitters the interval and the backoff; nil means ±10%.
	Jitter jitter.Duration
	// RetryMin is the first backoff after a failed pass, doubled after
	// each further failure up to Interval; 0 means 1s.
	RetryMin time.Duration
	// Logger logs the loop's failures and recoveries; nil discards.
	Logger *slog.Logger
	// Listener serves HTTP; nil listens on Addr.
	Listener net.Listener
	Addr     string
	// Secret authenticates the hook and API routes; zero disables them
	// (403).
	Secret Secret
	Limits Limits
	// Notifier, when not nil, is told the outcome of every pass.
	Notifier Notifier
	// QueueDir holds the persisted trigger queue; "" means the
	// reconciler's state directory (Repo().StateDir()), and the queue
	// lives in memory when that is "" too.
	QueueDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the daemon: the loop and its HTTP surface.
type Server struct {
	cfg   Config
	r     *reconcile.Reconciler
	log   *slog.Logger
	queue *queue
	wake  chan struct{}
	lim   map[string]*rate.Limiter

	mu sync.Mutex
	// ready: the last pass succeeded; cause says why not.
	ready bool
	cause string
}

// New returns a server for cfg, with its trigger queue loaded. A queue
// file that does not decode is renamed aside (to QueueFile.corrupt-TIME,
// kept for the operator), logged at error level, and the queue starts
// empty. It fails when the configuration is incomplete or the queue's
// directory is unusable.
func New(cfg Config) (*Server, error) {
	if cfg.Reconciler == nil {
		return nil, errors.New("server: no reconciler")
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("server: interval %s: use a positive duration", cfg.Interval)
	}
	if cfg.Jitter == nil {
		cfg.Jitter = jitter.Percent(0.1, nil)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Limits = cfg.Limits.withDefaults()
	s := &Server{cfg: cfg, r: cfg.Reconciler, log: cfg.Logger, wake: make(chan struct{}, 1), cause: "no reconcile pass has finished yet"}
	dir := cfg.QueueDir
	if dir == "" && cfg.Reconciler.Repo() != nil {
		dir = cfg.Reconciler.Repo().StateDir()
	}
	var path string
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("trigger queue: %w", err)
		}
		path = filepath.Join(dir, QueueFile)
	}
	q, err := openQueue(path, cfg.Limits.MaxQueue)
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%s", path, cfg.Now().UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("%w (and it could not be set aside: %v)", err, rerr)
		}
		s.log.Error("trigger queue unreadable: set aside, starting with an empty queue", "err", err, "kept", aside)
		q = &queue{path: path, max: cfg.Limits.MaxQueue}
	}
	if n := q.len(); n > 0 {
		s.log.Info("trigger queue loaded", "requests", n)
	}
	s.queue = q
	s.lim = map[string]*rate.Limiter{}
	for _, route := range []string{routeAlertmanager, routeGit, routeForge, routeRuns} {
		s.lim[route] = rate.NewLimiter(cfg.Limits.Rate, cfg.Limits.Burst)
	}
	return s, nil
}

// Run serves HTTP and runs the loop until ctx ends, then shuts HTTP down
// (waiting up to 10s for requests in flight). It returns nil when ctx
// ended, and an error when it could not listen or serving failed. A pass
// that fails never ends it.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		cancel()
		served <- err
	}()
	s.loop(ctx)
	shutdown, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdown)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Wake asks the loop for a pass now (or right after the one running).
func (s *Server) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop runs passes until ctx ends.
func (s *Server) loop(ctx context.Context) {
	var (
		backoff time.Duration
		lastErr string
	)
	for {
		res, err := s.r.Pass(ctx, s.queue.pending())
		if ctx.Err() != nil {
			return
		}
		answered, qerr := s.queue.answer(res.Requests)
		if qerr != nil {
			s.log.Error("trigger queue not saved: answered requests may be offered again after a restart", "err", qerr)
		}
		s.observe(ctx, err, &lastErr)
		var wait time.Duration
		switch {
		case err != nil:
			if backoff == 0 {
				backoff = s.cfg.RetryMin
			} else {
				backoff = min(2*backoff, s.cfg.Interval)
			}
			wait = s.cfg.Jitter(backoff)
		case answered > 0 && s.queue.len() > 0:
			// Requests wait and this pass answered some: an agent takes
			// one run a pass, so the next may answer more.
			backoff, wait = 0, 0
		default:
			backoff = 0
			wait = s.cfg.Jitter(s.cfg.Interval)
			if !res.NextDue.IsZero() {
				wait = min(wait, max(res.NextDue.Sub(s.cfg.Now()), s.cfg.RetryMin))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// observe records a pass's outcome: readiness, the log (a failure once
// until its cause changes, and the recovery), and the notifier.
func (s *Server) observe(ctx context.Context, err error, lastErr *string) {
	s.mu.Lock()
	s.ready = err == nil
	if err != nil {
		s.cause = err.Error()
	} else {
		s.cause = ""
	}
	s.mu.Unlock()
	var stalled *reconcile.StalledError
	isStalled := errors.As(err, &stalled)
	switch {
	case err == nil && *lastErr != "":
		s.log.Info("reconcile pass succeeded again", "previous_err", *lastErr)
		*lastErr = ""
	case err != nil && err.Error() != *lastErr:
		*lastErr = err.Error()
		if isStalled {
			s.log.Error("reconcile pass stalled: a person must act", "reason", stalled.Reason, "err", err)
		} else {
			s.log.Error("reconcile pass failed: retrying with backoff", "err", err)
		}
	}
	n := s.cfg.Notifier
	switch {
	case n == nil:
	case isStalled:
		// The notifier sends a stall once, and again only after a pass
		// that succeeded (Observe) and a new stall.
		n.Stalled(ctx, stalled.Reason, err.Error())
	case err == nil:
		if l := s.r.Ledger(); l != nil && l.State() != nil {
			n.Observe(ctx, l.State())
		}
	}
}

// Ready reports whether the last pass succeeded, and why not.
func (s *Server) Ready() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.cause
}

// Queued returns the requests in the trigger queue, in order.
func (s *Server) Queued() []reconcile.Request { return s.queue.pending() }
