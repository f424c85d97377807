package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/boost"
	"github.com/tracesampling/controlplane/internal/store"
)

// boostStore is a store as the report path uses it for boosts.
func boostStore(t *testing.T, s store.Store) boost.Store {
	t.Helper()
	bs, ok := s.(boost.Store)
	if !ok {
		t.Fatalf("%T does not keep boost states (boost.Store)", s)
	}
	return bs
}

// testBoost checks the boost states as replicas share them: counts recorded
// on either store are the reference's (boost.Memory), a read changes
// nothing, and of replicas racing to start a boost from the same state one
// starts it and the others get that one, which every later read returns.
func testBoost(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []boost.Store{boostStore(t, s), boostStore(t, peer(t, b, s, clk))}
	ref := boost.NewMemory()
	ctx := context.Background()
	o := boost.Options{}
	approx := cmpopts.EquateApprox(1e-12, 1e-9)
	sameTime := cmpopts.EquateApproxTime(time.Millisecond)
	record := func(i int, now time.Time, adds ...boost.Add) []boost.State {
		t.Helper()
		got, err := stores[i%2].RecordBoostCounts(ctx, now, o, adds)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ref.RecordBoostCounts(ctx, now, o, adds)
		if diff := cmp.Diff(want, got, approx, sameTime); diff != "" {
			t.Fatalf("states after call %d (-reference +store):\n%s", i, diff)
		}
		return got
	}
	now := clk.Now()
	for i := range 20 {
		now = now.Add(7 * time.Second)
		record(i, now,
			boost.Add{Rule: "checkout", Counts: boost.Counts{Total: 100, Anomalies: float64(i % 3), Sampled: 1}},
			boost.Add{Rule: "search"}, // a read: no state yet
		)
	}
	if st := record(0, now, boost.Add{Rule: "search"}); st[0] != (boost.State{}) {
		t.Fatalf("a rule only read has a state: %+v", st[0])
	}

	// Four replicas (two per store) start a boost from the same state.
	prev := record(1, now, boost.Add{Rule: "checkout"})[0].Boost.Start
	type result struct {
		b  boost.Boost
		ok bool
	}
	results := make([]result, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := boost.Boost{Rate: 0.1 + float64(i)/100, Start: now, Expiry: now.Add(time.Minute)}
			got, ok, err := stores[i%2].StartBoost(ctx, "checkout", prev, mine)
			if err != nil {
				t.Error(err)
			}
			results[i] = result{got, ok}
		}()
	}
	wg.Wait()
	var won *boost.Boost
	for i, r := range results {
		if r.ok {
			if won != nil {
				t.Fatalf("two replicas started a boost: %+v and %+v", *won, r.b)
			}
			won = &results[i].b
		}
	}
	if won == nil {
		t.Fatal("no replica started the boost")
	}
	for i, r := range results {
		if diff := cmp.Diff(*won, r.b, sameTime); diff != "" {
			t.Errorf("replica %d hands out another boost (-started +got):\n%s", i, diff)
		}
	}
	if _, ok, _ := ref.StartBoost(ctx, "checkout", prev, *won); !ok {
		t.Fatal("the reference refused the boost")
	}
	// Counts while it is in force go to its capture, on either store.
	now = now.Add(5 * time.Second)
	record(0, now, boost.Add{Rule: "checkout", Counts: boost.Counts{Total: 50, Anomalies: 10, Sampled: 4}})
	st := record(1, now, boost.Add{Rule: "checkout", Counts: boost.Counts{Total: 50, Anomalies: 10, Sampled: 3}})
	if st[0].Captured != 7 || st[0].Boost.Rate != won.Rate {
		t.Errorf("state during the boost: captured %v, rate %v; want 7, %v", st[0].Captured, st[0].Boost.Rate, won.Rate)
	}
	// A start from the state before this boost is refused.
	if got, ok, err := stores[1].StartBoost(ctx, "checkout", prev, boost.Boost{Rate: 0.9, Start: now, Expiry: now.Add(time.Minute)}); err != nil || ok || got.Rate != won.Rate {
		t.Errorf("a stale start: got %+v, started %v, err %v; want the boost in force, not started", got, ok, err)
	}
}
