package auth

import (
	"container/list"
	"fmt"
	"math"
	"sync"
	"time"
)

// Limits are the per-principal limits. A zero field takes its default.
type Limits struct {
	// EditsPerSecond and EditBurst bound each principal's edits (rules,
	// budgets, tokens, X-Ray rule calls) with a token bucket. Defaults: 50
	// per second, bursts of 500 (`rules apply` of 10,000 rules takes about
	// 3 minutes).
	EditsPerSecond float64
	EditBurst      int
	// CostlyPerSecond and CostlyBurst bound costly calls (SimulateCost).
	// Defaults: 1 per second, bursts of 5.
	CostlyPerSecond float64
	CostlyBurst     int
	// StreamsPerPrincipal bounds a principal's open streams (an SDK token
	// shared by a fleet opens one per instance). Default: 5000.
	StreamsPerPrincipal int
	// ClientIDsPerPrincipal bounds the distinct client IDs one principal
	// reports as within ClientIDTTL. Default: 5000.
	ClientIDsPerPrincipal int
	// ClientIDTTL is how long an unused client ID is remembered. Default:
	// 10 minutes.
	ClientIDTTL time.Duration
	// MaxClientIDs bounds the client IDs remembered for all principals
	// together. Default: 200,000 (about 20 MB).
	MaxClientIDs int
	// MaxPrincipals bounds the principals whose limits are tracked; the
	// least recently seen without an open stream is forgotten first.
	// Default: 10,000.
	MaxPrincipals int
}

func (l Limits) withDefaults() Limits {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.EditsPerSecond, 50)
	defInt(&l.EditBurst, 500)
	def(&l.CostlyPerSecond, 1)
	defInt(&l.CostlyBurst, 5)
	defInt(&l.StreamsPerPrincipal, 5000)
	defInt(&l.ClientIDsPerPrincipal, 5000)
	if l.ClientIDTTL <= 0 {
		l.ClientIDTTL = 10 * time.Minute
	}
	defInt(&l.MaxClientIDs, 200000)
	defInt(&l.MaxPrincipals, 10000)
	return l
}

// bucket is a token bucket that fills at rate per second up to burst.
type bucket struct {
	tokens float64
	last   time.Time
}

// take takes one token at now, or says how long until one is there.
func (b *bucket) take(now time.Time, rate float64, burst int) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = float64(burst), now
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+el*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

// principalLimits is one principal's state.
type principalLimits struct {
	key     string
	edits   bucket
	costly  bucket
	streams int
	clients map[string]time.Time // client ID -> last seen
	elem    *list.Element
}

// Limiter enforces Limits for every principal. It is safe for concurrent
// use; every map it keeps is bounded (MaxPrincipals, MaxClientIDs).
type Limiter struct {
	l   Limits
	now func() time.Time

	mu      sync.Mutex
	byKey   map[string]*principalLimits
	lru     *list.List // of *principalLimits, most recent at the front
	clients int        // client IDs remembered, over all principals
	sweptAt time.Time  // last sweep of every principal's client IDs
	refused func(limit string)
}

// NewLimiter returns a Limiter. refused, if not nil, is called for every
// refusal with the limit's name (for a metric).
func NewLimiter(l Limits, now func() time.Time, refused func(limit string)) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{l: l.withDefaults(), now: now, byKey: map[string]*principalLimits{}, lru: list.New(), refused: refused}
}

func limitKey(p *Principal) string { return string(p.Kind) + ":" + p.Name }

// get returns p's state, making room for it if needed. The caller holds
// l.mu.
func (l *Limiter) get(p *Principal) (*principalLimits, error) {
	key := limitKey(p)
	if st, ok := l.byKey[key]; ok {
		l.lru.MoveToFront(st.elem)
		return st, nil
	}
	for len(l.byKey) >= l.l.MaxPrincipals {
		// Forget the least recently seen principal without open streams.
		var victim *principalLimits
		for e := l.lru.Back(); e != nil; e = e.Prev() {
			if st := e.Value.(*principalLimits); st.streams == 0 {
				victim = st
				break
			}
		}
		if victim == nil {
			return nil, l.refuse("principals", time.Second, "this replica tracks %d principals, all with open streams; retry later", l.l.MaxPrincipals)
		}
		l.forget(victim)
	}
	st := &principalLimits{key: key}
	st.elem = l.lru.PushFront(st)
	l.byKey[key] = st
	return st, nil
}

