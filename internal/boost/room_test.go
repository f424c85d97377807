package boost

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/budget"
)

// capTraces is the cap of b500: $500 at the default $5 a million.
const capTraces = 100e6

var (
	nov  = budget.MonthStart(t0)
	b500 = &budget.Budget{Name: "payments", MonthlyAmountMicros: 500 * budget.MicrosPerUnit}
	// models are the rules in the budget's scope: checkout (1 %, no
	// reservoir) and the Default rule (5 %, 1 a second).
	models = []budget.RuleModel{{Name: "checkout", FixedRate: 0.01}, {Name: "Default", FixedRate: 0.05, Reservoir: 1}}
)

// month is a budget's month up to t0 (9.5 days): perDay requests a day in
// scope, a tenth of them checkout's, and spent traces sampled.
func month(perDay, spent float64) budget.Usage {
	u := budget.NewUsage(nov)
	hours := int(t0.Sub(nov) / time.Hour)
	for i := range hours {
		u.Requests[i] = perDay / 24
		u.Sampled[i] = spent / float64(hours)
	}
	days := float64(hours) / 24
	u.Rules["checkout"] = budget.RuleUsage{Requests: int64(perDay * days / 10), Sampled: int64(spent / 10)}
	u.Rules["Default"] = budget.RuleUsage{Requests: int64(perDay * days * 9 / 10), Sampled: int64(spent * 9 / 10)}
	return u
}

// decided is the controller's state for b after deciding u at now.
func decided(b *budget.Budget, u budget.Usage, now time.Time) *budget.State {
	req, _ := u.Totals()
	return &budget.State{Budget: b.Name, MonthStart: u.MonthStart, Computed: now, Decision: budget.Decide(b, budget.Input{Usage: u, Rules: models}, now, time.Minute), Requests: req, Rules: u.Rules}
}

// secondsLeft is the month's seconds left at t0: 20.5 days.
var secondsLeft = budget.MonthStart(t0).AddDate(0, 1, 0).Sub(t0).Seconds()

