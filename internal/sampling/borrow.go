package sampling

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// The first-borrow gate. An SDK instance with no quota yet borrows a trace
// a second per rule until its first targets (about a second for the Go
// SDK), so a fleet of 10,000 starting at once borrowed 3.2 R over its first
// ten seconds. The gate lets new instances, together, borrow at most
// FirstBorrowShare of a rule's reservoir (as budgets scale it) per second,
// fleet-wide: a token per instance and rule from a bucket per rule that
// every replica shares through the store (store.BorrowStore), so that a
// fleet that connects to N replicas borrows no more than one that
// connects to one. An instance that finds none is told not to borrow
// (the transports: RuleRates.first_borrow_withheld in its first rule set).
//
// A new stream's first rule set costs a share of one store call (one round
// trip, one script per shard its rules fall in, the rule sets asked for
// meanwhile together), bounded by firstBorrowWait. When the store fails or
// is slow, the rules of those rule sets are withheld: the
// gate cannot know what other replicas lent meanwhile, and a replica-local
// fallback at 1/N of the share would need N, which no replica knows (a
// fleet behind a load balancer that adds replicas would overshoot with
// each). Withholding costs little: borrowing only bridges the time to the
// first targets, which come from the same store — while it is away, a
// stream renews the quotas its client holds and a new instance has none,
// so the fleet stays within the reservoir rather than borrowing.
//
// A Store that keeps no buckets (tests' ledgers) gets a gate per replica,
// the gate before it was fleet-wide.

// FirstBorrowShare is the share of a rule's reservoir (as budgets scale
// it) that new instances may borrow together per second, fleet-wide.
const FirstBorrowShare = 0.1

// firstBorrowWait bounds a store call of the gate: the rules of the rule
// sets it weighs are withheld past it. A new stream's hello waits for at
// most the call in flight and its own (firstBorrowWait each).
const firstBorrowWait = 100 * time.Millisecond

// firstBorrowGate is the Core's gate: the store's buckets, or a replica's
// own if the store keeps none. The first rule sets asked for while a store
// call is in flight go together in the next one, each rule once with the
// count of rule sets that ask for it (store.BorrowTake.Count): a fleet
// whose hellos come at once costs a store call per round trip, each
// touching a key per rule, not one per instance and rule; no hello waits
// behind more than one call.
type firstBorrowGate struct {
	store store.BorrowStore // nil: local
	local localGate
	now   func() time.Time

	mu      sync.Mutex
	pending []*borrowAsk // for the next store call
	running bool         // a flush runs; it takes pending when its call ends

	// down logs the store's failures once per outage.
	down *condition.Condition
	// lent, withheld and unavailable are controlplane_first_borrows_total's
	// series.
	lent, withheld, unavailable prometheus.Counter
}

// borrowAsk is one rule set's takes (a token each), answered by a flush:
// got, or err, once done is closed.
type borrowAsk struct {
	takes []store.BorrowTake
	got   []bool
	err   error
	done  chan struct{}
}

func newFirstBorrowGate(bs store.BorrowStore, o Options) *firstBorrowGate {
	g := &firstBorrowGate{store: bs, local: localGate{buckets: map[string]*localBucket{}}, now: o.Now}
	outcome := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "controlplane_first_borrows_total",
		Help: "Rules of new instances' first rule sets, by outcome: lent (the instance may borrow before its first targets), withheld (new instances borrowed the fleet-wide share already, or the rule has no reservoir), unavailable (withheld: the store did not answer in time).",
	}, []string{"outcome"})
	g.lent, g.withheld, g.unavailable = outcome.WithLabelValues("lent"), outcome.WithLabelValues("withheld"), outcome.WithLabelValues("unavailable")
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_first_borrow_store_failures_total",
		Help: "First-borrow store calls that failed or took longer than 100 ms; the rule sets they weighed withheld every first borrow.",
	})
	o.Registerer.MustRegister(outcome, failures)
	g.down = condition.New(o.Logger, "first-borrow gate: store unavailable, withholding new instances' first borrows", failures)
	return g
}

// FirstBorrows says, for each rule of a new instance's first rule set,
// whether the instance may borrow for it before its first targets. A rule
// without a reservoir is never lent. It never fails: what the store does
// not answer in time is withheld, and it returns when ctx ends.
func (s *Core) FirstBorrows(ctx context.Context, rules []catalog.FirstBorrow) []bool {
	return s.borrows.take(ctx, rules)
}

// FirstRuleSet returns rs as a new instance gets it: the rules it may not
// borrow for before its first targets listed with first_borrow_withheld, as
// the first-borrow gate says (FirstBorrows: one store call at most, bounded
// in time). rs is shared and not modified.
func (s *Core) FirstRuleSet(ctx context.Context, rs *pb.RuleSet) *pb.RuleSet {
	return catalog.WithFirstBorrows(rs, s.FirstBorrows(ctx, catalog.FirstBorrows(rs)))
}

