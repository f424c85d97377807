// Package budget owns monthly cost budgets: the model and its validation,
// which traces a budget's scope covers, the month-end forecast, the
// enforcement factor that lands a month under its cap, and when alerts fire.
// The math is pure, with time passed in, so the server's controller and the
// `simulate` command run the very same code, one on the wall clock and one on
// a virtual month.
package budget

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// Mode is what a budget does about its cap.
type Mode int

const (
	// Enforce lowers the fixed rates (then reservoirs) of the rules in scope.
	Enforce Mode = iota
	// AlertOnly never changes rates.
	AlertOnly
)

func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case AlertOnly:
		return "alert_only"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Defaults and limits.
const (
	DefaultCurrency   = "USD"
	MaxChannels       = 10
	MaxThresholds     = 10
	MaxServiceGlobs   = 32
	MaxDescriptionLen = 512
	MaxURLLen         = 2048
	// MaxPriorities bounds a budget's rule priorities, and MaxPriority
	// their values (-MaxPriority to MaxPriority).
	MaxPriorities = 32
	MaxPriority   = 1000
	// MaxCoverageMinutes is the longest coverage period: a day.
	MaxCoverageMinutes = 1440
	// MaxRetrievalsPerTrace and MaxSpansPerTrace bound the pricing
	// estimates.
	MaxRetrievalsPerTrace = 1000
	MaxSpansPerTrace      = 100_000
	// MaxBurnRate bounds a burn-rate threshold, a multiple of the even
	// rate.
	MaxBurnRate = 1000
)

// DefaultSpendThresholds and DefaultForecastThresholds are shares of the cap.
var (
	DefaultSpendThresholds    = []float64{0.5, 0.8, 1.0}
	DefaultForecastThresholds = []float64{1.0}
)

// Scope selects the traces a budget counts. Both parts must hold when set.
type Scope struct {
	Services   []string          // globs over service names; empty = all
	RuleLabels map[string]string // labels the rule must carry
}

