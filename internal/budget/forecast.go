package budget

import (
	"math"
	"slices"
	"time"
)

// The forecast predicts the requests in a budget's scope for every hour left
// in the month, then turns requests into traces, rule by rule, at the
// factors being considered (see plan.go). Requests, not traces, are
// forecast: traces depend on the factors the controller is choosing,
// requests do not.
//
// Method, for the budget's requests, with traffic first seen at "first" (the
// controller's first step that saw any, or the start of the first hour with
// requests):
//
//   - less than a day since first: no daily shape yet, so every remaining
//     second gets the mean request rate since first. Since first, not since
//     the hour began: traffic that starts at 12:40 is 60 requests a minute,
//     not 60 spread over 41 minutes.
//   - a day or more: an hour-of-day profile, each hour of the day the lower
//     median of that hour over the days observed, so that one spike day (or
//     a dip) does not move it, even when only two days are known; scaled to
//     the recent level, the lower median of actual over profile across the
//     last 72 complete hours (all of them when fewer are known), so that a
//     level change is followed within a day and a half while a single spike
//     day, even the one happening now, is not taken for the new level.
//   - a trend, once four whole days are known: the lower Theil–Sen slope of
//     the logarithms of the last (up to 14) daily totals, so that growth
//     (3× over a month at a game's launch is +3.7 % a day) is projected over
//     the days left while one odd day among them is not; clamped to ±25 % a
//     day and to a tenfold change by month end.
//   - the current rate, seen by the controller over the last minutes, weighs
//     in when it is above the forecast for now: the excess is expected to
//     last as long again as it has lasted so far (from 10 minutes to a
//     day). A spike in progress raises the forecast by what it may still
//     cost, not by a month of it.
//
// The rest of the month repeats the profile (times the trend), so the
// forecast rises and falls with the day instead of being a straight line.
//
// Days of the week are not modelled: a month holds four of each, too few to
// tell a weekly pattern from noise, and the controller recomputes every
// interval, so a slow weekend shows up as a lower level within a day.
const (
	hourSeconds = 3600.0
	levelHours  = 72
	// trendDays is how many whole days the trend needs, and trendWindow
	// how many it looks at.
	trendDays   = 4
	trendWindow = 14
	// maxTrend bounds the growth per day, and maxTrendFactor the change
	// it projects by month end.
	maxTrend       = 0.25
	maxTrendFactor = 10
	// recentWindow is the time constant of the recent rate, and the
	// shortest time an excess over the forecast is expected to last;
	// maxExcess the longest.
	recentWindow = 5 * time.Minute
	minExcess    = 10 * time.Minute
	maxExcess    = 24 * time.Hour
	// aboveTolerance is how far the recent rate may run over the forecast
	// before it counts as an excess: request counts arrive in report
	// batches, so the rate over a few minutes wobbles.
	aboveTolerance = 1.1
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

// Forecast is the rest of a budget's month (or of one rule's part of it) as
// the forecast sees it.
type Forecast struct {
	Method string
	// Slots are the rest of the month: the rest of the current hour first,
	// then the whole hours to month end, grouped by hour of day (the same
	// hour of each day left, in one slot). Their layout depends only on the
	// month and the time, so the forecasts of the rules of one budget
	// line up slot by slot. Empty once the month is over.
	Slots []Slot
	// NextRate is the request rate (per second) to expect right now, for
	// the next interval or two: the largest of the forecast's rate for the
	// current hour, the recent rate, and the rate actually seen in the
	// last complete hour and in the current one so far. The controller
	// uses it to make sure the next interval alone cannot overshoot the
	// cap.
	NextRate float64
	// Profile is the requests forecast for each hour of the day (index =
	// UTC hour of day) at the current level, before the trend; nil unless
	// Method is MethodProfile.
	Profile []float64
	// Level, Trend, CurrentRate and ExpectedRate are as in Explain.
	Level        float64
	Trend        float64
	CurrentRate  float64
	ExpectedRate float64
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

// Explain returns the forecast's explanation for people.
func (fc *Forecast) Explain() Explain {
	return Explain{
		Method: fc.Method, Profile: slices.Clone(fc.Profile), Level: fc.Level, Trend: fc.Trend,
		CurrentRate: fc.CurrentRate, ExpectedRate: fc.ExpectedRate, Requests: fc.Requests(),
	}
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

// Recent is what the controller saw of the traffic lately (see Memory).
type Recent struct {
	// FirstSeen: traffic started after this instant (zero: unknown).
	FirstSeen time.Time
	// Rate is the request rate over the last minutes; 0: unknown.
	Rate float64
	// AboveSince is since when Rate has run over the forecast; zero: it
	// has not.
	AboveSince time.Time
}

// ForecastRequests predicts, from a month of usage so far, the requests in
// scope for the rest of the month from now on, without the controller's
// recent observations. now before the month counts as its start and after
// it as its end.
func ForecastRequests(u Usage, now time.Time) Forecast {
	return forecastSeries(u.Requests, u.MonthStart, now, Recent{})
}

// forecastSeries forecasts the rest of the month from hourly requests.
func forecastSeries(series []float64, start, now time.Time, rc Recent) Forecast {
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
		if i < 0 || i >= len(series) {
			return 0
		}
		return clean(series[i])
	}
	h0 := start.Hour() // 0 for a month start; any hour works
	hod := func(i int) int { return (h0 + i) % 24 }
	fc := Forecast{Method: MethodNone, Level: 1}
	whole := max(n-cur-1, 0) // whole hours after the current one
	if cur < n {
		fc.Slots = append(fc.Slots, Slot{Seconds: hourSeconds - into, Count: 1})
	}
	for k := range min(whole, 24) {
		count := whole / 24
		if k < whole%24 {
			count++
		}
		fc.Slots = append(fc.Slots, Slot{Seconds: hourSeconds, Count: count})
	}
	// groupOf maps a whole hour after the current one (0 is cur+1) to its
	// slot.
	groupOf := func(j int) int {
		if cur < n {
			return 1 + j%24
		}
		return j % 24
	}

	first := -1 // the first hour with traffic: the data starts there
	for i := 0; i <= cur && i < n; i++ {
		if req(i) > 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return fc
	}
	dataStart := start.Add(time.Duration(first) * time.Hour)
	if rc.FirstSeen.After(dataStart) && rc.FirstSeen.Before(now) && rc.FirstSeen.Before(dataStart.Add(time.Hour)) {
		dataStart = rc.FirstSeen
	}
	observed := now.Sub(dataStart).Seconds()
	complete := cur - first // whole hours observed
	// The most recent rates actually seen, for NextRate.
	recent := clean(rc.Rate)
	fc.CurrentRate = recent
	if complete > 0 {
		recent = math.Max(recent, req(cur-1)/hourSeconds)
	}
	if into >= 60 && cur < n {
		recent = math.Max(recent, req(cur)/into)
	}

	// perHour[h] is the forecast's requests in an hour of day h (before
	// the trend), and trend the growth per day.
	perHour := make([]float64, 24)
	var trend float64
	if observed < 24*hourSeconds {
		fc.Method = MethodMeanRate
		var sum float64
		for i := first; i <= cur && i < n; i++ {
			sum += req(i)
		}
		rate := sum / math.Max(observed, 1)
		for h := range perHour {
			perHour[h] = rate * hourSeconds
		}
	} else {
		fc.Method = MethodProfile
		var profile [24]float64
		scratch := make([]float64, 0, complete/24+1)
		for h := range 24 {
			scratch = scratch[:0]
			for i := first + (h-hod(first)+24)%24; i < cur; i += 24 {
				scratch = append(scratch, req(i))
			}
			profile[h] = lowerMedian(scratch)
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
			level = lowerMedian(ratios)
		}
		trend = dailyTrend(req, cur, complete)
		// The level is the middle of its window, half a window ago: move
		// it to now along the trend.
		level *= math.Exp(trend * float64(window) / 2 / 24)
		fc.Level = level
		for h := range profile {
			perHour[h] = level * profile[h]
		}
		fc.Profile = slices.Clone(perHour)
		if sum := sumOf(perHour); sum == 0 {
			// Traffic on no hour of the day but the odd one (a nightly job
			// at a different time each night): the medians see none; the
			// mean of the last days does.
			var total float64
			for i := cur - window; i < cur; i++ {
				total += req(i)
			}
			for h := range perHour {
				perHour[h] = total / float64(window)
			}
			fc.Profile = slices.Clone(perHour)
		}
	}
	fc.Trend = trend

	// The slots: the rest of this hour, then each whole hour j (from cur+1)
	// at its hour of day times the trend at its middle.
	growth := func(hoursAhead float64) float64 {
		return math.Min(math.Max(math.Exp(trend*hoursAhead/24), 1/maxTrendFactor), maxTrendFactor)
	}
	if cur < n {
		fc.Slots[0].Requests = perHour[hod(cur)] * fc.Slots[0].Seconds / hourSeconds
		fc.ExpectedRate = perHour[hod(cur)] / hourSeconds
	}
	if trend == 0 {
		for k := range min(whole, 24) {
			fc.Slots[groupOf(k)].Requests = perHour[hod(cur+1+k)]
		}
	} else {
		// The hours of one slot are one day apart: the slot gets their
		// mean.
		for j := range whole {
			fc.Slots[groupOf(j)].Requests += perHour[hod(cur+1+j)] * growth(float64(j)+1)
		}
		for k := range min(whole, 24) {
			s := &fc.Slots[groupOf(k)]
			s.Requests /= float64(s.Count)
		}
	}

	// The excess of the recent rate over the forecast for now lasts as
	// long again as it has so far.
	if x := fc.CurrentRate - fc.ExpectedRate; cur < n && fc.CurrentRate > fc.ExpectedRate*aboveTolerance && x > 0 {
		// Without a daily profile (the first day), a rate over the mean so
		// far is as likely the day's shape as a spike: it counts for the
		// shortest time only.
		lasted := minExcess
		if fc.Method == MethodProfile && !rc.AboveSince.IsZero() && now.Sub(rc.AboveSince) > lasted {
			lasted = min(now.Sub(rc.AboveSince), maxExcess)
		}
		left := lasted.Seconds()
		take := math.Min(left, fc.Slots[0].Seconds)
		fc.Slots[0].Requests += x * take
		left -= take
		for j := 0; left > 0 && j < whole; j++ {
			take := math.Min(left, hourSeconds)
			s := &fc.Slots[groupOf(j)]
			s.Requests += x * take / float64(s.Count)
			left -= take
		}
	}
	fc.NextRate = math.Max(fc.ExpectedRate, recent)
	for i := range fc.Slots {
		fc.Slots[i].Requests = clean(fc.Slots[i].Requests)
	}
	return fc
}

func sumOf(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// dailyTrend is the growth per day of the daily totals: the lower
// Theil–Sen slope of their logarithms over the last (up to trendWindow)
// whole days before hour cur, 0 with fewer than trendDays of them.
func dailyTrend(req func(int) float64, cur, complete int) float64 {
	days := min(complete/24, trendWindow)
	if days < trendDays {
		return 0
	}
	logs := make([]float64, days) // logs[0] is the oldest day
	for d := range days {
		var sum float64
		for i := cur - 24*(days-d); i < cur-24*(days-d-1); i++ {
			sum += req(i)
		}
		if sum <= 0 {
			return 0 // a day without traffic: no trend to speak of
		}
		logs[d] = math.Log(sum)
	}
	slopes := make([]float64, 0, days*(days-1)/2)
	for i := range days {
		for j := i + 1; j < days; j++ {
			slopes = append(slopes, (logs[j]-logs[i])/float64(j-i))
		}
	}
	s := lowerMedian(slopes)
	if math.Abs(s) < 1e-9 {
		return 0 // float noise of a flat series
	}
	return math.Max(-maxTrend, math.Min(maxTrend, s))
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

// lowerMedian returns the lower median of xs, the element at (n-1)/2 in
// sorted order (0 for none); it reorders xs. With an even count it takes the
// lower middle rather than the mean of the two: of two days, one a spike,
// it keeps the ordinary one.
func lowerMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return selectKth(xs, (len(xs)-1)/2)
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

// clamp01 maps x to [0, 1]; NaN maps to 0.
func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return math.Min(x, 1)
}
