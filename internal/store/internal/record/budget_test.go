package record

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/budgettest"
)

// checkAllSet fails if a field of v is zero: a fixture with every field set
// makes a round-trip test fail when a field is added to the type but not to
// its stored form.
func checkAllSet(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if rv.Field(i).IsZero() {
			t.Errorf("%T fixture leaves %s unset", v, rv.Type().Field(i).Name)
		}
	}
}

func TestBudgetRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	b := budget.Budget{
		Name: "full", Description: "ünïcode \"quoted\"",
		Scope:               budget.Scope{Services: []string{"a*", "b"}, RuleLabels: map[string]string{"team": "x"}},
		MonthlyAmountMicros: 1_234_500_001, Currency: "EUR", PricePerMillionMicros: 300_000, FreeTraces: 1e6,
		Mode: budget.AlertOnly, SpendThresholds: []float64{0.5, 1}, ForecastThresholds: []float64{1.2},
		Channels:       []budget.Channel{{WebhookURL: "https://h.example/x", Secret: "s"}, {WebhookURL: "http://y"}},
		FloorPerSecond: 0.25, Revision: 42, CreateTime: at, UpdateTime: at.Add(time.Hour), UpdatedBy: "token:shop-editor",
		RetrievedPricePerMillionMicros: 500_000, RetrievalsPerTrace: 2, SpanPricePerMillionMicros: 100_000, SpansPerTrace: 12.5,
		Priorities: []budget.RulePriority{
			{RuleNames: []string{"checkout"}, Priority: 10},
			{RuleLabels: map[string]string{"kind": "health"}, Priority: -5},
		},
		CoverageMinutes: 5, BurnRateThresholds: []float64{14.4}, UID: "0123abcd", Generation: 3,
	}
	checkAllSet(t, b)
	for _, in := range []budget.Budget{b, {Name: "minimal", MonthlyAmountMicros: 1}} {
		raw, err := MarshalBudget(&in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalBudget(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("round trip of %q:\ngot  %+v\nwant %+v", in.Name, got, in)
		}
	}
	var m map[string]any
	raw, _ := MarshalBudget(&b)
	if err := json.Unmarshal(raw, &m); err != nil || m["revision"] != 42.0 {
		t.Errorf("stored budget %s lacks revision 42 (budget.lua reads it)", raw)
	}
	if _, err := UnmarshalBudget([]byte(`{"name": "x", "mode": "explode"}`)); err == nil {
		t.Error("UnmarshalBudget accepted an unknown mode")
	}
}

func TestAlertRoundTrip(t *testing.T) {
	a := NormalizeAlert(budget.Alert{
		ID: "7-0", Budget: "b", Kind: budget.AlertBurnRate, Threshold: 0.8,
		Time: time.Date(2026, 3, 9, 1, 2, 3, 4, time.FixedZone("X", 3600)), MonthStart: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		Spent: 1, Forecast: 2, Cap: 3, Currency: "USD", Message: "m", BudgetUID: "u", Generation: 2, Episode: "d9",
	})
	checkAllSet(t, a)
	raw, err := MarshalAlert(&a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalAlert(raw, "7-0")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, a)
	}
	if _, err := UnmarshalAlert([]byte(`{"kind": "explode"}`), "1"); err == nil {
		t.Error("UnmarshalAlert accepted an unknown kind")
	}
}

func TestStateRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	st := budget.State{
		Budget: "b", MonthStart: at, Computed: at.Add(time.Hour),
		Decision: budget.Decision{
			Spent: 1, Forecast: 2, ForecastUnenforced: 3, FixedRateFactor: 0.5, ReservoirFactor: 0.25, Exhausted: true,
			Rules: []budget.RulePlan{{Name: "a", Priority: 3, FixedRateFactor: 0.5, ReservoirFactor: 0.25, Reservoir: 2,
				Requests: 5, Forecast: 6, ForecastUnenforced: 7}},
			Explain: budget.Explain{Method: budget.MethodProfile, Profile: []float64{1, 2}, Level: 1.5, Trend: 0.04,
				CurrentRate: 3, ExpectedRate: 2.5, Requests: 100},
			CoverageReserve: 8, LastHour: 9,
			Memory: budget.Memory{Observed: at.Add(time.Hour), Requests: 10, FirstSeen: at.Add(time.Minute), RecentRate: 11,
				AboveSince: at.Add(2 * time.Minute), Episode: 2, EpisodeOpen: true, LastEnforced: at.Add(3 * time.Minute), Backfilled: true},
		},
		Requests: 9, Rules: map[string]budget.RuleUsage{"a": {Requests: 4, Sampled: 2}}, BudgetUID: "u1",
		BudgetCreated: at.Add(-time.Hour), BudgetRevision: 4,
	}
	checkAllSet(t, st)
	checkAllSet(t, st.Decision)
	checkAllSet(t, st.Decision.Rules[0])
	checkAllSet(t, st.Decision.Explain)
	checkAllSet(t, st.Decision.Memory)
	raw, err := MarshalState(&st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalState(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, st)
	}
}

