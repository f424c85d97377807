package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

// Bounds of what one report may claim.
const (
	// maxReportSpan is the longest time one report's counts may cover: an
	// SDK that was cut off from the control plane reports the whole time
	// since its last report when it is back.
	maxReportSpan = time.Hour
	// minReportSpan is the shortest: a report sent again at once covers
	// no less, so that a rate is never computed over a blink.
	minReportSpan = 100 * time.Millisecond
	// maxRequestsPerSecond bounds what one instance may report for one rule.
	maxRequestsPerSecond = 10_000_000
	// borrowPerSecond is what an SDK may sample per rule without a quota.
	borrowPerSecond = 1
	// clockSlack widens the time a report covers, for the clocks of
	// replicas and clients, which differ by a little.
	clockSlack = 1.1
	// maxGuarded is how many clients and rules each replica remembers the
	// last receipt of, so that none is replayed (about 40 bytes each).
	maxGuarded = 500_000
)

// reportMetrics count what the report path refuses or cuts.
type reportMetrics struct {
	rejected *prometheus.CounterVec // documents, by code
	clamped  *prometheus.CounterVec // traces, by reason
	receipts *prometheus.CounterVec // receipts taken as none, by reason
}

func newReportMetrics(reg prometheus.Registerer) *reportMetrics {
	m := &reportMetrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_report_documents_rejected_total",
			Help: "Statistics documents of SDK reports not processed, by rejection code (UNKNOWN_RULE, COUNT_TOO_LARGE, ...).",
		}, []string{"code"}),
		clamped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_report_traces_clamped_total",
			Help: "Sampled traces that SDK reports claimed beyond what the client can have sampled (its quota, the borrow limit and the fixed rate in force, over the time since its last report), cut before they count in budgets. reason: over_bound.",
		}, []string{"reason"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_report_receipts_refused_total",
			Help: "Receipts echoed in SDK reports that were not taken (the report counts as a new client's), by reason: malformed, forged, unknown_key, replayed, expired, guard_full.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.rejected, m.clamped, m.receipts)
	return m
}

func receiptReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{receipt.ErrMalformed, "malformed"},
		{receipt.ErrForged, "forged"},
		{receipt.ErrUnknownKey, "unknown_key"},
		{receipt.ErrReplayed, "replayed"},
		{receipt.ErrExpired, "expired"},
		{receipt.ErrFull, "guard_full"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// report processes one client report: every valid document updates its
// rule's fleet ledger and the months of the budgets that count it (one store
// round trip for all of them), and gets back the client's quota, before any
// budget lowers it (see withBudgets). keep finds the claim each document
// replaces — from the receipt the client echoed, or what the server holds
// for it — and keeps the new one, so that transports differ only in the
// keeper they pass. With carry, the usage of a report the store did not take
// is held for later (a stream's client counts the report as sent); without
// it the caller is told, and reports again. seq numbers the report (0:
// none), so that one sent again is billed once; a numbered report is never
// held (its client sends it again until it is acknowledged). applied is the
// rules version the client says it applies (0: it does not say): it runs a
// rule as it is if that is at or after the rule's last edit, and counts so
// in the rule's ledger.
func (s *samplingService) report(ctx context.Context, client, service string, docs []*pb.SamplingStatistics, keep receipt.Keeper, carry bool, seq uint64, applied int64) (*pb.TargetSet, error) {
	now := s.now()
	view := s.catalog.Current()
	budgets := s.catalog.CurrentBudgets()
	out := &pb.TargetSet{RulesVersion: view.Version, ReportInterval: s.interval}
	if s.keys.Cached() == nil {
		// A replica's first report: nothing to open receipts or sign with
		// yet. Later, the keys are refreshed only once the store has
		// answered, so that an outage never makes a report wait twice.
		if _, err := s.keys.Ring(ctx); err != nil {
			return nil, err
		}
	}
	type accepted struct {
		rule                 *rules.Rule
		rate, sampled, fixed float64
		running              int64 // the rule version the client runs, counted; 0: none
	}
	// Sized for every document at once: a report is mostly accepted whole.
	var (
		acc      = make([]accepted, 0, len(docs))
		updates  = make([]store.RateUpdate, 0, len(docs))
		retracts []reservoir.Receipt // what updates retract, made once for all
		usage    []store.UsageIncrement
		hour     int // of the month, for usage
		seen     = make(map[string]bool, len(docs))
		bucket   = s.ledger.Bucket(now)
	)
	reject := func(i int, d *pb.SamplingStatistics, code, msg string) {
		out.Rejected = append(out.Rejected, &pb.RejectedStatistics{RuleName: d.GetRuleName(), Index: int32(i), Code: code, Message: msg})
		s.reports.rejected.WithLabelValues(code).Inc()
	}
	for i, d := range docs {
		if code, msg := s.checkDocument(d, view, seen, now); code != "" {
			reject(i, d, code, msg)
			continue
		}
		rule := view.Rule(d.GetRuleName())
		prev, ok, err := keep.Previous(client, rule.Name, d.GetReceipt(), now)
		if err != nil {
			s.reports.receipts.WithLabelValues(receiptReason(err)).Inc()
		}
		f, _ := budgets.Factors(service, rule, now)
		b := s.bound(d, prev, ok, rule.FixedRate*f, now)
		if float64(d.GetRequestCount()) > maxRequestsPerSecond*b.span.Seconds() {
			// No instance serves this much; a count like it is a bug, and
			// would swamp the fleet's ledger and exhaust budgets.
			reject(i, d, rejectTooLarge, fmt.Sprintf("more than %g requests per second over the %v since the last report", float64(maxRequestsPerSecond), b.span))
			continue
		}
		seen[rule.Name] = true
		sampled := s.clamp(d, b)
		// The rate is over the interval the client says its counts cover,
		// within the span the server knows: the first report after an
		// outage covers one interval, not the whole time since the last
		// target.
		secs := min(max(s.span(d), minReportSpan), b.span).Seconds()
		rate, sampledRate := float64(d.GetRequestCount())/secs, float64(sampled)/secs
		since := rule.SinceVersion()
		runs := applied >= since
		var running int64
		if runs {
			running = since
		}
		acc = append(acc, accepted{rule: rule, rate: rate, sampled: sampledRate, fixed: b.fixedNow, running: running})
		if d.GetRequestCount() > 0 || sampled > 0 {
			names := budgets.Covering(service, rule)
			if usage == nil {
				// The fleet's record, and each budget that covers it.
				usage = make([]store.UsageIncrement, 0, len(docs)*(1+len(names)))
				hour = int(now.Sub(budget.MonthStart(now)) / time.Hour)
			}
			// The fleet's record counts every report, for budgets created
			// later in the month and for coverage (store.FleetUsage).
			usage = append(usage, store.UsageIncrement{Budget: store.FleetUsage, Service: service, Month: now, Hour: hour, Rule: rule.Name, Requests: d.GetRequestCount(), Sampled: sampled})
			for _, name := range names {
				usage = append(usage, store.UsageIncrement{Budget: name, Month: now, Hour: hour, Rule: rule.Name, Requests: d.GetRequestCount(), Sampled: sampled})
			}
		}
		var retract *reservoir.Receipt
		if ok {
			if retracts == nil {
				retracts = make([]reservoir.Receipt, 0, len(docs))
			}
			retracts = append(retracts, prev.Receipt)
			retract = &retracts[len(retracts)-1]
		}
		updates = append(updates, store.RateUpdate{Rule: rule.Name, Add: reservoir.Receipt{Bucket: bucket, Rate: rate, Sampled: sampledRate}, Reservoir: float64(rule.ReservoirSize), Retract: retract, Client: true,
			RuleVersion: since, Applied: runs})
	}
	if len(updates) == 0 {
		return out, nil
	}
	results, err := s.batcher.record(ctx, updates, usage, carry, reportSeq{client, seq})
	if err != nil {
		return nil, err
	}
	// The store answers: a good time to take a key rotation in. (There is a
	// ring already, so this returns one whatever happens.)
	s.keys.Ring(ctx)
	expiry := timestamppb.New(now.Add(s.ledger.QuotaLifetime()))
	out.Targets = make([]*pb.SamplingTarget, len(acc))
	targets := make([]pb.SamplingTarget, len(acc)) // one allocation for all
	for i, a := range acc {
		c := receipt.Claim{Receipt: reservoir.Receipt{Bucket: bucket, Rate: a.rate, Quota: results[i].Quota, Sampled: a.sampled, Applied: a.running}, Issued: now, FixedRate: a.fixed}
		t := &targets[i]
		t.RuleName = a.rule.Name
		t.ReservoirQuota = results[i].Quota
		t.ReservoirQuotaExpiry = expiry
		t.FixedRate = a.rule.FixedRate
		t.Receipt = keep.Keep(client, a.rule.Name, c)
		out.Targets[i] = t
	}
	return out, nil
}

// claimBound is what one statistics document may claim.
type claimBound struct {
	// span is the time the counts cover, as the server knows it: since the
	// target its receipt came with, or, without one, the interval the
	// client says, at most a quota's lifetime.
	span time.Duration
	// fixedNow is the fixed rate in force now, budgets applied.
	fixedNow float64
	// sampled is the most traces the client can have sampled in span.
	sampled float64
}

// bound returns what d may claim. A client samples from its quota (the last
// one it was granted, which its receipt names), borrows at most one trace a
// second when it has none, and samples the fixed rate in force of the rest
// — the higher of the one its last target gave and the one in force now.
// The fixed-rate part allows six standard deviations of chance and of the
// SDK's estimate of busy rules' request counts (a 1-in-16 sample above
// 4,096 an interval), so that an honest report is never cut.
func (s *samplingService) bound(d *pb.SamplingStatistics, prev receipt.Claim, ok bool, fixedNow float64, now time.Time) claimBound {
	b := claimBound{fixedNow: fixedNow}
	var quota float64
	fixed := fixedNow
	if ok {
		b.span = now.Sub(prev.Issued)
		quota, fixed = prev.Quota, max(fixed, prev.FixedRate)
	} else {
		b.span = min(s.span(d), s.ledger.QuotaLifetime())
	}
	b.span = min(max(b.span, minReportSpan), maxReportSpan)
	secs := b.span.Seconds() * clockSlack
	n := float64(d.GetRequestCount())
	sigma := math.Sqrt(fixed*(1-fixed)*n + 15*fixed*fixed*n)
	b.sampled = fixed*n + 6*sigma + (quota+borrowPerSecond)*secs + 2*max(1, quota) + 2
	return b
}

// clamp returns d's sampled count cut to b, counting what it cut.
func (s *samplingService) clamp(d *pb.SamplingStatistics, b claimBound) int64 {
	sampled := d.GetSampledCount()
	if limit := int64(b.sampled); sampled > limit {
		s.reports.clamped.WithLabelValues("over_bound").Add(float64(sampled - limit))
		sampled = limit
	}
	return sampled
}

// renewal answers a stream's report that the store did not take: the last
// quota granted to the client for each rule of the report (as the stream
// holds it, or as the receipt the client echoed says), renewed, and nothing
// for rules it holds none of. Those quotas were granted within the
// reservoir, and the ledger keeps counting them (reservoir.Ledger.Apply's
// reserve), so the fleet stays within it instead of borrowing or falling
// back to the local default; a client the stream knows nothing of gets an
// explicit zero, which it does not borrow on either.
func (s *samplingService) renewal(docs []*pb.SamplingStatistics, held *receipt.Held) *pb.TargetSet {
	view := s.catalog.Current()
	out := &pb.TargetSet{RulesVersion: view.Version, ReportInterval: s.interval}
	expiry := timestamppb.New(s.now().Add(s.ledger.QuotaLifetime()))
	seen := make(map[string]bool, len(docs))
	for _, d := range docs {
		rule := view.Rule(d.GetRuleName())
		if rule == nil || seen[rule.Name] {
			continue
		}
		seen[rule.Name] = true
		c, _ := held.Claim(rule.Name)
		out.Targets = append(out.Targets, &pb.SamplingTarget{
			RuleName:             rule.Name,
			ReservoirQuota:       c.Quota,
			ReservoirQuotaExpiry: expiry,
			FixedRate:            rule.FixedRate,
		})
	}
	return out
}

// span is the length of time a document's counts cover, as its client says.
func (s *samplingService) span(d *pb.SamplingStatistics) time.Duration {
	if d.GetInterval() != nil {
		return d.GetInterval().AsDuration()
	}
	return s.ledger.Interval
}

// checkDocument rejects what no report may hold, whoever sent it; what a
// document may claim depends on its client's last target (bound).
func (s *samplingService) checkDocument(d *pb.SamplingStatistics, view *catalog.View, seen map[string]bool, now time.Time) (code, msg string) {
	switch {
	case view.Rule(d.GetRuleName()) == nil:
		return rejectUnknownRule, fmt.Sprintf("no rule %q at rules version %d", d.GetRuleName(), view.Version)
	case seen[d.GetRuleName()]:
		return rejectDuplicate, "the rule appears more than once in this report"
	case d.GetRequestCount() < 0 || d.GetSampledCount() < 0 || d.GetBorrowCount() < 0:
		return rejectNegative, "counts must not be negative"
	case d.GetSampledCount() > d.GetRequestCount() || d.GetBorrowCount() > d.GetSampledCount():
		return rejectInconsistent, "want borrow_count <= sampled_count <= request_count"
	case d.GetTimestamp() != nil && (!d.GetTimestamp().IsValid() || d.GetTimestamp().AsTime().After(now.Add(maxFutureSkew))):
		return rejectFuture, fmt.Sprintf("timestamp is more than %v ahead of the server's clock", maxFutureSkew)
	case d.GetInterval() != nil && (!d.GetInterval().IsValid() || d.GetInterval().AsDuration() <= 0 || d.GetInterval().AsDuration() > maxReportSpan):
		return rejectInterval, fmt.Sprintf("interval must be positive and at most %v", maxReportSpan)
	case len(d.GetReceipt()) > receipt.MaxTokenLen:
		return rejectReceipt, fmt.Sprintf("a receipt is at most %d characters", receipt.MaxTokenLen)
	}
	return "", ""
}
