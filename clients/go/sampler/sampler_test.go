package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// newTestSampler returns a sampler on a fake clock that never connects.
func newTestSampler(t *testing.T) (*Sampler, *clocktest.Clock) {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	s, err := newSampler(WithService("shop-api", ""), WithEndpoint("127.0.0.1:1"), WithClock(clk), WithClientID("test-client"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

// Trace IDs whose randomness (their last 56 bits) is as high or as low as
// can be: inside any fixed rate above zero, and outside any below one.
var (
	inID  = trace.TraceID{0: 1, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}
	outID = trace.TraceID{0: 1}
)

func params(id trace.TraceID, attrs ...attribute.KeyValue) sdktrace.SamplingParameters {
	return sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: "op", Attributes: attrs}
}

func rulesFor(version int64, rs ...*pb.Rule) *pb.RuleSet {
	return &pb.RuleSet{RulesVersion: version, Rules: append(rs, &pb.Rule{Name: "Default", Priority: 10000, FixedRate: 0.05, ReservoirSize: 1})}
}

func targets(version int64, expiry time.Time, ts ...*pb.SamplingTarget) *pb.TargetSet {
	for _, t := range ts {
		t.ReservoirQuotaExpireTime = timestamppb.New(expiry)
	}
	return &pb.TargetSet{RulesVersion: version, Targets: ts, ReportInterval: durationpb.New(10 * time.Second)}
}

func sampled(s *Sampler, p sdktrace.SamplingParameters) bool {
	return s.ShouldSample(p).Decision == sdktrace.RecordAndSample
}

func TestFallbackBeforeRules(t *testing.T) {
	s, clk := newTestSampler(t)
	// For the first second it waits for rules: nothing of its own, not
	// even the local default's token or 5 %.
	if e := s.Explain(params(inID)); e.Reason != ReasonFallback || e.Sampled || !strings.Contains(e.Detail, "waiting") {
		t.Errorf("Explain while waiting for the first rules = %+v, want not sampled, waiting", e)
	}
	if sampled(s, params(inID)) || sampled(s, params(outID)) {
		t.Error("sampled while waiting for the first rules")
	}
	clk.Add(time.Second - 1)
	if sampled(s, params(inID)) {
		t.Error("sampled before the wait for the first rules ended")
	}
	clk.Add(1)
	if e := s.Explain(params(outID)); e.Reason != ReasonFallback || !e.Sampled {
		t.Errorf("Explain before rules = %+v, want fallback with its token", e)
	}
	// One trace per second, then 5 % by trace ID.
	if !sampled(s, params(outID)) || sampled(s, params(outID)) || !sampled(s, params(inID)) {
		t.Error("local default is not 1/s + 5 %")
	}
	clk.Add(time.Second)
	if !sampled(s, params(outID)) {
		t.Error("no fallback token a second later")
	}
}

// TestFallbackSpansAreReported: spans the local default decided count with
// the Default rule's, so budgets see every trace.
func TestFallbackSpansAreReported(t *testing.T) {
	s, clk := newTestSampler(t)
	for i := 0; i < 3; i++ {
		s.ShouldSample(params(inID)) // waiting for the first rules: not sampled, counted
	}
	clk.Add(time.Second) // past the wait for the first rules
	for i := 0; i < 4; i++ {
		s.ShouldSample(params(inID)) // before any rules: the local default
	}
	s.applyRules(rulesFor(1))
	for _, d := range s.takeReport(false) {
		if d.GetRuleName() == "Default" && (d.GetRequestCount() != 7 || d.GetSampledCount() != 4) {
			t.Errorf("Default's report %v, want the 7 requests before the rules and the 4 spans the local default sampled", d)
		}
	}
}

func TestParentBased(t *testing.T) {
	s, _ := newTestSampler(t)
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: inID, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: true})
		p := params(inID)
		p.ParentContext = trace.ContextWithRemoteSpanContext(context.Background(), sc)
		want := sdktrace.Drop
		if flags.IsSampled() {
			want = sdktrace.RecordAndSample
		}
		if got := s.ShouldSample(p).Decision; got != want {
			t.Errorf("parent sampled=%v: decision %v, want %v", flags.IsSampled(), got, want)
		}
		if e := s.Explain(p); e.Reason != ReasonParent || e.Sampled != flags.IsSampled() {
			t.Errorf("Explain = %+v", e)
		}
	}
}

