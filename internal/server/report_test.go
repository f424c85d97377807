package server

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

func withRegistry(reg prometheus.Registerer) func(*Options) {
	return func(o *Options) { o.Registerer = reg }
}

// oldReceipt is a receipt as the server made them before they were signed:
// bucket, rate and a hash of the rule, which anyone could write.
func oldReceipt(rule string, bucket int64, rate float64) string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(bucket))
	binary.BigEndian.PutUint64(b[8:16], math.Float64bits(rate))
	h := fnv.New64a()
	h.Write([]byte(rule))
	binary.BigEndian.PutUint64(b[16:], h.Sum64())
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// TestForgedReceiptsRetractNothing: receipts retract a client's previous
// figures from the fleet ledger, so a forged one could retract everyone
// else's traffic and quotas, and the shares would grow past the reservoir.
// A receipt written by hand, one issued to another client, one with a
// changed figure and one sent a second time are all taken as none.
func TestForgedReceiptsRetractNothing(t *testing.T) {
	clock := newClock()
	reg := prometheus.NewRegistry()
	rep := startReplica(t, newMemStore(t), clock.Now, withRegistry(reg))
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ReservoirSize: 10})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	receipts := map[string]string{}
	report := func(client string, requests int64, receipt string) *pb.SamplingTarget {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: client, ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", requests, 0, receipt)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetTargets()) != 1 {
			t.Errorf("%s's report: %v, want a target", client, resp)
			return &pb.SamplingTarget{}
		}
		receipts[client] = resp.GetTargets()[0].GetReceipt()
		return resp.GetTargets()[0]
	}
	// a (30/s) and b (10/s) settle on 7.5 and 2.5.
	report("a", 300, "")
	report("b", 100, "")
	clock.Add(10 * time.Second)
	report("a", 300, receipts["a"])
	report("b", 100, receipts["b"])
	aReceipt := receipts["a"]

	// The attacks, each from a client of its own with no traffic.
	bucket := clock.Now().UnixNano() / int64(10*time.Second)
	tok, _ := base64.RawURLEncoding.DecodeString(aReceipt)
	tok[20] ^= 0x40 // inside the quota
	attacks := []struct{ client, receipt, reason string }{
		{"x1", oldReceipt("checkout", bucket, 1e9), "malformed"},
		{"x2", aReceipt, "forged"}, // a's own, echoed by another client
		{"x3", base64.RawURLEncoding.EncodeToString(tok), "forged"},
	}
	for _, at := range attacks {
		clock.Add(100 * time.Millisecond)
		if q := report(at.client, 0, at.receipt).GetReservoirQuota(); q != 0 {
			t.Errorf("attacker %s: quota %v", at.client, q)
		}
	}
	for _, reason := range []string{"malformed", "forged"} {
		if got := promtest.Sum(t, reg, "controlplane_report_receipts_refused_total", "reason", reason); got == 0 {
			t.Errorf("no %s receipt counted", reason)
		}
	}

	// Nothing of a's or b's figures went: their shares stay 7.5 and 2.5.
	clock.Add(9 * time.Second)
	qa := report("a", 300, aReceipt).GetReservoirQuota()
	qb := report("b", 100, receipts["b"]).GetReservoirQuota()
	if math.Abs(qa-7.5) > 1e-9 || math.Abs(qb-2.5) > 1e-9 {
		t.Errorf("after the attacks: quotas %v and %v, want 7.5 and 2.5", qa, qb)
	}
	// a's receipt is used up: sent again, it is taken as none.
	clock.Add(time.Second)
	report("a", 300, aReceipt)
	if got := promtest.Sum(t, reg, "controlplane_report_receipts_refused_total", "reason", "replayed"); got != 1 {
		t.Errorf("%v replayed receipts counted, want 1", got)
	}
}

