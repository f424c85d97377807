package xray

import (
	"hash/fnv"
	"math"
	"time"
)

// X-Ray's ReservoirQuota is a whole number of traces per second, while this
// control plane's split gives each client a fractional share q of a rule's
// reservoir R (the shares of the fleet add up to R). X-Ray itself rounds the
// small shares down, so a fleet of many quiet instances gets nothing from
// its reservoir. Here each client gets, in each report period,
//
//	k = ⌊q + p⌋,  p ∈ [0, 1)
//
// which is ⌊q⌋ or ⌊q⌋+1, the latter exactly when p ≥ 1 − frac(q). If p is
// uniform on [0, 1), then P(k = ⌊q⌋+1) = frac(q) and E[k] = q: every client's
// expected quota is its share, so the fleet's expected total is exactly
// Σ q = R, whatever the shares.
//
// p is not drawn at random but rotates deterministically (rotationPhase):
//
//	p = frac(f·t + φ),  f = frac(q),  t = the period's index (now / interval),
//	φ = a hash of the client ID and rule, in [0, 1)
//
// Between two periods p advances by f (mod 1), so with a steady share a
// client gets the extra trace in ⌊f·(t+1) + φ⌋ − ⌊f·t + φ⌋ periods of each
// step: over any T consecutive periods it gets it f·T times, give or take
// one — a client with share 0.3 holds 1 trace/s in 3 periods of 10, not by
// chance but in turn. Across the fleet the φ are independent and uniform
// (X-Ray clients draw their 24-hex IDs at random, and the hash spreads
// them), so for each period p is uniform over clients and E[Σ k] = R holds
// in every period, even while shares change. Which period a client's turn
// falls in depends on φ only: choosing a client ID cannot raise its average.
//
// What rounding cannot remove is the spread of one period's total: the
// extra traces are Bernoulli(f) per client, so the total's standard
// deviation is √Σ f(1−f) ≤ √N/2 traces per second (for 1,000 clients with
// shares 0.3: 14.5 on 300, 4.8 %). Averaged over T periods it shrinks by
// √T. A core that keeps a per-rule running sum S of the fractional shares
// it hands out passes p = frac(S) instead (Target.RunningPhase; package
// xraycore does): k = ⌊S + q⌋ − ⌊S⌋, so consecutive clients tile [0, R) and
// a period's total telescopes to Σ q ± 1 = R ± 1 (per replica keeping a
// sum), whatever the shares.
//
// The quota's TTL is the core's expiry (about two report intervals): a
// client that reports on time replaces it before it lapses, so a turn lasts
// one period; a client whose quota lapses borrows one trace per second, as
// every X-Ray client does, which would cost more than keeping the quota.

// WholeQuota returns ⌊share + phase⌋ for a phase in [0, 1), clamped to
// int32 as X-Ray's ReservoirQuota is. A share that is not a positive finite
// number gives 0.
func WholeQuota(share, phase float64) int32 {
	if !(share > 0) || math.IsInf(share, 0) {
		return 0
	}
	if !(phase >= 0 && phase < 1) {
		phase = 0
	}
	k := math.Floor(share + phase)
	if k >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(k)
}

// rotationPhase is p = frac(frac(share)·t + φ) for the period t that now
// falls in, with φ from the client ID and rule (see WholeQuota).
func rotationPhase(clientID, rule string, share float64, now time.Time, interval time.Duration) float64 {
	if interval <= 0 {
		interval = defaultInterval
	}
	f := share - math.Floor(share)
	if !(f > 0 && f < 1) {
		return 0
	}
	t := float64(now.UnixNano() / int64(interval))
	_, p := math.Modf(f*t + clientPhase(clientID, rule))
	return p
}

// clientPhase maps a client and rule to [0, 1): FNV-1a, then SplitMix64's
// finalizer so that every output bit depends on every input byte. A
// client's rules take their turns independently.
func clientPhase(clientID, rule string) float64 {
	h := fnv.New64a()
	h.Write([]byte(clientID))
	h.Write([]byte{0})
	h.Write([]byte(rule))
	x := h.Sum64()
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}