func TestRuleMatchingAndReasons(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(3,
		&pb.Rule{Name: "checkout", Priority: 10, FixedRate: 0.5, ReservoirSize: 5, ServiceName: "shop-*", HttpMethod: "POST", UrlPath: "/checkout*", Attributes: map[string]string{"tier": "gold"}},
		&pb.Rule{Name: "health", Priority: 1, FixedRate: 0, ReservoirSize: 0, UrlPath: "/health"},
		&pb.Rule{Name: "other-service", Priority: 2, FixedRate: 1, ServiceName: "search"},
		&pb.Rule{Name: "arn", Priority: 3, FixedRate: 1, ResourceArn: "arn:aws:*"},
	))
	tests := []struct {
		name  string
		attrs []attribute.KeyValue
		rule  string
	}{
		{"current conventions", []attribute.KeyValue{attribute.String("http.request.method", "post"), attribute.String("url.path", "/Checkout/cart"), attribute.String("tier", "gold")}, "checkout"},
		{"older conventions, query stripped", []attribute.KeyValue{attribute.String("http.method", "POST"), attribute.String("http.target", "/checkout?x=1"), attribute.String("tier", "GOLD")}, "checkout"},
		{"missing attribute matches only *", []attribute.KeyValue{attribute.String("http.method", "POST"), attribute.String("url.path", "/checkout")}, "Default"},
		{"exact path", []attribute.KeyValue{attribute.String("url.path", "/health")}, "health"},
		{"query is not part of the path", []attribute.KeyValue{attribute.String("http.target", "/health?deep=1")}, "health"},
		{"nothing but the default", nil, "Default"},
		// Precedence: the current conventions over the older ones in any
		// order, the older ones where the current are empty, and the last
		// of repeated keys, as OpenTelemetry records them.
		{"url.path over an earlier http.target", []attribute.KeyValue{attribute.String("http.target", "/checkout"), attribute.String("http.method", "POST"), attribute.String("url.path", "/health")}, "health"},
		{"url.path over a later http.target", []attribute.KeyValue{attribute.String("url.path", "/health"), attribute.String("http.target", "/checkout")}, "health"},
		{"an empty url.path leaves http.target", []attribute.KeyValue{attribute.String("url.path", ""), attribute.String("http.target", "/health?x")}, "health"},
		{"http.request.method over http.method", []attribute.KeyValue{attribute.String("http.request.method", "POST"), attribute.String("http.method", "GET"), attribute.String("url.path", "/checkout"), attribute.String("tier", "gold")}, "checkout"},
		{"the last of repeated keys", []attribute.KeyValue{attribute.String("url.path", "/checkout"), attribute.String("url.path", "/health")}, "health"},
		{"an empty last url.path leaves http.target, not an earlier url.path", []attribute.KeyValue{attribute.String("url.path", "/checkout"), attribute.String("url.path", ""), attribute.String("http.target", "/health")}, "health"},
		{"an empty last http.request.method leaves http.method", []attribute.KeyValue{attribute.String("http.method", "POST"), attribute.String("http.request.method", "GET"), attribute.String("http.request.method", ""), attribute.String("url.path", "/checkout"), attribute.String("tier", "gold")}, "checkout"},
		{"the last of repeated rule attributes", []attribute.KeyValue{attribute.String("tier", "gold"), attribute.String("http.request.method", "POST"), attribute.String("url.path", "/checkout"), attribute.String("tier", "silver")}, "Default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if e := s.Explain(params(outID, tt.attrs...)); e.Rule != tt.rule || e.RulesVersion != 3 {
				t.Errorf("Explain = %+v, want rule %s", e, tt.rule)
			}
		})
	}

	checkout := []attribute.KeyValue{attribute.String("http.request.method", "POST"), attribute.String("url.path", "/checkout"), attribute.String("tier", "gold")}
	// No quota yet: borrow one a second, then the fixed rate by trace ID.
	if e := s.Explain(params(outID, checkout...)); e.Reason != ReasonBorrowed {
		t.Errorf("before any target: %+v, want borrowed", e)
	}
	if !sampled(s, params(outID, checkout...)) || sampled(s, params(outID, checkout...)) || !sampled(s, params(inID, checkout...)) {
		t.Error("borrow once, then 50 % by trace ID")
	}
	// A quota of 2/s: two reservoir traces now, then fixed rate.
	s.applyTargets(targets(3, clk.Now().Add(20*time.Second), &pb.SamplingTarget{RuleName: "checkout", ReservoirQuota: 2, FixedRate: 0.5}))
	// (A fresh quota starts full but for a fraction of one token, so that
	// a fleet does not trace in lockstep.)
	var reasons []Reason
	for i := 0; i < 3; i++ {
		e := s.Explain(params(outID, checkout...))
		reasons = append(reasons, e.Reason)
		s.ShouldSample(params(outID, checkout...))
	}
	if reasons[0] != ReasonReservoir || reasons[2] != ReasonFixedRate {
		t.Errorf("reasons %v, want the reservoir first and the fixed rate by the third", reasons)
	}
	// After the quota expires: borrow again.
	clk.Add(21 * time.Second)
	s.extendFresh(clk.Now().Add(time.Minute).UnixNano())
	if e := s.Explain(params(outID, checkout...)); e.Reason != ReasonBorrowed {
		t.Errorf("after the quota expired: %+v, want borrowed", e)
	}
	// Once nothing from the control plane is current, the local default.
	clk.Add(2 * time.Minute)
	if e := s.Explain(params(outID, checkout...)); e.Reason != ReasonFallback || e.Rule != "" {
		t.Errorf("after everything expired: %+v, want fallback", e)
	}
}

