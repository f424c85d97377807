package xray

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/pkg/reservoir"
)

func TestWholeQuota(t *testing.T) {
	for _, tc := range []struct {
		share, phase float64
		want         int32
	}{
		{0, 0.9, 0},
		{0.3, 0, 0},
		{0.3, 0.69, 0},
		{0.3, 0.7, 1},
		{0.3, 0.99, 1},
		{2.5, 0.4, 2},
		{2.5, 0.5, 3},
		{7, 0.999, 7},
		{-1, 0.9, 0},
		{math.NaN(), 0.5, 0},
		{math.Inf(1), 0.5, 0},
		{0.5, math.NaN(), 0},
		{0.5, 1, 0},
		{3e9, 0, math.MaxInt32},
	} {
		if got := WholeQuota(tc.share, tc.phase); got != tc.want {
			t.Errorf("WholeQuota(%v, %v) = %d, want %d", tc.share, tc.phase, got, tc.want)
		}
	}
}

// TestWholeQuotaFleet hands out quotas to a simulated fleet of 1,000 X-Ray
// clients for an hour of 10-second report periods, each client reporting at
// its own moment of the period, and checks the three properties the rounding
// promises: the fleet's total averages the reservoir (within ±5 %, here much
// closer), each client gets its share to within one trace per second over
// the hour, and one period's total spreads as much as independent turns
// would (√Σ f(1−f)), not more — turns that lined up would swing the whole
// fleet between ⌊q⌋ and ⌊q⌋+1 together.
func TestWholeQuotaFleet(t *testing.T) {
	const (
		clients  = 1000
		periods  = 360
		interval = 10 * time.Second
	)
	rng := rand.New(rand.NewPCG(13, 1))
	start := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		reservoir float64
		rate      func() float64 // a client's request rate
	}{
		{"equal shares of 0.3", 300, func() float64 { return 50 }},
		{"equal shares of 0.01", 10, func() float64 { return 50 }},
		{"skewed traffic", 100, func() float64 { return math.Exp(rng.NormFloat64() * 1.5) }},
		{"shares above one", 2500, func() float64 { return 1 + rng.Float64()*4 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids := make([]string, clients)
			rates := make([]float64, clients)
			offsets := make([]time.Duration, clients)
			for i := range ids {
				ids[i] = fmt.Sprintf("%012x%012x", rng.Uint64()>>16, rng.Uint64()>>16)
				rates[i] = tc.rate()
				offsets[i] = time.Duration(rng.Int64N(int64(interval)))
			}
			shares := reservoir.Split(tc.reservoir, rates)
			var variance float64 // of one period's total, if turns are independent
			for _, q := range shares {
				f := q - math.Floor(q)
				variance += f * (1 - f)
			}
			got := make([]int64, clients)
			var sum, sumSq, floorTotal float64
			worst := 0.0
			for p := range periods {
				var total float64
				for i, q := range shares {
					now := start.Add(time.Duration(p)*interval + offsets[i])
					k := WholeQuota(q, rotationPhase(ids[i], "checkout", q, now, interval))
					got[i] += int64(k)
					total += float64(k)
				}
				sum += total
				sumSq += total * total
				worst = max(worst, math.Abs(total-tc.reservoir)/tc.reservoir)
			}
			for _, q := range shares {
				floorTotal += math.Floor(q)
			}
			mean := sum / periods
			sd := math.Sqrt(max(sumSq/periods-mean*mean, 0))
			t.Logf("reservoir %g: mean total %.3f (%+.2f %%); one period: sd %.2f (independent turns: %.2f), worst %.1f %%; X-Ray's rounding down: %g",
				tc.reservoir, mean, 100*(mean/tc.reservoir-1), sd, math.Sqrt(variance), 100*worst, floorTotal)

			if math.Abs(mean/tc.reservoir-1) > 0.05 {
				t.Errorf("fleet total averages %.3f, more than 5 %% off the reservoir %g", mean, tc.reservoir)
			}
			for i, q := range shares {
				if d := float64(got[i]) - q*periods; math.Abs(d) > 1+1e-9 {
					t.Errorf("client %d: %d traces/s·periods over the hour for a share of %.4f (%.1f): off by %.2f", i, got[i], q, q*periods, d)
					break
				}
			}
			if want := math.Sqrt(variance); sd > 1.5*want+0.5 {
				t.Errorf("one period's total spreads with sd %.2f, independent turns give %.2f", sd, want)
			}
		})
	}
}

func TestClientPhaseUniform(t *testing.T) {
	// 10,000 random client IDs in 10 bins: each bin should hold about 1,000
	// (a χ² statistic under 27.9 is what uniform phases give 99.9 % of the
	// time; the seed is fixed, so the test is exact).
	rng := rand.New(rand.NewPCG(7, 7))
	var bins [10]float64
	for range 10000 {
		id := fmt.Sprintf("%012x%012x", rng.Uint64()>>16, rng.Uint64()>>16)
		bins[int(clientPhase(id, "Default")*10)]++
	}
	var chi2 float64
	for _, n := range bins {
		chi2 += (n - 1000) * (n - 1000) / 1000
	}
	if chi2 > 27.9 {
		t.Errorf("phases not uniform: χ² = %.1f over bins %v", chi2, bins)
	}
}
