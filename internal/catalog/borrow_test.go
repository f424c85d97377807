package catalog_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
)

// TestFirstBorrows: the gate weighs each rule's reservoir as the rates in
// force scale it; the rules not lent are listed with
// first_borrow_withheld and their rates in force (or the rule's own), the
// rates in force of the rules lent are kept, and the shared rule set is
// not modified (nor copied when everything is lent).
func TestFirstBorrows(t *testing.T) {
	shared := []*pb.RuleRates{{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5}}
	rs := &pb.RuleSet{RulesVersion: 7, Rules: []*pb.Rule{
		{Name: "ten", ReservoirSize: 10, FixedRate: 0.5},
		{Name: "halved", ReservoirSize: 40, FixedRate: 0.5},
		{Name: "none", FixedRate: 0.1},
	}, RatesInForce: shared}
	if got, want := catalog.FirstBorrows(rs), []catalog.FirstBorrow{{Rule: "ten", Reservoir: 10}, {Rule: "halved", Reservoir: 20}, {Rule: "none"}}; !cmp.Equal(got, want) {
		t.Errorf("FirstBorrows: %v, want %v", got, want)
	}
	none := &pb.RuleRates{RuleName: "none", FixedRate: 0.1, ReservoirFactor: 1, FirstBorrowWithheld: true}
	ten := &pb.RuleRates{RuleName: "ten", FixedRate: 0.5, ReservoirFactor: 1, FirstBorrowWithheld: true}
	halved := &pb.RuleRates{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5, FirstBorrowWithheld: true}
	for _, tt := range []struct {
		lent []bool
		want []*pb.RuleRates
	}{
		{[]bool{true, true, false}, []*pb.RuleRates{none, shared[0]}},
		{[]bool{false, true, false}, []*pb.RuleRates{ten, none, shared[0]}},
		{[]bool{false, false, false}, []*pb.RuleRates{ten, halved, none}},
		{nil, []*pb.RuleRates{ten, halved, none}},
	} {
		got := catalog.WithFirstBorrows(rs, tt.lent)
		if !cmp.Equal(got.GetRatesInForce(), tt.want, protocmp.Transform()) {
			t.Errorf("lent %v: rates in force %v, want %v", tt.lent, got.GetRatesInForce(), tt.want)
		}
		if got.GetRulesVersion() != 7 || len(got.GetRules()) != 3 {
			t.Errorf("lent %v: version %d with %d rules, want the shared set's", tt.lent, got.GetRulesVersion(), len(got.GetRules()))
		}
	}
	if got := catalog.WithFirstBorrows(rs, []bool{true, true, true}); got != rs {
		t.Error("every rule lent: the rule set was copied")
	}
	if want := []*pb.RuleRates{{RuleName: "halved", FixedRate: 0.25, ReservoirFactor: 0.5}}; !cmp.Equal(rs.GetRatesInForce(), want, protocmp.Transform()) {
		t.Errorf("the shared rule set was modified: %v", rs.GetRatesInForce())
	}
}
