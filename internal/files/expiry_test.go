package files

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRulesFileExpiry: expire_time is a time, expires_in a duration from
// when the rule is created; a rule that exists keeps the expiry it has.
func TestRulesFileExpiry(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	entries, err := LoadRules("f.yaml", []byte(`rules:
  - {name: fixed, priority: 1, expire_time: "2026-03-01T12:30:00Z"}
  - {name: unquoted, priority: 1, expire_time: 2026-03-01T12:30:00Z}
  - {name: relative, priority: 1, expires_in: 30m}
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	have := now.Add(10 * time.Minute)
	tests := []struct {
		entry      int
		have, want time.Time
	}{
		{0, time.Time{}, at},
		{1, time.Time{}, at},
		{0, have, at}, // a fixed time is what the file says
		{2, time.Time{}, now.Add(30 * time.Minute)},
		{2, have, have}, // applying again does not extend it
	}
	for _, tt := range tests {
		r := entries[tt.entry].Expiry(tt.have, now)
		if !r.ExpireTime.Equal(tt.want) {
			t.Errorf("%s with %v on the server: expiry %v, want %v", r.Name, tt.have, r.ExpireTime, tt.want)
		}
	}
	if entries[2].Rule.ExpireTime != (time.Time{}) {
		t.Errorf("expires_in set the rule's expire_time at load: %v", entries[2].Rule.ExpireTime)
	}

	_, err = LoadRules("f.yaml", []byte(`rules:
  - {name: a, priority: 1, expire_time: tomorrow}
  - {name: b, priority: 1, expires_in: -5m}
  - {name: c, priority: 1, expires_in: 30m, expire_time: "2026-03-01T12:30:00Z"}
  - {name: Default, expires_in: 1h}
`))
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	want := []string{
		`f.yaml:2: rule "a" (#1): expire_time: want an RFC 3339 time such as 2026-03-01T12:30:00Z, got "tomorrow"`,
		`f.yaml:3: rule "b" (#2): expires_in: want a positive duration such as 30m or 2h, got "-5m"`,
		`f.yaml:4: rule "c" (#3): expires_in: give expire_time or expires_in, not both`,
		`f.yaml:5: rule "Default" (#4): expires_in: the Default rule never expires`,
	}
	if diff := cmp.Diff(want, fe.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
