package controller_test

// The controller's tests on real replicas: servers on loopback ports over
// one store, each with its catalog and controller, SDK-like clients
// reporting through the sampling API and editing through the budget API.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// TestMain checks that the replicas, controllers and webhook deliveries
// the tests start are all stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// replica is a full replica: rules, sampling and budgets, with its own
// catalog and budget controller (ticked by the test).
type replica struct {
	rules    pb.RuleServiceClient
	sampling pb.SamplingServiceClient
	budgets  pb.BudgetServiceClient
	catalog  *catalog.Catalog
	ctl      *controller.Controller
	first    int64 // the rules version when it started: versions start from the clock
}

// replicaOptions are what the tests change of a replica.
type replicaOptions struct {
	// Now is the clock of the server and the controller.
	Now func() time.Time
	// Webhook delivers the controller's alerts; its Egress is also the
	// server's check of webhook URLs. Nil: the defaults.
	Webhook *budget.Webhook
	// Secrets seals webhook secrets at rest (server) and opens them for
	// delivery (controller).
	Secrets *secrets.Box
	// Logger logs for the server, the catalog and the controller; nil:
	// discarded.
	Logger *slog.Logger
	// DecideAtOnce makes the controller the server's Decider, as serve
	// does: budget edits are decided before they return.
	DecideAtOnce bool
	// WakeOnTraffic makes the controller the server's Waker and runs it
	// (its Run: ticks of the real clock every 10 s, which a test's few
	// seconds never reach, and the budgets woken by their first traffic),
	// as serve does.
	WakeOnTraffic bool
}

// startReplica runs a replica over st: a real server on a loopback port,
// its catalog following the store, and a budget controller that ticks only
// when the test says. It is the one bootstrap of the controller's tests.
func startReplica(t *testing.T, st store.Store, o replicaOptions) *replica {
	t.Helper()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cat := servetest.Catalog(t, st, catalog.Options{Logger: log, Poll: 200 * time.Millisecond})
	var egress *budget.Egress // the server's check of webhook URLs, as the controller's delivery's
	if o.Webhook != nil {
		egress = o.Webhook.Egress
	}
	ctl := controller.New(st, cat, controller.Options{Interval: 10 * time.Second, Now: o.Now, Logger: log, Webhook: o.Webhook, Secrets: o.Secrets})
	var decider server.BudgetDecider
	if o.DecideAtOnce {
		decider = ctl
	}
	var waker sampling.BudgetWaker
	if o.WakeOnTraffic {
		waker = ctl
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctl.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Decider: decider, Waker: waker, Logger: log, Now: o.Now,
		ReportInterval: 10 * time.Second, Egress: egress, Secrets: o.Secrets})
	// Cleanups run last first: the controller's deliveries are waited for
	// once the server has stopped, before the catalog stops.
	t.Cleanup(ctl.Wait)
	conn, _ := servetest.Serve(t, srv)
	return &replica{
		rules: pb.NewRuleServiceClient(conn), sampling: pb.NewSamplingServiceClient(conn), budgets: pb.NewBudgetServiceClient(conn),
		catalog: cat, ctl: ctl, first: cat.Current().Version,
	}
}

