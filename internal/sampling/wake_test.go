package sampling

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// wakeRecorder is a BudgetWaker that notes each budget woken and whether
// the store held the budget's usage by then.
type wakeRecorder struct {
	st *memstore.Store
	at time.Time // the month's
	mu sync.Mutex
	// woken: each name, and whether its month had requests when woken.
	woken map[string][]bool
}

func (w *wakeRecorder) Wake(name string) {
	u, err := w.st.Usage(context.Background(), name, w.at)
	requests, _ := u.Totals()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.woken[name] = append(w.woken[name], err == nil && requests > 0)
}

// TestReportWakesQuietBudgets: a report wakes each enforcing budget in
// whose scope it brings traffic while its decision in force saw none (or
// it has none, or one of an earlier month), once per report, after its
// usage is recorded; not budgets that only alert, nor those out of scope,
// nor those whose decision saw traffic, nor for a report without
// requests.
func TestReportWakesQuietBudgets(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Now().UTC())
	now := clock.Now()
	mem, err := memstore.New(memstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	for _, name := range []string{"r1", "r2"} {
		r := rules.Rule{Name: name, Priority: 1, ServiceName: "shop", FixedRate: 1}
		if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
			t.Fatal(err)
		}
	}
	month := budget.MonthStart(now)
	for _, b := range []struct {
		name    string
		mode    budget.Mode
		service string
		state   *budget.State // its decision; nil: none
	}{
		{"undecided", budget.Enforce, "shop", nil},
		{"decided-idle", budget.Enforce, "shop", &budget.State{MonthStart: month, Requests: 0}},
		{"last-month", budget.Enforce, "shop", &budget.State{MonthStart: budget.MonthStart(month.Add(-time.Hour)), Requests: 500}},
		{"seen", budget.Enforce, "shop", &budget.State{MonthStart: month, Requests: 500}},
		{"alerts-only", budget.AlertOnly, "shop", nil},
		{"admin", budget.Enforce, "admin", nil},
	} {
		bg := budget.Budget{Name: b.name, UID: "uid-" + b.name, MonthlyAmountMicros: 1_000_000, Mode: b.mode, Scope: budget.Scope{Services: []string{b.service}}}
		if _, err := mem.CreateBudget(ctx, bg); err != nil {
			t.Fatal(err)
		}
		if b.state != nil {
			st := *b.state
			st.Budget, st.BudgetUID, st.Computed = b.name, bg.UID, now
			if err := mem.PutState(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		requests int64
		want     map[string][]bool
	}{
		{"no requests", 0, map[string][]bool{}},
		{"first traffic", 10, map[string][]bool{"undecided": {true}, "decided-idle": {true}, "last-month": {true}}},
	} {
		w := &wakeRecorder{st: mem, at: now, woken: map[string][]bool{}}
		s := New(Options{Catalog: cat, Store: mem, Now: clock.Now, Logger: discardLogger(), Interval: time.Second, Waker: w})
		keeper := receipt.NewHeld().Over(s.Tokens())
		_, err := s.Report(ctx, Report{Client: "c-" + tc.name, Service: "shop", Statistics: []Statistics{
			{Rule: "r1", Requests: tc.requests, Interval: time.Second}, {Rule: "r2", Requests: tc.requests, Interval: time.Second}}}, keeper)
		s.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, w.woken); diff != "" {
			t.Errorf("%s: budgets woken (and whether their usage was recorded by then), -want +got:\n%s", tc.name, diff)
		}
	}
}