func (g *firstBorrowGate) take(ctx context.Context, rules []catalog.FirstBorrow) []bool {
	out := make([]bool, len(rules))
	takes := make([]store.BorrowTake, 0, len(rules))
	idx := make([]int, 0, len(rules))
	for i, r := range rules {
		rate := r.Reservoir * FirstBorrowShare
		if !reservoir.ValidGateRate(rate) {
			continue
		}
		takes = append(takes, store.BorrowTake{Rule: r.Rule, Rate: rate})
		idx = append(idx, i)
	}
	if len(takes) > store.MaxBorrowTakes {
		// More rules than a rule set holds: lend the first ones'.
		takes, idx = takes[:store.MaxBorrowTakes], idx[:store.MaxBorrowTakes]
	}
	switch {
	case len(takes) == 0:
	case g.store == nil:
		for j, ok := range g.local.take(g.now(), takes) {
			out[idx[j]] = ok
		}
	default:
		a := &borrowAsk{takes: takes, done: make(chan struct{})}
		g.ask(a)
		select {
		case <-a.done:
		case <-ctx.Done():
			// The hello is gone: what its takes get is lost, as
			// a borrow the instance never makes.
			return out
		}
		if a.err != nil {
			g.unavailable.Add(float64(len(takes)))
			g.withheld.Add(float64(len(rules) - len(takes)))
			return out
		}
		for j, ok := range a.got {
			out[idx[j]] = ok
		}
	}
	var lent int
	for _, ok := range out {
		if ok {
			lent++
		}
	}
	g.lent.Add(float64(lent))
	g.withheld.Add(float64(len(rules) - lent))
	return out
}

// ask queues a for the next store call, and starts a flush if none runs.
func (g *firstBorrowGate) ask(a *borrowAsk) {
	g.mu.Lock()
	g.pending = append(g.pending, a)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go g.flush()
	}
}

// flush sends what is pending, a call at a time, until nothing is; then
// it ends, so that an idle gate holds no goroutine.
func (g *firstBorrowGate) flush() {
	for {
		batch := g.next()
		if batch == nil {
			return
		}
		// One take per rule, counting the rule sets that ask for it (at
		// the rate of the first: replicas' budgets move as one).
		var takes []store.BorrowTake
		index := map[string]int{}
		for _, a := range batch {
			for _, t := range a.takes {
				i, ok := index[t.Rule]
				if !ok {
					i = len(takes)
					index[t.Rule] = i
					takes = append(takes, store.BorrowTake{Rule: t.Rule, Rate: t.Rate})
				}
				takes[i].Count++
			}
		}
		// Not any hello's context: the call serves them all.
		ctx, cancel := context.WithTimeout(context.Background(), firstBorrowWait)
		got, err := g.store.TakeFirstBorrows(ctx, g.now(), takes)
		cancel()
		if err == nil && len(got) != len(takes) {
			err = fmt.Errorf("first borrows: %d answers for %d takes", len(got), len(takes))
		}
		if err != nil {
			g.down.Occurred(ctx, err)
		} else {
			g.down.Cleared(ctx)
		}
		// The tokens each rule got go to the rule sets in the order they
		// asked.
		for _, a := range batch {
			if err != nil {
				a.err = err
			} else {
				a.got = make([]bool, len(a.takes))
				for j, t := range a.takes {
					if i := index[t.Rule]; got[i] > 0 {
						got[i]--
						a.got[j] = true
					}
				}
			}
			close(a.done)
		}
	}
}

// next takes the rule sets of the next store call from pending: as many
// as name at most store.MaxBorrowTakes rules together (at least one).
// None: the flush is over.
func (g *firstBorrowGate) next() []*borrowAsk {
	g.mu.Lock()
	defer g.mu.Unlock()
	rules := map[string]bool{}
	n := 0
	for ; n < len(g.pending); n++ {
		added := 0
		for _, t := range g.pending[n].takes {
			if !rules[t.Rule] {
				added++
			}
		}
		if n > 0 && len(rules)+added > store.MaxBorrowTakes {
			break
		}
		for _, t := range g.pending[n].takes {
			rules[t.Rule] = true
		}
	}
	if n == 0 {
		g.pending, g.running = nil, false
		return nil
	}
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	return batch
}

// localGate is a replica's own gate, for a store that keeps no buckets:
// each rule's bucket at the rate it was last set to.
type localGate struct {
	mu      sync.Mutex
	buckets map[string]*localBucket
}

type localBucket struct {
	b    reservoir.Bucket
	rate float64
}

// maxLocalGated bounds the local gate's buckets: the rules SDKs are sent,
// with room for rules deleted since (it forgets all of them past it).
const maxLocalGated = 2 * store.MaxBorrowTakes

func (g *localGate) take(now time.Time, takes []store.BorrowTake) []bool {
	out := make([]bool, len(takes))
	ns := now.UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.buckets) > maxLocalGated {
		clear(g.buckets)
	}
	for i, t := range takes {
		b := g.buckets[t.Rule]
		if b == nil {
			b = &localBucket{}
			g.buckets[t.Rule] = b
		}
		if b.rate != t.Rate {
			b.b.SetRate(ns, t.Rate, 0)
			b.rate = t.Rate
		}
		out[i] = b.b.Take(ns)
	}
	return out
}
