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

func TestNewTraceModel(t *testing.T) {
	rs := []RuleModel{
		{Name: "a", FixedRate: 0.5, Reservoir: 2},
		{Name: "b", FixedRate: 0.1, Reservoir: 3},
	}
	tests := []struct {
		name  string
		usage map[string]RuleUsage
		want  TraceModel
	}{
		{"weighted by requests", map[string]RuleUsage{"a": {Requests: 100}, "b": {Requests: 300}}, TraceModel{Reservoir: 5, FixedRate: 0.2}},
		{"no requests: plain mean", nil, TraceModel{Reservoir: 5, FixedRate: 0.3}},
		{"a rule out of scope is ignored", map[string]RuleUsage{"b": {Requests: 10}, "z": {Requests: 1e9}}, TraceModel{Reservoir: 5, FixedRate: 0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewTraceModel(rs, tt.usage)
			if got.Reservoir != tt.want.Reservoir || !within(got.FixedRate, tt.want.FixedRate, 1e-12) {
				t.Errorf("NewTraceModel = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := NewTraceModel(nil, nil); got != (TraceModel{}) {
		t.Errorf("no rules: %+v", got)
	}
	weird := NewTraceModel([]RuleModel{{FixedRate: math.NaN(), Reservoir: math.Inf(1)}, {FixedRate: 7, Reservoir: -1}}, nil)
	if !(weird.FixedRate >= 0 && weird.FixedRate <= 1) || math.IsInf(weird.Reservoir, 0) || weird.Reservoir < 0 {
		t.Errorf("garbage rules: %+v", weird)
	}
}

func TestForecastTraces(t *testing.T) {
	// One whole hour of 36,000 requests (10/s) with 2 traces/s of reservoir
	// and 10 % after it: 7,200 + 0.1 × 28,800.
	fc := Forecast{Slots: []Slot{{Requests: 36000, Seconds: 3600, Count: 3}}}
	m := TraceModel{Reservoir: 2, FixedRate: 0.1}
	tests := []struct{ f, g, want float64 }{
		{1, 1, 3 * (7200 + 2880)},
		{0, 1, 3 * 7200},
		{0.5, 1, 3 * (7200 + 1440)},
		{0, 0, 0},
		{1, 0, 3 * 3600},
		{1, 0.5, 3 * (3600 + 3240)},
	}
	for _, tt := range tests {
		if got := fc.Traces(m, tt.f, tt.g); !within(got, tt.want, 1e-12) {
			t.Errorf("Traces(f=%v, g=%v) = %v, want %v", tt.f, tt.g, got, tt.want)
		}
	}
}

func TestReservoirFactorFor(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		var fc Forecast
		for range 1 + rng.IntN(30) {
			fc.Slots = append(fc.Slots, Slot{Requests: rng.Float64() * 1e5, Seconds: 1 + rng.Float64()*3599, Count: 1 + rng.IntN(5)})
		}
		m := TraceModel{Reservoir: 0.1 + rng.Float64()*100}
		full := fc.Traces(m, 0, 1)
		want := rng.Float64() * full * 1.2
		g := fc.reservoirFactorFor(m, want)
		if g < 0 || g > 1 {
			t.Fatalf("g = %v", g)
		}
		got := fc.Traces(m, 0, g)
		if want >= full {
			if g != 1 {
				t.Fatalf("want %v >= %v at g = 1, got g = %v", want, full, g)
			}
			continue
		}
		if !within(got, want, 1e-9) {
			t.Fatalf("g = %v takes %v traces, want %v", g, got, want)
		}
	}
}
