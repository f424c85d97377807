package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// waitForReplica waits until master counts a replica online.
func waitForReplica(t *testing.T, master *redistest.Server) {
	t.Helper()
	c := master.Client(t)
	deadline := time.Now().Add(waitTimeout)
	for {
		info, err := c.Info(t.Context(), "replication").Result()
		if err == nil && strings.Contains(info, "state=online") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica online after %v: %v\n%s", waitTimeout, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEditsWaitForReplicas: a rule or budget edit is acknowledged once the
// replica has it. With the replica stalled, the edit is applied and fails
// with ErrNotReplicated (and ErrUnavailable), not ErrNotApplied; with
// waiting turned off it is acknowledged at once.
func TestEditsWaitForReplicas(t *testing.T) {
	master := redistest.Start(t)
	replica := redistest.StartWith(t, redistest.Options{ReplicaOf: master})
	waitForReplica(t, master)
	ctx := t.Context()
	waiting := newStore(t, master.Client(t), redisstore.Options{ReplicaWait: 300 * time.Millisecond})
	notWaiting := newStore(t, master.Client(t), redisstore.Options{ReplicaWait: -1})
	// With the replica up, edits wait long enough for a loaded machine:
	// only the stalled cases below rely on the short wait running out.
	patient := newStore(t, master.Client(t), redisstore.Options{ReplicaWait: 10 * time.Second})

	if _, err := patient.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u"); err != nil {
		t.Fatalf("create rule with the replica up: %v", err)
	}
	if _, err := patient.CreateBudget(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1e6}); err != nil {
		t.Fatalf("create budget with the replica up: %v", err)
	}
	var desc string // the description the last update set
	edits := []struct {
		name    string
		prepare func() // with the replica up
		edit    func(s store.Store) error
		check   func() error // the edit is in force
	}{
		{
			name:    "create rule",
			prepare: func() { _ = patient.DeleteRule(ctx, "new", 0, "u") },
			edit: func(s store.Store) error {
				_, err := s.CreateRule(ctx, rules.Rule{Name: "new", Priority: 2}, "u")
				return err
			},
			check: func() error { _, err := waiting.Rule(ctx, "new"); return err },
		},
		{
			name:    "update rule",
			prepare: func() {},
			edit: func(s store.Store) error {
				r, err := s.Rule(ctx, "r")
				if err != nil {
					return err
				}
				desc = time.Now().String()
				r.Description = desc
				_, err = s.UpdateRule(ctx, r, r.Revision, "u")
				return err
			},
			check: func() error {
				if r, err := waiting.Rule(ctx, "r"); err != nil || r.Description != desc {
					return fmt.Errorf("rule %+v, %v", r, err)
				}
				return nil
			},
		},
		{
			name:    "delete rule",
			prepare: func() { _, _ = patient.CreateRule(ctx, rules.Rule{Name: "new", Priority: 2}, "u") },
			edit:    func(s store.Store) error { return s.DeleteRule(ctx, "new", 0, "u") },
			check: func() error {
				if _, err := waiting.Rule(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("read after delete: %v", err)
				}
				return nil
			},
		},
		{
			name:    "create budget",
			prepare: func() { _ = patient.DeleteBudget(ctx, "new", 0) },
			edit: func(s store.Store) error {
				_, err := s.CreateBudget(ctx, budget.Budget{Name: "new", MonthlyAmountMicros: 1e6})
				return err
			},
			check: func() error { _, err := waiting.Budget(ctx, "new"); return err },
		},
		{
			name:    "update budget",
			prepare: func() {},
			edit: func(s store.Store) error {
				b, err := s.Budget(ctx, "b")
				if err != nil {
					return err
				}
				desc = time.Now().String()
				b.Description = desc
				_, err = s.UpdateBudget(ctx, b, b.Revision)
				return err
			},
			check: func() error {
				if b, err := waiting.Budget(ctx, "b"); err != nil || b.Description != desc {
					return fmt.Errorf("budget %+v, %v", b, err)
				}
				return nil
			},
		},
		{
			name:    "delete budget",
			prepare: func() { _, _ = patient.CreateBudget(ctx, budget.Budget{Name: "new", MonthlyAmountMicros: 1e6}) },
			edit:    func(s store.Store) error { return s.DeleteBudget(ctx, "new", 0) },
			check: func() error {
				if _, err := waiting.Budget(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("read after delete: %v", err)
				}
				return nil
			},
		},
	}
	for _, e := range edits {
		e.prepare()
		replica.Freeze()
		err := e.edit(waiting)
		replica.Thaw()
		if !errors.Is(err, store.ErrNotReplicated) || !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotApplied) {
			t.Errorf("%s with the replica stalled: %v; want ErrNotReplicated and ErrUnavailable, without ErrNotApplied", e.name, err)
		}
		if err := e.check(); err != nil {
			t.Errorf("%s not replicated: %v; want it applied all the same", e.name, err)
		}

		e.prepare()
		replica.Freeze()
		err = e.edit(notWaiting)
		replica.Thaw()
		if err != nil {
			t.Errorf("%s with the replica stalled, not waiting: %v", e.name, err)
		}
		if err := e.check(); err != nil {
			t.Errorf("%s, not waiting: %v", e.name, err)
		}
	}
}

// TestEditOnALoneNodeDoesNotWait: with no replica there is nothing to wait
// for, however long ReplicaWait is.
func TestEditOnALoneNodeDoesNotWait(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Client(t), redisstore.Options{ReplicaWait: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if _, err := s.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkUpdateRuleWithReplica is one rule update on a master with one
// replica, acknowledged at once or once the replica confirmed it: the
// cost of the wait (INFO, a PEXPIRE and WAIT on one connection).
func BenchmarkUpdateRuleWithReplica(b *testing.B) {
	master := redistest.Start(b)
	redistest.StartWith(b, redistest.Options{ReplicaOf: master})
	for _, bb := range []struct {
		name string
		wait time.Duration
	}{{"no wait", -1}, {"wait", redisstore.DefaultReplicaWait}} {
		b.Run(bb.name, func(b *testing.B) {
			s := newStore(b, master.Client(b), redisstore.Options{Prefix: strings.ReplaceAll(bb.name, " ", "-"), ReplicaWait: bb.wait})
			ctx := context.Background()
			r, err := s.Rule(ctx, "r") // there already when -count runs this again
			if errors.Is(err, store.ErrNotFound) {
				r, err = s.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u")
			}
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if r, err = s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
