package controller_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// TestBudgetDecidedAtOnce: a budget created, or changed, is decided by the
// time the call returns, not at the controller's next interval: lowered
// under what was spent, it is exhausted at once, and a second replica's
// catalog, which did not serve the edit, takes the decision up. The rule
// sets both replicas hand out carry it: a stream's is sent again.
func TestBudgetDecidedAtOnce(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	st := newMemStore(t)
	rep := startReplica(t, st, replicaOptions{Now: clock.Now, DecideAtOnce: true})
	other := startReplica(t, st, replicaOptions{Now: clock.Now, DecideAtOnce: true})
	ctx := ctxT(t)
	// Every request sampled, so that the counts below are honest claims.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 1}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	created, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 1_000_000}})
	if err != nil {
		t.Fatal(err)
	}
	decided := func(what string) budget.State {
		t.Helper()
		states, err := st.States(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := states["shop"]
		if !ok || s.BudgetUID != created.GetBudget().GetUid() || !s.Computed.Equal(clock.Now()) {
			t.Fatalf("%s: state %+v (present %v), want one of budget %q computed at %v", what, s, ok, created.GetBudget().GetUid(), clock.Now())
		}
		return s
	}
	if d := decided("created").Decision; d.FixedRateFactor != 1 || d.Exhausted {
		t.Errorf("created with nothing spent: %+v, want factors 1", d)
	}
	// A stream of the service gets its rule set, no rates lowered yet.
	stream, err := rep.sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "s", ServiceName: "shop"}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	version := m.GetRules().GetRulesVersion()
	if version == 0 || len(m.GetRules().GetRatesInForce()) != 0 {
		t.Fatalf("first message %v, want a rule set without rates in force", m)
	}
	// 10,000 traces: $0.05 of $1.
	clock.Add(10 * time.Second)
	if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop",
		Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 10_000, SampledCount: 10_000}}}); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Second)
	if _, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 10_000}, UpdateMask: mask("monthly_amount_micros")}); err != nil {
		t.Fatal(err)
	}
	if d := decided("lowered to $0.01").Decision; !d.Exhausted || d.FixedRateFactor != 0 {
		t.Errorf("lowered under its spend: %+v, want exhausted", d)
	}
	for _, c := range []*catalog.Catalog{rep.catalog, other.catalog} {
		servetest.WaitBudgets(t, c, func(bs *catalog.Budgets) bool { return bs.States["shop"].Decision.Exhausted })
	}
	// Rule sets carry the rates in force: the stream sends its rule set
	// again at the same version, and a unary client gets them too.
	exhausted := []*pb.RuleRates{{RuleName: "Default"}}
	m, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetRules(); got.GetRulesVersion() != version || !cmp.Equal(got.GetRatesInForce(), exhausted, protocmp.Transform()) {
		t.Errorf("after the decision the stream sent %v, want the rule set of version %d with rates in force %v", m, version, exhausted)
	}
	for _, r := range []*replica{rep, other} {
		// An instance that holds rules already: a new one's may also
		// withhold its first borrow (borrowGate).
		resp, err := r.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop", KnownRulesVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(resp.GetRatesInForce(), exhausted, protocmp.Transform()) {
			t.Errorf("GetSamplingRules: rates in force %v, want %v", resp.GetRatesInForce(), exhausted)
		}
	}
}
