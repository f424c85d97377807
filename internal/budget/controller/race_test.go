package controller_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// pausingStore holds the next write of decisions (PutStates or PutState)
// once armed: it says so on arrived and writes when release is closed, so
// that a test can land another write in between.
type pausingStore struct {
	store.Store
	mu      sync.Mutex
	armed   bool
	arrived chan struct{}
	release chan struct{}
}

// arm makes the next write of decisions pause.
func (p *pausingStore) arm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.arrived, p.release = true, make(chan struct{}), make(chan struct{})
}

// pause holds a write of decisions if armed.
func (p *pausingStore) pause() {
	p.mu.Lock()
	armed, arrived, release := p.armed, p.arrived, p.release
	p.armed = false
	p.mu.Unlock()
	if armed {
		close(arrived)
		<-release
	}
}

func (p *pausingStore) PutStates(ctx context.Context, states []budget.State) error {
	p.pause()
	return p.Store.PutStates(ctx, states)
}

func (p *pausingStore) PutState(ctx context.Context, st budget.State) error {
	p.pause()
	return p.Store.PutState(ctx, st)
}

// TestDecisionsNeverGoBack interleaves the controller's two writers of
// decisions. A Step that read the budgets before an edit stores after the
// edit's immediate decision (DecideBudget), and later by the clock (its
// replica's catalog lagged): its decision for the budget as it was must not
// replace the one for the budget as it is, or a lowered amount goes
// unenforced until the next interval. And a DecideBudget that read the
// stored decisions before a Step stores after it: it must not put the other
// budgets' older decisions back.
func TestDecisionsNeverGoBack(t *testing.T) {
	t0 := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	clock := clocktest.New(t0)
	mem := newMemStore(t)
	st := &pausingStore{Store: mem}
	ctx := ctxT(t)
	log := slog.New(slog.DiscardHandler)
	cat := servetest.Catalog(t, mem, catalog.Options{Logger: log, Poll: 200 * time.Millisecond})
	ctl := controller.New(st, cat, controller.Options{Interval: 10 * time.Second, Now: clock.Now, Logger: log})
	t.Cleanup(ctl.Wait)

	var shop budget.Budget
	for _, b := range []budget.Budget{{Name: "shop", UID: "u-shop", MonthlyAmountMicros: 1_000_000}, {Name: "other", UID: "u-other", MonthlyAmountMicros: 1_000_000}} {
		created, err := mem.CreateBudget(ctx, b.Normalize())
		if err != nil {
			t.Fatal(err)
		}
		if b.Name == "shop" {
			shop = created
		}
	}
	// 10,000 traces of shop's: $0.05 at the default price.
	if _, err := mem.RecordReports(ctx, store.ReportBatch{Now: t0, Usage: []store.UsageIncrement{{Budget: "shop", Month: t0, Hour: 216, Rule: "Default", Requests: 10_000, Sampled: 10_000}}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, cat, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 2 })
	state := func(name string) budget.State {
		t.Helper()
		states, err := mem.States(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return states[name]
	}

	// A Step with shop at $1 stores after shop is lowered to $0.01 and
	// decided at once; it was computed later.
	clock.Add(time.Second)
	st.arm()
	stepDone := make(chan error, 1)
	go func() { stepDone <- ctl.Step(ctx, t0.Add(2*time.Second)) }()
	<-st.arrived
	lowered := shop
	lowered.MonthlyAmountMicros = 10_000
	lowered, err := mem.UpdateBudget(ctx, lowered, shop.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.DecideBudget(ctx, lowered); err != nil {
		t.Fatal(err)
	}
	if d := state("shop").Decision; !d.Exhausted {
		t.Fatalf("decided at once after lowering under the spend: %+v, want exhausted", d)
	}
	close(st.release)
	if err := <-stepDone; err != nil {
		t.Fatal(err)
	}
	if s := state("shop"); !s.Decision.Exhausted || s.BudgetRevision != lowered.Revision {
		t.Errorf("after a Step that read the budget at $1 stored: revision %d, %+v; want revision %d's decision, exhausted",
			s.BudgetRevision, s.Decision, lowered.Revision)
	}

	// A DecideBudget that read the decisions before a Step stores after
	// it: other's decision stays the Step's.
	servetest.WaitBudgets(t, cat, func(bs *catalog.Budgets) bool { return bs.Budgets[0].Revision+bs.Budgets[1].Revision == 3 })
	clock.Add(10 * time.Second)
	st.arm()
	decideDone := make(chan error, 1)
	go func() { decideDone <- ctl.DecideBudget(ctx, lowered) }()
	<-st.arrived
	stepAt := clock.Now().Add(time.Second)
	if err := ctl.Step(ctx, stepAt); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	if err := <-decideDone; err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other", "shop"} {
		if s := state(name); !s.Computed.Equal(stepAt) {
			t.Errorf("%s: decision computed at %v stored, want the Step's of %v", name, s.Computed, stepAt)
		}
	}
}
