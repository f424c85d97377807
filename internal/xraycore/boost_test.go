package xraycore

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/xray"
)

// xrayClient is an X-Ray SDK instance as the fleet test runs it: it reports
// its requests, what it sampled at the rate in force (the target's boost
// until its TTL, else the fixed rate) and its anomaly counts every
// interval, and takes up the answer's target.
type xrayClient struct {
	id        string
	fixed     float64
	boost     *xray.Boost
	cum, sCum float64 // fractional anomalies and sampled traces carried over
}

// fleetRun is what a boost fleet saw.
type fleetRun struct {
	boosts  map[time.Time]boostSeen // by expiry: one per boost
	clamped float64                 // sampled traces cut as implausible
}

type boostSeen struct {
	first, last time.Time // first and last answer that carried it
	maxRate     float64
}

// runFleet runs clients X-Ray clients on two replicas sharing one store, each
// with perSecond requests of rule "checkout" a second and the anomalous
// share share(t) of them, reporting every 10 s for d.
func runFleet(t *testing.T, e *env, reps []*replica, clients int, perSecond float64, share func(time.Duration) float64, d time.Duration) fleetRun {
	t.Helper()
	ctx := context.Background()
	cs := make([]*xrayClient, clients)
	for i := range cs {
		cs[i] = &xrayClient{id: clientID(i), fixed: 0.005}
	}
	run := fleetRun{boosts: map[time.Time]boostSeen{}}
	const interval = 10 * time.Second
	start := e.clk.Now()
	for elapsed := time.Duration(0); elapsed < d; elapsed += interval {
		for i, c := range cs {
			// Clients report spread over the interval.
			e.clk.Add(interval / time.Duration(clients))
			now := e.clk.Now()
			requests := perSecond * interval.Seconds()
			// The share of the last interval at the boost's rate.
			rate := c.fixed
			if b := c.boost; b != nil {
				in := math.Min(math.Max(b.Expiry.Sub(now.Add(-interval)).Seconds()/interval.Seconds(), 0), 1)
				rate = in*b.Rate + (1-in)*c.fixed
			}
			c.cum += requests * share(now.Sub(start))
			anomalies := math.Floor(c.cum)
			c.cum -= anomalies
			c.sCum += requests * rate
			sampled := math.Floor(c.sCum)
			c.sCum -= sampled
			got, err := reps[i%len(reps)].core.Report(ctx, xray.Report{ClientID: c.id,
				Statistics: []xray.Statistics{{Rule: "checkout", Requests: int64(requests), Sampled: int64(sampled), Time: now}},
				Boosts:     []xray.BoostStatistics{{Rule: "checkout", Service: "shop", Total: int64(requests), Anomalies: int64(anomalies), SampledAnomalies: int64(math.Round(anomalies * rate))}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Targets) != 1 || len(got.Rejected)+len(got.BoostRejected) > 0 {
				t.Fatalf("answer %+v", got)
			}
			tg := got.Targets[0]
			c.fixed, c.boost = tg.FixedRate, tg.Boost
			if b := tg.Boost; b != nil {
				s, ok := run.boosts[b.Expiry]
				if !ok {
					s.first = now
				}
				s.last, s.maxRate = now, math.Max(s.maxRate, b.Rate)
				run.boosts[b.Expiry] = s
			}
		}
	}
	for _, r := range reps {
		run.clamped += promtest.Sum(t, r.reg, "controlplane_report_traces_clamped_total")
	}
	return run
}

func boostRule() xray.Rule {
	r := rule("checkout", 0, 0.005)
	r.Boost = &xray.RateBoost{MaxRate: 0.25, Cooldown: 5 * time.Minute}
	return r
}

// rise is a calm 0.5 % anomalous share that jumps to 5 % after calm.
func rise(calm time.Duration) func(time.Duration) float64 {
	return func(t time.Duration) float64 {
		if t < calm {
			return 0.005
		}
		return 0.05
	}
}

// TestFleetBoost: X-Ray clients of one rule on two replicas, a calm ten
// minutes, then the anomalous share jumps tenfold for four minutes: one
// boost starts, every replica hands the same one out, above the fixed rate
// and at most MaxRate, it ends within a minute of its start, none starts
// again within the cooldown, and the boost's traces count in full (none cut
// as over the bound a client may claim).
func TestFleetBoost(t *testing.T) {
	e := newEnv(t)
	e.create(t, boostRule())
	reps := []*replica{e.replica, newReplica(t, e.st, e.clk, 0)}
	run := runFleet(t, e, reps, 4, 50, rise(10*time.Minute), 14*time.Minute)
	t.Logf("boosts %+v, clamped %v", run.boosts, run.clamped)
	if len(run.boosts) != 1 {
		t.Fatalf("%d boosts, want 1: %+v", len(run.boosts), run.boosts)
	}
	for expiry, b := range run.boosts {
		if !(b.maxRate > 0.005 && b.maxRate <= 0.25) {
			t.Errorf("boost rate %v, want in (0.005, 0.25]", b.maxRate)
		}
		if b.first.Before(e.clk.Now().Add(-4*time.Minute)) || expiry.Sub(b.first) > time.Minute || b.last.After(expiry) {
			t.Errorf("boost seen from %v to %v, expiring %v: want it after the rise, and at most a minute", b.first, b.last, expiry)
		}
	}
	if run.clamped != 0 {
		t.Errorf("%v sampled traces cut as implausible: the boost's traces must count", run.clamped)
	}
	var started float64
	for _, r := range reps {
		started += promtest.Sum(t, r.reg, "controlplane_boosts_started_total")
	}
	if started != 1 {
		t.Errorf("replicas started %v boosts, want 1", started)
	}
}

// TestFleetCalm: the same fleet without the jump boosts never.
func TestFleetCalm(t *testing.T) {
	e := newEnv(t)
	e.create(t, boostRule())
	run := runFleet(t, e, []*replica{e.replica}, 4, 50, rise(time.Hour), 14*time.Minute)
	if len(run.boosts) != 0 {
		t.Fatalf("boosts in a calm fleet: %+v", run.boosts)
	}
}

// TestFleetExhaustedBudget: the same jump under an exhausted budget
// covering the rule starts no boost.
func TestFleetExhaustedBudget(t *testing.T) {
	e := newEnv(t)
	e.create(t, boostRule())
	ctx := context.Background()
	bg, err := e.st.CreateBudget(ctx, budget.Budget{Name: "shop", Scope: budget.Scope{Services: []string{"shop"}}, Mode: budget.Enforce,
		MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now()
	if err := e.st.PutStates(ctx, []budget.State{{Budget: bg.Name, BudgetUID: bg.UID, MonthStart: budget.MonthStart(now), Computed: now,
		Decision: budget.Decision{FixedRateFactor: 1, ReservoirFactor: 1, Exhausted: true, Spent: 2e6, Forecast: 2e6}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	run := runFleet(t, e, []*replica{e.replica}, 4, 50, rise(10*time.Minute), 14*time.Minute)
	if len(run.boosts) != 0 {
		t.Fatalf("boosts under an exhausted budget: %+v", run.boosts)
	}
}
