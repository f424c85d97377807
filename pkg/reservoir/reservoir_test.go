package reservoir

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestQuota(t *testing.T) {
	tests := []struct {
		name                   string
		r, client, fleet, want float64
	}{
		{"proportional", 10, 25, 100, 2.5},
		{"alone", 10, 40, 40, 10},
		{"no history", 10, 0, 100, 0},
		{"no reservoir", 0, 25, 100, 0},
		{"fleet below client (rounding)", 10, 50, 49.9999, 10},
		{"tiny share", 1, 1, 1000, 0.001},
		{"NaN client", 10, math.NaN(), 100, 0},
		{"NaN fleet", 10, 5, math.NaN(), 10},
		{"infinite client", 10, math.Inf(1), 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quota(tt.r, tt.client, tt.fleet); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Quota(%v, %v, %v) = %v, want %v", tt.r, tt.client, tt.fleet, got, tt.want)
			}
		})
	}
}

// zipfRates returns n request rates whose sizes follow a Zipf law with
// exponent s (a few huge instances, a long tail of small ones), shuffled, with
// a share of idle instances.
func zipfRates(rng *rand.Rand, n int, s, idleShare float64) []float64 {
	rates := make([]float64, n)
	for i := range rates {
		if rng.Float64() < idleShare {
			continue
		}
		rates[i] = 1000 / math.Pow(float64(i+1), s)
	}
	rng.Shuffle(n, func(i, j int) { rates[i], rates[j] = rates[j], rates[i] })
	return rates
}

func TestSplitProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 2, 3, 10, 100, 1000, 10_000}
	for round := 0; round < 200; round++ {
		n := sizes[round%len(sizes)]
		if round >= len(sizes) {
			n = 1 + rng.IntN(10_000)
		}
		r := []float64{0.5, 1, 5, 100, 1e6}[rng.IntN(5)]
		rates := zipfRates(rng, n, 0.5+rng.Float64()*1.5, rng.Float64()*0.3)
		shares := Split(r, rates)

		var sum, total float64
		for _, x := range rates {
			total += x
		}
		for i, q := range shares {
			sum += q
			if q < 0 {
				t.Fatalf("n=%d: negative share %v", n, q)
			}
			if rates[i] == 0 && q != 0 {
				t.Fatalf("n=%d: idle client %d got %v", n, i, q)
			}
			// Each share is the client's proportion of r.
			if want := r * rates[i] / total; math.Abs(q-want) > 1e-9*r {
				t.Fatalf("n=%d: client %d share %v, want %v", n, i, q, want)
			}
		}
		if sum > r {
			t.Fatalf("n=%d r=%v: shares add up to %v, more than r", n, r, sum)
		}
		if total > 0 && sum < r*(1-1e-9) {
			t.Fatalf("n=%d r=%v: shares add up to %v, less than r", n, r, sum)
		}
	}
}

func TestSplitEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		r     float64
		rates []float64
		want  []float64
	}{
		{"empty fleet", 5, nil, []float64{}},
		{"all idle", 5, []float64{0, 0}, []float64{0, 0}},
		{"bad rates count as idle", 6, []float64{math.NaN(), -3, math.Inf(1), 1, 2}, []float64{0, 0, 0, 2, 4}},
		{"zero reservoir", 0, []float64{1, 2}, []float64{0, 0}},
		{"NaN reservoir", math.NaN(), []float64{1}, []float64{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Split(tt.r, tt.rates)
			if len(got) != len(tt.want) {
				t.Fatalf("Split = %v, want %v", got, tt.want)
			}
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 1e-12 {
					t.Fatalf("Split = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestLedgerBuckets(t *testing.T) {
	l := Ledger{Interval: 10 * time.Second, Retain: 3}
	t0 := time.Unix(1_700_000_000, 0)
	if l.Bucket(t0.Add(9*time.Second)) != l.Bucket(t0) || l.Bucket(t0.Add(10*time.Second)) != l.Bucket(t0)+1 {
		t.Error("buckets are not one interval long")
	}
	b := l.Bucket(t0)
	tests := []struct {
		at   time.Duration
		live bool
	}{{-20 * time.Second, false}, {-10 * time.Second, true}, {0, true}, {20 * time.Second, true}, {30 * time.Second, false}}
	for _, tt := range tests {
		if got := l.Live(b, t0.Add(tt.at)); got != tt.live {
			t.Errorf("Live(bucket of t0, t0%+v) = %v, want %v", tt.at, got, tt.live)
		}
	}
}

// TestLedgerTracksFleet plays the store's part for a skewed fleet reporting
// at random phases: each report adds the client's rate and retracts the one
// its receipt names. The live buckets must add up to the fleet's rate, its
// sampled rate and its number of clients exactly while everyone reports,
// and clients that stop must drop out.
func TestLedgerTracksFleet(t *testing.T) {
	l := Ledger{Interval: 10 * time.Second, Retain: 3}
	rng := rand.New(rand.NewPCG(3, 4))
	rates := zipfRates(rng, 1000, 1, 0)
	phase := make([]time.Duration, len(rates))
	receipts := make([]*Receipt, len(rates))
	for i := range rates {
		phase[i] = time.Duration(rng.Int64N(int64(l.Interval))).Truncate(time.Second)
	}
	var acct Account
	start := time.Unix(1_700_000_000, 0)
	stopAt := start.Add(30 * l.Interval) // the even clients stop reporting here
	for step := time.Duration(0); step < 40*l.Interval; step += time.Second {
		now := start.Add(step)
		var truth Totals
		var ups []Update
		var who []int
		for i, r := range rates {
			stopped := i%2 == 0 && !now.Before(stopAt)
			if stopped {
				continue
			}
			if step%l.Interval != phase[i] {
				if receipts[i] != nil {
					truth.Rate += r
					truth.Sampled += receipts[i].Sampled
					truth.Instances++
				}
				continue
			}
			// Traffic wobbles from one interval to the next.
			r *= 0.9 + 0.2*rng.Float64()
			rates[i] = r
			sampled := r * rng.Float64() / 10
			ups = append(ups, Update{Add: Receipt{Bucket: l.Bucket(now), Rate: r, Sampled: sampled}, Reservoir: 10, Retract: receipts[i], Client: true})
			who = append(who, i)
			truth.Rate += r
			truth.Sampled += sampled
			truth.Instances++
		}
		got, grants := l.Apply(&acct, now, time.Time{}, ups)
		for k, i := range who {
			receipts[i] = &Receipt{Bucket: ups[k].Add.Bucket, Rate: ups[k].Add.Rate, Quota: grants[k], Sampled: ups[k].Add.Sampled}
		}
		totals := l.Totals(&acct, now)
		if math.Abs(totals.Rate-got) > 1e-9*got {
			t.Fatalf("at %v: Totals says %v, Apply %v", step, totals.Rate, got)
		}
		if totals.Quota > 10+1e-9 {
			t.Fatalf("at %v: quotas of %v outstanding, above the reservoir", step, totals.Quota)
		}
		totals.Quota = 0
		exact := cmpopts.EquateApprox(1e-6, 0)
		switch {
		case step < l.Interval:
		case now.Before(stopAt):
			if diff := cmp.Diff(truth, totals, exact); diff != "" {
				t.Fatalf("at %v: totals (-want +got):\n%s", step, diff)
			}
		case now.After(stopAt.Add(time.Duration(l.Retain) * l.Interval)):
			if diff := cmp.Diff(truth, totals, exact); diff != "" {
				t.Fatalf("%v after the stop: totals (-want +got):\n%s", now.Sub(stopAt), diff)
			}
		}
	}
}

func TestBucketFractionalRate(t *testing.T) {
	var b Bucket
	const sec = int64(time.Second)
	b.SetRate(0, 0.25, 0)
	var taken []int64
	for now := int64(0); now < 20*sec; now += sec / 10 {
		if b.Take(now) {
			taken = append(taken, now/sec)
		}
	}
	if want := []int64{0, 4, 8, 12, 16}; !equal(taken, want) {
		t.Errorf("0.25/s took tokens at seconds %v, want %v", taken, want)
	}
}

func TestBucketBurstAndRate(t *testing.T) {
	var b Bucket
	const sec = int64(time.Second)
	b.SetRate(0, 100, 0)
	n := 0
	for b.Take(0) {
		n++
	}
	if n != 100 {
		t.Errorf("burst of %d tokens, want 100", n)
	}
	n = 0
	for now := int64(1); now <= 10*sec; now += sec / 1000 {
		for b.Take(now) {
			n++
		}
	}
	if n < 995 || n > 1001 {
		t.Errorf("%d tokens in 10 s at 100/s", n)
	}
}

func TestBucketRateChanges(t *testing.T) {
	var b Bucket
	const sec = int64(time.Second)
	if b.Take(0) {
		t.Fatal("zero bucket gave a token")
	}
	b.SetRate(0, 0.001, 0) // one token every 1000 s
	if !b.Take(0) || b.Take(sec) {
		t.Fatal("want exactly the first token")
	}
	// A bigger quota must not wait for the 1000 s token.
	b.SetRate(2*sec, 1, 0)
	if !b.Take(3 * sec) {
		t.Error("after raising the rate, no token within one new interval")
	}
	b.SetRate(4*sec, 0, 0)
	if b.Take(100 * sec) {
		t.Error("rate 0 gave a token")
	}
	// Phase delays the first token of a fresh bucket.
	var c Bucket
	c.SetRate(0, 0.1, 0.5)
	if c.Take(4*sec) || !c.Take(5*sec) {
		t.Error("phase 0.5 at 0.1/s should give the first token at 5 s")
	}
}

func TestBucketConcurrentTakesNeverExceed(t *testing.T) {
	var b Bucket
	b.SetRate(0, 50, 0)
	var n atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10_000; i++ {
				if b.Take(int64(time.Second) / 2) {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// A full bucket holds one second's worth, however long it sat idle.
	if got := n.Load(); got != 50 {
		t.Errorf("%d tokens taken concurrently, want 50", got)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBucketRateUpdatesGiveNoTokens: an instance that spends its quota fully
// and gets the same quota again every report must not gain tokens from the
// update itself.
func TestBucketRateUpdatesGiveNoTokens(t *testing.T) {
	var b Bucket
	const sec = int64(time.Second)
	taken := 0
	for now := int64(0); now < 100*sec; now += sec / 100 {
		if now%(10*sec) == 0 {
			b.SetRate(now, 10, 0.5)
		}
		for b.Take(now) {
			taken++
		}
	}
	// 100 s at 10/s plus the first full bucket of 10.
	if taken < 1000 || taken > 1010 {
		t.Errorf("%d tokens in 100 s at 10/s with an update every 10 s, want about 1000", taken)
	}
}

// TestBucketWobblingRateGivesNoExtraTokens: an instance whose quota moves
// by ±10 % at every report (as its share follows the traffic) takes its
// mean quota, not more, whether below one a second or above: the split
// staying within the reservoir carries over to the traces taken.
func TestBucketWobblingRateGivesNoExtraTokens(t *testing.T) {
	const sec = int64(time.Second)
	for _, mean := range []float64{0.2, 3} {
		var b Bucket
		rng := rand.New(rand.NewPCG(7, 8))
		taken, want := 0, 0.0
		for now := int64(0); now < 2000*sec; now += sec / 100 {
			if now%sec == 0 {
				q := mean * (0.9 + 0.2*rng.Float64())
				b.SetRate(now, q, 0.5)
				want += q
			}
			for b.Take(now) {
				taken++
			}
		}
		if float64(taken) > want*1.01+5 || float64(taken) < want*0.99-5 {
			t.Errorf("mean quota %v/s with ±10 %% every second: %d tokens in 2,000 s, want %.0f", mean, taken, want)
		}
	}
}

// TestBucketFleetOfTinyQuotasTakesItsQuotas: a fleet of instances whose
// quotas are a hundredth of a token a second (R = 100 over 10,000
// instances) and move by tens of percent at every report, as their few
// requests an interval make their shares jump, takes what its quotas give
// over time, not more. A bucket that pulled its next token closer on every
// rise and left it on every fall took 6.5 % more at ±30 % and 16 % more at
// ±60 %.
func TestBucketFleetOfTinyQuotasTakesItsQuotas(t *testing.T) {
	const sec = int64(time.Second)
	for _, swing := range []float64{0.1, 0.3, 0.6} {
		rng := rand.New(rand.NewPCG(3, 4))
		buckets := make([]Bucket, 200)
		taken, want := 0, 0.0
		for now := int64(0); now < 20_000*sec; now += sec {
			for i := range buckets {
				b := &buckets[i]
				// Each instance reports every 10 s, at its own phase.
				if (now/sec+int64(i))%10 == 0 {
					q := 0.01 * (1 - swing + 2*swing*rng.Float64())
					b.SetRate(now, q, rng.Float64())
					want += 10 * q
				}
				if b.Take(now) {
					taken++
				}
			}
		}
		if got := float64(taken) / want; got > 1.02 || got < 0.98 {
			t.Errorf("quotas of 0.01/s ±%.0f %%: %d tokens where the quotas gave %.0f (%.1f %%)", swing*100, taken, want, (got-1)*100)
		}
	}
}

// TestBucketRateChangeKeepsTokensEarned: a change of rate keeps what the
// bucket had earned, in tokens, and nothing more: half a token earned at
// 0.5/s is half a token at 10/s (the next one in 50 ms, not ten at once),
// and a bucket that just took its token at 10/s waits a whole token at
// 0.5/s.
func TestBucketRateChangeKeepsTokensEarned(t *testing.T) {
	const sec = int64(time.Second)
	tests := []struct {
		name           string
		from, to       float64
		take           bool  // take the first token at 0
		change         int64 // ns
		wantFirst      int64 // ns of the first token after the change
		wantAtFirst    int   // tokens at wantFirst
		wantBeforeNext bool  // no token just before wantFirst
	}{
		{name: "half earned, rate up", from: 0.5, to: 10, take: true, change: sec, wantFirst: sec + sec/20, wantAtFirst: 1, wantBeforeNext: true},
		{name: "just taken, rate down", from: 10, to: 0.5, take: true, change: 0, wantFirst: 2 * sec, wantAtFirst: 1, wantBeforeNext: true},
		{name: "full, rate up", from: 0.5, to: 4, take: false, change: 10 * sec, wantFirst: 10 * sec, wantAtFirst: 1},
		{name: "tiny quota, three quarters earned, rate doubled", from: 0.01, to: 0.02, take: true, change: 75 * sec, wantFirst: 75*sec + 25*sec/2, wantAtFirst: 1, wantBeforeNext: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b Bucket
			b.SetRate(0, tc.from, 0)
			if tc.take {
				for b.Take(0) {
				}
			}
			b.SetRate(tc.change, tc.to, 0)
			if tc.wantBeforeNext && b.Available(tc.wantFirst-sec/1000) {
				t.Errorf("a token before %v", time.Duration(tc.wantFirst))
			}
			n := 0
			for b.Take(tc.wantFirst) {
				n++
			}
			if n != tc.wantAtFirst {
				t.Errorf("%d tokens at %v, want %d", n, time.Duration(tc.wantFirst), tc.wantAtFirst)
			}
		})
	}
}

// TestBucketTinyOrHugeRates: a quota may be any number a float holds. One
// a float's rounding leaves of a reservoir (R less the quotas outstanding,
// 1e-14/s) once had an interval that did not fit in int64, came out
// negative, and handed a token to every request: an instance of the
// 10 -> 200 scale-out took 16 traces a second on a quota of nothing.
// Rates below one token in about 30 years give none but the first a
// fresh bucket may hold; huge ones are a full second's worth at most.
func TestBucketTinyOrHugeRates(t *testing.T) {
	const sec = int64(time.Second)
	start := time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC).UnixNano()
	for _, rate := range []float64{5e-324, 1.4e-14, 1e-10, 1.08e-10, 1e-9} {
		for _, phase := range []float64{0, 0.1, 0.5, 0.99} {
			for _, from := range []float64{0, 0.5} {
				var b Bucket
				if from > 0 {
					b.SetRate(start, from, phase)
				}
				b.SetRate(start+sec, rate, phase)
				n := 0
				for now := start + sec; now < start+1000*sec; now += sec / 10 {
					if b.Take(now) {
						n++
					}
				}
				if n > 1 {
					t.Errorf("rate %g/s (phase %v, from %v/s): %d tokens in 1,000 s, want at most 1", rate, phase, from, n)
				}
			}
		}
	}
	for _, rate := range []float64{1e12, 1e19, math.MaxFloat64} {
		var b Bucket
		b.SetRate(start, rate, 0)
		if !b.Take(start) || !b.Take(start+sec) {
			t.Errorf("rate %g/s gave no token", rate)
		}
	}
}
