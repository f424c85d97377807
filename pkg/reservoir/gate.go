package reservoir

import "math"

// GateBucket is one rule's first-borrow bucket as a store keeps it for every
// replica (the first-borrow gate, package sampling): a token count and the
// time it was counted at, in Unix milliseconds, so that it fits a Redis hash
// and a Lua script can run the same arithmetic (redisstore's borrow.lua is
// this type's twin, and the store conformance suite holds both to the same
// answers).
//
// Like Bucket it holds at most max(1, rate) tokens: a second's worth, or one
// token for rates below one per second. A bucket that a store does not hold
// (never taken from, or expired) is full: TTL is how long it must be kept.
// The rate is the caller's at each take: replicas that briefly disagree on
// it (a budget decided on one before the other) each refill at their own.
type GateBucket struct {
	Tokens float64
	At     int64 // Unix ms
}

// GateMaxTTL bounds how long a store keeps a gate bucket. A bucket whose
// refill takes longer (a rate below one token an hour) is forgotten, and so
// full again, early: at most one token an hour more than its rate.
const GateMaxTTL = int64(3600_000)

// ValidGateRate reports whether a gate bucket can lend at rate: a positive,
// finite number. A rate that is not lends nothing and stores nothing.
func ValidGateRate(rate float64) bool { return rate > 0 && !math.IsInf(rate, 1) }

// Take takes up to n whole tokens at now (Unix ms) from b, which is fresh
// if the store did not hold it, at rate tokens a second (ValidGateRate),
// and says how many it took. A clock behind the bucket's (another
// replica's) adds nothing until it passes it.
func (b *GateBucket) Take(now int64, rate float64, fresh bool, n int64) int64 {
	capacity := math.Max(1, rate)
	if fresh {
		b.Tokens, b.At = capacity, now
	} else if now > b.At {
		b.Tokens += rate * float64(now-b.At) / 1000
		b.At = now
	}
	b.Tokens = math.Min(b.Tokens, capacity)
	k := min(n, int64(math.Floor(b.Tokens)))
	if k <= 0 {
		return 0
	}
	b.Tokens -= float64(k)
	return k
}

// TTL is how long, in ms, a store keeps b after a take at rate: until it
// is full again (a bucket the store no longer holds is full), and a second
// more, at least a second and at most GateMaxTTL.
func (b *GateBucket) TTL(rate float64) int64 {
	refill := math.Ceil((math.Max(1, rate) - b.Tokens) / rate * 1000)
	if !(refill < float64(GateMaxTTL)) {
		return GateMaxTTL
	}
	return min(max(int64(refill), 0)+1000, GateMaxTTL)
}
