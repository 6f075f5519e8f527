package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/internal/crashpoint"
)

// Group commit: every Append, AppendIf and AppendBatch is a request queued
// for one committer goroutine, which exists while there is work. It takes
// every request queued, builds them as one chain (each part's check seeing
// the state as every entry before it leaves it, in flight or queued) in a
// gitstore.Stage, and pushes the chain with one compare-and-swap; while
// that push is in flight it builds the next chain on top of it, pushed as
// soon as the first returns. A request returns once the push of its
// entries succeeded (they are durable) or failed. On a failed push the
// chain built on it is dropped and its requests rebuilt, and the failed
// ones are retried (a lost race, up to appendAttempts times, after a
// fetch) or failed: nothing is stored twice or lost. Genesis and
// keys.changed, which change who may sign, go in a chain of their own with
// nothing in flight.

// appendAttempts bounds the pushes of one request that lose a race.
const appendAttempts = 10

// maxGroup bounds the requests of one chain.
const maxGroup = 1024

type committer struct {
	mu     sync.Mutex
	queue  []*appendReq
	active bool
	wake   chan struct{}
	// Owned by the committer goroutine:
	spec *State          // l.state plus what is built; nil until needed, dropped on failure
	last *gitstore.Stage // the last chain pushed, whose objects the next one reads
}

// appendReq is one call's parts.
type appendReq struct {
	ctx     context.Context
	parts   []*Batch
	alone   bool
	recent  []Entry // entries read since the request was queued
	attempt int
	err     error
	done    chan struct{}
}

// tip is the end of a chain: the last entry's sequence number, commit and
// bundle digest.
type tip struct {
	seq    uint64
	head   plumbing.Hash
	digest string
}

// chain is a built group of requests, pushed with one compare-and-swap.
type chain struct {
	reqs    []*appendReq
	entries []Entry
	stage   *gitstore.Stage
	base    plumbing.Hash
	end     tip
	alone   bool // a genesis or keys.changed request's
}

type flight struct {
	c    *chain
	done chan error
}

// submit queues a request and waits for its result.
func (l *Ledger) submit(ctx context.Context, parts []*Batch) error {
	req := &appendReq{ctx: ctx, parts: parts, done: make(chan struct{})}
	for _, b := range parts {
		for _, ev := range b.Events {
			if ev.Type == Genesis || ev.Type == KeysChanged {
				req.alone = true
			}
		}
	}
	g := &l.group
	g.mu.Lock()
	if g.wake == nil {
		g.wake = make(chan struct{}, 1)
	}
	g.queue = append(g.queue, req)
	start := !g.active
	g.active = true
	g.mu.Unlock()
	if start {
		go l.commitLoop()
	} else {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	<-req.done
	return req.err
}

// take removes the requests the next chain holds from the queue: every
// request up to the first one that must go alone, or that one alone when
// nothing is in flight.
func (g *committer) take(inFlight bool) []*appendReq {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		return nil
	}
	if g.queue[0].alone {
		if inFlight {
			return nil
		}
		r := g.queue[0]
		g.queue = g.queue[1:]
		return []*appendReq{r}
	}
	n := 0
	for n < len(g.queue) && n < maxGroup && !g.queue[n].alone {
		n++
	}
	out := append([]*appendReq(nil), g.queue[:n]...)
	g.queue = g.queue[n:]
	return out
}

// requeue puts requests back at the front of the queue, in order.
func (g *committer) requeue(reqs []*appendReq) {
	if len(reqs) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue = append(append([]*appendReq(nil), reqs...), g.queue...)
}

func finish(reqs []*appendReq, err error) {
	for _, r := range reqs {
		if err != nil {
			r.err = err
			for _, b := range r.parts {
				b.Stored = nil
			}
		}
		close(r.done)
	}
}

// commitLoop is the committer goroutine: it runs until the queue is empty
// and nothing is in flight.
func (l *Ledger) commitLoop() {
	g := &l.group
	var (
		inFlight *flight
		next     *chain // built on inFlight, waiting for it
	)
	for {
		if inFlight == nil && next != nil {
			inFlight, next = l.launch(next), nil
			continue
		}
		if inFlight != nil && inFlight.c.alone {
			// Nothing is built on a change of who may sign before it
			// lands.
			next = l.land(inFlight, <-inFlight.done, next)
			inFlight = nil
			continue
		}
		if reqs := g.take(inFlight != nil); len(reqs) > 0 {
			if inFlight == nil {
				if c := l.build(reqs, nil, nil); c != nil {
					inFlight = l.launch(c)
				}
			} else {
				// What arrives while a push is in flight joins the
				// chain built on it, pushed when it returns.
				next = l.build(reqs, inFlight.c, next)
			}
			continue
		}
		if inFlight == nil {
			g.mu.Lock()
			if len(g.queue) == 0 {
				g.active = false
				g.mu.Unlock()
				return
			}
			g.mu.Unlock()
			continue
		}
		select {
		case err := <-inFlight.done:
			landed := len(inFlight.c.reqs)
			next = l.land(inFlight, err, next)
			inFlight = nil
			if err == nil && next != nil {
				next = l.linger(next, landed)
			}
		case <-g.wake:
		}
	}
}

