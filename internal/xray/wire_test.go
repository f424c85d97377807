package xray

import (
	"encoding/json"
	"testing"
	"time"
)

func TestEpochTimeIn(t *testing.T) {
	want := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) // 1735787045
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{`1735787045`, want, true},                                // integer seconds (Node, Go contrib)
		{`1735787045.25`, want.Add(250 * time.Millisecond), true}, // fractional seconds (AWS SDKs, .NET)
		{`1.735787045e9`, want, true},                             // exponent form
		{`1735787045000`, want, true},                             // milliseconds (OpenTelemetry Java)
		{`1735787045250`, want.Add(250 * time.Millisecond), true}, // milliseconds with a fraction of a second
		{`"1735787045"`, want, true},                              // a number in a string
		{`"2025-01-02T03:04:05Z"`, want, true},                    // RFC 3339
		{`"2025-01-02T04:04:05.5+01:00"`, want.Add(500 * time.Millisecond), true},
		{`null`, time.Time{}, true},
		{`0`, time.Unix(0, 0).UTC(), true},
		{`-1`, time.Time{}, false},
		{`1e14`, time.Time{}, false},
		{`"tomorrow"`, time.Time{}, false},
		{`true`, time.Time{}, false},
		{`{}`, time.Time{}, false},
	} {
		var got struct{ T epochTime }
		err := json.Unmarshal([]byte(`{"T":`+tc.in+`}`), &got)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && !got.T.time().Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.in, got.T.time(), tc.want)
		}
	}
}

func TestEpochTimeOut(t *testing.T) {
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2025, 1, 2, 3, 4, 5, 678_900_000, time.UTC), `1735787045.678`},
		{time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), `1735787045`},
		{time.Time{}, `0`},
	} {
		b, err := json.Marshal(epochTime(tc.in))
		if err != nil || string(b) != tc.want {
			t.Errorf("%v: %s %v, want %s", tc.in, b, err, tc.want)
		}
	}
}

func TestWireInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{`12`, 12, true},
		{`-3`, -3, true},
		{`12.0`, 12, true},
		{`1e3`, 1000, true},
		{`9007199254740992`, 1 << 53, true},
		{`9007199254740993`, 0, false},
		{`1.5`, 0, false},
		{`1e300`, 0, false},
		{`"12"`, 0, false},
	} {
		var got struct{ N wireInt }
		err := json.Unmarshal([]byte(`{"N":`+tc.in+`}`), &got)
		if (err == nil) != tc.ok || tc.ok && int64(got.N) != tc.want {
			t.Errorf("%s: %d %v, want %d ok %v", tc.in, got.N, err, tc.want, tc.ok)
		}
	}
}
