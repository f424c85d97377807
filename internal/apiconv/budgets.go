package apiconv

import (
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
)

// BudgetToProto returns the API form of b as answers show it: webhook URLs
// redacted (budget.RedactURL) and secrets masked (budget.SecretMask).
func BudgetToProto(b *budget.Budget) *pb.Budget {
	p := BudgetToRequest(b)
	for _, ch := range p.Channels {
		ch.WebhookUrl = budget.RedactURL(ch.WebhookUrl)
		if ch.Secret != "" {
			ch.Secret = budget.SecretMask
		}
	}
	return p
}

// BudgetToRequest returns the API form of b as a client sends it, webhook
// URLs and secrets in full.
func BudgetToRequest(b *budget.Budget) *pb.Budget {
	p := &pb.Budget{
		Name:                  b.Name,
		Description:           b.Description,
		MonthlyAmountMicros:   b.MonthlyAmountMicros,
		CurrencyCode:          b.Currency,
		PricePerMillionMicros: b.PricePerMillionMicros,
		FreeTraces:            b.FreeTraces,
		SpendThresholds:       slices.Clone(b.SpendThresholds),
		ForecastThresholds:    slices.Clone(b.ForecastThresholds),
		FloorTracesPerSecond:  b.FloorPerSecond,
		CreateTime:            timestamp(b.CreateTime),
		UpdateTime:            timestamp(b.UpdateTime),
		UpdateActor:           b.UpdatedBy,
		Mode:                  pb.Budget_MODE_ENFORCE,

		RetrievedPricePerMillionMicros: b.RetrievedPricePerMillionMicros,
		RetrievalsPerTrace:             b.RetrievalsPerTrace,
		SpanPricePerMillionMicros:      b.SpanPricePerMillionMicros,
		SpansPerTrace:                  b.SpansPerTrace,
		CoverageMinutes:                b.CoverageMinutes,
		BurnRateThresholds:             slices.Clone(b.BurnRateThresholds),
		Uid:                            b.UID,
		Generation:                     b.Generation,
	}
	for _, rp := range b.Priorities {
		p.RulePriorities = append(p.RulePriorities, &pb.RulePriority{
			RuleNames: slices.Clone(rp.RuleNames), RuleLabels: maps.Clone(rp.RuleLabels), Priority: rp.Priority,
		})
	}
	if b.Mode == budget.AlertOnly {
		p.Mode = pb.Budget_MODE_ALERT_ONLY
	}
	if len(b.Scope.Services) > 0 || len(b.Scope.RuleLabels) > 0 {
		p.Scope = &pb.BudgetScope{ServiceNames: slices.Clone(b.Scope.Services), RuleLabels: maps.Clone(b.Scope.RuleLabels)}
	}
	for _, c := range b.Channels {
		p.Channels = append(p.Channels, &pb.NotificationChannel{WebhookUrl: c.WebhookURL, Secret: c.Secret})
	}
	if b.Revision > 0 {
		p.Etag = b.Etag()
	}
	return p
}

// BudgetFromProto returns the domain form of p; output-only fields (etag,
// times, uid, generation) are ignored. Validate the result: an unknown mode
// comes back invalid.
func BudgetFromProto(p *pb.Budget) budget.Budget {
	b := budget.Budget{
		Name:                  p.GetName(),
		Description:           p.GetDescription(),
		MonthlyAmountMicros:   p.GetMonthlyAmountMicros(),
		Currency:              p.GetCurrencyCode(),
		PricePerMillionMicros: p.GetPricePerMillionMicros(),
		FreeTraces:            p.GetFreeTraces(),
		SpendThresholds:       slices.Clone(p.GetSpendThresholds()),
		ForecastThresholds:    slices.Clone(p.GetForecastThresholds()),
		FloorPerSecond:        p.GetFloorTracesPerSecond(),
		Scope:                 budget.Scope{Services: slices.Clone(p.GetScope().GetServiceNames()), RuleLabels: maps.Clone(p.GetScope().GetRuleLabels())},

		RetrievedPricePerMillionMicros: p.GetRetrievedPricePerMillionMicros(),
		RetrievalsPerTrace:             p.GetRetrievalsPerTrace(),
		SpanPricePerMillionMicros:      p.GetSpanPricePerMillionMicros(),
		SpansPerTrace:                  p.GetSpansPerTrace(),
		CoverageMinutes:                p.GetCoverageMinutes(),
		BurnRateThresholds:             slices.Clone(p.GetBurnRateThresholds()),
	}
	for _, rp := range p.GetRulePriorities() {
		b.Priorities = append(b.Priorities, budget.RulePriority{
			RuleNames: slices.Clone(rp.GetRuleNames()), RuleLabels: maps.Clone(rp.GetRuleLabels()), Priority: rp.GetPriority(),
		})
	}
	switch m := p.GetMode(); m {
	case pb.Budget_MODE_UNSPECIFIED, pb.Budget_MODE_ENFORCE:
		b.Mode = budget.Enforce
	case pb.Budget_MODE_ALERT_ONLY:
		b.Mode = budget.AlertOnly
	default:
		// A value the enum does not have keeps its number, which
		// budget.Validate refuses: an unknown mode must not enforce.
		b.Mode = budget.Mode(m)
	}
	for _, c := range p.GetChannels() {
		b.Channels = append(b.Channels, budget.Channel{WebhookURL: c.GetWebhookUrl(), Secret: c.GetSecret()})
	}
	return b
}

