package sampler

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/protobuf/proto"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// Sampler is an sdktrace.Sampler driven by the control plane. Its methods are
// safe for concurrent use. Close it to send the last counts and stop its
// background work.
type Sampler struct {
	cfg    config
	now    func() int64 // unix ns
	coarse *coarseClock // nil with an injected clock
	// noSpan is what trace.SpanFromContext returns for a context without a
	// span.
	noSpan trace.Span

	rules atomic.Pointer[ruleSet]
	// freshUntil is when the last word from the control plane runs out: the
	// latest quota expiry or rule set receipt plus two intervals. After it
	// the local default decides.
	freshUntil atomic.Int64
	// interval is the report interval in force, ns.
	interval atomic.Int64

	// waitUntil is when a sampler that has had no rules yet starts to
	// decide by the local default (WithFirstRulesWait).
	waitUntil      int64
	fallbackBucket reservoir.Bucket
	// fallbackRate is the local default's fixed rate, lowered to the
	// Default rule's rate in force when a budget lowers that (applyRules);
	// never nil.
	fallbackRate atomic.Pointer[fixedRate]
	// fallbackCounts counts the spans the local default decided; they are
	// reported with the Default rule's, so budgets see those traces too.
	fallbackCounts counters

	reportMu   sync.Mutex // serialises reports and the runtimes' receipts
	lastReport int64
	// seq numbers reports (pb.Report.seq): the last one taken.
	seq uint64
	// pending is the last report taken, until the control plane
	// acknowledges it. While it is there no new counts are taken: it is sent
	// again as it is, so that the store, which bills a client's reports only
	// in increasing seq, bills it once.
	pending *pendingReport

	conn     *grpc.ClientConn
	client   pb.SamplingServiceClient
	stop     context.CancelFunc
	done     chan struct{}
	flushCtx chan context.Context // Shutdown's context, for the last report
	manualMu sync.Mutex           // serialises Sync and the last report (WithManualReports)
	flushErr error                // of the last report; written before done closes
	closed   sync.Once
	closeErr error
}

// pendingReport is a report taken and not yet acknowledged.
type pendingReport struct {
	seq  uint64
	docs []*pb.SamplingStatistics
	// receipts are those of the last targets when the report was taken,
	// by document, echoed or not; nil: none.
	receipts []string
	taken    int64 // unix ns
	sent     bool  // at least once: it goes again marked as resent
}

// maxResendAge is how long a report is sent again before it is given up:
// well within the hour for which the store remembers a client's last seq
// (store.SeqWindow), after which sending it again could bill it twice.
const maxResendAge = 50 * time.Minute

var _ sdktrace.Sampler = (*Sampler)(nil)

// clockTick is how often the sampler reads the wall clock: 200 wake-ups a
// second, idle or not.
const clockTick = 5 * time.Millisecond

// maxRecvMsgBytes is the largest message the sampler accepts, against
// gRPC's default of 4 MiB: the largest rule set a control plane sends
// (rules.MaxRules rules at maximum field sizes, 7.6 MB) fits with room to
// spare. A message over the limit would end every stream and leave the
// sampler on its local default.
const maxRecvMsgBytes = 16 << 20

