package sampling

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
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
	// ClockSlack widens the time a report covers, for the clocks of
	// replicas and clients, which differ by a little.
	ClockSlack = 1.1
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
			Help: "Sampled traces that SDK reports claimed beyond what the client can have sampled (its quota, the borrow limit and the fixed rate in force, over the time its report covers), cut before they count in budgets; counted once the report is recorded. reason: over_bound.",
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

// Report processes one client report: every valid document updates its
// rule's fleet ledger and the months of the budgets that count it (one store
// round trip for all of them), and gets back the client's quota, before any
// budget lowers it (see WithBudgets). keep finds the claim each document
// replaces — from the receipt the client echoed, or what the server holds
// for it — and keeps the new one, so that transports differ only in the
// keeper they pass. With r.Carry, the usage of a report the store did not
// take is held for later (a stream's client counts the report as sent);
// without it the caller is told, and reports again. r.Seq numbers the
// report (0: none), so that one sent again is billed once; a numbered report
// is never held (its client sends it again until it is acknowledged).
// r.Resent marks a report sent again with the receipts it was taken with,
// which bound it and retract nothing (receipt.ResendKeeper).
// r.Applied is the rules version the client says it applies (0: it does not
// say): it runs a rule as it is if that is at or after the rule's last edit,
// and counts so in the rule's ledger.
func (s *Core) Report(ctx context.Context, r Report, keep receipt.Keeper) (TargetSet, error) {
	client, service, docs, carry, seq, applied := r.Client, r.Service, r.Statistics, r.Carry, r.Seq, r.Applied
	// A report sent again: its receipts bound it and retract nothing
	// (receipt.ResendKeeper); a keeper that cannot take them so takes none.
	var resent receipt.ResendKeeper
	if r.Resent {
		resent, _ = keep.(receipt.ResendKeeper)
	}
	now := s.now()
	view := s.catalog.Current()
	budgets := s.catalog.CurrentBudgets()
	out := TargetSet{RulesVersion: view.Version, Interval: s.interval}
	if s.keys.Cached() == nil {
		// A replica's first report: nothing to open receipts or sign with
		// yet. Later, the keys are refreshed only once the store has
		// answered, so that an outage never makes a report wait twice.
		if _, err := s.keys.Ring(ctx); err != nil {
			return TargetSet{}, err
		}
	}
	type accepted struct {
		rule                 *rules.Rule
		rate, sampled, fixed float64
		factors              [2]float64 // the budgets' (fixed rate, reservoir), for the boost's sizing
		service              string
		running              int64     // the rule version the client runs, counted; 0: none
		until                time.Time // the end of the time the counts cover (bound)
		held                 float64   // the quota of the claim replaced; 0: none
	}
	// Sized for every document at once: a report is mostly accepted whole.
	// A one-document report's slices share one allocation (oneDocument),
	// and its acc stays on the stack.
	var (
		accOne   [1]accepted
		acc      = accOne[:0]
		one      *oneDocument
		updates  []store.RateUpdate
		retracts []reservoir.Receipt // what updates retract, made once for all
		usage    []store.UsageIncrement
		hour     = -1 // of the month, for usage; -1: not yet known
		seen     = make(map[string]bool, len(docs))
		cut      int64 // sampled traces cut by the bounds
		bucket   = s.ledger.Bucket(now)
		// boostDocs are the accepted documents' own boost counts and
		// r.Boosts.
		boostDocs []boostDoc
		// quiet are the enforcing budgets this report brings their first
		// traffic to (catalog.Budgets.Quiet), to wake once it is
		// recorded; none in most reports.
		quiet []string
	)
	if len(docs) == 1 {
		one = r.Buffers.take()
		updates, retracts, usage = one.updates[:0], one.retracts[:0], one.usage[:0]
	} else {
		acc = make([]accepted, 0, len(docs))
		updates = make([]store.RateUpdate, 0, len(docs))
	}
	reject := func(i int, d *Statistics, code, msg string) {
		out.Rejected = append(out.Rejected, Rejection{Rule: d.Rule, Index: i, Code: code, Message: msg})
		s.reports.rejected.WithLabelValues(code).Inc()
	}
	for i := range docs {
		d := &docs[i]
		if code, msg := s.checkDocument(d, view, seen, now); code != "" {
			reject(i, d, code, msg)
			continue
		}
		rule := view.Rule(d.Rule)
		var (
			prev receipt.Claim
			ok   bool
			err  error
		)
		switch {
		case !r.Resent:
			prev, ok, err = keep.Previous(client, rule.Name, d.Receipt, now)
		case resent != nil:
			prev, ok, err = resent.Resent(client, rule.Name, d.Receipt, now)
		}
		if err != nil {
			s.reports.receipts.WithLabelValues(receiptReason(err)).Inc()
		}
		svc := serviceOf(service, rule)
		f, g := budgets.Factors(svc, rule, now)
		b := s.bound(d, prev, ok, rule.FixedRate*f, rule.FixedRate, now)
		if float64(d.Requests) > maxRequestsPerSecond*b.span.Seconds() {
			// No instance serves this much; a count like it is a bug, and
			// would swamp the fleet's ledger and exhaust budgets.
			reject(i, d, RejectTooLarge, fmt.Sprintf("more than %g requests per second over the %v since the last report", float64(maxRequestsPerSecond), b.span))
			continue
		}
		seen[rule.Name] = true
		if d.Boost != nil {
			boostDocs = append(boostDocs, boostDoc{BoostStatistics{Rule: rule.Name, BoostCounts: *d.Boost, Interval: d.Interval}, i})
		}
		sampled := clamp(d, b)
		cut += d.Sampled - sampled
		// The rate is over the interval the client says its counts cover,
		// within the span the server knows: the first report after an
		// outage covers one interval, not the whole time since the last
		// target.
		secs := min(max(s.span(d), minReportSpan), b.span).Seconds()
		rate, sampledRate := float64(d.Requests)/secs, float64(sampled)/secs
		since := rule.SinceVersion()
		runs := applied >= since
		var running int64
		if runs {
			running = since
		}
		acc = append(acc, accepted{rule: rule, rate: rate, sampled: sampledRate, fixed: b.fixedNow, factors: [2]float64{f, g}, service: svc, running: running, until: b.until, held: prev.Quota})
		if d.Requests > 0 || sampled > 0 {
			names := budgets.Covering(svc, rule)
			if hour < 0 {
				hour = int(now.Sub(budget.MonthStart(now)) / time.Hour)
			}
			if usage == nil {
				// The fleet's record, and each budget that covers it.
				usage = make([]store.UsageIncrement, 0, len(docs)*(1+len(names)))
			}
			// The fleet's record counts every report, for budgets created
			// later in the month and for coverage (store.FleetUsage).
			usage = append(usage, store.UsageIncrement{Budget: store.FleetUsage, Service: svc, Month: now, Hour: hour, Rule: rule.Name, Requests: d.Requests, Sampled: sampled})
			for _, name := range names {
				usage = append(usage, store.UsageIncrement{Budget: name, Month: now, Hour: hour, Rule: rule.Name, Requests: d.Requests, Sampled: sampled})
				if s.waker != nil && d.Requests > 0 && budgets.Quiet(name, now) && !slices.Contains(quiet, name) {
					quiet = append(quiet, name)
				}
			}
		}
		var retract *reservoir.Receipt
		if ok && !prev.BoundOnly {
			if retracts == nil {
				retracts = make([]reservoir.Receipt, 0, len(docs))
			}
			retracts = append(retracts, prev.Receipt)
			retract = &retracts[len(retracts)-1]
		}
		updates = append(updates, store.RateUpdate{Rule: rule.Name, Add: reservoir.Receipt{Bucket: bucket, Rate: rate, Sampled: sampledRate}, Reservoir: float64(rule.ReservoirSize), Retract: retract, Client: true,
			RuleVersion: since, Applied: runs})
	}
	for j, b := range r.Boosts {
		boostDocs = append(boostDocs, boostDoc{b, j})
	}
	counts := s.boostCounts(boostDocs, view, func(rj Rejection) {
		out.BoostRejected = append(out.BoostRejected, rj)
		s.reports.rejected.WithLabelValues(rj.Code).Inc()
	})
	var boostable []*rules.Rule // none in most reports: no allocation then
	for _, a := range acc {
		if a.rule.Boost != nil {
			boostable = append(boostable, a.rule)
		}
	}
	// The boost counts go to the store beside the ledger's batch, and the
	// states come back for the targets' boosts.
	boosts := s.recordBoosts(ctx, now, counts, boostable)
	if boosts != nil {
		defer boosts.wait()
	}
	if len(updates) == 0 {
		return out, nil
	}
	var (
		results      []store.RateResult
		billedBefore bool
		err          error
	)
	if one != nil {
		p := &one.pending
		*p = pendingReport{updates: updates, usage: usage, seq: reportSeq{client, seq}, carry: carry, wake: p.wake}
		results, billedBefore, err = s.batcher.recordPending(ctx, p)
		if err != nil {
			// A report whose caller gave up may still be in a batch at
			// the store, which goes on with p.
			r.Buffers.drop(one)
		}
	} else {
		results, billedBefore, err = s.batcher.record(ctx, updates, usage, carry, reportSeq{client, seq})
	}
	if cut > 0 && (err == nil && !billedBefore || carry && seq == 0) {
		// Counted once the report is billed, or its usage held to be
		// (an unnumbered stream report): a numbered report that failed
		// comes again, and is bounded again then; one the store had
		// recorded before (sent again after its answer was lost) was
		// billed, and its cut counted, where it was first handled.
		s.reports.clamped.WithLabelValues("over_bound").Add(float64(cut))
	}
	if err != nil {
		return TargetSet{}, err
	}
	// The budgets' first traffic is recorded: their decisions, made
	// without it, lower nothing until they are decided again, which the
	// controller does now rather than at its next interval.
	for _, name := range quiet {
		s.waker.Wake(name)
	}
	// The store answers: a good time to take a key rotation in. (There is a
	// ring already, so this returns one whatever happens.) The report's
	// time will do to tell whether one is due, rather than another read of
	// the clock (issue 17): one that fell due while the report waited for
	// the store is taken at the next.
	s.keys.RingAt(ctx, now)
	expiry := now.Add(s.ledger.QuotaLifetime())
	if one != nil && len(acc) == 1 {
		out.Targets = one.targets[:]
	} else {
		out.Targets = make([]Target, len(acc))
	}
	for i, a := range acc {
		bst := s.boostFor(ctx, boosts, a.rule, a.service, budgets, a.factors, now)
		// The client samples at the boost's rate until it expires: what
		// it may claim next is bounded by that rate (claimBound), so that
		// the boost's traces count in budgets.
		c := receipt.Claim{Receipt: reservoir.Receipt{Bucket: bucket, Rate: a.rate, Quota: results[i].Quota, Sampled: a.sampled, Applied: a.running}, Issued: a.until,
			FixedRate: bst.RateInForce(a.fixed, now), Overlap: s.overlap(a.held, results[i].Quota, a.until, now)}
		out.Targets[i] = Target{
			Boost:     bst,
			Rule:      a.rule.Name,
			Quota:     results[i].Quota,
			Expiry:    expiry,
			FixedRate: a.rule.FixedRate,
			Receipt:   keep.Keep(client, a.rule.Name, c),
		}
	}
	return out, nil
}

