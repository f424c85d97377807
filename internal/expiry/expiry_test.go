package expiry_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/expiry"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock = clocktest.Clock

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const interval = 10 * time.Second

func newStore(t *testing.T, clk *clock) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func create(t *testing.T, st store.Store, name string, expire time.Time) rules.Rule {
	t.Helper()
	r, err := st.CreateRule(t.Context(), rules.Rule{Name: name, Priority: 1, FixedRate: 1, URLPath: "/checkout*", ExpireTime: expire}.Normalize(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(t *testing.T, st store.Store) []string {
	t.Helper()
	snap, err := st.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range snap.Rules {
		out = append(out, r.Name)
	}
	return out
}

// TestReap: a rule is deleted at its expire_time, not before, in one batch
// with every other rule that expired, and the audit log says so.
func TestReap(t *testing.T) {
	clk := clocktest.New(start)
	st := newStore(t, clk)
	ctx := t.Context()
	debug := create(t, st, "debug-checkout", start.Add(30*time.Minute))
	create(t, st, "debug-login", start.Add(20*time.Minute))
	create(t, st, "later", start.Add(2*time.Hour))
	create(t, st, "forever", time.Time{})
	r := expiry.New(st, nil, expiry.Options{Interval: interval, Now: clk.Now, Logger: discard()})

	tests := []struct {
		at      time.Time
		deleted []string
		left    []string
	}{
		{start.Add(20*time.Minute - time.Nanosecond), nil, []string{"debug-checkout", "debug-login", "forever", "later", rules.DefaultName}},
		{start.Add(30 * time.Minute), []string{"debug-checkout", "debug-login"}, []string{"forever", "later", rules.DefaultName}},
		{start.Add(time.Hour), nil, []string{"forever", "later", rules.DefaultName}},
	}
	for _, tt := range tests {
		clk.Set(tt.at)
		got, err := r.Tick(ctx)
		if err != nil {
			t.Fatalf("at %v: Tick: %v", tt.at, err)
		}
		if diff := cmp.Diff(tt.deleted, got); diff != "" {
			t.Errorf("at %v: deleted (-want +got):\n%s", tt.at, diff)
		}
		if diff := cmp.Diff(tt.left, names(t, st)); diff != "" {
			t.Errorf("at %v: rules left (-want +got):\n%s", tt.at, diff)
		}
	}
	page, err := st.RuleEvents(ctx, "debug-checkout", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	ev := page.Events[0]
	if ev.Action != store.ActionDelete || ev.Actor != expiry.Actor || ev.Message != expiry.Message || ev.Before == nil || !ev.Before.ExpireTime.Equal(debug.ExpireTime) {
		t.Errorf("audit entry of the expired rule: %+v, want a delete by %s saying %q", ev, expiry.Actor, expiry.Message)
	}
	login, err := st.RuleEvents(ctx, "debug-login", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if login.Events[0].RulesVersion != ev.RulesVersion {
		t.Errorf("the two expired rules were deleted at versions %d and %d, want one batch", ev.RulesVersion, login.Events[0].RulesVersion)
	}
}

// TestOnceForTheControlPlane: of reapers on every replica, one deletes the
// expired rules of an interval; the others do nothing.
func TestOnceForTheControlPlane(t *testing.T) {
	clk := clocktest.New(start)
	st := newStore(t, clk)
	create(t, st, "debug", start.Add(time.Minute))
	clk.Set(start.Add(time.Minute))
	// The budget controller claimed its interval already: the reaper's
	// claims are its own.
	if ok, err := st.ClaimTick(t.Context(), clk.Now().UnixNano()/int64(interval), 2*interval); !ok || err != nil {
		t.Fatalf("the controller's claim: %v, %v", ok, err)
	}
	counting := &countingStore{Store: st}
	var total int
	for range 3 {
		got, err := expiry.New(counting, nil, expiry.Options{Interval: interval, Now: clk.Now, Logger: discard()}).Tick(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		total += len(got)
	}
	if total != 1 || counting.batches != 1 {
		t.Errorf("3 replicas deleted %d rules in %d batches, want 1 in 1", total, counting.batches)
	}
}

// countingStore counts batches, and can land another edit of a rule just
// before the first batch.
type countingStore struct {
	*memstore.Store
	batches int
	race    string
}

func (s *countingStore) ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error) {
	s.batches++
	if s.race != "" {
		r, err := s.Store.Rule(ctx, s.race)
		if err != nil {
			return store.BatchResult{}, err
		}
		r.Description = "extended meanwhile"
		r.ExpireTime = r.ExpireTime.Add(time.Hour)
		if _, err := s.Store.UpdateRule(ctx, r, r.Revision, "bob"); err != nil {
			return store.BatchResult{}, err
		}
		s.race = ""
	}
	return s.Store.ApplyRuleEdits(ctx, edits, actor, message)
}

// TestEditedMeanwhile: a rule extended between the reaper's read and its
// delete is not deleted; the next interval deletes what still expired.
func TestEditedMeanwhile(t *testing.T) {
	clk := clocktest.New(start)
	st := newStore(t, clk)
	create(t, st, "a", start.Add(time.Minute))
	create(t, st, "b", start.Add(time.Minute))
	cs := &countingStore{Store: st, race: "a"}
	r := expiry.New(cs, nil, expiry.Options{Interval: interval, Now: clk.Now, Logger: discard()})
	clk.Set(start.Add(time.Minute))
	if _, err := r.Tick(t.Context()); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Tick with a rule edited meanwhile: %v, want a conflict", err)
	}
	if diff := cmp.Diff([]string{"a", "b", rules.DefaultName}, names(t, st)); diff != "" {
		t.Errorf("after the refused batch (-want +got):\n%s", diff)
	}
	clk.Set(start.Add(time.Minute + interval))
	got, err := r.Tick(t.Context())
	if err != nil || !cmp.Equal(got, []string{"b"}) {
		t.Errorf("next interval: deleted %v, %v; want b (a was extended)", got, err)
	}
}

// TestCatalogSparesTheStore: while the replica's rules hold no expired rule,
// an interval costs no store call.
func TestCatalogSparesTheStore(t *testing.T) {
	clk := clocktest.New(start)
	st := newStore(t, clk)
	create(t, st, "a", start.Add(time.Minute))
	cat := catalog.New(st, catalog.Options{Logger: discard()})
	if err := cat.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	claims := &claimCounter{countingStore: countingStore{Store: st}}
	r := expiry.New(claims, cat, expiry.Options{Interval: interval, Now: clk.Now, Logger: discard()})
	if _, err := r.Tick(t.Context()); err != nil || claims.claims != 0 {
		t.Errorf("before the expiry: %d claims, %v; want none", claims.claims, err)
	}
	clk.Set(start.Add(time.Minute))
	if got, err := r.Tick(t.Context()); err != nil || claims.claims != 1 || len(got) != 1 {
		t.Errorf("at the expiry: %d claims, deleted %v, %v; want 1 claim, a deleted", claims.claims, got, err)
	}
}

type claimCounter struct {
	countingStore
	claims int
}

func (c *claimCounter) ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error) {
	c.claims++
	return c.Store.ClaimTick(ctx, tick, ttl)
}

// TestRunStops: Run returns when its context ends.
func TestRunStops(t *testing.T) {
	clk := clocktest.New(start)
	r := expiry.New(newStore(t, clk), nil, expiry.Options{Interval: time.Millisecond, Now: clk.Now, Logger: discard()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