func TestFractionalQuota(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0, ReservoirSize: 1}))
	s.applyTargets(targets(1, clk.Now().Add(time.Hour), &pb.SamplingTarget{RuleName: "r", ReservoirQuota: 0.25}))
	n := 0
	for i := 0; i < 400; i++ { // 40 s in steps of 100 ms, one span each
		if sampled(s, params(outID)) {
			n++
		}
		clk.Add(100 * time.Millisecond)
	}
	if n < 9 || n > 11 {
		t.Errorf("%d traces in 40 s at 0.25/s, want 10", n)
	}
}

// TestQuotaHoldsAtTheClockTick: the sampler reads the time every clockTick;
// a quota of many traces a second still holds when every tick releases
// several tokens at once.
func TestQuotaHoldsAtTheClockTick(t *testing.T) {
	for _, quota := range []float64{50, 1000} {
		s, clk := newTestSampler(t)
		s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0, ReservoirSize: 1000}))
		s.applyTargets(targets(1, clk.Now().Add(time.Hour), &pb.SamplingTarget{RuleName: "r", ReservoirQuota: quota}))
		perSecond := func() int {
			n := 0
			for step := time.Duration(0); step < time.Second; step += clockTick {
				for i := 0; i < int(quota); i++ { // more spans than tokens
					if sampled(s, params(outID)) {
						n++
					}
				}
				clk.Add(clockTick)
			}
			return n
		}
		perSecond() // the full bucket a fresh quota starts with
		if n := perSecond(); math.Abs(float64(n)-quota) > quota/100+1 {
			t.Errorf("quota %v/s: %d traces in a second of %v ticks", quota, n, clockTick)
		}
	}
}

func TestBudgetRateFromTargets(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(5, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8}))
	exp := clk.Now().Add(time.Hour)
	mid := trace.TraceID{9: 0xc0} // R = 0xc0…: inside rates of 1/4 and above
	s.applyTargets(targets(5, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.1}))
	if e := s.Explain(params(mid)); e.Sampled {
		t.Errorf("target lowered the rate to 0.1 but a 0.25 trace was sampled: %+v", e)
	}
	// Targets from an older rules version do not override a newer rule set.
	s.applyRules(rulesFor(6, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8}))
	s.applyTargets(targets(5, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.1}))
	if e := s.Explain(params(mid)); !e.Sampled {
		t.Errorf("a stale target overrode the new rule's rate: %+v", e)
	}
}

// TestRatesInForceFromRuleSets: a rule set's rates in force apply from the
// first decision, before any target (the fixed rate, borrowing scaled by
// the reservoir factor, the local default capped by the Default rule's),
// also when targets at that version came before; a rule set without them
// brings the rule's own rates back; a first borrow withheld lasts until
// the rule's first target.
func TestRatesInForceFromRuleSets(t *testing.T) {
	mid := trace.TraceID{9: 0xc0} // inside rates of 1/4 and above
	type check struct {
		id      trace.TraceID
		sampled bool
		reason  Reason
	}
	tests := []struct {
		name  string
		rates []*pb.RuleRates
		// checks are decisions in order, at one instant, before targets.
		checks []check
	}{
		{"no budget: the rule's rate, borrowing", nil,
			[]check{{outID, true, ReasonBorrowed}, {mid, true, ReasonFixedRate}, {outID, false, ReasonFixedRate}}},
		{"lowered: the rate in force", []*pb.RuleRates{{RuleName: "r", FixedRate: 0.1, ReservoirFactor: 1}},
			[]check{{outID, true, ReasonBorrowed}, {mid, false, ReasonFixedRate}, {inID, true, ReasonFixedRate}}},
		{"exhausted: nothing, not even borrowed", []*pb.RuleRates{{RuleName: "r"}},
			[]check{{outID, false, ReasonFixedRate}, {inID, false, ReasonFixedRate}}},
		{"first borrow withheld", []*pb.RuleRates{{RuleName: "r", FixedRate: 0.8, ReservoirFactor: 1, FirstBorrowWithheld: true}},
			[]check{{outID, false, ReasonFixedRate}, {mid, true, ReasonFixedRate}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestSampler(t)
			rs := rulesFor(5, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8, ReservoirSize: 10})
			rs.RatesInForce = tt.rates
			s.applyRules(rs)
			for i, c := range tt.checks {
				if e := s.Explain(params(c.id)); e.Sampled != c.sampled || e.Reason != c.reason {
					t.Errorf("decision %d: %+v, want sampled %v by %s", i, e, c.sampled, c.reason)
				}
				s.ShouldSample(params(c.id))
			}
		})
	}

	s, clk := newTestSampler(t)
	exp := clk.Now().Add(time.Hour)
	// Targets of version 6 came before its rule set: the rule set's rate in
	// force still applies (it is as new), and one without any the rule's
	// own at a later version.
	s.applyRules(rulesFor(5, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8}))
	s.applyTargets(targets(6, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.8}))
	rs := rulesFor(6, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8})
	rs.RatesInForce = []*pb.RuleRates{{RuleName: "r", FixedRate: 0.1, ReservoirFactor: 1}}
	s.applyRules(rs)
	if e := s.Explain(params(mid)); e.Sampled {
		t.Errorf("rate in force 0.1 after targets of the same version: %+v", e)
	}
	s.applyRules(rulesFor(7, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.8}))
	if e := s.Explain(params(mid)); !e.Sampled {
		t.Errorf("a budget lifted: the rule's own 0.8 is back: %+v", e)
	}

	// A withheld first borrow ends with the first target; the Default
	// rule's rates in force cap the local default.
	s, clk = newTestSampler(t)
	rs = rulesFor(5, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0})
	rs.RatesInForce = []*pb.RuleRates{{RuleName: "r", ReservoirFactor: 1, FirstBorrowWithheld: true}, {RuleName: "Default"}}
	s.applyRules(rs)
	if sampled(s, params(outID)) {
		t.Error("a withheld first borrow borrowed")
	}
	s.applyTargets(targets(5, clk.Now().Add(time.Second), &pb.SamplingTarget{RuleName: "r"}))
	clk.Add(2 * time.Second) // the quota is void: borrowing again
	if e := s.Explain(params(outID)); e.Reason != ReasonBorrowed {
		t.Errorf("after its first target, with the quota void: %+v, want borrowed", e)
	}
	clk.Add(time.Hour) // the rules are stale: the local default decides
	if e := s.Explain(params(inID)); e.Reason != ReasonFallback || e.Sampled {
		t.Errorf("local default under an exhausted Default rule: %+v, want nothing sampled", e)
	}
}