// New returns a sampler and starts connecting to the control plane in the
// background; until the first rules arrive it decides with the local default.
// It fails only on bad options.
func New(opts ...Option) (*Sampler, error) {
	s, err := newSampler(opts...)
	if err != nil {
		return nil, err
	}
	if s.cfg.manual {
		return s, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.done = make(chan struct{})
	go s.run(ctx)
	return s, nil
}

// roundRobin spreads the sampler's calls over every address its target
// resolves to (several endpoints, a DNS name with several records): each
// new stream goes to a replica that is up, so one that fails costs only a
// reconnect.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// newSampler builds a sampler without starting its connection loop.
func newSampler(opts ...Option) (*Sampler, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	cfg.finish()
	if vs := rules.ValidateResource("resource attributes", cfg.instance); len(vs) > 0 {
		return nil, fmt.Errorf("sampler: %w", &rules.ValidationError{Violations: vs})
	}
	if cfg.fallbackPerSec < 0 || !(cfg.fallbackRate >= 0 && cfg.fallbackRate <= 1) {
		return nil, fmt.Errorf("sampler: fallback of %v/s + %v is out of range", cfg.fallbackPerSec, cfg.fallbackRate)
	}
	if cfg.firstRules < 0 {
		return nil, fmt.Errorf("sampler: a wait for the first rules of %v is negative", cfg.firstRules)
	}
	// gRPC's own reconnect backoff grows to 120 s: after a long outage the
	// sampler would stay on the local default for minutes after the control
	// plane is back. Cap it at the sampler's backoff.
	reconnect := backoff.DefaultConfig
	reconnect.MaxDelay = cfg.backoffMax
	target, resolve, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	dial := append(append([]grpc.DialOption{
		grpc.WithTransportCredentials(cfg.creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnect, MinConnectTimeout: 20 * time.Second}),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes)),
	}, resolve...), cfg.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	s := &Sampler{
		cfg:      cfg,
		done:     closed(),
		flushCtx: make(chan context.Context, 1),
		conn:     conn,
		client:   pb.NewSamplingServiceClient(conn),
		stop:     func() {},
		noSpan:   trace.SpanFromContext(context.Background()),
		// Numbers start at the time in microseconds, so that a process
		// restarted with the same client id goes on above its last one.
		seq: uint64(time.Now().UnixMicro()),
	}
	if cfg.clock != nil {
		s.now = func() int64 { return cfg.clock.Now().UnixNano() }
	} else {
		s.coarse = newCoarseClock(clockTick)
		s.now = s.coarse.unixNano
	}
	s.fallbackRate.Store(newFixedRate(cfg.fallbackRate))
	now := s.now()
	s.waitUntil = now + int64(cfg.firstRules)
	s.fallbackBucket.SetRate(now, cfg.fallbackPerSec, 0)
	s.interval.Store(int64(10 * time.Second))
	if cfg.interval > 0 {
		s.interval.Store(int64(cfg.interval))
	}
	return s, nil
}

// Description implements sdktrace.Sampler.
func (s *Sampler) Description() string {
	return fmt.Sprintf("ControlPlaneSampler{service=%s,endpoint=%s}", s.cfg.service, s.cfg.target())
}

// Reason says why a span was or was not sampled.
type Reason string

const (
	ReasonParent    Reason = "parent"     // followed the parent span's decision
	ReasonReservoir Reason = "reservoir"  // took a token of this instance's quota
	ReasonBorrowed  Reason = "borrowed"   // no quota yet or an expired one: borrowed the once-a-second trace
	ReasonFixedRate Reason = "fixed_rate" // the trace's randomness fell inside (or outside) the fixed rate
	ReasonFallback  Reason = "fallback"   // no current word from the control plane: the local default decided
)

// ShouldSample implements sdktrace.Sampler. It does not allocate, except
// to rewrite a tracestate that arrives with entries in it.
//
// The tracestate it returns carries OpenTelemetry's threshold (`ot=th:…`)
// exactly when a fixed rate kept the span, so that the Collector counts it
// as 1/rate spans; a span the reservoir, a borrowed trace or the local
// default's per-second trace admitted carries none (erased if its context
// had one), as its count is not a probability. A span that follows its
// parent carries the parent's threshold (see parentResult).
func (s *Sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	var ts trace.TraceState
	// A context without a span yields the no-op span: telling that apart
	// first spares copying its empty span context around, which cost more
	// than a third of a decision.
	if span := trace.SpanFromContext(p.ParentContext); span != s.noSpan {
		psc := span.SpanContext()
		ts = psc.TraceState()
		if psc.IsValid() {
			if ts.Len() != 0 {
				return parentResult(&psc)
			}
			// parentResult's answer for a parent without a tracestate
			// (the usual one), without the call.
			if psc.IsSampled() {
				return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
			}
			return sdktrace.SamplingResult{Decision: sdktrace.Drop}
		}
	}
	now := int64(0)
	if s.coarse != nil {
		now = s.coarse.unixNano() // without the indirect call of s.now
	} else {
		now = s.now()
	}
	if ts.Len() != 0 {
		return s.decideWithTraceState(now, p, ts)
	}
	// A root span's context has no tracestate but in rare set-ups: this
	// path reads none and writes one built beforehand.
	sampled, _, m, byRate := s.decide(now, p.TraceID, RandomnessFromTraceID(p.TraceID), p.Attributes, true)
	switch {
	case byRate != nil:
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: byRate.ts}
	case sampled:
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
	}
	return sdktrace.SamplingResult{Decision: unsampled(m)}
}

