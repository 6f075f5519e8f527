package ledger

import (
	"iter"
	"maps"
	"slices"
	"sort"
	"time"
)

// The indexes below are kept beside the fold so that what the loop asks
// of an agent's history per pass (money spent in a window, whether a
// change was rejected or reverted, the newest outcomes) costs what the
// answer holds, not the length of the agent's history: an agent that has
// run 100,000 times decides its next run as fast as one that has run 10
// times. They are derived from Runs alone, so a state rebuilt from its
// saved Runs (init) or cloned indexes the same facts as one folded entry
// by entry.

// recentRef is a run by the time of its last entry as it was when the
// reference was made: stale once the run has a later one.
type recentRef struct {
	t time.Time
	r *Run
}

type recentList struct {
	items []recentRef // by t, oldest first
	stale int
}

type stateIndex struct {
	// attempts are each agent's attempts by the time they were claimed
	// (state_spend.go).
	attempts map[string]*spendIndex
	// recent are each agent's runs by LastTime.
	recent map[string]*recentList
	// changes are, per agent and change id (changeKey), the runs (their
	// positions in Runs) that finished with that change, in start order;
	// reverts are, per run id, the runs that revert it. Their slices are
	// never changed in place (insertPos), so a clone shares them.
	changes map[changeKey][]int
	reverts map[string][]int
	// touched are the runs by the seq of the last entry applied to them
	// since the state was built (built is its Seq then).
	touched      []touchRef
	touchedStale int
	built        uint64
}

// touchRef is a run by the seq of an entry applied to it: stale once a
// later entry is.
type touchRef struct {
	seq uint64
	r   *Run
}

// runIndex is what the indexes know of a run.
type runIndex struct {
	pos       int   // in State.Runs
	attempts  int   // of Run.Attempts indexed
	spend     []int // positions of its attempts in their spendIndex
	recentAt  time.Time
	changes   []changeKey // of stateIndex.changes the run is under
	reverting bool        // under stateIndex.reverts
	seq       uint64      // of its last reference in stateIndex.touched
}

// changeKey is an agent and a change id.
type changeKey struct{ agent, change string }

// LastTime is the time of the latest entry the run keeps (started,
// finished, failed, decided, opened, updated, closed, its transcript and
// attempts): every outcome recorded of the run is at or before it.
func (r *Run) LastTime() time.Time {
	t := r.Started
	for _, e := range [...]*Entry{r.Finished, r.Failed, r.Decision, r.Opened, r.Updated, r.Closed, r.Transcript} {
		if e != nil && e.Time.After(t) {
			t = e.Time
		}
	}
	for _, a := range r.Attempts {
		if a.Started.After(t) {
			t = a.Started
		}
	}
	return t
}

// buildIndex indexes every run of s.Runs, as init rebuilds a state.
func (s *State) buildIndex() {
	s.index = stateIndex{attempts: map[string]*spendIndex{}, recent: map[string]*recentList{}, changes: map[changeKey][]int{}, reverts: map[string][]int{}, built: s.Seq}
	for i, r := range s.Runs {
		r.ix = runIndex{pos: i}
		if len(r.Attempts) == 0 {
			x := s.spendOf(r.Agent)
			ref := attemptRef{t: r.Started, r: r, i: -1}
			ref.v = ref.value()
			x.refs = append(x.refs, ref)
		}
		s.reindex(r, true)
	}
	for _, x := range s.index.attempts {
		slices.SortStableFunc(x.refs, func(a, b attemptRef) int { return a.t.Compare(b.t) })
		x.rebuild()
	}
	for _, l := range s.index.recent {
		slices.SortStableFunc(l.items, func(a, b recentRef) int { return a.t.Compare(b.t) })
	}
}

// reindex indexes what is new of run r: attempts, its last time, its
// change and what it reverts. In bulk (buildIndex), references are
// appended unsorted, for the caller to sort once.
func (s *State) reindex(r *Run, bulk bool) {
	ix := &s.index
	x := s.spendOf(r.Agent)
	for ; r.ix.attempts < len(r.Attempts); r.ix.attempts++ {
		ref := attemptRef{t: r.Attempts[r.ix.attempts].Started, r: r, i: r.ix.attempts}
		if bulk {
			ref.v = ref.value()
			x.refs = append(x.refs, ref)
		} else {
			x.insert(ref)
		}
	}
	if !bulk {
		x.update(r)
	}
	if t := r.LastTime(); r.ix.recentAt.IsZero() || t.After(r.ix.recentAt) {
		l := ix.recent[r.Agent]
		if l == nil {
			l = &recentList{}
			ix.recent[r.Agent] = l
		}
		l.push(r, t, bulk)
	}
	if id := r.ChangeID(); id != "" {
		if k := (changeKey{r.Agent, id}); !slices.Contains(r.ix.changes, k) {
			r.ix.changes = append(r.ix.changes, k)
			ix.changes[k] = insertPos(ix.changes[k], r.ix.pos)
		}
	}
	if r.Reverts != "" && !r.ix.reverting {
		r.ix.reverting = true
		ix.reverts[r.Reverts] = insertPos(ix.reverts[r.Reverts], r.ix.pos)
	}
	if !bulk {
		if r.ix.seq != 0 {
			ix.touchedStale++
		}
		r.ix.seq = s.Seq
		ix.touched = append(ix.touched, touchRef{seq: s.Seq, r: r})
		if ix.touchedStale > 64 && ix.touchedStale > len(ix.touched)/2 {
			ix.touched = slices.DeleteFunc(ix.touched, func(t touchRef) bool { return t.seq != t.r.ix.seq })
			ix.touchedStale = 0
		}
	}
}