func TestReportsCountAndCarryAcrossVersions(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 1}))
	for i := 0; i < 10; i++ {
		s.ShouldSample(params(outID))
	}
	// A new version keeps the rule's counters.
	s.applyRules(rulesFor(2, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0}))
	for i := 0; i < 5; i++ {
		s.ShouldSample(params(outID))
	}
	clk.Add(7 * time.Second)
	docs := s.takeReport(true)
	got := map[string]*pb.SamplingStatistics{}
	for _, d := range docs {
		got[d.GetRuleName()] = d
	}
	r := got["r"]
	// 15 requests: the first borrowed, nine more at rate 1, none of the 5
	// at rate 0 (the borrowed trace of this second is spent).
	if r.GetRequestCount() != 15 || r.GetSampledCount() != 10 || r.GetBorrowCount() != 1 {
		t.Errorf("report %v, want 15 requests, 10 sampled, 1 borrowed", r)
	}
	if len(got) != 2 || got["Default"].GetRequestCount() != 0 {
		t.Errorf("report %v, want r and Default", docs)
	}
	if s.takeReport(false)[0].GetRequestCount() != 0 {
		t.Error("a report does not reset the counts")
	}
}

// TestUnacknowledgedReportIsSentAgain: a report is sent again, as it was
// but marked resent and with the receipts it was taken with, until targets
// acknowledge its seq; the counts since wait for the next report, under
// the next seq; one that stays unacknowledged past maxResendAge, or
// refused as invalid, is given up.
func TestUnacknowledgedReportIsSentAgain(t *testing.T) {
	for _, echo := range []bool{true, false} {
		t.Run(fmt.Sprintf("echo %v", echo), func(t *testing.T) { testUnacknowledgedReportIsSentAgain(t, echo) })
	}
}

// testUnacknowledgedReportIsSentAgain: a report sent again is marked resent
// and carries the receipt it was taken with, whether its first send echoed
// it (a unary call, a stream's first report) or not (a stream's later
// reports, whose receipts the stream held): a replica that did not handle
// the first send bounds it by that receipt. Before, the receipt was
// stripped once sent, and the replica bounded the report as a new
// client's.
func testUnacknowledgedReportIsSentAgain(t *testing.T, echo bool) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 1}))
	s.applyTargets(targets(1, clk.Now().Add(100*time.Hour), &pb.SamplingTarget{RuleName: "r", FixedRate: 1, Receipt: "r1"}))
	spans := func(n int) {
		for range n {
			if !sampled(s, params(outID)) {
				t.Fatal("a span at fixed rate 1 was not sampled")
			}
		}
	}
	type report struct {
		seq     uint64
		sampled int64
		receipt string
		resent  bool
	}
	next := func() report {
		t.Helper()
		seq, docs, resent := s.nextReport(echo)
		s.reportSent(seq)
		for _, d := range docs {
			if d.GetRuleName() == "r" {
				return report{seq, d.GetSampledCount(), d.GetReceipt(), resent}
			}
		}
		t.Fatalf("no statistics for r in %v", docs)
		return report{}
	}
	ack := func(seq uint64) { s.applyTargets(&pb.TargetSet{RulesVersion: 1, AckedSeq: seq}) }

	spans(3)
	first := next()
	echoed := ""
	if echo {
		echoed = "r1"
	}
	if first.sampled != 3 || first.receipt != echoed || first.resent || first.seq == 0 {
		t.Fatalf("first report %+v, want 3 sampled with receipt %q, not resent", first, echoed)
	}
	spans(4)
	steps := []struct {
		name   string
		before func()
		want   report
	}{
		{"unacknowledged: the same again, resent with the receipt it was taken with", func() {}, report{first.seq, 3, "r1", true}},
		{"and again", func() {}, report{first.seq, 3, "r1", true}},
		{"an older seq acknowledged", func() { ack(first.seq - 1) }, report{first.seq, 3, "r1", true}},
		{"acknowledged: the counts since", func() { ack(first.seq) }, report{first.seq + 1, 4, "", false}},
		{"given up after maxResendAge", func() { clk.Add(maxResendAge + time.Second); spans(5) }, report{first.seq + 2, 5, "", false}},
		{"given up when refused", func() { s.dropPending(errors.New("refused")); spans(6) }, report{first.seq + 3, 6, "", false}},
	}
	for _, st := range steps {
		st.before()
		if got := next(); got != st.want {
			t.Errorf("%s: %+v, want %+v", st.name, got, st.want)
		}
	}
}

