package budget

import (
	"cmp"
	"math"
	"slices"
)

// A plan is made rule by rule: each rule in scope has its own forecast of
// requests (its share of each slot of the budget's forecast), its own
// reservoir (the part of it the scope gets) and its own fixed rate, so an
// idle rule's reservoir is not counted on to absorb another rule's traffic,
// and a busy rule's rate is not averaged with an idle one's.
//
// Rules are cut in the order of their priority within the budget (see
// RulePriority), lowest first, a whole priority at a time: first the fixed
// rates of the lowest priority (one factor for all its rules), then its
// reservoirs down to its floor, then the next priority, and so on. A higher
// priority keeps its rates until every lower one is at its floor: checkout
// keeps its rate while health checks go to the floor.

// The two horizons a plan looks at: the rest of the month, and the next two
// intervals at the rate to expect now.
const (
	monthly = iota
	nextIntervals
)

// load is one rule in a plan.
type load struct {
	name     string
	priority int32
	fixed    float64 // fixed rate in [0, 1]
	resv     float64 // reservoir in traces per second, >= 0
	// Its requests to month end are the budget's slots times its share of
	// each slot's hour of the day (hods, shared by the rules of a plan);
	// over the next intervals, nextReq in horizon seconds.
	slots   []Slot
	hods    []int
	byHour  *[24]float64
	nextReq float64
	horizon float64
	// full is, for each horizon, the traces its reservoir takes at factor
	// 1 and the requests it leaves (asked for far more often than any other
	// factor's).
	full [2][2]float64
}

// init computes the figures at factor 1.
func (l *load) init() {
	for w := range l.full {
		l.full[w][0], l.full[w][1] = l.splitAt(w, 1)
	}
}

// requests is the rule's requests to month end.
func (l *load) requests() float64 {
	var sum float64
	for s, sl := range l.slots {
		sum += float64(sl.Count) * sl.Requests * l.byHour[l.hods[s]]
	}
	return sum
}

// traces is what rule l takes from the requests of horizon w at fixed-rate
// factor f and reservoir factor g: per slot, min(requests, g × reservoir ×
// seconds) by the reservoir, plus f × fixed rate of the rest.
func (l *load) traces(w int, f, g float64) float64 {
	resv, rest := l.split(w, g)
	return resv + clamp01(f)*l.fixed*rest
}

// split returns the traces the reservoir takes from horizon w at factor g,
// and the requests it leaves to the fixed rate.
func (l *load) split(w int, g float64) (resv, rest float64) {
	if g >= 1 || l.resv == 0 {
		return l.full[w][0], l.full[w][1]
	}
	return l.splitAt(w, g)
}

func (l *load) splitAt(w int, g float64) (resv, rest float64) {
	perSecond := clamp01(g) * l.resv
	if w == nextIntervals {
		r := math.Min(l.nextReq, perSecond*l.horizon)
		return r, l.nextReq - r
	}
	for s, sl := range l.slots {
		q := sl.Requests * l.byHour[l.hods[s]]
		r := q
		if x := perSecond * sl.Seconds; x < r {
			r = x
		}
		c := float64(sl.Count)
		resv += c * r
		rest += c * (q - r)
	}
	return resv, rest
}

// tiers groups the indices of loads by priority, lowest first.
func tiers(loads []load) [][]int {
	idx := make([]int, len(loads))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(loads[a].priority, loads[b].priority) })
	var out [][]int
	for i, k := range idx {
		if i == 0 || loads[k].priority != loads[idx[i-1]].priority {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], k)
	}
	return out
}

// floors shares a floor of traces per second out over the reservoirs,
// highest priority first: each tier's reservoirs keep the factor that gives
// it as much of what is left of the floor as they hold. It returns each
// load's floor factor.
func floors(loads []load, ts [][]int, perSecond float64) []float64 {
	out := make([]float64, len(loads))
	left := clean(perSecond)
	for t := len(ts) - 1; t >= 0 && left > 0; t-- {
		var sum float64
		for _, i := range ts[t] {
			sum += loads[i].resv
		}
		if sum <= 0 {
			continue
		}
		take := math.Min(left, sum)
		for _, i := range ts[t] {
			out[i] = clamp01(take / sum)
		}
		left -= take
	}
	return out
}

