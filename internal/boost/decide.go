package boost

import (
	"math"
	"time"
)

// Rule is what Decide needs to know of a rule besides its State.
type Rule struct {
	// Config is the rule's SamplingRateBoost; nil: never boosted.
	Config *Config
	// FixedRate is the fixed rate in force, budget factors applied: what
	// clients sample at without a boost.
	FixedRate float64
	// Reservoir is the rule's fleet-wide reservoir in force, budget factors
	// applied, in traces per second: the traces it takes before the fixed
	// rate applies, boosted or not.
	Reservoir float64
}

// Reason says why Decide answered as it did; the values are stable, for
// logs and metric labels.
type Reason string

const (
	// ReasonActive: a boost is in force; it is handed out until it
	// expires, at the rate it was decided at or, once the reports show it
	// needs less to capture the rest of its target, at that rate.
	ReasonActive Reason = "active"
	// ReasonCaptured: the boost in force has captured its target, or the
	// fixed rate will capture what is left of it, or the anomalies have
	// stopped; it is no longer handed out, and its cooldown runs.
	ReasonCaptured Reason = "captured"
	// ReasonStarted: a new boost, at the rate the sizing wanted.
	ReasonStarted Reason = "started"
	// ReasonCappedMaxRate: a new boost at the rule's MaxRate, which is
	// below the rate the sizing wanted.
	ReasonCappedMaxRate Reason = "capped_max_rate"
	// ReasonCappedBudget: a new boost at the rate whose extra traces fit
	// the room the budgets leave, below the rate the sizing wanted.
	ReasonCappedBudget Reason = "capped_budget"

	// ReasonDisabled: the rule has no boost, or its MaxRate is not above
	// the fixed rate in force.
	ReasonDisabled Reason = "disabled"
	// ReasonCooldown: the last boost started less than the cooldown ago.
	ReasonCooldown Reason = "cooldown"
	// ReasonWarmingUp: the rule's counts have not been kept for WarmUp
	// yet, or there is no baseline traffic to compare with.
	ReasonWarmingUp Reason = "warming_up"
	// ReasonNormal: the recent anomaly share is not above the baseline.
	ReasonNormal Reason = "normal"
	// ReasonEnough: the fixed rate in force already captures the target
	// (or is as high as the boost in force).
	ReasonEnough Reason = "enough"
	// ReasonExhausted: a budget covering the rule is exhausted.
	ReasonExhausted Reason = "budget_exhausted"
	// ReasonNoRoom: the budgets leave too little room for a boost worth
	// its cooldown.
	ReasonNoRoom Reason = "no_budget_room"
)

// Decision is Decide's answer.
type Decision struct {
	// Boost is the boost to hand out now; the zero Boost for none.
	Boost Boost
	// Start says that Boost is a new boost: the caller records it as the
	// rule's State.Boost (with a compare-and-set on the previous Start when
	// replicas share the state: only one of them starts it).
	Start  bool
	Reason Reason
	// Share and Baseline are the recent window's anomaly share and the
	// baseline's; Want is the rate the sizing asked for (0 when it did
	// not run) and Extra the traces a new boost is expected to add, at
	// most, over what the fixed rate would have sampled.
	Share    float64
	Baseline float64
	Want     float64
	Extra    float64
}

