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
		// withhold its first borrow (sampling.Core.FirstBorrows).
		resp, err := r.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop", KnownRulesVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(resp.GetRatesInForce(), exhausted, protocmp.Transform()) {
			t.Errorf("GetSamplingRules: rates in force %v, want %v", resp.GetRatesInForce(), exhausted)
		}
	}
}

// TestFirstTrafficDecidedAtOnce: an enforcing budget decided when it had
// no traffic (at its creation) is decided again as soon as a report of
// its first traffic is recorded, mid-interval, and the stream that sent
// the report gets the rates in force with its answer's round: the
// budget's traffic is cut within one report, not at the controller's next
// interval (before, its first traffic ran at the rules' own rates until
// then: most of what a small budget spent, issue 15). No tick decides it:
// the interval is still unclaimed.
func TestFirstTrafficDecidedAtOnce(t *testing.T) {
	// Mid-interval: the ticks are at multiples of 10 s.
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 3, 0, time.UTC))
	st := newMemStore(t)
	rep := startReplica(t, st, replicaOptions{Now: clock.Now, DecideAtOnce: true, WakeOnTraffic: true})
	ctx := ctxT(t)
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 1}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	// 10,000 traces: $0.05.
	created, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 50_000,
		Mode: pb.Budget_MODE_ENFORCE, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}})
	if err != nil {
		t.Fatal(err)
	}
	uid := created.GetBudget().GetUid()
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return bs.States["shop"].BudgetUID == uid })
	if d := rep.catalog.CurrentBudgets().States["shop"].Decision; d.FixedRateFactor != 1 {
		t.Fatalf("created without traffic: %+v, want factors 1", d)
	}
	stream, err := rep.sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "s", ServiceName: "shop"}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || len(m.GetRules().GetRatesInForce()) != 0 {
		t.Fatalf("first message %v (%v), want a rule set without rates in force", m, err)
	}
	// The first traffic, 4 s into the interval: 1,000 requests a second.
	reported := clock.Add(4 * time.Second)
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Seq: 1,
		Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 4000, SampledCount: 4000}}}}}); err != nil {
		t.Fatal(err)
	}
	// The answer, then the decision's push: a rule set whose rates in
	// force cut Default's fixed rate.
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("no rates in force after the first traffic: %v", err)
		}
		if rs := m.GetRules().GetRatesInForce(); len(rs) == 1 && rs[0].GetRuleName() == "Default" && rs[0].GetFixedRate() < 1 {
			break
		}
	}
	states, err := st.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := states["shop"]
	if !s.Computed.Equal(reported) || s.Requests != 4000 || s.Decision.FixedRateFactor >= 1 {
		t.Errorf("decision computed at %v over %v requests, fixed-rate factor %v; want one at the report's %v over its 4000 requests, cutting",
			s.Computed, s.Requests, s.Decision.FixedRateFactor, reported)
	}
	tick := reported.UnixNano() / int64(10*time.Second)
	if ok, err := st.ClaimTick(ctx, tick, 20*time.Second); err != nil || !ok {
		t.Errorf("the interval was claimed by a tick (%v, %v): want the decision made without one", ok, err)
	}
}

// TestWokenBudgetDecidedOnce: a woken budget is decided on the replica
// once, then not again within a second; not when its stored decision has
// seen its traffic already (another replica's, or a tick's); and a name
// that is no budget is not decided at all.
func TestWokenBudgetDecidedOnce(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 3, 0, time.UTC))
	st := newMemStore(t)
	rep := startReplica(t, st, replicaOptions{Now: clock.Now, DecideAtOnce: true})
	ctx := ctxT(t)
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 50_000}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.States) == 1 })
	computed := func() time.Time {
		t.Helper()
		states, err := st.States(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return states["shop"].Computed
	}
	report := func(requests int64) {
		t.Helper()
		if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop",
			Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: requests}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name    string
		advance time.Duration
		report  int64
		wake    []string
		want    int
	}{
		{"woken without traffic: decided", time.Second, 0, []string{"shop"}, 1},
		{"woken again at once: not", 0, 0, []string{"shop", "shop"}, 0},
		{"within the second: not", 900 * time.Millisecond, 0, []string{"shop"}, 0},
		{"traffic recorded, a second on: decided", 200 * time.Millisecond, 100, []string{"shop"}, 1},
		{"its decision saw the traffic: not", 2 * time.Second, 100, []string{"shop"}, 0},
		{"no such budget", 2 * time.Second, 0, []string{"nope"}, 0},
	} {
		now := clock.Add(step.advance)
		before := computed()
		if step.report > 0 {
			report(step.report)
		}
		for _, name := range step.wake {
			rep.ctl.Wake(name)
		}
		n, err := rep.ctl.DecideWoken(ctx)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		want := before
		if step.want > 0 {
			want = now
		}
		if got := computed(); n != step.want || !got.Equal(want) {
			t.Errorf("%s: decided %d, stored decision computed at %v; want %d, computed at %v", step.name, n, got, step.want, want)
		}
	}
}
