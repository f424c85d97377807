package sampler

import (
	"sync/atomic"
	"unsafe"
)

// cacheLinePair is the span of memory that a core pulls in at once: a cache
// line and, by adjacent-line prefetching, its neighbour.
const cacheLinePair = 128

// stripes spreads a rule's counters over cache lines, picked by a trace ID
// byte, so that cores counting spans of one rule do not fight over one line.
const stripes = 8

// stripe is padded to two cache lines: one line apart would still be pulled
// in pairs by adjacent-line prefetching.
type stripe struct {
	requests atomic.Int64
	sampled  atomic.Int64
	borrowed atomic.Int64
	_        [cacheLinePair - 24]byte
}

// counters leads with padding too, so that the first stripe never shares a
// line with the fields before it, which every span reads. The flags have
// lines of their own: every span reads them, and they change rarely (a take
// bumps epoch; a stripe is marked past its exact count by the few spans
// that cross it), so cores keep them in their caches. Reading the stripe's
// count instead would miss whenever another core had just written it.
type counters struct {
	_ [cacheLinePair]byte
	f flags
	_ [cacheLinePair - unsafe.Sizeof(flags{})]byte
	s [stripes]stripe
}

type flags struct {
	// epoch counts takes. A stripe is past its exact count this interval
	// when past[stripe] == epoch+1: a take makes every mark stale at once,
	// and a mark made late, by a span that counted into the interval just
	// taken, is stale already.
	epoch atomic.Uint32
	past  [stripes]atomic.Uint32
}

// counts is one interval's totals of a rule.
type counts struct {
	requests, sampled, borrowed int64
}

// A stripe counts its first exactPerStripe requests of an interval one by
// one. Past that, it counts one span in sampleEvery, picked by trace ID
// bits, as sampleEvery: a busy rule's span starts then mostly read a cache
// line rather than write one that other cores hold, which costs more than
// the rest of a decision. The count stays unbiased (trace IDs are random),
// with a relative error of about sqrt(sampleEvery/n) at n requests: 1.3 %
// at 100,000 an interval. Sampled and borrowed spans are always counted
// exactly; they are few, and they are what budgets bill.
const (
	exactPerStripe = 512
	sampleEvery    = 16
)

// add counts one span. stripe and pick are trace ID bytes: stripe picks the
// stripe, pick whether a span past the exact count is the one in sampleEvery.
func (c *counters) add(stripe, pick byte, sampled, borrowed bool) {
	stripe %= stripes
	s := &c.s[stripe]
	switch epoch := c.f.epoch.Load(); {
	case c.f.past[stripe].Load() != epoch+1:
		if s.requests.Add(1) >= exactPerStripe {
			c.f.past[stripe].Store(epoch + 1)
		}
	case pick%sampleEvery == 0:
		s.requests.Add(sampleEvery)
	}
	if sampled {
		s.sampled.Add(1)
		if borrowed {
			s.borrowed.Add(1)
		}
	}
}

// take returns the totals since the last take and resets them, with
// borrowed <= sampled <= requests. Spans are counted while it runs, so a
// span may land partly in this take and partly in the next; borrowed spans
// beyond the sampled ones are left for the next take.
func (c *counters) take() counts {
	var t counts
	for i := range c.s {
		s := &c.s[i]
		// The reverse of the order add increments them in.
		t.borrowed += s.borrowed.Swap(0)
		t.sampled += s.sampled.Swap(0)
		t.requests += s.requests.Swap(0)
	}
	// After the swaps: a span that loads the old epoch and then counts
	// into the new interval only counts exactly.
	c.f.epoch.Add(1)
	// Every sampled span was a request. Past the exact count requests are
	// an estimate, which can fall below the exact sampled count when a
	// rule samples nearly everything: report at least that many. (Holding
	// sampled back instead would carry a growing backlog.)
	t.requests = max(t.requests, t.sampled)
	if t.borrowed > t.sampled {
		c.giveBack(counts{borrowed: t.borrowed - t.sampled})
		t.borrowed = t.sampled
	}
	return t
}

// giveBack adds totals that could not be reported, for the next report.
func (c *counters) giveBack(t counts) {
	s := &c.s[0]
	s.requests.Add(t.requests)
	s.sampled.Add(t.sampled)
	s.borrowed.Add(t.borrowed)
}
