package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

type fakeClock = clocktest.Clock

// samplingStore is what a full server needs: rules, ledgers, and the catalog's
// source.
type samplingStore interface {
	RuleStore
	LedgerStore
	catalog.Source
}

type replica struct {
	rules    pb.RuleServiceClient
	sampling pb.SamplingServiceClient
	status   pb.StatusServiceClient
	catalog  *catalog.Catalog
	first    int64 // the rules version when it started: versions start from the clock
	conn     *grpc.ClientConn
}

// startReplica runs a complete server (rule and sampling services, catalog
// following the store) on a loopback port; opts may change its Options.
func startReplica(t *testing.T, st samplingStore, now func() time.Time, opts ...func(*Options)) *replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := servetest.Catalog(t, st, catalog.Options{Logger: log, Poll: time.Second})
	o := Options{Rules: st, Catalog: cat, Ledger: st, Logger: log, Now: now, ReportInterval: 10 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	conn, _ := servetest.Serve(t, New(o))
	return &replica{rules: pb.NewRuleServiceClient(conn), sampling: pb.NewSamplingServiceClient(conn), status: pb.NewStatusServiceClient(conn), catalog: cat, first: cat.Current().Version, conn: conn}
}

func newClock() *fakeClock {
	return clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
}

func createRule(t *testing.T, rc pb.RuleServiceClient, r *pb.Rule) {
	t.Helper()
	if _, err := rc.CreateRule(ctxT(t), &pb.CreateRuleRequest{Rule: r}); err != nil {
		t.Fatal(err)
	}
}

func stats(rule string, requests, sampled int64, receipt string) *pb.SamplingStatistics {
	return &pb.SamplingStatistics{RuleName: rule, RequestCount: requests, SampledCount: sampled, Interval: durationpb.New(10 * time.Second), Receipt: receipt}
}

func TestGetSamplingRules(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "shop", Priority: 5, ServiceName: "shop-*", FixedRate: 0.1})
	createRule(t, rep.rules, &pb.Rule{Name: "search", Priority: 6, ServiceName: "search", FixedRate: 0.1})
	ctx := ctxT(t)
	servetest.WaitVersion(t, rep.catalog, rep.first+2)

	resp, err := rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "SHOP-api"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range resp.GetRules() {
		names = append(names, r.GetName())
	}
	if len(names) != 2 || names[0] != "shop" || names[1] != "Default" || resp.GetUnchanged() {
		t.Errorf("rules for SHOP-api = %v (unchanged %v), want [shop Default]", names, resp.GetUnchanged())
	}
	again, err := rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop-api", KnownRulesVersion: resp.GetRulesVersion()})
	if err != nil || !again.GetUnchanged() || len(again.GetRules()) != 0 {
		t.Errorf("with the current version: %v, %v; want unchanged and no rules", again, err)
	}
	_, err = rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{})
	if status.Code(err) != codes.InvalidArgument || len(fieldViolations(t, err)) != 1 {
		t.Errorf("without a service: %v", err)
	}
}

