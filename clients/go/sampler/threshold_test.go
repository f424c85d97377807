package sampler

import (
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// The specification's table (tracestate-probability-sampling.md, "Converting
// floating-point probability to threshold value"): 1-in-N probabilities at
// precision 3, 4 and 5, the thresholds written, and the probabilities and
// adjusted counts those thresholds stand for.
func TestProbabilityToThresholdSpecTable(t *testing.T) {
	type atPrecision struct {
		th       string
		prob     float64
		adjusted float64
	}
	tests := []struct {
		p    float64
		want [3]atPrecision // precision 3, 4, 5
	}{
		{1, [3]atPrecision{{"0", 1, 1}, {"0", 1, 1}, {"0", 1, 1}}},
		{0.5, [3]atPrecision{{"8", 0.5, 2}, {"8", 0.5, 2}, {"8", 0.5, 2}}},
		{0.3333333333333333, [3]atPrecision{{"aab", 0.333251953125, 3.0007326007326007}, {"aaab", 0.3333282470703125, 3.00004577706569}, {"aaaab", 0.33333301544189453, 3.0000028610256777}}},
		{0.25, [3]atPrecision{{"c", 0.25, 4}, {"c", 0.25, 4}, {"c", 0.25, 4}}},
		{0.2, [3]atPrecision{{"ccd", 0.199951171875, 5.001221001221001}, {"cccd", 0.1999969482421875, 5.0000762951094835}, {"ccccd", 0.19999980926513672, 5.0000047683761295}}},
		{0.125, [3]atPrecision{{"e", 0.125, 8}, {"e", 0.125, 8}, {"e", 0.125, 8}}},
		{0.1, [3]atPrecision{{"e66", 0.10009765625, 9.990243902439024}, {"e666", 0.100006103515625, 9.99938968568813}, {"e6666", 0.10000038146972656, 9.999961853172863}}},
		{0.0625, [3]atPrecision{{"f", 0.0625, 16}, {"f", 0.0625, 16}, {"f", 0.0625, 16}}},
		{0.01, [3]atPrecision{{"fd71", 0.0099945068359375, 100.05496183206107}, {"fd70a", 0.010000228881835938, 99.99771123402633}, {"fd70a4", 0.009999990463256836, 100.00009536752259}}},
		{0.001, [3]atPrecision{{"ffbe7", 0.0010004043579101562, 999.5958055290753}, {"ffbe77", 0.0009999871253967285, 1000.012874769029}, {"ffbe76d", 0.000999998301267624, 1000.0016987352618}}},
		{0.0001, [3]atPrecision{{"fff972", 0.00010001659393310547, 9998.340882002383}, {"fff9724", 0.00010000169277191162, 9999.830725674266}, {"fff97247", 0.00010000006295740604, 9999.99370426336}}},
		{0.00001, [3]atPrecision{{"ffff584", 9.998679161071777e-06, 100013.21013412817}, {"ffff583a", 1.00000761449337e-05, 99999.238556461}, {"ffff583a5", 1.0000003385357559e-05, 99999.96614643588}}},
		{0.000001, [3]atPrecision{{"ffffef4", 9.98377799987793e-07, 1.0016248358208955e+06}, {"ffffef39", 1.00000761449337e-06, 999992.38556461}, {"ffffef391", 9.999930625781417e-07, 1.0000069374699865e+06}}},
	}
	for _, tt := range tests {
		for i, w := range tt.want {
			precision := 3 + i
			th, err := ProbabilityToThreshold(tt.p, precision)
			if err != nil {
				t.Fatalf("ProbabilityToThreshold(%v, %d): %v", tt.p, precision, err)
			}
			if got := th.TValue(); got != w.th {
				t.Errorf("ProbabilityToThreshold(%v, %d) = th:%s, want th:%s", tt.p, precision, got, w.th)
			}
			parsed, err := ParseThreshold(w.th)
			if err != nil || parsed != th {
				t.Errorf("ParseThreshold(%q) = %x, %v, want %x", w.th, parsed, err, th)
			}
			// The table prints Python's floats: compare to a few ulps.
			if got := th.Probability(); !nearly(got, w.prob) {
				t.Errorf("th:%s Probability() = %v, want %v", w.th, got, w.prob)
			}
			if got := th.AdjustedCount(); !nearly(got, w.adjusted) {
				t.Errorf("th:%s AdjustedCount() = %v, want %v", w.th, got, w.adjusted)
			}
		}
	}
}

func nearly(a, b float64) bool { return a == b || (a-b)/b < 1e-14 && (b-a)/b < 1e-14 }

// The examples in the specification's text.
func TestThresholdSpecExamples(t *testing.T) {
	// "if the sampling probability is 1% ... with 5 digits of precision
	// ... 0xfd70a400000000 ... ot=th:fd70a4".
	th, err := ProbabilityToThreshold(0.01, 5)
	if err != nil || th != 0xfd70a400000000 || th.TValue() != "fd70a4" {
		t.Errorf("1%% at precision 5 = %x %q %v, want fd70a400000000 th:fd70a4", uint64(th), th.TValue(), err)
	}
	// "tracestate: ot=th:0 ... 100% sampling"; "ot=th:c ... 25%".
	for s, want := range map[string]float64{"0": 1, "c": 0.25, "8": 0.5} {
		th, err := ParseThreshold(s)
		if err != nil || th.Probability() != want {
			t.Errorf("th:%s = %v (%v), want probability %v", s, th.Probability(), err, want)
		}
	}
	if th, _ := ParseThreshold("c"); th != 0xc0000000000000 {
		t.Errorf("th:c = %x, want c0000000000000", uint64(th))
	}
	// "ot=rv:6e6d1a75832a2f ... supports making a consistent positive
	// sampling decision at probabilities ranging from 56.9% through 100%
	// (i.e., rejection threshold values 0x6e6d1a75832a2f through 0), the
	// same as for a hexadecimal TraceID ending in 6e6d1a75832a2f".
	rv, err := ParseRandomness("6e6d1a75832a2f")
	if err != nil || rv != 0x6e6d1a75832a2f {
		t.Fatalf("rv = %x, %v", uint64(rv), err)
	}
	id := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0x6e, 0x6d, 0x1a, 0x75, 0x83, 0x2a, 0x2f}
	if got := RandomnessFromTraceID(id); got != rv {
		t.Errorf("RandomnessFromTraceID = %x, want %x", uint64(got), uint64(rv))
	}
	for _, c := range []struct {
		th   Threshold
		keep bool
	}{{0, true}, {0x6e6d1a75832a2f, true}, {0x6e6d1a75832a30, false}, {MaxAdjustedCount - 1, false}} {
		if got := c.th.ShouldSample(rv); got != c.keep {
			t.Errorf("th %x ShouldSample(rv) = %v, want %v", uint64(c.th), got, c.keep)
		}
	}
}