// decideWithTraceState is ShouldSample's decision for a root span whose
// context has a tracestate.
func (s *Sampler) decideWithTraceState(now int64, p sdktrace.SamplingParameters, ts trace.TraceState) sdktrace.SamplingResult {
	st, r, otOK := otelState(p.TraceID, ts)
	sampled, _, m, byRate := s.decide(now, p.TraceID, r, p.Attributes, true)
	d := unsampled(m)
	if sampled {
		d = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: d, Tracestate: rootTraceState(ts, st, otOK, byRate)}
}

// otelState reads the `ot` entry of a context's tracestate, and the
// randomness of its trace: the entry's rv if it has one, else the trace
// ID's last 56 bits (an SDK's trace IDs are random). ok is false if the
// entry is malformed; it is then used for nothing.
func otelState(id trace.TraceID, ts trace.TraceState) (st OTelTraceState, r Randomness, ok bool) {
	r = RandomnessFromTraceID(id)
	ot := ts.Get("ot")
	if ot == "" {
		return st, r, true
	}
	st, err := ParseOTelTraceState(ot)
	if err != nil {
		return st, r, false
	}
	if st.HasRandomness {
		r = st.Randomness
	}
	return st, r, true
}

// rootTraceState returns the tracestate of a span this sampler decided:
// ts with byRate's threshold if a fixed rate kept the span, else without
// one. A malformed ot entry is left as it is (no th is written into it);
// if a th cannot be set (the entry would pass 256 characters), the span
// keeps none.
func rootTraceState(ts trace.TraceState, st OTelTraceState, otOK bool, byRate *fixedRate) trace.TraceState {
	switch {
	case byRate != nil && ts.Len() == 0:
		return byRate.ts
	case !otOK:
		return ts
	case byRate != nil:
		if out, err := WithThreshold(ts, byRate.threshold(), true); err == nil {
			return out
		}
	}
	if !st.HasThreshold {
		return ts
	}
	out, _ := WithThreshold(ts, 0, false) // ot is well formed and only shrinks: never fails
	return out
}

// parentResult follows the parent span's decision, as a trace stays whole,
// and its tracestate, as the specification's parent-based samplers do: a
// sampled parent's threshold goes on unless it contradicts the decision
// (R < th: some sampler kept the trace by another rule), in which case it
// is erased, as the span's probability is unknown. A parent without a
// threshold gives a span without one; an unsampled parent's tracestate goes
// on as it is (no span is recorded to be counted).
func parentResult(psc *trace.SpanContext) sdktrace.SamplingResult {
	d, ts := sdktrace.Drop, psc.TraceState()
	if psc.IsSampled() {
		d = sdktrace.RecordAndSample
		if ts.Len() != 0 {
			ts = sampledParentTraceState(psc)
		}
	}
	return sdktrace.SamplingResult{Decision: d, Tracestate: ts}
}