// TestReportsUseUpReceipts: a receipt is echoed at most once, and only if it
// came with the answer to the last report; targets without one (the server
// sent them unasked) keep it.
func TestReportsUseUpReceipts(t *testing.T) {
	s, _ := newTestSampler(t)
	s.applyRules(rulesFor(1, &pb.Rule{Name: "r", Priority: 1, FixedRate: 1}))
	expiry := time.Now().Add(time.Hour)
	receipt := func(docs []*pb.SamplingStatistics) string {
		for _, d := range docs {
			if d.GetRuleName() == "r" {
				return d.GetReceipt()
			}
		}
		t.Fatalf("no statistics for r in %v", docs)
		return ""
	}
	steps := []struct {
		name     string
		receipts []string // of targets applied first, in order; "" is a target without one
		echo     bool
		want     string
	}{
		{"an answer's receipt is echoed", []string{"r1"}, true, "r1"},
		{"then it is used up", nil, true, ""},
		{"targets sent unasked keep the last answer's", []string{"r2", ""}, true, "r2"},
		{"a report that echoes nothing", []string{"r3"}, false, ""},
		{"uses it up too", nil, true, ""},
	}
	for _, st := range steps {
		for _, r := range st.receipts {
			s.applyTargets(targets(1, expiry, &pb.SamplingTarget{RuleName: "r", ReservoirQuota: 1, FixedRate: 1, Receipt: r}))
		}
		if got := receipt(s.takeReport(st.echo)); got != st.want {
			t.Errorf("%s: receipt %q, want %q", st.name, got, st.want)
		}
	}
}

// TestMalformedMessagesDoNotPanic feeds the sampler what a broken or hostile
// server might send.
func TestMalformedMessagesDoNotPanic(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyTargets(&pb.TargetSet{}) // targets before any rules
	s.applyRules(&pb.RuleSet{})
	s.applyRules(&pb.RuleSet{RulesVersion: 2, Rules: []*pb.Rule{
		nil,
		{Name: "nan", FixedRate: math.NaN(), ReservoirSize: -5, UrlPath: "[[[", HttpMethod: "?*?*"},
		{Name: "huge", FixedRate: 1e300, Attributes: map[string]string{"": ""}},
	}})
	s.applyTargets(&pb.TargetSet{RulesVersion: 2, Targets: []*pb.SamplingTarget{
		nil,
		{RuleName: "nan", ReservoirQuota: math.Inf(1)},
		{RuleName: "huge", ReservoirQuota: -1, FixedRate: math.NaN()},
		{RuleName: "unknown", ReservoirQuota: 5},
	}, ReportInterval: durationpb.New(-time.Second)})
	for i := 0; i < 100; i++ {
		s.ShouldSample(params(outID, attribute.Int("status", 500), attribute.String("url.path", "/x")))
		s.Explain(params(inID))
		clk.Add(time.Second)
	}
	_ = s.takeReport(true)
}

// TestShouldSampleDoesNotAllocate, with a small rule set and with the
// largest a control plane holds.
func TestShouldSampleDoesNotAllocate(t *testing.T) {
	for _, n := range []int{50, rules.MaxRules} {
		s, clk := newTestSampler(t)
		s.applyRules(&pb.RuleSet{RulesVersion: 1, Rules: benchRules(n)})
		rule := fmt.Sprintf("rule-%02d", n*4/5)
		s.applyTargets(targets(1, clk.Now().Add(time.Hour), &pb.SamplingTarget{RuleName: rule, ReservoirQuota: 1, FixedRate: 0.05}))
		p := params(outID, attribute.String("http.request.method", "GET"), attribute.String("url.path", fmt.Sprintf("/api/v%d/items/1", n*4/5)), attribute.String("tier", "gold"))
		if e := s.Explain(p); e.Rule != rule {
			t.Fatalf("%d rules: the benchmark request matched %+v, want %s", n, e, rule)
		}
		if allocs := testing.AllocsPerRun(1000, func() { s.ShouldSample(p) }); allocs != 0 {
			t.Errorf("%d rules: ShouldSample allocates %v times per call", n, allocs)
		}
		// Kept by the fixed rate, with its threshold in the tracestate.
		p.TraceID = inID
		if got := s.ShouldSample(p).Tracestate.String(); got != "ot=th:f3333" {
			t.Fatalf("%d rules: tracestate %q, want ot=th:f3333", n, got)
		}
		if allocs := testing.AllocsPerRun(1000, func() { s.ShouldSample(p) }); allocs != 0 {
			t.Errorf("%d rules: ShouldSample at the fixed rate allocates %v times per call", n, allocs)
		}
	}
}

