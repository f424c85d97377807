package sampler

import "sync/atomic"

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
// line with the fields before it, which every span reads. busy has a line
// of its own: every span reads it, and it changes at most twice a stripe an
// interval, so cores keep it in their caches; reading the stripe's count
// instead would miss whenever another core had just written it.
type counters struct {
	_    [cacheLinePair]byte
	busy [stripes]atomic.Bool // the stripe is past its exact count
	_    [cacheLinePair - stripes]byte
	s    [stripes]stripe
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
	switch {
	case !c.busy[stripe].Load():
		if s.requests.Add(1) >= exactPerStripe {
			c.busy[stripe].Store(true)
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
		c.busy[i].Store(false)
	}
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