// sampledParentTraceState returns a sampled parent's tracestate without its
// threshold if the threshold contradicts the decision, else as it is.
//
// Every child span of a trace kept with a threshold comes here, so the
// usual answer, "as it is", is reached by reading only th and rv: a
// malformed entry is left as it is too, so the rest of it needs checking
// only before a threshold is erased, which WithThreshold does.
func sampledParentTraceState(psc *trace.SpanContext) trace.TraceState {
	ts := psc.TraceState()
	ot := ts.Get("ot")
	v, ok := memberValue(ot, [2]byte{'t', 'h'})
	if !ok {
		return ts
	}
	st := OTelTraceState{HasThreshold: true}
	var err error
	if st.Threshold, err = ParseThreshold(v); err != nil {
		return ts
	}
	r := RandomnessFromTraceID(psc.TraceID())
	if v, ok := memberValue(ot, [2]byte{'r', 'v'}); ok {
		if r, err = ParseRandomness(v); err != nil {
			return ts
		}
	}
	if _, consistent := ParentThreshold(st, true, r); !consistent {
		ts, _ = WithThreshold(ts, 0, false) // a malformed entry comes back as it is
	}
	return ts
}

// decide runs steps 2-6 of a decision for a trace of randomness r. With
// take false it only looks: no token is taken and nothing is counted.
// byRate is the fixed rate that kept the span, nil if something else
// decided.
func (s *Sampler) decide(now int64, id trace.TraceID, r Randomness, attrs []attribute.KeyValue, take bool) (sampled bool, reason Reason, m *matcher, byRate *fixedRate) {
	set := s.rules.Load()
	if set == nil || now > s.freshUntil.Load() {
		if set == nil && now < s.waitUntil {
			if take { // counted with the Default rule's, as the local default's are
				s.fallbackCounts.add(id[15], id[14], false, false)
			}
			return false, ReasonFallback, nil, nil
		}
		sampled, byRate = s.fallback(now, id, r, take)
		return sampled, ReasonFallback, nil, byRate
	}
	req := request{attrs: attrs, now: now}
	set.scan(&req)
	m = set.match(&req)
	if m == nil {
		sampled, byRate = s.fallback(now, id, r, take)
		return sampled, ReasonFallback, nil, byRate
	}
	rt := m.rt
	borrowed := false
	reason = ReasonFixedRate
	switch {
	case now <= rt.expiry.Load():
		if takeOrPeek(&rt.quota, now, take) {
			sampled, reason = true, ReasonReservoir
		}
	case takeOrPeek(&rt.borrow, now, take):
		sampled, borrowed, reason = true, true, ReasonBorrowed
	}
	if !sampled {
		if fr := rt.rateAt(now); fr.keeps(r) {
			sampled, byRate = true, fr
		}
	}
	if take {
		rt.counters.add(id[15], id[14], sampled, borrowed)
	}
	return sampled, reason, m, byRate
}

func (s *Sampler) fallback(now int64, id trace.TraceID, r Randomness, take bool) (sampled bool, byRate *fixedRate) {
	switch fr := s.fallbackRate.Load(); {
	case takeOrPeek(&s.fallbackBucket, now, take):
		sampled = true
	case fr.keeps(r):
		sampled, byRate = true, fr
	}
	if take {
		s.fallbackCounts.add(id[15], id[14], sampled, false)
	}
	return sampled, byRate
}

func takeOrPeek(b *reservoir.Bucket, now int64, take bool) bool {
	if take {
		return b.Take(now)
	}
	return b.Available(now)
}

// Explanation is the answer to "why was this request traced?".
type Explanation struct {
	Sampled bool
	Reason  Reason
	// Rule is the rule that matched; empty for parent and fallback decisions.
	Rule string
	// RulesVersion is the rules version the decision used, 0 if none yet.
	RulesVersion int64
	// Detail says it in a sentence.
	Detail string
	// FixedRate is the matched rule's fixed rate in force now: the rule's
	// own, as its budgets lower it, or a boost's while one runs.
	FixedRate float64
	// BoostExpiry is when the rule's boost in force ends; zero if none.
	BoostExpiry time.Time
	// Threshold is the `th` that ShouldSample writes in the span's
	// tracestate ("8" at a fixed rate of 1/2), or the parent's that it
	// keeps; empty if the span carries none.
	Threshold string
}

