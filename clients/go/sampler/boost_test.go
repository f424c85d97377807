package sampler

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

func boostable(name string, fixed float64) *pb.Rule {
	return &pb.Rule{Name: name, Priority: 1, FixedRate: fixed, ServiceName: "*", SamplingRateBoost: &pb.SamplingRateBoost{MaxRate: 0.5, CooldownWindowMinutes: 5}}
}

// TestBoostApplied: a target's boost replaces the fixed rate until its
// expiry, decided by the fixed-rate path (the span carries the boosted
// rate's threshold); a target without one ends it. A boostable rule's
// unsampled roots are recorded, not dropped, for the span processor.
func TestBoostApplied(t *testing.T) {
	s, clk := newTestSampler(t)
	s.applyRules(rulesFor(1, boostable("r", 0.01)))
	mid := trace.TraceID{9: 0xc0} // inside rates of 1/4 and above
	exp := clk.Now().Add(time.Hour)
	s.applyTargets(targets(1, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.01}))
	if got := s.ShouldSample(params(mid)); got.Decision != sdktrace.RecordOnly {
		t.Fatalf("unboosted: %v, want RecordOnly", got.Decision)
	}
	boost := &pb.SamplingBoost{Rate: 0.5, ExpireTime: timestamppb.New(clk.Now().Add(time.Minute))}
	s.applyTargets(targets(1, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.01, Boost: boost}))
	got := s.ShouldSample(params(mid))
	if got.Decision != sdktrace.RecordAndSample || got.Tracestate.Get("ot") != "th:8" {
		t.Errorf("boosted to 0.5: %v, tracestate %q; want sampled with ot=th:8", got.Decision, got.Tracestate.String())
	}
	if e := s.Explain(params(mid)); !e.Sampled || e.Reason != ReasonFixedRate {
		t.Errorf("Explain while boosted: %+v", e)
	}
	clk.Add(time.Minute)
	if got := s.ShouldSample(params(mid)); got.Decision != sdktrace.RecordOnly {
		t.Errorf("after the boost's expiry: %v, want RecordOnly", got.Decision)
	}
	clk.Add(-time.Second)
	s.applyTargets(targets(1, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: 0.01}))
	if sampled(s, params(mid)) {
		t.Error("a target without a boost left it in force")
	}
	// A rule without a boost still drops.
	s.applyRules(rulesFor(2, &pb.Rule{Name: "r", Priority: 1, FixedRate: 0.01, ServiceName: "*"}))
	if got := s.ShouldSample(params(mid)); got.Decision != sdktrace.Drop {
		t.Errorf("a rule without a boost: %v, want Drop", got.Decision)
	}
}

// TestAnomalyCounts: the span processor counts, per boostable rule, the
// local roots that end, the anomalous ones (HTTP 5xx by either convention,
// status Error) and the anomalous ones sampled; children and other rules'
// spans are not counted; the report carries them and starts again.
func TestAnomalyCounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []Option
		want    *pb.BoostStatistics
		sampled float64
	}{
		{"default predicate, all sampled", nil, &pb.BoostStatistics{TotalCount: 5, AnomalyCount: 3, SampledAnomalyCount: 3}, 1},
		{"default predicate, none sampled", nil, &pb.BoostStatistics{TotalCount: 5, AnomalyCount: 3}, 0},
		{"WithAnomaly", []Option{WithAnomaly(func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "slow" })}, &pb.BoostStatistics{TotalCount: 5, AnomalyCount: 1, SampledAnomalyCount: 1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC))
			s, err := newSampler(append([]Option{WithService("shop-api", ""), WithEndpoint("127.0.0.1:1"), WithClock(clk), WithClientID("c")}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			other := &pb.Rule{Name: "other", Priority: 0, FixedRate: 1, ServiceName: "*", HttpMethod: "POST"}
			s.applyRules(rulesFor(1, boostable("r", tc.sampled), other))
			exp := clk.Now().Add(time.Hour)
			s.applyTargets(targets(1, exp, &pb.SamplingTarget{RuleName: "r", FixedRate: tc.sampled}, &pb.SamplingTarget{RuleName: "other", FixedRate: 1}))
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(s.SpanProcessor()))
			t.Cleanup(func() { tp.Shutdown(context.Background()) })
			tr := tp.Tracer("test")
			end := func(name string, attrs ...attribute.KeyValue) trace.Span {
				ctx, span := tr.Start(context.Background(), name, trace.WithAttributes(attrs...))
				_, child := tr.Start(ctx, "child", trace.WithAttributes(attribute.Int("http.response.status_code", 503)))
				child.End()
				return span
			}
			end("ok", attribute.Int("http.response.status_code", 200)).End()
			end("5xx", attribute.Int("http.response.status_code", 500)).End()
			end("old 5xx", attribute.String("http.status_code", "502")).End()
			slow := end("slow")
			slow.End()
			failed := end("failed")
			failed.SetStatus(codes.Error, "boom")
			failed.End()
			end("other rule", attribute.String("http.request.method", "POST"), attribute.Int("http.response.status_code", 500)).End()
			var got *pb.BoostStatistics
			for _, d := range s.takeReport(false) {
				switch d.GetRuleName() {
				case "r":
					got = d.GetBoost()
				default:
					if d.GetBoost() != nil {
						t.Errorf("rule %s without a boost reports boost counts %v", d.GetRuleName(), d.GetBoost())
					}
				}
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("boost counts (-want +got):\n%s", diff)
			}
			for _, d := range s.takeReport(false) {
				if d.GetRuleName() == "r" && d.GetBoost().GetTotalCount() != 0 {
					t.Errorf("counts not taken: %v", d.GetBoost())
				}
			}
		})
	}
}
