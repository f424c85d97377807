package budget

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseMicros(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "500", want: 500_000_000},
		{in: "12.25", want: 12_250_000},
		{in: "0.1", want: 100_000}, // exact, where 0.1 × 1e6 in float64 is not
		{in: "0.000001", want: 1},
		{in: "1e3", want: 1_000_000_000},
		{in: "1000000000000", want: MaxMonthlyAmountMicros},
		{in: "-2.5", want: -2_500_000},
		{in: " 7 ", want: 7_000_000},
		{in: "0.0000001", wantErr: "at most 6 decimal places"},
		{in: "9223372036854.775807", want: math.MaxInt64},
		{in: "1e13", wantErr: "too large"},
		{in: "0x10", wantErr: "want a decimal amount"},
		{in: "1/3", wantErr: "want a decimal amount"},
		{in: "NaN", wantErr: "want a decimal amount"},
		{in: "1_000", wantErr: "want a decimal amount"},
		{in: "", wantErr: "want a decimal amount"},
	}
	for _, tt := range tests {
		got, err := ParseMicros(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseMicros(%q) = %d, %v; want an error saying %q", tt.in, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseMicros(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatMicrosRoundTrips(t *testing.T) {
	for _, tt := range []struct {
		m    int64
		want string
	}{
		{500_000_000, "500"}, {12_250_000, "12.25"}, {1, "0.000001"}, {-3_500_000, "-3.5"}, {0, "0"},
		{math.MinInt64, "-9223372036854.775808"}, {math.MaxInt64, "9223372036854.775807"},
	} {
		if got := FormatMicros(tt.m); got != tt.want {
			t.Errorf("FormatMicros(%d) = %q, want %q", tt.m, got, tt.want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		m := rng.Int64() >> rng.IntN(63)
		if back, err := ParseMicros(FormatMicros(m)); err != nil || back != m {
			t.Fatalf("ParseMicros(FormatMicros(%d)) = %d, %v", m, back, err)
		}
	}
}

func TestMicros(t *testing.T) {
	for _, tt := range []struct {
		units float64
		want  int64
	}{
		{12.25, 12_250_000}, {0.0000005, 1}, {-0.0000005, -1}, {0.0000004, 0},
		{math.NaN(), 0}, {math.Inf(1), math.MaxInt64}, {1e300, math.MaxInt64}, {math.Inf(-1), math.MinInt64},
		{9.3e12, math.MaxInt64},
	} {
		if got := Micros(tt.units); got != tt.want {
			t.Errorf("Micros(%v) = %d, want %d", tt.units, got, tt.want)
		}
	}
}
