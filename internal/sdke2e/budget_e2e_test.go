package sdke2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

// embeddedPlane is one replica on the embedded store, with a budget
// controller that the test steps and that decides budgets as they are
// created, as serve wires it.
type embeddedPlane struct {
	addr    string
	rules   pb.RuleServiceClient
	budgets pb.BudgetServiceClient
	store   *memstore.Store
	catalog *catalog.Catalog
	ctl     *controller.Controller
}

func startEmbedded(t *testing.T) *embeddedPlane {
	t.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat := servetest.Catalog(t, st, catalog.Options{Logger: discard, Poll: time.Second})
	ctl := controller.New(st, cat, controller.Options{Interval: e2eInterval, Logger: discard})
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Decider: ctl, Logger: discard, ReportInterval: e2eInterval})
	srv.SetServing(true)
	// Cleanups run last first: the controller's deliveries are waited for
	// once the server has stopped.
	t.Cleanup(ctl.Wait)
	conn, addr := servetest.Serve(t, srv)
	return &embeddedPlane{addr: addr, rules: pb.NewRuleServiceClient(conn), budgets: pb.NewBudgetServiceClient(conn), store: st, catalog: cat, ctl: ctl}
}

// sampled counts the root spans of n fresh traces that s samples.
func sampled(s *sampler.Sampler, rng *rand.Rand, n int) int {
	var k int
	for range n {
		if s.ShouldSample(params(rng)).Decision == sdktrace.RecordAndSample {
			k++
		}
	}
	return k
}

// TestE2EBudgetNoLeakWindows: under an exhausted enforcing budget (fixed
// rate 0, no reservoir), no rule set lifts enforcement. An edit of another
// service's rule sends every instance a new rules version, and a new
// instance starts from the rule set alone: both sample nothing, counted
// over a thousand traces each, before any report could bring them
// targets. Without the rates in force in rule sets, each sampled at the
// rule's own rate of 1 until its next report.
func TestE2EBudgetNoLeakWindows(t *testing.T) {
	noLeaks(t)
	cp := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*deadline)
	defer cancel()
	for _, r := range []*pb.Rule{
		{Name: "shop-all", Priority: 1, ServiceName: "shop", FixedRate: 1},
		{Name: "other-all", Priority: 2, ServiceName: "other", FixedRate: 0.5},
	} {
		if _, err := cp.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	// $0.001 at $5 per million traces: 200 traces.
	b, err := cp.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 1000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	first := []*sampler.Sampler{newSampler(t, cp.addr), newSampler(t, cp.addr)}
	for i, s := range first {
		waitFor(t, deadline, fmt.Sprintf("rule shop-all on instance %d", i), func() bool { return explain(s).Rule == "shop-all" })
		if n := sampled(s, rng, 500); n < 400 {
			t.Fatalf("instance %d at fixed rate 1 sampled %d of 500", i, n)
		}
	}
	// Spend past the cap, then the controller's step exhausts the budget.
	waitFor(t, deadline, "the traces billed", func() bool {
		u, err := cp.store.Usage(ctx, "shop", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, s := u.Totals()
		return s >= 800
	})
	if err := cp.ctl.Step(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	states, err := cp.store.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := states["shop"]; st.BudgetUID != b.GetBudget().GetUid() || !st.Decision.Exhausted {
		t.Fatalf("state %+v, want budget shop exhausted", st)
	}
	for i, s := range first {
		waitFor(t, deadline, fmt.Sprintf("enforcement on instance %d", i), func() bool {
			e := explain(s)
			return e.Rule == "shop-all" && !e.Sampled
		})
	}

	// Another service's rule is edited: a new rules version for all.
	if _, err := cp.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "other-all", FixedRate: 0.25}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}}}); err != nil {
		t.Fatal(err)
	}
	list, err := cp.rules.ListRules(ctx, &pb.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	version := list.GetRulesVersion()
	for i, s := range first {
		waitFor(t, deadline, fmt.Sprintf("rules version %d on instance %d", version, i), func() bool { return explain(s).RulesVersion >= version })
		if n := sampled(s, rng, 1000); n != 0 {
			t.Errorf("instance %d, just after an edit of another service's rule: sampled %d of 1000 under an exhausted budget, want 0", i, n)
		}
	}

	// A new instance, before its first report: its first report goes a
	// second after it starts, and it is looked at as soon as its rule set
	// is in.
	fresh := newSampler(t, cp.addr)
	waitFor(t, deadline, "rules on the new instance", func() bool { return explain(fresh).RulesVersion >= version })
	if n := sampled(fresh, rng, 1000); n != 0 {
		t.Errorf("a new instance's first decisions: sampled %d of 1000 under an exhausted budget, want 0", n)
	}
	if e := explain(fresh); e.Rule != "shop-all" || e.Reason != sampler.ReasonFixedRate || e.Sampled {
		t.Errorf("new instance: %+v, want shop-all at its fixed rate in force, not sampled", e)
	}
}

