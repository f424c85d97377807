package record

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulestest"
)

func TestRuleRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	tests := []rules.Rule{
		{Name: "minimal", Priority: 1},
		{
			Name: "full", Priority: 9999, FixedRate: 0.1 + 0.2, ReservoirSize: 1_000_000,
			ServiceName: "a*", ServiceType: "b?", Host: "h", HTTPMethod: "GET", URLPath: "/x", ResourceARN: "arn:*",
			Attributes: map[string]string{"k": "v*"}, Description: "ünïcode \"quoted\"",
			Labels: map[string]string{"team": "x"}, Tags: map[string]string{"Stage": "prod"},
			Boost: &rules.RateBoost{MaxRate: 0.75, Cooldown: 1440 * time.Minute}, Revision: 42, CreateTime: at, UpdateTime: at.Add(time.Hour),
		},
		rulestest.Filled(t, 1), // every field, whatever fields rules.Rule has
	}
	for _, r := range tests {
		b, err := MarshalRule(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalRule(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("the store record of %q lost a field (-put +read):\n%s\nstored: %s", r.Name, diff, b)
		}
	}
}

// TestStoredFieldNames pins the names that stored data and edit.lua rely on.
func TestStoredFieldNames(t *testing.T) {
	r := rules.Rule{Name: "n", Revision: 7}
	b, err := MarshalRule(&r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "revision", "priority", "fixed_rate", "reservoir_size", "create_time", "update_time"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stored rule %s lacks %q", b, k)
		}
	}
	if m["revision"] != 7.0 {
		t.Errorf("revision = %v, want 7", m["revision"])
	}
}

func TestUnmarshalRuleRejectsJunk(t *testing.T) {
	if _, err := UnmarshalRule([]byte("{")); err == nil {
		t.Fatal("UnmarshalRule accepted malformed JSON")
	}
}

func TestPageSize(t *testing.T) {
	tests := []struct {
		in, want int
		invalid  bool
	}{
		{in: 0, want: DefaultPageSize},
		{in: 1, want: 1},
		{in: MaxPageSize, want: MaxPageSize},
		{in: MaxPageSize + 1, want: MaxPageSize},
		{in: -1, invalid: true},
	}
	for _, tt := range tests {
		got, err := PageSize(tt.in)
		var verr *rules.ValidationError
		if tt.invalid != errors.As(err, &verr) || got != tt.want {
			t.Errorf("PageSize(%d) = %d, %v; want %d, invalid %v", tt.in, got, err, tt.want, tt.invalid)
		}
	}
}

func TestParseAction(t *testing.T) {
	for _, a := range []store.Action{store.ActionCreate, store.ActionUpdate, store.ActionDelete} {
		if got, err := ParseAction(a.String()); err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v", a.String(), got, err)
		}
	}
	if _, err := ParseAction("unknown"); err == nil {
		t.Error("ParseAction accepted \"unknown\"")
	}
}

func TestHoursIn(t *testing.T) {
	for y := 1999; y <= 2401; y++ {
		for m := time.January; m <= time.December; m++ {
			start := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
			for _, at := range []time.Time{start, start.AddDate(0, 1, 0).Add(-time.Nanosecond)} {
				if got, want := hoursIn(at), budget.HoursIn(start); got != want {
					t.Fatalf("hoursIn(%v) = %d, want %d", at, got, want)
				}
			}
		}
	}
}
