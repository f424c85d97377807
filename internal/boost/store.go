package boost

import (
	"context"
	"sync"
	"time"
)

// Store keeps each rule's State where every replica of the control plane
// reads the same one. Memory is the one of a single process; the Redis
// store has a twin (redisstore's RecordBoostCounts and StartBoost). All
// methods are safe for concurrent use.
type Store interface {
	// RecordBoostCounts records each Add's counts in its rule's State at
	// now (State.Record: in now's interval, folding the intervals that
	// leave the recent window into the baseline, and toward the capture of
	// the boost in force), and returns every Add's State after, in order,
	// each one's Boost as the store holds it. An Add of no counts is a
	// read: it changes nothing.
	RecordBoostCounts(ctx context.Context, now time.Time, o Options, adds []Add) ([]State, error)
	// StartBoost records b as rule's boost, with nothing captured yet
	// (State.Started), if the rule's last boost still starts at prev (the
	// zero time for none): of the replicas that decided a boost from the
	// same State, one starts it. It returns the rule's boost after, b or
	// the one another replica started first, and whether it was b.
	StartBoost(ctx context.Context, rule string, prev time.Time, b Boost) (Boost, bool, error)
}

// Add is one rule's counts for RecordBoostCounts: every client's documents
// for the rule in a batch of reports, summed.
type Add struct {
	Rule   string
	Counts Counts
}

// StateTTL is how long a store keeps a rule's State after its last write:
// longer than any baseline matters (a day is 144 half-lives at the
// default), and than any cooldown a rule sets in practice. A State that
// expires starts again, warming up.
const StateTTL = 24 * time.Hour

// Memory is the Store of a single process (the embedded store): states in a
// map, by rule, each forgotten StateTTL after its last write. Times are kept
// to the millisecond, as the Redis twin keeps them.
type Memory struct {
	mu     sync.Mutex
	states map[string]*memState
	pruned time.Time
}

type memState struct {
	State
	written time.Time
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{states: map[string]*memState{}} }

// RecordBoostCounts implements Store.
func (m *Memory) RecordBoostCounts(_ context.Context, now time.Time, o Options, adds []Add) ([]State, error) {
	o = o.WithDefaults()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(now)
	out := make([]State, len(adds))
	for i, a := range adds {
		st := m.states[a.Rule]
		if c := a.Counts.Clean(); c != (Counts{}) {
			if st == nil {
				st = &memState{}
				m.states[a.Rule] = st
			}
			st.Record(now, c, o)
			st.written = now
		}
		if st != nil {
			out[i] = st.State
		}
	}
	return out, nil
}

// StartBoost implements Store.
func (m *Memory) StartBoost(_ context.Context, rule string, prev time.Time, b Boost) (Boost, bool, error) {
	b = Boost{Rate: b.Rate, Start: millis(b.Start), Expiry: millis(b.Expiry)}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.states[rule]
	if st == nil {
		// A rule with no counts has no State to boost; keep the boost so
		// that the cooldown holds anyway.
		st = &memState{written: b.Start}
		m.states[rule] = st
	}
	if !sameStart(st.Boost, prev) {
		return st.Boost, false, nil
	}
	st.State = st.State.Started(b)
	return b, true, nil
}

// sameStart reports whether cur starts at prev, to the millisecond; the
// zero time stands for no boost.
func sameStart(cur Boost, prev time.Time) bool {
	if cur.Rate == 0 || cur.Start.IsZero() {
		return prev.IsZero()
	}
	return !prev.IsZero() && cur.Start.UnixMilli() == prev.UnixMilli()
}

// prune forgets the states not written for StateTTL, at most once an hour.
func (m *Memory) prune(now time.Time) {
	if now.Sub(m.pruned) < time.Hour {
		return
	}
	m.pruned = now
	for rule, st := range m.states {
		if now.Sub(st.written) > StateTTL {
			delete(m.states, rule)
		}
	}
}

func millis(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

var _ Store = (*Memory)(nil)