// TestRuleSetsByResource: the rule set a stream's hello or a
// GetSamplingRules call gets holds the rules whose resource globs match
// the instance's resource attributes; resources beyond the bounds are
// refused with INVALID_ARGUMENT naming the attribute.
func TestRuleSetsByResource(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "shop-prod", Priority: 5, ServiceName: "shop", FixedRate: 1,
		ResourceAttributes: map[string]string{"deployment.environment.name": "production"}})
	createRule(t, rep.rules, &pb.Rule{Name: "shop-staging", Priority: 5, ServiceName: "shop", FixedRate: 0.5,
		ResourceAttributes: map[string]string{"deployment.environment.name": "staging"}})
	ctx := ctxT(t)
	servetest.WaitVersion(t, rep.catalog, rep.first+2)
	names := func(rs []*pb.Rule) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.GetName())
		}
		return out
	}
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"production", []string{"shop-prod", "Default"}},
		{"staging", []string{"shop-staging", "Default"}},
		{"", []string{"Default"}},
	} {
		var res map[string]string
		if tc.env != "" {
			res = map[string]string{"deployment.environment.name": tc.env, "service.instance.id": "i-1"}
		}
		resp, err := rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop", ResourceAttributes: res})
		if err != nil {
			t.Fatal(err)
		}
		if got := names(resp.GetRules()); !slices.Equal(got, tc.want) {
			t.Errorf("GetSamplingRules for %q: %v, want %v", tc.env, got, tc.want)
		}
		stream, err := rep.sampling.StreamSampling(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hello := &pb.Hello{ClientId: "c-" + tc.env, ServiceName: "shop", ResourceAttributes: res}
		if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := names(m.GetRules().GetRules()); !slices.Equal(got, tc.want) {
			t.Errorf("stream for %q: %v, want %v", tc.env, got, tc.want)
		}
	}

	many := map[string]string{}
	for i := range rules.MaxInstanceResourceAttributes + 1 {
		many[fmt.Sprintf("k%02d", i)] = "v"
	}
	for _, tc := range []struct {
		name string
		res  map[string]string
		want string // the field violated, under resource_attributes
	}{
		{"too many", many, ""},
		{"a long key", map[string]string{strings.Repeat("k", rules.MaxInstanceResourceKeyLen+1): "v"}, "." + strings.Repeat("k", rules.MaxInstanceResourceKeyLen+1)},
		{"a long value", map[string]string{"process.command_line": strings.Repeat("v", rules.MaxInstanceResourceValueLen+1)}, ".process.command_line"},
		{"an empty key", map[string]string{"": "v"}, "."},
		{"a control character", map[string]string{"service.version": "1\n2"}, ".service.version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rep.sampling.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop", ResourceAttributes: tc.res})
			if got := fieldViolations(t, err); status.Code(err) != codes.InvalidArgument || !slices.Equal(got, []string{"resource_attributes" + tc.want}) {
				t.Errorf("GetSamplingRules: %v (fields %q), want InvalidArgument on resource_attributes%s", err, got, tc.want)
			}
			stream, err := rep.sampling.StreamSampling(ctx)
			if err != nil {
				t.Fatal(err)
			}
			hello := &pb.Hello{ClientId: "c", ServiceName: "shop", ResourceAttributes: tc.res}
			if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if got := fieldViolations(t, err); status.Code(err) != codes.InvalidArgument || !slices.Equal(got, []string{"hello.resource_attributes" + tc.want}) {
				t.Errorf("hello: %v (fields %q), want InvalidArgument on hello.resource_attributes%s", err, got, tc.want)
			}
		})
	}
}

func TestTargetsSplitTheReservoir(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ReservoirSize: 8, FixedRate: 0.25})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	report := func(client string, requests int64, receipt string) *pb.SamplingTarget {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
			ClientId: client, ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", requests, 0, receipt)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetTargets()) != 1 || len(resp.GetRejected()) != 0 {
			t.Fatalf("response %v", resp)
		}
		if resp.GetReportInterval().AsDuration() != 10*time.Second {
			t.Errorf("report interval %v", resp.GetReportInterval().AsDuration())
		}
		return resp.GetTargets()[0]
	}
	a1 := report("a", 300, "") // 30 req/s, alone: the whole reservoir
	if a1.GetReservoirQuota() != 8 || a1.GetFixedRate() != 0.25 {
		t.Errorf("first client alone: %v", a1)
	}
	if got, want := a1.GetReservoirQuotaExpireTime().AsTime(), clock.Now().Add(20*time.Second); !got.Equal(want) {
		t.Errorf("expiry %v, want %v", got, want)
	}
	clock.Add(3 * time.Second)
	b1 := report("b", 100, "") // 10 req/s next to a's 30
	if b1.GetReservoirQuota() != 0 {
		t.Errorf("second client: quota %v, want 0: its share would be 8×10/40 = 2, but a holds all 8", b1.GetReservoirQuota())
	}
	clock.Add(7 * time.Second)
	a2 := report("a", 300, a1.GetReceipt()) // replaces a's previous figures
	if math.Abs(a2.GetReservoirQuota()-6) > 1e-9 {
		t.Errorf("client a again: quota %v, want 8×30/40 = 6", a2.GetReservoirQuota())
	}
	clock.Add(3 * time.Second)
	b2 := report("b", 100, b1.GetReceipt())
	if math.Abs(b2.GetReservoirQuota()-2) > 1e-9 {
		t.Errorf("client b again: quota %v, want 8×10/40 = 2, now that a gave it back", b2.GetReservoirQuota())
	}
	// Client b goes idle: it gets nothing, and a gets everything.
	clock.Add(10 * time.Second)
	b3 := report("b", 0, b2.GetReceipt())
	if b3.GetReservoirQuota() != 0 {
		t.Errorf("idle client: quota %v, want 0", b3.GetReservoirQuota())
	}
	clock.Add(7 * time.Second)
	if a3 := report("a", 300, a2.GetReceipt()); math.Abs(a3.GetReservoirQuota()-8) > 1e-9 {
		t.Errorf("after b went idle: a's quota %v, want 8", a3.GetReservoirQuota())
	}
	// A client that stops reporting drops out once its bucket ages out.
	clock.Add(10 * time.Second)
	report("c", 500, "")
	clock.Add(40 * time.Second)
	if a4 := report("a", 300, ""); math.Abs(a4.GetReservoirQuota()-8) > 1e-9 {
		t.Errorf("after c stopped reporting: a's quota %v, want 8", a4.GetReservoirQuota())
	}
}

