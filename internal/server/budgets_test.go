package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/simulate"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// budgetReplica is a full replica with the budget service too.
type budgetReplica struct {
	*replica
	budgets pb.BudgetServiceClient
}

// startBudgetReplica is startReplica with the budget service over st.
// The budget controller's tests, which tick one beside the server, live in
// its package (internal/budget/controller).
func startBudgetReplica(t *testing.T, st store.Store, now func() time.Time, opts ...func(*Options)) *budgetReplica {
	t.Helper()
	rep := startReplica(t, st, now, append([]func(*Options){func(o *Options) { o.Budgets = st }}, opts...)...)
	return &budgetReplica{replica: rep, budgets: pb.NewBudgetServiceClient(rep.conn)}
}

func TestBudgetErrors(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now)
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
		{"a fleet model out of bounds", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 1000, Days: 1},
				Fleet: &pb.FleetModel{Instances: 0, Zipf: -1, ServiceNames: []string{""}, ReportInterval: durationpb.New(time.Hour), Duration: durationpb.New(-time.Second)}})
			return err
		}, codes.InvalidArgument, []string{"fleet.instances", "fleet.zipf", "fleet.service_names[0]", "fleet.report_interval", "fleet.duration"}},
		{"a fleet model whose services run none of the rules with traffic", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 1000, Days: 1},
				Rules: []*pb.Rule{{Name: "shop", Priority: 10, ServiceName: "shop-*", FixedRate: 1}}, Fleet: &pb.FleetModel{Instances: 1, ServiceNames: []string{"admin"}}})
			return err
		}, codes.InvalidArgument, []string{"fleet.service_names"}},
		{"a fleet model making too many reports", func() error {
			_, err := rep.budgets.SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: &pb.TrafficShape{RequestsPerDay: 1000},
				Fleet: &pb.FleetModel{Instances: 10}})
			return err
		}, codes.InvalidArgument, []string{"fleet"}},
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
	rep := startBudgetReplica(t, newMemStore(t), time.Now)
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

// TestSimulateCostFleetModel: with fleet, SimulateCost runs the server's
// pipeline, whose budget counts only the services in its scope.
func TestSimulateCostFleetModel(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now)
	resp, err := rep.budgets.SimulateCost(ctxT(t), &pb.SimulateCostRequest{
		Rules: []*pb.Rule{
			{Name: "shop", Priority: 10, ServiceName: "shop-*", FixedRate: 0.1},
			{Name: "admin", Priority: 11, ServiceName: "admin", FixedRate: 0.5},
		},
		Traffic: &pb.TrafficShape{RequestsPerDay: 100 * 86400, RuleShares: map[string]float64{"shop": 1, "admin": 1}},
		Budget:  &pb.Budget{MonthlyAmountMicros: 1000_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop-*"}}},
		Fleet: &pb.FleetModel{Instances: 4, ServiceNames: []string{"shop-cart", "admin"}, ReportInterval: durationpb.New(10 * time.Second),
			Duration: durationpb.New(10 * time.Minute), StartTime: timestamppb.New(time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC))},
	})
	if err != nil {
		t.Fatal(err)
	}
	// 50 requests/s each; 10 minutes: shop samples 3,000 ($0.015), admin 15,000.
	if got := resp.GetTraces(); got < 17990 || got > 18010 {
		t.Errorf("traces = %d, want 18,000", got)
	}
	if got := resp.GetBudgetOutcome().GetSpentMicros(); got != 20_000 && got != 10_000 {
		t.Errorf("spent_micros = %d, want $0.015 of shop's traces, in cents", got)
	}
	if fl := resp.GetFleetOutcome(); fl.GetInstances() != 4 || fl.GetReports() < 4*55 || fl.GetFixedRateTraces() < 17990 {
		t.Errorf("fleet_outcome = %v", fl)
	}
	if got := resp.GetControllerIntervalSeconds(); got != 10 {
		t.Errorf("controller_interval_seconds = %d, want the fleet's report interval, 10", got)
	}
}

