package ledger

import (
	"slices"
	"sort"
	"time"
)

// spendIndex is an agent's attempts by the time they were claimed, with
// what each counts in Spent (its cost once settled, its reservation
// until then) summed in a Fenwick tree, so that the spend since any time
// is two prefix sums: O(log n) in the agent's attempts, and an entry's
// change to it O(log n) too.
type spendIndex struct {
	refs []attemptRef // by t
	tree []float64    // Fenwick tree of refs' v, 1-based: tree[k] sums refs (k-lowbit(k), k]
}

// attemptRef is one attempt of a run, by the time it was claimed.
type attemptRef struct {
	t time.Time
	r *Run
	// i is the attempt's index in r.Attempts; -1 stands for a run the
	// state holds no attempt of (see value).
	i int
	v float64 // what it counts in tree
}

// value is what the attempt counts in Spent now.
func (a attemptRef) value() float64 {
	var at Attempt
	switch {
	case a.i >= 0:
		at = a.r.Attempts[a.i]
	case len(a.r.Attempts) == 0:
		at = Attempt{ReservedUSD: a.r.ReservedUSD, CostUSD: a.r.CostUSD, Settled: a.r.Settled}
	default:
		return 0 // the run's attempts count instead
	}
	if at.Settled {
		return at.CostUSD
	}
	return at.ReservedUSD
}

func (x *spendIndex) add(pos int, d float64) {
	for k := pos + 1; k < len(x.tree); k += k & -k {
		x.tree[k] += d
	}
}

// prefix sums the values of refs[:n].
func (x *spendIndex) prefix(n int) float64 {
	s := 0.0
	for k := n; k > 0; k -= k & -k {
		s += x.tree[k]
	}
	return s
}

// since is what the attempts claimed at or after t count.
func (x *spendIndex) since(t time.Time) float64 {
	i := sort.Search(len(x.refs), func(i int) bool { return !x.refs[i].t.Before(t) })
	if i == len(x.refs) {
		return 0
	}
	return x.prefix(len(x.refs)) - x.prefix(i)
}

// insert adds an attempt, at the end when it is the latest (the usual
// case, O(log n)), else in its place, rebuilding the tree and the runs'
// positions (O(n), for clocks that went back).
func (x *spendIndex) insert(ref attemptRef) {
	ref.v = ref.value()
	n := len(x.refs)
	if n == 0 || !ref.t.Before(x.refs[n-1].t) {
		x.refs = append(x.refs, ref)
		ref.r.ix.spend = append(ref.r.ix.spend, n)
		if len(x.tree) == 0 {
			x.tree = append(x.tree, 0)
		}
		k := n + 1
		x.tree = append(x.tree, ref.v+x.prefix(k-1)-x.prefix(k-(k&-k)))
		return
	}
	at := sort.Search(n, func(i int) bool { return x.refs[i].t.After(ref.t) })
	x.refs = slices.Insert(x.refs, at, ref)
	x.rebuild()
}

// rebuild recomputes the tree and every run's positions from refs.
func (x *spendIndex) rebuild() {
	for _, ref := range x.refs {
		ref.r.ix.spend = nil // not [:0]: a clone's run shares its original's array
	}
	x.tree = make([]float64, len(x.refs)+1)
	for i, ref := range x.refs {
		ref.r.ix.spend = append(ref.r.ix.spend, i)
		k := i + 1
		x.tree[k] += ref.v
		if p := k + (k & -k); p < len(x.tree) {
			x.tree[p] += x.tree[k]
		}
	}
}

// update counts again what the attempts of r count, after an entry of r.
func (x *spendIndex) update(r *Run) {
	for _, pos := range r.ix.spend {
		ref := &x.refs[pos]
		if v := ref.value(); v != ref.v {
			x.add(pos, v-ref.v)
			ref.v = v
		}
	}
}