func TestTargetsRejectBadDocuments(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "r1", Priority: 1, ReservoirSize: 4})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	future := timestamppb.New(clock.Now().Add(time.Hour))
	docs := []*pb.SamplingStatistics{
		stats("r1", 100, 10, ""),
		stats("nope", 1, 0, ""),
		stats("r1", 5, 0, ""),
		{RuleName: "Default", RequestCount: -1},
		{RuleName: "Default", RequestCount: 5, SampledCount: 6},
		{RuleName: "Default", RequestCount: 5, EndTime: future},
		{RuleName: "Default", RequestCount: 5, Interval: durationpb.New(-time.Second)},
		{RuleName: "Default", RequestCount: 5, Receipt: strings.Repeat("x", 257)},
		{RuleName: "Default", RequestCount: 9e18, SampledCount: 9e18},
		{RuleName: "Default", RequestCount: 50, SampledCount: 5, BorrowCount: 1},
	}
	resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "svc", Statistics: docs})
	if err != nil {
		t.Fatal(err)
	}
	wantRejected := map[int32]string{1: "UNKNOWN_RULE", 2: "DUPLICATE_RULE", 3: "NEGATIVE_COUNT", 4: "INCONSISTENT_COUNTS", 5: "FUTURE_TIMESTAMP", 6: "BAD_INTERVAL", 7: "BAD_RECEIPT", 8: "COUNT_TOO_LARGE"}
	if len(resp.GetRejected()) != len(wantRejected) {
		t.Errorf("rejected %v", resp.GetRejected())
	}
	for _, r := range resp.GetRejected() {
		if wantRejected[r.GetIndex()] != r.GetCode() || r.GetMessage() == "" {
			t.Errorf("document %d rejected as %s (%q), want %s", r.GetIndex(), r.GetCode(), r.GetMessage(), wantRejected[r.GetIndex()])
		}
	}
	if len(resp.GetTargets()) != 2 || resp.GetTargets()[0].GetRuleName() != "r1" || resp.GetTargets()[1].GetRuleName() != "Default" {
		t.Fatalf("targets %v, want r1 and Default", resp.GetTargets())
	}
	first := resp.GetTargets()[0]

	tests := []struct {
		name   string
		req    *pb.GetSamplingTargetsRequest
		fields int
	}{
		{"no client id", &pb.GetSamplingTargetsRequest{ServiceName: "svc"}, 1},
		{"no client id nor service", &pb.GetSamplingTargetsRequest{}, 2},
		{"too many documents", &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "svc", Statistics: make([]*pb.SamplingStatistics, maxStatistics+1)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rep.sampling.GetSamplingTargets(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || len(fieldViolations(t, err)) != tt.fields {
				t.Errorf("got %v, want InvalidArgument with %d field violations", err, tt.fields)
			}
		})
	}
	// Nothing of the refused requests reached the ledger: a new client on r1
	// counts next to the first report's 10 req/s only, and when c reports
	// again, its share is 4×10/20 = 2.
	if _, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "d", ServiceName: "svc", Statistics: []*pb.SamplingStatistics{stats("r1", 100, 0, "")}}); err != nil {
		t.Fatal(err)
	}
	clock.Add(10 * time.Second)
	resp, err = rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "svc", Statistics: []*pb.SamplingStatistics{stats("r1", 100, 0, first.GetReceipt())}})
	if err != nil {
		t.Fatal(err)
	}
	if q := resp.GetTargets()[0].GetReservoirQuota(); math.Abs(q-2) > 1e-9 {
		t.Errorf("quota %v, want 4×10/20 = 2", q)
	}
}