// lingerMax is how long a chain waits, once the push it was built on
// returned, for the callers that push just answered to queue again (see
// linger).
const lingerMax = 2 * time.Millisecond

// linger holds next, whose base just landed, back for up to lingerMax
// while it has fewer requests than half of the landed chain's, taking in
// what arrives meanwhile. Without it, callers that append again as soon as
// they are answered all miss the chain pushed next, and chains alternate
// between nearly all callers and nearly none.
func (l *Ledger) linger(next *chain, landed int) *chain {
	g := &l.group
	deadline := time.Now().Add(lingerMax)
	for next != nil && len(next.reqs) < landed/2 {
		if reqs := g.take(true); len(reqs) > 0 {
			next = l.build(reqs, nil, next)
			continue
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-g.wake:
		case <-t.C:
		}
		t.Stop()
	}
	return next
}

// launch starts pushing c; a chain without entries (every part refused or
// already recorded) has nothing to push and is finished.
func (l *Ledger) launch(c *chain) *flight {
	if len(c.entries) == 0 {
		finish(c.reqs, nil)
		return nil
	}
	f := &flight{c: c, done: make(chan error, 1)}
	ctx, stop := groupContext(c.reqs)
	go func() {
		defer stop()
		f.done <- l.repo.PushStage(ctx, c.stage, gitstore.RefUpdate{Branch: Branch, Old: c.base, New: c.end.head})
	}()
	return f
}

