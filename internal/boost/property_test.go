package boost

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var reasons = []Reason{
	ReasonActive, ReasonCaptured, ReasonStarted, ReasonCappedMaxRate, ReasonCappedBudget,
	ReasonDisabled, ReasonCooldown, ReasonWarmingUp, ReasonNormal, ReasonEnough, ReasonExhausted, ReasonNoRoom,
}

// oddFloat is a number of the kind inputs may hold: ordinary ones mostly,
// and zero, negatives, NaN, infinities and huge ones.
func oddFloat(rng *rand.Rand, scale float64) float64 {
	switch rng.IntN(12) {
	case 0:
		return 0
	case 1:
		return -rng.Float64() * scale
	case 2:
		return math.NaN()
	case 3:
		return math.Inf(1)
	case 4:
		return 1e300
	}
	return rng.Float64() * scale
}

func randomRule(rng *rand.Rand) Rule {
	r := Rule{FixedRate: rng.Float64() * 0.2, Reservoir: rng.Float64() * 20}
	if rng.IntN(20) == 0 {
		r.FixedRate, r.Reservoir = oddFloat(rng, 1), oddFloat(rng, 100)
	}
	if rng.IntN(10) > 0 {
		r.Config = &Config{MaxRate: rng.Float64(), Cooldown: time.Duration(rng.IntN(11)) * time.Minute}
		if rng.IntN(20) == 0 {
			r.Config.MaxRate = oddFloat(rng, 2)
		}
	}
	return r
}

func randomRoom(rng *rand.Rand) Room {
	switch rng.IntN(6) {
	case 0:
		return Unlimited()
	case 1:
		return Room{Budget: "x", Exhausted: true}
	case 2:
		return Room{Budget: "x", Traces: oddFloat(rng, 1e4)}
	}
	return Room{Budget: "x", Traces: rng.Float64() * 1000}
}

// randomState is a state after a random history ending near now: calm
// intervals, bursts of anomalies, gaps, and sometimes a boost.
func randomState(rng *rand.Rand, now time.Time, o Options) State {
	o = o.WithDefaults()
	var st State
	b := o.Bucket(now)
	perInterval := math.Pow(10, 1+3*rng.Float64())
	base := rng.Float64() * 0.05
	for k := b - int64(rng.IntN(200)); k <= b; k++ {
		if rng.IntN(10) == 0 {
			continue // a gap
		}
		share := base
		if rng.IntN(8) == 0 {
			share = rng.Float64()
		}
		total := perInterval * (0.5 + rng.Float64())
		c := Counts{Total: total, Anomalies: total * share}
		c.Sampled = c.Anomalies * rng.Float64()
		if rng.IntN(50) == 0 {
			c = Counts{Total: oddFloat(rng, 1e6), Anomalies: oddFloat(rng, 1e6), Sampled: oddFloat(rng, 1e6)}
		}
		st.Add(k, c, o.Decay())
	}
	if rng.IntN(3) == 0 {
		start := now.Add(-time.Duration(rng.Int64N(int64(15 * time.Minute))))
		st = st.Started(Boost{Rate: rng.Float64(), Start: start, Expiry: start.Add(time.Duration(rng.Int64N(int64(MaxLife))) + time.Millisecond)})
		st.Captured = rng.Float64() * 60
	}
	return st
}

