package sampler

import (
	"context"
	"strconv"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// Adaptive sampling (docs/BOOSTS.md): for rules with a sampling_rate_boost
// the sampler counts, per rule, the local root spans that end, the
// anomalous ones and the anomalous ones sampled, reports them with the
// rule's statistics, and samples at a boost's rate while the control plane
// hands one out.

// WithAnomaly replaces the predicate that says a local root span is
// anomalous, for the counts of rules with a sampling_rate_boost. Default:
// DefaultAnomaly.
func WithAnomaly(f func(sdktrace.ReadOnlySpan) bool) Option {
	return func(c *config) { c.anomaly = f }
}

// DefaultAnomaly is ADOT's: an HTTP response status of 500 or more
// (http.response.status_code, or the older http.status_code), or a span
// status of Error.
func DefaultAnomaly(s sdktrace.ReadOnlySpan) bool {
	if s.Status().Code == codes.Error {
		return true
	}
	for _, kv := range s.Attributes() {
		if kv.Key != "http.response.status_code" && kv.Key != "http.status_code" {
			continue
		}
		switch kv.Value.Type() {
		case attribute.INT64:
			return kv.Value.AsInt64() >= 500
		case attribute.STRING:
			n, err := strconv.Atoi(kv.Value.AsString())
			return err == nil && n >= 500
		}
	}
	return false
}

// boostRate is a boost in force for a rule (SamplingTarget.boost): its
// rate replaces the fixed rate until expiry. Immutable.
type boostRate struct {
	rate   *fixedRate
	expiry int64 // unix ns
}

// anomalyCounts are a rule's boost statistics since its last report.
type anomalyCounts struct {
	total, anomalies, sampled atomic.Int64
}

// take returns the counts and starts again from zero.
func (c *anomalyCounts) take() *pb.BoostStatistics {
	return &pb.BoostStatistics{TotalCount: c.total.Swap(0), AnomalyCount: c.anomalies.Swap(0), SampledAnomalyCount: c.sampled.Swap(0)}
}

// rateAt is the fixed rate a decision at now uses: the boost's while it is
// in force and higher, else the rule's.
func (rt *runtime) rateAt(now int64) *fixedRate {
	fr := rt.rate.Load()
	if b := rt.boost.Load(); b != nil && now < b.expiry && b.rate.cut < fr.cut {
		return b.rate
	}
	return fr
}

// applyBoost installs a target's boost, or none.
func (rt *runtime) applyBoost(b *pb.SamplingBoost) {
	if b.GetRate() <= 0 || b.GetExpireTime() == nil {
		rt.boost.Store(nil)
		return
	}
	rt.boost.Store(&boostRate{rate: newFixedRate(min(b.GetRate(), 1)), expiry: b.GetExpireTime().AsTime().UnixNano()})
}

// SpanProcessor returns the processor that counts the anomalies of rules
// with a sampling_rate_boost: register it with the tracer provider
// (sdktrace.WithSpanProcessor) beside the exporter's. Without it those
// rules report no anomaly counts and are never boosted. For such rules the
// sampler records the local roots it does not sample (RecordOnly, never
// exported) so that the processor sees them end.
func (s *Sampler) SpanProcessor() sdktrace.SpanProcessor { return anomalyProcessor{s} }

type anomalyProcessor struct{ s *Sampler }

func (anomalyProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd counts a local root span for the rule its attributes match, if
// that rule has a sampling_rate_boost.
func (p anomalyProcessor) OnEnd(span sdktrace.ReadOnlySpan) {
	if parent := span.Parent(); parent.IsValid() && !parent.IsRemote() {
		return
	}
	set := p.s.rules.Load()
	if set == nil {
		return
	}
	req := request{attrs: span.Attributes(), now: span.StartTime().UnixNano()}
	set.scan(&req)
	m := set.match(&req)
	if m == nil || m.rule.Boost == nil {
		return
	}
	c := &m.rt.anomalies
	c.total.Add(1)
	anomaly := p.s.cfg.anomaly
	if anomaly == nil {
		anomaly = DefaultAnomaly
	}
	if anomaly(span) {
		c.anomalies.Add(1)
		if span.SpanContext().IsSampled() {
			c.sampled.Add(1)
		}
	}
}

func (anomalyProcessor) Shutdown(context.Context) error   { return nil }
func (anomalyProcessor) ForceFlush(context.Context) error { return nil }

// unsampled is the decision for a root span that m's rule did not sample:
// recorded, not sampled, for a rule with a sampling_rate_boost, so that
// the span processor sees it end; else dropped.
func unsampled(m *matcher) sdktrace.SamplingDecision {
	if m != nil && m.rule.Boost != nil {
		return sdktrace.RecordOnly
	}
	return sdktrace.Drop
}
