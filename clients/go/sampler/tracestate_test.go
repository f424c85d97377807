package sampler

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// fixedRateSampler returns a sampler whose only rule keeps spans at rate
// and has a current quota of zero, so that the fixed rate decides.
func fixedRateSampler(t *testing.T, rate float64) *Sampler {
	t.Helper()
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: rate}))
	s.applyTargets(targets(1, clk.Now().Add(time.Hour), &pb.SamplingTarget{RuleName: "r", FixedRate: rate}))
	return s
}

// idWithRandomness returns a trace ID whose last 56 bits are r.
func idWithRandomness(r uint64) trace.TraceID {
	id := trace.TraceID{0: 1}
	binary.BigEndian.PutUint64(id[8:], r)
	return id
}

func withTraceState(p sdktrace.SamplingParameters, ts string) sdktrace.SamplingParameters {
	state, err := trace.ParseTraceState(ts)
	if err != nil {
		panic(err)
	}
	p.ParentContext = trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}.WithTraceState(state))
	return p
}

func randomIDs(n int, seed uint64) []trace.TraceID {
	rng := rand.New(rand.NewPCG(seed, seed))
	ids := make([]trace.TraceID, n)
	for i := range ids {
		binary.BigEndian.PutUint64(ids[i][:8], rng.Uint64())
		binary.BigEndian.PutUint64(ids[i][8:], rng.Uint64())
	}
	return ids
}

// The SDK's fixed rates keep a trace exactly when its randomness is at or
// above the threshold the specification's table gives at 4 digits, and say
// so in the tracestate: a trace just below the threshold is dropped, one at
// it kept, and so is every random trace the threshold keeps.
func TestFixedRateThresholdsFromSpec(t *testing.T) {
	tests := []struct {
		rate float64
		th   string // the specification's, precision 4; "" for never
	}{
		{1, "0"},
		{0.5, "8"},
		{1.0 / 3, "aaab"},
		{0.25, "c"},
		{0.1, "e666"},
		{0.01, "fd70a"},
		{0.001, "ffbe77"},
		{MinProbability, "ffffffffffffff"},
		{0, ""},
	}
	ids := randomIDs(2000, 1)
	for _, tt := range tests {
		s := fixedRateSampler(t, tt.rate)
		var cut uint64 = MaxAdjustedCount // never
		if tt.th != "" {
			th, err := ParseThreshold(tt.th)
			if err != nil {
				t.Fatal(err)
			}
			cut = uint64(th)
		}
		probe := append([]trace.TraceID{idWithRandomness(0), idWithRandomness(MaxAdjustedCount - 1)}, ids...)
		if cut > 0 && cut < MaxAdjustedCount {
			probe = append(probe, idWithRandomness(cut-1), idWithRandomness(cut))
		}
		for _, id := range probe {
			r := binary.BigEndian.Uint64(id[8:]) & (MaxAdjustedCount - 1)
			res := s.ShouldSample(params(id))
			want, wantTS := r >= cut, ""
			if want {
				wantTS = "ot=th:" + tt.th
			}
			if got := res.Decision == sdktrace.RecordAndSample; got != want || res.Tracestate.String() != wantTS {
				t.Fatalf("rate %v, R %014x: sampled %v with tracestate %q, want %v with %q", tt.rate, r, got, res.Tracestate.String(), want, wantTS)
			}
			if e := s.Explain(params(id)); e.Sampled != want || e.Threshold != tt.th && want {
				t.Fatalf("rate %v, R %014x: Explain = %+v", tt.rate, r, e)
			}
		}
	}
}

// Over many random trace IDs, the fraction a fixed rate keeps is its
// threshold's probability, within five standard deviations; no clock.
func TestFixedRateFraction(t *testing.T) {
	const n = 200_000
	ids := randomIDs(n, 7)
	for _, rate := range []float64{0.5, 1.0 / 3, 0.1, 0.01, 0.001} {
		s := fixedRateSampler(t, rate)
		kept := 0
		for _, id := range ids {
			if sampled(s, params(id)) {
				kept++
			}
		}
		mean := n * rate
		if sd := math.Sqrt(n * rate * (1 - rate)); math.Abs(float64(kept)-mean) > 5*sd {
			t.Errorf("rate %v: kept %d of %d, want %.0f ± %.0f", rate, kept, n, mean, 5*sd)
		}
	}
}

