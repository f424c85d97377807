package budget

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var nov = time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC) // 30 days, 720 hours

// usageOf is a month whose first len(hourly) hours saw those requests, the
// sampled traces 5 % of them.
func usageOf(hourly []float64) Usage {
	u := NewUsage(nov)
	for i, r := range hourly {
		u.Requests[i] = r
		u.Sampled[i] = r / 20
	}
	return u
}

// daily returns days × 24 hours of traffic: mean per hour × the daily cycle
// of SimConfig (swing around the mean, lowest at 00:00) × each day's factor.
func daily(mean, swing float64, days int, factor func(day int) float64) []float64 {
	out := make([]float64, 0, days*24)
	for d := range days {
		for h := range 24 {
			out = append(out, mean*factor(d+1)*(1-swing*math.Cos(2*math.Pi*(float64(h)+0.5)/24)))
		}
	}
	return out
}

func flat(int) float64 { return 1 }

// spikeOn multiplies one day's traffic.
func spikeOn(day int, factor float64) func(int) float64 {
	return func(d int) float64 {
		if d == day {
			return factor
		}
		return 1
	}
}

// hourlyAfter returns the forecast of hours hours from hour of the month
// next on: the profile, repeated every day.
func hourlyAfter(fc Forecast, next int, hours int) []float64 {
	out := make([]float64, hours)
	for i := range out {
		out[i] = fc.Profile[(next+i)%24]
	}
	return out
}

func within(got, want, rel float64) bool {
	if want == 0 {
		return math.Abs(got) <= rel
	}
	return math.Abs(got-want) <= rel*math.Abs(want)
}

func TestForecastRequests(t *testing.T) {
	const mean = 10_000_000.0 // requests per hour
	tests := []struct {
		name       string
		hourly     []float64
		now        time.Time
		wantMethod string
		// wantPerHour is the true traffic of hour of day h from now on.
		wantPerHour func(h int) float64
		rel         float64
	}{
		{
			name:        "flat traffic, first hours: the mean rate",
			hourly:      daily(mean, 0, 1, flat)[:6],
			now:         nov.Add(6 * time.Hour),
			wantMethod:  MethodMeanRate,
			wantPerHour: func(int) float64 { return mean },
			rel:         1e-12,
		},
		{
			name:        "flat traffic, five days: a straight line",
			hourly:      daily(mean, 0, 5, flat),
			now:         nov.Add(5 * 24 * time.Hour),
			wantMethod:  MethodProfile,
			wantPerHour: func(int) float64 { return mean },
			rel:         1e-12,
		},
		{
			name:       "daily cycle ±60 %, three days: follows the cycle",
			hourly:     daily(mean, 0.6, 3, flat),
			now:        nov.Add(3 * 24 * time.Hour),
			wantMethod: MethodProfile,
			wantPerHour: func(h int) float64 {
				return mean * (1 - 0.6*math.Cos(2*math.Pi*(float64(h)+0.5)/24))
			},
			rel: 1e-12,
		},
		{
			name:   "a 5x spike day two days ago is not the new level",
			hourly: daily(mean, 0.6, 6, spikeOn(4, 5)),
			now:    nov.Add(6 * 24 * time.Hour),
			wantPerHour: func(h int) float64 {
				return mean * (1 - 0.6*math.Cos(2*math.Pi*(float64(h)+0.5)/24))
			},
			wantMethod: MethodProfile,
			rel:        1e-12,
		},
		{
			name: "a 5x spike day going on now is not the new level",
			// Five normal days, then twelve hours of the spike.
			hourly: daily(mean, 0.6, 6, spikeOn(6, 5))[:5*24+12],
			now:    nov.Add((5*24 + 12) * time.Hour),
			wantPerHour: func(h int) float64 {
				return mean * (1 - 0.6*math.Cos(2*math.Pi*(float64(h)+0.5)/24))
			},
			wantMethod: MethodProfile,
			rel:        1e-12,
		},
		{
			name: "traffic doubled two days ago: the new level",
			hourly: daily(mean, 0.6, 7, func(d int) float64 {
				if d >= 6 {
					return 2
				}
				return 1
			}),
			now:        nov.Add(7 * 24 * time.Hour),
			wantMethod: MethodProfile,
			wantPerHour: func(h int) float64 {
				return 2 * mean * (1 - 0.6*math.Cos(2*math.Pi*(float64(h)+0.5)/24))
			},
			rel: 1e-12,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := ForecastRequests(usageOf(tt.hourly), tt.now)
			if fc.Method != tt.wantMethod {
				t.Fatalf("Method = %q, want %q", fc.Method, tt.wantMethod)
			}
			cur := int(tt.now.Sub(nov) / time.Hour)
			var want float64
			for i := cur; i < 720; i++ {
				want += tt.wantPerHour(i % 24)
			}
			if got := fc.Requests(); !within(got, want, tt.rel) {
				t.Errorf("requests for the rest of the month = %.6g, want %.6g", got, want)
			}
			if fc.Method == MethodProfile {
				for h := range 24 {
					if got := fc.Profile[h]; !within(got, tt.wantPerHour(h), tt.rel) {
						t.Errorf("hour %02d: forecast %.6g requests, want %.6g", h, got, tt.wantPerHour(h))
					}
				}
			}
		})
	}
}