// Explain says what ShouldSample would decide for p now, and why, without
// taking a token or counting the span.
func (s *Sampler) Explain(p sdktrace.SamplingParameters) Explanation {
	psc := trace.SpanContextFromContext(p.ParentContext)
	if psc.IsValid() {
		return Explanation{
			Sampled: psc.IsSampled(), Reason: ReasonParent, Threshold: thresholdOf(parentResult(&psc).Tracestate),
			Detail: fmt.Sprintf("the parent span was %s, and a trace stays whole", sampledWord(psc.IsSampled())),
		}
	}
	now := s.now()
	ts := psc.TraceState()
	st, r, otOK := otelState(p.TraceID, ts)
	sampled, reason, m, byRate := s.decide(now, p.TraceID, r, p.Attributes, false)
	e := Explanation{Sampled: sampled, Reason: reason, Threshold: thresholdOf(rootTraceState(ts, st, otOK, byRate))}
	if set := s.rules.Load(); set != nil {
		e.RulesVersion = set.version
	}
	if m == nil {
		switch {
		case s.rules.Load() == nil && now < s.waitUntil:
			e.Detail = "no rules from the control plane yet, waiting for them before the local default decides"
			return e
		case s.rules.Load() == nil:
			e.Detail = "no rules from the control plane yet"
		case now > s.freshUntil.Load():
			e.Detail = "the last rules and quotas from the control plane have expired"
		default:
			e.Detail = "no rule matched"
		}
		e.Detail += fmt.Sprintf(": the local default (%v/s + %v) %s it", s.cfg.fallbackPerSec, s.cfg.fallbackRate, sampledWord(sampled))
		return e
	}
	e.Rule = m.rule.Name
	e.FixedRate = m.rt.rateAt(now).probability()
	if b := m.rt.boost.Load(); b != nil && now < b.expiry {
		e.BoostExpiry = time.Unix(0, b.expiry).UTC()
	}
	source := "trace ID"
	if st.HasRandomness {
		source = "tracestate's rv"
	}
	switch reason {
	case ReasonReservoir:
		e.Detail = fmt.Sprintf("rule %q matched and this instance's reservoir quota had a token", m.rule.Name)
	case ReasonBorrowed:
		e.Detail = fmt.Sprintf("rule %q matched; this instance has no current quota, so it borrowed its one trace per second", m.rule.Name)
	default:
		why := "its reservoir was used up"
		switch {
		case m.rule.ReservoirSize == 0:
			why = "it has no reservoir"
		case now > m.rt.expiry.Load():
			why = "this instance has no current quota and already borrowed its trace this second"
		}
		e.Detail = fmt.Sprintf("rule %q matched, %s, and the %s fell %s its fixed rate of %.4g", m.rule.Name, why, source, map[bool]string{true: "inside", false: "outside"}[sampled], m.rt.rate.Load().probability())
	}
	return e
}

// thresholdOf returns the th value of a tracestate's ot entry, or "".
func thresholdOf(ts trace.TraceState) string {
	if st, err := ParseOTelTraceState(ts.Get("ot")); err == nil && st.HasThreshold {
		return st.Threshold.TValue()
	}
	return ""
}

func sampledWord(b bool) string {
	if b {
		return "sampled"
	}
	return "dropped"
}

