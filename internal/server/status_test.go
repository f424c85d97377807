package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
)

// TestFleetStatus: real reports through the SamplingService show in
// GetFleetStatus as each rule's fleet figures — rates over the reports'
// interval, each instance counted once however often it reports, the
// quotas held — and Explain answers from the same rules.
func TestFleetStatus(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, checkout())
	waitRule(t, rep.catalog, "checkout")
	version := rep.catalog.Current().Version
	sc := rep.status
	ctx := ctxT(t)
	// a says it applies the current rules, b says nothing (an older SDK).
	applied := map[string]int64{"a": version}
	report := func(client string, requests, sampled int64, receipt string) string {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
			ClientId: client, ServiceName: "shop-api", Statistics: []*pb.SamplingStatistics{stats("checkout", requests, sampled, receipt)},
			AppliedRulesVersion: applied[client],
		})
		if err != nil || len(resp.GetTargets()) != 1 {
			t.Fatalf("report: %v, %v", resp, err)
		}
		return resp.GetTargets()[0].GetReceipt()
	}
	// Over 10 s: a saw 300 requests and sampled 30, b 100 and 10.
	ra := report("a", 300, 30, "")
	report("b", 100, 10, "")
	clock.Add(10 * time.Second)
	// a reports again with its receipt: its new figures replace the old, and
	// it gives back what it held beyond its share (5×20/30).
	report("a", 200, 20, ra)

	got, err := sc.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.GetFleetStatusResponse{
		RulesVersion: version,
		TotalRules:   2,
		Rules: []*pb.RuleStatus{
			{Rule: &pb.Rule{Name: "checkout"}, Position: 1, RequestRate: 30, SampledRate: 3, Instances: 2, InstancesCurrent: 1, QuotaGranted: 5 * 20.0 / 30, RuleVersion: version},
			{Rule: &pb.Rule{Name: "Default"}, Position: 2, RuleVersion: rep.catalog.Current().Rule("Default").RulesVersion},
		},
	}
	opts := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&pb.GetFleetStatusResponse{}, "read_time", "report_interval"),
		protocmp.FilterField(&pb.RuleStatus{}, "rule", sameName),
		cmpopts.EquateApprox(0, 1e-9),
	}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("GetFleetStatus (-want +got):\n%s", diff)
	}
	if got.GetReportInterval().AsDuration() != 10*time.Second || !got.GetReadTime().AsTime().Equal(clock.Now()) {
		t.Errorf("interval %v, read at %v", got.GetReportInterval().AsDuration(), got.GetReadTime().AsTime())
	}

	ex, err := sc.Explain(ctx, &pb.ExplainRequest{ServiceName: "shop-api", HttpMethod: "POST", UrlPath: "/checkout/pay"})
	if err != nil {
		t.Fatal(err)
	}
	wantEx := &pb.ExplainResponse{
		RulesVersion: version, Rule: &pb.Rule{Name: "Default"}, Position: 2,
		SkippedRules: []*pb.RuleMismatch{{RuleName: "checkout", Position: 1, Field: "attributes.tier", Pattern: "gold", Absent: true}},
		FixedRate:    0.05, Reservoir: 1, FixedRateFactor: 1, ReservoirFactor: 1,
	}
	exOpts := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&pb.ExplainResponse{}, "summary"),
		protocmp.FilterField(&pb.ExplainResponse{}, "rule", sameName),
	}
	if diff := cmp.Diff(wantEx, ex, exOpts); diff != "" || ex.GetSummary() == "" {
		t.Errorf("Explain (-want +got):\n%s\nsummary %q", diff, ex.GetSummary())
	}
}

func TestStatusErrors(t *testing.T) {
	st := &downLedger{samplingStore: newMemStore(t)}
	rep := startReplica(t, st, time.Now)
	sc := rep.status
	ctx := ctxT(t)
	for _, tt := range []struct {
		name   string
		call   func() error
		fields []string
	}{
		{"page size", func() error {
			_, err := sc.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{PageSize: 1001})
			return err
		}, []string{"page_size"}},
		{"page token", func() error {
			_, err := sc.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{PageToken: "x"})
			return err
		}, []string{"page_token"}},
		{"explain without a service", func() error {
			_, err := sc.Explain(ctx, &pb.ExplainRequest{UrlPath: "/"})
			return err
		}, []string{"service_name"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if diff := cmp.Diff(tt.fields, fieldViolations(t, err)); diff != "" {
				t.Errorf("field violations (-want +got):\n%s", diff)
			}
		})
	}
	st.down.Store(true)
	if _, err := sc.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetFleetStatus with the store down: %v, want Unavailable", err)
	}
	// Explain reads no store.
	if _, err := sc.Explain(ctx, &pb.ExplainRequest{ServiceName: "s"}); err != nil {
		t.Errorf("Explain with the store down: %v", err)
	}
}