// Decide is the boost step for one rule at now: hand out the boost in force,
// start a new one, or neither, and why.
//
// A new boost starts when all of these hold:
//   - the rule has a Config whose MaxRate is above the fixed rate in force;
//   - the last boost started at least Cooldown ago (and has ended);
//   - the state has been kept for WarmUp, with traffic in the baseline;
//   - the recent window's anomaly share is above the baseline's: at least
//     Ratio times it, with at least MinAnomalies anomalous traces, and so
//     many that the baseline's share would give them with probability at
//     most Significance;
//   - the fixed rate in force would not capture Target anyway;
//   - the budgets leave room for it (room, see BudgetRoom).
//
// Its rate is the smallest that captures Target anomalous traces over its
// life with the configured confidence, at most MaxRate and at most what
// the room pays for; it lasts Life (at most a minute). While it is in
// force it is handed out to every client, sized again from each report
// (never higher) and ended once it has captured enough. See docs/BOOSTS.md
// for the formulas.
//
// st is not changed: Decide works on a copy advanced to now. No field of
// the answer is NaN, whatever the input.
func Decide(st State, now time.Time, r Rule, room Room, o Options) Decision {
	o = o.WithDefaults()
	fixed := clamp01(r.FixedRate)
	st.Advance(o.Bucket(now), o.Decay())
	d := Decision{Share: st.Window().Share(), Baseline: st.Baseline.Share()}

	if r.Config == nil || !(clamp01(r.Config.MaxRate) > fixed) {
		d.Reason = ReasonDisabled
		return d
	}
	maxRate := clamp01(r.Config.MaxRate)
	if room.Exhausted {
		d.Reason = ReasonExhausted
		return d
	}
	secs := o.Interval.Seconds()
	traffic, share := estimate(&st, d.Share, o)
	if b := st.Boost; b.InForce(now) {
		return active(d, st, now, r, traffic, share, maxRate, o)
	}
	if b := st.Boost; b.Rate > 0 && now.Before(b.Start.Add(max(r.Config.Cooldown, o.Life))) {
		d.Reason = ReasonCooldown
		return d
	}
	if !st.Seen || float64(st.Bucket-st.Since)*secs < o.WarmUp.Seconds() || !(st.Baseline.Total > 0) {
		d.Reason = ReasonWarmingUp
		return d
	}
	if !anomalous(st.Window(), d.Baseline, o) {
		d.Reason = ReasonNormal
		return d
	}

	s := size(sizing{
		traffic:   traffic,
		share:     share,
		reservoir: nonNegative(r.Reservoir),
		fixed:     fixed,
		maxRate:   maxRate,
		life:      o.Life.Seconds(),
		delay:     secs / 2,
		target:    captureMean(o.Target, o.Confidence),
		room:      room.traces(),
		minGain:   o.MinGain,
	})
	d.Want = s.want
	switch {
	case s.rate == 0 && s.want <= fixed:
		d.Reason = ReasonEnough
		return d
	case s.rate == 0:
		d.Reason = ReasonNoRoom
		return d
	}
	d.Boost = Boost{Rate: s.rate, Start: now, Expiry: now.Add(o.Life)}
	d.Start = true
	d.Extra = s.extra
	switch {
	case s.budgetCapped:
		d.Reason = ReasonCappedBudget
	case s.rate < s.want:
		d.Reason = ReasonCappedMaxRate
	default:
		d.Reason = ReasonStarted
	}
	return d
}

// estimate returns the traffic now, in traces per second, and the anomaly
// share to expect over a boost: the traffic of the fuller of the two recent
// intervals (the newest is still filling), and the newest interval's share
// when it has MinAnomalies to say, else the window's.
func estimate(st *State, window float64, o Options) (traffic, share float64) {
	traffic = math.Max(st.Recent[0].Total, st.Recent[1].Total) / o.Interval.Seconds()
	share = window
	if st.Recent[0].Anomalies >= o.MinAnomalies {
		share = st.Recent[0].Share()
	}
	return traffic, share
}

// active answers while st.Boost is in force. A boost is sized from the
// share seen when it starts, which understates a jump whose first reports
// cover only its first seconds; the reports that follow say better what the
// rest of its life needs. So it is sized again, for what it has still to
// capture (the mean target less State.Captured) over what is left of its
// life, and handed out at that rate if lower; once the fixed rate would
// capture the rest, it ends early. Never higher than decided: the budgets
// priced it at that rate.
func active(d Decision, st State, now time.Time, r Rule, traffic, share, maxRate float64, o Options) Decision {
	b := st.Boost
	fixed := clamp01(r.FixedRate)
	rate := math.Min(b.Rate, maxRate)
	if !(rate > fixed) {
		d.Reason = ReasonEnough // the fixed rate in force is as high
		return d
	}
	need := captureMean(o.Target, o.Confidence) - st.Captured
	if !(need > 0) {
		d.Reason = ReasonCaptured
		return d
	}
	if traffic > 0 {
		s := size(sizing{
			traffic:   traffic,
			share:     share,
			reservoir: nonNegative(r.Reservoir),
			fixed:     fixed,
			maxRate:   rate,
			life:      b.Expiry.Sub(now).Seconds(),
			delay:     o.Interval.Seconds() / 2,
			target:    need,
			room:      math.Inf(1),
		})
		d.Want = s.want
		if s.rate == 0 {
			// The fixed rate (or the reservoir) captures the rest, or
			// the anomalies are over.
			d.Reason = ReasonCaptured
			return d
		}
		rate = s.rate
	}
	d.Boost = Boost{Rate: rate, Start: b.Start, Expiry: b.Expiry}
	d.Reason = ReasonActive
	return d
}

