package reservoir

import (
	"math"
	"sync/atomic"
)

// Bucket is a lock-free token bucket holding a fractional rate of tokens per
// second, for an SDK spending its quota on the hot path. It implements the
// generic cell rate algorithm: one atomic "theoretical arrival time" (TAT)
// instead of a token count and a refill time, so taking a token is one
// compare-and-swap, and finding none left is one load that never contends.
//
// A bucket holds at most max(1, rate) tokens: a second's worth, or one token
// for rates below one per second (0.25/s gives one trace every 4 s).
//
// Times are nanoseconds on any monotonic clock the caller chooses.
type Bucket struct {
	tat      atomic.Int64 // next time at which a token is due, ns
	interval atomic.Int64 // ns between tokens; 0 = no tokens
	burst    atomic.Int64 // ns of credit allowed ahead: (capacity-1) × interval
}

// SetRate changes the rate to perSecond tokens per second at now. Tokens
// already earned are kept, but a bucket that was waiting for a slow token is
// not left waiting longer than one interval of the new rate. A fresh bucket
// starts full but for phase in [0, 1) of one token, which delays the first
// token of a quota below one per second by that share of its interval, so
// that a fleet of instances handed tiny quotas at the same moment does not
// take its tokens in lockstep.
func (b *Bucket) SetRate(now int64, perSecond, phase float64) {
	if !(perSecond > 0) || math.IsInf(perSecond, 0) {
		b.interval.Store(0)
		return
	}
	interval := int64(math.Max(1, math.Round(1e9/perSecond)))
	capacity := math.Max(1, perSecond)
	burst := int64((capacity - 1) * float64(interval))
	wasEmpty := b.interval.Load() == 0
	b.burst.Store(burst)
	b.interval.Store(interval)
	for {
		tat := b.tat.Load()
		next := tat
		switch {
		case wasEmpty:
			// A full bucket less phase of one token.
			next = now - burst + int64(phase*float64(interval))
		case tat > now+burst+interval:
			// The next token is due more than one new interval away
			// (tokens come when tat <= now+burst): bring it closer, but
			// hand out nothing now.
			next = now + burst + interval
		}
		if next == tat || b.tat.CompareAndSwap(tat, next) {
			return
		}
	}
}

// Take takes one token at now if there is one.
func (b *Bucket) Take(now int64) bool {
	interval := b.interval.Load()
	if interval == 0 {
		return false
	}
	burst := b.burst.Load()
	for {
		tat := b.tat.Load()
		if tat > now+burst {
			return false
		}
		next := max(tat, now) + interval
		if b.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

// Available reports whether Take would succeed at now, without taking.
func (b *Bucket) Available(now int64) bool {
	return b.interval.Load() != 0 && b.tat.Load() <= now+b.burst.Load()
}