// TestOptions checks that the options users set take effect.
func TestOptions(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	res := resource.NewSchemaless(attribute.String("service.name", "from-resource"))
	s, err := newSampler(WithEndpoint("127.0.0.1:1"), WithClock(clk), WithResource(res), WithFallback(2, 0), WithUnaryOnly(), WithFirstRulesWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cfg.service != "from-resource" || !s.cfg.disableStreams {
		t.Errorf("service %q, unary only %v", s.cfg.service, s.cfg.disableStreams)
	}
	// A local default of 2/s and no fixed rate: two traces this second.
	n := 0
	for i := 0; i < 10; i++ {
		if sampled(s, params(inID)) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("fallback of 2/s + 0 sampled %d of 10 in one second", n)
	}
	if _, err := newSampler(WithFallback(1, 1.5)); err == nil {
		t.Error("a fallback rate over 1 was accepted")
	}
	if _, err := newSampler(WithFirstRulesWait(-time.Second)); err == nil {
		t.Error("a negative wait for the first rules was accepted")
	}
}

// TestResourceAttributes: the resource the sampler declares is its
// OpenTelemetry resource's attributes (in their string form, leaving out
// what the control plane would refuse) with WithResourceAttributes on top;
// New refuses explicit attributes beyond the bounds.
func TestResourceAttributes(t *testing.T) {
	res := resource.NewSchemaless(
		attribute.String("service.name", "shop"),
		attribute.String("deployment.environment.name", "staging"),
		attribute.Int("process.pid", 4242),
		attribute.String("process.command_line", strings.Repeat("x", 300)),
		attribute.String(strings.Repeat("k", 65), "v"),
	)
	s, err := newSampler(WithEndpoint("127.0.0.1:1"), WithResource(res),
		WithResourceAttributes(map[string]string{"service.version": "2.5.0", "deployment.environment.name": "production"}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]string{"service.name": "shop", "deployment.environment.name": "production", "process.pid": "4242", "service.version": "2.5.0"}
	if diff := cmp.Diff(want, s.cfg.instance); diff != "" {
		t.Errorf("declared resource (-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]string{
		{"service.version": strings.Repeat("9", 257)},
		{"": "x"},
		{"service.version": "1\n2"},
	} {
		if _, err := newSampler(WithEndpoint("127.0.0.1:1"), WithResourceAttributes(bad)); err == nil || !strings.Contains(err.Error(), "resource attributes") {
			t.Errorf("WithResourceAttributes(%q): %v, want an error naming the resource attributes", bad, err)
		}
	}
}

// TestRulesForOtherInstancesAreSkipped: the sampler applies only the rules
// whose resource globs match its resource, even from a control plane that
// sends it every rule of the service (one that predates resource
// attributes).
func TestRulesForOtherInstancesAreSkipped(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		env, want string
	}{
		{"production", "prod"},
		{"staging", "staging"},
		{"", "Default"},
	} {
		opts := []Option{WithService("shop", ""), WithEndpoint("127.0.0.1:1"), WithClock(clk), WithResource(resource.Empty())}
		if tc.env != "" {
			opts = append(opts, WithResourceAttributes(map[string]string{"deployment.environment.name": tc.env}))
		}
		s, err := newSampler(opts...)
		if err != nil {
			t.Fatal(err)
		}
		s.applyRules(rulesFor(1,
			&pb.Rule{Name: "staging", Priority: 1, FixedRate: 1, ResourceAttributes: map[string]string{"deployment.environment.name": "stag*"}},
			&pb.Rule{Name: "prod", Priority: 2, FixedRate: 1, ResourceAttributes: map[string]string{"deployment.environment.name": "production"}},
		))
		if got := s.Explain(params(inID)).Rule; got != tc.want {
			t.Errorf("an instance in %q decides by %q, want %q", tc.env, got, tc.want)
		}
		s.Close()
	}
}

// TestEndpoints: one endpoint is dialled as given; several, from the
// option or the environment (comma-separated), get a resolver of their
// own; none is refused.
func TestEndpoints(t *testing.T) {
	tests := []struct {
		name   string
		env    string
		opts   []Option
		target string // "" for the list's own resolver
		err    bool
	}{
		{name: "default", target: "localhost:7070"},
		{name: "one", opts: []Option{WithEndpoint("dns:///cp.internal:7070")}, target: "dns:///cp.internal:7070"},
		{name: "environment", env: "cp:7070", target: "cp:7070"},
		{name: "several", opts: []Option{WithEndpoints("a:7070", "b:7070")}},
		{name: "several in the environment", env: "a:7070, b:7070"},
		{name: "one of several left", opts: []Option{WithEndpoints("a:7070", " ")}, target: "a:7070"},
		{name: "none", opts: []Option{WithEndpoints()}, err: true},
		{name: "empty", opts: []Option{WithEndpoint("")}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CONTROLPLANE_ENDPOINT", tt.env)
			s, err := newSampler(tt.opts...)
			if tt.err {
				if err == nil {
					s.Close()
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			target := s.conn.CanonicalTarget()
			if tt.target == "" {
				if !strings.HasPrefix(target, "controlplane:") {
					t.Errorf("target %q, want the list's own resolver", target)
				}
			} else if !strings.HasSuffix(target, tt.target) {
				t.Errorf("target %q, want %q", target, tt.target)
			}
		})
	}
}

// TestParentWithoutValidContext: a context that holds a span whose context
// is invalid has no parent; the rules decide, and its trace state is kept.
func TestParentWithoutValidContext(t *testing.T) {
	s, clk := newTestSampler(t)
	clk.Add(time.Second) // past the wait for the first rules
	ts, err := trace.ParseTraceState("vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	p := params(inID)
	p.ParentContext = trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}.WithTraceState(ts))
	r := s.ShouldSample(p)
	if r.Tracestate.String() != "vendor=x" {
		t.Errorf("trace state %q, want the context's", r.Tracestate.String())
	}
	if e := s.Explain(p); e.Reason != ReasonFallback {
		t.Errorf("Explain = %+v, want the local default's decision", e)
	}
}

// TestCountersPastTheExactCount: a stripe counts exactly up to its limit, and
// beyond it by an unbiased sample, until the next take; sampled and borrowed
// spans exactly.
func TestCountersPastTheExactCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	tests := []struct {
		spans     int
		tolerance float64 // relative, on requests
	}{
		{spans: 100, tolerance: 0},
		{spans: exactPerStripe * stripes / 2, tolerance: 0},
		{spans: exactPerStripe * stripes, tolerance: 0}, // the most counted exactly
		{spans: 200_000, tolerance: 0.03},               // about 3.5 standard errors
		{spans: 100, tolerance: 0},                      // after a busy interval: counted exactly again
	}
	var c counters // one for all, so that each take must reset it
	for _, tt := range tests {
		var wantSampled, wantBorrowed int64
		for i := 0; i < tt.spans; i++ {
			stripe, pick := byte(i), byte(rng.Uint32())
			sampled := pick < 13
			borrowed := sampled && pick < 2
			if sampled {
				wantSampled++
			}
			if borrowed {
				wantBorrowed++
			}
			c.add(stripe, pick, sampled, borrowed)
		}
		got := c.take()
		if d := math.Abs(float64(got.requests)-float64(tt.spans)) / float64(tt.spans); d > tt.tolerance {
			t.Errorf("%d spans: counted %d requests, off by %.2f%%", tt.spans, got.requests, 100*d)
		}
		if got.sampled != wantSampled || got.borrowed != wantBorrowed {
			t.Errorf("%d spans: sampled %d, borrowed %d; want exactly %d and %d", tt.spans, got.sampled, got.borrowed, wantSampled, wantBorrowed)
		}
		if again := c.take(); again != (counts{}) {
			t.Errorf("a second take returned %+v", again)
		}
	}
}

// TestCountersSampleOnlyPastTheExactCount: one stripe counts its first
// exactPerStripe spans one by one, then in steps of sampleEvery; and the
// counters keep their stripes and flags on cache lines of their own.
func TestCountersSampleOnlyPastTheExactCount(t *testing.T) {
	var c counters
	for i := 0; i < 10*exactPerStripe; i++ {
		c.add(3, byte(i), false, false)
	}
	got := c.take().requests
	if past := got - exactPerStripe; past <= 0 || past%sampleEvery != 0 || past > 9*exactPerStripe+sampleEvery {
		t.Errorf("%d spans on one stripe counted as %d: want %d exactly, then steps of %d", 10*exactPerStripe, got, exactPerStripe, sampleEvery)
	}
	if off, size := unsafe.Offsetof(c.s), unsafe.Sizeof(stripe{}); off != 2*cacheLinePair || size != cacheLinePair {
		t.Errorf("stripes at offset %d, %d bytes each; want %d and %d", off, size, 2*cacheLinePair, cacheLinePair)
	}
}

// TestCountersLateMarkIsStale: a span that crossed the exact count in the
// interval just taken, and marked its stripe only after the take, does not
// make the next interval's count an estimate.
func TestCountersLateMarkIsStale(t *testing.T) {
	var c counters
	epoch := c.f.epoch.Load() // the span loads the epoch and counts...
	c.take()                  // ...a take runs...
	c.f.past[3].Store(epoch + 1)
	for i := 0; i < 100; i++ {
		c.add(3, byte(i), false, false)
	}
	if got := c.take().requests; got != 100 {
		t.Errorf("100 spans after a late mark counted as %d", got)
	}
}

// TestCountersWhenEverySpanIsSampled: a rule that samples every span of a
// busy interval reports sampled exactly and requests no fewer, interval
// after interval, with nothing carried over.
func TestCountersWhenEverySpanIsSampled(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	var c counters
	const spans = 20_000
	for interval := 0; interval < 200; interval++ {
		for i := 0; i < spans; i++ {
			c.add(byte(rng.Uint32()), byte(rng.Uint32()), true, false)
		}
		got := c.take()
		if got.sampled != spans || got.requests < spans {
			t.Fatalf("interval %d: %+v, want %d sampled and at least as many requests", interval, got, spans)
		}
		if got.requests > spans*11/10 {
			t.Fatalf("interval %d: %d requests for %d spans", interval, got.requests, spans)
		}
	}
}

// TestMatchAgreesWithAFullScan: for rule sets that the index narrows in one
// word, in several words, and not at all, the sampler picks the rule that
// trying every rule in order picks.
func TestMatchAgreesWithAFullScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	methods := []string{"GET", "POST", "*", "G*", "DELETE", "A", "OPTIONS"}
	paths := []string{"*", "/api/*", "/api/v1/*", "/api/v1/items", "/api/v?/items/*", "/health", "*.json", "/äpi/*"}
	hosts := []string{"*", "shop.example.com", "*.example.com"}
	for _, n := range []int{10, 100, rules.MaxRules, rules.MaxIndexed + 10} {
		var rs []*pb.Rule
		for i := 0; i < n; i++ {
			r := &pb.Rule{Name: fmt.Sprintf("r%03d", i), Priority: int32(1 + rng.IntN(100)), FixedRate: 0.1,
				HttpMethod: methods[rng.IntN(len(methods))], UrlPath: paths[rng.IntN(len(paths))], Host: hosts[rng.IntN(len(hosts))]}
			if rng.IntN(4) == 0 {
				r.Attributes = map[string]string{"tier": []string{"gold", "s*"}[rng.IntN(2)]}
			}
			rs = append(rs, r)
		}
		s, _ := newTestSampler(t)
		set := rulesFor(1, rs...)
		s.applyRules(set)
		var want []rules.Rule
		for _, r := range set.GetRules() {
			want = append(want, rulepb.FromProto(r).Normalize())
		}
		rules.Sort(want)
		for j := 0; j < 300; j++ {
			// Non-ASCII methods and paths the index cannot narrow: every
			// rule is tried.
			req := rules.Request{ServiceName: "shop-api", HTTPMethod: []string{"GET", "post", "DELETE", "PUT", "a", "OPTIONS", "GÉT"}[rng.IntN(7)],
				URLPath: []string{"/api/v1/items", "/API/v2/items/7", "/health", "/x.json", "/", "/ÄPI/v1"}[rng.IntN(6)],
				Host:    []string{"shop.example.com", "other.example.com", "x.org"}[rng.IntN(3)], Attributes: map[string]string{}}
			attrs := []attribute.KeyValue{attribute.String("http.request.method", req.HTTPMethod), attribute.String("url.path", req.URLPath), attribute.String("server.address", req.Host)}
			if tier := []string{"", "gold", "silver"}[rng.IntN(3)]; tier != "" {
				req.Attributes["tier"] = tier
				attrs = append(attrs, attribute.String("tier", tier))
			}
			wantRule := ""
			for _, r := range want {
				if c := rules.Compile(r); c.Matches(&req) {
					wantRule = r.Name
					break
				}
			}
			if e := s.Explain(params(outID, attrs...)); e.Rule != wantRule {
				t.Fatalf("%d rules, %+v: matched %q, want %q", n, req, e.Rule, wantRule)
			}
		}
	}
}

