package apiconv

import (
	"math"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
)

func TestStatusSpreadsTheFreeAllowanceOverRules(t *testing.T) {
	b := budget.Budget{Name: "b", MonthlyAmountMicros: 10 * budget.MicrosPerUnit, PricePerMillionMicros: 5 * budget.MicrosPerUnit, FreeTraces: 1_000_000, Currency: "USD"}
	st := budget.State{
		MonthStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		Decision:   budget.Decision{Spent: 3_000_000, Forecast: 3_000_000, FixedRateFactor: 1, ReservoirFactor: 1},
		Rules:      map[string]budget.RuleUsage{"a": {Sampled: 2_000_000}, "b": {Sampled: 1_000_000}},
	}
	p := StatusToProto(&b, &st)
	// (3M - 1M free) at $5 per million.
	if p.GetSpent() != 10 {
		t.Fatalf("spent %v, want 10", p.GetSpent())
	}
	var sum float64
	for _, r := range p.GetRules() {
		sum += r.GetSpent()
	}
	if math.Abs(sum-p.GetSpent()) > 1e-9 || math.Abs(p.GetRules()[0].GetSpent()-20.0/3) > 1e-9 {
		t.Errorf("rules %v add up to %v, want the total %v split 2:1", p.GetRules(), sum, p.GetSpent())
	}
}

func TestBudgetRoundTrip(t *testing.T) {
	b := budget.Budget{Name: "b", MonthlyAmountMicros: budget.MicrosPerUnit, Mode: budget.AlertOnly, Channels: []budget.Channel{{WebhookURL: "https://x.example.com/hook", Secret: "s"}}, Revision: 3}
	answer := BudgetToProto(&b)
	if ch := answer.GetChannels()[0]; ch.GetSecret() != budget.SecretMask || ch.GetWebhookUrl() != "https://x.example.com/…" || answer.GetEtag() != "3" {
		t.Fatalf("answer %v: want the URL redacted, the secret masked and etag 3", answer)
	}
	back := BudgetFromProto(BudgetToRequest(&b))
	if back.Mode != budget.AlertOnly || back.Channels[0] != b.Channels[0] {
		t.Errorf("round trip of a request %+v", back)
	}
}