func (s *State) spendOf(agent string) *spendIndex {
	x := s.index.attempts[agent]
	if x == nil {
		x = &spendIndex{}
		s.index.attempts[agent] = x
	}
	return x
}

// insertPos returns a copy of positions with pos inserted in order: the
// slices of stateIndex.changes and reverts are shared with clones.
func insertPos(positions []int, pos int) []int {
	at := sort.SearchInts(positions, pos+1)
	return slices.Concat(positions[:at], []int{pos}, positions[at:])
}

// cloneIndex returns s's indexes for c, a clone of s: the same
// references, to c's copies of the runs. It costs copying each agent's
// references, not rebuilding them.
func (s *State) cloneIndex(c *State) stateIndex {
	ix := stateIndex{changes: maps.Clone(s.index.changes), reverts: maps.Clone(s.index.reverts), built: c.Seq,
		attempts: make(map[string]*spendIndex, len(s.index.attempts)), recent: make(map[string]*recentList, len(s.index.recent))}
	for agent, x := range s.index.attempts {
		refs := slices.Clone(x.refs)
		for i := range refs {
			refs[i].r = c.Runs[refs[i].r.ix.pos]
		}
		ix.attempts[agent] = &spendIndex{refs: refs, tree: slices.Clone(x.tree)}
	}
	for agent, l := range s.index.recent {
		items := slices.Clone(l.items)
		for i := range items {
			items[i].r = c.Runs[items[i].r.ix.pos]
		}
		ix.recent[agent] = &recentList{items: items, stale: l.stale}
	}
	return ix
}

func (l *recentList) push(r *Run, t time.Time, bulk bool) {
	if !r.ix.recentAt.IsZero() {
		l.stale++
	}
	r.ix.recentAt = t
	ref := recentRef{t: t, r: r}
	if n := len(l.items); bulk || n == 0 || !t.Before(l.items[n-1].t) {
		l.items = append(l.items, ref)
	} else {
		at := sort.Search(n, func(i int) bool { return l.items[i].t.After(t) })
		l.items = slices.Insert(l.items, at, ref)
	}
	if l.stale > 64 && l.stale > len(l.items)/2 {
		l.items = slices.DeleteFunc(l.items, func(ref recentRef) bool { return !ref.t.Equal(ref.r.ix.recentAt) })
		l.stale = 0
	}
}

// RecentRuns yields the agent's runs by LastTime, latest first, each
// once: an outcome recorded at time t of a run not yet yielded is of a run
// whose LastTime is at or after t, so a reader after the newest outcomes
// may stop at the first run whose LastTime is before the oldest it keeps.
// The state must not change while it iterates.
func (s *State) RecentRuns(agent string) iter.Seq[*Run] {
	return func(yield func(*Run) bool) {
		l := s.index.recent[agent]
		if l == nil {
			return
		}
		for i := len(l.items) - 1; i >= 0; i-- {
			ref := l.items[i]
			if !ref.t.Equal(ref.r.ix.recentAt) {
				continue // the run has a later reference
			}
			if !yield(ref.r) {
				return
			}
		}
	}
}

// RunsSince yields, each once, the runs that entries after seq changed;
// every run when seq is before the state was built (NewState, a restored
// snapshot, Clone), whose earlier entries it did not apply itself. It
// costs what those runs number. The state must not change while it
// iterates.
func (s *State) RunsSince(seq uint64) iter.Seq[*Run] {
	return func(yield func(*Run) bool) {
		if seq < s.index.built {
			for _, r := range s.Runs {
				if !yield(r) {
					return
				}
			}
			return
		}
		t := s.index.touched
		for _, ref := range t[sort.Search(len(t), func(i int) bool { return t[i].seq > seq }):] {
			if ref.seq == ref.r.ix.seq && !yield(ref.r) {
				return
			}
		}
	}
}

// RevertsOf returns the runs that revert run id, in start order, merged
// or not.
func (s *State) RevertsOf(id string) []*Run { return s.runsAt(s.index.reverts[id]) }

func (s *State) runsAt(positions []int) []*Run {
	if len(positions) == 0 {
		return nil
	}
	out := make([]*Run, len(positions))
	for i, p := range positions {
		out[i] = s.Runs[p]
	}
	return out
}