func TestForecastFollowsTheDayNotALine(t *testing.T) {
	u := usageOf(daily(1e6, 0.6, 2, flat))
	now := nov.Add(48 * time.Hour)
	fc := ForecastRequests(u, now)
	hours := hourlyAfter(fc, 49, 24)
	lo, hi := slices.Min(hours), slices.Max(hours)
	// 1 ± 0.6 sampled at half hours: about 0.4 and 1.6 of the mean.
	if !(lo < 0.45e6 && hi > 1.55e6) {
		t.Errorf("forecast hours range over [%.3g, %.3g], want the daily cycle [~0.4e6, ~1.6e6]", lo, hi)
	}
}

func TestForecastRequestsRestOfHour(t *testing.T) {
	// 30 hours at 3,600 requests an hour, then 20 minutes into hour 30.
	hourly := daily(3600, 0, 2, flat)
	u := usageOf(hourly[:31])
	u.Requests[30] = 1200
	now := nov.Add(30*time.Hour + 20*time.Minute)
	fc := ForecastRequests(u, now)
	if got := fc.Slots[0]; got.Seconds != 2400 || !within(got.Requests, 2400, 1e-12) || got.Count != 1 {
		t.Errorf("rest of the current hour = %+v, want 2400 requests over 2400 s", got)
	}
	if want := 2400 + 3600*float64(720-31); !within(fc.Requests(), want, 1e-12) {
		t.Errorf("requests = %v, want %v", fc.Requests(), want)
	}
	if !within(fc.NextRate, 1, 1e-12) {
		t.Errorf("NextRate = %v, want 1/s", fc.NextRate)
	}
}

func TestForecastNextRateSeesTheRecentHour(t *testing.T) {
	// Two flat days, then an hour at 10x: the forecast's level does not
	// move, but the rate to expect right now does.
	hourly := daily(3600, 0, 2, flat)
	hourly = append(hourly, 36000)
	fc := ForecastRequests(usageOf(hourly), nov.Add(49*time.Hour))
	if !within(fc.Profile[0], 3600, 1e-12) {
		t.Errorf("profile = %v, want 3600 an hour", fc.Profile[0])
	}
	if !within(fc.NextRate, 10, 1e-12) {
		t.Errorf("NextRate = %v/s, want 10/s (the last hour)", fc.NextRate)
	}
}

