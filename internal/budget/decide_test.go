package budget

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// defaultModel is the Default rule: 1 trace/s and 5 %.
var defaultModel = []RuleModel{{Name: "Default", FixedRate: 0.05, Reservoir: 1}}

// steady is days of flat traffic at perDay requests a day, sampled as
// the rules in models would sample it scaled so that the month so far spent
// spent traces.
func steady(perDay float64, days int, spent float64) Usage {
	u := NewUsage(nov)
	for i := range days * 24 {
		u.Requests[i] = perDay / 24
		u.Sampled[i] = spent / float64(days*24)
	}
	u.Rules["Default"] = RuleUsage{Requests: int64(perDay * float64(days))}
	return u
}

func TestDecide(t *testing.T) {
	const capT = 100e6 // $500 at $5 per million
	b500 := &Budget{Name: "payments", MonthlyAmountMicros: 500 * MicrosPerUnit}
	tenDays := nov.Add(10 * 24 * time.Hour)
	tests := []struct {
		name   string
		b      *Budget
		u      Usage
		rules  []RuleModel
		now    time.Time
		f, g   float64 // want; NaN: check with inRange only
		exh    bool
		landAt float64 // want Forecast at this share of the cap; 0: not checked
	}{
		{
			name: "no traffic", b: b500, u: NewUsage(nov), rules: defaultModel, now: tenDays,
			f: 1, g: 1,
		},
		{
			name: "empty usage and no rules", b: b500, u: Usage{}, now: tenDays,
			f: 1, g: 1,
		},
		{
			name: "forecast under the aim: factors 1", b: b500, u: steady(1e6, 10, 1e6), rules: defaultModel, now: tenDays,
			f: 1, g: 1,
		},
		{
			name: "forecast over: the fixed rates are scaled to land at the aim", b: b500,
			u: steady(250e6, 10, 30e6), rules: defaultModel, now: tenDays,
			f: math.NaN(), g: 1, landAt: Aim,
		},
		{
			name: "reservoirs alone over: fixed rates off, reservoirs scaled", b: b500,
			u:     steady(250e6, 10, 30e6),
			rules: []RuleModel{{Name: "Default", FixedRate: 0.05, Reservoir: 1000}},
			now:   tenDays,
			f:     0, g: math.NaN(), landAt: Aim,
		},
		{
			name: "spent past the aim: fixed rates and reservoirs off", b: b500,
			u: steady(250e6, 10, 0.995*capT), rules: defaultModel, now: tenDays,
			f: 0, g: 0,
		},
		{
			name: "exhausted without a floor", b: b500,
			u: steady(250e6, 10, capT), rules: defaultModel, now: tenDays,
			f: 0, g: 0, exh: true,
		},
		{
			name: "exhausted with a floor: reservoirs keep the floor", b: &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, FloorPerSecond: 0.5},
			u:     steady(250e6, 10, 2*capT),
			rules: []RuleModel{{Name: "Default", FixedRate: 0.05, Reservoir: 2}},
			now:   tenDays,
			f:     0, g: 0.25, exh: true,
		},
		{
			name: "exhausted with a floor over the reservoirs", b: &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, FloorPerSecond: 5},
			u: steady(250e6, 10, capT), rules: defaultModel, now: tenDays,
			f: 0, g: 1, exh: true,
		},
		{
			name: "not enough left for two intervals at the floor: exhausted", b: &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, FloorPerSecond: 100},
			u:     steady(250e6, 10, capT-1000),
			rules: []RuleModel{{Name: "Default", FixedRate: 0.05, Reservoir: 1000}},
			now:   tenDays,
			f:     0, g: 0.1, exh: true,
		},
		{
			name: "alert_only never changes rates", b: &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, Mode: AlertOnly},
			u: steady(250e6, 10, 3*capT), rules: defaultModel, now: tenDays,
			f: 1, g: 1,
		},
		{
			name: "no budget", b: nil, u: steady(250e6, 10, 3*capT), rules: defaultModel, now: tenDays,
			f: 1, g: 1,
		},
		{
			name: "an unset price is the default price", b: &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, PricePerMillionMicros: 0},
			u: steady(250e6, 10, capT), rules: defaultModel, now: tenDays,
			f: 0, g: 0, exh: true,
		},
		{
			name: "the month is over", b: b500, u: steady(250e6, 30, 0.5*capT), rules: defaultModel, now: nov.AddDate(0, 1, 0),
			f: 1, g: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.b, Input{Usage: tt.u, Rules: tt.rules}, tt.now, time.Minute)
			checkDecision(t, d)
			if !math.IsNaN(tt.f) && !within(d.FixedRateFactor, tt.f, 1e-9) {
				t.Errorf("FixedRateFactor = %v, want %v", d.FixedRateFactor, tt.f)
			}
			if !math.IsNaN(tt.g) && !within(d.ReservoirFactor, tt.g, 1e-9) {
				t.Errorf("ReservoirFactor = %v, want %v", d.ReservoirFactor, tt.g)
			}
			if d.Exhausted != tt.exh {
				t.Errorf("Exhausted = %v, want %v", d.Exhausted, tt.exh)
			}
			if tt.landAt > 0 && !within(d.Forecast, tt.landAt*capT, 1e-9) {
				t.Errorf("Forecast = %.6g, want %.6g", d.Forecast, tt.landAt*capT)
			}
			if _, spent := tt.u.Totals(); !within(d.Spent, spent, 1e-12) {
				t.Errorf("Spent = %v, want %v", d.Spent, spent)
			}
		})
	}
}

