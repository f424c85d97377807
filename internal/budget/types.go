package budget

import "time"

// Usage is a budget's month so far, as the reports of every replica added it
// up: per hour of the month (index 0 is the first hour, UTC), the requests and
// sampled traces in scope, and totals per rule.
type Usage struct {
	MonthStart time.Time
	Requests   []float64 // len HoursIn(MonthStart)
	Sampled    []float64
	Rules      map[string]RuleUsage
}

// RuleUsage is one rule's part of a budget's month.
type RuleUsage struct {
	Requests int64
	Sampled  int64
}

// NewUsage returns an empty month.
func NewUsage(monthStart time.Time) Usage {
	n := HoursIn(monthStart)
	return Usage{MonthStart: monthStart, Requests: make([]float64, n), Sampled: make([]float64, n), Rules: map[string]RuleUsage{}}
}

// Totals returns the month's requests and sampled traces.
func (u *Usage) Totals() (requests, sampled float64) {
	for i := range u.Sampled {
		requests += u.Requests[i]
		sampled += u.Sampled[i]
	}
	return requests, sampled
}

// RuleModel is what the forecast needs to know of a rule in scope: how many
// traces it takes per request before and after its reservoir.
type RuleModel struct {
	Name      string
	FixedRate float64
	Reservoir float64 // traces per second, fleet-wide
}

// Decision is the controller's answer for one budget at one moment.
type Decision struct {
	// Spent and Forecast are traces this month, so far and by month end
	// (at the factors decided here).
	Spent    float64
	Forecast float64
	// ForecastUnenforced is the month-end forecast at factor 1, which the
	// forecast alerts compare with the cap.
	ForecastUnenforced float64
	// FixedRateFactor scales the fixed rates of the rules in scope and
	// ReservoirFactor their reservoirs; both in [0, 1], 1 when not enforcing.
	FixedRateFactor float64
	ReservoirFactor float64
	// Exhausted: the cap is reached; only the floor is traced.
	Exhausted bool
}

// AlertKind is what an alert is about.
type AlertKind int

const (
	AlertSpend AlertKind = iota + 1
	AlertForecast
	AlertEnforcementStarted
	AlertExhausted
)

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
	}
	return "unknown"
}

// Alert is one budget event. It fires once per budget, month, kind and
// threshold, however many replicas run.
type Alert struct {
	ID         string
	Budget     string
	Kind       AlertKind
	Threshold  float64 // share of the cap
	Time       time.Time
	MonthStart time.Time
	Spent      float64 // money
	Forecast   float64 // money
	Cap        float64 // money
	Currency   string
	Message    string
}

// DedupKey identifies an alert for "fires once": budget, month, kind and
// threshold.
func (a *Alert) DedupKey() string {
	return a.Budget + "|" + MonthKey(a.MonthStart) + "|" + a.Kind.String() + "|" + FormatShare(a.Threshold)
}

// State is what the controller last decided for a budget; every replica
// reads it to scale the targets it hands out, and to answer GetBudgetStatus.
type State struct {
	Budget     string
	MonthStart time.Time
	Computed   time.Time
	Decision   Decision
	Requests   float64
	Rules      map[string]RuleUsage
}