// TestStateOrderSortsAsCompareStates: the order strings the Redis store
// compares in Lua sort as budget.CompareStates orders the states.
func TestStateOrderSortsAsCompareStates(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	states := []budget.State{
		{},
		{Computed: at},
		{Computed: at.Add(time.Nanosecond)},
		{BudgetRevision: 1, Computed: at.Add(-time.Hour)},
		{BudgetRevision: 1, Computed: at},
		{BudgetRevision: 9, Computed: at},
		{BudgetRevision: 10, Computed: at.Add(-time.Hour)},
		{BudgetCreated: at.Add(-time.Hour), BudgetRevision: 12, Computed: at.Add(time.Hour)},
		{BudgetCreated: at, BudgetRevision: 1, Computed: at},
		{BudgetCreated: at, BudgetRevision: 1, Computed: at.Add(time.Second)},
		{BudgetCreated: at.Add(time.Millisecond), Computed: at},
	}
	for i := range states {
		for j := range states {
			want := budget.CompareStates(&states[i], &states[j])
			if got := strings.Compare(StateOrder(&states[i]), StateOrder(&states[j])); got != want {
				t.Errorf("states %d and %d: order strings compare %d, CompareStates %d", i, j, got, want)
			}
		}
	}
	if got, want := StateOrder(&states[4])[40:], fmt.Sprintf("%019d", at.UnixNano()); got != want {
		t.Errorf("order string's computation = %q, want %q", got, want)
	}
}

func TestPointRoundTrip(t *testing.T) {
	p := budget.HistoryPoint{Hour: 5, Computed: time.Date(2026, 3, 1, 5, 59, 50, 0, time.UTC), Spent: 1, Forecast: 2,
		ForecastUnenforced: 3, FixedRateFactor: 0.5, ReservoirFactor: 0.25, Exhausted: true}
	checkAllSet(t, p)
	raw, err := MarshalPoint(&p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalPoint(raw)
	if err != nil || !reflect.DeepEqual(got, p) {
		t.Errorf("round trip: %+v, %v; want %+v", got, err, p)
	}
}

func TestNameToken(t *testing.T) {
	for _, name := range []string{"", "a", "with \"quotes\" and ünïcode", "x:y|z"} {
		tok := EncodeNameToken("p1:", name)
		if got, err := DecodeNameToken("p1:", tok); err != nil || got != name {
			t.Errorf("DecodeNameToken(EncodeNameToken(%q)) = %q, %v", name, got, err)
		}
		if _, err := DecodeNameToken("p2:", tok); err == nil {
			t.Errorf("a token of %q decoded with another prefix", name)
		}
	}
}

func TestCheckUsage(t *testing.T) {
	feb := time.Date(2028, 2, 10, 0, 0, 0, 0, time.UTC) // a leap year: 696 hours
	tests := []struct {
		name     string
		budget   string
		month    time.Time
		hour     int
		r, s     int64
		accepted bool
	}{
		{"first hour", "b", feb, 0, 1, 1, true},
		{"last hour of a leap February", "b", feb, 695, 1, 1, true},
		{"past the month", "b", feb, 696, 1, 1, false},
		{"negative hour", "b", feb, -1, 1, 1, false},
		{"no budget", "", feb, 0, 1, 1, false},
		{"no month", "b", time.Time{}, 0, 1, 1, false},
		{"negative requests", "b", feb, 0, -1, 0, false},
		{"negative sampled", "b", feb, 0, 0, -1, false},
	}
	for _, tt := range tests {
		if err := CheckUsage(tt.budget, tt.month, tt.hour, tt.r, tt.s); (err == nil) != tt.accepted {
			t.Errorf("%s: CheckUsage = %v, want accepted %v", tt.name, err, tt.accepted)
		}
	}
}

// TestBudgetAmountsAcrossVersions: a record written before amounts were
// micros reads with its amounts in micros, and a record written now still
// carries the amounts in units that earlier replicas read.
func TestBudgetAmountsAcrossVersions(t *testing.T) {
	old, err := UnmarshalBudget([]byte(`{"name":"old","monthly_amount":1234.5,"price_per_million":0.3,"mode":"enforce","revision":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if old.MonthlyAmountMicros != 1_234_500_000 || old.PricePerMillionMicros != 300_000 {
		t.Errorf("an earlier record reads as %d and %d micros, want 1234500000 and 300000", old.MonthlyAmountMicros, old.PricePerMillionMicros)
	}
	raw, err := MarshalBudget(&budget.Budget{Name: "new", MonthlyAmountMicros: 2_500_000, PricePerMillionMicros: 5_000_000})
	if err != nil {
		t.Fatal(err)
	}
	var earlier struct {
		MonthlyAmount   float64 `json:"monthly_amount"`
		PricePerMillion float64 `json:"price_per_million"`
	}
	if err := json.Unmarshal(raw, &earlier); err != nil || earlier.MonthlyAmount != 2.5 || earlier.PricePerMillion != 5 {
		t.Errorf("a record as an earlier replica reads it: %+v, %v; want 2.5 and 5", earlier, err)
	}
}

// TestBudgetRecordKeepsEveryField: the store's layer of the budget's
// field-coverage test (internal/cli, TestEveryBudgetFieldIsCarried). A
// budget with every field filled by reflection, so that a field added to
// budget.Budget is filled without anyone listing it, comes back whole from
// its stored form and from CloneBudget (how the embedded store copies it).
func TestBudgetRecordKeepsEveryField(t *testing.T) {
	b := budgettest.Filled(t, 1)
	raw, err := MarshalBudget(&b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalBudget(raw)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, got); diff != "" {
		t.Errorf("record: MarshalBudget then UnmarshalBudget lost a field (-want +got):\n%s\n%s", diff, raw)
	}
	if diff := cmp.Diff(b, CloneBudget(b)); diff != "" {
		t.Errorf("record: CloneBudget lost a field (-want +got):\n%s", diff)
	}
}