// applyRules installs a rule set received from the control plane.
func (s *Sampler) applyRules(rs *pb.RuleSet) {
	now := s.now()
	rl := make([]rules.Rule, 0, len(rs.GetRules()))
	for _, r := range rs.GetRules() {
		rl = append(rl, rulepb.FromProto(r).Normalize())
	}
	rules.Sort(rl)
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	if s.lastReport == 0 {
		// Counting starts with the first rules: the first report's
		// interval runs from here, not a default interval back.
		s.lastReport = now
	}
	set := buildRuleSet(rs.GetRulesVersion(), rl, s.cfg.service, s.cfg.serviceType, s.cfg.instance, s.rules.Load(), now)
	inForce := make(map[string]*pb.RuleRates, len(rs.GetRatesInForce()))
	for _, r := range rs.GetRatesInForce() {
		inForce[r.GetRuleName()] = r
	}
	fallbackRate, fallbackPerSec := s.cfg.fallbackRate, s.cfg.fallbackPerSec
	for i := range set.matchers {
		m := &set.matchers[i]
		r := inForce[m.rule.Name]
		switch {
		case r != nil:
			// A budget lowers the rule: from the first decision, as
			// targets would have it, and its borrowing with its
			// reservoir. Or this new instance borrows nothing until its
			// first target.
			g := unit(r.GetReservoirFactor())
			m.rt.setFixedRate(r.GetFixedRate())
			m.rt.borrowRate = g
			m.rt.withheld = m.rt.withheld || r.GetFirstBorrowWithheld() && m.rt.expiry.Load() == 0
			if m.rule.Name == rules.DefaultName && (r.GetFixedRate() < m.rule.FixedRate || g < 1) {
				fallbackRate, fallbackPerSec = min(fallbackRate, r.GetFixedRate()), fallbackPerSec*g
			}
		default:
			m.rt.borrowRate = 1
			// A target at this rules version or later already has the
			// fixed rate in force.
			if m.rt.targetVersion < set.version {
				m.rt.setFixedRate(m.rule.FixedRate)
			}
		}
		m.rt.setBorrow(now)
	}
	// The local default, for when these rules expire, traces no more than
	// the Default rule in force.
	s.fallbackRate.Store(newFixedRate(fallbackRate))
	s.fallbackBucket.SetRate(now, fallbackPerSec, 0)
	s.rules.Store(set)
	s.extendFresh(now + 2*s.interval.Load())
}

// unit is x within [0, 1]; NaN is 0.
func unit(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return min(x, 1)
}

// applyTargets installs quotas received from the control plane.
func (s *Sampler) applyTargets(ts *pb.TargetSet) {
	now := s.now()
	if d := ts.GetReportInterval().AsDuration(); d > 0 && s.cfg.interval == 0 {
		s.interval.Store(int64(d))
	}
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	set := s.rules.Load()
	if set == nil {
		return // and there is no report to acknowledge: none is taken before rules
	}
	for _, t := range ts.GetTargets() {
		rt := set.byName[t.GetRuleName()]
		if rt == nil {
			continue
		}
		expiry := t.GetReservoirQuotaExpireTime().AsTime().UnixNano()
		// Spread the first token of a fresh quota over its interval, so a
		// fleet handed tiny quotas at once does not trace in lockstep.
		rt.quota.SetRate(now, t.GetReservoirQuota(), phase(s.cfg.clientID, rt.name))
		rt.expiry.Store(expiry)
		rt.applyBoost(t.GetBoost())
		if rt.withheld {
			rt.withheld = false
			rt.setBorrow(now)
		}
		if ts.GetRulesVersion() >= set.version {
			rt.setFixedRate(t.GetFixedRate())
			rt.targetVersion = ts.GetRulesVersion()
		}
		if r := t.GetReceipt(); r != "" {
			// Targets the server sends unasked (a budget changed) carry
			// none: they answer no report.
			rt.receipt = r
		}
		s.extendFresh(expiry)
	}
	if p := s.pending; p != nil && ts.GetAckedSeq() >= p.seq {
		s.pending = nil
	}
}