// Decisions are consistent: a trace kept at one rate is kept at every
// higher one, by any instance, as the specification defines.
func TestFixedRateConsistentAcrossRates(t *testing.T) {
	rates := []float64{0.01, 0.1, 0.25, 1.0 / 3, 0.5, 0.9}
	samplers := make([]*Sampler, len(rates))
	for i, r := range rates {
		samplers[i] = fixedRateSampler(t, r)
	}
	for _, id := range randomIDs(20_000, 3) {
		for i := 1; i < len(rates); i++ {
			if sampled(samplers[i-1], params(id)) && !sampled(samplers[i], params(id)) {
				t.Fatalf("trace %v kept at rate %v but not at %v", id, rates[i-1], rates[i])
			}
		}
	}
}

// The tracestate of a root span: rv replaces the trace ID's randomness and
// stays, other ot members and other vendors' entries stay, a malformed ot
// entry is used for nothing and left as it is.
func TestRootTraceState(t *testing.T) {
	tests := []struct {
		name    string
		id      trace.TraceID
		ts      string
		sampled bool
		want    string
	}{
		{name: "rv keeps a trace its ID would not", id: outID, ts: "ot=rv:ffffffffffffff", sampled: true, want: "ot=rv:ffffffffffffff;th:e666"},
		{name: "rv drops a trace its ID would keep", id: inID, ts: "ot=rv:00000000000000", want: "ot=rv:00000000000000"},
		{name: "rv at the threshold", id: outID, ts: "ot=rv:e6660000000000", sampled: true, want: "ot=rv:e6660000000000;th:e666"},
		{name: "rv just below it", id: inID, ts: "ot=rv:e665ffffffffff", want: "ot=rv:e665ffffffffff"},
		{name: "entries kept, ot moves first", id: inID, ts: "vendor=abc,ot=p:8;k1:v,other@t=1", sampled: true, want: "ot=p:8;k1:v;th:e666,vendor=abc,other@t=1"},
		{name: "another's threshold replaced", id: inID, ts: "ot=th:8;p:8", sampled: true, want: "ot=p:8;th:e666"},
		{name: "dropped: an inherited threshold erased", id: outID, ts: "ot=th:0;p:8,vendor=abc", want: "ot=p:8,vendor=abc"},
		{name: "malformed th: left, trace ID decides", id: inID, ts: "ot=th:zz,vendor=abc", sampled: true, want: "ot=th:zz,vendor=abc"},
		{name: "malformed rv: left, trace ID decides", id: inID, ts: "ot=rv:123", sampled: true, want: "ot=rv:123"},
		{name: "malformed member: left", id: outID, ts: "ot=th:0;;x", want: "ot=th:0;;x"},
		{name: "too long to add th: none written", id: inID, ts: "ot=k:" + strings.Repeat("x", 250), sampled: true, want: "ot=k:" + strings.Repeat("x", 250)},
	}
	s := fixedRateSampler(t, 0.1)
	for _, tt := range tests {
		res := s.ShouldSample(withTraceState(params(tt.id), tt.ts))
		if got := res.Decision == sdktrace.RecordAndSample; got != tt.sampled || res.Tracestate.String() != tt.want {
			t.Errorf("%s: sampled %v, tracestate %q; want %v, %q", tt.name, got, res.Tracestate.String(), tt.sampled, tt.want)
		}
	}
}

// A span the reservoir, a borrowed trace or the local default's trace per
// second admitted carries no threshold, and loses one its context had; the
// local default's fixed rate writes its own.
func TestNoThresholdWithoutProbability(t *testing.T) {
	s, clk := newTestSampler(t)
	clk.Add(time.Second) // past the wait for the first rules
	// Before any rules: the local default's one trace a second, then its
	// 5 % by randomness.
	if res := s.ShouldSample(withTraceState(params(outID), "ot=th:8;rv:ffffffffffffff")); res.Decision != sdktrace.RecordAndSample || res.Tracestate.String() != "ot=rv:ffffffffffffff" {
		t.Errorf("local default's token: %v %q, want sampled, ot=rv:ffffffffffffff", res.Decision, res.Tracestate.String())
	}
	if res := s.ShouldSample(params(inID)); res.Decision != sdktrace.RecordAndSample || res.Tracestate.String() != "ot=th:f3333" {
		t.Errorf("local default's 5 %%: %v %q, want sampled, ot=th:f3333", res.Decision, res.Tracestate.String())
	}

	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.5, ReservoirSize: 1}))
	// No quota yet: a borrowed trace.
	if e := s.Explain(params(outID)); e.Reason != ReasonBorrowed {
		t.Fatalf("want a borrowed trace first: %+v", e)
	}
	if res := s.ShouldSample(withTraceState(params(outID), "ot=th:8")); res.Decision != sdktrace.RecordAndSample || res.Tracestate.Len() != 0 {
		t.Errorf("borrowed: %v %q, want sampled without a tracestate", res.Decision, res.Tracestate.String())
	}
	s.applyTargets(targets(1, clk.Now().Add(time.Hour), &pb.SamplingTarget{RuleName: "r", FixedRate: 0.5, ReservoirQuota: 1}))
	clk.Add(time.Second)
	if e := s.Explain(params(inID)); e.Reason != ReasonReservoir || e.Threshold != "" {
		t.Fatalf("want the reservoir, without a threshold: %+v", e)
	}
	if res := s.ShouldSample(withTraceState(params(inID), "vendor=a,ot=th:0;p:8")); res.Decision != sdktrace.RecordAndSample || res.Tracestate.String() != "ot=p:8,vendor=a" {
		t.Errorf("reservoir: %v %q, want sampled with ot=p:8,vendor=a", res.Decision, res.Tracestate.String())
	}
	// The quota is spent: the fixed rate again.
	if e := s.Explain(params(inID)); e.Reason != ReasonFixedRate || e.Threshold != "8" {
		t.Errorf("want the fixed rate with th 8: %+v", e)
	}
}

