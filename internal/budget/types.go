package budget

import (
	"cmp"
	"strconv"
	"time"
)

// Usage is a budget's month so far, as the reports of every replica added it
// up: per hour of the month (index 0 is the first hour, UTC), the requests and
// sampled traces in scope, totals per rule, and each rule's requests per hour.
type Usage struct {
	MonthStart time.Time
	Requests   []float64 // len HoursIn(MonthStart)
	Sampled    []float64
	Rules      map[string]RuleUsage
	// RuleRequests are each rule's requests per hour of the month (len
	// HoursIn(MonthStart)), for its own traffic profile. A rule with
	// totals in Rules but no hours here (usage recorded before they were
	// kept) is taken to follow the budget's hours in proportion.
	RuleRequests map[string][]float64
	// RuleSampled and Services are kept only in the fleet's usage record
	// (store.FleetUsage): each rule's sampled traces per hour, and each
	// rule's month per service (rule → service → counts).
	RuleSampled map[string][]float64
	Services    map[string]map[string]RuleUsage
}

// RuleUsage is one rule's part of a budget's month.
type RuleUsage struct {
	Requests int64
	Sampled  int64
}

// NewUsage returns an empty month.
func NewUsage(monthStart time.Time) Usage {
	n := HoursIn(monthStart)
	return Usage{
		MonthStart: monthStart, Requests: make([]float64, n), Sampled: make([]float64, n),
		Rules: map[string]RuleUsage{}, RuleRequests: map[string][]float64{},
	}
}

// Totals returns the month's requests and sampled traces.
func (u *Usage) Totals() (requests, sampled float64) {
	for i := range u.Sampled {
		requests += u.Requests[i]
		sampled += u.Sampled[i]
	}
	return requests, sampled
}

// RuleModel is what the plan needs to know of a rule in scope: how many
// traces it takes per request before and after its reservoir, and the labels
// that give it its priority within the budget.
type RuleModel struct {
	Name      string
	FixedRate float64
	Reservoir float64 // traces per second that the budget's scope gets
	Labels    map[string]string
}

// Decision is the controller's answer for one budget at one moment.
type Decision struct {
	// Spent and Forecast are traces this month, so far and by month end
	// (at the factors decided here, the coverage reserve included).
	Spent    float64
	Forecast float64
	// ForecastUnenforced is the month-end forecast at factor 1, which the
	// forecast alerts compare with the cap.
	ForecastUnenforced float64
	// FixedRateFactor and ReservoirFactor are the lowest factors of any
	// rule in scope (Rules has each rule's), in [0, 1], 1 when not
	// enforcing; rules not in Rules (new since the decision) get these.
	FixedRateFactor float64
	ReservoirFactor float64
	// Exhausted: the cap is reached; only the floor is traced.
	Exhausted bool
	// Rules is the plan of each rule in scope.
	Rules []RulePlan
	// Explain says how the month-end forecast was made.
	Explain Explain
	// CoverageReserve is the traces the plan keeps for coverage (one trace
	// per service and rule every CoverageMinutes) to month end.
	CoverageReserve float64
	// LastHour is the traces sampled over the last 60 minutes (the
	// previous hour taken as even), for burn-rate alerts.
	LastHour float64
	// Memory is what the controller carries to its next step.
	Memory Memory
}

// RulePlan is one rule's part of a decision.
type RulePlan struct {
	Name string
	// Priority is the rule's priority within the budget: lower priorities
	// are cut first.
	Priority int32
	// FixedRateFactor and ReservoirFactor scale the rule's fixed rate and
	// reservoir, in [0, 1].
	FixedRateFactor float64
	ReservoirFactor float64
	// Reservoir is the traces per second of the rule's reservoir that the
	// scope gets, as planned.
	Reservoir float64
	// Requests is the requests forecast for the rest of the month; Forecast
	// and ForecastUnenforced the traces, at the factors decided and at 1.
	Requests           float64
	Forecast           float64
	ForecastUnenforced float64
}

// Plan returns the plan of the rule called name.
func (d *Decision) Plan(name string) (RulePlan, bool) {
	for _, p := range d.Rules {
		if p.Name == name {
			return p, true
		}
	}
	return RulePlan{}, false
}

// Enforcing reports whether the plan lowers any rate.
func (d *Decision) Enforcing() bool {
	return d.Exhausted || d.FixedRateFactor < 1 || d.ReservoirFactor < 1
}

// Explain is how the month-end forecast was made, for people.
type Explain struct {
	// Method is MethodNone, MethodMeanRate or MethodProfile.
	Method string
	// Profile is the requests expected in each hour of the day (index =
	// UTC hour of day) at the current level, before any trend; nil without
	// traffic.
	Profile []float64
	// Level is the recent traffic over the profile's medians (1: as usual);
	// 1 with MethodMeanRate.
	Level float64
	// Trend is the growth per day the forecast projects (0.037: +3.7 % a
	// day, about 3× in 30 days; negative: shrinking); 0 when none is seen.
	Trend float64
	// CurrentRate is the request rate seen over the last minutes (per
	// second), and ExpectedRate the rate the forecast expected now; when
	// CurrentRate is the higher, the excess weighs in for as long again as
	// it has lasted (10 minutes to a day).
	CurrentRate  float64
	ExpectedRate float64
	// Requests is the requests forecast for the rest of the month.
	Requests float64
}

