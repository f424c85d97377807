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
	"time"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/internal/rules"
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

	Revision   int64
	CreateTime time.Time
	UpdateTime time.Time
	// UpdatedBy is the audit-log actor of the last create or update: the
	// authenticated principal (package auth), never a client's claim.
	UpdatedBy string
}

// Normalize fills in defaults for unset fields.
func (b Budget) Normalize() Budget {
	if b.Currency == "" {
		b.Currency = DefaultCurrency
	}
	if b.PricePerMillionMicros == 0 {
		b.PricePerMillionMicros = DefaultPricePerMillionMicros
	}
	if len(b.SpendThresholds) == 0 {
		b.SpendThresholds = slices.Clone(DefaultSpendThresholds)
	}
	if len(b.ForecastThresholds) == 0 {
		b.ForecastThresholds = slices.Clone(DefaultForecastThresholds)
	}
	slices.Sort(b.SpendThresholds)
	slices.Sort(b.ForecastThresholds)
	return b
}

// CapTraces is the number of traces the month may record: what the amount
// buys plus the free allowance.
func (b *Budget) CapTraces() float64 {
	return float64(b.MonthlyAmountMicros)/float64(b.PricePerMillionMicros)*1e6 + float64(b.FreeTraces)
}

// Cost is what n traces cost this month, after the free allowance, in
// currency units.
func (b *Budget) Cost(n float64) float64 {
	return math.Max(0, n-float64(b.FreeTraces)) / 1e6 * Units(b.PricePerMillionMicros)
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
	if b.PricePerMillionMicros <= 0 || b.PricePerMillionMicros > MaxPricePerMillionMicros {
		add("price_per_million_micros", "must be more than 0 and at most %s units, got %s", FormatMicros(MaxPricePerMillionMicros), FormatMicros(b.PricePerMillionMicros))
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