// TestExpiredRuleIsSkipped: a time-limited rule applies until its
// expire_time and not from then on, whether or not the control plane has
// deleted it yet (or can be reached), in a small rule set and in one the
// index narrows in another way.
func TestExpiredRuleIsSkipped(t *testing.T) {
	for _, n := range []int{0, 100} {
		t.Run(fmt.Sprintf("%d other rules", n), func(t *testing.T) {
			s, clk := newTestSampler(t)
			expire := clk.Now().Add(30 * time.Minute)
			rs := []*pb.Rule{{Name: "debug-checkout", Priority: 1, FixedRate: 1, UrlPath: "/checkout*", ExpireTime: timestamppb.New(expire)}}
			for i := range n {
				rs = append(rs, &pb.Rule{Name: fmt.Sprintf("r%d", i), Priority: 2, UrlPath: fmt.Sprintf("/other%d/*", i)})
			}
			rs = append(rs, &pb.Rule{Name: "checkout", Priority: 3, FixedRate: 0.1, UrlPath: "/checkout*"})
			s.applyRules(rulesFor(1, rs...))
			req := params(outID, attribute.String("url.path", "/checkout/pay"))
			start := clk.Now()
			for _, step := range []struct {
				at   time.Duration
				rule string
			}{{0, "debug-checkout"}, {30*time.Minute - time.Nanosecond, "debug-checkout"}, {30 * time.Minute, "checkout"}, {time.Hour, "checkout"}} {
				clk.Add(start.Add(step.at).Sub(clk.Now()))
				s.extendFresh(clk.Now().Add(time.Minute).UnixNano())
				if e := s.Explain(req); e.Rule != step.rule {
					t.Errorf("%v after the start: rule %q, want %q", step.at, e.Rule, step.rule)
				}
			}
		})
	}
}
