package budget

import (
	"math"
	"slices"
	"time"
)

// Aim is the share of the cap an enforcing budget steers its month to: under
// the cap by enough that forecast errors of the last days (a spike, a
// busier evening than the profile says) do not push it over, close enough
// that the budget is used.
const Aim = 0.99

// EpisodeGap is how long no rate must have been lowered before an
// enforcement episode ends (and "enforcement ended" fires): the factors of
// a month near its aim come and go from one interval to the next, and each
// of those is not news.
const EpisodeGap = time.Hour

// defaultInterval stands in for an interval <= 0 in Decide.
const defaultInterval = time.Minute

// Input is what Decide decides from.
type Input struct {
	// Usage is the budget's month so far.
	Usage Usage
	// Rules are the rules in scope, each with the part of its reservoir
	// that the scope gets.
	Rules []RuleModel
	// Prev is the decision of the controller's previous step this month,
	// nil if none: it carries the Memory of the traffic seen lately.
	Prev *Decision
	// CoveragePairs is how many service × rule pairs in scope have seen
	// traffic this month: the plan keeps one trace per pair every
	// CoverageMinutes.
	CoveragePairs int

	// cache, if set, keeps the rules' shares of the hours between calls.
	cache *shareCache
}

// Decide is the controller's step for one budget: spend so far, the forecast
// at month end, and the factors to apply to the fixed rates and reservoirs of
// each rule in scope until the next step, interval from now.
//
// Spent is the sampled traces of in.Usage. The budget's requests are
// forecast for the rest of the month (see forecastSeries), and shared out
// over the rules by each rule's own hours (splitForecast); each rule turns
// its requests into traces with its own reservoir and fixed rate (plan.go).
// ForecastUnenforced adds them up at factors 1, with the coverage reserve.
//
// In Enforce mode:
//   - while Spent plus the forecast at factors 1 stays under Aim × cap, the
//     factors are 1;
//   - otherwise the rules are cut, lowest priority first (see cut), so that
//     the forecast lands on Aim × cap, never below each rule's floor;
//   - whatever the month-end forecast says, the next two intervals (the one
//     coming, and one of reports still on their way) at the rate seen now
//     must fit in what is left of the cap; rules are cut the same way until
//     they do;
//   - when Spent reaches the cap, or what is left of it would not even take
//     those two intervals at the floor, the budget is exhausted: fixed
//     rates are 0 and reservoirs keep only FloorPerSecond traces per second
//     (nothing without a floor, or without reservoirs in scope to keep it
//     with), highest priority first.
//
// AlertOnly budgets always get factors 1. Factors are always in [0, 1] and no
// field is NaN, whatever the input.
func Decide(b *Budget, in Input, now time.Time, interval time.Duration) Decision {
	u := in.Usage
	if u.MonthStart.IsZero() {
		u.MonthStart = MonthStart(now)
	}
	var spent, requests float64
	for _, s := range u.Sampled {
		spent += clean(s)
	}
	for _, r := range u.Requests {
		requests += clean(r)
	}
	mem := remember(in.Prev, u.MonthStart, now, requests)
	total := forecastSeries(u.Requests, u.MonthStart, now, Recent{FirstSeen: mem.FirstSeen, Rate: mem.RecentRate, AboveSince: mem.AboveSince})
	if total.CurrentRate > total.ExpectedRate*aboveTolerance && total.CurrentRate > 0 {
		if mem.AboveSince.IsZero() {
			mem.AboveSince = now
		}
	} else {
		mem.AboveSince = time.Time{}
	}

	var nb Budget
	if b != nil {
		nb = *b // with the default price, without cloning the thresholds
	}
	loads := planLoads(&nb, &u, in.Rules, &total, now, interval, in.cache)
	ts := tiers(loads)

	// The coverage reserve, for the rest of the month and for the next
	// intervals.
	if interval <= 0 {
		interval = defaultInterval
	}
	horizon := 2 * interval.Seconds()
	var secondsLeft float64
	for _, s := range total.Slots {
		secondsLeft += s.Seconds * float64(s.Count)
	}
	var reserve, reserveNext float64
	if nb.CoverageMinutes > 0 && in.CoveragePairs > 0 {
		perSecond := float64(in.CoveragePairs) / (float64(nb.CoverageMinutes) * 60)
		reserve, reserveNext = perSecond*secondsLeft, perSecond*math.Min(horizon, secondsLeft)
	}

	sum := func(w int, f, g []float64) float64 {
		var s float64
		for i := range loads {
			s += loads[i].traces(w, f[i], g[i])
		}
		return s
	}
	ones := make([]float64, len(loads))
	for i := range ones {
		ones[i] = 1
	}
	unenforced := spent + sum(monthly, ones, ones) + reserve
	d := Decision{
		Spent:              spent,
		Forecast:           unenforced,
		ForecastUnenforced: unenforced,
		FixedRateFactor:    1,
		ReservoirFactor:    1,
		Explain:            total.Explain(),
		CoverageReserve:    reserve,
		LastHour:           lastHour(u.Sampled, u.MonthStart, now),
	}
	f, g := slices.Clone(ones), slices.Clone(ones)
	// finish fills in the rules' plans; with forecast, it also sets the
	// forecast at the factors decided.
	finish := func(forecast bool) Decision {
		d.Rules = make([]RulePlan, len(loads))
		var sum float64
		for i := range loads {
			l := &loads[i]
			traces := l.traces(monthly, f[i], g[i])
			sum += traces
			d.Rules[i] = RulePlan{
				Name: l.name, Priority: l.priority, FixedRateFactor: f[i], ReservoirFactor: g[i], Reservoir: l.resv,
				Requests: l.requests(), Forecast: traces, ForecastUnenforced: l.traces(monthly, 1, 1),
			}
			d.FixedRateFactor = math.Min(d.FixedRateFactor, f[i])
			d.ReservoirFactor = math.Min(d.ReservoirFactor, g[i])
		}
		if d.Exhausted {
			d.FixedRateFactor = 0
			if len(loads) == 0 {
				d.ReservoirFactor = 0
			}
		}
		if forecast {
			d.Forecast = spent + sum + reserve
		}
		d.Memory = episode(mem, d.Enforcing(), now)
		return d
	}
	if b == nil || b.Mode == AlertOnly {
		return finish(false)
	}
	capTraces := nb.CapTraces()
	switch {
	case math.IsNaN(capTraces) || capTraces < 0:
		capTraces = 0
	case math.IsInf(capTraces, 1):
		return finish(false) // no cap to enforce
	}

	floor := floors(loads, ts, nb.FloorPerSecond)
	zeros := make([]float64, len(loads))
	left := capTraces - spent
	if spent >= capTraces || sum(nextIntervals, zeros, floor)+reserveNext > left {
		d.Exhausted = true
		f, g = zeros, floor
		return finish(true)
	}
	if unenforced > Aim*capTraces {
		f, g = cut(loads, ts, floor, monthly, Aim*capTraces-spent-reserve)
	}
	// The next intervals must fit in what is left of the cap.
	if sum(nextIntervals, f, g)+reserveNext > left {
		fn, gn := cut(loads, ts, floor, nextIntervals, left-reserveNext)
		for i := range loads {
			f[i] = math.Min(f[i], fn[i])
			g[i] = math.Max(floor[i], math.Min(g[i], gn[i]))
		}
	}
	return finish(true)
}