// AlertKindToProto maps an alert kind.
func AlertKindToProto(k budget.AlertKind) pb.Alert_Kind {
	switch k {
	case budget.AlertSpend:
		return pb.Alert_KIND_SPEND_THRESHOLD
	case budget.AlertForecast:
		return pb.Alert_KIND_FORECAST_OVER
	case budget.AlertEnforcementStarted:
		return pb.Alert_KIND_ENFORCEMENT_STARTED
	case budget.AlertExhausted:
		return pb.Alert_KIND_EXHAUSTED
	case budget.AlertEnforcementEnded:
		return pb.Alert_KIND_ENFORCEMENT_ENDED
	case budget.AlertBurnRate:
		return pb.Alert_KIND_BURN_RATE
	}
	return pb.Alert_KIND_UNSPECIFIED
}

// AlertToProto returns the API form of an alert.
func AlertToProto(a *budget.Alert) *pb.Alert {
	return &pb.Alert{
		Id: a.ID, BudgetName: a.Budget, Kind: AlertKindToProto(a.Kind), Threshold: a.Threshold,
		FireTime: timestamp(a.Time), MonthStartTime: timestamp(a.MonthStart),
		SpentMicros: budget.Micros(a.Spent), ForecastMicros: budget.Micros(a.Forecast), CapMicros: budget.Micros(a.Cap),
		CurrencyCode: a.Currency, Message: a.Message, BudgetUid: a.BudgetUID, Episode: a.Episode,
	}
}