// oneDocument is what a report of one statistics document, the usual
// kind, keeps on the heap, in one allocation rather than one for each
// slice and one for the batcher's record of it (issue 17: allocation was a
// fifth of what a report cost the server). usage has room for the fleet's
// record and one budget's; more go to a slice of their own.
type oneDocument struct {
	pending  pendingReport
	updates  [1]store.RateUpdate
	retracts [1]reservoir.Receipt
	usage    [2]store.UsageIncrement
	targets  [1]Target
}

// ReportBuffers is memory that Report takes a oneDocument from (see
// Report.Buffers): two, in turn, so that the targets of the last call stay
// as they were while the next one fills the other.
type ReportBuffers struct {
	docs [2]*oneDocument
	next int
}

// take returns a zeroed oneDocument; a nil b makes one.
func (b *ReportBuffers) take() *oneDocument {
	if b == nil {
		return new(oneDocument)
	}
	b.next ^= 1
	d := b.docs[b.next]
	if d == nil {
		d = new(oneDocument)
		b.docs[b.next] = d
	} else {
		// The batcher's wake channel, signalled once a report and
		// empty after it, goes on to the next.
		wake := d.pending.wake
		*d = oneDocument{}
		d.pending.wake = wake
	}
	return d
}

// drop forgets d, which others may still use: the next take of its turn
// makes a new one.
func (b *ReportBuffers) drop(d *oneDocument) {
	if b == nil {
		return
	}
	for i := range b.docs {
		if b.docs[i] == d {
			b.docs[i] = nil
		}
	}
}

