package budget

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// The forecast predicts the requests in a budget's scope for every hour left
// in the month, then turns requests into traces with a model of the rules in
// scope at the factors being considered. Requests, not traces, are forecast:
// traces depend on the factors the controller is choosing, requests do not.
//
// Method, with n complete hours observed since traffic was first seen:
//
//   - n < 24: not a day yet, so no daily shape: every remaining second gets
//     the mean request rate seen so far.
//   - n >= 24: an hour-of-day profile, each hour of the day the median of
//     that hour over the days observed, so that one spike day (or a dip) does
//     not move it; scaled to the recent level, the median ratio of actual to
//     profile over the last 72 complete hours (all of them when fewer are
//     known), so that a level change is followed within a day and a half
//     while a single spike day, even the one happening now, is not taken
//     for the new level. The rest of the month repeats that profile, so the
//     forecast rises and falls with the day instead of being a straight line.
//
// Days of the week are not modelled: a month holds four of each, too few to
// tell a weekly pattern from noise, and the controller recomputes every
// interval, so a slow weekend shows up as a lower level within a day.
const (
	hourSeconds = 3600.0
	levelHours  = 72
	// maxCount bounds every count the math reads (per hour, per rule) so
	// that a month of sums stays finite whatever the input.
	maxCount = 1e18
	// maxRate bounds reservoirs (traces per second) for the same reason.
	maxRate = 1e12
)

// Forecast method names, as Forecast.Method reports them.
const (
	MethodNone     = "none"      // no traffic seen: nothing forecast
	MethodMeanRate = "mean_rate" // less than a day seen
	MethodProfile  = "profile"   // hour-of-day profile scaled to the recent level
)

// Forecast is the rest of a budget's month as the forecast sees it.
type Forecast struct {
	Method string
	// Slots are the rest of the month: the rest of the current hour first,
	// then the whole hours to month end, the hours with the same forecast
	// grouped (with a profile, the same hour of each day left). Empty once
	// the month is over.
	Slots []Slot
	// NextRate is the request rate (per second) to expect right now, for
	// the next interval or two: the larger of the forecast's rate for the
	// current hour and the rate actually seen in the last complete hour
	// and in the current one so far. The controller uses it to make sure
	// the next interval alone cannot overshoot the cap.
	NextRate float64
	// Profile is the requests forecast for each hour of the day (index =
	// UTC hour of day), the same every day left; nil unless Method is
	// MethodProfile.
	Profile []float64
}

// Slot is Count stretches of Seconds each, with Requests requests expected
// in each.
type Slot struct {
	Requests float64
	Seconds  float64
	Count    int
}

// Requests is the total requests forecast for the rest of the month.
func (fc *Forecast) Requests() float64 {
	var sum float64
	for _, s := range fc.Slots {
		sum += s.Requests * float64(s.Count)
	}
	return sum
}

// clean maps a count to [0, maxCount]: NaN and negative counts are noise,
// not traffic.
func clean(x float64) float64 {
	switch {
	case !(x > 0):
		return 0
	case x > maxCount:
		return maxCount
	}
	return x
}

