package sampling

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

// TestFirstBorrowGate: replicas on one store share each rule's bucket (a
// tenth of its reservoir a second, a second's worth held, one token below
// 1/s); replicas on a store that keeps no buckets each have their own; a
// store that fails withholds everything and counts it; a rule without a
// reservoir is never lent; past MaxBorrowTakes rules, the first ones are
// weighed and the call does not fail.
func TestFirstBorrowGate(t *testing.T) {
	p := newReplicaPair(t)
	ctx := context.Background()
	set := []catalog.FirstBorrow{{Rule: "r", Reservoir: 20}, {Rule: "slow", Reservoir: 5}, {Rule: "none"}}
	newCore := func(st LedgerStore, borrows store.BorrowStore) (*Core, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		c := New(Options{Catalog: p.a.catalog, Store: st, Borrows: borrows, Now: p.clk.Now, Interval: time.Second, Logger: discardLogger(), Registerer: reg})
		t.Cleanup(c.Close)
		return c, reg
	}
	shared, sharedReg := newCore(p.mem, nil)
	check := func(name string, c *Core, want ...bool) {
		t.Helper()
		if got := c.FirstBorrows(ctx, set); !cmp.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
	// Fleet-wide: r's bucket holds 2, slow's 1, whichever replica asks.
	check("replica a", p.a, true, true, false)
	check("replica b", p.b, true, false, false)
	check("replica c", shared, false, false, false)
	p.clk.Add(time.Second)
	check("replica a, a second later", p.a, true, false, false)
	check("replica c, a second later", shared, true, false, false)
	if got, want := promtest.Sum(t, sharedReg, "controlplane_first_borrows_total", "outcome", "lent"), 1.0; got != want {
		t.Errorf("replica c counted %v lent, want %v", got, want)
	}
	if got, want := promtest.Sum(t, sharedReg, "controlplane_first_borrows_total", "outcome", "withheld"), 5.0; got != want {
		t.Errorf("replica c counted %v withheld, want %v", got, want)
	}

	// A store without buckets: each replica's own gate.
	local1, _ := newCore(struct{ LedgerStore }{p.mem}, nil)
	local2, _ := newCore(struct{ LedgerStore }{p.mem}, nil)
	check("a replica's own gate", local1, true, true, false)
	check("another replica's own gate", local2, true, true, false)

	// A store that fails: everything withheld, counted as unavailable.
	closed, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	down, downReg := newCore(p.mem, closed)
	check("a failing store", down, false, false, false)
	if got, want := promtest.Sum(t, downReg, "controlplane_first_borrows_total", "outcome", "unavailable"), 2.0; got != want {
		t.Errorf("counted %v unavailable, want %v (the rules with a reservoir)", got, want)
	}
	if got := promtest.Sum(t, downReg, "controlplane_first_borrow_store_failures_total"); got != 1 {
		t.Errorf("counted %v store failures, want 1", got)
	}

	// More rules than a rule set holds: the first ones are weighed.
	many := make([]catalog.FirstBorrow, store.MaxBorrowTakes+5)
	for i := range many {
		many[i] = catalog.FirstBorrow{Rule: fmt.Sprintf("m%d", i), Reservoir: 10}
	}
	got := p.a.FirstBorrows(ctx, many)
	if !got[0] || !got[store.MaxBorrowTakes-1] || got[store.MaxBorrowTakes] {
		t.Errorf("over MaxBorrowTakes rules: first %v, last weighed %v, first past the bound %v; want true, true, false", got[0], got[store.MaxBorrowTakes-1], got[store.MaxBorrowTakes])
	}
}

// heldBorrows holds its first TakeFirstBorrows call until release is
// closed (whatever its deadline), and counts the calls.
type heldBorrows struct {
	*memstore.Store
	entered, release chan struct{}
	calls            atomic.Int64
	last             []store.BorrowTake // the last call's
}

func (h *heldBorrows) TakeFirstBorrows(ctx context.Context, now time.Time, takes []store.BorrowTake) ([]int64, error) {
	if h.calls.Add(1) == 1 {
		close(h.entered)
		<-h.release
		ctx = context.Background()
	} else {
		h.last = takes
	}
	return h.Store.TakeFirstBorrows(ctx, now, takes)
}

// TestFirstBorrowsBatched: the first rule sets asked for while a store
// call is in flight go together in the next one, each rule once with their
// count (a fleet's hellos cost a call per round trip and a key per rule,
// not one each), and each gets its own answer: of 40 new instances, as
// many borrow as the bucket holds.
func TestFirstBorrowsBatched(t *testing.T) {
	p := newReplicaPair(t)
	st := &heldBorrows{Store: p.mem, entered: make(chan struct{}), release: make(chan struct{})}
	c := New(Options{Catalog: p.a.catalog, Store: st, Now: p.clk.Now, Interval: time.Second, Logger: discardLogger(), Registerer: prometheus.NewRegistry()})
	t.Cleanup(c.Close)
	ctx := context.Background()
	set := []catalog.FirstBorrow{{Rule: "r", Reservoir: 50}, {Rule: "none"}}
	var lent atomic.Int64
	var wg sync.WaitGroup
	ask := func() {
		wg.Go(func() {
			if got := c.FirstBorrows(ctx, set); got[0] {
				lent.Add(1)
			}
		})
	}
	ask()
	<-st.entered
	for range 39 {
		ask()
	}
	for {
		c.borrows.mu.Lock()
		n := len(c.borrows.pending)
		c.borrows.mu.Unlock()
		if n == 39 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(st.release)
	wg.Wait()
	if n := st.calls.Load(); n != 2 {
		t.Errorf("40 first rule sets, 39 of them behind a call in flight: %d store calls, want 2", n)
	}
	if want := []store.BorrowTake{{Rule: "r", Rate: 5, Count: 39}}; !cmp.Equal(st.last, want) {
		t.Errorf("the second call took %v, want %v", st.last, want)
	}
	if n := lent.Load(); n != 5 {
		t.Errorf("%d of 40 new instances may borrow for a rule whose bucket holds 5", n)
	}
}
