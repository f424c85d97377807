package server

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// TestBorrowGate: new instances together borrow at most a tenth of a rule's
// reservoir (scaled by its budgets) per second: past it, each first rule
// set withholds the rule's first borrow (a second's worth may go at once),
// until the gate's bucket refills. A
// rule without a reservoir is never borrowed from. The shared rule set is
// not modified.
func TestBorrowGate(t *testing.T) {
	g := newBorrowGate()
	t0 := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	shared := []*pb.RuleRates{{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5}}
	rs := &pb.RuleSet{RulesVersion: 7, Rules: []*pb.Rule{
		{Name: "ten", ReservoirSize: 10, FixedRate: 0.5},    // 1/s
		{Name: "halved", ReservoirSize: 40, FixedRate: 0.5}, // 2/s in force
		{Name: "none", FixedRate: 0.1},
	}, RatesInForce: shared}
	none := &pb.RuleRates{RuleName: "none", FixedRate: 0.1, ReservoirFactor: 1, FirstBorrowWithheld: true}
	ten := &pb.RuleRates{RuleName: "ten", FixedRate: 0.5, ReservoirFactor: 1, FirstBorrowWithheld: true}
	halved := &pb.RuleRates{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5, FirstBorrowWithheld: true}
	for i, tt := range []struct {
		at   time.Duration
		want []*pb.RuleRates
	}{
		{0, []*pb.RuleRates{none, shared[0]}},
		{0, []*pb.RuleRates{ten, none, shared[0]}},
		{0, []*pb.RuleRates{ten, halved, none}},
		{time.Second / 2, []*pb.RuleRates{ten, none, shared[0]}},
		{time.Second, []*pb.RuleRates{none, shared[0]}},
	} {
		got := g.firstRuleSet(rs, t0.Add(tt.at))
		if !cmp.Equal(got.GetRatesInForce(), tt.want, protocmp.Transform()) {
			t.Errorf("instance %d at %v: rates in force %v, want %v", i, tt.at, got.GetRatesInForce(), tt.want)
		}
		if got.GetRulesVersion() != 7 || len(got.GetRules()) != 3 {
			t.Errorf("instance %d: version %d with %d rules, want the shared set's", i, got.GetRulesVersion(), len(got.GetRules()))
		}
	}
	if want := []*pb.RuleRates{{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5}}; !cmp.Equal(rs.GetRatesInForce(), want, protocmp.Transform()) {
		t.Errorf("the shared rule set was modified: %v", rs.GetRatesInForce())
	}
}
