package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
)

// stateOf returns newState's state of name for the budget created at
// created, at revision rev, computed at computed, with factor.
func stateOf(name string, created time.Time, rev int64, computed time.Time, factor float64) budget.State {
	st := newState(name, factor, computed)
	st.BudgetCreated, st.BudgetRevision = created, rev
	st.BudgetUID = fmt.Sprintf("uid-%s-%d", name, created.Unix())
	return st
}

// testStatesKeepNewer: per budget, the newer of the stored and the given
// decision stays (budget.CompareStates), whether put by PutStates or
// PutState, on any replica; one that lost leaves no history point.
// Every decision of a case is of one hour.
func testStatesKeepNewer(t *testing.T, b Backend) {
	created := march.Add(time.Hour)
	recreated := created.Add(time.Minute)
	at := func(minute int) time.Time { return march.Add(5*time.Hour + time.Duration(minute)*time.Minute) }
	tests := []struct {
		name          string
		stored, given budget.State
		givenStays    bool
	}{
		{"newer revision", stateOf("a", created, 1, at(2), 1), stateOf("a", created, 2, at(1), 0.5), true},
		{"older revision computed later", stateOf("a", created, 2, at(1), 0.5), stateOf("a", created, 1, at(2), 1), false},
		{"same revision computed later", stateOf("a", created, 2, at(1), 0.5), stateOf("a", created, 2, at(2), 0.25), true},
		{"same revision computed earlier", stateOf("a", created, 2, at(2), 0.5), stateOf("a", created, 2, at(1), 0.25), false},
		{"same revision same time", stateOf("a", created, 2, at(1), 0.5), stateOf("a", created, 2, at(1), 0.25), true},
		{"new incarnation at revision 1", stateOf("a", created, 7, at(2), 1), stateOf("a", recreated, 1, at(1), 0.5), true},
		{"old incarnation at a higher revision", stateOf("a", recreated, 1, at(1), 0.5), stateOf("a", created, 7, at(2), 1), false},
		{"stored before revisions were kept", newState("a", 1, at(2)), stateOf("a", created, 1, at(1), 0.5), true},
	}
	// The subtests share the backend: each puts a budget of its own.
	for i, tt := range tests {
		for _, call := range []string{"PutStates", "PutState"} {
			t.Run(tt.name+"/"+call, func(t *testing.T) {
				clk := newClock()
				s := open(t, b, clk)
				other := peer(t, b, s, clk)
				ctx := t.Context()
				name := fmt.Sprintf("a%d-%s", i, call)
				stored, given := tt.stored, tt.given
				stored.Budget, given.Budget = name, name
				if err := s.PutStates(ctx, []budget.State{stored}); err != nil {
					t.Fatal(err)
				}
				var err error
				if call == "PutStates" {
					err = other.PutStates(ctx, []budget.State{given})
				} else {
					err = other.PutState(ctx, given)
				}
				if err != nil {
					t.Fatalf("%s: %v", call, err)
				}
				want := stored
				if tt.givenStays {
					want = given
				}
				for _, st := range []store.Store{s, other} {
					all, err := st.States(ctx)
					if err != nil {
						t.Fatal(err)
					}
					got := map[string]budget.State{}
					if x, ok := all[name]; ok {
						got[name] = x
					}
					checkStates(t, "States", got, []budget.State{want})
					points, err := st.History(ctx, name, march)
					if err != nil {
						t.Fatal(err)
					}
					// Both are of one hour: its point is the one that stayed.
					if wp := want.Point(); len(points) != 1 || points[0] != wp {
						t.Errorf("History: %+v, want the point of the decision that stayed, %+v", points, wp)
					}
				}
			})
		}
	}
}

// testStatesLeftOut: PutState leaves the other budgets' decisions as they
// are; PutStates removes those of budgets it leaves out, unless computed
// after the latest it puts (put by a PutState for a budget created since the
// interval read the budgets); putting none removes all.
func testStatesLeftOut(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	t0 := march.Add(5 * time.Hour)
	created := march.Add(time.Hour)
	check := func(what string, want ...budget.State) {
		t.Helper()
		for _, st := range []store.Store{s, other} {
			got, err := st.States(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkStates(t, what, got, want)
		}
	}
	a1, b1 := stateOf("a", created, 1, t0, 1), stateOf("b", created, 1, t0, 1)
	if err := s.PutStates(ctx, []budget.State{a1, b1}); err != nil {
		t.Fatal(err)
	}
	// An edit's decision of b, and a new budget's, c.
	b2 := stateOf("b", created, 2, t0.Add(time.Second), 0.5)
	c1 := stateOf("c", t0.Add(2*time.Second), 1, t0.Add(2*time.Second), 0.25)
	for _, st := range []budget.State{b2, c1} {
		if err := other.PutState(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	check("after PutState", a1, b2, c1)
	// An interval computed at t0+1s that knew a and b as they were: b2
	// and c1 stay, the one for a replaces a1.
	a2 := stateOf("a", created, 1, t0.Add(time.Second), 0.75)
	if err := s.PutStates(ctx, []budget.State{a2, stateOf("b", created, 1, t0.Add(time.Second), 1)}); err != nil {
		t.Fatal(err)
	}
	check("after an interval that read the budgets before the edits", a2, b2, c1)
	// The next interval knows c and no longer a (deleted): a goes.
	b3, c2 := stateOf("b", created, 2, t0.Add(10*time.Second), 0.5), stateOf("c", c1.BudgetCreated, 1, t0.Add(10*time.Second), 0.25)
	if err := other.PutStates(ctx, []budget.State{b3, c2}); err != nil {
		t.Fatal(err)
	}
	check("after an interval without a", b3, c2)
	if err := s.PutStates(ctx, nil); err != nil {
		t.Fatal(err)
	}
	check("after putting none")
}

// testStatesConcurrent: replicas putting decisions of one budget at once
// leave the newest of them, whatever the order they land in.
func testStatesConcurrent(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	stores := []store.Store{s, peer(t, b, s, clk), peer(t, b, s, clk)}
	created := march.Add(time.Hour)
	t0 := march.Add(5 * time.Hour)
	const writers, writes = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers*writes)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[w%len(stores)]
			for i := range writes {
				// Revisions 1..writes, each computed at several times:
				// the newest is revision writes at the last writer's time.
				x := stateOf("a", created, int64(i+1), t0.Add(time.Duration(w)*time.Second), 1)
				var err error
				if w%2 == 0 {
					err = st.PutState(ctx, x)
				} else {
					err = st.PutStates(ctx, []budget.State{x})
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStates(t, "States after concurrent puts", got, []budget.State{stateOf("a", created, writes, t0.Add((writers-1)*time.Second), 1)})
}