func TestForecastEdges(t *testing.T) {
	bad := []float64{math.NaN(), math.Inf(1), math.Inf(-1), -5, 1e300, 0, 7}
	tests := []struct {
		name      string
		u         Usage
		now       time.Time
		wantSlots int
	}{
		{"zero usage", Usage{}, nov.Add(time.Hour), 719},
		{"before the month", usageOf([]float64{1}), nov.Add(-time.Hour), 720},
		{"after the month", usageOf([]float64{1}), nov.AddDate(0, 2, 0), 0},
		{"at the month's end", usageOf([]float64{1}), nov.AddDate(0, 1, 0), 0},
		{"garbage counts", usageOf(slices.Repeat(bad, 10)), nov.Add(70 * time.Hour), 720 - 70},
		{"short slices", Usage{MonthStart: nov, Requests: []float64{5, 5}}, nov.Add(100 * time.Hour), 720 - 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := ForecastRequests(tt.u, tt.now)
			var n int
			for _, s := range fc.Slots {
				n += s.Count
				if !(s.Requests >= 0) || math.IsInf(s.Requests, 0) || !(s.Seconds > 0) || s.Seconds > 3600 {
					t.Errorf("bad slot %+v", s)
				}
			}
			if n != tt.wantSlots {
				t.Errorf("%d stretches left, want %d", n, tt.wantSlots)
			}
			if r := fc.Requests(); !(r >= 0) || math.IsInf(r, 0) || math.IsNaN(fc.NextRate) {
				t.Errorf("requests %v, next rate %v", r, fc.NextRate)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 80 {
		for range 20 {
			xs := make([]float64, n)
			for i := range xs {
				xs[i] = float64(rng.IntN(10)) // many ties
			}
			sorted := slices.Clone(xs)
			slices.Sort(sorted)
			var want float64
			switch {
			case n == 0:
			case n%2 == 1:
				want = sorted[n/2]
			default:
				want = (sorted[n/2-1] + sorted[n/2]) / 2
			}
			if got := median(xs); got != want {
				t.Fatalf("median(%v) = %v, want %v", sorted, got, want)
			}
		}
	}
}

func TestRuleShares(t *testing.T) {
	// Two days of hours: rule a has 3 requests in every hour, rule b 1 in
	// the even hours of the day; rule c has month totals but no hours
	// (recorded before hours were kept), d nothing.
	u := NewUsage(nov)
	a, b := make([]float64, 720), make([]float64, 720)
	for h := range 48 {
		a[h] = 3
		if h%2 == 0 {
			b[h] = 1
		}
		u.Requests[h] = a[h] + b[h]
	}
	u.RuleRequests["a"], u.RuleRequests["b"] = a, b
	u.Rules["a"], u.Rules["b"] = RuleUsage{Requests: 144}, RuleUsage{Requests: 24}
	rs := []RuleModel{{Name: "a"}, {Name: "b"}, {Name: "d"}}
	got, _ := ruleShares(&u, rs, 48)
	for h := range 24 {
		want := []float64{1, 0, 0}
		if h%2 == 0 {
			want = []float64{0.75, 0.25, 0}
		}
		for i := range rs {
			if !within(got[i][h], want[i], 1e-12) {
				t.Errorf("hour %d: rule %s share %v, want %v", h, rs[i].Name, got[i][h], want[i])
			}
		}
	}
	// An hour of the day without traffic takes the week's shares; no
	// traffic at all, the month's totals, then even shares.
	u.Rules["c"] = RuleUsage{Requests: 168}
	rs = append(rs, RuleModel{Name: "c"})
	got, _ = ruleShares(&u, rs, 48)
	// c follows the budget's hours, at half of them (its half of the
	// month): 1.5 of an odd hour's 3, beside a's 3.
	if s := got[3][1]; !within(s, 1.0/3, 1e-12) {
		t.Errorf("a rule without hours: share %v of an odd hour, want 1/3", s)
	}
	empty := NewUsage(nov)
	empty.Rules["a"] = RuleUsage{Requests: 3}
	empty.Rules["b"] = RuleUsage{Requests: 1}
	if got, _ := ruleShares(&empty, []RuleModel{{Name: "a"}, {Name: "b"}}, 5); !within(got[0][7], 0.75, 1e-12) {
		t.Errorf("no hours at all: share %v, want the month's 0.75", got[0][7])
	}
	if got, _ := ruleShares(&empty, []RuleModel{{Name: "x"}, {Name: "y"}}, 5); !within(got[1][7], 0.5, 1e-12) {
		t.Errorf("nothing at all: share %v, want 0.5", got[1][7])
	}
}

func TestLoadTraces(t *testing.T) {
	// One whole hour of 36,000 requests (10/s) with 2 traces/s of reservoir
	// and 10 % after it: 7,200 + 0.1 × 28,800.
	fc := Forecast{Slots: []Slot{{Requests: 36000, Seconds: 3600, Count: 3}}}
	l := testLoad(0.1, 2, fc, Forecast{})
	tests := []struct{ f, g, want float64 }{
		{1, 1, 3 * (7200 + 2880)},
		{0, 1, 3 * 7200},
		{0.5, 1, 3 * (7200 + 1440)},
		{0, 0, 0},
		{1, 0, 3 * 3600},
		{1, 0.5, 3 * (3600 + 3240)},
	}
	for _, tt := range tests {
		if got := l.traces(monthly, tt.f, tt.g); !within(got, tt.want, 1e-12) {
			t.Errorf("traces(f=%v, g=%v) = %v, want %v", tt.f, tt.g, got, tt.want)
		}
	}
}

func TestReservoirFactor(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		loads := make([]load, 1+rng.IntN(3))
		tier := make([]int, len(loads))
		for i := range loads {
			tier[i] = i
			var fc Forecast
			for range 1 + rng.IntN(30) {
				fc.Slots = append(fc.Slots, Slot{Requests: rng.Float64() * 1e5, Seconds: 1 + rng.Float64()*3599, Count: 1 + rng.IntN(5)})
			}
			loads[i] = testLoad(0, pick(rng, 0, 0.1+rng.Float64()*100), fc, Forecast{})
		}
		traces := func(g float64) float64 {
			var sum float64
			for i := range loads {
				sum += loads[i].traces(monthly, 0, g)
			}
			return sum
		}
		full := traces(1)
		want := rng.Float64() * full * 1.2
		g := reservoirFactor(loads, tier, monthly, want)
		if g < 0 || g > 1 {
			t.Fatalf("g = %v", g)
		}
		if gs := reservoirFactorSorted(loads, tier, monthly, want); !within(g, gs, 1e-9) && !within(traces(g), traces(gs), 1e-9) {
			t.Fatalf("Newton's g = %v, the sorted walk's %v", g, gs)
		}
		if want >= full {
			if g != 1 && !within(traces(g), full, 1e-9) {
				t.Fatalf("want %v >= %v at g = 1, got g = %v", want, full, g)
			}
			continue
		}
		if got := traces(g); !within(got, want, 1e-9) {
			t.Fatalf("g = %v takes %v traces, want %v", g, got, want)
		}
	}
}

func pick(rng *rand.Rand, xs ...float64) float64 { return xs[rng.IntN(len(xs))] }

// TestForecastSeesGrowth: traffic growing 3× over the month (a game's
// launch) is forecast within 10 % from its fifth day, where a level without
// a trend is a third short.
func TestForecastSeesGrowth(t *testing.T) {
	const perHour = 1e6
	rate := func(h int) float64 { return perHour * math.Pow(3, (float64(h)+0.5)/24/29) }
	for _, swing := range []float64{0, 0.6} {
		for _, day := range []int{5, 7, 10, 20} {
			cur := day * 24
			hourly := make([]float64, cur)
			for h := range hourly {
				hourly[h] = rate(h) * (1 - swing*math.Cos(2*math.Pi*(float64(h%24)+0.5)/24))
			}
			var want float64
			for h := cur; h < 720; h++ {
				want += rate(h) * (1 - swing*math.Cos(2*math.Pi*(float64(h%24)+0.5)/24))
			}
			fc := ForecastRequests(usageOf(hourly), nov.Add(time.Duration(cur)*time.Hour))
			if got := fc.Requests(); !within(got, want, 0.1) {
				t.Errorf("swing %v, day %d: %.4g requests forecast, want %.4g (%.1f%% off; trend %.4f/day)", swing, day, got, want, 100*(got/want-1), fc.Trend)
			}
		}
	}
}

// TestForecastMidHourStart: traffic that starts mid-hour is forecast at its
// own rate a minute later (within 20 %), not averaged over the hour: the
// controller remembers when it last saw none. Reports arrive every 10 s.
func TestForecastMidHourStart(t *testing.T) {
	const rate = 100.0 // requests per second from 12:40:03 on
	start := nov.Add(4*24*time.Hour + 12*time.Hour + 40*time.Minute + 3*time.Second)
	b := &Budget{Name: "b", MonthlyAmountMicros: 1e6 * MicrosPerUnit}
	rs := []RuleModel{{Name: "r", FixedRate: 1}}
	var prev *Decision
	for now := start.Add(-40*time.Minute - 3*time.Second); !now.After(start.Add(time.Minute)); now = now.Add(10 * time.Second) {
		u := NewUsage(nov)
		// The one SDK reports at :05, :15, ...: what it counted up to its
		// last report.
		reported := now.Add(-5 * time.Second).Truncate(10 * time.Second).Add(5 * time.Second)
		if d := reported.Sub(start).Seconds(); d > 0 {
			u.Requests[int(start.Sub(nov)/time.Hour)] = rate * d
			u.RuleRequests["r"] = slices.Clone(u.Requests)
			u.Rules["r"] = RuleUsage{Requests: int64(rate * d)}
		}
		d := Decide(b, Input{Usage: u, Rules: rs, Prev: prev}, now, 10*time.Second)
		prev = &d
	}
	now := prev.Memory.Observed
	secondsLeft := nov.AddDate(0, 1, 0).Sub(now).Seconds()
	got := prev.Explain.Requests / secondsLeft
	if !within(got, rate, 0.2) {
		t.Errorf("a minute after traffic started at %v/s, the forecast says %.3g/s", rate, got)
	}
	if prev.Memory.FirstSeen.IsZero() || prev.Explain.Method != MethodMeanRate {
		t.Errorf("memory %+v, method %s", prev.Memory, prev.Explain.Method)
	}
}