// A span that follows its parent carries the parent's threshold when the
// parent was sampled consistently with it, and none otherwise: the
// specification's parent-based threshold.
func TestParentThresholdComposes(t *testing.T) {
	s, _ := newTestSampler(t)
	half := idWithRandomness(0x80000000000000) // kept at th:8, just
	tests := []struct {
		name    string
		id      trace.TraceID
		flags   trace.TraceFlags
		ts      string
		want    string
		wantTh  string
		sampled bool
	}{
		{name: "consistent: kept", id: half, flags: trace.FlagsSampled, ts: "ot=th:8,vendor=a", want: "ot=th:8,vendor=a", wantTh: "8", sampled: true},
		{name: "consistent by rv: kept", id: outID, flags: trace.FlagsSampled, ts: "ot=th:c;rv:c0000000000000", want: "ot=th:c;rv:c0000000000000", wantTh: "c", sampled: true},
		{name: "inconsistent: erased", id: idWithRandomness(0x7fffffffffffff), flags: trace.FlagsSampled, ts: "vendor=a,ot=th:8;p:8", want: "ot=p:8,vendor=a", sampled: true},
		{name: "inconsistent by rv: erased, rv kept", id: inID, flags: trace.FlagsSampled, ts: "ot=th:8;rv:00000000000000", want: "ot=rv:00000000000000", sampled: true},
		{name: "no threshold: none", id: inID, flags: trace.FlagsSampled, ts: "vendor=a", want: "vendor=a", sampled: true},
		{name: "unsampled: as it is", id: outID, flags: 0, ts: "ot=th:8", want: "ot=th:8"},
		{name: "malformed: as it is", id: outID, flags: trace.FlagsSampled, ts: "ot=th:8;;", want: "ot=th:8;;", sampled: true},
		{name: "th after another member", id: half, flags: trace.FlagsSampled, ts: "ot=p:8;th:8", want: "ot=p:8;th:8", wantTh: "8", sampled: true},
		{name: "inconsistent, rv first: erased", id: inID, flags: trace.FlagsSampled, ts: "ot=rv:7fffffffffffff;th:8", want: "ot=rv:7fffffffffffff", sampled: true},
		{name: "inconsistent, two th: as it is", id: outID, flags: trace.FlagsSampled, ts: "ot=th:8;th:0", want: "ot=th:8;th:0", sampled: true},
		{name: "inconsistent, bad rv: as it is", id: outID, flags: trace.FlagsSampled, ts: "ot=th:8;rv:zz", want: "ot=th:8;rv:zz", sampled: true},
		{name: "inconsistent, bad member: as it is", id: outID, flags: trace.FlagsSampled, ts: "ot=th:8;K:b", want: "ot=th:8;K:b", sampled: true},
	}
	for _, tt := range tests {
		state, err := trace.ParseTraceState(tt.ts)
		if err != nil {
			t.Fatal(err)
		}
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tt.id, SpanID: trace.SpanID{1}, TraceFlags: tt.flags, TraceState: state, Remote: true})
		p := params(tt.id)
		p.ParentContext = trace.ContextWithRemoteSpanContext(context.Background(), sc)
		res := s.ShouldSample(p)
		if got := res.Decision == sdktrace.RecordAndSample; got != tt.sampled || res.Tracestate.String() != tt.want {
			t.Errorf("%s: sampled %v, tracestate %q; want %v, %q", tt.name, got, res.Tracestate.String(), tt.sampled, tt.want)
		}
		if e := s.Explain(p); e.Threshold != tt.wantTh && tt.sampled {
			t.Errorf("%s: Explain threshold %q, want %q", tt.name, e.Threshold, tt.wantTh)
		}
	}
}

