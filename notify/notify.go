// Package notify posts what needs a person's attention to a chat webhook:
// proposals opened and the approvals they need, proposals whose branch
// moved or whose decision changed, policy violations, budget holds (and
// other holds, by kind), and passes that stall.
//
// Notifications are derived from the ledger's fold (ledger.State) after
// every pass, so they say only what the signed ledger says, and each is
// deduplicated by a stable key (event, run, entry seq and digest) kept in
// a state file, so a restart does not send them again. The first pass of a
// notifier without a state file takes the ledger as it is as a baseline
// and sends nothing for it; everything appended later is notified.
//
// The body is Slack's incoming-webhook JSON ({"text": ..., "blocks":
// [...]}), which Mattermost, Rocket.Chat and generic receivers read too.
// Delivery is asynchronous: Observe never waits on the receiver. A bounded
// queue feeds one worker that retries network errors, 5xx and 429
// (honouring Retry-After) with exponential backoff, and never retries
// another 4xx. A notification counts as sent only after a 2xx, so one that
// could not be delivered is tried again after the next pass or a restart;
// at most the one in flight when the process dies is sent twice.
//
// The webhook URL is a secret (for Slack it is the credential): it is
// never logged, and errors that would hold it (net/http's *url.Error) are
// scrubbed.
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/agentgitops/reconciler/internal/atomicfile"
	"github.com/agentgitops/reconciler/ledger"
)

// Defaults of Config's optional fields.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultQueueSize    = 256
	DefaultMaxAttempts  = 5
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultMaxRetryWait = 5 * time.Minute
	DefaultFlushTimeout = 5 * time.Second
	DefaultMaxKeys      = 10000
)