func TestDecideForecasts(t *testing.T) {
	// Ten flat days of 250M requests: the rest of the month (20 days) adds
	// 20 × (86,400 + 5 % of the rest) traces at factors 1.
	u := steady(250e6, 10, 30e6)
	d := Decide(&Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit}, Input{Usage: u, Rules: defaultModel}, nov.Add(10*24*time.Hour), time.Minute)
	want := 30e6 + 20*(86400+0.05*(250e6-86400))
	if !within(d.ForecastUnenforced, want, 1e-9) {
		t.Errorf("ForecastUnenforced = %.9g, want %.9g", d.ForecastUnenforced, want)
	}
	// f is what lands the month at the aim: the reservoirs' 20 days plus
	// f × the fixed-rate traces.
	wantF := (Aim*100e6 - 30e6 - 20*86400) / (20 * 0.05 * (250e6 - 86400))
	if !within(d.FixedRateFactor, wantF, 1e-9) {
		t.Errorf("FixedRateFactor = %v, want %v", d.FixedRateFactor, wantF)
	}
}

func TestDecideNextIntervalsFit(t *testing.T) {
	// Mid-month, half the cap spent, and the last hour had 1e12 requests:
	// the month-end forecast (whose level ignores one odd hour) would allow
	// far more than is left for the next two intervals at that rate, so
	// the factors are cut until those fit, exactly.
	b := &Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit}
	tests := []struct {
		name   string
		perDay float64
		rules  []RuleModel
		f, g   float64 // want; NaN: not checked
	}{
		{"fixed rates cut", 250e6, defaultModel, math.NaN(), 1},
		// A reservoir of 1e6/s takes every request of 1M a day, within the
		// month's budget, but 1.2e8 traces in two minutes at 1e12 an hour.
		{"reservoirs cut too", 1e6, []RuleModel{{Name: "Default", FixedRate: 0.05, Reservoir: 1e6}}, 0, 50e6 / 1.2e8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := steady(tt.perDay, 10, 50e6)
			u.Requests[239] = 1e12
			d := Decide(b, Input{Usage: u, Rules: tt.rules}, nov.Add(240*time.Hour), time.Minute)
			checkDecision(t, d)
			next := Forecast{Slots: []Slot{{Requests: 1e12 / 3600 * 120, Seconds: 120, Count: 1}}}
			l := testLoad(tt.rules[0].FixedRate, tt.rules[0].Reservoir, Forecast{}, next)
			left := 100e6 - 50e6
			if got := l.traces(nextIntervals, d.FixedRateFactor, d.ReservoirFactor); !within(got, left, 1e-9) {
				t.Errorf("the next two intervals take %.6g traces at f=%v g=%v; want what is left, %.6g", got, d.FixedRateFactor, d.ReservoirFactor, left)
			}
			if !math.IsNaN(tt.f) && !within(d.FixedRateFactor, tt.f, 1e-9) {
				t.Errorf("FixedRateFactor = %v, want %v", d.FixedRateFactor, tt.f)
			}
			if !within(d.ReservoirFactor, tt.g, 1e-9) {
				t.Errorf("ReservoirFactor = %v, want %v", d.ReservoirFactor, tt.g)
			}
		})
	}
}

// checkDecision checks what holds for every decision.
func checkDecision(t *testing.T, d Decision) {
	t.Helper()
	for name, v := range map[string]float64{"FixedRateFactor": d.FixedRateFactor, "ReservoirFactor": d.ReservoirFactor} {
		if !(v >= 0 && v <= 1) {
			t.Errorf("%s = %v, want in [0, 1]", name, v)
		}
	}
	for name, v := range map[string]float64{"Spent": d.Spent, "Forecast": d.Forecast, "ForecastUnenforced": d.ForecastUnenforced} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Errorf("%s = %v", name, v)
		}
	}
	if d.Forecast > d.ForecastUnenforced*(1+1e-12) {
		t.Errorf("Forecast %v > ForecastUnenforced %v", d.Forecast, d.ForecastUnenforced)
	}
}

func TestDecideProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pick := func(xs ...float64) float64 { return xs[rng.IntN(len(xs))] }
	num := func() float64 {
		if rng.IntN(8) == 0 {
			return pick(math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 1e300, math.MaxFloat64, 1e-300)
		}
		return math.Pow(10, rng.Float64()*14) * rng.Float64()
	}
	for i := range 3000 {
		b := &Budget{
			Name:                  "p",
			MonthlyAmountMicros:   Micros(pick(num(), 500, 1e-6, 1e12)),
			PricePerMillionMicros: Micros(pick(0, 5, num())),
			FreeTraces:            int64(pick(0, 1e6, 1e18)),
			Mode:                  Mode(rng.IntN(2)),
			FloorPerSecond:        pick(0, 0, 1, num()),
		}
		u := NewUsage(nov)
		hours := rng.IntN(len(u.Requests) + 1)
		scale := math.Pow(10, rng.Float64()*10)
		for h := range hours {
			u.Requests[h] = scale * rng.Float64()
			u.Sampled[h] = u.Requests[h] * rng.Float64() * 0.2
			if rng.IntN(50) == 0 {
				u.Requests[h], u.Sampled[h] = num(), num()
			}
		}
		var rs []RuleModel
		for k := range rng.IntN(4) {
			name := string(rune('a' + k))
			rs = append(rs, RuleModel{Name: name, FixedRate: pick(rng.Float64(), 0, 1, num()), Reservoir: pick(rng.Float64()*100, 0, num()),
				Labels: map[string]string{"k": string(rune('a' + rng.IntN(2)))}})
			u.Rules[name] = RuleUsage{Requests: rng.Int64N(1e12)}
			if rng.IntN(2) == 0 { // its own hours, or none kept
				series := make([]float64, len(u.Requests))
				for h := range hours {
					series[h] = u.Requests[h] * rng.Float64()
				}
				u.RuleRequests[name] = series
			}
		}
		if rng.IntN(2) == 0 {
			b.Priorities = []RulePriority{{RuleLabels: map[string]string{"k": "a"}, Priority: int32(rng.IntN(3) - 1)}}
		}
		if rng.IntN(4) == 0 {
			b.CoverageMinutes = int32(1 + rng.IntN(60))
		}
		now := nov.Add(time.Duration(hours)*time.Hour + time.Duration(rng.Int64N(int64(time.Hour))))
		interval := time.Duration(pick(0, -1, 10, 60, 3600)) * time.Second
		in := Input{Usage: u, Rules: rs, CoveragePairs: rng.IntN(100)}
		if rng.IntN(2) == 0 { // a step before, with its memory
			prev := Decide(b, Input{Usage: u, Rules: rs}, now.Add(-time.Duration(rng.Int64N(int64(2*time.Hour)))), interval)
			prev.Memory.RecentRate = pick(0, num(), math.NaN())
			prev.Memory.Requests = pick(0, num())
			in.Prev = &prev
		}
		d := Decide(b, in, now, interval)
		checkDecision(t, d)
		for _, p := range d.Rules {
			if !(p.FixedRateFactor >= 0 && p.FixedRateFactor <= 1 && p.ReservoirFactor >= 0 && p.ReservoirFactor <= 1) ||
				math.IsNaN(p.Forecast) || math.IsNaN(p.Requests) || math.IsInf(p.Forecast, 0) {
				t.Fatalf("case %d: rule plan %+v", i, p)
			}
		}
		if e := d.Explain; math.IsNaN(e.Level) || math.IsNaN(e.Trend) || math.IsNaN(e.CurrentRate) || math.IsNaN(e.Requests) || math.IsNaN(d.Memory.RecentRate) {
			t.Fatalf("case %d: explanation %+v, memory %+v", i, e, d.Memory)
		}
		if t.Failed() {
			t.Fatalf("case %d: budget %+v, %d hours, rules %+v: %+v", i, b, hours, rs, d)
		}
		// An enforcing budget without a floor plans never to go over its
		// cap unless it is already there.
		if capT := b.CapTraces(); b.Mode == Enforce && b.FloorPerSecond == 0 && b.PricePerMillionMicros > 0 && b.CoverageMinutes == 0 &&
			!math.IsInf(capT, 0) && !math.IsNaN(capT) && !d.Exhausted && d.Forecast > capT*(1+1e-9) {
			t.Fatalf("case %d: Forecast %v over the cap %v: %+v", i, d.Forecast, capT, d)
		}
	}
}
