package ledger

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
)

// A scan from the start of a long ledger first walks every commit from the
// tip back to the root (chainSince), on one core, before the walker can
// take the oldest. verifyAhead uses the other cores meanwhile: it reads the
// entry files the tip's tree names, in order from entry 2, and verifies
// them against the keys the genesis entry there leaves in force. The
// walker takes a result only for an entry whose file is the one verified
// ahead (same blob hash, so the same bytes) while the trust in force is
// still the genesis entry's, derived from the same genesis file: then
// verifyEntry would compute exactly that result again. Everything else
// (an entry after a keys.changed entry, an entry ahead did not reach or
// could not verify) goes through the pipeline as before.
// aheadMin is the shortest ledger (by the tip's last entry) verified ahead;
// a variable for the tests. aheadMaxResults bounds the results held.
var aheadMin uint64 = 1024

// aheadComplete, set by the tests, makes a scan wait for verifyAhead to
// reach the tip instead of stopping it when chainSince is done, so that
// every entry the walker takes has been verified ahead; aheadTaken counts
// the results taken.
var (
	aheadComplete bool
	aheadTaken    atomic.Int64
)

const aheadMaxResults = 1 << 14

type verifyAhead struct {
	// genesisBlob is the genesis file the trust comes from.
	genesisBlob plumbing.Hash
	stop        atomic.Bool
	wg          sync.WaitGroup
	next        atomic.Uint64 // the next seq to take
	mu          sync.Mutex
	results     map[uint64]*aheadResult
}

type aheadResult struct {
	blob plumbing.Hash
	p    Predicate
	key  string
}

// startAhead starts verifying ahead for a scan from the start of the
// ledger whose tip commit is tip; nil when the ledger is short
// or the genesis entry the tip names does not verify (the walker then
// says why). objs must be safe for concurrent use.
func startAhead(ctx context.Context, objs *scanObjects, tip plumbing.Hash, from trust) *verifyAhead {
	c, err := readCommit(objs, tip)
	if err != nil {
		return nil
	}
	// Each goroutine has its own view of the tip's trees.
	shape := func() (*fastShape, *walker) {
		w := &walker{repo: objs}
		return newFastShape(w, c.tree), w
	}
	f, w := shape()
	if f == nil {
		return nil
	}
	if _, ok := aheadBlob(f, w, aheadMin); !ok {
		return nil
	}
	// Long enough: read through an ObjectReader from here on, from the
	// goroutines below and chainSince's at once (without one, chainSince
	// would make it while they read).
	if objs.upgrade(); objs.rd == nil {
		return nil
	}
	genesis, ok := aheadBlob(f, w, 1)
	if !ok {
		return nil
	}
	bundle, err := readBlob(objs, genesis)
	if err != nil {
		return nil
	}
	p, _, err := from.verify(1, bundle)
	if err != nil {
		return nil
	}
	next := from
	if err := next.advance(p); err != nil {
		return nil
	}
	trust := newTrustAt(next)
	a := &verifyAhead{genesisBlob: genesis, results: map[uint64]*aheadResult{}}
	a.next.Store(2)
	for range max(1, runtime.NumCPU()-1) {
		f, w := shape()
		if f == nil {
			break
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.run(ctx, f, w, objs, trust)
		}()
	}
	return a
}

// run verifies entries until stopped, or past the tip's last entry.
func (a *verifyAhead) run(ctx context.Context, f *fastShape, w *walker, objs *scanObjects, trust *trustAt) {
	for !a.stop.Load() && ctx.Err() == nil {
		seq := a.next.Add(1) - 1
		if seq-1 > aheadMaxResults {
			return
		}
		blob, ok := aheadBlob(f, w, seq)
		if !ok {
			return
		}
		bundle, err := readBlob(objs, blob)
		if err != nil {
			continue
		}
		parts, ok := parseCanonical(bundle)
		if !ok || mayChangeKeys(parts.payload) {
			continue // the walker verifies it itself
		}
		p, key, err := verifyEntry(trust, seq, bundle, &parts)
		if err != nil {
			continue
		}
		a.mu.Lock()
		a.results[seq] = &aheadResult{blob: blob, p: p, key: key.ID}
		a.mu.Unlock()
	}
}

// aheadBlob is the blob the tip's tree names for entry seq.
func aheadBlob(f *fastShape, w *walker, seq uint64) (plumbing.Hash, bool) {
	if !f.enter(w, fmt.Sprintf("%09d", seq/1000)) {
		return plumbing.ZeroHash, false
	}
	h, ok := f.hashes[fmt.Sprintf("%012d.json", seq)]
	return h, ok
}

// finish stops the goroutines and waits for them; after it, take may be
// called from one goroutine.
func (a *verifyAhead) finish() {
	if a == nil {
		return
	}
	if !aheadComplete {
		a.stop.Store(true)
	}
	a.wg.Wait()
}

// take returns, and forgets, the result for entry seq with file blob,
// verified against the trust of the genesis entry with file genesis.
func (a *verifyAhead) take(seq uint64, blob, genesis plumbing.Hash) (*aheadResult, bool) {
	if a == nil || genesis != a.genesisBlob {
		return nil, false
	}
	r, ok := a.results[seq]
	if !ok || r.blob != blob {
		return nil, false
	}
	delete(a.results, seq)
	aheadTaken.Add(1)
	return r, true
}