// Config configures a Notifier. Only URL is required.
type Config struct {
	// URL is the webhook URL, read by the caller from a file
	// (--notify-url-file); surrounding white space is ignored. It is a
	// secret: nothing this package logs or returns contains it.
	URL string
	// Client posts the notifications; nil means a client with a
	// DefaultTimeout timeout.
	Client *http.Client
	// StateFile is where what was notified is kept between processes
	// (written atomically, 0600); "" keeps it in memory only, so each new
	// process starts from a baseline.
	StateFile string
	// Logger receives the delivery log; nil discards it.
	Logger *slog.Logger
	// Instance names this reconciler in messages and in the commands they
	// give to verify: the repository URL (credentials are removed).
	Instance string

	// HeldKinds are the run.held kinds that are notified ("suspended",
	// "freeze", "runs_per_hour", "open_proposals", "concurrency"; "*" for
	// all); nil means DefaultHeldKinds. budget.exceeded is always notified.
	HeldKinds []string
	// NoBlocks leaves Slack's "blocks" out of the body, for receivers that
	// refuse fields they do not know.
	NoBlocks bool

	// QueueSize bounds the notifications waiting for the worker
	// (DefaultQueueSize); those that do not fit wait for the next pass.
	QueueSize int
	// MaxAttempts is how many times a notification is posted before it is
	// left for the next pass (DefaultMaxAttempts).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts
	// (DefaultMinBackoff, doubling up to DefaultMaxBackoff); MaxBackoff is
	// also how long a notification that failed every attempt waits.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryWait is the longest Retry-After waited for in the worker
	// (DefaultMaxRetryWait); a longer one defers the notification to a
	// later pass after that time.
	MaxRetryWait time.Duration
	// FlushTimeout bounds how long Close waits for the queue to drain
	// (DefaultFlushTimeout).
	FlushTimeout time.Duration
	// MaxKeys bounds the kept keys of notifications about no particular
	// entry (violations, whose entry the fold does not keep) (DefaultMaxKeys).
	MaxKeys int

	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// LogValue shows the configuration without the URL.
func (c Config) LogValue() slog.Value {
	u := ""
	if c.URL != "" {
		u = "<secret>"
	}
	return slog.GroupValue(slog.String("url", u), slog.String("state_file", c.StateFile), slog.String("instance", cleanInstance(c.Instance)))
}

// String shows the configuration without the URL.
func (c Config) String() string {
	return fmt.Sprintf("notify.Config{URL: %s, StateFile: %q, Instance: %q}", c.LogValue().Group()[0].Value, c.StateFile, cleanInstance(c.Instance))
}

// GoString shows the configuration without the URL.
func (c Config) GoString() string { return c.String() }

// ErrConfig is wrapped by New's errors.
var ErrConfig = errors.New("invalid notification configuration")

// Notifier sends the notifications of one reconciler. Its methods are safe
// for concurrent use.
type Notifier struct {
	url      string
	secrets  []string
	client   *http.Client
	log      *slog.Logger
	instance string
	file     string
	now      func() time.Time

	heldKinds    map[string]bool
	noBlocks     bool
	maxAttempts  int
	minBackoff   time.Duration
	maxBackoff   time.Duration
	maxRetryWait time.Duration
	flushTimeout time.Duration
	maxKeys      int

	queue  chan *job
	ctx    context.Context // the worker's; cancelled by Close
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	closed bool
	// d is what was notified; baselined says whether it holds a baseline
	// (read from the state file, or taken by an Observe).
	d         *dedup
	baselined bool
	// queued are the keys waiting in the queue or in flight.
	queued map[string]bool
	// nextTry holds back, until then, keys whose delivery failed.
	nextTry map[string]time.Time
	// stalls are the jobs of the stalls reported since the last
	// successful pass, by key.
	stalls  map[string]*job
	saveErr error
	// saved is the state file's content as last written.
	saved []byte
}

// job is one notification to deliver.
type job struct {
	key, kind, agent, run string
	seq                   uint64
	body                  []byte
}

func (j *job) attrs(extra ...slog.Attr) []slog.Attr {
	a := []slog.Attr{slog.String("kind", j.kind), slog.String("key", j.key)}
	if j.agent != "" {
		a = append(a, slog.String("agent", j.agent))
	}
	if j.run != "" {
		a = append(a, slog.String("run", j.run))
	}
	if j.seq != 0 {
		a = append(a, slog.Uint64("seq", j.seq))
	}
	return append(a, extra...)
}

// New validates cfg, reads the state file and starts the worker. Errors
// wrap ErrConfig for a URL that is missing or not an absolute http(s) URL
// (they never show the URL), or are a state file that exists but cannot be
// read; a state file that does not decode is logged and replaced by a new
// baseline.
func New(cfg Config) (*Notifier, error) {
	raw := strings.TrimSpace(cfg.URL)
	if raw == "" {
		return nil, fmt.Errorf("%w: no webhook URL (is the URL file empty?)", ErrConfig)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the URL: not shown.
		return nil, fmt.Errorf("%w: the webhook URL does not parse as a URL (not shown: it is a secret)", ErrConfig)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: the webhook URL must be http:// or https://, not %q (the rest is not shown: it is a secret)", ErrConfig, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: the webhook URL has no host (not shown: it is a secret)", ErrConfig)
	}
	n := &Notifier{
		url:          raw,
		secrets:      secretParts(u, raw),
		client:       cfg.Client,
		log:          cfg.Logger,
		instance:     cleanInstance(cfg.Instance),
		file:         cfg.StateFile,
		now:          cfg.Now,
		noBlocks:     cfg.NoBlocks,
		maxAttempts:  positive(cfg.MaxAttempts, DefaultMaxAttempts),
		minBackoff:   positive(cfg.MinBackoff, DefaultMinBackoff),
		maxBackoff:   positive(cfg.MaxBackoff, DefaultMaxBackoff),
		maxRetryWait: positive(cfg.MaxRetryWait, DefaultMaxRetryWait),
		flushTimeout: positive(cfg.FlushTimeout, DefaultFlushTimeout),
		maxKeys:      positive(cfg.MaxKeys, DefaultMaxKeys),
		queued:       map[string]bool{},
		nextTry:      map[string]time.Time{},
		stalls:       map[string]*job{},
		done:         make(chan struct{}),
	}
	n.instance = n.clean(n.instance, maxValue)
	n.maxBackoff = max(n.maxBackoff, n.minBackoff)
	if n.client == nil {
		n.client = &http.Client{Timeout: DefaultTimeout}
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	kinds := cfg.HeldKinds
	if kinds == nil {
		kinds = DefaultHeldKinds
	}
	n.heldKinds = map[string]bool{}
	for _, k := range kinds {
		n.heldKinds[k] = true
	}
	if n.file != "" {
		d, why, err := loadDedup(n.file, n.instance)
		if err != nil {
			return nil, err
		}
		if why != "" {
			n.log.Warn("notification state not used; the next pass takes a new baseline", "state_file", n.file, "reason", why)
		}
		n.d, n.baselined = d, d != nil && d.Baseline
	}
	if n.d == nil {
		n.d = newDedup(n.instance)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		n.log.Warn("the webhook URL is not https: notifications and the URL's token travel in clear")
	}
	n.queue = make(chan *job, positive(cfg.QueueSize, DefaultQueueSize))
	n.ctx, n.cancel = context.WithCancel(context.Background())
	go n.work()
	return n, nil
}

func positive[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// Observe derives the notifications st calls for and queues those not
// sent yet; call it after every pass that succeeded, with the ledger's
// fold, which must not change during the call. It reads st before it
// returns and never waits on the receiver.
//
// The first Observe of a notifier without state takes st as a baseline:
// nothing already in it is notified. A ledger shorter than the state
// remembers (another ledger) is taken as a new baseline too. Observe also
// clears the stalls: the pass succeeded, so a stall that recurs after it
// is notified again.
func (n *Notifier) Observe(ctx context.Context, st *ledger.State) {
	if st == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.clearStalls()
	cands := n.candidates(st)
	if !n.baselined || st.Seq < n.d.Floor {
		n.baseline(ctx, st, cands)
		return
	}
	now := n.now()
	floor := st.Seq
	var dropped int
	var violations []candidate
	for _, c := range cands {
		switch {
		case c.kind == KindViolation:
			violations = append(violations, c)
			continue
		case c.seq <= n.d.Floor:
			continue
		}
		if _, ok := n.d.Sent[c.key]; ok {
			continue
		}
		floor = min(floor, c.seq-1)
		if !n.enqueue(ctx, c.key, func() *job { return n.jobOf(ctx, c) }, now) {
			dropped++
		}
	}
	for _, c := range n.newViolations(st, violations, now) {
		if !n.enqueue(ctx, c.key, func() *job { return n.jobOf(ctx, c) }, now) {
			dropped++
		}
	}
	if dropped > 0 {
		n.log.LogAttrs(ctx, slog.LevelWarn, "notification queue full; the rest wait for the next pass", slog.Int("waiting", dropped))
	}
	for k, t := range n.nextTry {
		if !t.After(now) {
			delete(n.nextTry, k)
		}
	}
	if floor > n.d.Floor {
		n.d.Floor = floor
	}
	n.d.prune(n.maxKeys)
	n.saveLocked()
}

// newViolations returns the violations to notify: those owed (found new
// and not yet handled). The fold keeps a violation's subject, not its
// entry (no seq to compare with the floor), so the ledger's count of
// policy.violation entries says how many are new since the last pass, and
// the kept keys (up to MaxKeys) say which: those among violations (the
// state's, in ledger order as far as it knows) whose keys are not kept.
// When more are unknown than are new (their keys were pruned), the last of
// them are taken and the others marked handled unsent. Either way no more
// are ever sent than were appended.
func (n *Notifier) newViolations(st *ledger.State, violations []candidate, now time.Time) []candidate {
	total := violationCount(st)
	if total > n.d.Violations {
		var unknown []candidate
		for _, c := range violations {
			_, done := n.d.Sent[c.key]
			if !done && !n.d.Owed[c.key] {
				unknown = append(unknown, c)
			}
		}
		if grew := total - n.d.Violations; uint64(len(unknown)) > grew {
			for _, c := range unknown[:uint64(len(unknown))-grew] {
				n.d.Sent[c.key] = sent{At: now, Skipped: true}
			}
			unknown = unknown[uint64(len(unknown))-grew:]
		}
		for _, c := range unknown {
			n.d.Owed[c.key] = true
		}
	}
	n.d.Violations = total
	var out []candidate
	found := map[string]bool{}
	for _, c := range violations {
		if n.d.Owed[c.key] {
			out = append(out, c)
			found[c.key] = true
		}
	}
	for k := range n.d.Owed {
		if !found[k] {
			delete(n.d.Owed, k) // not in this ledger
		}
	}
	return out
}

func violationCount(st *ledger.State) uint64 {
	var total uint64
	for _, v := range st.Totals.Violations {
		total += uint64(v)
	}
	return total
}

// baseline records every notification st calls for as handled, without
// sending it.
func (n *Notifier) baseline(ctx context.Context, st *ledger.State, cands []candidate) {
	if n.baselined {
		n.log.LogAttrs(ctx, slog.LevelWarn, "the ledger is shorter than the notification state remembers; taking a new baseline",
			slog.Uint64("seq", st.Seq), slog.Uint64("remembered", n.d.Floor))
	}
	stalls := n.d.Stalls
	n.d = newDedup(n.instance)
	n.d.Stalls = stalls
	n.d.Floor = st.Seq
	n.d.Violations = violationCount(st)
	n.d.Baseline, n.baselined = true, true
	now := n.now()
	for _, c := range cands {
		if c.seq == 0 {
			n.d.Sent[c.key] = sent{At: now}
		}
	}
	n.d.prune(n.maxKeys)
	n.log.LogAttrs(ctx, slog.LevelInfo, "notifications start after the ledger's current entries (baseline)", slog.Uint64("seq", st.Seq))
	n.saveLocked()
}

// enqueue queues the job of key unless it is queued, held back or the
// queue is full (false). mk builds the job only when it is queued.
func (n *Notifier) enqueue(ctx context.Context, key string, mk func() *job, now time.Time) bool {
	if n.queued[key] {
		return true
	}
	if t, ok := n.nextTry[key]; ok && now.Before(t) {
		return true
	}
	if len(n.queue) == cap(n.queue) {
		return false
	}
	j := mk()
	if j == nil {
		return true
	}
	n.queued[key] = true
	n.queue <- j // never blocks: checked above, and only senders hold n.mu
	return true
}

func (n *Notifier) jobOf(ctx context.Context, c candidate) *job {
	body, err := n.render(c.build())
	if err != nil {
		n.log.LogAttrs(ctx, slog.LevelError, "notification not built", slog.String("key", c.key), slog.String("err", err.Error()))
		return nil
	}
	return &job{key: c.key, kind: c.kind, agent: c.agent, run: c.run, seq: c.seq, body: body}
}

// Stalled notifies that a pass stalled (a person must act: the ledger is
// untrusted or was rewritten, say), once per reason and message until an
// Observe (a pass that succeeded) clears it; call it after every stalled
// pass, instead of Observe. It never waits on the receiver.
func (n *Notifier) Stalled(ctx context.Context, reason, message string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	key := stallKey(reason, message)
	j := n.stalls[key]
	if j == nil {
		body, err := n.render(n.stallMessage(reason, message))
		if err != nil {
			n.log.LogAttrs(ctx, slog.LevelError, "notification not built", slog.String("key", key), slog.String("err", err.Error()))
			return
		}
		j = &job{key: key, kind: KindStall, body: body}
		n.stalls[key] = j
	}
	if _, ok := n.d.Stalls[key]; ok {
		return
	}
	if !n.enqueue(ctx, key, func() *job { return j }, n.now()) {
		n.log.LogAttrs(ctx, slog.LevelWarn, "notification queue full; the stall is notified at its next report", slog.String("key", key))
	}
}

// clearStalls forgets every stall: a pass succeeded.
func (n *Notifier) clearStalls() {
	clear(n.stalls)
	clear(n.d.Stalls)
}

// work delivers the queued jobs until the queue is closed and drained, or
// Close gives up waiting.
func (n *Notifier) work() {
	defer close(n.done)
	for j := range n.queue {
		if n.ctx.Err() != nil {
			return
		}
		res, next := n.deliver(n.ctx, j)
		n.finish(j, res, next)
	}
}

// finish records what became of j: a delivered or refused notification is
// handled for good; a failed one waits until next.
func (n *Notifier) finish(j *job, res result, next time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.queued, j.key)
	if res == failed {
		if !next.IsZero() {
			n.nextTry[j.key] = next
		}
		return
	}
	rec := sent{Seq: j.seq, At: n.now(), Refused: res == refused}
	switch {
	case j.kind == KindStall:
		// Unless a good pass cleared it meanwhile.
		if n.stalls[j.key] != nil {
			n.d.Stalls[j.key] = rec
		}
	case j.kind == KindViolation:
		if n.d.Owed[j.key] {
			delete(n.d.Owed, j.key)
			n.d.Sent[j.key] = rec
		}
	case j.seq > n.d.Floor:
		n.d.Sent[j.key] = rec
	}
	n.saveLocked()
}

// saveLocked writes the state file (atomically: a temporary file, fsync,
// rename; 0600) when it changed. A failure is logged when it is not the
// one before, and returned by Close.
func (n *Notifier) saveLocked() {
	if n.file == "" {
		return
	}
	b, err := n.d.encode()
	if err == nil && bytes.Equal(b, n.saved) {
		return
	}
	if err == nil {
		if err = atomicfile.Write(n.file, b); err != nil {
			err = fmt.Errorf("save notification state: %w", err)
		} else {
			n.saved = b
		}
	}
	if err != nil && (n.saveErr == nil || n.saveErr.Error() != err.Error()) {
		n.log.Error("notification state not saved; a restart may send notifications again", "err", err)
	}
	n.saveErr = err
}

// Close stops taking notifications, waits up to FlushTimeout for the queued
// ones to be delivered, then stops the worker (cancelling the delivery in
// flight) and saves the state. Notifications not delivered are sent after a
// restart. It returns an error only when the state could not be saved.
// Close is idempotent.
func (n *Notifier) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.queue)
	n.mu.Unlock()

	t := time.NewTimer(n.flushTimeout)
	defer t.Stop()
	select {
	case <-n.done:
	case <-t.C:
		n.mu.Lock()
		waiting := len(n.queued)
		n.mu.Unlock()
		n.log.Warn("notifications not delivered before shutdown; they are sent after a restart", "waiting", waiting)
		n.cancel()
		<-n.done
	}
	n.cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.saveLocked()
	return n.saveErr
}
