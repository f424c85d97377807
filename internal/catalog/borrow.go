package catalog

import (
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// FirstBorrow is one rule of a new instance's first rule set, as the
// first-borrow gate (package sampling) weighs it: the rule's reservoir as
// the budgets in force scale it for the instance's service, traces a
// second.
type FirstBorrow struct {
	Rule      string
	Reservoir float64
}

// FirstBorrows lists rs's rules for the first-borrow gate, in rs's order.
func FirstBorrows(rs *pb.RuleSet) []FirstBorrow {
	factor := make(map[string]float64, len(rs.GetRatesInForce()))
	for _, r := range rs.GetRatesInForce() {
		factor[r.GetRuleName()] = r.GetReservoirFactor()
	}
	out := make([]FirstBorrow, len(rs.GetRules()))
	for i, r := range rs.GetRules() {
		f, ok := factor[r.GetName()]
		if !ok {
			f = 1
		}
		out[i] = FirstBorrow{Rule: r.GetName(), Reservoir: float64(r.GetReservoirSize()) * f}
	}
	return out
}

// WithFirstBorrows returns rs as a new instance gets it, lent[i] saying
// whether it may borrow for rs's i-th rule before its first targets: the
// rules it may not are listed in the rates in force with
// first_borrow_withheld (and their rates in force, or the rule's own).
// rs is shared and not modified; the result shares its rules.
func WithFirstBorrows(rs *pb.RuleSet, lent []bool) *pb.RuleSet {
	inForce := make(map[string]*pb.RuleRates, len(rs.GetRatesInForce()))
	for _, r := range rs.GetRatesInForce() {
		inForce[r.GetRuleName()] = r
	}
	var out []*pb.RuleRates
	for i, r := range rs.GetRules() {
		if i < len(lent) && lent[i] {
			continue
		}
		w := &pb.RuleRates{RuleName: r.GetName(), FixedRate: r.GetFixedRate(), ReservoirFactor: 1, FirstBorrowWithheld: true}
		if f := inForce[r.GetName()]; f != nil {
			w.FixedRate, w.ReservoirFactor = f.GetFixedRate(), f.GetReservoirFactor()
		}
		out = append(out, w)
		delete(inForce, r.GetName())
	}
	if len(out) == 0 {
		return rs
	}
	// The rates in force of the rules lent, as they were.
	for _, r := range rs.GetRatesInForce() {
		if inForce[r.GetRuleName()] != nil {
			out = append(out, r)
		}
	}
	return &pb.RuleSet{RulesVersion: rs.GetRulesVersion(), Rules: rs.GetRules(), RatesInForce: out}
}
