package fleetsim

import (
	"math"
	"math/rand/v2"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/sampling"
)

// instance is one virtual SDK instance on its stream.
type instance struct {
	n           int // its number, from 0
	id, service string
	// weight is its share of the traffic of each rule it holds (before
	// the rule's instances' weights are summed).
	weight float64
	rng    *rand.Rand
	rules  []*sdkRule // the run's rules it holds, with traffic
	byName map[string]*sdkRule

	// The stream's side: what it keeps of the client's receipts, the last
	// targets before budgets (sent again when budgets change), the rule
	// set last sent.
	held        *receipt.Held
	keeper      receipt.Keeper
	base        *sampling.TargetSet
	sentVersion int64
	sentRates   []*pb.RuleRates

	version    int64     // rules version held
	last       time.Time // requests played up to
	lastReport time.Time
	next       time.Time // next report
	seq        uint64
}

// sdkRule is one rule's runtime in a virtual instance, as the SDK's: its
// quota bucket and expiry, its borrowing, the fixed rate in force, and the
// counts of the next report (fractional: requests are expected values; the
// report carries the whole part and keeps the rest).
type sdkRule struct {
	sim           *simRule
	quota, borrow fluidBucket
	expiry        time.Time // zero: no quota yet
	borrowRate    float64
	withheld      bool
	fixed         float64
	targetVersion int64

	req, smp, brw float64 // since the last report
}

// setBorrow sets the borrowing bucket to borrowRate, or nothing while the
// first borrow is withheld.
func (rt *sdkRule) setBorrow() {
	rate := rt.borrowRate
	if rt.withheld {
		rate = 0
	}
	rt.borrow.set(rate, 0)
}

// add counts n requests, res of them sampled by the reservoir, brw
// borrowed and fix by the fixed rate.
func (rt *sdkRule) add(n, res, brw, fix float64) {
	rt.req += n
	rt.smp += res + brw + fix
	rt.brw += brw
}

// take returns the whole counts for a report and keeps the fractions;
// the last report (last not nil) rounds them, the traces up with the
// chance of their fraction, drawn from last: what an SDK sampling with
// that chance reports. (Rounded to the nearest, the fractions of a fleet's
// many small instances were mostly lost: a third of a tiny budget's
// spend, whose every instance holds a fraction of a trace.)
func (rt *sdkRule) take(last *rand.Rand) (req, smp, brw int64) {
	req, smp, brw = int64(rt.req), int64(rt.smp), int64(rt.brw)
	if last != nil {
		req = int64(math.Round(rt.req))
		u := last.Float64()
		// One draw for both: a borrowed trace is a sampled one.
		smp, brw = chance(rt.smp, u), chance(rt.brw, u)
	}
	smp, brw = min(smp, req), min(brw, smp)
	rt.req -= float64(req)
	rt.smp -= float64(smp)
	rt.brw -= float64(brw)
	return req, smp, brw
}

// fluidBucket is reservoir.Bucket for expected numbers of requests: it
// holds at most max(1, rate) tokens, refills at rate, and a fresh one
// starts full but for phase of a token.
type fluidBucket struct {
	rate, tokens float64
	on           bool
}

func (b *fluidBucket) set(rate, phase float64) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		b.on = false
		return
	}
	capacity := math.Max(1, rate)
	if !b.on {
		b.tokens = capacity - phase
	}
	b.on, b.rate = true, rate
	b.tokens = math.Min(b.tokens, capacity)
}

// refill adds dt seconds of tokens.
func (b *fluidBucket) refill(dt float64) {
	if b.on {
		b.tokens = math.Min(math.Max(1, b.rate), b.tokens+b.rate*dt)
	}
}

// take spends tokens on n requests spread evenly over dt seconds and
// returns how many got one. Requests that outrun the refill get whole
// tokens only, as the SDK's: the fraction of a token stays in the bucket
// (a fresh quota below one per second gives its first trace only once a
// whole token is due, and a quota withdrawn before then gives none, as
// reservoir.Bucket's does).
func (b *fluidBucket) take(n, dt float64) float64 {
	if !b.on {
		return 0
	}
	capacity := math.Max(1, b.rate)
	refill := b.rate * dt
	if n >= refill {
		got := math.Min(n, math.Floor(b.tokens+refill))
		b.tokens = b.tokens + refill - got
		return got
	}
	b.tokens = math.Min(capacity, b.tokens+refill-n)
	return n
}

// chance rounds x down, or up if u (uniform in [0, 1)) falls below its
// fraction.
func chance(x, u float64) int64 {
	n := math.Floor(x)
	if u < x-n {
		n++
	}
	return int64(n)
}
