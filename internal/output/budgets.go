package output

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/files"
)

// AlertCells are an alert's TIME, BUDGET, KIND, THRESHOLD and MESSAGE.
func AlertCells(a *pb.Alert) []string {
	threshold := "-"
	if a.GetThreshold() > 0 {
		threshold = Percent(a.GetThreshold())
	}
	return []string{a.GetFireTime().AsTime().UTC().Format(time.RFC3339), a.GetBudgetName(), alertKindText(a.GetKind()), threshold, a.GetMessage()}
}

func alertKindText(k pb.Alert_Kind) string { return enumText(k) }

// percent prints a share as a percentage without float noise: 0.57 is
// "57%", not "56.99999999999999%".
func Percent(share float64) string {
	return strconv.FormatFloat(math.Round(share*1e6)/1e4, 'f', -1, 64) + "%"
}

// Money prints micros as units with at least two decimals: "500.00",
// "12.25", "0.000001".
func Money(micros int64) string {
	s := budget.FormatMicros(micros)
	switch i := strings.IndexByte(s, '.'); {
	case i < 0:
		return s + ".00"
	case len(s)-i == 2:
		return s + "0"
	}
	return s
}

// WriteBudgets prints budgets: a table, protojson ({"budgets": [...]}, or
// the bare budget when one was asked for), or the budgets file format.
func WriteBudgets(w io.Writer, format string, bs []*pb.Budget, single bool) error {
	switch format {
	case JSON:
		if single && len(bs) == 1 {
			return WriteJSON(w, bs[0])
		}
		return WriteJSONList(w, "budgets", bs)
	case YAML:
		return files.WriteBudgets(w, bs)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODE\tAMOUNT\tCURRENCY\tSCOPE\tTHRESHOLDS")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.GetName(), files.ModeName(b.GetMode()), Money(b.GetMonthlyAmountMicros()),
			b.GetCurrencyCode(), scopeText(b.GetScope()), thresholdsText(b))
	}
	return tw.Flush()
}

// scopeText sums up a scope without spaces, like a selector: "*", "shop-*",
// "shop-*,search{team=payments}", "*{team=payments}".
func scopeText(s *pb.BudgetScope) string {
	text := "*"
	if len(s.GetServiceNames()) > 0 {
		text = strings.Join(s.GetServiceNames(), ",")
	}
	if len(s.GetRuleLabels()) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(s.GetRuleLabels())) {
			parts = append(parts, k+"="+s.GetRuleLabels()[k])
		}
		text += "{" + strings.Join(parts, ",") + "}"
	}
	return text
}

// thresholdsText is "50%,80%,100%; forecast 100%".
func thresholdsText(b *pb.Budget) string {
	list := func(ts []float64) string {
		parts := make([]string, len(ts))
		for i, t := range ts {
			parts[i] = Percent(t)
		}
		return strings.Join(parts, ",")
	}
	forecast := "forecast " + list(b.GetForecastThresholds())
	if fts := b.GetForecastThresholds(); len(fts) == 0 || len(fts) == 1 && fts[0] == 0 {
		forecast = "forecast off"
	}
	return list(b.GetSpendThresholds()) + "; " + forecast
}

