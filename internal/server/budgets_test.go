package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// budgetReplica is a full replica: rules, sampling and budgets, with its own
// catalog and budget controller (ticked by the test).
type budgetReplica struct {
	rules    pb.RuleServiceClient
	sampling pb.SamplingServiceClient
	budgets  pb.BudgetServiceClient
	catalog  *catalog.Catalog
	ctl      *controller.Controller
	first    int64 // the rules version when it started: versions start from the clock
}

func startBudgetReplica(t *testing.T, st store.Store, now func() time.Time, hook *budget.Webhook) *budgetReplica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := catalog.New(st, catalog.Options{Logger: log, Poll: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	catDone := make(chan struct{})
	go func() {
		defer close(catDone)
		_ = cat.Run(ctx)
	}()
	var egress *budget.Egress // the server's check of webhook URLs, as the controller's delivery's
	if hook != nil {
		egress = hook.Egress
	}
	ctl := controller.New(st, cat, controller.Options{Interval: 10 * time.Second, Now: now, Logger: log, Webhook: hook})
	srv := New(Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Decider: ctl, Logger: log, Now: now, ReportInterval: 10 * time.Second, Egress: egress})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Stop(sctx)
		<-done
		cancel()
		<-catDone
		ctl.Wait()
	})
	return &budgetReplica{
		rules: pb.NewRuleServiceClient(conn), sampling: pb.NewSamplingServiceClient(conn), budgets: pb.NewBudgetServiceClient(conn),
		catalog: cat, ctl: ctl, first: cat.Current().Version,
	}
}