// ForecastRequests predicts, from a month of usage so far, the requests in
// scope for the rest of the month from now on. now before the month counts
// as its start and after it as its end.
func ForecastRequests(u Usage, now time.Time) Forecast {
	start := u.MonthStart
	if start.IsZero() {
		start = MonthStart(now)
	}
	start = start.UTC()
	n := HoursIn(start)
	end := start.Add(time.Duration(n) * time.Hour)
	switch {
	case now.Before(start):
		now = start
	case now.After(end):
		now = end
	}
	elapsed := now.Sub(start)
	cur := int(elapsed / time.Hour) // the current hour; n once the month is over
	into := (elapsed - time.Duration(cur)*time.Hour).Seconds()

	req := func(i int) float64 {
		if i < 0 || i >= len(u.Requests) {
			return 0
		}
		return clean(u.Requests[i])
	}
	fc := Forecast{Method: MethodNone}
	whole := max(n-cur-1, 0) // whole hours after the current one
	if cur < n {
		fc.Slots = append(fc.Slots, Slot{Seconds: hourSeconds - into, Count: 1})
	}

	first := -1 // the first hour with traffic: the data starts there
	for i := 0; i <= cur && i < n; i++ {
		if req(i) > 0 {
			first = i
			break
		}
	}
	if first < 0 {
		if whole > 0 {
			fc.Slots = append(fc.Slots, Slot{Seconds: hourSeconds, Count: whole})
		}
		return fc
	}
	complete := cur - first // whole hours observed
	// The most recent rates actually seen, for NextRate.
	var recent float64
	if complete > 0 {
		recent = req(cur-1) / hourSeconds
	}
	if into >= 60 && cur < n {
		recent = math.Max(recent, req(cur)/into)
	}

	if complete < 24 {
		fc.Method = MethodMeanRate
		var sum float64
		for i := first; i <= cur && i < n; i++ {
			sum += req(i)
		}
		var rate float64
		if secs := elapsed.Seconds() - float64(first)*hourSeconds; secs > 0 {
			rate = sum / secs
		}
		if cur < n {
			fc.Slots[0].Requests = rate * fc.Slots[0].Seconds
		}
		if whole > 0 {
			fc.Slots = append(fc.Slots, Slot{Requests: rate * hourSeconds, Seconds: hourSeconds, Count: whole})
		}
		fc.NextRate = math.Max(rate, recent)
		return fc
	}

	fc.Method = MethodProfile
	h0 := start.Hour() // 0 for a month start; any hour works
	hod := func(i int) int { return (h0 + i) % 24 }
	var profile [24]float64
	scratch := make([]float64, 0, complete/24+1)
	for h := range 24 {
		scratch = scratch[:0]
		for i := first + (h-hod(first)+24)%24; i < cur; i += 24 {
			scratch = append(scratch, req(i))
		}
		profile[h] = median(scratch)
	}
	window := min(complete, levelHours)
	ratios := make([]float64, 0, window)
	for i := cur - window; i < cur; i++ {
		if p := profile[hod(i)]; p > 0 {
			ratios = append(ratios, req(i)/p)
		}
	}
	level := 1.0
	if len(ratios) > 0 {
		level = median(ratios)
	}
	fc.Profile = make([]float64, 24)
	for h := range profile {
		fc.Profile[h] = level * profile[h]
	}
	if cur < n {
		fc.Slots[0].Requests = fc.Profile[hod(cur)] * fc.Slots[0].Seconds / hourSeconds
		fc.NextRate = fc.Profile[hod(cur)] / hourSeconds
	}
	fc.NextRate = math.Max(fc.NextRate, recent)
	// The whole hours left, grouped by hour of day: each hour of day
	// whole/24 times, and the first whole%24 of them from hour cur+1 once
	// more.
	for k := range min(whole, 24) {
		count := whole / 24
		if k < whole%24 {
			count++
		}
		fc.Slots = append(fc.Slots, Slot{Requests: fc.Profile[hod(cur+1+k)], Seconds: hourSeconds, Count: count})
	}
	return fc
}

// median returns the median of xs (0 for none); it reorders xs. It selects
// rather than sorts (Hoare's quickselect): it runs every controller
// interval, and a simulated month has tens of thousands of them.
func median(xs []float64) float64 {
	n := len(xs)
	switch n {
	case 0:
		return 0
	case 1:
		return xs[0]
	case 2:
		return (xs[0] + xs[1]) / 2
	}
	hi := selectKth(xs, n/2)
	if n%2 == 1 {
		return hi
	}
	// The lower middle is the largest of the elements left of n/2.
	lo := xs[0]
	for _, x := range xs[1 : n/2] {
		lo = max(lo, x)
	}
	return (lo + hi) / 2
}

