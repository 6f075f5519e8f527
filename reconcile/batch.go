package reconcile

import (
	"context"
	"sync"
	"time"

	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/ledger"
)

// batchWindow is how long a queued append or push waits for the runs
// still working before the batch is sent without them. Each batch costs a
// push or two, a few git processes on the server: with 100 exec agents a
// pass (BenchmarkAgentsPass) took 3.1-3.2 s of CPU at 50 ms against
// 2.2-2.5 s at 200 ms, and, in another run on a busier machine, 2.9-3.1 s
// at 200 ms against 2.35-2.42 s at 500 ms (each pair back to back); 1 s
// gained nothing more. A run that finishes while no other works waits not
// at all.
const batchWindow = 500 * time.Millisecond

// batcher groups what the runs of a pass, driven in parallel, write: their
// ledger appends go in one push (ledger.AppendBatch) and their proposal
// branches in another, sent when every run that is not working has queued
// something (or the oldest has waited batchWindow), so a pass of N agents
// costs a few pushes, not five per run. Each run's entries keep their
// order: a run queues one request at a time and waits for it. Every field
// is guarded by the pass's lock, which cond waits on.
type batcher struct {
	cond *sync.Cond
	// members are the runs' goroutines; outside, those working without
	// the lock (their agent runs).
	members, outside int
	appends          []*queuedAppend
	pushes           []*queuedPush
	since            time.Time
}

type queuedAppend struct {
	part ledger.Batch
	err  error // the whole batch's, when it failed
	done bool
}

type queuedPush struct {
	update gitstore.RefUpdate
	err    error
	done   bool
}

func newBatcher(mu *sync.Mutex) *batcher { return &batcher{cond: sync.NewCond(mu)} }

// leave counts a run's goroutine out; working and back
// bracket its work outside the lock.
func (b *batcher) leave()   { b.members--; b.cond.Broadcast() }
func (b *batcher) working() { b.outside++ }
func (b *batcher) back()    { b.outside--; b.cond.Broadcast() }

// queued notes a new request, and arms the window's wake-up when runs are
// still working.
func (b *batcher) queued() {
	if !b.since.IsZero() {
		return
	}
	b.since = time.Now()
	if b.outside > 0 {
		l := b.cond.L
		time.AfterFunc(batchWindow, func() {
			l.Lock()
			b.cond.Broadcast()
			l.Unlock()
		})
	}
}

// ready reports whether the queue should be sent now: no run could queue
// more without it, or the runs still working have been waited for long
// enough.
func (b *batcher) ready() bool {
	n := len(b.appends) + len(b.pushes)
	if n == 0 || b.members-n-b.outside > 0 {
		return false
	}
	return b.outside == 0 || time.Since(b.since) >= batchWindow
}

// wait returns once done is set, sending the queue itself when it is
// ready.
func (b *batcher) wait(ctx context.Context, r *Reconciler, p *pass, done *bool) {
	for !*done {
		if b.ready() {
			b.flush(ctx, r, p)
			continue
		}
		b.cond.Wait()
	}
}

// flush sends the queued pushes (together; one by one when that fails, so
// that each gets its own answer) and the queued appends (one AppendBatch).
func (b *batcher) flush(ctx context.Context, r *Reconciler, p *pass) {
	pushes, appends := b.pushes, b.appends
	b.pushes, b.appends, b.since = nil, nil, time.Time{}
	if len(pushes) > 0 {
		updates := make([]gitstore.RefUpdate, len(pushes))
		for i, q := range pushes {
			updates[i] = q.update
		}
		if err := r.repo.Push(ctx, updates...); err != nil {
			if len(pushes) == 1 {
				pushes[0].err = err
			} else {
				for _, q := range pushes {
					q.err = r.repo.Push(ctx, q.update)
				}
			}
		}
		for _, q := range pushes {
			q.done = true
		}
	}
	if len(appends) > 0 {
		parts := make([]*ledger.Batch, len(appends))
		for i, q := range appends {
			parts[i] = &q.part
		}
		if err := r.ledger.AppendBatch(ctx, parts); err != nil {
			for _, q := range appends {
				q.err = err
			}
		}
		for _, q := range appends {
			q.done = true
		}
		p.state = r.ledger.State()
	}
	b.cond.Broadcast()
}

// batchedAppend is appendIf through the pass's batcher.
func (r *Reconciler) batchedAppend(ctx context.Context, p *pass, check func(*ledger.State) error, events []ledger.Event) ([]ledger.Entry, error) {
	q := &queuedAppend{part: ledger.Batch{Check: check, Events: events}}
	p.batch.appends = append(p.batch.appends, q)
	p.batch.queued()
	p.batch.wait(ctx, r, p, &q.done)
	if q.err != nil {
		return nil, ledgerError(q.err)
	}
	if q.part.Err != nil {
		// The part's own check refused it (errClaimed, errHeld, ...), or
		// its events could not be built.
		return nil, q.part.Err
	}
	return q.part.Stored, nil
}

// pushBranch pushes a proposal branch, through the pass's batcher when
// runs are driven in parallel.
func (r *Reconciler) pushBranch(ctx context.Context, p *pass, u gitstore.RefUpdate) error {
	if p.batch == nil {
		return r.repo.Push(ctx, u)
	}
	q := &queuedPush{update: u}
	p.batch.pushes = append(p.batch.pushes, q)
	p.batch.queued()
	p.batch.wait(ctx, r, p, &q.done)
	return q.err
}

// outside releases the pass's lock for work done without it: an agent's
// run, evals, second-model reviews. The batcher counts the run as working
// meanwhile, so that batches do not wait on it. With slot, the work also
// takes one of the --concurrency slots (p.work), waiting for one; an error
// is the context's, ending the wait, with the lock held again. back takes
// the lock back (and gives the slot up); call it once.
func (p *pass) outside(ctx context.Context, slot bool) (back func(), err error) {
	if p.batch != nil {
		p.batch.working()
	}
	p.mu.Unlock()
	relock := func() {
		p.mu.Lock()
		if p.batch != nil {
			p.batch.back()
		}
	}
	if !slot || p.work == nil {
		return relock, nil
	}
	select {
	case p.work <- struct{}{}:
	case <-ctx.Done():
		relock()
		return nil, ctx.Err()
	}
	return func() { <-p.work; relock() }, nil
}
