package boost

import (
	"math"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
)

// Room is what the budgets covering a rule leave a boost: the extra traces
// it may add over its life.
type Room struct {
	// Traces is how many traces a boost may add, over what the fixed rate
	// in force would sample; +Inf for no limit.
	Traces float64
	// Budget names the budget that set Traces; "" when none limits.
	Budget string
	// Exhausted says that budget is exhausted: no boost is started, and
	// one in force is no longer handed out.
	Exhausted bool
}

// Unlimited is the room of a rule no enforcing budget covers.
func Unlimited() Room { return Room{Traces: math.Inf(1)} }

// Min returns the tighter of r and o: an exhausted one, else the one with
// fewer traces.
func (r Room) Min(o Room) Room {
	switch {
	case r.Exhausted:
		return r
	case o.Exhausted:
		return o
	case o.traces() < r.traces():
		return o
	}
	return r
}

// traces is Traces as Decide reads it: NaN and negative are no room.
func (r Room) traces() float64 {
	if !(r.Traces > 0) {
		return 0
	}
	return r.Traces
}

// RoomOptions set how much a budget lends boosts. The zero value of a field
// takes its default.
type RoomOptions struct {
	// Lend is the share of a budget's planned spend over a rule's cooldown
	// window that one boost of the rule may borrow, beyond the slack of the
	// plan; the controller pays it back by lowering the factors for the rest
	// of the month. Default 0.1; negative: lend nothing.
	Lend float64
	// Horizon is the controller's short-term horizon (budget.Decide's: two
	// controller intervals): a boost may spend only what is left of the cap
	// after that much of the plan's spend. Default 2 minutes.
	Horizon time.Duration
}

// Defaults of RoomOptions.
const (
	DefaultLend    = 0.1
	DefaultHorizon = 2 * time.Minute
)

// BudgetRoom is the room budget b, with st the controller's last decision
// for it, leaves one boost of rule at now, rule's cooldown being cooldown
// (at least a boost's life, as Decide applies it).
// The room a rule has is the Min of BudgetRoom over the budgets covering it
// (for the service asking), Unlimited when none does.
//
// With cap C (traces), Spent and Forecast the decision's (the month so far,
// and the month-end forecast at the factors decided), the plan's pace
// p = (Forecast - Spent) / (seconds left in the month) and s the rule's
// share of the budget's requests this month:
//
//	room = s × min(max(0, Aim×C - Forecast) + Lend × p × cooldown,
//	               C - Spent - p × Horizon)
//
// The first term is the plan's slack (what the forecast leaves under the
// aim; about nothing while the budget enforces) and a loan of Lend of what
// the plan spends over the cooldown window, in which the rule boosts at
// most once; the second keeps the boost out of what the next intervals of
// the plan need of the cap. The rule's share divides the room between the
// rules in scope. So boosts add at most about Lend to a budget's spend rate,
// and the controller, which counts their traces like any others, lowers the
// factors to land the month where it planned.
//
// An alert-only budget, one without a cap, and one not decided for now's
// month yet (a new month starts unenforced, as catalog's Factors has it)
// leave Unlimited room; an exhausted one none.
func BudgetRoom(b *budget.Budget, st *budget.State, rule string, cooldown time.Duration, now time.Time, o RoomOptions) Room {
	if b == nil || b.Mode != budget.Enforce || st == nil || !st.MonthStart.Equal(budget.MonthStart(now)) {
		return Unlimited()
	}
	nb := *b
	if nb.PricePerMillionMicros == 0 {
		nb.PricePerMillionMicros = budget.DefaultPricePerMillionMicros
	}
	capTraces := nb.CapTraces()
	switch {
	case math.IsInf(capTraces, 1):
		return Unlimited()
	case !(capTraces > 0):
		capTraces = 0
	}
	d := st.Decision
	spent, forecast := cleanCount(d.Spent), cleanCount(d.Forecast)
	left := capTraces - spent
	if d.Exhausted || !(left > 0) {
		return Room{Budget: b.Name, Exhausted: true}
	}
	if o.Lend == 0 {
		o.Lend = DefaultLend
	}
	if o.Horizon <= 0 {
		o.Horizon = DefaultHorizon
	}
	lend := math.Max(o.Lend, 0)
	secsLeft := math.Max(budget.MonthStart(now).AddDate(0, 1, 0).Sub(now).Seconds(), 1)
	pace := math.Max(forecast-spent, 0) / secsLeft
	slack := math.Max(budget.Aim*capTraces-forecast, 0)
	window := max(cooldown, MaxLife).Seconds() // the cooldown as Decide applies it
	room := math.Min(slack+lend*pace*window, left-pace*o.Horizon.Seconds())
	share := 1.0
	if total := cleanCount(st.Requests); total > 0 {
		share = math.Min(cleanCount(float64(st.Rules[rule].Requests))/total, 1)
	}
	return Room{Traces: math.Max(share*room, 0), Budget: b.Name}
}