// anomalous reports whether the window's anomalies are above what the
// baseline share predicts: at least MinAnomalies of them, Ratio times the
// baseline share, and improbable were the baseline share the truth. With
// E = total × baseline expected and A seen, the Chernoff bound on a
// Poisson count gives P(X >= A) <= exp(-(A ln(A/E) - (A - E))) for A > E;
// the rise is significant when that bound is at most Significance. For
// large E the exponent is about z²/2 (z the rise in standard deviations);
// for small E it follows the Poisson tail, heavier than the normal one,
// where a z-score would see rises in noise.
func anomalous(w Counts, baseline float64, o Options) bool {
	a := w.Anomalies
	if a < o.MinAnomalies || w.Share() < o.Ratio*baseline {
		return false
	}
	e := w.Total * baseline
	if !(e > 0) {
		return true // none expected: MinAnomalies are a rise
	}
	if a <= e {
		return false
	}
	return a*math.Log(a/e)-(a-e) >= -math.Log(o.Significance)
}

// captureMean is the mean μ of the Poisson count of captured anomalous
// traces at which fewer than target are captured with probability about
// Φ(-z): the normal approximation μ - z√μ = target, solved for √μ.
func captureMean(target, z float64) float64 {
	root := (z + math.Sqrt(z*z+4*target)) / 2
	return root * root
}

type sizing struct {
	traffic   float64 // traces per second, fleet-wide
	share     float64 // anomalous share expected over the boost
	reservoir float64 // traces per second the reservoir takes
	fixed     float64 // fixed rate in force
	maxRate   float64
	life      float64 // seconds
	delay     float64 // mean time for a client to take a boost up, seconds
	target    float64 // mean anomalous traces to capture
	room      float64 // extra traces the budgets allow
	minGain   float64
}

type sized struct {
	want, rate, extra float64
	budgetCapped      bool
}

// size returns the smallest rate r in (fixed, maxRate] whose expected
// capture over the boost reaches the target, and its expected extra
// traces; rate 0 for no boost.
//
// Over the boost's effective life L = life - delay (clients take it up at
// their next report, half an interval later on average), the fleet sees
// λA·L anomalous traces, λA = traffic × share. The reservoir takes a share
// ρ = min(1, reservoir / traffic) of all traces, anomalous ones alike, and
// the rate r a share r of the rest, so the capture is λA·L·(ρ + (1-ρ)·r);
// it reaches the target at
//
//	r* = (target / (λA·L) - ρ) / (1 - ρ).
//
// The extra traces, counted over the whole life (a client on a stream takes
// the boost at once), are traffic × life × (1-ρ) × (r - fixed); the
// budgets' room caps r to fixed + room / (traffic × life × (1-ρ)).
func size(s sizing) sized {
	l := math.Max(s.life-s.delay, s.life/2)
	lambdaA := s.traffic * s.share
	if !(lambdaA > 0) || !(l > 0) {
		return sized{}
	}
	rho := math.Min(1, s.reservoir/s.traffic)
	if rho >= 1 {
		return sized{} // the reservoir takes every trace
	}
	want := (s.target/(lambdaA*l) - rho) / (1 - rho)
	out := sized{want: math.Max(want, 0)}
	if !(want > s.fixed) {
		return out
	}
	rate := math.Min(want, s.maxRate)
	perRate := s.traffic * s.life * (1 - rho) // extra traces per unit of rate
	if extra := perRate * (rate - s.fixed); extra > s.room {
		capped := s.fixed + math.Max(s.room, 0)/perRate
		if capped-s.fixed < s.minGain*(rate-s.fixed) {
			return out // not worth the cooldown window it would spend
		}
		out.rate, out.extra, out.budgetCapped = capped, math.Min(perRate*(capped-s.fixed), s.room), true
		return out
	}
	out.rate = rate
	out.extra = perRate * (rate - s.fixed)
	return out
}

// nonNegative maps x to [0, +Inf]; NaN maps to 0.
func nonNegative(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return x
}