// WriteBudgetStatus prints a status as a block of fields and, when traces
// were counted, a table of the spend per rule.
func WriteBudgetStatus(w io.Writer, b *pb.Budget, st *pb.BudgetStatus) error {
	cur := " " + st.GetCurrencyCode()
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "BUDGET\t%s (%s)\n", st.GetBudgetName(), files.ModeName(b.GetMode()))
	if st.GetMonthStartTime() != nil {
		fmt.Fprintf(tw, "MONTH\t%s (UTC)\n", st.GetMonthStartTime().AsTime().UTC().Format("2006-01"))
	}
	fmt.Fprintf(tw, "SPENT\t%s of %s (%s)\n", Money(st.GetSpentMicros())+cur, Money(b.GetMonthlyAmountMicros())+cur, budgetRatio(st.GetSpentRatio()))
	fmt.Fprintf(tw, "FORECAST\t%s at month end (%s)\n", Money(st.GetForecastMicros())+cur, budgetRatio(st.GetForecastRatio()))
	fmt.Fprintf(tw, "TRACES\t%d sampled of %d requests; cap %d\n", st.GetSampledTraces(), st.GetRequests(), st.GetCapTraces())
	fmt.Fprintf(tw, "FACTORS\tfixed rates x%s, reservoirs x%s\n", budgetFactorText(st.GetFixedRateFactor()), budgetFactorText(st.GetReservoirFactor()))
	exhausted := "no"
	if st.GetExhausted() {
		exhausted = "yes: only the floor is traced"
	}
	fmt.Fprintf(tw, "EXHAUSTED\t%s\n", exhausted)
	computed := "not yet: the controller has not decided for this budget"
	if st.GetComputedTime() != nil {
		computed = st.GetComputedTime().AsTime().UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "COMPUTED\t%s\n", computed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.GetRules()) == 0 {
		_, err := fmt.Fprintln(w, "\nNo traces counted this month.")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tREQUESTS\tSAMPLED\tSPENT")
	for _, r := range st.GetRules() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.GetRuleName(), r.GetRequests(), r.GetSampledTraces(), Money(r.GetSpentMicros()))
	}
	return tw.Flush()
}

func budgetRatio(r float64) string { return strconv.FormatFloat(r*100, 'f', 1, 64) + "%" }

func budgetFactorText(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// BudgetChanges lists the fields that differ from a, a budget as the server
// shows it (webhook URLs redacted, secrets masked), to b, one as a file
// wants it (full URLs and secrets), both normalized, in the proto's field
// order, each with its update_mask path. The server never shows a webhook's
// full URL or its secret: channels are compared as it shows them, so a new
// secret, or a new URL that redacts the same, is not seen.
func BudgetChanges(a, b *budget.Budget) []Change {
	var cs []Change
	add := func(path, field, x, y string) {
		if x != y {
			cs = append(cs, Change{Path: path, Text: field + " " + x + " -> " + y})
		}
	}
	add("description", "description", strconv.Quote(a.Description), strconv.Quote(b.Description))
	add("scope", "scope", scopeOf(a.Scope), scopeOf(b.Scope))
	add("monthly_amount_micros", "monthly_amount", budget.FormatMicros(a.MonthlyAmountMicros), budget.FormatMicros(b.MonthlyAmountMicros))
	add("currency_code", "currency_code", a.Currency, b.Currency)
	add("price_per_million_micros", "price_per_million", budget.FormatMicros(a.PricePerMillionMicros), budget.FormatMicros(b.PricePerMillionMicros))
	add("free_traces", "free_traces", fmt.Sprint(a.FreeTraces), fmt.Sprint(b.FreeTraces))
	add("mode", "mode", a.Mode.String(), b.Mode.String())
	add("spend_thresholds", "spend_thresholds", floatsText(a.SpendThresholds), floatsText(b.SpendThresholds))
	add("forecast_thresholds", "forecast_thresholds", floatsText(a.ForecastThresholds), floatsText(b.ForecastThresholds))
	add("channels", "channels", channelsText(a.Channels, false), channelsText(b.Channels, true))
	add("floor_traces_per_second", "floor_traces_per_second", FormatRate(a.FloorPerSecond), FormatRate(b.FloorPerSecond))
	return cs
}

// scopeOf is a scope as scopeText prints it.
func scopeOf(s budget.Scope) string {
	return scopeText(&pb.BudgetScope{ServiceNames: s.Services, RuleLabels: s.RuleLabels})
}

func floatsText(fs []float64) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = FormatRate(f)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// channelsText is channels as the server shows them: URLs redacted (redact:
// they are not yet), and whether each has a secret.
func channelsText(chs []budget.Channel, redact bool) string {
	parts := make([]string, len(chs))
	for i, c := range chs {
		parts[i] = c.WebhookURL
		if redact {
			parts[i] = budget.RedactURL(c.WebhookURL)
		}
		if c.Secret != "" {
			parts[i] += " (signed)"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