func TestBudgetRoom(t *testing.T) {
	cooldown := 5 * time.Minute
	calm := decided(b500, month(1e6, 1e6), t0)                 // far under the cap
	enforcing := decided(b500, month(250e6, 30e6), t0)         // forecast over: f < 1
	atZero := decided(b500, month(250e6, 0.995*capTraces), t0) // past the aim: f = g = 0
	exhausted := decided(b500, month(250e6, capTraces), t0)
	if f := enforcing.Decision.FixedRateFactor; !(f > 0 && f < 1) || enforcing.Decision.Exhausted {
		t.Fatalf("test setup: the enforcing month decides factor %v, exhausted %v", f, enforcing.Decision.Exhausted)
	}
	pace := func(st *budget.State) float64 { return (st.Decision.Forecast - st.Decision.Spent) / secondsLeft }
	tests := []struct {
		name string
		b    *budget.Budget
		st   *budget.State
		rule string
		now  time.Time
		o    RoomOptions
		want Room
	}{
		{
			name: "far under the cap: the plan's slack, a tenth of it checkout's", b: b500, st: calm, rule: "checkout", now: t0,
			want: Room{Budget: "payments", Traces: 0.1 * (budget.Aim*capTraces - calm.Decision.Forecast + 0.1*pace(calm)*300)},
		},
		{
			name: "enforcing: no slack, a loan of a tenth of the plan's spend over the cooldown", b: b500, st: enforcing, rule: "checkout", now: t0,
			want: Room{Budget: "payments", Traces: 0.1 * 0.1 * pace(enforcing) * 300},
		},
		{
			name: "enforcing, lending nothing: no room", b: b500, st: enforcing, rule: "checkout", now: t0, o: RoomOptions{Lend: -1},
			want: Room{Budget: "payments"},
		},
		{
			name: "the Default rule's share", b: b500, st: enforcing, rule: "Default", now: t0,
			want: Room{Budget: "payments", Traces: 0.9 * 0.1 * pace(enforcing) * 300},
		},
		{
			name: "a rule with no requests this month: no share", b: b500, st: enforcing, rule: "new", now: t0,
			want: Room{Budget: "payments"},
		},
		{
			name: "factors at zero: no pace, no slack, no room", b: b500, st: atZero, rule: "checkout", now: t0,
			want: Room{Budget: "payments"},
		},
		{
			name: "exhausted", b: b500, st: exhausted, rule: "checkout", now: t0,
			want: Room{Budget: "payments", Exhausted: true},
		},
		{
			name: "spent to the cap, whatever the decision says", b: b500, rule: "checkout", now: t0,
			st:   &budget.State{MonthStart: nov, Decision: budget.Decision{Spent: capTraces, Forecast: capTraces, FixedRateFactor: 1, ReservoirFactor: 1}},
			want: Room{Budget: "payments", Exhausted: true},
		},
		{
			name: "what is left of the cap after the next intervals bounds the room", b: b500, rule: "checkout", now: t0, o: RoomOptions{Lend: 10},
			st: &budget.State{MonthStart: nov, Decision: budget.Decision{Spent: capTraces - 1000, Forecast: capTraces - 1000 + secondsLeft, FixedRateFactor: 1, ReservoirFactor: 1}},
			// A plan of one trace a second: 1000 left, less 120 for the
			// next two minutes (a loan of ten times the plan's 300 over
			// the cooldown would be more).
			want: Room{Budget: "payments", Traces: 880},
		},
		{
			name: "alert only: no limit", b: &budget.Budget{Name: "watch", MonthlyAmountMicros: 500 * budget.MicrosPerUnit, Mode: budget.AlertOnly},
			st: exhausted, rule: "checkout", now: t0,
			want: Unlimited(),
		},
		{
			name: "no decision yet", b: b500, rule: "checkout", now: t0,
			want: Unlimited(),
		},
		{
			name: "last month's decision: the month starts unenforced", b: b500, st: exhausted, rule: "checkout", now: nov.AddDate(0, 1, 0),
			want: Unlimited(),
		},
		{
			name: "no budget", rule: "checkout", now: t0,
			want: Unlimited(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := BudgetRoom(tt.b, tt.st, tt.rule, cooldown, tt.now, tt.o)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(1e-9, 1e-6)); diff != "" {
				t.Errorf("BudgetRoom (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoomMin(t *testing.T) {
	a, b := Room{Traces: 10, Budget: "a"}, Room{Traces: 5, Budget: "b"}
	x := Room{Budget: "x", Exhausted: true}
	tests := []struct {
		name     string
		r, o     Room
		wantName string
	}{
		{"the smaller", a, b, "b"},
		{"the smaller, either way", b, a, "b"},
		{"unlimited and a limit", Unlimited(), a, "a"},
		{"exhausted wins over more", a, x, "x"},
		{"exhausted wins over less", x, b, "x"},
		{"NaN is no room", a, Room{Traces: math.NaN(), Budget: "nan"}, "nan"},
	}
	for _, tt := range tests {
		if got := tt.r.Min(tt.o); got.Budget != tt.wantName {
			t.Errorf("%s: Min = %+v, want budget %q", tt.name, got, tt.wantName)
		}
	}
}

// TestFleetExhaustedBudget: the jump under an exhausted budget starts no
// boost, and no client samples above its fixed rate.
func TestFleetExhaustedBudget(t *testing.T) {
	onset := t0.Add(15 * time.Minute)
	st := decided(b500, month(250e6, capTraces), t0)
	f := newFleet(3, 20, 100, checkout)
	f.share = jump(onset)
	f.room = func(now time.Time) Room {
		return BudgetRoom(b500, st, "checkout", checkout.Config.Cooldown, now, RoomOptions{})
	}
	f.run(t, onset.Add(10*time.Minute))
	if len(f.boosts) != 0 || f.extra != 0 {
		t.Errorf("an exhausted budget boosted: %+v, %v extra traces", f.boosts, f.extra)
	}
	if f.decisions[ReasonExhausted] == 0 {
		t.Errorf("decisions %v, want %q", f.decisions, ReasonExhausted)
	}
}

// TestFleetEnforcingBudget: the jump under an enforcing budget starts a
// boost capped to the room the plan leaves (the unconstrained one would
// spend more), whose traces the clients report like any others; the
// controller's next decision counts them in the month's spend and lowers the
// factors for the rest of the month, landing it where it planned.
func TestFleetEnforcingBudget(t *testing.T) {
	onset := t0.Add(15 * time.Minute)
	u := month(250e6, 30e6)
	st := decided(b500, u, t0)
	roomAt := func(now time.Time) Room {
		return BudgetRoom(b500, st, "checkout", checkout.Config.Cooldown, now, RoomOptions{})
	}

	// The rule's fixed rate in force is the budget's factor of its own.
	r := checkout
	r.FixedRate *= st.Decision.FixedRateFactor
	free := newFleet(4, 20, 100, r)
	free.share = jump(onset)
	free.run(t, onset.Add(2*time.Minute))
	f := newFleet(4, 20, 100, r)
	f.share = jump(onset)
	f.room = roomAt
	f.run(t, onset.Add(2*time.Minute))

	if len(f.boosts) != 1 || len(free.boosts) != 1 {
		t.Fatalf("boosts: %d under the budget, %d without; want 1 each", len(f.boosts), len(free.boosts))
	}
	room := roomAt(f.boosts[0].Start)
	if got, unconstrained := f.boosts[0].Rate, free.boosts[0].Rate; !(got < unconstrained && got > r.FixedRate) {
		t.Errorf("boost at %v under the enforcing budget, want between the fixed rate %v and %v, the boost without it", got, r.FixedRate, unconstrained)
	}
	if f.decisions[ReasonCappedBudget] != 1 {
		t.Errorf("decisions %v, want one %q", f.decisions, ReasonCappedBudget)
	}
	// What the boost added, drawn at random, within chance of the room
	// it was priced at (4 standard deviations).
	if limit := room.Traces + 4*math.Sqrt(room.Traces); f.extra > limit {
		t.Errorf("the boost sampled %.0f traces above the fixed rate, more than its room %.0f allows (%.0f)", f.extra, room.Traces, limit)
	}
	if f.extra == 0 {
		t.Errorf("the boost sampled nothing above the fixed rate")
	}

	// The reports carry every trace sampled, boosted or not, into the
	// month's usage (the report path's bound admits them: RateInForce).
	report := func(sampled float64) budget.Decision {
		v := month(250e6, 30e6)
		h := int(onset.Sub(nov) / time.Hour)
		v.Sampled[h] += sampled
		return budget.Decide(b500, budget.Input{Usage: v, Rules: models}, onset.Add(2*time.Minute), time.Minute)
	}
	with, without := report(f.sampled), report(f.sampled-f.extra)
	if got := with.Spent - without.Spent; math.Abs(got-f.extra) > 1e-6 {
		t.Errorf("the boost's traces added %v to the spend, want %v", got, f.extra)
	}
	if !(with.FixedRateFactor < without.FixedRateFactor) {
		t.Errorf("factor %v with the boost's traces, %v without: want lower", with.FixedRateFactor, without.FixedRateFactor)
	}
	if with.Forecast > budget.Aim*capTraces*(1+1e-9) {
		t.Errorf("forecast %v after the boost, over the aim %v", with.Forecast, budget.Aim*capTraces)
	}
	t.Logf("room %.0f, boost %+v (unconstrained %.4f), extra %.0f, factor %.6f -> %.6f",
		room.Traces, f.boosts[0], free.boosts[0].Rate, f.extra, without.FixedRateFactor, with.FixedRateFactor)
}