// shareWeek is how many hours of each rule's traffic its shares of the
// hours of the day are taken from: a week.
const shareWeek = 7 * 24

// planLoads builds the plan's rules: each rule's priority, rates, and its
// part of the budget's forecast, for the month and for the next two
// intervals at the rate to expect now. A rule's part of an hour is its
// share of that hour of the day over the last week (see ruleShares): the
// budget's forecast (robust to spikes, with the recent rate and the trend)
// keeps its total, and each rule its own daily shape and share.
func planLoads(b *Budget, u *Usage, rs []RuleModel, total *Forecast, now time.Time, interval time.Duration, cache *shareCache) []load {
	if len(rs) == 0 {
		return nil
	}
	if interval <= 0 {
		interval = defaultInterval
	}
	elapsed := now.Sub(u.MonthStart)
	cur := int(elapsed / time.Hour)
	if elapsed < 0 {
		cur = 0
	}
	var byHour [][24]float64
	if cache != nil && cache.valid && cache.cur == cur && len(cache.byHour) == len(rs) {
		byHour = cache.byHour
	} else {
		var settled bool
		byHour, settled = ruleShares(u, rs, cur)
		if cache != nil && settled {
			*cache = shareCache{valid: true, cur: cur, byHour: byHour}
		}
	}
	nowShares := currentShares(u, rs, cur, byHour)
	h0 := u.MonthStart.UTC().Hour()
	// Slot 0 is the current hour; the others are hours of the day from the
	// next one on.
	hods := make([]int, len(total.Slots))
	for k := range hods {
		hods[k] = (h0 + cur + k) % 24
	}
	horizon := 2 * interval.Seconds()
	loads := make([]load, len(rs))
	for i, r := range rs {
		resv := 0.0
		if r.Reservoir > 0 {
			resv = math.Min(r.Reservoir, maxRate)
		}
		loads[i] = load{
			name: r.Name, priority: b.Priority(r.Name, r.Labels), fixed: clamp01(r.FixedRate), resv: resv,
			slots: total.Slots, hods: hods, byHour: &byHour[i],
			nextReq: clean(total.NextRate * nowShares[i] * horizon), horizon: horizon,
		}
		loads[i].init()
	}
	return loads
}

// shareCache keeps the rules' shares of the hours of the day from one step
// to the next within an hour: they change only when an hour completes. The
// simulator, which decides every virtual minute, uses one.
type shareCache struct {
	valid  bool
	cur    int
	byHour [][24]float64
}