// selectKth reorders xs so that xs[k] is the element a sort would put there,
// with no larger element before it and no smaller one after, and returns it.
func selectKth(xs []float64, k int) float64 {
	lo, hi := 0, len(xs)-1
	for lo < hi {
		pivot := xs[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for xs[i] < pivot {
				i++
			}
			for xs[j] > pivot {
				j--
			}
			if i <= j {
				xs[i], xs[j] = xs[j], xs[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return xs[k]
		}
	}
	return xs[k]
}

// TraceModel is the rules in scope reduced to what the forecast needs: their
// reservoirs added up, and their fixed rates averaged with each rule weighted
// by its share of the requests.
type TraceModel struct {
	Reservoir float64 // traces per second, fleet-wide, of every rule in scope
	FixedRate float64 // in [0, 1]
}

// NewTraceModel reduces the rules in scope. The fixed rates are weighted by
// each rule's requests this month (usage, as Usage.Rules has them); when
// none of the rules has seen requests, by the plain mean.
func NewTraceModel(rs []RuleModel, usage map[string]RuleUsage) TraceModel {
	var m TraceModel
	if len(rs) == 0 {
		return m
	}
	var weighted, weight, plain float64
	for _, r := range rs {
		rate := clamp01(r.FixedRate)
		if r.Reservoir > 0 {
			m.Reservoir += math.Min(r.Reservoir, maxRate)
		}
		plain += rate
		if w := clean(float64(usage[r.Name].Requests)); w > 0 {
			weighted += w * rate
			weight += w
		}
	}
	m.Reservoir = math.Min(m.Reservoir, maxRate)
	if weight > 0 {
		m.FixedRate = clamp01(weighted / weight)
	} else {
		m.FixedRate = clamp01(plain / float64(len(rs)))
	}
	return m
}

// Traces is the expected traces for the rest of the month at fixed-rate
// factor f and reservoir factor g (each in [0, 1]): per hour,
// min(requests, g × reservoir × 3600) plus f × fixed rate × the requests
// left.
func (fc *Forecast) Traces(m TraceModel, f, g float64) float64 {
	resv, rest := fc.reservoirTraces(m, g)
	return resv + clamp01(f)*m.FixedRate*rest
}

// reservoirTraces returns the traces the reservoirs take at factor g, and
// the requests left for the fixed rate.
func (fc *Forecast) reservoirTraces(m TraceModel, g float64) (resv, rest float64) {
	perSecond := clamp01(g) * m.Reservoir
	for _, sl := range fc.Slots {
		r := math.Min(sl.Requests, perSecond*sl.Seconds)
		c := float64(sl.Count)
		resv += c * r
		rest += c * (sl.Requests - r)
	}
	return resv, rest
}

// reservoirFactorFor returns the reservoir factor g in [0, 1] at which the
// reservoirs alone take want traces over the rest of the month (fixed rates
// at 0), or 1 if even g = 1 takes fewer. The traces taken,
// F(g) = Σ min(q_i, g·R·s_i), grow piecewise linearly with g; the piece
// where F reaches want is found by walking the slots in order of their
// request rate.
func (fc *Forecast) reservoirFactorFor(m TraceModel, want float64) float64 {
	if !(want > 0) || m.Reservoir <= 0 {
		return 0
	}
	type piece struct{ rate, q, s float64 }
	pieces := make([]piece, 0, len(fc.Slots))
	var seconds float64
	for _, sl := range fc.Slots {
		if sl.Seconds > 0 && sl.Count > 0 {
			c := float64(sl.Count)
			pieces = append(pieces, piece{sl.Requests / sl.Seconds, c * sl.Requests, c * sl.Seconds})
			seconds += c * sl.Seconds
		}
	}
	slices.SortFunc(pieces, func(a, b piece) int { return cmp.Compare(a.rate, b.rate) })
	// With x = g·R at or below pieces[k].rate, and above the rates before
	// k: F = Σ_{j<k} q_j + x·Σ_{j>=k} s_j.
	var below float64 // Σ q of the pieces saturated
	for _, p := range pieces {
		if below+p.rate*seconds >= want { // F at x = p.rate
			return clamp01((want - below) / seconds / m.Reservoir)
		}
		below += p.q
		seconds -= p.s
	}
	return 1 // every piece saturated below want: all requests are traced
}

// clamp01 maps x to [0, 1]; NaN maps to 0.
func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return math.Min(x, 1)
}
