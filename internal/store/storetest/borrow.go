package storetest

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// borrowStore is a store as the first-borrow gate uses it.
func borrowStore(t *testing.T, s store.Store) store.BorrowStore {
	t.Helper()
	bs, ok := s.(store.BorrowStore)
	if !ok {
		t.Fatalf("%T does not keep the first-borrow buckets (store.BorrowStore)", s)
	}
	return bs
}

// testFirstBorrows checks the first-borrow buckets as replicas share them:
// takes on either store draw from one bucket per rule, holding max(1, rate)
// tokens and refilled at the caller's rate; a take gets up to its count
// of whole tokens; a clock behind the bucket's adds nothing; a rate that is not positive and finite lends nothing and
// stores nothing; a call over MaxBorrowTakes is refused whole; a bucket
// left alone is full again; every answer is reservoir.GateBucket's.
func testFirstBorrows(t *testing.T, b Backend) {
	clk := newClock()
	ctx := t.Context()
	c := b.Open(t, clk.Now)
	_ = c.Close()
	if _, err := borrowStore(t, c).TakeFirstBorrows(ctx, clk.Now(), []store.BorrowTake{{Rule: "r", Rate: 1, Count: 1}}); err == nil {
		t.Error("a closed store took a first borrow")
	}

	s := open(t, b, clk)
	stores := []store.BorrowStore{borrowStore(t, s), borrowStore(t, peer(t, b, s, clk))}
	t0 := clk.Now()
	ten := store.BorrowTake{Rule: "ten", Rate: 1, Count: 1}
	halved := store.BorrowTake{Rule: "halved", Rate: 2, Count: 1}
	slow := store.BorrowTake{Rule: "slow", Rate: 0.5, Count: 1}
	none := store.BorrowTake{Rule: "none", Count: 1}
	set := []store.BorrowTake{ten, halved, slow, none}
	for i, tt := range []struct {
		at    time.Duration
		takes []store.BorrowTake
		want  []int64
	}{
		{0, set, []int64{1, 1, 1, 0}},
		{0, set, []int64{0, 1, 0, 0}},
		{0, set, []int64{0, 0, 0, 0}},
		{500 * time.Millisecond, set, []int64{0, 1, 0, 0}},
		{time.Second, set, []int64{1, 1, 0, 0}},
		// Another replica's clock, behind: nothing refills.
		{900 * time.Millisecond, set, []int64{0, 0, 0, 0}},
		{2 * time.Second, set, []int64{1, 1, 1, 0}},
		// One rule twice in a call: in order.
		{4 * time.Second, []store.BorrowTake{ten, ten, halved, halved, halved}, []int64{1, 0, 1, 1, 0}},
		// Several tokens at once: the whole ones held, up to the count.
		{5 * time.Second, []store.BorrowTake{{Rule: "many", Rate: 3.5, Count: 2}, {Rule: "many", Rate: 3.5, Count: 5}, {Rule: "ten", Rate: 1, Count: 3}}, []int64{2, 1, 1}},
		{5500 * time.Millisecond, []store.BorrowTake{{Rule: "many", Rate: 3.5, Count: 5}, {Rule: "ten", Rate: 1, Count: 0}}, []int64{2, 0}},
		// A lower rate keeps the tokens held, within its capacity.
		{6 * time.Second, []store.BorrowTake{{Rule: "halved", Rate: 1, Count: 1}, {Rule: "halved", Rate: 1, Count: 1}}, []int64{1, 0}},
		{4500 * time.Millisecond, []store.BorrowTake{{Rule: "nan", Rate: math.NaN(), Count: 1}, {Rule: "inf", Rate: math.Inf(1), Count: 1}, {Rule: "neg", Rate: -1, Count: 1}, {Rule: "zero", Rate: 1}}, []int64{0, 0, 0, 0}},
		// Nothing was stored for them: full at their first valid take.
		{4500 * time.Millisecond, []store.BorrowTake{{Rule: "nan", Rate: 1, Count: 1}, {Rule: "inf", Rate: 1, Count: 1}, {Rule: "neg", Rate: 1, Count: 1}, {Rule: "zero", Rate: 1, Count: 1}}, []int64{1, 1, 1, 1}},
		// Left alone for two hours, every bucket is full.
		{2 * time.Hour, set, []int64{1, 1, 1, 0}},
	} {
		got, err := stores[i%2].TakeFirstBorrows(ctx, t0.Add(tt.at), tt.takes)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if !cmp.Equal(got, tt.want) {
			t.Errorf("call %d at %v: %v, want %v", i, tt.at, got, tt.want)
		}
	}

	// A call over the bound is refused and takes nothing.
	now := t0.Add(3 * time.Hour)
	over := make([]store.BorrowTake, store.MaxBorrowTakes+1)
	for i := range over {
		over[i] = store.BorrowTake{Rule: "bound", Rate: 1, Count: 1}
	}
	if _, err := stores[0].TakeFirstBorrows(ctx, now, over); err == nil {
		t.Error("a call over MaxBorrowTakes was taken")
	}
	if got, err := stores[1].TakeFirstBorrows(ctx, now, []store.BorrowTake{{Rule: "bound", Rate: 1, Count: 1}}); err != nil || got[0] != 1 {
		t.Errorf("after a refused call, the rule's bucket lends %v, %v; want its token", got, err)
	}

	// Rules spread over the shards: one call, each its own bucket, each
	// answer GateBucket's.
	many := make([]store.BorrowTake, 64)
	ref := map[string]*reservoir.GateBucket{}
	for i := range many {
		many[i] = store.BorrowTake{Rule: fmt.Sprintf("rule-%02d", i), Rate: 0.25 + float64(i%7)/3, Count: int64(1 + i%3)}
	}
	for k := range 6 {
		at := now.Add(time.Duration(k) * 700 * time.Millisecond)
		got, err := stores[k%2].TakeFirstBorrows(ctx, at, append(many, many...))
		if err != nil {
			t.Fatal(err)
		}
		want := make([]int64, 0, 2*len(many))
		for _, tk := range append(many, many...) {
			r := ref[tk.Rule]
			fresh := r == nil
			if fresh {
				r = &reservoir.GateBucket{}
				ref[tk.Rule] = r
			}
			want = append(want, r.Take(at.UnixMilli(), tk.Rate, fresh, tk.Count))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("call %d over 64 rules (-reservoir.GateBucket +store):\n%s", k, diff)
		}
	}

	// Replicas racing for one bucket: it lends what it holds, once.
	now = now.Add(time.Hour)
	var lent atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 5 {
				got, err := stores[g%2].TakeFirstBorrows(ctx, now, []store.BorrowTake{{Rule: "raced", Rate: 5, Count: 1}})
				if err != nil {
					t.Error(err)
					return
				}
				lent.Add(got[0])
			}
		})
	}
	wg.Wait()
	if n := lent.Load(); n != 5 {
		t.Errorf("40 racing takes of a bucket of 5 got %d tokens", n)
	}
}