// ruleShares returns each rule's share of each hour of the day (index = UTC
// hour of day), from the complete hours of the last week before hour cur
// (or the current hour, before there are any): the rule's requests in that
// hour of the day over all of the rules'. An hour of the day with no
// traffic in the week takes the rules' shares of the whole week; a week
// without traffic, their shares of the month (Usage.Rules); a month
// without, even shares. A rule whose hours are not kept is taken to follow
// the budget's hours in proportion to its month. settled says the shares
// come from complete hours with traffic, so they hold until cur ends.
func ruleShares(u *Usage, rs []RuleModel, cur int) (_ [][24]float64, settled bool) {
	n := len(rs)
	out := make([][24]float64, n)
	var ruleTotal float64
	for _, r := range rs {
		ruleTotal += clean(float64(u.Rules[r.Name].Requests))
	}
	h0 := u.MonthStart.UTC().Hour()
	from, to := max(cur-shareWeek, 0), cur
	if from >= to {
		to = cur + 1 // no complete hour yet: the current one
	}
	var sums [24]float64
	var week float64
	weekOf := make([]float64, n)
	for i, r := range rs {
		series := u.RuleRequests[r.Name]
		var legacy float64
		if len(series) == 0 && ruleTotal > 0 {
			legacy = clean(float64(u.Rules[r.Name].Requests)) / ruleTotal
		}
		for h := from; h < to; h++ {
			var x float64
			switch {
			case legacy > 0 && h < len(u.Requests):
				x = clean(u.Requests[h]) * legacy
			case h < len(series):
				x = clean(series[h])
			}
			out[i][(h0+h)%24] += x
			weekOf[i] += x
		}
		week += weekOf[i]
	}
	for i := range out {
		for h := range 24 {
			sums[h] += out[i][h]
		}
	}
	for h := range 24 {
		for i := range out {
			switch {
			case sums[h] > 0:
				out[i][h] /= sums[h]
			case week > 0:
				out[i][h] = weekOf[i] / week
			case ruleTotal > 0:
				out[i][h] = clean(float64(u.Rules[rs[i].Name].Requests)) / ruleTotal
			default:
				out[i][h] = 1 / float64(n)
			}
		}
	}
	return out, cur > 0 && to == cur && week > 0
}

// currentShares are the rules' shares of the traffic right now: of the
// current hour so far when it has any, else of its hour of the day.
func currentShares(u *Usage, rs []RuleModel, cur int, byHour [][24]float64) []float64 {
	out := make([]float64, len(rs))
	var sum float64
	for i, r := range rs {
		if series := u.RuleRequests[r.Name]; cur >= 0 && cur < len(series) {
			out[i] = clean(series[cur])
		}
		sum += out[i]
	}
	if sum > 0 {
		for i := range out {
			out[i] /= sum
		}
		return out
	}
	h := (u.MonthStart.UTC().Hour() + max(cur, 0)) % 24
	for i := range out {
		out[i] = byHour[i][h]
	}
	return out
}

// lastHour is the traces of the 60 minutes before now: the current hour so
// far and the end of the previous one, taken as even.
func lastHour(sampled []float64, monthStart, now time.Time) float64 {
	elapsed := now.Sub(monthStart)
	if elapsed < 0 {
		return 0
	}
	cur := int(elapsed / time.Hour)
	into := (elapsed - time.Duration(cur)*time.Hour).Seconds()
	at := func(i int) float64 {
		if i < 0 || i >= len(sampled) {
			return 0
		}
		return clean(sampled[i])
	}
	return at(cur) + at(cur-1)*(hourSeconds-into)/hourSeconds
}

// remember carries the controller's memory into a new step: the rate seen
// since the previous one, and when traffic was first seen.
func remember(prev *Decision, monthStart, now time.Time, requests float64) Memory {
	var m Memory
	if prev != nil && !prev.Memory.Observed.Before(monthStart) && prev.Memory.Observed.Before(now) {
		m = prev.Memory
		p := prev.Memory
		dt := now.Sub(p.Observed)
		delta := math.Max(0, requests-p.Requests)
		switch {
		case p.Requests == 0 && requests > 0:
			// Traffic started since the previous step.
			m.FirstSeen = p.Observed
			m.RecentRate = requests / dt.Seconds()
		case !m.FirstSeen.IsZero() && now.Sub(m.FirstSeen) <= recentWindow:
			m.RecentRate = requests / now.Sub(m.FirstSeen).Seconds()
		case p.Requests > 0:
			w := 1 - math.Exp(-dt.Seconds()/recentWindow.Seconds())
			m.RecentRate += w * (delta/dt.Seconds() - m.RecentRate)
		}
	}
	m.Observed, m.Requests = now, requests
	m.RecentRate = clean(m.RecentRate)
	return m
}

// episode moves the enforcement episodes on: one starts when a rate is
// lowered and none is open, and ends once none has been for EpisodeGap.
func episode(m Memory, enforcing bool, now time.Time) Memory {
	switch {
	case enforcing:
		if !m.EpisodeOpen {
			m.Episode++
			m.EpisodeOpen = true
		}
		m.LastEnforced = now
	case m.EpisodeOpen && now.Sub(m.LastEnforced) >= EpisodeGap:
		m.EpisodeOpen = false
	}
	return m
}
