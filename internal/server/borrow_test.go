package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/servetest"
)

// firstRules is a new instance's first rule set: by a stream's hello
// (stream) or by GetSamplingRules, knowing no rules version.
func firstRules(ctx context.Context, t *testing.T, rep *replica, client string, stream bool) *pb.RuleSet {
	t.Helper()
	if stream {
		_, rs := openStream(ctx, t, rep.sampling, client, "shop")
		return rs
	}
	resp, err := rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return &pb.RuleSet{RulesVersion: resp.GetRulesVersion(), Rules: resp.GetRules(), RatesInForce: resp.GetRatesInForce()}
}

// lentFor counts, per rule, the rule sets that let their instance borrow
// for it (the rule not listed with first_borrow_withheld).
func lentFor(sets []*pb.RuleSet) map[string]int {
	n := map[string]int{}
	for _, rs := range sets {
		withheld := map[string]bool{}
		for _, r := range rs.GetRatesInForce() {
			withheld[r.GetRuleName()] = r.GetFirstBorrowWithheld()
		}
		for _, r := range rs.GetRules() {
			if !withheld[r.GetName()] {
				n[r.GetName()]++
			}
		}
	}
	return n
}

// TestFirstBorrowsFleetWide: a fleet of new instances starting at once
// through two replicas on one store (half by streams on one, half by
// GetSamplingRules on the other) borrows, together, a tenth of each
// rule's reservoir a second, fleet-wide: the bucket holds a second's worth
// (one token below 1/s) and refills at that rate. Each replica's own gate
// let twice as many borrow.
func TestFirstBorrowsFleetWide(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stores func(t *testing.T) (a, b samplingStore)
	}{
		{"embedded", func(t *testing.T) (a, b samplingStore) { st := newMemStore(t); return st, st }},
		{"redis", func(t *testing.T) (a, b samplingStore) {
			rs := redistest.Start(t)
			return newRedisStore(t, rs), newRedisStore(t, rs)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			sa, sb := tc.stores(t)
			a := startReplica(t, sa, clock.Now)
			b := startReplica(t, sb, clock.Now)
			ctx := ctxT(t)
			createRule(t, a.rules, &pb.Rule{Name: "checkout", Priority: 1, ServiceName: "shop", ReservoirSize: 40, FixedRate: 0.1}) // 4/s
			createRule(t, a.rules, &pb.Rule{Name: "cart", Priority: 2, ServiceName: "shop", ReservoirSize: 5, FixedRate: 0.1})      // 0.5/s
			servetest.WaitVersion(t, a.catalog, a.first+2)
			servetest.WaitVersion(t, b.catalog, a.first+2)

			fleet := func(second int) map[string]int {
				var sets []*pb.RuleSet
				for i := range 24 {
					rep := a
					if i%2 == 1 {
						rep = b
					}
					sets = append(sets, firstRules(ctx, t, rep, fmt.Sprintf("new-%d-%d", second, i), i%2 == 0))
				}
				return lentFor(sets)
			}
			for s, want := range []map[string]int{
				{"checkout": 4, "cart": 1},
				{"checkout": 4, "cart": 0}, // half a token
				{"checkout": 4, "cart": 1},
			} {
				got := fleet(s)
				for rule, n := range want {
					if got[rule] != n {
						t.Errorf("second %d: 24 new instances on two replicas borrow for %s in %d rule sets, want %d (all: %v)", s, rule, got[rule], n, got)
					}
				}
				clock.Add(time.Second)
			}
		})
	}
}

// TestFirstBorrowsWithoutStore: with the store frozen (a hung Redis), a
// new instance still gets its first rule set, by a stream's hello and by
// GetSamplingRules, with every first borrow withheld: the gate waits for
// the store a bounded time and never lends what it could not count.
func TestFirstBorrowsWithoutStore(t *testing.T) {
	rs := redistest.Start(t)
	clock := newClock()
	a := startReplica(t, newRedisStore(t, rs), clock.Now)
	ctx := ctxT(t)
	createRule(t, a.rules, &pb.Rule{Name: "checkout", Priority: 1, ServiceName: "shop", ReservoirSize: 400, FixedRate: 0.1})
	servetest.WaitVersion(t, a.catalog, a.first+1)
	if got := lentFor([]*pb.RuleSet{firstRules(ctx, t, a, "before", true)}); got["checkout"] != 1 {
		t.Fatalf("with the store up, a new instance borrows for checkout in %d rule sets, want 1", got["checkout"])
	}
	rs.Freeze()
	defer rs.Thaw()
	sets := []*pb.RuleSet{firstRules(ctx, t, a, "frozen-1", true), firstRules(ctx, t, a, "frozen-2", false)}
	if got := lentFor(sets); len(got) != 0 {
		t.Errorf("with the store frozen, new instances borrow for %v, want none", got)
	}
	for _, s := range sets {
		if len(s.GetRules()) != 2 {
			t.Errorf("with the store frozen, a first rule set of %d rules, want checkout and Default", len(s.GetRules()))
		}
	}
}