// TestReportClaimsAreBounded: a report counts in budgets no more traces
// than its client can have sampled — its last quota and one borrowed trace a
// second over the time since its last target (which the server knows from
// the receipt, whatever interval the client claims), plus the fixed rate in
// force of its requests — and a report of more requests a second than any
// instance serves is refused. Before, one anonymous report could claim 3.6e10
// traces against a budget.
func TestReportClaimsAreBounded(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	st := newMemStore(t)
	rep := startReplica(t, st, clock.Now, withRegistry(reg))
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ReservoirSize: 1, FixedRate: 0.05})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	if _, err := st.CreateBudget(ctx, budget.Budget{Name: "cap", MonthlyAmountMicros: 1000 * 1e6, Mode: budget.Enforce}.Normalize()); err != nil {
		t.Fatal(err)
	}
	servetest.WaitBudgets(t, rep.catalog, func(bs *catalog.Budgets) bool { return len(bs.Budgets) == 1 })
	send := func(client string, requests, sampled int64, interval time.Duration, receipt string) *pb.GetSamplingTargetsResponse {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: client, ServiceName: "shop", Statistics: []*pb.SamplingStatistics{
			{RuleName: "checkout", RequestCount: requests, SampledCount: sampled, Interval: durationpb.New(interval), Receipt: receipt},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	spent := func() float64 {
		t.Helper()
		u, err := st.Usage(ctx, "cap", clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return float64(u.Rules["checkout"].Sampled)
	}

	// The report of the issue: an hour at 10 million requests a second,
	// every one sampled, from no one. Without a receipt, a report covers at
	// most a quota's lifetime (20 s).
	resp := send("anon", 36_000_000_000, 36_000_000_000, time.Hour, "")
	if len(resp.GetRejected()) != 1 || resp.GetRejected()[0].GetCode() != sampling.RejectTooLarge {
		t.Errorf("an hour of 10M requests a second: %v, want it rejected as %s", resp.GetRejected(), sampling.RejectTooLarge)
	}
	if got := spent(); got != 0 {
		t.Fatalf("%v traces counted in the budget, want 0", got)
	}
	// As much as 20 s may hold, every request sampled: only the fixed rate
	// (5 %, with six standard deviations of chance), one borrowed trace a
	// second and a burst count.
	send("anon2", 200_000_000, 200_000_000, 20*time.Second, "")
	bound := 0.05*2e8 + 6*math.Sqrt(0.05*0.95*2e8+15*0.05*0.05*2e8) + 1*20*sampling.ClockSlack + 4
	if got := spent(); got > bound || got < 0.05*2e8 {
		t.Errorf("%v traces counted, want at most %v", got, bound)
	}
	clamped := promtest.Sum(t, reg, "controlplane_report_traces_clamped_total", "reason", "over_bound")
	if want := 2e8 - spent(); clamped != want {
		t.Errorf("%v traces counted as clamped, want %v", clamped, want)
	}

	// An honest client: 100 requests a second, 5 % of them sampled and its
	// quota of 1 a second, every 10 s. It is never cut.
	before := spent()
	r := send("honest", 1000, 60, 10*time.Second, "")
	for range 3 {
		clock.Add(10 * time.Second)
		r = send("honest", 1000, 60, 10*time.Second, r.GetTargets()[0].GetReceipt())
	}
	if got := spent() - before; got != 240 {
		t.Errorf("the honest client's traces counted: %v, want all 240", got)
	}
	// The same client claims every request sampled, and an hour since its
	// last report: the server knows it was 10 s, and allows once the lead
	// its chain of claims may take on the replica's clock (a quota's
	// lifetime, 20 s, for replicas' clocks that differ); claiming an hour
	// again 10 s later, it gets the 10 s alone.
	for i, secs := range []float64{10 + 20, 10} {
		clock.Add(10 * time.Second)
		before = spent()
		r = send("honest", 1000, 1000, time.Hour, r.GetTargets()[0].GetReceipt())
		bound = 0.05*1000 + 6*math.Sqrt(0.05*0.95*1000+15*0.05*0.05*1000) + (1+1)*secs*sampling.ClockSlack + 2*1 + 2
		if got := spent() - before; got != math.Floor(bound) {
			t.Errorf("claim %d of every request sampled over an hour: %v counted, want %v", i, got, math.Floor(bound))
		}
	}
}

// TestStreamReportSentAgainIsAnsweredNotRecorded: a loaded client sends its
// report again when the answer is late, and the copies reach the stream
// after the report was recorded. The stream answers them without taking
// them again: before, each copy moved the client's chain of claims on by
// its interval, past the time the next report's counts covered, and that
// honest report was cut (the fault suite's freeze row on a loaded machine).
func TestStreamReportSentAgainIsAnsweredNotRecorded(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	rep := startReplica(t, newMemStore(t), clock.Now, withRegistry(reg))
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ReservoirSize: 10})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	stream, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	const interval = 10 * time.Second
	send := func(seq uint64, sampled int64) *pb.TargetSet {
		t.Helper()
		if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Seq: seq, Statistics: []*pb.SamplingStatistics{
			{RuleName: "checkout", RequestCount: 1000, SampledCount: sampled, Interval: durationpb.New(interval)},
		}}}}); err != nil {
			t.Fatal(err)
		}
		return recvNext(t, stream, (*pb.StreamSamplingResponse).GetTargets)
	}
	quota := send(1, 0).GetTargets()[0].GetReservoirQuota()
	if quota == 0 {
		t.Fatal("no quota for the only client")
	}
	clock.Add(interval)
	if got := send(2, int64(quota*interval.Seconds())).GetAckedSeq(); got != 2 {
		t.Fatalf("report 2 acknowledged %d", got)
	}
	// Three copies of report 2, each sent a second later, before the
	// answer reached the client.
	for range 3 {
		clock.Add(time.Second)
		if got := send(2, int64(quota*interval.Seconds())).GetAckedSeq(); got != 2 {
			t.Errorf("report 2 sent again: acknowledged %d, want 2", got)
		}
	}
	// Report 3 covers the interval after report 2, on its quota.
	clock.Add(interval - 3*time.Second)
	if got := send(3, int64(quota*interval.Seconds())).GetAckedSeq(); got != 3 {
		t.Fatalf("report 3 acknowledged %d", got)
	}
	if got := promtest.Sum(t, reg, "controlplane_report_traces_clamped_total", "reason", "over_bound"); got != 0 {
		t.Errorf("%v honest sampled traces cut", got)
	}
	if got := promtest.Value(t, reg, "controlplane_sampling_reports_resent_total"); got != 3 {
		t.Errorf("%v reports counted as sent again, want 3", got)
	}
}