func (l *Limiter) forget(st *principalLimits) {
	l.lru.Remove(st.elem)
	delete(l.byKey, st.key)
	l.clients -= len(st.clients)
}

func (l *Limiter) refuse(limit string, retry time.Duration, format string, args ...any) error {
	if l.refused != nil {
		l.refused(limit)
	}
	return &LimitError{Limit: limit, RetryAfter: retry, Message: fmt.Sprintf(format, args...)}
}

// Allow counts one call of class c (ClassEdit or ClassCostly) against p's
// rate, or refuses it with a *LimitError. Other classes always pass.
func (l *Limiter) Allow(p *Principal, c Class) error {
	if p == nil || c != ClassEdit && c != ClassCostly {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := l.get(p)
	if err != nil {
		return err
	}
	now := l.now()
	if c == ClassEdit {
		if ok, wait := st.edits.take(now, l.l.EditsPerSecond, l.l.EditBurst); !ok {
			return l.refuse("edits", wait, "%s makes more than %g edits a second (bursts of %d); retry in %v",
				p.Actor(), l.l.EditsPerSecond, l.l.EditBurst, wait.Round(time.Millisecond))
		}
		return nil
	}
	if ok, wait := st.costly.take(now, l.l.CostlyPerSecond, l.l.CostlyBurst); !ok {
		return l.refuse("costly", wait, "%s makes more than %g costly calls (simulations) a second (bursts of %d); retry in %v",
			p.Actor(), l.l.CostlyPerSecond, l.l.CostlyBurst, wait.Round(time.Millisecond))
	}
	return nil
}

// OpenStream takes one of p's streams, or refuses with a *LimitError. The
// caller calls release once when the stream ends.
func (l *Limiter) OpenStream(p *Principal) (release func(), err error) {
	if p == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := l.get(p)
	if err != nil {
		return nil, err
	}
	if st.streams >= l.l.StreamsPerPrincipal {
		return nil, l.refuse("streams", 5*time.Second, "%s has %d streams open, the most one principal may; close some or use another token",
			p.Actor(), st.streams)
	}
	st.streams++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			st.streams--
		})
	}, nil
}

// ClientID records that p reports as client id, or refuses a new ID past
// the per-principal or global bound with a *LimitError.
func (l *Limiter) ClientID(p *Principal, id string) error {
	if p == nil || id == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := l.get(p)
	if err != nil {
		return err
	}
	now := l.now()
	if _, ok := st.clients[id]; ok {
		st.clients[id] = now
		return nil
	}
	if st.clients == nil {
		st.clients = map[string]time.Time{}
	}
	if len(st.clients) >= l.l.ClientIDsPerPrincipal || l.clients >= l.l.MaxClientIDs {
		l.expireClients(st, now)
	}
	if len(st.clients) >= l.l.ClientIDsPerPrincipal {
		return l.refuse("client_ids", l.nextExpiry(st, now), "%s reports as %d client IDs, the most one principal may within %v; reuse client IDs across restarts or use another token",
			p.Actor(), len(st.clients), l.l.ClientIDTTL)
	}
	if l.clients >= l.l.MaxClientIDs && now.Sub(l.sweptAt) >= time.Second {
		// A sweep of every principal's IDs, at most once a second however
		// often a full replica is asked.
		l.sweptAt = now
		for _, other := range l.byKey {
			l.expireClients(other, now)
		}
	}
	if l.clients >= l.l.MaxClientIDs {
		return l.refuse("client_ids", time.Minute, "this replica remembers %d client IDs, the most it may; retry later", l.l.MaxClientIDs)
	}
	st.clients[id] = now
	l.clients++
	return nil
}

func (l *Limiter) expireClients(st *principalLimits, now time.Time) {
	for id, seen := range st.clients {
		if now.Sub(seen) >= l.l.ClientIDTTL {
			delete(st.clients, id)
			l.clients--
		}
	}
}

// nextExpiry is how long until p's least recently seen client ID expires.
func (l *Limiter) nextExpiry(st *principalLimits, now time.Time) time.Duration {
	oldest := now
	for _, seen := range st.clients {
		if seen.Before(oldest) {
			oldest = seen
		}
	}
	return max(oldest.Add(l.l.ClientIDTTL).Sub(now), time.Second)
}
