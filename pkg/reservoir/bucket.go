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
// for rates below one per second (0.25/s gives one trace every 4 s). Rates
// below minRate give none; above one a nanosecond, one a nanosecond.
//
// Times are nanoseconds on any monotonic clock the caller chooses.
type Bucket struct {
	tat      atomic.Int64 // next time at which a token is due, ns
	interval atomic.Int64 // ns between tokens; 0 = no tokens
	burst    atomic.Int64 // ns of credit allowed ahead: (capacity-1) × interval
}

// SetRate changes the rate to perSecond tokens per second at now. The
// tokens the bucket holds at now, fractions included, are kept across the
// change (within the new capacity), so a change of rate neither gives
// tokens nor takes any: half a token earned at 0.5/s is half a token at
// 10/s. A quota below one per second is mostly a fraction of a token, and
// an instance's quota moves at every report as its share follows its
// traffic; a bucket that kept its next token's time instead, only pulling
// it closer when the rate rose, took the best of every report's rate: 200
// buckets at 0.01/s ±30 % took 7 % more than their quotas gave, ±60 % 19 %
// more (a fleet of 10,000 over R for 30-40 s).
//
// A fresh bucket (or one at rate 0) starts full but for phase in [0, 1)
// of one token, which delays the first token of a quota below one per
// second by that share of its interval, so that a fleet of instances
// handed tiny quotas at the same moment does not take its tokens in
// lockstep.
//
// SetRate is meant for one caller at a time (the SDK's report path); Take
// may run concurrently with it. A Take between the rate's and the tokens'
// update is decided at the new rate against the old tokens' time.
func (b *Bucket) SetRate(now int64, perSecond, phase float64) {
	if !(perSecond >= minRate) {
		b.interval.Store(0)
		return
	}
	interval := int64(math.Max(1, math.Round(1e9/perSecond)))
	burst := int64(math.Min((math.Max(1, perSecond)-1)*float64(interval), maxBurst))
	capacity := float64(burst)/float64(interval) + 1
	oldInterval, oldBurst := b.interval.Load(), b.burst.Load()
	b.burst.Store(burst)
	b.interval.Store(interval)
	for {
		tat := b.tat.Load()
		var held float64 // tokens held at now, at the old rate
		if oldInterval == 0 {
			held = capacity - phase
		} else {
			// Tokens come while tat <= now+burst: the bucket holds
			// (now+burst+interval-tat)/interval of them, and no more
			// than it can hold (tat is never behind now).
			held = float64(now+oldBurst+oldInterval-max(tat, now)) / float64(oldInterval)
		}
		held = math.Min(math.Max(held, 0), capacity)
		next := now + burst + interval - int64(held*float64(interval))
		if next == tat || b.tat.CompareAndSwap(tat, next) {
			return
		}
	}
}

// Bounds of a bucket's rate, so that its times fit in int64 nanoseconds
// beside a Unix time. A quota is any float: what rounding leaves of a
// reservoir (R less the quotas outstanding, 1e-14/s) once gave an interval
// past int64, negative, and a token to every request.
const (
	// minRate is one token in 1e18 ns, about 31 years; a lower rate
	// gives no tokens, as 0 does.
	minRate = 1e-9
	// maxBurst is the most credit a bucket holds, in ns: a second's
	// worth of tokens, at most a billion (one a nanosecond).
	maxBurst = 1e9
)

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