// groupContext returns a context that ends when the contexts of all reqs
// have ended (one caller giving up does not abort the others' push), with
// the values of the first.
func groupContext(reqs []*appendReq) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(reqs[0].ctx))
	left := int32(len(reqs))
	stops := make([]func() bool, len(reqs))
	for i, r := range reqs {
		stops[i] = context.AfterFunc(r.ctx, func() {
			if atomic.AddInt32(&left, -1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}

// land handles the end of f's push: on success the entries are applied and
// the requests finished; on failure next (built on f) is dropped and its
// requests queued again, and f's retried or failed. It returns the chain
// to push next.
func (l *Ledger) land(f *flight, err error, next *chain) *chain {
	g := &l.group
	c := f.c
	if err == nil {
		crashpoint.Hit("ledger.append")
		for _, e := range c.entries {
			if aerr := l.state.Apply(e); aerr != nil {
				err = fmt.Errorf("append to ledger: %w", aerr)
				break
			}
			if aerr := l.trust.advance(e.Predicate); aerr != nil {
				err = fmt.Errorf("append to ledger: %w", aerr)
				break
			}
		}
		if err != nil {
			// The fold refused what was pushed: nothing built on it holds.
			g.spec = nil
			if next != nil {
				g.requeue(next.reqs)
			}
			finish(c.reqs, err)
			return nil
		}
		g.last = c.stage
		finish(c.reqs, nil)
		return next
	}
	g.spec = nil
	var again []*appendReq
	if errors.Is(err, gitstore.ErrStale) {
		var fail []*appendReq
		for _, r := range c.reqs {
			r.attempt++
			if r.attempt >= appendAttempts {
				fail = append(fail, r)
			} else {
				again = append(again, r)
			}
		}
		finish(fail, fmt.Errorf("append to ledger: %w", err))
	} else {
		finish(c.reqs, fmt.Errorf("append to ledger: %w", err))
	}
	if next != nil {
		again = append(again, next.reqs...)
	}
	if len(again) > 0 && errors.Is(err, gitstore.ErrStale) {
		// Back off with jitter so racing writers do not collide again,
		// then read what the other writer appended.
		ctx, stop := groupContext(again)
		attempt := max(again[0].attempt, 1)
		backoff := time.Duration(attempt) * time.Duration(10+rand.IntN(40)) * time.Millisecond
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		ferr := ctx.Err()
		if ferr == nil {
			ferr = l.repo.Fetch(ctx)
		}
		stop()
		if ferr != nil {
			finish(again, fmt.Errorf("append to ledger: %w", ferr))
			return nil
		}
	}
	g.requeue(again)
	return nil
}

// build checks and builds reqs as one chain on top of on (a chain in
// flight) or, when on is nil, on the ledger's state, read up to the local
// mirror's tip first; into, when not nil, is a chain already built on on
// that reqs extend. It returns nil when every request is finished with an
// error and nothing is to be pushed.
func (l *Ledger) build(reqs []*appendReq, on, into *chain) *chain {
	g := &l.group
	var cur tip
	var stage *gitstore.Stage
	switch {
	case into != nil:
		cur, stage = into.end, into.stage
	case on != nil:
		cur, stage = on.end, on.stage.Next()
	default:
		ctx, stop := groupContext(reqs)
		fresh, err := l.Sync(ctx)
		stop()
		if err != nil {
			finish(reqs, fmt.Errorf("append to ledger: %w", err))
			return nil
		}
		for _, r := range reqs {
			r.recent = append(r.recent, fresh...)
		}
		cur = tip{seq: l.state.Seq, head: l.state.Head, digest: l.state.Digest}
		if g.last != nil {
			stage = g.last.Next()
		} else {
			stage = l.repo.NewStage()
		}
	}
	// The state the checks see: the ledger's own for a lone part with
	// nothing in flight (as it will be once the push lands), otherwise
	// the speculative one, kept from chain to chain.
	parts, needState := 0, false
	for _, r := range reqs {
		for _, b := range r.parts {
			parts++
			if b.Check != nil {
				needState = true
			}
			for _, ev := range b.Events {
				if ev.Transcript != nil {
					needState = true
				}
			}
		}
	}
	var st *State
	spec := false
	switch {
	case on == nil && into == nil && parts == 1:
		st = l.state
	case needState || (g.spec != nil && g.spec.Head == cur.head && g.spec.Seq == cur.seq):
		if g.spec == nil || g.spec.Head != cur.head || g.spec.Seq != cur.seq {
			g.spec = l.state.Clone()
			for _, ch := range []*chain{on, into} {
				if ch == nil {
					continue
				}
				for _, e := range ch.entries {
					if err := g.spec.Apply(e); err != nil {
						g.spec = nil
						if into != nil {
							finish(into.reqs, fmt.Errorf("append to ledger: %w", err))
						}
						finish(reqs, fmt.Errorf("append to ledger: %w", err))
						return nil
					}
				}
			}
		}
		st, spec = g.spec, true
	}
	c := into
	if c == nil {
		c = &chain{stage: stage, base: cur.head, alone: reqs[0].alone}
	}
	signerChecked := false
	for i, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			finish([]*appendReq{r}, err)
			continue
		}
		if fatal, err := l.buildReq(r, &cur, st, spec, stage, &signerChecked); err != nil {
			if fatal {
				// The speculative state took entries that are not in
				// the chain: nothing built on it holds.
				g.spec = nil
				finish(c.reqs, err)
				finish(reqs[i:], err)
				return nil
			}
			finish([]*appendReq{r}, err)
			continue
		}
		c.reqs = append(c.reqs, r)
		for _, b := range r.parts {
			c.entries = append(c.entries, b.Stored...)
		}
	}
	c.end = cur
	return c
}

// buildReq checks and builds the parts of one request at cur, advancing
// it; st (nil when no part needs it) is the state the checks see, applied
// to as entries are built when spec. An error fails the whole request and
// leaves nothing of it in the stage; fatal reports that the speculative
// state took some of its entries before it failed.
func (l *Ledger) buildReq(r *appendReq, cur *tip, st *State, spec bool, stage *gitstore.Stage, signerChecked *bool) (fatal bool, _ error) {
	start, mark := *cur, stage.Mark()
	applied := 0
	fail := func(err error) (bool, error) {
		*cur = start
		stage.Rollback(mark)
		for _, b := range r.parts {
			b.Stored = nil
		}
		return applied > 0, err
	}
	for _, b := range r.parts {
		b.Stored, b.Err = nil, nil
		pending := withoutRecorded(b.Events, r.recent, cur.seq)
		if len(pending) == 0 {
			continue
		}
		if cur.seq == 0 && pending[0].Type != Genesis {
			return fail(fmt.Errorf("append %s to ledger: the ledger has no %s entry yet", pending[0].Type, Genesis))
		}
		if !*signerChecked {
			if err := l.CheckSigner(); err != nil {
				return fail(fmt.Errorf("append to ledger: %w", err))
			}
			*signerChecked = true
		}
		if b.Check != nil {
			if err := b.Check(st); err != nil {
				b.Err = err
				continue
			}
		}
		m := stage.Mark()
		stored, err := l.buildOn(r.ctx, stage, *cur, st, pending)
		if err != nil {
			stage.Rollback(m)
			if len(r.parts) == 1 {
				return fail(err)
			}
			b.Err = err
			continue
		}
		if spec {
			for _, e := range stored {
				if err := st.Apply(e); err != nil {
					return fail(fmt.Errorf("append to ledger: %w", err))
				}
				applied++
			}
		}
		last := stored[len(stored)-1]
		*cur = tip{seq: last.Seq, head: last.Commit, digest: last.Digest}
		b.Stored = stored
	}
	return false, nil
}