// serviceOf is the service a document counts for in budgets: the report's,
// or for a client that names none (X-Ray's), the rule's own ServiceName as
// it is written: a budget scoped to "shop" sees the reports of a rule for
// "shop", and one scoped to "shop-*" those of rules for "shop-*" and
// "shop-cart" alike.
func serviceOf(service string, r *rules.Rule) string {
	if service == "" {
		return r.ServiceName
	}
	return service
}

// claimBound is what one statistics document may claim.
type claimBound struct {
	// span is the time the counts may cover: the interval the client says,
	// within what its last claim leaves (see bound), or, without a claim,
	// at most a quota's lifetime.
	span time.Duration
	// until is the end of the time the counts cover, as the claim that
	// answers them records it (receipt.Claim.Issued).
	until time.Time
	// fixedNow is the fixed rate in force now, budgets applied.
	fixedNow float64
	// sampled is the most traces the client can have sampled in span.
	sampled float64
}

// bound returns what d may claim. A client samples from its quota (the last
// one it was granted, which its claim names), borrows at most one trace a
// second when it has none, and samples the fixed rate in force of the rest
// — the higher of the one its last target gave and the one in force now.
// The fixed-rate part allows six standard deviations of chance and of the
// SDK's estimate of busy rules' request counts (a 1-in-16 sample above
// 4,096 an interval), so that an honest report is never cut; the claim's
// overlap allows for a quota that fell, which the client ran on until the
// answer that lowered it arrived.
//
// The time a report covers is the interval its client says, within the
// time its chain of claims leaves: each claim records the end of the time
// its report covered (Issued), the previous claim's end plus that
// interval, and the next report may cover at most the time from there to
// now, plus maxLead. So an honest report is bounded by the time its counts
// were taken over, whenever and wherever it arrives: one held back by a
// store outage, or the one after it, which covers the outage's time
// although it follows a claim made a moment before; one that reaches a
// replica whose clock is behind the one that made its claim (maxLead is
// the skew allowed). And a chain never claims more than the time it
// spans, plus maxLead once: a client that says longer intervals than it
// waits is cut as before.
//
// A report without a claim (a new client's first) may have been sampled
// at the rule's own fixed rate, own, rather than the one in force now: its
// rule set can have come before a budget lowered the rate, which it
// sampled at until the cut reached it (a budget is cut at its first
// traffic, which another client's first report can bring: Options.Waker).
func (s *Core) bound(d *Statistics, prev receipt.Claim, ok bool, fixedNow, own float64, now time.Time) claimBound {
	b := claimBound{fixedNow: fixedNow, until: now}
	var quota, overlap float64
	fixed := fixedNow
	if ok {
		// A client that does not say its interval (X-Ray's) covers the
		// time since its claim's end.
		said := d.Interval
		if said == 0 {
			said = max(s.span(d), now.Sub(prev.Issued))
		}
		cover := min(said, now.Add(s.maxLead()).Sub(prev.Issued), maxReportSpan)
		// The chain moves on by what the counts cover, and at least a
		// millisecond, so that the replicas' guards see its claims in
		// order (receipt.Guard).
		b.until = prev.Issued.Add(max(cover, time.Millisecond))
		b.span = cover
		quota, fixed, overlap = prev.Quota, max(fixed, prev.FixedRate), prev.Overlap
	} else {
		fixed = max(fixed, own)
		lifetime := s.ledger.QuotaLifetime()
		b.span = min(s.span(d), lifetime)
		// A new chain ends where the client says it took its counts,
		// within a quota's lifetime before now: a report sent again
		// after a reconnect that took long, and the next one, whose
		// counts run from then.
		if !d.Time.IsZero() {
			b.until = now.Add(-min(max(now.Sub(d.Time), 0), lifetime))
		}
	}
	b.span = min(max(b.span, minReportSpan), maxReportSpan)
	secs := b.span.Seconds() * ClockSlack
	n := float64(d.Requests)
	sigma := math.Sqrt(fixed*(1-fixed)*n + 15*fixed*fixed*n)
	b.sampled = fixed*n + 6*sigma + (quota+borrowPerSecond)*secs + overlap + 2*max(1, quota) + 2
	return b
}