func newMemStore(t *testing.T) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// fieldViolations returns the BadRequest field names carried by err.
func fieldViolations(t *testing.T, err error) []string {
	t.Helper()
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// TestBudgetsAcrossReplicas: two replicas on one Redis. Spend reported
// through either counts once; the controller runs once per interval whichever
// replicas tick; its factor reaches SDK targets on both; each alert fires
// once and reaches a webhook that fails twice exactly once; a new month
// starts from nothing.
func TestBudgetsAcrossReplicas(t *testing.T) {
	rs := redistest.Start(t)
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	var hits, delivered atomic.Int32
	var mu sync.Mutex
	var kinds []string
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%3 != 0 { // fails twice, then succeeds: per alert
			http.Error(w, "try again", http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get(budget.SignatureHeader) != budget.Sign("s3cret", body) {
			t.Errorf("bad signature on %s", body)
		}
		delivered.Add(1)
		mu.Lock()
		kinds = append(kinds, r.Header.Get("X-Controlplane-Alert-Id"))
		mu.Unlock()
	}))
	defer hookSrv.Close()
	// The receiver is on loopback, which webhooks may reach only when the
	// operator allows it.
	egress, eerr := budget.NewEgress(budget.EgressOptions{Allow: []string{"127.0.0.1/32"}})
	if eerr != nil {
		t.Fatal(eerr)
	}
	hook := &budget.Webhook{Backoff: time.Millisecond, Egress: egress}
	newStore := func() store.Store {
		st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	a := startReplica(t, newStore(), replicaOptions{Now: clock.Now, Webhook: hook})
	b := startReplica(t, newStore(), replicaOptions{Now: clock.Now, Webhook: hook})
	ctx := ctxT(t)

	// $5 at $5 per million: a cap of 1,000,000 traces, for service shop.
	_, err := a.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}},
		SpendThresholds: []float64{0.1}, ForecastThresholds: []float64{1},
		Channels: []*pb.NotificationChannel{{WebhookUrl: hookSrv.URL, Secret: "s3cret"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{a, b} {
		servetest.WaitBudgets(t, r.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	}
	// A day of traffic: every hour 2,500 sampled traces reported to each
	// replica (120,000 in all, 12 % of the cap on the 10th: on course for
	// 2.5 times the cap), and traffic of another service that the budget
	// does not count.
	for h := 0; h < 24; h++ {
		for _, r := range []*replica{a, b} {
			for _, svc := range []string{"shop", "search"} {
				_, err := r.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c-" + svc, ServiceName: svc,
					Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 50_000, SampledCount: 2_500}}})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		clock.Add(time.Hour)
	}
	// Both controllers tick the same interval: one decides.
	for _, r := range []*replica{a, b} {
		if err := r.ctl.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	s := st.GetStatus()
	if s.GetSampledTraces() != 120_000 || s.GetSpentRatio() != 0.12 || s.GetSpentMicros() != 600_000 {
		t.Errorf("status %v, want 120,000 traces, 12 %% of the cap, $0.60", s)
	}
	if !(s.GetFixedRateFactor() < 1) || s.GetForecastRatio() > 1 {
		t.Errorf("on course for 2.5 times the cap, the budget must enforce and forecast under it: %v", s)
	}
	// The factor reaches SDK targets on both replicas, for shop only.
	for _, r := range []*replica{a, b} {
		servetest.WaitBudgets(t, r.catalog, func(bs *catalog.Budgets) bool { return len(bs.States) == 1 })
		for svc, lowered := range map[string]bool{"shop": true, "search": false} {
			resp, err := r.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "x-" + svc, ServiceName: svc,
				Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 10}}})
			if err != nil {
				t.Fatal(err)
			}
			got := resp.GetTargets()[0].GetFixedRate()
			if want := 0.05 * s.GetFixedRateFactor(); lowered && got != want || !lowered && got != 0.05 {
				t.Errorf("service %s: fixed rate %v (factor %v)", svc, got, s.GetFixedRateFactor())
			}
		}
	}
	// The 10 % spend and the forecast alerts fired once each, however many
	// ticks.
	clock.Add(10 * time.Second)
	for _, r := range []*replica{a, b, a} {
		if err := r.ctl.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	alerts, err := b.budgets.ListAlerts(ctx, &pb.ListAlertsRequest{BudgetName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, al := range alerts.GetAlerts() {
		seen[al.GetKind().String()+"/"+formatThreshold(al.GetThreshold())]++
	}
	if seen["KIND_SPEND_THRESHOLD/0.1"] != 1 || seen["KIND_FORECAST_OVER/1"] != 1 {
		t.Errorf("alerts %v, want the 10 %% and forecast alerts once each", seen)
	}
	a.ctl.Wait()
	b.ctl.Wait()
	if int(delivered.Load()) != len(alerts.GetAlerts()) {
		t.Errorf("webhook got %d deliveries for %d alerts (%v)", delivered.Load(), len(alerts.GetAlerts()), kinds)
	}

	// December: nothing spent yet.
	clock.Add(21 * 24 * time.Hour)
	if err := a.ctl.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = a.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus().GetSampledTraces() != 0 || st.GetStatus().GetMonthStartTime().AsTime().Month() != time.December || st.GetStatus().GetFixedRateFactor() != 1 {
		t.Errorf("after the month rolled over: %v", st.GetStatus())
	}
}

func formatThreshold(f float64) string { return budget.FormatShare(f) }

// TestExhaustedBudgetKeepsItsFloor: a budget on one of two equal services
// is exhausted; its clients keep the floor in traces per second, counted on
// the part of the reservoir the service gets (half of it), not the whole.
func TestExhaustedBudgetKeepsItsFloor(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	st := newMemStore(t)
	rep := startReplica(t, st, replicaOptions{Now: clock.Now})
	ctx := ctxT(t)
	// Every request sampled, so that the counts below are honest claims
	// (the server cuts a sampled count past what the rule's rates allow).
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", ReservoirSize: 100, FixedRate: 1}, UpdateMask: mask("reservoir_size", "fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		// $140 pays for 28M traces; the floor costs $133.92 in 31 days.
		Name: "small", MonthlyAmountMicros: 140_000_000, FloorTracesPerSecond: 10, Scope: &pb.BudgetScope{ServiceNames: []string{"small"}},
	}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	// Two services of 300,000 req/s each, reporting every 10 s with their
	// receipts, as SDKs do; small's 2.5M traces a report are 30M in two
	// minutes, over the cap.
	receipts := map[string]string{}
	report := func(svc string) *pb.SamplingTarget {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c-" + svc, ServiceName: svc,
			Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 3_000_000, SampledCount: 2_500_000, Receipt: receipts[svc]}}})
		if err != nil {
			t.Fatal(err)
		}
		receipts[svc] = resp.GetTargets()[0].GetReceipt()
		return resp.GetTargets()[0]
	}
	for i := 0; i < 12; i++ {
		clock.Add(10 * time.Second)
		report("big")
		report("small")
	}
	if err := rep.ctl.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.States) == 1 })
	if s := rep.catalog.CurrentBudgets().States["small"].Decision; !s.Exhausted {
		t.Fatalf("decision %+v, want exhausted", s)
	}
	// Alone in its service, the small client's quota is its half of the
	// reservoir scaled to the floor: 10 traces/s.
	clock.Add(10 * time.Second)
	if q := report("small").GetReservoirQuota(); math.Abs(q-10) > 1e-6 {
		t.Errorf("small's quota when exhausted: %v traces/s, want the floor of 10", q)
	}
	if q := report("big").GetReservoirQuota(); math.Abs(q-50) > 1e-6 {
		t.Errorf("big's quota: %v, want its untouched half of 100", q)
	}
}

