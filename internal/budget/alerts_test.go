package budget

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDueAlerts(t *testing.T) {
	now := nov.Add(17*24*time.Hour + 3*time.Hour)
	b500 := Budget{Name: "payments", MonthlyAmountMicros: 500 * MicrosPerUnit}
	with := func(edit func(*Budget)) Budget {
		b := b500
		edit(&b)
		return b
	}
	// Decisions in millions of traces; $5 per million.
	dec := func(spent, forecast, unenforced, f float64) Decision {
		d := Decision{Spent: spent * 1e6, Forecast: forecast * 1e6, ForecastUnenforced: unenforced * 1e6, FixedRateFactor: f, ReservoirFactor: 1}
		d.Memory = episode(d.Memory, d.Enforcing(), now)
		return d
	}
	ended := dec(5, 60, 60, 1)
	ended.Memory = Memory{Episode: 2, EpisodeOpen: false, LastEnforced: now.Add(-2 * time.Hour)}
	// $500 over 720 hours is $0.694 an hour: 10x is 1.389M traces.
	burning := dec(5, 60, 60, 1)
	burning.LastHour = 1.4e6
	tests := []struct {
		name string
		b    Budget
		d    Decision
		want []string // kind@threshold
	}{
		{"nothing due", b500, dec(10, 60, 60, 1), nil},
		{"just under 50 %", b500, dec(49.99, 90, 90, 1), nil},
		{"50 % reached", b500, dec(50, 90, 90, 1), []string{"spend_threshold@0.5"}},
		{"80 % spent, forecast over", b500, dec(80.24, 122.4, 122.4, 1),
			[]string{"spend_threshold@0.5", "spend_threshold@0.8", "forecast_over@1"}},
		{"forecast exactly at the cap is not over it", b500, dec(10, 100, 100, 1), nil},
		{"forecast alerts turned off", with(func(b *Budget) { b.ForecastThresholds = []float64{0} }), dec(80.24, 122.4, 122.4, 1),
			[]string{"spend_threshold@0.5", "spend_threshold@0.8"}},
		{"several forecast thresholds", with(func(b *Budget) { b.ForecastThresholds = []float64{1.5, 1} }), dec(1, 160, 160, 1),
			[]string{"forecast_over@1", "forecast_over@1.5"}},
		{"enforcing: forecast over, enforcement started", b500, dec(5, 99, 400, 0.25),
			[]string{"forecast_over@1", "enforcement_started@0"}},
		{"alert_only never enforces", with(func(b *Budget) { b.Mode = AlertOnly }), dec(5, 400, 400, 0.25),
			[]string{"forecast_over@1"}},
		{"exhausted", b500, func() Decision {
			d := Decision{Spent: 100e6, Forecast: 100e6, ForecastUnenforced: 150e6, Exhausted: true}
			d.Memory = episode(d.Memory, d.Enforcing(), now)
			return d
		}(),
			[]string{"spend_threshold@0.5", "spend_threshold@0.8", "spend_threshold@1", "forecast_over@1", "enforcement_started@0", "exhausted@1"}},
		{"enforcement ended", b500, ended, []string{"enforcement_ended@0"}},
		{"ended, alert_only", with(func(b *Budget) { b.Mode = AlertOnly }), ended, nil},
		{"burn rate under the threshold", with(func(b *Budget) { b.BurnRateThresholds = []float64{14.4} }), burning, nil},
		{"burn rate over two thresholds", with(func(b *Budget) { b.BurnRateThresholds = []float64{2, 10, 14.4} }), burning,
			[]string{"burn_rate@2", "burn_rate@10"}},
		// 60M traces of a 120M cap, but 20M are free: $200 of $500 spent.
		{"thresholds are shares of the money", with(func(b *Budget) { b.FreeTraces = 20e6 }), dec(60, 90, 90, 1), nil},
		{"custom spend thresholds", with(func(b *Budget) { b.SpendThresholds = []float64{0.25, 0.1} }), dec(30, 60, 60, 1),
			[]string{"spend_threshold@0.1", "spend_threshold@0.25"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alerts := DueAlerts(&tt.b, tt.d, now)
			var got []string
			keys := map[string]bool{}
			for _, a := range alerts {
				got = append(got, fmt.Sprintf("%v@%v", a.Kind, a.Threshold))
				if a.Budget != "payments" || !a.Time.Equal(now) || !a.MonthStart.Equal(nov) || a.Cap != 500 || a.Currency != "USD" {
					t.Errorf("alert %+v: want budget payments, time %v, month %v, cap 500 USD", a, now, nov)
				}
				if !strings.HasPrefix(a.Message, "budget payments: ") {
					t.Errorf("message %q", a.Message)
				}
				if keys[a.DedupKey()] {
					t.Errorf("two alerts with key %q", a.DedupKey())
				}
				keys[a.DedupKey()] = true
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("due: %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDueAlertsMessages(t *testing.T) {
	now := time.Date(2026, time.November, 18, 3, 0, 0, 0, time.UTC)
	b := &Budget{Name: "payments", MonthlyAmountMicros: 500 * MicrosPerUnit}
	d := Decision{Spent: 80.24e6, Forecast: 99e6, ForecastUnenforced: 122.4e6, FixedRateFactor: 0.25, ReservoirFactor: 1,
		Rules: []RulePlan{
			{Name: "search", Priority: 0, FixedRateFactor: 0.25, ReservoirFactor: 1},
			{Name: "health", Priority: -1, FixedRateFactor: 0, ReservoirFactor: 0.1},
			{Name: "checkout", Priority: 5, FixedRateFactor: 1, ReservoirFactor: 1},
		},
		Memory: Memory{Episode: 1, EpisodeOpen: true},
	}
	got := map[string]Alert{}
	for _, a := range DueAlerts(b, d, now) {
		got[fmt.Sprintf("%v@%v", a.Kind, a.Threshold)] = a
	}
	tests := []struct {
		key            string
		message        string
		spent, forcast float64
	}{
		{"spend_threshold@0.8", "budget payments: 80% of $500.00 spent ($401.20), forecast $495.00 at month end", 401.2, 495},
		{"forecast_over@1", "budget payments: forecast $612.00 at month end at the rules' own rates, over 100% of $500.00 ($401.20 spent so far); enforcing, forecast $495.00", 401.2, 612},
		{"enforcement_started@0", "budget payments: enforcing $500.00: rules cut (lowest priority first): health fixed rate 0%, reservoir 10%; " +
			"search fixed rate 25%; 1 rule at their own rates; forecast $495.00 at month end ($612.00 unenforced), $401.20 spent", 401.2, 495},
	}
	for _, tt := range tests {
		a, ok := got[tt.key]
		if !ok {
			t.Errorf("no %s alert", tt.key)
			continue
		}
		if a.Message != tt.message {
			t.Errorf("%s message:\n got %q\nwant %q", tt.key, a.Message, tt.message)
		}
		if !within(a.Spent, tt.spent, 1e-9) || !within(a.Forecast, tt.forcast, 1e-9) {
			t.Errorf("%s: spent %v forecast %v, want %v and %v", tt.key, a.Spent, a.Forecast, tt.spent, tt.forcast)
		}
	}

	ex := DueAlerts(&Budget{Name: "p", MonthlyAmountMicros: 20 * MicrosPerUnit, Currency: "EUR", FloorPerSecond: 2}, Decision{Spent: 4e6, Exhausted: true}, now)
	last := ex[len(ex)-1]
	if want := "budget p: €20.00 exhausted (€20.00 spent); sampling in scope stopped except the floor of 2 traces/s"; last.Kind != AlertExhausted || last.Message != want {
		t.Errorf("exhausted alert %v %q, want %q", last.Kind, last.Message, want)
	}
	if DueAlerts(nil, d, now) != nil {
		t.Error("alerts without a budget")
	}
	burn := DueAlerts(&Budget{Name: "p", MonthlyAmountMicros: 500 * MicrosPerUnit, BurnRateThresholds: []float64{10}}, Decision{Spent: 5e6, Forecast: 60e6, LastHour: 1.4e6}, now)
	if want := "budget p: spent $7.00 in the last hour, 10.1× the even rate of $0.69 an hour (alerting at 10×); forecast $300.00 at month end, $25.00 spent"; len(burn) != 1 || burn[0].Message != want || burn[0].Episode != "d18" {
		t.Errorf("burn-rate alert %+v, want %q on day 18", burn, want)
	}
}

// TestAlertKeys: an alert fires once per budget incarnation and money
// generation, month, kind, threshold and episode; budgets stored before
// incarnations keep the keys they had.
func TestAlertKeys(t *testing.T) {
	a := Alert{Budget: "shop", Kind: AlertSpend, Threshold: 0.5, MonthStart: nov}
	if got, want := a.DedupKey(), "shop|202611|spend_threshold|0.5"; got != want {
		t.Errorf("key of a budget without an incarnation %q, want %q as before", got, want)
	}
	keys := map[string]string{}
	for name, edit := range map[string]func(*Alert){
		"as is":           func(*Alert) {},
		"another month":   func(a *Alert) { a.MonthStart = nov.AddDate(0, 1, 0) },
		"another kind":    func(a *Alert) { a.Kind = AlertForecast },
		"a new threshold": func(a *Alert) { a.Threshold = 0.8 },
		"created again":   func(a *Alert) { a.BudgetUID = "u2" },
		"amount raised":   func(a *Alert) { a.Generation = 1 },
		"an episode":      func(a *Alert) { a.Episode = "e2" },
	} {
		b := a
		b.BudgetUID = "u1"
		edit(&b)
		k := b.DedupKey()
		if other, dup := keys[k]; dup {
			t.Errorf("%s and %s share the key %q", name, other, k)
		}
		keys[k] = name
	}
}

func TestFormatMoney(t *testing.T) {
	tests := []struct {
		amount   float64
		currency string
		want     string
	}{
		{0, "USD", "$0.00"},
		{401.2, "USD", "$401.20"},
		{1887.312, "USD", "$1,887.31"},
		{1234567.891, "USD", "$1,234,567.89"},
		{0.999, "USD", "$1.00"},
		{-5, "USD", "-$5.00"},
		{12.5, "EUR", "€12.50"},
		{12.5, "GBP", "£12.50"},
		{12.5, "CHF", "CHF 12.50"},
		{1e20, "USD", "$100,000,000,000,000,000,000.00"},
	}
	for _, tt := range tests {
		if got := FormatMoney(tt.amount, tt.currency); got != tt.want {
			t.Errorf("FormatMoney(%v, %s) = %q, want %q", tt.amount, tt.currency, got, tt.want)
		}
	}
}

func TestPercent(t *testing.T) {
	tests := map[float64]string{0: "0%", 0.8: "80%", 0.125: "12.5%", 1: "100%", 2.5: "250%", 0.20492: "20.5%", 0.00001: "<0.01%", 0.5: "50%"}
	for share, want := range tests {
		if got := percent(share); got != want {
			t.Errorf("percent(%v) = %q, want %q", share, got, want)
		}
	}
}