// Memory is what the controller remembers between its steps of a month. It
// lives in the stored State, so any replica takes over where another left.
type Memory struct {
	// Observed is when the step read Requests, the requests in scope this
	// month.
	Observed time.Time
	Requests float64
	// FirstSeen is the last step that saw no traffic this month, before
	// one that did: traffic started after it. Zero when unknown.
	FirstSeen time.Time
	// RecentRate is the request rate over the last minutes (per second):
	// since FirstSeen for the first recentWindow, then smoothed with that
	// time constant. AboveSince is since when it has been above the
	// forecast's rate for now; zero when it is not.
	RecentRate float64
	AboveSince time.Time
	// Episode counts the enforcement episodes of the month; EpisodeOpen
	// says the last one has not ended, and LastEnforced is the last step
	// that enforced. An episode ends when no rate has been lowered for
	// EpisodeGap.
	Episode      int
	EpisodeOpen  bool
	LastEnforced time.Time
	// Backfilled says the month before the budget was created has been
	// added to its usage from the fleet's.
	Backfilled bool
}

// AlertKind is what an alert is about.
type AlertKind int

const (
	AlertSpend AlertKind = iota + 1
	AlertForecast
	AlertEnforcementStarted
	AlertExhausted
	AlertEnforcementEnded
	AlertBurnRate
)

// AlertKinds lists every kind, in order.
var AlertKinds = []AlertKind{AlertSpend, AlertForecast, AlertEnforcementStarted, AlertExhausted, AlertEnforcementEnded, AlertBurnRate}

func (k AlertKind) String() string {
	switch k {
	case AlertSpend:
		return "spend_threshold"
	case AlertForecast:
		return "forecast_over"
	case AlertEnforcementStarted:
		return "enforcement_started"
	case AlertExhausted:
		return "exhausted"
	case AlertEnforcementEnded:
		return "enforcement_ended"
	case AlertBurnRate:
		return "burn_rate"
	}
	return "unknown"
}

// Alert is one budget event. It fires once per budget incarnation, money
// generation, month, kind, threshold and episode, however many replicas run.
type Alert struct {
	ID         string
	Budget     string
	Kind       AlertKind
	Threshold  float64 // share of the cap; for burn-rate alerts, the multiple of the even rate
	Time       time.Time
	MonthStart time.Time
	Spent      float64 // money
	Forecast   float64 // money
	Cap        float64 // money
	Currency   string
	Message    string
	// BudgetUID and Generation are the budget's at the time (see
	// Budget.UID and Budget.Generation): a budget created again, or whose
	// amount or prices changed, alerts afresh.
	BudgetUID  string
	Generation int64
	// Episode tells apart alerts of one kind and threshold that may fire
	// more than once a month: the enforcement episode ("e2") or the day of
	// a burn-rate alert ("d17"). Empty for the others.
	Episode string
}

// DedupKey identifies an alert for "fires once": budget, month, kind and
// threshold, then the incarnation and money generation when the budget has
// them, and the episode when the kind has one. Keys of budgets stored before
// incarnations existed are as they were, so their fired alerts stay fired.
func (a *Alert) DedupKey() string {
	k := a.Budget + "|" + MonthKey(a.MonthStart) + "|" + a.Kind.String() + "|" + FormatShare(a.Threshold)
	if a.BudgetUID != "" || a.Generation != 0 {
		k += "|" + a.BudgetUID + "|g" + strconv.FormatInt(a.Generation, 10)
	}
	if a.Episode != "" {
		k += "|" + a.Episode
	}
	return k
}

// State is what the controller last decided for a budget; every replica
// reads it to scale the targets it hands out, and to answer GetBudgetStatus.
type State struct {
	Budget string
	// BudgetUID is the incarnation decided for: a budget created again
	// under the same name ignores its predecessor's state.
	BudgetUID string
	// BudgetCreated and BudgetRevision are the CreateTime and Revision of
	// the budget decided for: with Computed they order the decisions of a
	// budget (NewerState), so that one made for an older budget never
	// replaces a newer one in the store.
	BudgetCreated  time.Time
	BudgetRevision int64
	MonthStart     time.Time
	Computed       time.Time
	Decision       Decision
	Requests       float64
	Rules          map[string]RuleUsage
}

// CompareStates orders two decisions of one budget name: by the creation
// time of the incarnation decided for (a budget created again under the same
// name is created later), then by the budget's revision, then by when they
// were computed. It returns -1 if a is older than b, 1 if newer, 0 if
// neither. The stores keep, per budget, the newer of the stored and the
// given decision (store.Store.PutStates); a tie goes to the given one, so
// that a repeated write is applied.
func CompareStates(a, b *State) int {
	if c := a.BudgetCreated.Compare(b.BudgetCreated); c != 0 {
		return c
	}
	if a.BudgetRevision != b.BudgetRevision {
		return cmp.Compare(a.BudgetRevision, b.BudgetRevision)
	}
	return a.Computed.Compare(b.Computed)
}

// HistoryPoint is the last decision of one hour of a budget's month, for
// the burn-down.
type HistoryPoint struct {
	Hour               int // of the month
	Computed           time.Time
	Spent              float64 // traces, month to date
	Forecast           float64 // traces at month end, at the factors decided
	ForecastUnenforced float64
	FixedRateFactor    float64
	ReservoirFactor    float64
	Exhausted          bool
}

// Point returns the history point of a state.
func (st *State) Point() HistoryPoint {
	d := &st.Decision
	return HistoryPoint{
		Hour:     int(st.Computed.Sub(st.MonthStart) / time.Hour),
		Computed: st.Computed, Spent: d.Spent, Forecast: d.Forecast, ForecastUnenforced: d.ForecastUnenforced,
		FixedRateFactor: d.FixedRateFactor, ReservoirFactor: d.ReservoirFactor, Exhausted: d.Exhausted,
	}
}