// StatusToProto returns a budget's status from its last decision, in money.
// A decision made for an earlier incarnation of the budget is not its own:
// the status is then as before any decision.
func StatusToProto(b *budget.Budget, st *budget.State) *pb.BudgetStatus {
	capTraces := b.CapTraces()
	p := &pb.BudgetStatus{
		BudgetName:      b.Name,
		CurrencyCode:    b.Currency,
		CapTraces:       int64(capTraces),
		FixedRateFactor: 1,
		ReservoirFactor: 1,
	}
	if st == nil || st.BudgetUID != b.UID {
		return p
	}
	d := st.Decision
	p.MonthStartTime = timestamp(st.MonthStart)
	p.ComputedTime = timestamp(st.Computed)
	p.SampledTraces = int64(d.Spent)
	p.Requests = int64(st.Requests)
	p.SpentMicros = budget.Micros(b.Cost(d.Spent))
	p.ForecastMicros = budget.Micros(b.Cost(d.Forecast))
	p.ForecastUnenforcedMicros = budget.Micros(b.Cost(d.ForecastUnenforced))
	if capTraces > 0 {
		p.SpentRatio = d.Spent / capTraces
		p.ForecastRatio = d.Forecast / capTraces
		p.ForecastUnenforcedRatio = d.ForecastUnenforced / capTraces
	}
	p.FixedRateFactor, p.ReservoirFactor, p.Exhausted = d.FixedRateFactor, d.ReservoirFactor, d.Exhausted
	e := d.Explain
	p.ForecastExplanation = &pb.ForecastExplanation{
		Method: e.Method, HourlyProfile: slices.Clone(e.Profile), Level: e.Level, TrendPerDay: e.Trend,
		CurrentRequestRate: e.CurrentRate, ExpectedRequestRate: e.ExpectedRate, ForecastRequests: int64(e.Requests),
	}
	if p.ForecastExplanation.Method == "" {
		p.ForecastExplanation.Method = budget.MethodNone
	}
	p.CoverageReserveTraces = int64(d.CoverageReserve)
	if even := b.MonthlyAmount() / float64(budget.HoursIn(st.MonthStart)); even > 0 {
		p.BurnRate = d.LastHour * b.PricePerTrace() / even
	}
	p.EnforcementEpisodes = int32(d.Memory.Episode)
	p.Enforcing = d.Memory.EpisodeOpen
	// The rules with spend this month and those planned, by name.
	plans := make(map[string]*budget.RulePlan, len(d.Rules))
	for i := range d.Rules {
		plans[d.Rules[i].Name] = &d.Rules[i]
	}
	names := make([]string, 0, len(st.Rules)+len(plans))
	for n := range st.Rules {
		names = append(names, n)
	}
	for n := range plans {
		if _, ok := st.Rules[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	// Each rule's share of the spend, so that the free allowance is spread
	// over the rules and their figures add up to the total.
	sampled := make([]float64, len(names))
	for i, n := range names {
		sampled[i] = float64(st.Rules[n].Sampled)
	}
	spent := splitMicros(p.SpentMicros, sampled, d.Spent)
	price := b.PricePerTrace()
	for i, n := range names {
		ru := st.Rules[n]
		rs := &pb.RuleSpend{RuleName: n, Requests: ru.Requests, SampledTraces: ru.Sampled, SpentMicros: spent[i], FixedRateFactor: 1, ReservoirFactor: 1}
		if pl := plans[n]; pl != nil {
			rs.Planned = true
			rs.Priority = pl.Priority
			rs.FixedRateFactor, rs.ReservoirFactor = pl.FixedRateFactor, pl.ReservoirFactor
			rs.ReservoirTracesPerSecond = pl.Reservoir
			rs.ForecastRequests = int64(pl.Requests)
			rs.ForecastMicros = budget.Micros(pl.Forecast * price)
			rs.ForecastUnenforcedMicros = budget.Micros(pl.ForecastUnenforced * price)
		}
		p.Rules = append(p.Rules, rs)
	}
	return p
}

// HistoryToProto returns a budget's month hour by hour, up to the hour of
// now (every hour of a month that ended), from its usage and the hourly
// points of its decisions.
func HistoryToProto(b *budget.Budget, u *budget.Usage, points []budget.HistoryPoint, now time.Time) *pb.GetBudgetHistoryResponse {
	out := &pb.GetBudgetHistoryResponse{
		BudgetName: b.Name, MonthStartTime: timestamp(u.MonthStart), CurrencyCode: b.Currency,
		MonthlyAmountMicros: b.MonthlyAmountMicros,
	}
	n := min(len(u.Requests), len(u.Sampled))
	last := n - 1
	if h := int(now.Sub(u.MonthStart) / time.Hour); h < n {
		last = h
	}
	byHour := make(map[int]*budget.HistoryPoint, len(points))
	for i := range points {
		byHour[points[i].Hour] = &points[i]
	}
	var traces float64
	var cumulative int64
	for h := 0; h <= last; h++ {
		traces += u.Sampled[h]
		end := budget.Micros(b.Cost(traces))
		bh := &pb.BudgetHour{
			Hour: int32(h), StartTime: timestamp(u.MonthStart.Add(time.Duration(h) * time.Hour)),
			Requests: int64(u.Requests[h]), SampledTraces: int64(u.Sampled[h]),
			SpentMicros: end - cumulative, CumulativeSpentMicros: end,
		}
		cumulative = end
		if pt := byHour[h]; pt != nil {
			bh.Decided = true
			bh.ComputedTime = timestamp(pt.Computed)
			bh.ForecastMicros = budget.Micros(b.Cost(pt.Forecast))
			bh.ForecastUnenforcedMicros = budget.Micros(b.Cost(pt.ForecastUnenforced))
			bh.FixedRateFactor, bh.ReservoirFactor, bh.Exhausted = pt.FixedRateFactor, pt.ReservoirFactor, pt.Exhausted
		}
		out.Hours = append(out.Hours, bh)
	}
	return out
}

// splitMicros splits total in proportion to weights over whole, in whole
// micros: each part rounded down, then the micros left (the rounding of
// the exact sum) one each to the parts that lost the most, so that the
// parts add up to total when the weights add up to whole.
func splitMicros(total int64, weights []float64, whole float64) []int64 {
	parts := make([]int64, len(weights))
	if !(whole > 0) {
		return parts
	}
	lost := make([]float64, len(weights))
	var exactSum float64
	var sum int64
	for i, w := range weights {
		exact := math.Max(0, math.Min(float64(total)*w/whole, float64(total))) // NaN is 0
		parts[i] = int64(math.Floor(exact))
		lost[i] = exact - float64(parts[i])
		exactSum += exact
		sum += parts[i]
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return lost[order[a]] > lost[order[b]] })
	for left, k := int64(math.Round(exactSum))-sum, 0; left > 0 && k < len(order); left, k = left-1, k+1 {
		parts[order[k]]++
	}
	return parts
}
