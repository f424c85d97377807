package boost

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// reference is the model State stands for, kept the long way: every
// interval's counts, by bucket.
type reference map[int64]Counts

// baseline is the decayed sum of every interval up to bucket-2, weighted
// decay^(bucket-2-k).
func (r reference) baseline(bucket int64, decay float64) Counts {
	var sum Counts
	for k, c := range r {
		if k <= bucket-2 {
			sum = sum.Plus(c.Scale(math.Pow(decay, float64(bucket-2-k))))
		}
	}
	return sum
}

// TestStateMatchesReference adds random counts at random buckets (mostly
// advancing, some late by up to three intervals, some gaps) and checks the
// state's recent intervals and baseline against the long way.
func TestStateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	decay := Options{}.Decay()
	for run := range 200 {
		var st State
		ref := reference{}
		bucket := int64(1000)
		newest := bucket
		for range 1 + rng.IntN(60) {
			switch x := rng.IntN(10); {
			case x < 5:
				bucket = newest + 1
			case x < 7:
				bucket = newest + int64(2+rng.IntN(40)) // a gap
			case x < 9:
				bucket = newest
			default:
				bucket = newest - int64(1+rng.IntN(3)) // late
			}
			total := float64(rng.IntN(1000))
			anomalies := math.Floor(total * rng.Float64())
			c := Counts{Total: total, Anomalies: anomalies, Sampled: math.Floor(anomalies * rng.Float64())}
			st.Add(bucket, c, decay)
			ref[bucket] = ref[bucket].Plus(c)
			newest = max(newest, bucket)
		}
		want := State{Bucket: newest, Recent: [2]Counts{ref[newest], ref[newest-1]}, Baseline: ref.baseline(newest, decay), Seen: true, Since: st.Since}
		if diff := cmp.Diff(want, st, cmpopts.EquateApprox(1e-9, 1e-9)); diff != "" {
			t.Fatalf("run %d (-reference +state):\n%s", run, diff)
		}
	}
}

func TestStateAdvanceInOneStep(t *testing.T) {
	decay := Options{}.Decay()
	var st State
	for k := int64(0); k < 5; k++ {
		st.Add(k, Counts{Total: 100, Anomalies: float64(k)}, decay)
	}
	for _, gap := range []int64{1, 2, 3, 17} {
		one, steps := st, st
		one.Advance(st.Bucket+gap, decay)
		for range gap {
			steps.Advance(steps.Bucket+1, decay)
		}
		if diff := cmp.Diff(steps, one, cmpopts.EquateApprox(1e-12, 0)); diff != "" {
			t.Errorf("gap %d (-step by step +in one step):\n%s", gap, diff)
		}
	}
}

func TestStateCleansCounts(t *testing.T) {
	decay := Options{}.Decay()
	var st State
	st.Add(7, Counts{Total: math.NaN(), Anomalies: 5, Sampled: -1}, decay)
	st.Add(7, Counts{Total: 10, Anomalies: 20, Sampled: 30}, decay)
	st.Add(7, Counts{Total: math.Inf(1), Anomalies: math.Inf(1), Sampled: 1}, decay)
	want := Counts{Total: 10 + maxCount, Anomalies: 10 + maxCount, Sampled: 11}
	if diff := cmp.Diff(want, st.Recent[0]); diff != "" {
		t.Errorf("recent (-want +got):\n%s", diff)
	}
	// A state fed the largest counts for a long time stays finite.
	for k := int64(8); k < 10_000; k++ {
		st.Add(k, Counts{Total: math.MaxFloat64, Anomalies: math.MaxFloat64, Sampled: math.MaxFloat64}, decay)
	}
	for _, x := range []float64{st.Baseline.Total, st.Baseline.Anomalies, st.Baseline.Sampled} {
		if math.IsInf(x, 0) || math.IsNaN(x) || x > maxCount {
			t.Fatalf("baseline %+v: not finite or over %g", st.Baseline, float64(maxCount))
		}
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name                      string
		total, anomalies, sampled int64
		span                      time.Duration
		want                      string
	}{
		{"fine", 100, 10, 1, 10 * time.Second, ""},
		{"all zero", 0, 0, 0, 0, ""},
		{"negative", -1, 0, 0, 0, CodeNegative},
		{"negative sampled", 10, 1, -1, 0, CodeNegative},
		{"more anomalies than traces", 10, 11, 0, 0, CodeInconsistent},
		{"more sampled than anomalies", 10, 1, 2, 0, CodeInconsistent},
		{"ten million a second for ten seconds", 100e6, 0, 0, 10 * time.Second, ""},
		{"more", 100e6 + 1, 0, 0, 10 * time.Second, CodeTooLarge},
		{"unknown span: two intervals", 200e6 + 1, 0, 0, 0, CodeTooLarge},
	}
	for _, tt := range tests {
		var got string
		if r := Check(tt.total, tt.anomalies, tt.sampled, tt.span); r != nil {
			got = r.Code
		}
		if got != tt.want {
			t.Errorf("%s: Check = %q, want %q", tt.name, got, tt.want)
		}
	}
}