func TestProbabilityToThresholdEdges(t *testing.T) {
	tests := []struct {
		p         float64
		precision int
		want      string
		wantErr   error
	}{
		{p: MinProbability, precision: 4, want: "ffffffffffffff"},
		{p: 0.5, precision: 0, want: "8"},                              // precision clamped to 1
		{p: 0.3333333333333333, precision: 1, want: "b"},               // rounded half up
		{p: 0.3333333333333333, precision: 99, want: "aaaaaaaaaaaaac"}, // the float is a little under 1/3: exact to 14 digits
		{p: 1 - 1e-17, precision: 4, want: "0"},                        // is 1 as a float64
		{p: 0.99999, precision: 4, want: "0001"},                       // no extra digits near 1: 0000|a7c5... rounds up
		{p: 0.99999, precision: 14, want: "0000a7c5ac4718"},
		{p: 0, wantErr: ErrProbabilityRange},
		{p: MinProbability / 2, wantErr: ErrProbabilityRange},
		{p: -0.5, wantErr: ErrProbabilityRange},
		{p: 1.0000001, wantErr: ErrProbabilityRange},
		{p: nan(), wantErr: ErrProbabilityRange},
	}
	for _, tt := range tests {
		th, err := ProbabilityToThreshold(tt.p, tt.precision)
		if !errors.Is(err, tt.wantErr) || err == nil && th.TValue() != tt.want {
			t.Errorf("ProbabilityToThreshold(%v, %d) = th:%s, %v; want th:%s, %v", tt.p, tt.precision, th.TValue(), err, tt.want, tt.wantErr)
		}
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestParseInvalid(t *testing.T) {
	for _, s := range []string{"", "g", "C", "0x8", "-1", "123456789abcdef", " 8"} {
		if _, err := ParseThreshold(s); !errors.Is(err, ErrThresholdSyntax) {
			t.Errorf("ParseThreshold(%q) = %v, want ErrThresholdSyntax", s, err)
		}
	}
	for _, s := range []string{"", "6e6d1a75832a2", "6e6d1a75832a2f0", "6E6D1A75832A2F", "6e6d1a75832a2g"} {
		if _, err := ParseRandomness(s); !errors.Is(err, ErrRandomnessSyntax) {
			t.Errorf("ParseRandomness(%q) = %v, want ErrRandomnessSyntax", s, err)
		}
	}
}

func TestParseOTelTraceState(t *testing.T) {
	tests := []struct {
		ot      string
		want    OTelTraceState
		wantErr error
	}{
		{ot: "", want: OTelTraceState{}},
		{ot: "th:c", want: OTelTraceState{Threshold: 0xc0000000000000, HasThreshold: true}},
		{ot: "rv:6e6d1a75832a2f", want: OTelTraceState{Randomness: 0x6e6d1a75832a2f, HasRandomness: true}},
		{ot: "p:8;th:fd70a4;k1:A.b_c-9;rv:00000000000001", want: OTelTraceState{Threshold: 0xfd70a400000000, HasThreshold: true, Randomness: 1, HasRandomness: true}},
		{ot: "foo:", want: OTelTraceState{}},
		{ot: "th:c;th:8", wantErr: ErrOTelSyntax},
		{ot: "k1:1;rv:00000000000001;k1:2", wantErr: ErrOTelSyntax},
		{ot: "th:8;", wantErr: ErrOTelSyntax},
		{ot: ";th:8", wantErr: ErrOTelSyntax},
		{ot: "th", wantErr: ErrOTelSyntax},
		{ot: "TH:8", wantErr: ErrOTelSyntax},
		{ot: "1k:8", wantErr: ErrOTelSyntax},
		{ot: "k:a=b", wantErr: ErrOTelSyntax},
		{ot: "th:8 ", wantErr: ErrThresholdSyntax}, // a th value of other characters is a bad th
		{ot: "th:C", wantErr: ErrThresholdSyntax},
		{ot: "th:", wantErr: ErrThresholdSyntax},
		{ot: "rv:123", wantErr: ErrRandomnessSyntax},
		{ot: "k:" + strings.Repeat("x", 255), wantErr: ErrOTelTooLong},
	}
	for _, tt := range tests {
		got, err := ParseOTelTraceState(tt.ot)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("ParseOTelTraceState(%q) = %+v, %v; want %+v, %v", tt.ot, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAppendOTelTraceState(t *testing.T) {
	c := Threshold(0xc0000000000000)
	tests := []struct {
		ot      string
		set     bool
		want    string
		wantErr error
	}{
		// The specification's examples of setting a value.
		{ot: "p:8;r:62", set: true, want: "p:8;r:62;th:c"},
		{ot: "p:8;th:7;r:62", set: true, want: "p:8;r:62;th:c"},
		{ot: "", set: true, want: "th:c"},
		{ot: "th:8;rv:6e6d1a75832a2f", set: false, want: "rv:6e6d1a75832a2f"},
		{ot: "th:8", set: false, want: ""},
		{ot: "k:" + strings.Repeat("x", 250), set: true, wantErr: ErrOTelTooLong},
		{ot: "th:8;th:8", set: true, wantErr: ErrOTelSyntax},
	}
	for _, tt := range tests {
		dst := []byte("ot=")
		got, err := AppendOTelTraceState(dst, tt.ot, c, tt.set)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("AppendOTelTraceState(%q, %v) error %v, want %v", tt.ot, tt.set, err, tt.wantErr)
			continue
		}
		want := "ot=" + tt.want
		if err != nil {
			want = "ot=" // nothing appended
		}
		if string(got) != want {
			t.Errorf("AppendOTelTraceState(%q, %v) = %q, want %q", tt.ot, tt.set, got, want)
		}
	}
}

// A span that follows its parent carries the parent's threshold only when
// the parent was sampled, had one, and its decision agrees with it; the
// proportional composition multiplies probabilities.
func TestThresholdComposition(t *testing.T) {
	half := OTelTraceState{Threshold: 0x80000000000000, HasThreshold: true}
	tests := []struct {
		name    string
		parent  OTelTraceState
		sampled bool
		r       Randomness
		want    Threshold
		wantOK  bool
	}{
		{name: "sampled, consistent", parent: half, sampled: true, r: 0x80000000000000, want: 0x80000000000000, wantOK: true},
		{name: "sampled, inconsistent: erased", parent: half, sampled: true, r: 0x7fffffffffffff},
		{name: "not sampled", parent: half, sampled: false, r: 0xffffffffffffff},
		{name: "sampled without a threshold: unknown", parent: OTelTraceState{}, sampled: true, r: 0xffffffffffffff},
		{name: "always", parent: OTelTraceState{HasThreshold: true}, sampled: true, r: 0, want: 0, wantOK: true},
	}
	for _, tt := range tests {
		got, ok := ParentThreshold(tt.parent, tt.sampled, tt.r)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: ParentThreshold = %x %v, want %x %v", tt.name, uint64(got), ok, uint64(tt.want), tt.wantOK)
		}
	}

	for _, c := range []struct {
		from    string
		p       float64
		want    string
		wantErr error
	}{
		{from: "8", p: 0.5, want: "c"},
		{from: "c", p: 0.5, want: "e"},
		{from: "0", p: 0.01, want: "fd70a"},
		{from: "8", p: 1, want: "8"},
		{from: "ffffffffffffff", p: 0.5, wantErr: ErrProbabilityRange},
		{from: "8", p: 0, wantErr: ErrProbabilityRange},
		{from: "8", p: 2, wantErr: ErrProbabilityRange},
	} {
		from, _ := ParseThreshold(c.from)
		got, err := from.Scale(c.p, DefaultThresholdPrecision)
		if !errors.Is(err, c.wantErr) || err == nil && got.TValue() != c.want {
			t.Errorf("th:%s Scale(%v) = th:%s, %v; want th:%s, %v", c.from, c.p, got.TValue(), err, c.want, c.wantErr)
		}
	}
}

// Parsing, encoding and deciding allocate nothing: they run on span starts.
func TestThresholdDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, maxOTelLen)
	const ot = "p:8;th:fd70a4;k1:v;rv:6e6d1a75832a2f"
	var id trace.TraceID
	allocs := testing.AllocsPerRun(100, func() {
		st, err := ParseOTelTraceState(ot)
		if err != nil {
			t.Fatal(err)
		}
		th, err := ProbabilityToThreshold(0.01, DefaultThresholdPrecision)
		if err != nil {
			t.Fatal(err)
		}
		_ = th.ShouldSample(RandomnessFromTraceID(id))
		_, _ = ParentThreshold(st, true, st.Randomness)
		if _, err := AppendOTelTraceState(buf[:0], ot, th, true); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func BenchmarkParseOTelTraceState(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ParseOTelTraceState("p:8;th:fd70a4;rv:6e6d1a75832a2f")
	}
}

func BenchmarkAppendOTelTraceState(b *testing.B) {
	buf := make([]byte, 0, maxOTelLen)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = AppendOTelTraceState(buf[:0], "p:8;th:fd70a4;rv:6e6d1a75832a2f", 0xc0000000000000, true)
	}
}
