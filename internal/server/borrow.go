package server

import (
	"sync"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// borrowGate bounds what new instances borrow before their first targets:
// each would otherwise take up to one trace a second per rule until its
// first report is answered (about a second), so a fleet of 10,000 starting
// at once borrowed 3.2 R over its first ten seconds. The gate lets new
// instances, together, borrow at most a tenth of the rule's reservoir
// (scaled by its budgets) per second on this replica, so that a fleet
// starting or scaling out at once adds at most a hundredth of R to a
// ten-second window for each second it takes to start: a token per
// instance and rule, from a bucket per rule; an instance that finds none
// is told not to borrow (RuleRates.first_borrow_withheld). It is per
// replica: N replicas that receive a fleet together let it borrow N times
// as much.
type borrowGate struct {
	mu      sync.Mutex
	buckets map[string]*gateBucket
}

// gateBucket is one rule's bucket, at the rate it was last set to.
type gateBucket struct {
	b    reservoir.Bucket
	rate float64
}

// maxGatedRules bounds the gate's buckets: the rules SDKs are sent, with
// room for rules deleted since (the gate forgets all of them past it).
const maxGatedRules = 2000

// firstBorrowShare is the share of a rule's reservoir that new instances
// may borrow together per second.
const firstBorrowShare = 0.1

func newBorrowGate() *borrowGate { return &borrowGate{buckets: map[string]*gateBucket{}} }

// firstRuleSet returns rs as a new instance gets it: the rules whose
// borrowing the gate withholds from it listed with first_borrow_withheld.
// rs is shared and not modified; the result shares its rules.
func (g *borrowGate) firstRuleSet(rs *pb.RuleSet, now time.Time) *pb.RuleSet {
	inForce := make(map[string]*pb.RuleRates, len(rs.GetRatesInForce()))
	for _, r := range rs.GetRatesInForce() {
		inForce[r.GetRuleName()] = r
	}
	var withheld []*pb.RuleRates
	ns := now.UnixNano()
	g.mu.Lock()
	if len(g.buckets) > maxGatedRules {
		clear(g.buckets)
	}
	for _, r := range rs.GetRules() {
		w := &pb.RuleRates{RuleName: r.GetName(), FixedRate: r.GetFixedRate(), ReservoirFactor: 1, FirstBorrowWithheld: true}
		if f := inForce[r.GetName()]; f != nil {
			w.FixedRate, w.ReservoirFactor = f.GetFixedRate(), f.GetReservoirFactor()
		}
		rate := float64(r.GetReservoirSize()) * w.ReservoirFactor * firstBorrowShare
		b := g.buckets[r.GetName()]
		if b == nil {
			b = &gateBucket{}
			g.buckets[r.GetName()] = b
		}
		if b.rate != rate {
			b.b.SetRate(ns, rate, 0)
			b.rate = rate
		}
		if !b.b.Take(ns) {
			withheld = append(withheld, w)
			delete(inForce, r.GetName())
		}
	}
	g.mu.Unlock()
	if len(withheld) == 0 {
		return rs
	}
	// The rates in force of the rules not withheld, as they were.
	for _, r := range rs.GetRatesInForce() {
		if inForce[r.GetRuleName()] != nil {
			withheld = append(withheld, r)
		}
	}
	return &pb.RuleSet{RulesVersion: rs.GetRulesVersion(), Rules: rs.GetRules(), RatesInForce: withheld}
}
