package apiconv

import (
	"maps"
	"math"
	"slices"
	"sort"

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

// BudgetFromProto returns the domain form of p; output-only fields are
// ignored. Validate the result: an unknown mode comes back invalid.
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
	}
	return pb.Alert_KIND_UNSPECIFIED
}

// AlertToProto returns the API form of an alert.
func AlertToProto(a *budget.Alert) *pb.Alert {
	return &pb.Alert{
		Id: a.ID, BudgetName: a.Budget, Kind: AlertKindToProto(a.Kind), Threshold: a.Threshold,
		FireTime: timestamp(a.Time), MonthStartTime: timestamp(a.MonthStart),
		SpentMicros: budget.Micros(a.Spent), ForecastMicros: budget.Micros(a.Forecast), CapMicros: budget.Micros(a.Cap),
		CurrencyCode: a.Currency, Message: a.Message,
	}
}

// StatusToProto returns a budget's status from its last decision, in money.
func StatusToProto(b *budget.Budget, st *budget.State) *pb.BudgetStatus {
	capTraces := b.CapTraces()
	p := &pb.BudgetStatus{
		BudgetName:      b.Name,
		CurrencyCode:    b.Currency,
		CapTraces:       int64(capTraces),
		FixedRateFactor: 1,
		ReservoirFactor: 1,
	}
	if st == nil {
		return p
	}
	d := st.Decision
	p.MonthStartTime = timestamp(st.MonthStart)
	p.ComputedTime = timestamp(st.Computed)
	p.SampledTraces = int64(d.Spent)
	p.Requests = int64(st.Requests)
	p.SpentMicros = budget.Micros(b.Cost(d.Spent))
	p.ForecastMicros = budget.Micros(b.Cost(d.Forecast))
	if capTraces > 0 {
		p.SpentRatio = d.Spent / capTraces
		p.ForecastRatio = d.Forecast / capTraces
	}
	p.FixedRateFactor, p.ReservoirFactor, p.Exhausted = d.FixedRateFactor, d.ReservoirFactor, d.Exhausted
	names := make([]string, 0, len(st.Rules))
	for n := range st.Rules {
		names = append(names, n)
	}
	sort.Strings(names)
	// Each rule's share of the spend, so that the free allowance is spread
	// over the rules and their figures add up to the total.
	sampled := make([]float64, len(names))
	for i, n := range names {
		sampled[i] = float64(st.Rules[n].Sampled)
	}
	spent := splitMicros(p.SpentMicros, sampled, d.Spent)
	for i, n := range names {
		ru := st.Rules[n]
		p.Rules = append(p.Rules, &pb.RuleSpend{RuleName: n, Requests: ru.Requests, SampledTraces: ru.Sampled, SpentMicros: spent[i]})
	}
	return p
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