// TestDecideProperties: whatever the state, rule, room and options, a
// boost handed out is never above MaxRate nor below the fixed rate, in
// force now, at most a minute long; a new one costs no more than the room;
// an exhausted budget gets none; and nothing is NaN.
func TestDecideProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for i := range 10_000 {
		now := t0.Add(time.Duration(rng.Int64N(int64(time.Hour))))
		var o Options
		if rng.IntN(4) == 0 {
			o = Options{Interval: time.Duration(1+rng.IntN(30)) * time.Second, Target: oddFloat(rng, 100), Ratio: oddFloat(rng, 4), Life: time.Duration(rng.Int64N(int64(2 * time.Minute)))}
		}
		st, r, room := randomState(rng, now, o), randomRule(rng), randomRoom(rng)
		d := Decide(st, now, r, room, o)

		for _, x := range []float64{d.Boost.Rate, d.Share, d.Baseline, d.Want, d.Extra} {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("case %d: a field is %v: %+v", i, x, d)
			}
		}
		if !slices.Contains(reasons, d.Reason) {
			t.Fatalf("case %d: reason %q", i, d.Reason)
		}
		if d.Boost.Rate == 0 {
			if d.Start || d.Extra != 0 {
				t.Fatalf("case %d: no boost, yet %+v", i, d)
			}
			continue
		}
		fixed := clamp01(r.FixedRate)
		if r.Config == nil || d.Boost.Rate > clamp01(r.Config.MaxRate) || !(d.Boost.Rate > fixed) {
			t.Fatalf("case %d: boost at %v, fixed rate %v, config %+v", i, d.Boost.Rate, fixed, r.Config)
		}
		if room.Exhausted {
			t.Fatalf("case %d: a boost under an exhausted budget: %+v", i, d)
		}
		if !d.Boost.InForce(now) || d.Boost.Expiry.Sub(d.Boost.Start) > MaxLife {
			t.Fatalf("case %d: boost %+v at %v: not in force, or longer than %v", i, d.Boost, now, MaxLife)
		}
		if d.Start {
			if d.Reason == ReasonActive || d.Boost.Start != now {
				t.Fatalf("case %d: a new boost %+v, reason %q", i, d.Boost, d.Reason)
			}
			if d.Extra > room.traces()*(1+1e-12) {
				t.Fatalf("case %d: extra %v over the room %v", i, d.Extra, room.Traces)
			}
		} else if d.Reason != ReasonActive || d.Boost.Rate > st.Boost.Rate {
			t.Fatalf("case %d: boost %+v, reason %q, in force %+v: re-sized up", i, d.Boost, d.Reason, st.Boost)
		}
	}
}

// TestCooldownProperty runs random rules through random histories of
// anomalies, with two replicas deciding from the same store, and checks
// that boosts start at least the cooldown (and a boost's life) apart, that
// no boost is handed out above MaxRate or after its expiry, and that one
// replica's start is the other's boost in force.
func TestCooldownProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	ctx := context.Background()
	for run := range 60 {
		o := Options{}.WithDefaults()
		r := Rule{Config: &Config{MaxRate: 0.2 + 0.8*rng.Float64(), Cooldown: time.Duration(rng.IntN(8)) * time.Minute}, FixedRate: 0.01 * rng.Float64()}
		m := NewMemory()
		clients := 1 + rng.IntN(20)
		perReport := math.Pow(10, 1+2*rng.Float64())
		var starts []Boost
		share := 0.01
		now := t0
		for step := range 4000 {
			now = now.Add(time.Duration(1+rng.IntN(1000)) * time.Millisecond * 10 / time.Duration(clients))
			if step%50 == 0 {
				share = []float64{0.001, 0.01, 0.3, 0.9}[rng.IntN(4)]
			}
			total := math.Round(perReport * rng.Float64())
			c := Counts{Total: total, Anomalies: math.Round(total * share * rng.Float64() * 2)}
			states, err := m.RecordBoostCounts(ctx, now, o, []Add{{Rule: "r", Counts: c}})
			if err != nil {
				t.Fatal(err)
			}
			// Two replicas decide from the same state; both try to start.
			for range 2 {
				d := Decide(states[0], now, r, randomRoom(rng), o)
				if d.Boost.Rate > r.Config.MaxRate || (d.Boost.Rate > 0 && !d.Boost.InForce(now)) {
					t.Fatalf("run %d: handed out %+v at %v, MaxRate %v", run, d.Boost, now, r.Config.MaxRate)
				}
				if !d.Start {
					continue
				}
				b, started, err := m.StartBoost(ctx, "r", states[0].Boost.Start, d.Boost)
				if err != nil {
					t.Fatal(err)
				}
				if started {
					starts = append(starts, b)
				}
			}
		}
		for i := 1; i < len(starts); i++ {
			if gap := starts[i].Start.Sub(starts[i-1].Start); gap < max(r.Config.Cooldown, MaxLife) {
				t.Fatalf("run %d: boosts %d and %d start %v apart, cooldown %v: %+v", run, i-1, i, gap, r.Config.Cooldown, starts)
			}
		}
	}
}