// overlap is what a client may sample after until on the quota it held
// before its new claim grants it another: it runs on held until the answer
// reaches it, from until to now, when the answer leaves, and then the
// answer's way, which a loaded replica or client can make a good part of
// a second (a report interval is allowed for it). Only the part of held
// above granted counts: the next bound allows granted throughout.
func (s *Core) overlap(held, granted float64, until, now time.Time) float64 {
	if held <= granted {
		return 0
	}
	late := max(now.Sub(until), 0) + max(s.interval, minReportSpan)
	return (held - granted) * min(late, maxReportSpan).Seconds() * ClockSlack
}

// maxLead is how far ahead of a replica's clock a chain of claims may run:
// a quota's lifetime, for the clocks of replicas, which may differ by up to
// a report interval (the ledger's buckets need that much, see
// docs/RELIABILITY.md), and for the time between when a client takes its
// counts and when a replica handles them.
func (s *Core) maxLead() time.Duration { return s.ledger.QuotaLifetime() }

// clamp returns d's sampled count cut to b.
func clamp(d *Statistics, b claimBound) int64 {
	return min(d.Sampled, int64(b.sampled))
}

// Renewal answers a stream's report that the store did not take: the last
// quota granted to the client for each rule of the report (as the stream
// holds it, or as the receipt the client echoed says), renewed, and nothing
// for rules it holds none of. Those quotas were granted within the
// reservoir, and the ledger keeps counting them (reservoir.Ledger.Apply's
// reserve), so the fleet stays within it instead of borrowing or falling
// back to the local default; a client the stream knows nothing of gets an
// explicit zero, which it does not borrow on either.
func (s *Core) Renewal(docs []Statistics, held *receipt.Held) TargetSet {
	view := s.catalog.Current()
	out := TargetSet{RulesVersion: view.Version, Interval: s.interval}
	expiry := s.now().Add(s.ledger.QuotaLifetime())
	seen := make(map[string]bool, len(docs))
	for _, d := range docs {
		rule := view.Rule(d.Rule)
		if rule == nil || seen[rule.Name] {
			continue
		}
		seen[rule.Name] = true
		c, _ := held.Claim(rule.Name)
		out.Targets = append(out.Targets, Target{
			Rule:      rule.Name,
			Quota:     c.Quota,
			Expiry:    expiry,
			FixedRate: rule.FixedRate,
		})
	}
	return out
}