func TestStreamSampling(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "shop", Priority: 5, ServiceName: "shop", ReservoirSize: 10, FixedRate: 0.1})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	stream, rs := openStream(ctx, t, rep.sampling, "c1", "shop")
	if len(rs.GetRules()) != 2 || rs.GetRulesVersion() != rep.first+1 {
		t.Fatalf("first rule set %v", rs)
	}
	// An edit reaches the stream.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "shop", FixedRate: 0.5}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	rs = recvRules(t, stream)
	if rs.GetRulesVersion() != rep.first+2 || rs.GetRules()[0].GetFixedRate() != 0.5 {
		t.Fatalf("after the edit: %v", rs)
	}
	// A report gets targets, and the stream keeps the receipt itself.
	for i := 0; i < 2; i++ {
		ts := sendReport(t, stream, stats("shop", 100, 10, ""))
		if len(ts.GetTargets()) != 1 || ts.GetTargets()[0].GetReservoirQuota() != 10 || ts.GetTargets()[0].GetFixedRate() != 0.5 {
			t.Fatalf("report %d: targets %v, want the whole reservoir of 10 (the stream retracts its own previous figure)", i, ts)
		}
	}
	// A second hello ends the stream with InvalidArgument.
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "c1", ServiceName: "shop"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("second hello: %v, want InvalidArgument", err)
	}
}

// TestStreamReconnectReplacesItsFigure: a client that reconnects echoes its
// last receipt in the new stream's first report, so its previous figures
// are retracted and its share stays whole; later reports on the stream need
// no receipt, and a bad one counts as none, as on unary calls.
func TestStreamReconnectReplacesItsFigure(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ReservoirSize: 8, FixedRate: 0.1})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	// Client b: 10 requests a second, over unary calls; alone, it gets all 8.
	unary := func(receipt string) *pb.SamplingTarget {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "b", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 100, 0, receipt)}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetTargets()[0]
	}
	b1 := unary("")
	quota := func(ts *pb.TargetSet) float64 {
		t.Helper()
		if len(ts.GetTargets()) != 1 || len(ts.GetRejected()) != 0 {
			t.Fatalf("targets %v", ts)
		}
		return ts.GetTargets()[0].GetReservoirQuota()
	}
	// Client a: 30 requests a second on a stream, next to b's 10. Once b
	// has reported again and given back what it held beyond its share, a
	// gets its share of 8×30/40 = 6.
	first, _ := openStream(ctx, t, rep.sampling, "a", "shop")
	if q := quota(sendReport(t, first, stats("checkout", 300, 0, ""))); q != 0 {
		t.Fatalf("quota %v, want 0 while b holds the reservoir", q)
	}
	clock.Add(10 * time.Second)
	if q := unary(b1.GetReceipt()).GetReservoirQuota(); math.Abs(q-2) > 1e-9 {
		t.Fatalf("b's quota %v, want 8×10/40 = 2", q)
	}
	ts := sendReport(t, first, stats("checkout", 300, 0, ""))
	if q := quota(ts); math.Abs(q-6) > 1e-9 {
		t.Fatalf("quota %v, want 8×30/40 = 6", q)
	}
	receipt := ts.GetTargets()[0].GetReceipt()
	if err := first.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != io.EOF {
		t.Fatalf("first stream ends with %v, want EOF", err)
	}

	clock.Add(10 * time.Second)
	second, _ := openStream(ctx, t, rep.sampling, "a", "shop")
	if q := quota(sendReport(t, second, stats("checkout", 300, 0, receipt))); math.Abs(q-6) > 1e-9 {
		t.Errorf("first report on the new stream: quota %v, want 6 again (without the receipt, a's old 30 and 6 would stay: nothing left)", q)
	}
	clock.Add(10 * time.Second)
	if q := quota(sendReport(t, second, stats("checkout", 300, 0, ""))); math.Abs(q-6) > 1e-9 {
		t.Errorf("next report on the stream, no receipt: quota %v, want 6 (the stream keeps the receipt)", q)
	}

	// A receipt that is not one counts as none: the report is a new
	// client's, and nothing is left for it.
	third, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	ts = sendReport(t, third, stats("checkout", 300, 0, "not-a-receipt"))
	if q := quota(ts); q != 0 {
		t.Errorf("a bad receipt on a stream: quota %v, want 0", q)
	}
}