// TestStreamUsageSurvivesAStoreOutage: the spend in stream reports that
// arrive while Redis is down is held and recorded in the budget's month
// with the first report after it is back, so a budget does not miss it. (The SDK counts a stream
// report as sent; a unary caller is told UNAVAILABLE and reports again.)
func TestStreamUsageSurvivesAStoreOutage(t *testing.T) {
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rep := startBudgetReplica(t, st, clock.Now)
	ctx := ctxT(t)
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
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
		if u, err := st.Usage(ctx, "shop", budget.MonthStart(clock.Now())); err == nil {
			requests, sampled := u.Totals()
			if sampled == 150 && requests == 4000 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the budget's month holds %v sampled traces and %v requests: want all 150 and 4,000, those reported while Redis was down too", sampled, requests)
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
	rep := startBudgetReplica(t, newMemStore(t), time.Now)
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

// TestSimulateCostNamesWhatItCannotRead: a fleet model's duration or start
// time that is set but cannot be read, or is zero, is refused naming its
// field, with the request's other problems; unset, it takes the default.
func TestSimulateCostNamesWhatItCannotRead(t *testing.T) {
	traffic := &pb.TrafficShape{RequestsPerDay: 1000, Days: 1}
	tests := []struct {
		name  string
		fleet *pb.FleetModel
		want  []string // nil: accepted
	}{
		{"unset", &pb.FleetModel{Instances: 1}, nil},
		{"set", &pb.FleetModel{Instances: 1, ReportInterval: durationpb.New(30 * time.Second), Duration: durationpb.New(time.Hour),
			StartTime: timestamppb.New(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))}, nil},
		{"zero", &pb.FleetModel{Instances: 1, ReportInterval: durationpb.New(0), Duration: durationpb.New(0), StartTime: timestamppb.New(time.Time{})},
			[]string{"fleet.report_interval", "fleet.duration", "fleet.start_time"}},
		{"malformed, beside a bad count", &pb.FleetModel{ReportInterval: &durationpb.Duration{Seconds: 30, Nanos: -1},
			Duration: &durationpb.Duration{Seconds: 60, Nanos: -1}, StartTime: &timestamppb.Timestamp{Seconds: 1_800_000_000, Nanos: -1}},
			[]string{"fleet.instances", "fleet.report_interval", "fleet.duration", "fleet.start_time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			_, err := (&budgetService{}).SimulateCost(ctx, &pb.SimulateCostRequest{Traffic: traffic, Fleet: tt.fleet})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if got := fieldViolations(t, toStatus(ctx, discardLogger(), "SimulateCost", err)); !slices.Equal(got, tt.want) {
				t.Errorf("field violations %v (%v), want %v", got, err, tt.want)
			}
		})
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
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	var stores []*redisstore.Store
	for range 2 {
		st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	a := startBudgetReplica(t, stores[0], clock.Now)
	b := startBudgetReplica(t, stores[1], clock.Now)
	ctx := ctxT(t)
	if _, err := a.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}}); err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*budgetReplica{a, b} {
		servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
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
	rep := startBudgetReplica(t, st, time.Now)
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

// TestSimulateCostBusy: a simulation refused because as many run as the
// replica allows (package simulate's TestConcurrencyLimit) is
// RESOURCE_EXHAUSTED with a retry delay.
func TestSimulateCostBusy(t *testing.T) {
	ctx := ctxT(t)
	err := fmt.Errorf("1 cost simulations are running, as many as this replica runs at once: %w", simulate.ErrBusy)
	st := status.Convert(toStatus(ctx, discardLogger(), "SimulateCost", err))
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if st.Code() != codes.ResourceExhausted || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("busy: %v %q, retry %v; want RESOURCE_EXHAUSTED with a retry delay", st.Code(), st.Message(), retry)
	}
}

// TestAlertFiltersNameTheirField: a bad budget filter of ListAlerts or
// WatchAlerts is refused with a BadRequest that names the request's own
// filter field, as the proto spells it.
func TestAlertFiltersNameTheirField(t *testing.T) {
	rep := startBudgetReplica(t, newMemStore(t), time.Now)
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

// TestSecretsWrittenBeforeAKey: a secret stored in the clear before a key
// was configured still signs deliveries, and is sealed by the next update.
func TestSecretsWrittenBeforeAKey(t *testing.T) {
	box, err := secrets.NewBox(bytes.Repeat([]byte{9}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st := newMemStore(t)
	ctx := ctxT(t)
	if _, err := st.CreateBudget(ctx, budget.Budget{Name: "old", MonthlyAmountMicros: 1, Mode: budget.Enforce, Currency: "USD",
		PricePerMillionMicros: 1, Channels: []budget.Channel{{WebhookURL: "https://hooks.example.com/a", Secret: "plain"}}}); err != nil {
		t.Fatal(err)
	}
	rep := startBudgetReplica(t, st, time.Now, func(o *Options) { o.Secrets = box })
	if _, err := rep.budgets.UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: &pb.Budget{Name: "old", Description: "now sealed"}, UpdateMask: mask("description")}); err != nil {
		t.Fatal(err)
	}
	b, err := st.Budget(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	opened, err := budget.OpenSecrets(b, box)
	if err != nil || !secrets.IsSealed(b.Channels[0].Secret) || opened.Channels[0].Secret != "plain" {
		t.Errorf("after an update the secret is stored as %q (opens to %q, %v), want it sealed", b.Channels[0].Secret, opened.Channels[0].Secret, err)
	}
}

// TestStreamRatesInForceFollowTheMonth: the rates a budget's decision
// lowers are the month's. A stream whose catalog has not changed sends its
// rule set again after a report in the next month, without them: the
// stream's check of the rule set is skipped only while the rules, the
// budgets and the month are the ones it last checked.
func TestStreamRatesInForceFollowTheMonth(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	st := newMemStore(t)
	rep := startBudgetReplica(t, st, clock.Now)
	ctx := ctxT(t)
	if _, err := rep.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}}}); err != nil {
		t.Fatal(err)
	}
	page, err := st.Budgets(ctx, 10, "")
	if err != nil || len(page.Budgets) != 1 {
		t.Fatalf("budgets: %v, %v", page, err)
	}
	now := clock.Now()
	if err := st.PutStates(ctx, []budget.State{{Budget: "shop", BudgetUID: page.Budgets[0].UID, MonthStart: budget.MonthStart(now), Computed: now, Decision: budget.Decision{
		FixedRateFactor: 0.5, ReservoirFactor: 0.5,
	}}}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.States) == 1 })
	stream, first := openStream(ctx, t, rep.sampling, "c", "shop")
	if len(first.GetRatesInForce()) == 0 {
		t.Fatalf("first rule set: no rates in force, want the budget's: %v", first)
	}
	// Answered within the month: nothing else to send.
	sendReport(t, stream, stats("Default", 100, 1, ""))
	clock.Add(2 * time.Minute)
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: []*pb.SamplingStatistics{stats("Default", 100, 1, "")}}}}); err != nil {
		t.Fatal(err)
	}
	next := recvRules(t, stream)
	if got := next.GetRatesInForce(); len(got) != 0 {
		t.Errorf("rule set in the next month: rates in force %v, want none (the decision was November's)", got)
	}
}
