package boost

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// t0 is the start of an interval, in the middle of a month.
var t0 = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)

// steady is a state that has seen intervals intervals of perInterval traces
// each, share of them anomalous (and a twentieth of those sampled), the
// last one ending at now.
func steady(o Options, now time.Time, perInterval, share float64, intervals int) State {
	o = o.WithDefaults()
	var st State
	b := o.Bucket(now)
	for k := b - int64(intervals); k < b; k++ {
		st.Add(k, Counts{Total: perInterval, Anomalies: perInterval * share, Sampled: perInterval * share / 20}, o.Decay())
	}
	return st
}

// with returns st with c counted in now's interval.
func with(st State, now time.Time, c Counts) State {
	o := Options{}.WithDefaults()
	st.Add(o.Bucket(now), c, o.Decay())
	return st
}

// withBoost returns st with b as its last boost.
func withBoost(st State, b Boost) State {
	st.Boost = b
	return st
}

func TestDecide(t *testing.T) {
	var o Options
	five := &Config{MaxRate: 0.5, Cooldown: 5 * time.Minute}
	calm := steady(o, t0, 1000, 0.01, 60) // 100 traces/s, 1 % anomalous, for 10 min
	// The share jumps to 20 % over a whole interval: 20 anomalous traces a
	// second. The mean capture that misses 30 at most 5 % of the time is
	// 40.464, over 55 s (a minute less half an interval of take-up).
	spike := with(calm, t0, Counts{Total: 1000, Anomalies: 200, Sampled: 2})
	now := t0.Add(9 * time.Second)
	const want20 = 0.0367855 // 40.464 / (20/s × 55 s)
	tests := []struct {
		name string
		st   State
		now  time.Time
		r    Rule
		room Room
		want Decision
	}{
		{
			name: "a rule without a boost", st: spike, now: now,
			r: Rule{FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonDisabled},
		},
		{
			name: "MaxRate not above the fixed rate in force", st: spike, now: now,
			r: Rule{Config: &Config{MaxRate: 0.05, Cooldown: time.Minute}, FixedRate: 0.05}, room: Unlimited(),
			want: Decision{Reason: ReasonDisabled},
		},
		{
			name: "calm: the share is the baseline's", st: with(calm, t0, Counts{Total: 1000, Anomalies: 10}), now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonNormal},
		},
		{
			name: "a jump to 20 % starts the smallest boost that captures the target", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonStarted, Start: true, Want: want20,
				Boost: Boost{Rate: want20, Start: now, Expiry: now.Add(time.Minute)},
				Extra: 100 * 60 * (want20 - 0.01)},
		},
		{
			name: "the reservoir's traces count toward the target", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01, Reservoir: 2}, room: Unlimited(),
			want: Decision{Reason: ReasonStarted, Start: true, Want: (want20 - 0.02) / 0.98,
				Boost: Boost{Rate: (want20 - 0.02) / 0.98, Start: now, Expiry: now.Add(time.Minute)},
				Extra: 98 * 60 * ((want20-0.02)/0.98 - 0.01)},
		},
		{
			name: "a reservoir that takes every trace needs no boost", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01, Reservoir: 100}, room: Unlimited(),
			want: Decision{Reason: ReasonEnough},
		},
		{
			name: "the fixed rate in force captures enough already", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.05}, room: Unlimited(),
			want: Decision{Reason: ReasonEnough, Want: want20},
		},
		{
			name: "a small service wants more than MaxRate: capped", now: now,
			st: with(steady(o, t0, 100, 0.01, 60), t0, Counts{Total: 100, Anomalies: 20}),
			r:  Rule{Config: &Config{MaxRate: 0.25, Cooldown: time.Minute}, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonCappedMaxRate, Start: true, Want: 10 * want20,
				Boost: Boost{Rate: 0.25, Start: now, Expiry: now.Add(time.Minute)},
				Extra: 10 * 60 * 0.24},
		},
		{
			name: "the budgets' room caps the boost", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Room{Traces: 60, Budget: "b"},
			want: Decision{Reason: ReasonCappedBudget, Start: true, Want: want20,
				Boost: Boost{Rate: 0.02, Start: now, Expiry: now.Add(time.Minute)}, Extra: 60},
		},
		{
			name: "a room too small for a tenth of the boost: none", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Room{Traces: 10, Budget: "b"},
			want: Decision{Reason: ReasonNoRoom, Want: want20},
		},
		{
			name: "an exhausted budget: no boost", st: spike, now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Room{Budget: "b", Exhausted: true},
			want: Decision{Reason: ReasonExhausted},
		},
		{
			name: "a boost in force that still needs its rate is handed out as decided", now: now,
			st: withBoost(spike, Boost{Rate: 0.03, Start: t0, Expiry: t0.Add(time.Minute)}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			// 40.464 to capture in 51 s, less half an interval: 20/s × 46 s
			// × 0.044.
			want: Decision{Reason: ReasonActive, Want: 0.0439827, Boost: Boost{Rate: 0.03, Start: t0, Expiry: t0.Add(time.Minute)}},
		},
		{
			name: "a boost in force sized at an onset is cut to what the rest of its life needs", now: now,
			st: withBoost(spike, Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonActive, Want: 0.0439827, Boost: Boost{Rate: 0.0439827, Start: t0, Expiry: t0.Add(time.Minute)}},
		},
		{
			name: "what it has captured counts", now: now,
			st: func() State {
				st := withBoost(spike, Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)})
				st.Captured = 20
				return st
			}(),
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonActive, Want: 20.46407 / 920, Boost: Boost{Rate: 20.46407 / 920, Start: t0, Expiry: t0.Add(time.Minute)}},
		},
		{
			name: "a boost that captured its target ends early", now: now,
			st: func() State {
				st := withBoost(spike, Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)})
				st.Captured = 41
				return st
			}(),
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonCaptured},
		},
		{
			name: "a boost whose rest the fixed rate captures ends early", now: now,
			st: func() State {
				st := withBoost(spike, Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)})
				st.Captured = 35
				return st
			}(),
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonCaptured, Want: 5.46407 / 920},
		},
		{
			name: "a boost in force without counts to size it again by keeps its rate", now: now,
			st: State{Boost: Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}},
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonActive, Boost: Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}},
		},
		{
			name: "a boost in force above a lowered MaxRate is cut to it", now: now,
			st: withBoost(with(steady(o, t0, 100, 0.01, 60), t0, Counts{Total: 100, Anomalies: 20}), Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}),
			r:  Rule{Config: &Config{MaxRate: 0.2, Cooldown: time.Minute}, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonActive, Want: 40.46407 / 92, Boost: Boost{Rate: 0.2, Start: t0, Expiry: t0.Add(time.Minute)}},
		},
		{
			name: "a boost in force is no longer handed out once a budget is exhausted", now: now,
			st: withBoost(spike, Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Room{Budget: "b", Exhausted: true},
			want: Decision{Reason: ReasonExhausted},
		},
		{
			name: "within the cooldown of the last boost", now: now,
			st: withBoost(spike, Boost{Rate: 0.3, Start: now.Add(-4 * time.Minute), Expiry: now.Add(-3 * time.Minute)}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonCooldown},
		},
		{
			name: "the cooldown over", now: now,
			st: withBoost(spike, Boost{Rate: 0.3, Start: now.Add(-5 * time.Minute), Expiry: now.Add(-4 * time.Minute)}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonStarted, Start: true, Want: want20,
				Boost: Boost{Rate: want20, Start: now, Expiry: now.Add(time.Minute)},
				Extra: 100 * 60 * (want20 - 0.01)},
		},
		{
			name: "a cooldown shorter than a boost's life waits for its end", now: now,
			st: withBoost(spike, Boost{Rate: 0.3, Start: now.Add(-59 * time.Second), Expiry: now.Add(time.Second)}),
			r:  Rule{Config: &Config{MaxRate: 0.5}, FixedRate: 0.01}, room: Room{Traces: 0},
			want: Decision{Reason: ReasonActive, Want: 40.46407 / 10, Boost: Boost{Rate: 0.3, Start: now.Add(-59 * time.Second), Expiry: now.Add(time.Second)}},
		},
		{
			name: "warming up: half a minute of counts", now: now,
			st: with(steady(o, t0, 1000, 0.01, 3), t0, Counts{Total: 1000, Anomalies: 200}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonWarmingUp},
		},
		{
			name: "no counts at all", now: now,
			r: Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonWarmingUp},
		},
		{
			name: "four anomalous traces are too few", now: now,
			st: with(steady(o, t0, 10, 0, 60), t0, Counts{Total: 10, Anomalies: 4}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonNormal},
		},
		{
			name: "from no anomalies at all, five are a rise", now: now,
			st: with(steady(o, t0, 1000, 0, 60), t0, Counts{Total: 1000, Anomalies: 5}),
			r:  Rule{Config: &Config{MaxRate: 1, Cooldown: time.Minute}, FixedRate: 0.01}, room: Unlimited(),
			// 5 in 1000 of the newest interval: 0.5 anomalous traces a
			// second, which 40.464 in 55 s would need a rate of 1.47 for.
			want: Decision{Reason: ReasonCappedMaxRate, Start: true, Want: 40.46407 / (0.5 * 55),
				Boost: Boost{Rate: 1, Start: now, Expiry: now.Add(time.Minute)}, Extra: 100 * 60 * 0.99},
		},
		{
			name: "10 % to 15 %: under twice the baseline", now: now,
			st: with(steady(o, t0, 1000, 0.1, 60), t0, Counts{Total: 1000, Anomalies: 150}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonNormal},
		},
		{
			name: "1 % to 3.5 % of few traces: not significant", now: now,
			st: with(steady(o, t0, 400, 0.01, 60), t0, Counts{Total: 400, Anomalies: 14}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			want: Decision{Reason: ReasonNormal},
		},
		{
			name: "a first report of the spike half way through the interval", now: t0.Add(5 * time.Second),
			st: with(calm, t0, Counts{Total: 500, Anomalies: 100}),
			r:  Rule{Config: five, FixedRate: 0.01}, room: Unlimited(),
			// The newest interval's share (20 %) of the fuller interval's
			// traffic (100/s).
			want: Decision{Reason: ReasonStarted, Start: true, Want: want20,
				Boost: Boost{Rate: want20, Start: t0.Add(5 * time.Second), Expiry: t0.Add(65 * time.Second)},
				Extra: 100 * 60 * (want20 - 0.01)},
		},
	}
	ignore := cmpopts.IgnoreFields(Decision{}, "Share", "Baseline")
	approx := cmpopts.EquateApprox(1e-5, 1e-9)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.st, tt.now, tt.r, tt.room, o)
			if diff := cmp.Diff(tt.want, got, ignore, approx); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideShares(t *testing.T) {
	st := with(steady(Options{}, t0, 1000, 0.01, 60), t0, Counts{Total: 1000, Anomalies: 200})
	d := Decide(st, t0.Add(time.Second), Rule{Config: &Config{MaxRate: 1, Cooldown: time.Minute}, FixedRate: 0.01}, Unlimited(), Options{})
	want := Decision{Share: 210.0 / 2000, Baseline: 0.01}
	if diff := cmp.Diff(want, d, cmpopts.IgnoreFields(Decision{}, "Boost", "Start", "Reason", "Want", "Extra"), cmpopts.EquateApprox(1e-9, 0)); diff != "" {
		t.Errorf("shares (-want +got):\n%s", diff)
	}
}