func TestStreamRefusesBadStart(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	tests := []struct {
		name  string
		first *pb.StreamSamplingRequest
	}{
		{"report first", &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{}}}},
		{"empty message", &pb.StreamSamplingRequest{}},
		{"hello without client id", &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ServiceName: "x"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := rep.sampling.StreamSampling(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tt.first); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			if status.Code(err) != codes.InvalidArgument || len(fieldViolations(t, err)) == 0 {
				t.Errorf("got %v, want InvalidArgument with field violations", err)
			}
		})
	}
}

// TestSlowStreamDoesNotBlockOthers: one client never reads; edits keep
// reaching another client on the same replica, and the slow one, when it
// finally reads, gets to the latest version.
func TestSlowStreamDoesNotBlockOthers(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hello := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "x", ServiceName: "svc"}}}
	slow, err := rep.sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Send(hello); err != nil {
		t.Fatal(err)
	}
	fast, err := rep.sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := fast.Send(hello); err != nil {
		t.Fatal(err)
	}
	recvRules(t, fast)
	// Big rule sets, so the slow stream's flow-control window fills up:
	// about 550 bytes a rule of what SDKs get (not the description).
	path := "/" + strings.Repeat("p", rules.MaxURLPathLen-1)
	attrs := map[string]string{}
	for i := range 6 {
		attrs[strings.Repeat(string(rune('a'+i)), rules.MaxAttributeLen)] = strings.Repeat("v", rules.MaxAttributeLen)
	}
	var last int64
	for i := 0; i < 120; i++ {
		r := &pb.Rule{Name: "r" + itoa(i), Priority: int32(1 + i), UrlPath: path, Attributes: attrs, ServiceName: "svc"}
		createRule(t, rep.rules, r)
		last = rep.first + int64(i+1)
		if i%40 == 39 {
			waitRulesVersion(t, fast, last)
		}
	}
	// The slow client, reading at last, catches up to the newest version.
	waitRulesVersion(t, slow, last)
}

func waitRulesVersion(t *testing.T, s pb.SamplingService_StreamSamplingClient, v int64) {
	t.Helper()
	for {
		rs := recvRules(t, s)
		if rs.GetRulesVersion() == v {
			return
		}
		if rs.GetRulesVersion() > v {
			t.Fatalf("got version %d, want %d", rs.GetRulesVersion(), v)
		}
	}
}

// openStream opens a sampling stream, says hello as clientID of service and
// returns it with the first rule set.
func openStream(ctx context.Context, t *testing.T, c pb.SamplingServiceClient, clientID, service string) (pb.SamplingService_StreamSamplingClient, *pb.RuleSet) {
	t.Helper()
	stream, err := c.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: clientID, ServiceName: service}}}); err != nil {
		t.Fatal(err)
	}
	return stream, recvRules(t, stream)
}

// sendReport sends one report on the stream and returns the targets that
// answer it.
func sendReport(t *testing.T, s pb.SamplingService_StreamSamplingClient, docs ...*pb.SamplingStatistics) *pb.TargetSet {
	t.Helper()
	if err := s.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs}}}); err != nil {
		t.Fatal(err)
	}
	return recvNext(t, s, (*pb.StreamSamplingResponse).GetTargets)
}

func recvRules(t *testing.T, s pb.SamplingService_StreamSamplingClient) *pb.RuleSet {
	t.Helper()
	return recvNext(t, s, (*pb.StreamSamplingResponse).GetRules)
}

// recvNext reads the stream up to the next message of which get returns
// something, and returns that.
func recvNext[M comparable](t *testing.T, s pb.SamplingService_StreamSamplingClient, get func(*pb.StreamSamplingResponse) M) M {
	t.Helper()
	var none M
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if v := get(m); v != none {
			return v
		}
	}
}

func itoa(i int) string {
	return string(rune('a'+i/100%26)) + string(rune('a'+i/10%10)) + string(rune('a'+i%10))
}
