package sampling

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
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
// A new stream's first rule set costs one store call (one round trip, one
// script per shard its rules fall in), bounded by firstBorrowWait. When the
// store fails or is slow, the rules of that rule set are withheld: the
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

// firstBorrowWait bounds the store call of a new stream's first rule set:
// a hello waits no longer for it, and its rules are withheld past it.
const firstBorrowWait = 100 * time.Millisecond

// firstBorrowGate is the Core's gate: the store's buckets, or a replica's
// own if the store keeps none.
type firstBorrowGate struct {
	store store.BorrowStore // nil: local
	local localGate
	// down logs the store's failures once per outage.
	down    *condition.Condition
	outcome *prometheus.CounterVec // by outcome: lent, withheld, unavailable
	// lent, withheld and unavailable are outcome's series.
	lent, withheld, unavailable prometheus.Counter
}

func newFirstBorrowGate(bs store.BorrowStore, o Options) *firstBorrowGate {
	g := &firstBorrowGate{store: bs, local: localGate{buckets: map[string]*localBucket{}}}
	g.outcome = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "controlplane_first_borrows_total",
		Help: "Rules of new instances' first rule sets, by outcome: lent (the instance may borrow before its first targets), withheld (new instances borrowed the fleet-wide share already, or the rule has no reservoir), unavailable (withheld: the store did not answer in time).",
	}, []string{"outcome"})
	g.lent, g.withheld, g.unavailable = g.outcome.WithLabelValues("lent"), g.outcome.WithLabelValues("withheld"), g.outcome.WithLabelValues("unavailable")
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_first_borrow_store_failures_total",
		Help: "First-borrow store calls that failed or took longer than 100 ms; their rule sets withheld every first borrow.",
	})
	o.Registerer.MustRegister(g.outcome, failures)
	g.down = condition.New(o.Logger, "first-borrow gate: store unavailable, withholding new instances' first borrows", failures)
	return g
}

// FirstBorrows says, for each rule of a new instance's first rule set,
// whether the instance may borrow for it before its first targets. A rule
// without a reservoir is never lent. It never fails: a store that does not
// answer within firstBorrowWait withholds them all.
func (s *Core) FirstBorrows(ctx context.Context, rules []catalog.FirstBorrow) []bool {
	return s.borrows.take(ctx, s.now(), rules)
}

func (g *firstBorrowGate) take(ctx context.Context, now time.Time, rules []catalog.FirstBorrow) []bool {
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
		for j, ok := range g.local.take(now, takes) {
			out[idx[j]] = ok
		}
	default:
		cctx, cancel := context.WithTimeout(ctx, firstBorrowWait)
		got, err := g.store.TakeFirstBorrows(cctx, now, takes)
		cancel()
		if err != nil {
			if ctx.Err() == nil { // not the client's hello gone
				g.down.Occurred(ctx, err)
			}
			g.unavailable.Add(float64(len(takes)))
			g.withheld.Add(float64(len(rules) - len(takes)))
			return out
		}
		g.down.Cleared(ctx)
		for j, ok := range got {
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