// TestCaptureMean checks the normal approximation against the Poisson
// distribution: at mean captureMean(k, 1.645), fewer than k captured
// traces have a probability near 5 % (within 2.5 points for k from 10 to
// 200, where the approximation is meant to be used).
func TestCaptureMean(t *testing.T) {
	for _, k := range []float64{10, 20, 30, 50, 100, 200} {
		mu := captureMean(k, DefaultConfidence)
		if p := poissonBelow(mu, int(k)); math.Abs(p-0.05) > 0.025 {
			t.Errorf("target %v: mean %.2f misses it with probability %.3f, want about 0.05", k, mu, p)
		}
	}
}

// poissonBelow is P(X < k) for X Poisson with mean mu.
func poissonBelow(mu float64, k int) float64 {
	var sum float64
	term := math.Exp(-mu)
	for i := range k {
		sum += term
		term *= mu / float64(i+1)
	}
	return sum
}

func TestOptionsDefaults(t *testing.T) {
	got := Options{Life: time.Hour, Target: math.NaN(), MinGain: 3}.WithDefaults()
	want := Options{
		Interval: DefaultInterval, HalfLife: DefaultHalfLife, WarmUp: DefaultWarmUp, Life: MaxLife,
		Target: DefaultTarget, Confidence: DefaultConfidence, Ratio: DefaultRatio,
		MinAnomalies: DefaultMinAnomalies, Significance: DefaultSignificance, MinGain: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
}

func TestBoostRateInForce(t *testing.T) {
	b := Boost{Rate: 0.3, Start: t0, Expiry: t0.Add(time.Minute)}
	tests := []struct {
		name  string
		fixed float64
		at    time.Time
		want  float64
	}{
		{"before", 0.05, t0.Add(-time.Second), 0.05},
		{"at the start", 0.05, t0, 0.3},
		{"in force", 0.05, t0.Add(59 * time.Second), 0.3},
		{"at the expiry", 0.05, t0.Add(time.Minute), 0.05},
		{"a fixed rate above the boost's", 0.5, t0.Add(time.Second), 0.5},
	}
	for _, tt := range tests {
		if got := b.RateInForce(tt.fixed, tt.at); got != tt.want {
			t.Errorf("%s: RateInForce = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := (Boost{}).RateInForce(0.05, t0); got != 0.05 {
		t.Errorf("no boost: RateInForce = %v, want 0.05", got)
	}
}

// BenchmarkDecide is the step every target of a boosted rule takes: a
// state at the peak of a jump, deciding the boost in force.
func BenchmarkDecide(b *testing.B) {
	st := with(steady(Options{}, t0, 1000, 0.01, 60), t0, Counts{Total: 1000, Anomalies: 200})
	st = st.Started(Boost{Rate: 0.2, Start: t0, Expiry: t0.Add(time.Minute)})
	r := Rule{Config: &Config{MaxRate: 0.5, Cooldown: 5 * time.Minute}, FixedRate: 0.01}
	now := t0.Add(5 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		_ = Decide(st, now, r, Unlimited(), Options{})
	}
}

func TestDecideAllocs(t *testing.T) {
	st := with(steady(Options{}, t0, 1000, 0.01, 60), t0, Counts{Total: 1000, Anomalies: 200})
	r := Rule{Config: &Config{MaxRate: 0.5, Cooldown: 5 * time.Minute}, FixedRate: 0.01}
	if n := testing.AllocsPerRun(100, func() { _ = Decide(st, t0.Add(5*time.Second), r, Unlimited(), Options{}) }); n != 0 {
		t.Errorf("Decide allocates %v times, want 0", n)
	}
}
