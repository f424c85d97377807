package output

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// WriteFleetStatus prints what `top` shows: a line about the read, then
// each rule in match order with the fleet's live figures under it, and how
// many instances run the rule as it is (CURRENT: "all", or how many, and
// how many are behind the version that made the rule what it is). JSON is
// the GetFleetStatusResponse of every page together.
func WriteFleetStatus(w io.Writer, format string, st *pb.GetFleetStatusResponse) error {
	if format == JSON {
		return WriteJSON(w, st)
	}
	fmt.Fprintf(w, "rules version %d, %d rules, read %s; SDKs report every %v\n", st.GetRulesVersion(), st.GetTotalRules(),
		st.GetReadTime().AsTime().UTC().Format(time.RFC3339), st.GetReportInterval().AsDuration())
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tRULE\tSERVICE\tREQ/S\tSAMPLED/S\tQUOTA\tRESERVOIR\tINSTANCES\tCURRENT\tBUDGETS")
	for _, rs := range st.GetRules() {
		r := rs.GetRule()
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", rs.GetPosition(), r.GetName(), orAny(r.GetServiceName()),
			figure(rs.GetRequestRate()), figure(rs.GetSampledRate()), figure(rs.GetQuotaGranted()), r.GetReservoirSize(),
			rs.GetInstances(), currentColumn(rs), budgetsColumn(rs.GetBudgets()))
	}
	return tw.Flush()
}

// currentColumn says how many instances run the rule as it is: "all",
// "none", or how many of them, with the version they need.
func currentColumn(rs *pb.RuleStatus) string {
	n, cur := rs.GetInstances(), rs.GetInstancesCurrent()
	switch {
	case n == 0:
		return "-"
	case cur >= n:
		return "all"
	}
	return fmt.Sprintf("%d (%d behind v%d)", cur, n-cur, rs.GetRuleVersion())
}

// figure prints a rate with at most three decimals, trailing zeros cut.
func figure(f float64) string {
	s := strconv.FormatFloat(f, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

// budgetsColumn names the budgets on a rule, each with the factors it
// applies when they are not 1: "shop ×0.5/×0.25", "exhausted" when the cap
// is reached.
func budgetsColumn(bs []*pb.BudgetEnforcement) string {
	if len(bs) == 0 {
		return "-"
	}
	parts := make([]string, len(bs))
	for i, b := range bs {
		p := b.GetBudgetName()
		switch {
		case b.GetExhausted():
			p += " exhausted"
		case b.GetFixedRateFactor() != 1 || b.GetReservoirFactor() != 1:
			p += fmt.Sprintf(" ×%s/×%s", figure(b.GetFixedRateFactor()), figure(b.GetReservoirFactor()))
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// WriteExplanation prints which rule a request matches and why: the
// server's sentence, the rule and the rates in force, and each rule tried
// before it with the condition it failed.
func WriteExplanation(w io.Writer, format string, e *pb.ExplainResponse) error {
	switch format {
	case JSON:
		return WriteJSON(w, e)
	case YAML:
		b, err := MarshalJSON(e)
		if err != nil {
			return err
		}
		return WriteYAML(w, b)
	}
	fmt.Fprintln(w, e.GetSummary())
	if r := e.GetRule(); r != nil {
		fmt.Fprintf(w, "rule:        %s (#%d in match order, rules version %d)\n", r.GetName(), e.GetPosition(), e.GetRulesVersion())
		fmt.Fprintf(w, "fixed rate:  %s (factor %s)\n", FormatRate(e.GetFixedRate()), FormatRate(e.GetFixedRateFactor()))
		fmt.Fprintf(w, "reservoir:   %s traces/s for the fleet (factor %s)\n", FormatRate(e.GetReservoir()), FormatRate(e.GetReservoirFactor()))
		if len(e.GetBudgetNames()) > 0 {
			fmt.Fprintf(w, "budgets:     %s\n", strings.Join(e.GetBudgetNames(), ", "))
		}
	}
	if len(e.GetSkippedRules()) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\ntried before it:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tRULE\tFAILED\tPATTERN\tVALUE")
	for _, m := range e.GetSkippedRules() {
		value := strconv.Quote(m.GetValue())
		if m.GetAbsent() {
			value = "(absent)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", m.GetPosition(), m.GetRuleName(), m.GetField(), strconv.Quote(m.GetPattern()), value)
	}
	if n := e.GetMoreSkippedRules(); n > 0 {
		fmt.Fprintf(tw, "\t(and %d more)\t\t\t\n", n)
	}
	return tw.Flush()
}