func (s *Sampler) extendFresh(until int64) {
	for {
		cur := s.freshUntil.Load()
		if until <= cur || s.freshUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// phase is a stable pseudo-random number in [0, 1) per instance and rule.
func phase(clientID, rule string) float64 {
	h := fnv.New64a()
	h.Write([]byte(clientID + "\x00" + rule))
	return float64(h.Sum64()>>11) / (1 << 53)
}

// nextReport returns the report to send: the last one taken if it is not
// acknowledged yet, as it was, resent once it was sent (with the receipts
// it was taken with, for its bound only: see reportSent), else the counts
// since then, under the next seq. It returns no documents when there are
// no rules to count for yet.
func (s *Sampler) nextReport(echo bool) (seq uint64, docs []*pb.SamplingStatistics, resent bool) {
	now := s.now()
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	if p := s.pending; p != nil {
		if now-p.taken <= int64(maxResendAge) {
			return p.seq, p.docs, p.sent
		}
		var sampled int64
		for _, d := range p.docs {
			sampled += d.GetSampledCount()
		}
		s.cfg.log.Warn("gave up on a report the control plane never acknowledged: it may or may not have been recorded", "seq", p.seq, "sampled", sampled, "age", time.Duration(now-p.taken))
		s.pending = nil
	}
	docs, receipts := s.takeReportLocked(now, echo)
	if len(docs) == 0 {
		return 0, nil, false
	}
	s.seq++
	s.pending = &pendingReport{seq: s.seq, docs: docs, receipts: receipts, taken: now}
	return s.seq, docs, false
}

// reportSent notes that report seq went out (or may have): it keeps its
// counts until acknowledged, and from now on sends them marked as resent,
// with the receipts the report was taken with, echoed or not. The server
// may have retracted those already, and retracting twice would take from
// other instances' share: marked so, they only bound what the report may
// claim, so that a replica that did not handle the first send (the first
// one died) does not cut it as a new client's.
func (s *Sampler) reportSent(seq uint64) {
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	p := s.pending
	if p == nil || p.seq != seq || p.sent {
		return
	}
	p.sent = true
	if p.receipts == nil {
		return
	}
	docs := make([]*pb.SamplingStatistics, len(p.docs))
	for i, d := range p.docs {
		if d.GetReceipt() == p.receipts[i] {
			docs[i] = d
			continue
		}
		c := proto.CloneOf(d)
		c.Receipt = p.receipts[i]
		docs[i] = c
	}
	p.docs, p.receipts = docs, nil
}

// dropPending gives up the report not yet acknowledged, which the control
// plane refused as invalid (err): sent again it would be refused again, and
// no later counts would go out.
func (s *Sampler) dropPending(err error) {
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	if p := s.pending; p != nil {
		s.cfg.log.Warn("the control plane refused a report; its counts are dropped", "seq", p.seq, "err", err)
		s.pending = nil
	}
}

// takeReport is takeReportLocked at the clock's time, for tests.
func (s *Sampler) takeReport(echo bool) []*pb.SamplingStatistics {
	now := s.now()
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	docs, _ := s.takeReportLocked(now, echo)
	return docs
}

// takeReportLocked collects every rule's counts since the last report. echo
// adds the receipts of the last targets: every unary call echoes them, and
// the first report of a stream, so that the server retracts what this
// instance reported on its previous stream. Every report uses them up,
// echoed or not: the server may retract them while handling it, and if its
// answer (the next receipts) never comes, echoing them again would retract
// them twice and take from other instances' share. Without them the old
// figure only ages out. It also returns the receipts the report is taken
// with, by document, echoed or not (nil if there are none), for the
// report's bound if it is sent again (reportSent). The caller holds
// reportMu.
func (s *Sampler) takeReportLocked(now int64, echo bool) (docs []*pb.SamplingStatistics, receipts []string) {
	set := s.rules.Load()
	if set == nil {
		return nil, nil
	}
	span := time.Duration(s.interval.Load())
	if s.lastReport != 0 && now > s.lastReport {
		span = time.Duration(now - s.lastReport)
	}
	s.lastReport = now
	out := make([]*pb.SamplingStatistics, 0, len(set.matchers))
	for i := range set.matchers {
		rt := set.matchers[i].rt
		c := rt.counters.take()
		var boost *pb.BoostStatistics
		if set.matchers[i].rule.Boost != nil {
			boost = rt.anomalies.take()
		}
		if rt.name == rules.DefaultName {
			f := s.fallbackCounts.take()
			c.requests, c.sampled = c.requests+f.requests, c.sampled+f.sampled
		}
		st := &pb.SamplingStatistics{
			RuleName: rt.name, RequestCount: c.requests, SampledCount: c.sampled, BorrowCount: c.borrowed,
			EndTime: timestamp(now), Interval: duration(span), Boost: boost,
		}
		if echo {
			st.Receipt = rt.receipt
		}
		if rt.receipt != "" && receipts == nil {
			receipts = make([]string, len(set.matchers))
		}
		if receipts != nil {
			receipts[i] = rt.receipt
		}
		rt.receipt = ""
		out = append(out, st)
	}
	return out, receipts
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