// TestAlertsRearm is issue 15's raised amount: a budget of $0.05 spent in
// full fired its 50, 80 and 100 % alerts; raised to $0.07, crossing the new
// 80 % and 100 % fires them again (the amount is a new generation of the
// budget's alerts). Deleted and created again, the budget is another
// incarnation, whose alerts start afresh.
func TestAlertsRearm(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	rep := startReplica(t, newMemStore(t), replicaOptions{Now: clock.Now})
	ctx := ctxT(t)
	// Every request sampled, so that spend's counts are honest claims.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 1}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	create := func() *pb.Budget {
		resp, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
			Name: "shop", MonthlyAmountMicros: 50_000, Mode: pb.Budget_MODE_ALERT_ONLY, ForecastThresholds: []float64{0},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetBudget()
	}
	first := create()
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	spend := func(traces int64) {
		t.Helper()
		clock.Add(10 * time.Second)
		if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop",
			Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: traces, SampledCount: traces}}}); err != nil {
			t.Fatal(err)
		}
		if err := rep.ctl.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fired := func() []string {
		t.Helper()
		resp, err := rep.budgets.ListAlerts(ctx, &pb.ListAlertsRequest{BudgetName: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range slices.Backward(resp.GetAlerts()) {
			out = append(out, fmt.Sprintf("%s %v of %s", a.GetKind(), a.GetThreshold(), budget.FormatMicros(a.GetCapMicros())))
		}
		return out
	}
	spend(10_000) // $0.05 at $5 per million: all of it
	want := []string{
		"KIND_SPEND_THRESHOLD 0.5 of 0.05", "KIND_SPEND_THRESHOLD 0.8 of 0.05", "KIND_SPEND_THRESHOLD 1 of 0.05",
	}
	if got := fired(); !slices.Equal(got, want) {
		t.Fatalf("alerts %q, want %q", got, want)
	}

	resp, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 70_000}, UpdateMask: mask("monthly_amount_micros")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBudget().GetGeneration() != 1 || resp.GetBudget().GetUid() != first.GetUid() {
		t.Errorf("raised: generation %d, uid %q; want 1 and %q", resp.GetBudget().GetGeneration(), resp.GetBudget().GetUid(), first.GetUid())
	}
	if _, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "shop", Description: "d"}, UpdateMask: mask("description")}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return bs.Budgets[0].Description == "d" })
	spend(0)      // 71 %: the 50 % of $0.07
	spend(2_000)  // 86 %
	spend(2_000)  // 100 %
	spend(10_000) // and past it: nothing new
	want = append(want, "KIND_SPEND_THRESHOLD 0.5 of 0.07", "KIND_SPEND_THRESHOLD 0.8 of 0.07", "KIND_SPEND_THRESHOLD 1 of 0.07")
	if got := fired(); !slices.Equal(got, want) {
		t.Fatalf("after raising the amount, alerts %q, want %q", got, want)
	}

	if _, err := rep.budgets.DeleteBudget(ctx, &pb.DeleteBudgetRequest{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	again := create()
	if again.GetUid() == first.GetUid() || again.GetGeneration() != 0 {
		t.Errorf("created again: uid %q (was %q), generation %d", again.GetUid(), first.GetUid(), again.GetGeneration())
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 && bs.Budgets[0].UID == again.GetUid() })
	// Its status is not its predecessor's until the controller decides.
	st, err := rep.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus().GetComputedTime() != nil {
		t.Errorf("a new incarnation shows the old one's decision: %v", st.GetStatus())
	}
	spend(0)
	want = append(want, "KIND_SPEND_THRESHOLD 0.5 of 0.05", "KIND_SPEND_THRESHOLD 0.8 of 0.05", "KIND_SPEND_THRESHOLD 1 of 0.05")
	if got := fired(); !slices.Equal(got, want) {
		t.Fatalf("created again, alerts %q, want %q", got, want)
	}
}