// waitRule waits for the catalog to hold the named rule.
func waitRule(t *testing.T, c *catalog.Catalog, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Current().Rule(name) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the catalog did not load rule %s", name)
		}
		c.Kick()
		time.Sleep(5 * time.Millisecond) // polling the catalog's reload
	}
}

// sameName compares rules (as protocmp transforms them) by name alone.
var sameName = cmp.Comparer(func(a, b protocmp.Message) bool { return a["name"] == b["name"] })

// downLedger is a store whose ledgers cannot be read once down is set.
type downLedger struct {
	samplingStore
	down atomic.Bool
}

func (d *downLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if d.down.Load() {
		return nil, fmt.Errorf("ledger: %w", store.ErrUnavailable)
	}
	return d.samplingStore.RecordReports(ctx, b)
}

// TestInstancesRunningTheRule: an instance runs a rule as it is when the
// rules version it says it applied is at or after the rule's last edit. An
// edit of one rule leaves its instances behind until they report the new
// version, and the other rules' instances current; the figures come from a
// stream's reports as from unary ones.
func TestInstancesRunningTheRule(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "x", Priority: 1, FixedRate: 0.1, ReservoirSize: 2})
	createRule(t, rep.rules, &pb.Rule{Name: "y", Priority: 2, FixedRate: 0.1, ReservoirSize: 2})
	waitRule(t, rep.catalog, "y")
	v1 := rep.catalog.Current().Version
	ctx := ctxT(t)
	current := func() map[string][2]int64 {
		t.Helper()
		st, err := rep.status.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][2]int64{}
		for _, r := range st.GetRules() {
			out[r.GetRule().GetName()] = [2]int64{r.GetInstances(), r.GetInstancesCurrent()}
		}
		return out
	}
	check := func(what string, want map[string][2]int64) {
		t.Helper()
		if diff := cmp.Diff(want, current()); diff != "" {
			t.Errorf("%s: instances, and of them current (-want +got):\n%s", what, diff)
		}
	}

	// Unary: one client at v1.
	receipts := map[string]string{}
	unary := func(applied int64) {
		t.Helper()
		clock.Add(time.Second) // receipts are told apart by when they were issued
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "u", ServiceName: "shop",
			Statistics:          []*pb.SamplingStatistics{stats("x", 10, 1, receipts["x"]), stats("y", 10, 1, receipts["y"])},
			AppliedRulesVersion: applied})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range resp.GetTargets() {
			receipts[tg.GetRuleName()] = tg.GetReceipt()
		}
	}
	unary(v1)
	// A stream: a second client, also at v1.
	s, set := openStream(ctx, t, rep.sampling, "s", "shop")
	if set.GetRulesVersion() != v1 {
		t.Fatalf("the stream's rules at version %d, want %d", set.GetRulesVersion(), v1)
	}
	streamReport := func(applied int64) {
		t.Helper()
		if err := s.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{
			Statistics: []*pb.SamplingStatistics{stats("x", 10, 1, ""), stats("y", 10, 1, "")}, AppliedRulesVersion: applied,
		}}}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.GetTargets() != nil {
				return
			}
		}
	}
	streamReport(v1)
	check("both at v1", map[string][2]int64{"x": {2, 2}, "y": {2, 2}, "Default": {0, 0}})

	// x is edited: v2.
	if _, err := rep.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "x", FixedRate: 0.5}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	servetest.WaitVersion(t, rep.catalog, v1+1)
	v2 := v1 + 1
	check("x edited, nobody has it yet", map[string][2]int64{"x": {2, 0}, "y": {2, 2}, "Default": {0, 0}})
	waitRulesVersion(t, s, v2)
	streamReport(v2)
	check("the stream's client applied it", map[string][2]int64{"x": {2, 1}, "y": {2, 2}, "Default": {0, 0}})
	unary(v1) // the unary client reports again, still at v1
	check("the unary client has not", map[string][2]int64{"x": {2, 1}, "y": {2, 2}, "Default": {0, 0}})
	unary(v2)
	check("now both have", map[string][2]int64{"x": {2, 2}, "y": {2, 2}, "Default": {0, 0}})
}