// cut returns the factors, per load, that bring the traces of horizon w to
// want, cutting tier by tier as the package doc
// says, never below the floor factors; all 1 if they are at most want
// already, and everything at its floor if even that is over.
func cut(loads []load, ts [][]int, floor []float64, w int, want float64) (f, g []float64) {
	f, g = make([]float64, len(loads)), make([]float64, len(loads))
	var total float64
	for i := range loads {
		f[i], g[i] = 1, 1
		total += loads[i].traces(w, 1, 1)
	}
	if total <= want {
		return f, g
	}
	for _, t := range ts {
		// The tier's fixed rates...
		var fixed float64
		for _, i := range t {
			_, rest := loads[i].split(w, 1)
			fixed += loads[i].fixed * rest
		}
		if base := total - fixed; base <= want && fixed > 0 {
			for _, i := range t {
				f[i] = clamp01((want - base) / fixed)
			}
			return f, g
		}
		for _, i := range t {
			f[i] = 0
		}
		total -= fixed
		// ...then its reservoirs, down to their floor.
		var full, low float64
		for _, i := range t {
			full += loads[i].traces(w, 0, 1)
			if floor[i] > 0 {
				low += loads[i].traces(w, 0, floor[i])
			}
		}
		base := total - full
		if base+low <= want {
			x := reservoirFactor(loads, t, w, want-base)
			for _, i := range t {
				g[i] = math.Max(floor[i], x)
			}
			return f, g
		}
		for _, i := range t {
			g[i] = floor[i]
		}
		total = base + low
	}
	return f, g
}

// reservoirFactor returns the factor x in [0, 1] at which the reservoirs of
// the loads in tier alone (fixed rates at 0) take want traces from their
// forecasts of horizon w, or 1 if even x = 1 takes fewer.
//
// The traces taken, F(x) = Σ min(q, x·R·s) over the rules and slots, are
// piecewise linear, increasing and concave in x. Newton's method from x = 0
// climbs to the root without passing it (the tangent of a concave function
// lies above it) and lands on it exactly once in the root's piece; each
// step reads every piece once, with no sorting and no allocation, and a
// few steps do (a plan runs every interval, and a simulated month has tens
// of thousands of them). Should it take too many, the pieces are sorted by
// where each saturates and walked instead.
func reservoirFactor(loads []load, tier []int, w int, want float64) float64 {
	if !(want > 0) {
		return 0
	}
	// eval returns F(x) and its slope just right of x.
	eval := func(x float64) (sum, slope float64) {
		for _, i := range tier {
			l := &loads[i]
			if l.resv <= 0 {
				continue
			}
			if w == nextIntervals {
				if cap := x * l.resv * l.horizon; l.nextReq > cap {
					sum += cap
					slope += l.resv * l.horizon
				} else {
					sum += l.nextReq
				}
				continue
			}
			for s, sl := range l.slots {
				c := float64(sl.Count)
				q := sl.Requests * l.byHour[l.hods[s]]
				if cap := x * l.resv * sl.Seconds; q > cap {
					sum += c * cap
					slope += c * l.resv * sl.Seconds
				} else {
					sum += c * q
				}
			}
		}
		return sum, slope
	}
	x := 0.0
	for range maxNewtonSteps {
		sum, slope := eval(x)
		if sum >= want || slope <= 0 {
			return clamp01(x)
		}
		next := x + (want-sum)/slope
		if next >= 1 {
			if full, _ := eval(1); full <= want {
				return 1
			}
		}
		if !(next > x) {
			return clamp01(x)
		}
		x = math.Min(next, 1)
	}
	return reservoirFactorSorted(loads, tier, w, want)
}

// maxNewtonSteps bounds reservoirFactor's Newton steps.
const maxNewtonSteps = 64

// reservoirFactorSorted is reservoirFactor by walking the pieces in order
// of the x at which each saturates, q / (R·s).
func reservoirFactorSorted(loads []load, tier []int, w int, want float64) float64 {
	type piece struct{ at, q, slope float64 }
	var pieces []piece
	var slope float64
	for _, i := range tier {
		l := &loads[i]
		if l.resv <= 0 {
			continue
		}
		add := func(q, seconds float64, count int) {
			if seconds > 0 && count > 0 {
				c := float64(count)
				p := piece{at: q / (l.resv * seconds), q: c * q, slope: c * l.resv * seconds}
				pieces = append(pieces, p)
				slope += p.slope
			}
		}
		if w == nextIntervals {
			add(l.nextReq, l.horizon, 1)
			continue
		}
		for s, sl := range l.slots {
			add(sl.Requests*l.byHour[l.hods[s]], sl.Seconds, sl.Count)
		}
	}
	slices.SortFunc(pieces, func(a, b piece) int { return cmp.Compare(a.at, b.at) })
	// With x at or below pieces[k].at and above the ones before:
	// F = Σ_{j<k} q_j + x · Σ_{j>=k} slope_j.
	var below float64 // Σ q of the pieces saturated
	for _, p := range pieces {
		if p.at >= 1 {
			break
		}
		if below+p.at*slope >= want {
			return clamp01((want - below) / slope)
		}
		below += p.q
		slope -= p.slope
	}
	if slope > 0 && below+slope >= want {
		return clamp01((want - below) / slope)
	}
	return 1
}
