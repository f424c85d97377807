package budget

import "slices"

// MutableFields are the fields of a budget an edit may change, by their
// API names; the rest is its identity (name) or set by the server (etag,
// times, incarnation, last editor). Every transport's update masks name
// these. The field-coverage test (internal/cli,
// TestEveryBudgetFieldIsCarried) checks this list, and WithFields, against
// the API's Budget message.
var MutableFields = []string{
	"description", "scope", "monthly_amount_micros", "currency_code", "price_per_million_micros", "free_traces", "mode",
	"spend_thresholds", "forecast_thresholds", "channels", "floor_traces_per_second",
	"rule_priorities", "coverage_minutes", "retrieved_price_per_million_micros", "retrievals_per_trace",
	"span_price_per_million_micros", "spans_per_trace", "burn_rate_thresholds",
}

// IsMutableField reports whether name is one of MutableFields.
func IsMutableField(name string) bool { return slices.Contains(MutableFields, name) }

// WithFields returns cur with the fields named in fields (names of
// MutableFields; others are ignored) taken from patch. A channel sent back
// as answers show it (URL redacted, secret masked) keeps the URL and secret
// it had (KeepHidden).
func WithFields(cur Budget, patch *Budget, fields []string) Budget {
	next := cur
	for _, f := range fields {
		switch f {
		case "description":
			next.Description = patch.Description
		case "scope":
			next.Scope = patch.Scope
		case "monthly_amount_micros":
			next.MonthlyAmountMicros = patch.MonthlyAmountMicros
		case "currency_code":
			next.Currency = patch.Currency
		case "price_per_million_micros":
			next.PricePerMillionMicros = patch.PricePerMillionMicros
		case "free_traces":
			next.FreeTraces = patch.FreeTraces
		case "mode":
			next.Mode = patch.Mode
		case "spend_thresholds":
			next.SpendThresholds = patch.SpendThresholds
		case "forecast_thresholds":
			next.ForecastThresholds = patch.ForecastThresholds
		case "channels":
			next.Channels = KeepHidden(patch.Channels, cur.Channels)
		case "floor_traces_per_second":
			next.FloorPerSecond = patch.FloorPerSecond
		case "rule_priorities":
			next.Priorities = patch.Priorities
		case "coverage_minutes":
			next.CoverageMinutes = patch.CoverageMinutes
		case "retrieved_price_per_million_micros":
			next.RetrievedPricePerMillionMicros = patch.RetrievedPricePerMillionMicros
		case "retrievals_per_trace":
			next.RetrievalsPerTrace = patch.RetrievalsPerTrace
		case "span_price_per_million_micros":
			next.SpanPricePerMillionMicros = patch.SpanPricePerMillionMicros
		case "spans_per_trace":
			next.SpansPerTrace = patch.SpansPerTrace
		case "burn_rate_thresholds":
			next.BurnRateThresholds = patch.BurnRateThresholds
		}
	}
	return next
}