// Covers reports whether a trace of service, sampled under rule r, counts.
func (s Scope) Covers(service string, r *rules.Rule) bool {
	if len(s.Services) > 0 && !slices.ContainsFunc(s.Services, func(g string) bool { return rules.MatchGlob(g, service) }) {
		return false
	}
	for k, v := range s.RuleLabels {
		if got, ok := r.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// RulePriority gives the rules it selects a priority within the budget:
// enforcement cuts the rules of the lowest priority first (their fixed rates,
// then their reservoirs down to the floor) and a higher priority only once
// every lower one is at its floor. A rule takes the priority of the first
// entry that selects it, 0 if none does. An entry selects the rules named in
// RuleNames (any, if empty) that carry every label of RuleLabels.
type RulePriority struct {
	RuleNames  []string
	RuleLabels map[string]string
	Priority   int32
}

// Selects reports whether the entry selects a rule.
func (p *RulePriority) Selects(name string, labels map[string]string) bool {
	if len(p.RuleNames) > 0 && !slices.Contains(p.RuleNames, name) {
		return false
	}
	for k, v := range p.RuleLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Channel is a webhook that receives alerts.
type Channel struct {
	WebhookURL string
	Secret     string
}

// Budget is a monthly cap on tracing spend.
type Budget struct {
	Name        string
	Description string
	Scope       Scope
	// MonthlyAmountMicros is the cap and PricePerMillionMicros the price
	// of a million traces, in micros of Currency (see MicrosPerUnit).
	MonthlyAmountMicros   int64
	Currency              string
	PricePerMillionMicros int64
	FreeTraces            int64
	Mode                  Mode
	SpendThresholds       []float64
	ForecastThresholds    []float64
	Channels              []Channel
	FloorPerSecond        float64
	// Retrieved traces (X-Ray bills traces retrieved or scanned by
	// queries) and spans (span-priced backends) add to the price of a
	// recorded trace: RetrievalsPerTrace retrievals at
	// RetrievedPricePerMillionMicros per million, and SpansPerTrace spans
	// at SpanPricePerMillionMicros per million.
	RetrievedPricePerMillionMicros int64
	RetrievalsPerTrace             float64
	SpanPricePerMillionMicros      int64
	SpansPerTrace                  float64
	// Priorities say which rules enforcement cuts first.
	Priorities []RulePriority
	// CoverageMinutes > 0 keeps, in the plan, one trace per service and
	// rule in scope every CoverageMinutes minutes; 0: none kept.
	CoverageMinutes int32
	// BurnRateThresholds alert when the last hour's spend runs at these
	// multiples of the even rate (the cap spread over the month).
	BurnRateThresholds []float64

	// UID is the budget's incarnation, set when it is created: a budget
	// deleted and created again is another budget, whose alerts start
	// afresh. Generation counts the edits of its amount, currency and
	// prices: alerts fired at an earlier generation are due again.
	UID        string
	Generation int64
	Revision   int64
	CreateTime time.Time
	UpdateTime time.Time
	// UpdatedBy is the audit-log actor of the last create or update: the
	// authenticated principal (package auth), never a client's claim.
	UpdatedBy string
}

// Normalize fills in defaults for unset fields: the currency, the price of
// a recorded trace (unless spans are priced), one retrieval per trace when
// retrievals are priced, the thresholds.
func (b Budget) Normalize() Budget {
	if b.Currency == "" {
		b.Currency = DefaultCurrency
	}
	if b.PricePerMillionMicros == 0 && b.SpanPricePerMillionMicros == 0 {
		b.PricePerMillionMicros = DefaultPricePerMillionMicros
	}
	if b.RetrievedPricePerMillionMicros > 0 && b.RetrievalsPerTrace == 0 {
		b.RetrievalsPerTrace = 1
	}
	if len(b.SpendThresholds) == 0 {
		b.SpendThresholds = slices.Clone(DefaultSpendThresholds)
	}
	if len(b.ForecastThresholds) == 0 {
		b.ForecastThresholds = slices.Clone(DefaultForecastThresholds)
	}
	slices.Sort(b.SpendThresholds)
	slices.Sort(b.ForecastThresholds)
	slices.Sort(b.BurnRateThresholds)
	return b
}

// PricePerMillion is what a million recorded traces cost, in currency
// units: their recording, plus their retrievals and their spans where those
// are priced. An unset recording price counts as the default unless spans
// are priced.
func (b *Budget) PricePerMillion() float64 {
	rec := b.PricePerMillionMicros
	if rec == 0 && b.SpanPricePerMillionMicros == 0 {
		rec = DefaultPricePerMillionMicros
	}
	p := Units(rec)
	if b.RetrievedPricePerMillionMicros != 0 {
		p += b.RetrievalsPerTrace * Units(b.RetrievedPricePerMillionMicros)
	}
	if b.SpanPricePerMillionMicros != 0 {
		p += b.SpansPerTrace * Units(b.SpanPricePerMillionMicros)
	}
	return p
}

// PricePerTrace is what one recorded trace costs, in currency units.
func (b *Budget) PricePerTrace() float64 { return b.PricePerMillion() / 1e6 }

// CapTraces is the number of traces the month may record: what the amount
// buys plus the free allowance.
func (b *Budget) CapTraces() float64 {
	return b.MonthlyAmount()/b.PricePerMillion()*1e6 + float64(b.FreeTraces)
}

// Cost is what n traces cost this month, after the free allowance, in
// currency units.
func (b *Budget) Cost(n float64) float64 {
	return math.Max(0, n-float64(b.FreeTraces)) / 1e6 * b.PricePerMillion()
}

// MoneyChanged reports whether b's amount, currency or prices differ from
// a's: what a spend threshold means then changes, so alerts start a new
// generation.
func MoneyChanged(a, b *Budget) bool {
	return a.MonthlyAmountMicros != b.MonthlyAmountMicros || a.Currency != b.Currency || a.FreeTraces != b.FreeTraces ||
		a.PricePerMillion() != b.PricePerMillion()
}

// Priority returns a rule's priority within the budget: that of the first
// entry of Priorities that selects it, else 0.
func (b *Budget) Priority(name string, labels map[string]string) int32 {
	for i := range b.Priorities {
		if b.Priorities[i].Selects(name, labels) {
			return b.Priorities[i].Priority
		}
	}
	return 0
}

// longestMonth is the seconds of a 31-day month: a floor must fit every
// month.
const longestMonth = 31 * 86400.0

// FloorCost is what a month of 31 days at the floor costs, in currency
// units, after the free allowance.
func (b *Budget) FloorCost(days float64) float64 {
	return b.Cost(b.FloorPerSecond * days * 86400)
}

// MonthlyAmount is the cap in currency units, for the maths.
func (b *Budget) MonthlyAmount() float64 { return Units(b.MonthlyAmountMicros) }

// Etag is the budget's version token.
func (b *Budget) Etag() string { return fmt.Sprint(b.Revision) }

// Validate checks every field and returns a *rules.ValidationError naming
// each bad one (field names as in the API), or nil.
func Validate(b *Budget) error {
	var vs []rules.FieldViolation
	add := func(field, format string, args ...any) {
		vs = append(vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if err := rules.ValidateName(b.Name); err != nil {
		vs = append(vs, err.(*rules.ValidationError).Violations...)
	}
	if !utf8.ValidString(b.Description) || utf8.RuneCountInString(b.Description) > MaxDescriptionLen {
		add("description", "at most %d characters of UTF-8", MaxDescriptionLen)
	}
	if len(b.Scope.Services) > MaxServiceGlobs {
		add("scope.service_names", "at most %d globs", MaxServiceGlobs)
	}
	for i, g := range b.Scope.Services {
		if g == "" || !utf8.ValidString(g) || utf8.RuneCountInString(g) > rules.MaxServiceNameLen {
			add(fmt.Sprintf("scope.service_names[%d]", i), "a glob of 1-%d characters", rules.MaxServiceNameLen)
		}
	}
	vs = append(vs, rules.ValidateLabels("scope.rule_labels", b.Scope.RuleLabels)...)
	if b.MonthlyAmountMicros <= 0 || b.MonthlyAmountMicros > MaxMonthlyAmountMicros {
		add("monthly_amount_micros", "must be more than 0 and at most %s units, got %s", FormatMicros(MaxMonthlyAmountMicros), FormatMicros(b.MonthlyAmountMicros))
	}
	if len(b.Currency) != 3 || b.Currency[0] < 'A' || b.Currency[0] > 'Z' || b.Currency[1] < 'A' || b.Currency[1] > 'Z' || b.Currency[2] < 'A' || b.Currency[2] > 'Z' {
		add("currency_code", "an ISO 4217 code such as USD, got %q", b.Currency)
	}
	checkPrice := func(field string, p int64, zeroOK bool) {
		if p < 0 || p == 0 && !zeroOK || p > MaxPricePerMillionMicros {
			more := "more than 0"
			if zeroOK {
				more = "at least 0"
			}
			add(field, "must be %s and at most %s units, got %s", more, FormatMicros(MaxPricePerMillionMicros), FormatMicros(p))
		}
	}
	checkPrice("price_per_million_micros", b.PricePerMillionMicros, b.SpanPricePerMillionMicros > 0)
	checkPrice("retrieved_price_per_million_micros", b.RetrievedPricePerMillionMicros, true)
	checkPrice("span_price_per_million_micros", b.SpanPricePerMillionMicros, true)
	if !(b.RetrievalsPerTrace >= 0 && b.RetrievalsPerTrace <= MaxRetrievalsPerTrace) {
		add("retrievals_per_trace", "must be between 0 and %d, got %v", MaxRetrievalsPerTrace, b.RetrievalsPerTrace)
	}
	if !(b.SpansPerTrace >= 0 && b.SpansPerTrace <= MaxSpansPerTrace) {
		add("spans_per_trace", "must be between 0 and %d, got %v", MaxSpansPerTrace, b.SpansPerTrace)
	} else if b.SpanPricePerMillionMicros > 0 && b.SpansPerTrace == 0 {
		add("spans_per_trace", "the spans of a trace, on average, are needed to price spans: more than 0, got 0")
	}
	if b.FreeTraces < 0 {
		add("free_traces", "must not be negative")
	}
	if b.Mode != Enforce && b.Mode != AlertOnly {
		add("mode", "must be enforce or alert_only, got %d", int(b.Mode))
	}
	checkThresholds := func(field string, ts []float64, allowZero bool) {
		if len(ts) > MaxThresholds {
			add(field, "at most %d thresholds", MaxThresholds)
		}
		for i, t := range ts {
			if allowZero && len(ts) == 1 && t == 0 {
				continue // turned off
			}
			if !(t > 0 && t <= 10) {
				add(fmt.Sprintf("%s[%d]", field, i), "a share of the cap in (0, 10], got %v", t)
			}
		}
		for i := 1; i < len(ts); i++ {
			if ts[i] == ts[i-1] {
				add(field, "threshold %v appears twice", ts[i])
			}
		}
	}
	checkThresholds("spend_thresholds", b.SpendThresholds, false)
	checkThresholds("forecast_thresholds", b.ForecastThresholds, true)
	if len(b.BurnRateThresholds) > MaxThresholds {
		add("burn_rate_thresholds", "at most %d thresholds", MaxThresholds)
	}
	for i, t := range b.BurnRateThresholds {
		if !(t > 0 && t <= MaxBurnRate) {
			add(fmt.Sprintf("burn_rate_thresholds[%d]", i), "a multiple of the even rate in (0, %d], got %v", MaxBurnRate, t)
		}
		if i > 0 && t == b.BurnRateThresholds[i-1] {
			add("burn_rate_thresholds", "threshold %v appears twice", t)
		}
	}
	if len(b.Priorities) > MaxPriorities {
		add("rule_priorities", "at most %d entries", MaxPriorities)
	}
	for i, p := range b.Priorities {
		field := fmt.Sprintf("rule_priorities[%d]", i)
		if len(p.RuleNames) == 0 && len(p.RuleLabels) == 0 {
			add(field, "select rules by rule_names, rule_labels or both")
		}
		if len(p.RuleNames) > MaxPriorities {
			add(field+".rule_names", "at most %d names", MaxPriorities)
		}
		for j, n := range p.RuleNames {
			if rules.ValidateName(n) != nil {
				add(fmt.Sprintf("%s.rule_names[%d]", field, j), "a rule name: 1-%d letters, digits, '-' or '_'", rules.MaxNameLen)
			}
		}
		vs = append(vs, rules.ValidateLabels(field+".rule_labels", p.RuleLabels)...)
		if p.Priority < -MaxPriority || p.Priority > MaxPriority {
			add(field+".priority", "between %d and %d, got %d", -MaxPriority, MaxPriority, p.Priority)
		}
	}
	if b.CoverageMinutes < 0 || b.CoverageMinutes > MaxCoverageMinutes {
		add("coverage_minutes", "between 0 (none) and %d, got %d", MaxCoverageMinutes, b.CoverageMinutes)
	}
	if len(b.Channels) > MaxChannels {
		add("channels", "at most %d channels", MaxChannels)
	}
	for i, c := range b.Channels {
		u, err := url.Parse(c.WebhookURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(c.WebhookURL) > MaxURLLen:
			add(fmt.Sprintf("channels[%d].webhook_url", i), "an http or https URL")
		case IsRedacted(c.WebhookURL):
			add(fmt.Sprintf("channels[%d].webhook_url", i), "a redacted URL, as answers show it, that matches no webhook of this budget; send the full URL")
		}
		if len(c.Secret) > 256 {
			add(fmt.Sprintf("channels[%d].secret", i), "at most 256 bytes")
		}
	}
	if !(b.FloorPerSecond >= 0) || math.IsInf(b.FloorPerSecond, 0) || b.FloorPerSecond > rules.MaxReservoirSize {
		add("floor_traces_per_second", "must be between 0 and %d", rules.MaxReservoirSize)
	} else if len(vs) == 0 && b.FloorPerSecond > 0 {
		// A floor the amount cannot pay for would land every month over
		// the cap: say what it costs, and what fits.
		if cost := b.FloorCost(31); cost > b.MonthlyAmount() {
			cur := b.Currency
			if cur == "" {
				cur = DefaultCurrency
			}
			fits := b.CapTraces() / longestMonth
			unit := "traces"
			if b.FloorPerSecond == 1 {
				unit = "trace"
			}
			add("floor_traces_per_second", "a floor of %s %s per second costs %s in a 31-day month (%s in 30 days), more than the budget's %s: "+
				"at most %s traces per second fit", strconv.FormatFloat(b.FloorPerSecond, 'g', 6, 64), unit, FormatMoney(cost, cur),
				FormatMoney(b.FloorCost(30), cur), FormatMoney(b.MonthlyAmount(), cur), strconv.FormatFloat(math.Floor(fits*1000)/1000, 'g', 6, 64))
		}
	}
	if len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	return nil
}

// MonthStart returns the first instant (UTC) of t's month: spend resets there.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// MonthKey names t's month in storage: "202611".
func MonthKey(t time.Time) string { return MonthStart(t).Format("200601") }

// HoursIn is the number of hours in the month that starts at start.
func HoursIn(start time.Time) int { return int(start.AddDate(0, 1, 0).Sub(start) / time.Hour) }

// FormatShare prints a share of the cap as alerts and their keys do.
func FormatShare(f float64) string { return fmt.Sprintf("%g", f) }
