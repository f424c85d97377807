package storetest

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
)

// testLedger checks the fleet ledgers: adds and retractions, sums per rule
// across a batch and across store instances, floors at zero, and buckets that
// age out.
func testLedger(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := context.Background()
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	record := func(st store.Store, updates ...store.RateUpdate) []float64 {
		t.Helper()
		got, err := st.RecordReports(ctx, store.ReportBatch{Now: clk.Now(), Ledger: l, Rates: updates})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(updates) {
			t.Fatalf("%d sums for %d updates", len(got), len(updates))
		}
		return got
	}
	add := func(rule string, rate float64, retract *reservoir.Receipt) store.RateUpdate {
		return store.RateUpdate{Rule: rule, Add: reservoir.Receipt{Bucket: l.Bucket(clk.Now()), Rate: rate}, Retract: retract}
	}
	check := func(what string, got, want []float64) {
		t.Helper()
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Fatalf("%s: sums %v, want %v", what, got, want)
			}
		}
	}

	a1 := add("a", 30, nil)
	check("first report", record(s, a1), []float64{30})
	// Another replica's report on the same rule, and one on another rule, in
	// one batch: each update gets its rule's sum after the whole batch.
	check("batch", record(other, add("a", 10, nil), add("b", 5, nil), add("a", 1, nil)), []float64{41, 5, 41})
	clk.Advance(10 * time.Second)
	// Client a1 reports again: its old figure is replaced.
	a2 := add("a", 20, &a1.Add)
	check("replaced", record(s, a2), []float64{31})
	// A forged retraction larger than the bucket leaves zero, not less.
	check("floor", record(s, add("b", 0, &reservoir.Receipt{Bucket: l.Bucket(clk.Now()) - 1, Rate: 1e9})), []float64{0})
	// Retracting from a bucket that is no longer live does nothing.
	clk.Advance(30 * time.Second)
	check("aged out", record(s, add("a", 7, &a2.Add)), []float64{7})
	// A replica whose clock runs a little ahead writes into the next bucket;
	// the others count it and do not drop it.
	ahead := clk.Now().Add(l.Interval)
	if _, err := other.RecordReports(ctx, store.ReportBatch{Now: ahead, Ledger: l, Rates: []store.RateUpdate{{Rule: "c", Add: reservoir.Receipt{Bucket: l.Bucket(ahead), Rate: 1000}}}}); err != nil {
		t.Fatal(err)
	}
	check("skewed replica", record(s, add("c", 1, nil)), []float64{1001})
	check("skewed replica, again", record(s, add("c", 1, nil)), []float64{1002})
	if got, err := s.RecordReports(ctx, store.ReportBatch{Now: clk.Now(), Ledger: l}); err != nil || len(got) != 0 {
		t.Errorf("empty batch: %v, %v", got, err)
	}
}