// TestE2EBudgetCutsStagingFirst: two SDK instances of one service, one in
// production and one in staging (their resource's
// deployment.environment.name), get rules of their own (resource
// attributes), and a budget over the service whose priorities cut the
// staging rule first (by its label) cuts staging only. Staging sends a
// hundred times production's traffic; the budget's cap is set to a fifth
// of the month's forecast, which production's share fits many times over,
// so the plan cuts staging's fixed rate and leaves production's whole.
func TestE2EBudgetCutsStagingFirst(t *testing.T) {
	noLeaks(t)
	cp := startEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*deadline)
	defer cancel()
	for _, r := range []*pb.Rule{
		{Name: "shop-prod", Priority: 1, ServiceName: "shop", FixedRate: 1,
			ResourceAttributes: map[string]string{"deployment.environment.name": "production"}, Labels: map[string]string{"env": "production"}},
		{Name: "shop-staging", Priority: 1, ServiceName: "shop", FixedRate: 1,
			ResourceAttributes: map[string]string{"deployment.environment.name": "staging"}, Labels: map[string]string{"env": "staging"}},
	} {
		if _, err := cp.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	// A cap no traffic here comes near, until the forecast is known.
	if _, err := cp.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 1e15, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}},
		RulePriorities: []*pb.RulePriority{{RuleLabels: map[string]string{"env": "staging"}, Priority: -1}},
	}}); err != nil {
		t.Fatal(err)
	}
	env := func(name string) sampler.Option {
		return sampler.WithResourceAttributes(map[string]string{"deployment.environment.name": name, "service.version": "2.5.0"})
	}
	prod, staging := newSampler(t, cp.addr, env("production")), newSampler(t, cp.addr, env("staging"))
	waitFor(t, deadline, "production's rule on the production instance", func() bool { return explain(prod).Rule == "shop-prod" })
	waitFor(t, deadline, "staging's rule on the staging instance", func() bool { return explain(staging).Rule == "shop-staging" })

	rng := rand.New(rand.NewPCG(5, 6))
	if n := sampled(prod, rng, 40); n != 40 {
		t.Fatalf("production at fixed rate 1 sampled %d of 40", n)
	}
	if n := sampled(staging, rng, 4000); n != 4000 {
		t.Fatalf("staging at fixed rate 1 sampled %d of 4000", n)
	}
	waitFor(t, deadline, "the traces billed", func() bool {
		u, err := cp.store.Usage(ctx, "shop", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, s := u.Totals()
		return s >= 4040
	})
	if err := cp.ctl.Step(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := cp.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	forecast := st.GetStatus().GetForecastUnenforcedMicros()
	if forecast <= 0 || st.GetStatus().GetFixedRateFactor() != 1 {
		t.Fatalf("before the cap: %v, want a forecast and no enforcement", st.GetStatus())
	}
	// The cap: a fifth of the forecast. The budget is decided at once.
	if _, err := cp.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{
		Budget:     &pb.Budget{Name: "shop", MonthlyAmountMicros: forecast / 5},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"monthly_amount_micros"}},
	}); err != nil {
		t.Fatal(err)
	}
	st, err = cp.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	factors := map[string]float64{}
	for _, r := range st.GetStatus().GetRules() {
		factors[r.GetRuleName()] = r.GetFixedRateFactor()
	}
	t.Logf("forecast %d micros, cap %d: fixed rate factors %v", forecast, forecast/5, factors)
	if f, ok := factors["shop-staging"]; !ok || f >= 0.5 {
		t.Errorf("staging's fixed rate factor %v (listed: %v), want it cut below 0.5", f, ok)
	}
	if f, ok := factors["shop-prod"]; !ok || f != 1 {
		t.Errorf("production's fixed rate factor %v (listed: %v), want 1: staging is cut first", f, ok)
	}

	// The instances apply it: staging samples a share, production all.
	waitFor(t, deadline, "the cut on the staging instance", func() bool {
		return sampled(staging, rng, 200) < 140
	})
	ns, np := sampled(staging, rng, 1000), sampled(prod, rng, 1000)
	t.Logf("under the cap: staging sampled %d of 1000, production %d of 1000", ns, np)
	if ns >= 600 {
		t.Errorf("staging sampled %d of 1000 under a cut below 0.5", ns)
	}
	if np != 1000 {
		t.Errorf("production sampled %d of 1000, want every one: the budget cuts staging first", np)
	}
	if e := explain(prod); e.Rule != "shop-prod" {
		t.Errorf("production decides by %q, want shop-prod", e.Rule)
	}
}