// waitBudgets waits until the catalog holds budgets satisfying ok.
func waitBudgets(t *testing.T, c *catalog.Catalog, ok func(*catalog.Budgets) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(c.CurrentBudgets()) {
		if time.Now().After(deadline) {
			t.Fatalf("catalog budgets never got there: %+v", c.CurrentBudgets())
		}
		c.Kick()
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBudgetsAcrossReplicas: two replicas on one Redis. Spend reported
// through either counts once; the controller runs once per interval whichever
// replicas tick; its factor reaches SDK targets on both; each alert fires
// once and reaches a webhook that fails twice exactly once; a new month
// starts from nothing.
func TestBudgetsAcrossReplicas(t *testing.T) {
	rs := redistest.Start(t)
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
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
	a := startBudgetReplica(t, newStore(), clock.Now, hook)
	b := startBudgetReplica(t, newStore(), clock.Now, hook)
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
	for _, r := range []*budgetReplica{a, b} {
		waitBudgets(t, r.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	}
	// A day of traffic: every hour 2,500 sampled traces reported to each
	// replica (120,000 in all, 12 % of the cap on the 10th: on course for
	// 2.5 times the cap), and traffic of another service that the budget
	// does not count.
	for h := 0; h < 24; h++ {
		for _, r := range []*budgetReplica{a, b} {
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
	for _, r := range []*budgetReplica{a, b} {
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
	for _, r := range []*budgetReplica{a, b} {
		waitBudgets(t, r.catalog, func(bs *catalog.Budgets) bool { return len(bs.States) == 1 })
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
	for _, r := range []*budgetReplica{a, b, a} {
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

func TestBudgetErrors(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now, nil)
	ctx := ctxT(t)
	good := &pb.Budget{Name: "b", MonthlyAmountMicros: 100_000_000}
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: good}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		fields []string
	}{
		{"no budget", func() error { _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{}); return err }, codes.InvalidArgument, []string{"budget"}},
		{"bad fields", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
				Name: "x y", MonthlyAmountMicros: -1, CurrencyCode: "dollars", SpendThresholds: []float64{0.5, 2000},
				Channels: []*pb.NotificationChannel{{WebhookUrl: "ftp://x"}}, FloorTracesPerSecond: -1,
			}})
			return err
		}, codes.InvalidArgument, []string{"budget.name", "budget.monthly_amount_micros", "budget.currency_code", "budget.spend_thresholds[1]", "budget.channels[0].webhook_url", "budget.floor_traces_per_second"}},
		{"duplicate", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: good})
			return err
		}, codes.AlreadyExists, nil},
		{"unknown", func() error { _, err := rep.budgets.GetBudget(ctx, &pb.GetBudgetRequest{Name: "nope"}); return err }, codes.NotFound, nil},
		{"stale etag", func() error {
			_, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b", MonthlyAmountMicros: 5_000_000, Etag: "99"}, UpdateMask: mask("monthly_amount_micros")})
			return err
		}, codes.Aborted, nil},
		{"bad mask", func() error {
			_, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b"}, UpdateMask: mask("name")})
			return err
		}, codes.InvalidArgument, []string{"update_mask"}},
		{"bad update", func() error {
			_, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b"}, UpdateMask: mask("monthly_amount_micros")})
			return err
		}, codes.InvalidArgument, []string{"budget.monthly_amount_micros"}},
		{"unknown mode on create", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "m", MonthlyAmountMicros: 100_000_000, Mode: 99}})
			return err
		}, codes.InvalidArgument, []string{"budget.mode"}},
		{"unknown mode on update", func() error {
			_, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b", Mode: -1}, UpdateMask: mask("mode")})
			return err
		}, codes.InvalidArgument, []string{"budget.mode"}},
		{"unknown mode in a simulation", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{
				Traffic: &pb.TrafficShape{RequestsPerDay: 1000, Days: 1}, Budget: &pb.Budget{MonthlyAmountMicros: 1_000_000, Mode: 3},
			})
			return err
		}, codes.InvalidArgument, []string{"budget.mode"}},
		{"delete unknown", func() error {
			_, err := rep.budgets.DeleteBudget(ctx, &pb.DeleteBudgetRequest{Name: "nope"})
			return err
		}, codes.NotFound, nil},
		{"simulate without traffic", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{})
			return err
		}, codes.InvalidArgument, []string{"traffic.requests_per_day"}},
		{"a floor the amount cannot pay for", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "f", MonthlyAmountMicros: 10_000_000, FloorTracesPerSecond: 1}})
			return err
		}, codes.InvalidArgument, []string{"budget.floor_traces_per_second"}},
		{"a floor raised past the amount", func() error {
			_, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b", FloorTracesPerSecond: 10}, UpdateMask: mask("floor_traces_per_second")})
			return err
		}, codes.InvalidArgument, []string{"budget.floor_traces_per_second"}},
		{"bad priorities", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "p", MonthlyAmountMicros: 10_000_000,
				RulePriorities: []*pb.RulePriority{{Priority: 5}, {RuleNames: []string{"ok", "not ok"}, Priority: 5000}}}})
			return err
		}, codes.InvalidArgument, []string{"budget.rule_priorities[0]", "budget.rule_priorities[1].rule_names[1]", "budget.rule_priorities[1].priority"}},
		{"spans priced without spans per trace", func() error {
			_, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "s", MonthlyAmountMicros: 10_000_000, SpanPricePerMillionMicros: 100_000}})
			return err
		}, codes.InvalidArgument, []string{"budget.spans_per_trace"}},
		{"history of a month to come", func() error {
			_, err := rep.budgets.GetBudgetHistory(ctx, &pb.GetBudgetHistoryRequest{Name: "b", MonthTime: timestamppb.New(time.Now().AddDate(0, 2, 0))})
			return err
		}, codes.InvalidArgument, []string{"month_time"}},
		{"history of an unknown budget", func() error {
			_, err := rep.budgets.GetBudgetHistory(ctx, &pb.GetBudgetHistoryRequest{Name: "nope"})
			return err
		}, codes.NotFound, nil},
		{"simulated shares of unknown rules", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 1000, Days: 1,
				RuleShares: map[string]float64{"ghost": 1}}})
			return err
		}, codes.InvalidArgument, []string{`traffic.rule_shares["ghost"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := rep.budgets.ListBudgets(ctx, &pb.ListBudgetsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call()
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if got := fieldViolations(t, err); !slices.Equal(got, tt.fields) {
				t.Errorf("field violations %v, want %v", got, tt.fields)
			}
			after, err := rep.budgets.ListBudgets(ctx, &pb.ListBudgetsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(after.GetBudgets()) != len(before.GetBudgets()) || after.GetBudgets()[0].GetEtag() != before.GetBudgets()[0].GetEtag() {
				t.Errorf("a refused call changed the budgets")
			}
		})
	}
}

func TestSimulateCostDefaultRule(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now, nil)
	resp, err := rep.budgets.SimulateCost(ctxT(t), &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 250e6}})
	if err != nil {
		t.Fatal(err)
	}
	// 86,400 reservoir traces + 5 % of the rest, a day: about 12.58M; a
	// 30-day month about $1,887.
	if d, m := resp.GetTracesPerDay(), resp.GetMonthlyCostMicros(); d < 12.5e6 || d > 12.7e6 || m < 1870e6 || m > 1900e6 {
		t.Errorf("Default rule at 250M/day: %v traces/day, %v micros per 30 days", d, m)
	}
}

// TestExhaustedBudgetKeepsItsFloor: a budget on one of two equal services
// is exhausted; its clients keep the floor in traces per second, counted on
// the part of the reservoir the service gets (half of it), not the whole.
func TestExhaustedBudgetKeepsItsFloor(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
	st := newMemStore(t)
	rep := startBudgetReplica(t, st, clock.Now, nil)
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
	waitVersion(t, rep.catalog, rep.first+1)
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
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
	// The decision made at the budget's creation is there already: wait
	// for the tick's.
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return bs.States["small"].Computed.Equal(clock.Now()) })
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

// TestStreamUsageSurvivesAStoreOutage: the spend in stream reports that
// arrive while Redis is down is held and recorded with the first report
// after it is back, so a budget does not miss it. (The SDK counts a stream
// report as sent; a unary caller is told UNAVAILABLE and reports again.)
func TestStreamUsageSurvivesAStoreOutage(t *testing.T) {
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
	st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rep := startBudgetReplica(t, st, clock.Now, nil)
	ctx := ctxT(t)
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}}); err != nil {
		t.Fatal(err)
	}
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	stream, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	// report sends counts and waits for the targets that answer them: a
	// quota, renewed while Redis is down.
	report := func(requests, sampled int64) { sendReport(t, stream, stats("Default", requests, sampled, "")) }
	report(1000, 10)
	rs.Stop()
	report(1000, 20)
	report(1000, 40)
	rs.Restart()
	clock.Add(time.Second)
	// The store's client reconnects on its own; the first report that
	// gets through carries the held spend. Later reports count nothing.
	report(1000, 80)
	deadline := time.Now().Add(5 * time.Second) // within ctxT's 10 s
	for {
		// A tick decides once per interval: each try is in a new one.
		clock.Add(10 * time.Second)
		if err := rep.ctl.Tick(ctx); err == nil {
			resp, err := rep.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
			if err != nil {
				t.Fatal(err)
			}
			s := resp.GetStatus()
			if s.GetSampledTraces() == 150 && s.GetRequests() == 4000 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status %v: want all 150 sampled traces and 4,000 requests, those reported while Redis was down too", s)
			}
		}
		report(0, 0)
	}
}

// TestTargetsSentUnaskedCarryNoReceipt: when a budget changes, a stream
// gets its targets again. They answer no report, so they carry no receipt:
// the client keeps the one of the last answer, which names what the server
// holds.
func TestTargetsSentUnaskedCarryNoReceipt(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now, nil)
	ctx := ctxT(t)
	stream, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	answer := sendReport(t, stream, stats("Default", 100, 1, ""))
	if len(answer.GetTargets()) != 1 || answer.GetTargets()[0].GetReceipt() == "" {
		t.Fatalf("the answer to a report: %v, want a target with a receipt", answer)
	}
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000}}); err != nil {
		t.Fatal(err)
	}
	pushed := recvNext(t, stream, (*pb.StreamSamplingResponse).GetTargets)
	if len(pushed.GetTargets()) != 1 || pushed.GetTargets()[0].GetReceipt() != "" {
		t.Errorf("targets sent after a budget change: %v, want the target without a receipt", pushed)
	}
}

// TestSimulateCostStopsWhenCanceled: the RPC's simulation ends with the
// call's context instead of running its months to the end.
func TestSimulateCostStopsWhenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := (&budgetService{}).SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 250e6}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a canceled SimulateCost: %v, want context.Canceled", err)
	}
	if code := status.Code(toStatus(ctx, discardLogger(), "SimulateCost", err)); code != codes.Canceled {
		t.Errorf("status %v, want Canceled", code)
	}
}

// TestNumberedReportsAreBilledOnce: a stream acknowledges a numbered report
// only once the store has recorded it. One the store could not record is
// not acknowledged, and the replica does not hold its usage: the client
// sends it again. One sent again after it was recorded (its
// acknowledgement lost), on another replica or in a unary call, is
// acknowledged and not billed again.
func TestNumberedReportsAreBilledOnce(t *testing.T) {
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
	var stores []*redisstore.Store
	for range 2 {
		st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	a := startBudgetReplica(t, stores[0], clock.Now, nil)
	b := startBudgetReplica(t, stores[1], clock.Now, nil)
	ctx := ctxT(t)
	if _, err := a.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*budgetReplica{a, b} {
		waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	}
	report := func(seq uint64, sampled int64) *pb.StreamSamplingRequest {
		return &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Seq: seq, Statistics: []*pb.SamplingStatistics{stats("Default", 10*sampled, sampled, "")}}}}
	}
	// send sends a report on the stream and returns the seq the answer
	// acknowledges.
	send := func(s pb.SamplingService_StreamSamplingClient, seq uint64, sampled int64) uint64 {
		t.Helper()
		if err := s.Send(report(seq, sampled)); err != nil {
			t.Fatal(err)
		}
		return recvNext(t, s, (*pb.StreamSamplingResponse).GetTargets).GetAckedSeq()
	}
	unary := func(rep *budgetReplica, seq uint64, sampled int64) error {
		_, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop", Seq: seq,
			Statistics: []*pb.SamplingStatistics{stats("Default", 10*sampled, sampled, "")}})
		return err
	}

	onA, _ := openStream(ctx, t, a.sampling, "c", "shop")
	if got := send(onA, 1, 1); got != 1 {
		t.Fatalf("report 1: acknowledged %d, want 1", got)
	}
	rs.Stop()
	if got := send(onA, 2, 2); got != 0 {
		t.Fatalf("report 2 without the store: acknowledged %d, want none", got)
	}
	rs.Restart()
	// The client sends it again until the store, back, takes it.
	deadline := time.Now().Add(8 * time.Second) // within ctxT's 10 s
	for send(onA, 2, 2) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("report 2 never acknowledged after the store came back")
		}
	}
	onB, _ := openStream(ctx, t, b.sampling, "c", "shop")
	if got := send(onB, 2, 2); got != 2 {
		t.Errorf("report 2 again on replica B: acknowledged %d, want 2", got)
	}
	if err := unary(b, 2, 2); err != nil {
		t.Errorf("report 2 again in a unary call: %v", err)
	}
	if err := unary(a, 3, 4); err != nil {
		t.Errorf("report 3 in a unary call: %v", err)
	}
	if got := send(onB, 4, 8); got != 4 {
		t.Errorf("report 4: acknowledged %d, want 4", got)
	}
	u, err := stores[0].Usage(ctx, "shop", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if requests, sampled := u.Totals(); sampled != 1+2+4+8 || requests != 10*sampled {
		t.Errorf("billed %v sampled of %v requests, want 15 of 150: every report once", sampled, requests)
	}

	// A seq past store.MaxSeq is refused, naming the field.
	if err := unary(a, store.MaxSeq+1, 1); status.Code(err) != codes.InvalidArgument || fmt.Sprint(fieldViolations(t, err)) != "[seq]" {
		t.Errorf("unary report with seq 2^53: %v, want INVALID_ARGUMENT on seq", err)
	}
	if err := onB.Send(report(store.MaxSeq+1, 1)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := onB.Recv(); err != nil {
			if status.Code(err) != codes.InvalidArgument || fmt.Sprint(fieldViolations(t, err)) != "[report.seq]" {
				t.Errorf("stream report with seq 2^53: %v, want INVALID_ARGUMENT on report.seq", err)
			}
			break
		}
	}
}

// TestWebhookURLsAreRedacted: no answer shows a webhook's path (a chat
// webhook's secret); an update that leaves the channels alone, or sends
// them back as answered, keeps the full URLs and secrets; a redacted URL
// that matches no webhook is refused.
func TestWebhookURLsAreRedacted(t *testing.T) {
	st := newMemStore(t)
	rep := startBudgetReplica(t, st, time.Now, nil)
	ctx := ctxT(t)
	const (
		slack = "https://hooks.slack.com/services/T0001/B0002/Xq3vZk9PqR7sLm2Nw8Yt4Hd6"
		other = "https://hooks.slack.com/services/T0001/B0003/Pp5Lx2Wq9Rt6Zk3Mn7Cv1Hd6"
	)
	full := []budget.Channel{{WebhookURL: slack, Secret: "s1"}, {WebhookURL: other}}
	shown := []*pb.NotificationChannel{{WebhookUrl: "https://hooks.slack.com/…4Hd6", Secret: "****"}, {WebhookUrl: "https://hooks.slack.com/…1Hd6"}}
	checkAnswer := func(what string, b *pb.Budget) {
		t.Helper()
		if diff := cmp.Diff(shown, b.GetChannels(), protocmp.Transform()); diff != "" {
			t.Errorf("%s: channels (-want +got):\n%s", what, diff)
		}
	}
	checkStored := func(what string) {
		t.Helper()
		b, err := st.Budget(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(full, b.Channels); diff != "" {
			t.Errorf("%s: stored channels (-want +got):\n%s", what, diff)
		}
	}
	created, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "b", MonthlyAmountMicros: 10_000_000,
		Channels: []*pb.NotificationChannel{{WebhookUrl: slack, Secret: "s1"}, {WebhookUrl: other}}}})
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer("CreateBudget", created.GetBudget())
	checkStored("after create")
	got, err := rep.budgets.GetBudget(ctx, &pb.GetBudgetRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer("GetBudget", got.GetBudget())
	list, err := rep.budgets.ListBudgets(ctx, &pb.ListBudgetsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer("ListBudgets", list.GetBudgets()[0])

	upd, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b", Description: "x"}, UpdateMask: mask("description")})
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer("UpdateBudget", upd.GetBudget())
	checkStored("after an update of the description")

	// Read, change, write back everything (no mask).
	back := upd.GetBudget()
	back.Description = "y"
	if _, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: back}); err != nil {
		t.Fatal(err)
	}
	checkStored("after the budget was sent back whole")

	_, err = rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "b",
		Channels: []*pb.NotificationChannel{{WebhookUrl: "https://hooks.example.com/…"}}}, UpdateMask: mask("channels")})
	if code := status.Code(err); code != codes.InvalidArgument || !slices.Equal(fieldViolations(t, err), []string{"budget.channels[0].webhook_url"}) {
		t.Errorf("a redacted URL matching no webhook: %v, %v; want INVALID_ARGUMENT on budget.channels[0].webhook_url", code, fieldViolations(t, err))
	}
	checkStored("after a refused update")
}

// TestSimulateCostWorkIsBounded: with a budget, the controller decides
// every minute when days × steps × (rules + 9) fits the bound, else less
// often, so that no allowed request (up to 62 days of 100 rules) costs more
// than about half a CPU-second; the answer says the interval used.
func TestSimulateCostWorkIsBounded(t *testing.T) {
	rulesOf := func(n int) []*pb.Rule {
		rs := make([]*pb.Rule, n)
		for i := range rs {
			rs[i] = &pb.Rule{Name: fmt.Sprintf("r%d", i), Priority: int32(i + 1), FixedRate: 0.1}
		}
		return rs
	}
	tests := []struct {
		name     string
		days     int32
		rules    int
		budget   bool
		interval time.Duration // 0: the simulator's default
	}{
		{name: "the default 30 days of the Default rule", budget: true, interval: time.Minute},
		{name: "62 days of the Default rule", days: 62, budget: true, interval: time.Minute},
		{name: "a 31-day month of 11 rules", days: 31, rules: 11, budget: true, interval: time.Minute},
		{name: "a 31-day month of 12 rules", days: 31, rules: 12, budget: true, interval: 2 * time.Minute},
		{name: "a 31-day month of 100 rules", days: 31, rules: 100, budget: true, interval: 6 * time.Minute},
		{name: "62 days of 100 rules", days: 62, rules: 100, budget: true, interval: 12 * time.Minute},
		{name: "62 days of 100 rules without a budget", days: 62, rules: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &pb.SimulateCostRequest{Rules: rulesOf(tt.rules), Traffic: &pb.TrafficShape{RequestsPerDay: 1e6, Days: tt.days}}
			if tt.budget {
				req.Budget = &pb.Budget{MonthlyAmountMicros: 100_000_000}
			}
			cfg, err := simConfig(req)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if cfg.Interval != tt.interval {
				t.Errorf("controller interval %v, want %v", cfg.Interval, tt.interval)
			}
			days, rules := int(tt.days), max(tt.rules, 1)
			if days == 0 {
				days = 30
			}
			if steps := days * int(24*time.Hour/max(cfg.Interval, time.Minute)); tt.budget && steps*(rules+simControllerCost) > maxSimWork {
				t.Errorf("%d steps of %d rules: over the bound", steps, rules)
			}
		})
	}
}

// TestSimulateCostConcurrencyLimit: past maxSimulations running at once,
// SimulateCost answers RESOURCE_EXHAUSTED with a retry delay, and runs again
// once one has finished.
func TestSimulateCostConcurrencyLimit(t *testing.T) {
	limit := int(maxSimulations())
	// The first limit simulations run until released; later ones return at
	// once, so that a call the limit fails to stop shows as an answer.
	var entered atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	svc := &budgetService{simulate: func(ctx context.Context, cfg budget.SimConfig) (budget.SimResult, error) {
		if entered.Add(1) <= int32(limit) {
			started <- struct{}{}
			<-release
		}
		return budget.SimResult{}, nil
	}}
	req := &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 1e6, Days: 1}}
	ctx := ctxT(t)
	errs := make(chan error, limit)
	for range limit {
		go func() {
			_, err := svc.SimulateCost(ctx, req)
			errs <- err
		}()
		<-started
	}
	_, err := svc.SimulateCost(ctx, req)
	st := status.Convert(toStatus(ctx, discardLogger(), "SimulateCost", err))
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if st.Code() != codes.ResourceExhausted || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("simulation %d of %d at once: %v %q, retry %v; want RESOURCE_EXHAUSTED with a retry delay", limit+1, limit, st.Code(), st.Message(), retry)
	}
	release <- struct{}{}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SimulateCost(ctx, req); err != nil {
		t.Errorf("with a simulation finished, another: %v", err)
	}
	close(release)
	for range limit - 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestAlertFiltersNameTheirField: a bad budget filter of ListAlerts or
// WatchAlerts is refused with a BadRequest that names the request's own
// filter field, as the proto spells it.
func TestAlertFiltersNameTheirField(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now, nil)
	ctx := ctxT(t)
	tests := []struct {
		name string
		req  proto.Message
		call func() error
	}{
		{"ListAlerts", &pb.ListAlertsRequest{BudgetName: "not a name"}, func() error {
			_, err := rep.budgets.ListAlerts(ctx, &pb.ListAlertsRequest{BudgetName: "not a name"})
			return err
		}},
		{"WatchAlerts", &pb.WatchAlertsRequest{BudgetName: "not a name"}, func() error {
			stream, err := rep.budgets.WatchAlerts(ctx, &pb.WatchAlertsRequest{BudgetName: "not a name"})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			fields := fieldViolations(t, err)
			if status.Code(err) != codes.InvalidArgument || len(fields) != 1 {
				t.Fatalf("%v, fields %v; want INVALID_ARGUMENT on one field", err, fields)
			}
			// The field set in the request is the one named.
			var set []string
			tt.req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
				set = append(set, string(fd.Name()))
				return true
			})
			if !slices.Equal(fields, set) {
				t.Errorf("BadRequest names %v; the request's filter field is %v", fields, set)
			}
		})
	}
}

// TestAlertsRearm is issue 15's raised amount: a budget of $0.05 spent in
// full fired its 50, 80 and 100 % alerts; raised to $0.07, crossing the new
// 80 % and 100 % fires them again (the amount is a new generation of the
// budget's alerts). Deleted and created again, the budget is another
// incarnation, whose alerts start afresh.
func TestAlertsRearm(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
	rep := startBudgetReplica(t, newMemStore(t), clock.Now, nil)
	ctx := ctxT(t)
	// Every request sampled, so that spend's counts are honest claims.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 1}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, rep.catalog, rep.first+1)
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
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
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
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return bs.Budgets[0].Description == "d" })
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
	clock.Add(time.Second)
	again := create()
	if again.GetUid() == first.GetUid() || again.GetGeneration() != 0 {
		t.Errorf("created again: uid %q (was %q), generation %d", again.GetUid(), first.GetUid(), again.GetGeneration())
	}
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 && bs.Budgets[0].UID == again.GetUid() })
	// Its status is its own, decided as it was created, not its
	// predecessor's.
	st, err := rep.budgets.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetComputedTime().AsTime(); !got.Equal(clock.Now()) {
		t.Errorf("a new incarnation shows a decision of %v, want its own of %v: %v", got, clock.Now(), st.GetStatus())
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
	clock := &fakeClock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	rep := startBudgetReplica(t, newMemStore(t), clock.Now, nil)
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
	waitVersion(t, rep.catalog, rep.first+2)
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
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
	clock := &fakeClock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	rep := startBudgetReplica(t, newMemStore(t), clock.Now, nil)
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
	waitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 2 })
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

// TestBudgetDecidedAtOnce: a budget created, or changed, is decided by the
// time the call returns, not at the controller's next interval: lowered
// under what was spent, it is exhausted at once, and a second replica's
// catalog, which did not serve the edit, takes the decision up. The rule
// sets both replicas hand out carry it: a stream's is sent again.
func TestBudgetDecidedAtOnce(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)}
	st := newMemStore(t)
	rep := startBudgetReplica(t, st, clock.Now, nil)
	other := startBudgetReplica(t, st, clock.Now, nil)
	ctx := ctxT(t)
	// Every request sampled, so that the counts below are honest claims.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 1}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, rep.catalog, rep.first+1)
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
		waitBudgets(t, c, func(bs *catalog.Budgets) bool { return bs.States["shop"].Decision.Exhausted })
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
	for _, r := range []*budgetReplica{rep, other} {
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
