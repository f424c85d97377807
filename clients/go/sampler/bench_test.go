package sampler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// benchRules returns n rules for service "shop": rule-i looks at a method
// and the path "/api/vi/items/*", every fifth also at an attribute, and the
// Default rule last.
func benchRules(n int) []*pb.Rule {
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	var rs []*pb.Rule
	for i := 0; i < n-1; i++ {
		r := &pb.Rule{
			Name: fmt.Sprintf("rule-%02d", i), Priority: int32(i + 1), ServiceName: "shop*",
			HttpMethod: methods[i%4], UrlPath: fmt.Sprintf("/api/v%d/items/*", i), FixedRate: 0.05, ReservoirSize: 5,
		}
		if i%5 == 0 {
			r.Attributes = map[string]string{"tier": "gold"}
		}
		rs = append(rs, r)
	}
	rs = append(rs, &pb.Rule{Name: "Default", Priority: 10000, FixedRate: 0.05, ReservoirSize: 1})
	return rs
}

// BenchmarkShouldSample times a decision with 50 rules, by rule 41 (after
// 40 others failed).
func BenchmarkShouldSample(b *testing.B) {
	benchShouldSample(b, 50)
}

// BenchmarkRules is BenchmarkShouldSample for rule sets of several sizes,
// the request matching rule n×4/5 (rule 41 of 50, 801 of 1,000).
func BenchmarkRules(b *testing.B) {
	for _, n := range []int{50, 200, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { benchShouldSample(b, n) })
	}
}

func benchShouldSample(b *testing.B, n int) {
	s, err := newSampler(WithService("shop-api", ""), WithEndpoint("127.0.0.1:1"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rs := benchRules(n)
	s.applyRules(&pb.RuleSet{RulesVersion: 1, Rules: rs})
	var targets []*pb.SamplingTarget
	for _, r := range rs {
		targets = append(targets, &pb.SamplingTarget{RuleName: r.GetName(), ReservoirQuota: 2, FixedRate: 0.05, ReservoirQuotaExpireTime: timestamppb.New(time.Now().Add(time.Hour))})
	}
	s.applyTargets(&pb.TargetSet{RulesVersion: 1, Targets: targets, ReportInterval: durationpb.New(10 * time.Second)})
	s.freshUntil.Store(time.Now().Add(time.Hour).UnixNano())
	probe := n * 4 / 5
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", "GET"),
		attribute.String("url.path", fmt.Sprintf("/api/v%d/items/42", probe)),
		attribute.String("server.address", "shop.example.com"),
		attribute.String("tier", "gold"),
	}
	if e := s.Explain(sdktrace.SamplingParameters{ParentContext: context.Background(), Name: "GET /api", Kind: trace.SpanKindServer, Attributes: attrs}); e.Rule != fmt.Sprintf("rule-%02d", probe) {
		b.Fatalf("the request matched %q (%s), want rule-%02d", e.Rule, e.Detail, probe)
	}
	ids := make([]trace.TraceID, 1024)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	ctx := context.Background()
	var start atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pbb *testing.PB) {
		// Goroutines start apart in ids, as cores serve different traces.
		i := int(start.Add(97))
		for pbb.Next() {
			s.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: ids[i&1023], Name: "GET /api", Kind: trace.SpanKindServer, Attributes: attrs})
			i++
		}
	})
}

// BenchmarkShouldSampleParent times a span that follows its sampled
// parent, whose tracestate has no ot entry, or a threshold the decision
// keeps.
func BenchmarkShouldSampleParent(b *testing.B) {
	s, err := newSampler(WithService("shop-api", ""), WithEndpoint("127.0.0.1:1"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	id := trace.TraceID{0: 1, 9: 0xff, 15: 1}
	for _, c := range []struct{ name, ts string }{{"tracestate=none", ""}, {"tracestate=th", "vendor=a,ot=th:8;p:8"}} {
		b.Run(c.name, func(b *testing.B) {
			ts, err := trace.ParseTraceState(c.ts)
			if err != nil {
				b.Fatal(err)
			}
			sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
			p := sdktrace.SamplingParameters{ParentContext: trace.ContextWithRemoteSpanContext(context.Background(), sc), TraceID: id, Name: "GET /api", Kind: trace.SpanKindServer}
			if r := s.ShouldSample(p); r.Tracestate.String() != c.ts {
				b.Fatalf("tracestate %q, want %q", r.Tracestate.String(), c.ts)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.ShouldSample(p)
			}
		})
	}
}
