package budget

import (
	"math"
	"time"
)

// Aim is the share of the cap an enforcing budget steers its month to: under
// the cap by enough that forecast errors of the last days (a spike, a
// busier evening than the profile says) do not push it over, close enough
// that the budget is used.
const Aim = 0.99

// defaultInterval stands in for an interval <= 0 in Decide.
const defaultInterval = time.Minute

// Decide is the controller's step for one budget: spend so far, the forecast
// at month end, and the factors to apply to the fixed rates and reservoirs of
// the rules in scope until the next step, interval from now.
//
// u is the budget's month so far and rs the rules in its scope. Spent is the
// sampled traces of u. ForecastUnenforced adds the traces forecast for the
// rest of the month at factors 1 (see ForecastRequests for how requests are
// forecast, and Forecast.Traces for how they become traces).
//
// In Enforce mode:
//   - while Spent plus the forecast at factors 1 stays under Aim × cap, the
//     factors are 1;
//   - otherwise the fixed-rate factor f is chosen so that the forecast lands
//     on Aim × cap; if even f = 0 is over, f is 0 and the reservoir factor g
//     is lowered the same way, never below the floor;
//   - whatever the month-end forecast says, the next two intervals (the one
//     coming, and one of reports still on their way) at the rate seen now
//     must fit in what is left of the cap; f (then g) is lowered until they
//     do;
//   - when Spent reaches the cap, or what is left of it would not even take
//     those two intervals at the floor, the budget is exhausted: f is 0 and g
//     keeps only FloorPerSecond traces per second (nothing without a floor,
//     or without reservoirs in scope to keep it with).
//
// AlertOnly budgets always get factors 1. Factors are always in [0, 1] and no
// field is NaN, whatever the input.
func Decide(b *Budget, u Usage, rs []RuleModel, now time.Time, interval time.Duration) Decision {
	var spent float64
	for _, s := range u.Sampled {
		spent += clean(s)
	}
	fc := ForecastRequests(u, now)
	m := NewTraceModel(rs, u.Rules)
	unenforced := spent + fc.Traces(m, 1, 1)
	d := Decision{
		Spent:              spent,
		Forecast:           unenforced,
		ForecastUnenforced: unenforced,
		FixedRateFactor:    1,
		ReservoirFactor:    1,
	}
	if b == nil || b.Mode == AlertOnly {
		return d
	}
	nb := *b // with the default price, without cloning the thresholds
	if nb.PricePerMillionMicros == 0 {
		nb.PricePerMillionMicros = DefaultPricePerMillionMicros
	}
	capTraces := nb.CapTraces()
	switch {
	case math.IsNaN(capTraces) || capTraces < 0:
		capTraces = 0
	case math.IsInf(capTraces, 1):
		return d // no cap to enforce
	}

	floorFactor := 0.0 // g that keeps only the floor
	if nb.FloorPerSecond > 0 && m.Reservoir > 0 {
		floorFactor = clamp01(nb.FloorPerSecond / m.Reservoir)
	}
	if interval <= 0 {
		interval = defaultInterval
	}
	horizon := 2 * interval.Seconds()
	next := Forecast{Slots: []Slot{{Requests: fc.NextRate * horizon, Seconds: horizon, Count: 1}}}
	left := capTraces - spent

	if spent >= capTraces || next.Traces(m, 0, floorFactor) > left {
		d.Exhausted = true
		d.FixedRateFactor, d.ReservoirFactor = 0, floorFactor
		d.Forecast = spent + fc.Traces(m, 0, floorFactor)
		return d
	}

	f, g := 1.0, 1.0
	if want := Aim*capTraces - spent; unenforced > Aim*capTraces {
		// Over the aim at factors 1, so the fixed-rate traces are more than
		// want - resv >= 0 when the reservoirs alone fit.
		if resv, rest := fc.reservoirTraces(m, 1); want >= resv {
			f = clamp01((want - resv) / (m.FixedRate * rest))
		} else {
			f = 0
			g = math.Max(floorFactor, fc.reservoirFactorFor(m, want))
		}
	}
	// The next intervals must fit in what is left of the cap.
	if next.Traces(m, f, g) > left {
		resv, rest := next.reservoirTraces(m, g)
		if resv <= left && m.FixedRate*rest > 0 {
			f = math.Min(f, clamp01((left-resv)/(m.FixedRate*rest)))
		} else {
			f = 0
			g = math.Max(floorFactor, math.Min(g, next.reservoirFactorFor(m, left)))
		}
	}
	d.FixedRateFactor, d.ReservoirFactor = f, g
	d.Forecast = spent + fc.Traces(m, f, g)
	return d
}