// A trace this SDK kept at one rate, followed by a child service on its
// parent, then thinned by a proportional downstream sampler, keeps a
// threshold whose decisions agree at every stage.
func TestThresholdChain(t *testing.T) {
	root := fixedRateSampler(t, 0.25)
	child, _ := newTestSampler(t)
	kept, thinned := 0, 0
	for _, id := range randomIDs(20_000, 5) {
		res := root.ShouldSample(params(id))
		if res.Decision != sdktrace.RecordAndSample {
			continue
		}
		kept++
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, TraceState: res.Tracestate, Remote: true})
		p := params(id)
		p.ParentContext = trace.ContextWithRemoteSpanContext(context.Background(), sc)
		cres := child.ShouldSample(p)
		if cres.Decision != sdktrace.RecordAndSample || cres.Tracestate.String() != "ot=th:c" {
			t.Fatalf("child of %v: %v %q, want sampled with ot=th:c", id, cres.Decision, cres.Tracestate.String())
		}
		st, r, ok := otelState(id, cres.Tracestate)
		if !ok || !st.HasThreshold {
			t.Fatalf("child of %v: no threshold in %q", id, cres.Tracestate.String())
		}
		down, err := st.Threshold.Scale(0.5, DefaultThresholdPrecision)
		if err != nil || down.TValue() != "e" {
			t.Fatalf("th:c thinned by 1/2 = th:%s, %v; want th:e", down.TValue(), err)
		}
		if down.ShouldSample(r) {
			thinned++
		}
	}
	// Half of the quarter, within five standard deviations.
	if want, sd := float64(kept)/2, math.Sqrt(float64(kept))/2; math.Abs(float64(thinned)-want) > 5*sd {
		t.Errorf("thinned %d of %d, want %.0f ± %.0f", thinned, kept, want, 5*sd)
	}
}

// The parent path reads the tracestate without allocating when it keeps it.
func TestParentPathDoesNotAllocate(t *testing.T) {
	s, _ := newTestSampler(t)
	state, err := trace.ParseTraceState("vendor=a,ot=th:8;rv:c0000000000000")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: outID, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, TraceState: state, Remote: true})
	p := params(outID)
	p.ParentContext = trace.ContextWithRemoteSpanContext(context.Background(), sc)
	if allocs := testing.AllocsPerRun(1000, func() { s.ShouldSample(p) }); allocs != 0 {
		t.Errorf("ShouldSample with a parent allocates %v times per call", allocs)
	}
}

func TestRateThreshold(t *testing.T) {
	tests := []struct {
		rate   float64
		want   string
		wantOK bool
	}{
		{rate: 2, want: "0", wantOK: true},
		{rate: 1, want: "0", wantOK: true},
		{rate: 0.05, want: "f3333", wantOK: true},
		{rate: 0},
		{rate: MinProbability / 2},
		{rate: -1},
		{rate: math.NaN()},
	}
	for _, tt := range tests {
		th, ok := RateThreshold(tt.rate)
		if ok != tt.wantOK || ok && th.TValue() != tt.want {
			t.Errorf("RateThreshold(%v) = th:%s %v, want th:%s %v", tt.rate, th.TValue(), ok, tt.want, tt.wantOK)
		}
	}
}

func TestWithThreshold(t *testing.T) {
	tests := []struct {
		ts      string
		set     bool
		want    string
		wantErr error
	}{
		{ts: "", set: true, want: "ot=th:c"},
		{ts: "a=1,ot=rv:00000000000001,b=2", set: true, want: "ot=rv:00000000000001;th:c,a=1,b=2"},
		{ts: "a=1,ot=th:8", set: false, want: "a=1"},
		{ts: "a=1", set: false, want: "a=1"},
		{ts: "a=1,ot=th:8;;", set: true, want: "a=1,ot=th:8;;", wantErr: ErrOTelSyntax},
	}
	for _, tt := range tests {
		state, err := trace.ParseTraceState(tt.ts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := WithThreshold(state, 0xc0000000000000, tt.set)
		if err != tt.wantErr || got.String() != tt.want {
			t.Errorf("WithThreshold(%q, %v) = %q, %v; want %q, %v", tt.ts, tt.set, got.String(), err, tt.want, tt.wantErr)
		}
	}
}