// TestBudgetHistoryAndStatus: the month hour by hour (spend from usage,
// decisions kept by the controller), and a status that explains the
// forecast and gives each rule's plan, priorities included.
func TestBudgetHistoryAndStatus(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	rep := startReplica(t, newMemStore(t), replicaOptions{Now: clock.Now})
	ctx := ctxT(t)
	for _, r := range []*pb.Rule{
		{Name: "checkout", Priority: 1, UrlPath: "/checkout", FixedRate: 1, Labels: map[string]string{"tier": "critical"}},
		{Name: "health", Priority: 2, UrlPath: "/healthz", FixedRate: 1},
	} {
		if _, err := rep.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 1_000_000, ForecastThresholds: []float64{0},
		RulePriorities: []*pb.RulePriority{{RuleLabels: map[string]string{"tier": "critical"}, Priority: 10}},
	}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, rep.first+2)
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	// Three hours: 3,600 requests an hour to each rule, all sampled until
	// the budget enforces (from then on the server cuts what a client
	// without receipts claims to what the rates in force allow); $1 buys
	// 200,000 traces, and the month is heading for 10.4M.
	for h := range 3 {
		for _, rule := range []string{"checkout", "health"} {
			if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop",
				Statistics: []*pb.SamplingStatistics{{RuleName: rule, RequestCount: 3600, SampledCount: 3600}}}); err != nil {
				t.Fatal(err)
			}
		}
		clock.Add(59 * time.Minute)
		if err := rep.ctl.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Minute)
		_ = h
	}
	hist, err := rep.budgets.GetBudgetHistory(ctx, &pb.GetBudgetHistoryRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(hist.GetHours()); n != 4 || hist.GetMonthStartTime().AsTime() != time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("history of %d hours from %v, want 4 from November 1", n, hist.GetMonthStartTime().AsTime())
	}
	if first := hist.GetHours()[0]; first.GetSampledTraces() != 7200 || first.GetSpentMicros() != 36_000 {
		// 7,200 traces in the hour before any decision, at $5 per million:
		// $0.036.
		t.Errorf("hour 0: %v, want 7,200 traces for 36,000 micros", first)
	}
	var cumulative int64
	for h, bh := range hist.GetHours()[:3] {
		// $5 per million traces: 5 micros a trace.
		cumulative += bh.GetSpentMicros()
		if bh.GetHour() != int32(h) || bh.GetSampledTraces() <= 0 || bh.GetSpentMicros() != 5*bh.GetSampledTraces() ||
			bh.GetCumulativeSpentMicros() != cumulative || !bh.GetDecided() || bh.GetForecastUnenforcedMicros() <= bh.GetForecastMicros() {
			t.Errorf("hour %d: %v", h, bh)
		}
	}
	if last := hist.GetHours()[3]; last.GetDecided() || last.GetSampledTraces() != 0 {
		t.Errorf("the current hour, not decided yet: %v", last)
	}
	st, err := rep.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	s := st.GetStatus()
	if e := s.GetForecastExplanation(); e.GetMethod() != "mean_rate" || !(math.Abs(e.GetCurrentRequestRate()-2) < 0.5) || e.GetForecastRequests() <= 0 {
		t.Errorf("explanation %v, want the mean rate of 2 requests/s", e)
	}
	if !s.GetEnforcing() || s.GetEnforcementEpisodes() != 1 || s.GetForecastUnenforcedRatio() < 10 {
		t.Errorf("status %v: want enforcing, one episode, unenforced forecast far over", s)
	}
	rules := map[string]*pb.RuleSpend{}
	for _, r := range s.GetRules() {
		rules[r.GetRuleName()] = r
	}
	c, h := rules["checkout"], rules["health"]
	if !c.GetPlanned() || c.GetPriority() != 10 || h.GetPriority() != 0 || h.GetFixedRateFactor() != 0 || c.GetFixedRateFactor() <= 0 {
		t.Errorf("plans: checkout %v, health %v; want health cut to 0 first, checkout (priority 10) after", c, h)
	}
}