// span is the length of time a document's counts cover, as its client says.
func (s *Core) span(d *Statistics) time.Duration {
	if d.Interval != 0 {
		return d.Interval
	}
	return s.ledger.Interval
}

// checkDocument rejects what no report may hold, whoever sent it; what a
// document may claim depends on its client's last target (bound).
func (s *Core) checkDocument(d *Statistics, view *catalog.View, seen map[string]bool, now time.Time) (code, msg string) {
	switch {
	case view.Rule(d.Rule) == nil:
		return RejectUnknownRule, fmt.Sprintf("no rule %q at rules version %d", d.Rule, view.Version)
	case seen[d.Rule]:
		return RejectDuplicate, "the rule appears more than once in this report"
	case d.Requests < 0 || d.Sampled < 0 || d.Borrowed < 0:
		return RejectNegative, "counts must not be negative"
	case d.Sampled > d.Requests || d.Borrowed > d.Sampled:
		return RejectInconsistent, "want borrow_count <= sampled_count <= request_count"
	case d.Time.After(now.Add(MaxFutureSkew)):
		return RejectFuture, fmt.Sprintf("timestamp is more than %v ahead of the server's clock", MaxFutureSkew)
	case d.Interval < 0 || d.Interval > maxReportSpan:
		return RejectInterval, fmt.Sprintf("interval must be positive and at most %v", maxReportSpan)
	case len(d.Receipt) > receipt.MaxTokenLen:
		return RejectReceipt, fmt.Sprintf("a receipt is at most %d characters", receipt.MaxTokenLen)
	}
	return "", ""
}
