package apiconv

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
)

// TestStatusSpreadsTheFreeAllowanceOverRules: each rule's spend is its
// share of the total, free allowance included, in whole micros that add up
// to the total.
func TestStatusSpreadsTheFreeAllowanceOverRules(t *testing.T) {
	b := budget.Budget{Name: "b", MonthlyAmountMicros: 10 * budget.MicrosPerUnit, PricePerMillionMicros: 5 * budget.MicrosPerUnit, FreeTraces: 1_000_000, Currency: "USD"}
	tests := []struct {
		name  string
		rules map[string]budget.RuleUsage
		want  []int64
	}{
		{"2:1", map[string]budget.RuleUsage{"a": {Sampled: 2_000_000}, "b": {Sampled: 1_000_000}}, []int64{6_666_667, 3_333_333}},
		{"1:1:1", map[string]budget.RuleUsage{"a": {Sampled: 1_000_000}, "b": {Sampled: 1_000_000}, "c": {Sampled: 1_000_000}}, []int64{3_333_334, 3_333_333, 3_333_333}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := budget.State{
				MonthStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
				Decision:   budget.Decision{Spent: 3_000_000, Forecast: 3_000_000, FixedRateFactor: 1, ReservoirFactor: 1},
				Rules:      tt.rules,
			}
			p := StatusToProto(&b, &st)
			// (3M - 1M free) at $5 per million.
			if p.GetSpentMicros() != 10_000_000 {
				t.Fatalf("spent %d micros, want 10000000", p.GetSpentMicros())
			}
			var got []int64
			for _, r := range p.GetRules() {
				got = append(got, r.GetSpentMicros())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rules' spend in micros (-want +got):\n%s", diff)
			}
		})
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