// TestBudgetCreatedMidMonthCountsTheMonth: a budget created on the 10th
// counts what its scope spent since the 1st, from the fleet's record (every
// report is kept there, by rule, hour and service); and a budget with
// coverage reserves one trace per service and rule in its scope every N
// minutes to month end.
func TestBudgetCreatedMidMonthCountsTheMonth(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	rep := startReplica(t, newMemStore(t), replicaOptions{Now: clock.Now})
	ctx := ctxT(t)
	// Nine days without budgets: shop samples 1,000 traces an hour, ads
	// 3,000, both under the Default rule (at its fixed rate of 5 %).
	for range 9 * 24 {
		for svc, sampled := range map[string]int64{"shop": 1000, "ads": 3000} {
			if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c-" + svc, ServiceName: svc,
				Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 20 * sampled, SampledCount: sampled}}}); err != nil {
				t.Fatal(err)
			}
		}
		clock.Add(time.Hour)
	}
	clock.Add(30 * time.Minute) // the 10th, 00:30
	for _, b := range []*pb.Budget{
		{Name: "shop", MonthlyAmountMicros: 100_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}},
		{Name: "all", MonthlyAmountMicros: 100_000_000, CoverageMinutes: 5},
	} {
		if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: b}); err != nil {
			t.Fatal(err)
		}
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 2 })
	for range 2 { // the second tick must not count the month again
		if err := rep.ctl.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Add(10 * time.Second)
	}
	status := func(name string) *pb.BudgetStatus {
		st, err := rep.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetStatus()
	}
	if got, want := status("shop").GetSampledTraces(), int64(9*24*1000); got != want {
		t.Errorf("shop: %d traces this month, want the %d its scope sampled before it was created", got, want)
	}
	all := status("all")
	if got, want := all.GetSampledTraces(), int64(9*24*4000); got != want {
		t.Errorf("all: %d traces this month, want %d", got, want)
	}
	// Two pairs (shop and ads under Default), one trace each every 5
	// minutes to month end: 20 days, 23.5 hours and 40 seconds left.
	left := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Sub(time.Date(2026, 11, 10, 0, 30, 10, 0, time.UTC)).Seconds()
	if got, want := all.GetCoverageReserveTraces(), int64(2*left/300); got != want {
		t.Errorf("coverage reserve %d traces, want %d", got, want)
	}
}
