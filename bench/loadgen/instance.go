package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// instance is one simulated SDK instance.
type instance struct {
	run    *loadRun
	id     string
	rate   float64 // requests per second on the measured rule
	rules  []string
	client pb.SamplingServiceClient
	rng    *rand.Rand

	quota    reservoir.Bucket
	expiry   atomic.Int64
	quotaNow atomic.Uint64 // the quota's rate, math.Float64bits, for the quota held per second
	borrow   reservoir.Bucket
	// rulesAt is when the first rules came (unix ns): its requests are
	// the rule's from then on, and the first report's counts run from
	// there, and its interval says so, as the SDK's does; a default
	// interval back made the first rate of an instance that reported a
	// second after its start a tenth of its traffic.
	rulesAt  atomic.Int64
	fixed    atomic.Pointer[rateChange] // the fixed rate in force; nil: 0
	cutAt    atomic.Int64               // when the fixed rate in force was first lowered (unix ns); 0: never
	requests atomic.Int64
	sampled  atomic.Int64
	borrowed atomic.Int64

	// The rules version of the rule set held and of the last target
	// applied, as the SDK tracks them: a target at the rules version or
	// later has the fixed rate in force (a budget may have lowered it).
	versionMu     sync.Mutex
	rulesVersion  int64
	targetVersion int64
	// borrowRate and withheld are the SDK's: what the instance may borrow
	// without a quota, and whether it borrows nothing until its first
	// target.
	borrowRate float64
	withheld   bool

	// reported is what the reports sent carried (Send, or the unary call,
	// succeeded); after the final report, all the instance sampled.
	reported counts
	flushed  atomic.Bool // the last report was answered
	// seq is the number of the last report sent, with --numbered, and
	// acked the highest the server acknowledged.
	seq, acked atomic.Uint64

	receipt    string // unary only; the measured rule's
	lastReport time.Time
	sawEdit    bool
}

// counts are one rule's traces.
type counts struct {
	requests, sampled, borrowed atomic.Int64
}

func (c *counts) add(d *pb.SamplingStatistics) {
	c.requests.Add(d.GetRequestCount())
	c.sampled.Add(d.GetSampledCount())
	c.borrowed.Add(d.GetBorrowCount())
}

// fleetCounts are the measured rule's traces across the fleet, by how they
// were sampled. Only simulate writes them; read them once it is done.
type fleetCounts struct {
	requests, reservoir, borrowed, fixed int64
	sampledMeasured                      int64 // while measuring
}

// rateChange is the fixed rate in force since at (unix ns), and the one
// before it: a request simulate plays late, due before the change, is
// decided at the rate then in force, as the SDK would have decided it.
type rateChange struct {
	rate, prev float64
	at         int64
}

// setFixedRate makes rate the fixed rate in force from now (unix ns). The
// caller holds versionMu.
func (in *instance) setFixedRate(now int64, rate float64) {
	old := in.fixed.Load()
	switch {
	case old == nil:
		in.fixed.Store(&rateChange{rate: rate, at: now})
	case old.rate != rate:
		in.fixed.Store(&rateChange{rate: rate, prev: old.rate, at: now})
		if rate < old.rate {
			in.cutAt.CompareAndSwap(0, now)
		}
	}
}

// threshold is the fixed rate in force at ns as the SDK decides by it; ok
// is false for a rate that keeps nothing.
func (in *instance) threshold(ns int64) (th sampler.Threshold, ok bool) {
	c := in.fixed.Load()
	switch {
	case c == nil:
		return sampler.RateThreshold(0)
	case ns < c.at:
		return sampler.RateThreshold(c.prev)
	}
	return sampler.RateThreshold(c.rate)
}

// fixedRate is the probability the fixed rate in force keeps a trace with.
func (in *instance) fixedRate() float64 {
	if th, ok := in.threshold(math.MaxInt64); ok {
		return th.Probability()
	}
	return 0
}

// randomTrace returns the randomness of a random trace ID, as the SDK
// reads it.
func randomTrace(rng *rand.Rand) sampler.Randomness {
	var id trace.TraceID
	binary.BigEndian.PutUint64(id[8:], rng.Uint64())
	return sampler.RandomnessFromTraceID(id)
}

// decision is how a simulated instance decided one request.
type decision int

const (
	notSampled decision = iota
	byReservoir
	byBorrow
	byFixedRate
)

// member is a simulated instance of either kind (this project's SDK, an
// X-Ray SDK). Methods are safe for concurrent use.
type member interface {
	// load is the instance's requests per second on the measured rule.
	load() float64
	// heldSince is when it got its rules (unix ns; 0: not yet): its
	// requests are the rule's from then on.
	heldSince() int64
	// decide decides one request at ns (unix nanoseconds) as the SDK it
	// plays does, and counts it for its next report.
	decide(ns int64, rng *rand.Rand) decision
	// tallies are what its reports carried, whether its last report was
	// answered, and the fixed rate in force.
	tallies() (reported *counts, flushed bool, fixedRate float64)
}

func (in *instance) load() float64    { return in.rate }
func (in *instance) heldSince() int64 { return in.rulesAt.Load() }

// decide decides as the SDK does: from the reservoir quota while it is
// current, else the one borrowed trace a second, else by the trace's
// randomness at the fixed rate in force (the rule's, or the last target's,
// which a budget may have lowered), with the SDK's own threshold and
// comparison.
func (in *instance) decide(ns int64, rng *rand.Rand) decision {
	d := notSampled
	switch {
	case ns <= in.expiry.Load() && in.quota.Take(ns):
		d = byReservoir
	case ns > in.expiry.Load() && in.borrow.Take(ns):
		d = byBorrow
		in.borrowed.Add(1)
	default:
		if th, ok := in.threshold(ns); ok && th.ShouldSample(randomTrace(rng)) {
			d = byFixedRate
		}
	}
	in.requests.Add(1)
	if d != notSampled {
		in.sampled.Add(1)
	}
	return d
}

func (in *instance) tallies() (*counts, bool, float64) {
	return &in.reported, in.flushed.Load(), in.fixedRate()
}

// traces are the counts as the result shows them.
func (fc *fleetCounts) traces() Traces {
	return Traces{Requests: fc.requests, Reservoir: fc.reservoir, Borrowed: fc.borrowed, FixedRate: fc.fixed,
		Sampled: fc.reservoir + fc.borrowed + fc.fixed}
}

func (fc *fleetCounts) add(d decision, measured bool) {
	fc.requests++
	switch d {
	case byReservoir:
		fc.reservoir++
	case byBorrow:
		fc.borrowed++
	case byFixedRate:
		fc.fixed++
	}
	if d != notSampled && measured {
		fc.sampledMeasured++
	}
}

// tallyMembers totals what the members' reports carried, counts those
// whose last report was not answered, and gives the range of fixed rates
// in force.
func tallyMembers[M member](ms []M) (rep Reported, failed int, lo, hi float64) {
	lo = math.Inf(1)
	for _, m := range ms {
		c, flushed, rate := m.tallies()
		rep.Requests += c.requests.Load()
		rep.Sampled += c.sampled.Load()
		rep.Borrowed += c.borrowed.Load()
		if !flushed {
			failed++
		}
		lo, hi = min(lo, rate), max(hi, rate)
	}
	if len(ms) == 0 {
		lo = 0
	}
	return rep, failed, lo, hi
}

// simulate plays request arrivals for every instance that holds its rules,
// one step a tick, each decided by the instance as its SDK does (a new
// instance borrows nothing while its first borrow is withheld), and a last
// step when it is stopped. It counts the fleet's traces (and the X-Ray
// instances' apart), the requests and the sampled, reservoir-sampled and
// borrowed traces per second since the instances started, and the quotas
// the SDK instances hold at each second's start. Each step plays what is
// due by the clock (pacer), so a step it is late for, or a tick the ticker
// dropped, is made up; the ticks it played and its lag show how busy the
// machine was.
func (r *loadRun) simulate(ctx context.Context) {
	t := time.NewTicker(r.cfg.tick)
	defer t.Stop()
	p := &player{run: r, members: r.members(), xrayFrom: len(r.instances), rng: rand.New(rand.NewPCG(1, 2)), lastSec: -1}
	for {
		select {
		case <-ctx.Done():
			p.step(time.Now())
			r.played = p.pace.played
			r.asked = p.asked()
			return
		case tick := <-t.C:
			r.ticks++
			r.lag = max(r.lag, time.Since(tick))
			p.step(time.Now())
		}
	}
}

// pacer paces the requests by the clock: a step plays each member's
// requests due since the step before, or since the member got its rules if
// that was later, however late the step is. A fixed count per tick
// delivered less than the rate asked whenever the machine was too busy for
// every tick (the ticker drops those it is late for): 7 % less in a loaded
// run's first seconds, which a budget that spends its first second
// measures (docs/BENCHMARKS.md).
type pacer struct {
	played int64 // unix ns up to which requests were played; 0: none yet
}

// due is the time due at now (unix ns) from a member that got its rules
// at heldSince (0: not yet): its requests of the time from now-due to now.
func (p *pacer) due(now, heldSince int64) time.Duration {
	if heldSince == 0 {
		return 0
	}
	return time.Duration(max(0, now-max(p.played, heldSince)))
}

// advance marks the requests due up to now played.
func (p *pacer) advance(now int64) { p.played = max(p.played, now) }

// player plays the members' requests, step by step; simulate's.
type player struct {
	run      *loadRun
	members  []member
	xrayFrom int // members from this index are X-Ray instances
	rng      *rand.Rand
	pace     pacer
	lastSec  int
	at       []int64 // a step's arrival times of one member, reused
}

// step plays the requests due at now: for each member a Poisson count of
// its rate over the time due, arriving at uniform times within it (the
// Poisson arrivals given their count), each decided and counted at its
// time, so that a late step decides its requests as they would have been
// when due, not at the rates in force when it is played.
func (p *player) step(now time.Time) {
	r, ns := p.run, now.UnixNano()
	if sec := r.second(ns); sec > p.lastSec && sec < len(r.heldSec) {
		// Once a second, the quotas the instances hold (current
		// ones): what the reservoir should give that second.
		p.lastSec = sec
		var held float64
		for _, in := range r.instances {
			if ns <= in.expiry.Load() {
				held += math.Float64frombits(in.quotaNow.Load())
			}
		}
		r.heldSec[sec] = held
	}
	for i, m := range p.members {
		due := p.pace.due(ns, m.heldSince())
		n := poisson(p.rng, m.load()*due.Seconds())
		p.at = p.at[:0]
		for range n {
			p.at = append(p.at, ns-int64(p.rng.Float64()*float64(due)))
		}
		slices.Sort(p.at)
		for _, at := range p.at {
			r.count(m.decide(at, p.rng), at, i >= p.xrayFrom)
		}
	}
	p.pace.advance(ns)
}

// second is the second since the instances' launch that ns falls in; -1
// before.
func (r *loadRun) second(ns int64) int {
	start := r.measuring.Load()
	if start == 0 || ns < start {
		return -1
	}
	return int((ns - start) / int64(time.Second))
}

// count counts a request decided at ns (unix ns); simulate's.
func (r *loadRun) count(d decision, ns int64, xray bool) {
	sec := r.second(ns)
	r.fleet.add(d, sec >= 0)
	if xray {
		r.xfleet.add(d, sec >= 0)
	}
	if sec < 0 || sec >= len(r.sampledSec) {
		return
	}
	r.requestsSec[sec]++
	switch d {
	case byReservoir:
		r.perSec[sec].Add(1)
	case byBorrow:
		r.borrowedSec[sec]++
	}
	if d != notSampled {
		r.sampledSec[sec].Add(1)
	}
}

// asked is the requests the members were asked for up to the last step:
// each one's rate over the time it has held its rules.
func (p *player) asked() float64 {
	var sum float64
	for _, m := range p.members {
		if since := m.heldSince(); since != 0 && since < p.pace.played {
			sum += m.load() * float64(p.pace.played-since) / float64(time.Second)
		}
	}
	return sum
}

func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 30 {
		return max(0, int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// statistics takes this instance's counts since its last report.
func (in *instance) statistics(now time.Time, unary bool) []*pb.SamplingStatistics {
	span := in.run.reportInterval()
	switch at := in.rulesAt.Load(); {
	case !in.lastReport.IsZero():
		span = now.Sub(in.lastReport)
	case at != 0 && now.UnixNano() > at:
		span = time.Duration(now.UnixNano() - at)
	}
	in.lastReport = now
	b, s := in.borrowed.Swap(0), in.sampled.Swap(0)
	q := in.requests.Swap(0)
	s, b = min(s, q), min(b, s, q)
	docs := []*pb.SamplingStatistics{{
		RuleName: in.rules[0], RequestCount: q, SampledCount: s, BorrowCount: b,
		EndTime: timestamppb.New(now), Interval: durationpb.New(span),
	}}
	if unary {
		docs[0].Receipt = in.receipt
	}
	for _, name := range in.rules[1:] {
		docs = append(docs, &pb.SamplingStatistics{RuleName: name, EndTime: timestamppb.New(now), Interval: durationpb.New(span)})
	}
	return docs
}

// giveBack returns the counts of a report that was not sent to the next
// one, as the SDK does.
func (in *instance) giveBack(docs []*pb.SamplingStatistics) {
	d := docs[0]
	in.requests.Add(d.GetRequestCount())
	in.sampled.Add(d.GetSampledCount())
	in.borrowed.Add(d.GetBorrowCount())
}

func (in *instance) applyTargets(ts *pb.TargetSet) {
	if d := ts.GetReportInterval().AsDuration(); d > 0 {
		in.run.setInterval(d)
	}
	for _, t := range ts.GetTargets() {
		if t.GetRuleName() != in.rules[0] {
			continue
		}
		now := time.Now().UnixNano()
		in.quota.SetRate(now, t.GetReservoirQuota(), in.rng.Float64())
		in.quotaNow.Store(math.Float64bits(t.GetReservoirQuota()))
		in.expiry.Store(t.GetReservoirQuotaExpireTime().AsTime().UnixNano())
		in.versionMu.Lock()
		if in.withheld {
			in.withheld = false
			in.setBorrow(now)
		}
		if ts.GetRulesVersion() >= in.rulesVersion {
			in.setFixedRate(now, t.GetFixedRate())
			in.targetVersion = ts.GetRulesVersion()
		}
		in.versionMu.Unlock()
		if t.GetReceipt() != "" {
			in.receipt = t.GetReceipt()
		}
	}
}

// applyRules takes the measured rule's rates from a rule set, as the SDK
// does: those in force when a budget lowers them (the fixed rate, and
// borrowing scaled by the reservoir factor), else the rule's fixed rate,
// unless a target at this rules version or later already gave the one in
// force.
func (in *instance) applyRules(rs *pb.RuleSet) {
	version := rs.GetRulesVersion()
	var inForce *pb.RuleRates
	for _, r := range rs.GetRatesInForce() {
		if r.GetRuleName() == in.rules[0] {
			inForce = r
		}
	}
	now := time.Now().UnixNano()
	for _, r := range rs.GetRules() {
		if r.GetName() != in.rules[0] {
			continue
		}
		in.versionMu.Lock()
		in.rulesVersion = version
		switch {
		case inForce != nil:
			in.setFixedRate(now, inForce.GetFixedRate())
			in.borrowRate = min(1, max(0, inForce.GetReservoirFactor()))
			in.withheld = in.withheld || inForce.GetFirstBorrowWithheld() && in.expiry.Load() == 0
		default:
			in.borrowRate = 1
			if in.targetVersion < version {
				in.setFixedRate(now, r.GetFixedRate())
			}
		}
		in.setBorrow(now)
		in.versionMu.Unlock()
		in.rulesAt.CompareAndSwap(0, now)
	}
}

// setBorrow sets the borrowing bucket as the SDK does. The caller holds
// versionMu.
func (in *instance) setBorrow(now int64) {
	rate := in.borrowRate
	if in.withheld {
		rate = 0
	}
	in.borrow.SetRate(now, rate, 0)
}

func (in *instance) sawRules(rs *pb.RuleSet) {
	in.applyRules(rs)
	edit := in.run.editVer.Load()
	if in.sawEdit || edit == 0 || rs.GetRulesVersion() < edit {
		return
	}
	in.sawEdit = true
	d := time.Duration(time.Now().UnixNano() - in.run.editAt.Load())
	in.run.propMu.Lock()
	in.run.prop = append(in.run.prop, d)
	in.run.propMu.Unlock()
}

// nextSeq numbers a report with --numbered: 0 (not numbered) without.
func (in *instance) nextSeq() uint64 {
	if !in.run.cfg.numbered {
		return 0
	}
	return in.seq.Add(1)
}

// ack records a report acknowledged: the highest seq so far.
func (in *instance) ack(seq uint64) {
	for {
		old := in.acked.Load()
		if seq <= old || in.acked.CompareAndSwap(old, seq) {
			return
		}
	}
}

// errFlushed ends an instance once its last report is answered.
var errFlushed = errors.New("flushed")

func (in *instance) loop(ctx context.Context, ready chan<- struct{}) {
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			ready <- struct{}{}
		}
	}
	for ctx.Err() == nil {
		var err error
		if in.run.cfg.mode == "stream" {
			err = in.stream(ctx, signal)
		} else {
			err = in.unary(ctx, signal)
		}
		if errors.Is(err, errFlushed) {
			in.flushed.Store(true)
			break
		}
		if err != nil && ctx.Err() == nil {
			in.run.errs.Add(1)
			sleep(ctx, 100*time.Millisecond+time.Duration(in.rng.Int64N(int64(time.Second))))
		}
	}
	signal()
}

func (in *instance) stream(ctx context.Context, ready func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := in.client.StreamSampling(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: in.id, ServiceName: "loadgen"}}}); err != nil {
		return err
	}
	var sentAt, answers atomic.Int64
	var sent int64 // reports sent on this stream; the server answers each, in order
	targets := make(chan struct{}, 1)
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	// The receiver ends with the stream: wait for it, so that nothing of
	// this stream is counted after the instance's loop returns.
	defer func() {
		cancel()
		<-recvDone
	}()
	go func() {
		defer close(recvDone)
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if rs := m.GetRules(); rs != nil {
				in.sawRules(rs)
				ready()
				continue
			}
			if ts := m.GetTargets(); ts != nil {
				in.ack(ts.GetAckedSeq())
				in.applyTargets(ts)
				answers.Add(1)
				in.run.recordReport(time.Duration(time.Now().UnixNano() - sentAt.Load()))
				select {
				case targets <- struct{}{}:
				default:
				}
			}
		}
	}()
	// As the SDK's: the first report about a second after the stream
	// opens (at most an interval), then one every interval, each ±10 %.
	next := time.NewTimer(jitter(min(firstReport, in.run.reportInterval())))
	if in.run.cfg.closedLoop {
		next.Reset(time.Millisecond)
	}
	defer next.Stop()
	send := func() error {
		docs := in.statistics(time.Now(), false)
		sentAt.Store(time.Now().UnixNano())
		if err := st.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs, Seq: in.nextSeq()}}}); err != nil {
			in.giveBack(docs)
			return err
		}
		sent++
		in.reported.add(docs[0])
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return err
		case <-in.run.flush:
			// The end: one last report, with everything counted since
			// the one before, and its answer (and any before it).
			if err := send(); err != nil {
				return err
			}
			for answers.Load() < sent {
				select {
				case <-targets:
				case err := <-recvErr:
					return err
				case <-ctx.Done():
					return nil
				}
			}
			return errFlushed
		case <-targets:
			if in.run.cfg.closedLoop {
				if err := send(); err != nil {
					return err
				}
			}
		case <-next.C:
			if err := send(); err != nil {
				return err
			}
			if !in.run.cfg.closedLoop {
				next.Reset(jitter(in.run.reportInterval()))
			}
		}
	}
}

func (in *instance) unary(ctx context.Context, ready func()) error {
	resp, err := in.client.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "loadgen"})
	if err != nil {
		return err
	}
	in.sawRules(&pb.RuleSet{RulesVersion: resp.GetRulesVersion(), Rules: resp.GetRules(), RatesInForce: resp.GetRatesInForce()})
	held := resp.GetRulesVersion()
	ready()
	// The SDK reports at once after its first rules, then every interval.
	for ctx.Err() == nil {
		final := isClosed(in.run.flush)
		docs := in.statistics(time.Now(), true)
		start := time.Now()
		seq := in.nextSeq()
		out, err := in.client.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: in.id, ServiceName: "loadgen", Statistics: docs, Seq: seq})
		if err != nil {
			in.giveBack(docs)
			return err
		}
		in.ack(seq) // an OK answer acknowledges it
		in.reported.add(docs[0])
		in.run.recordReport(time.Since(start))
		in.applyTargets(&pb.TargetSet{Targets: out.GetTargets(), ReportInterval: out.GetReportInterval(), RulesVersion: out.GetRulesVersion()})
		if out.GetRulesVersion() > held {
			// Newer rules than the instance holds (the run's own, if
			// the replica had not loaded them yet): fetch them, as an
			// SDK does.
			rr, err := in.client.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "loadgen", KnownRulesVersion: held})
			if err != nil {
				return err
			}
			if !rr.GetUnchanged() {
				held = rr.GetRulesVersion()
				in.sawRules(&pb.RuleSet{RulesVersion: held, Rules: rr.GetRules(), RatesInForce: rr.GetRatesInForce()})
			}
		}
		if final {
			return errFlushed
		}
		if !in.run.cfg.closedLoop {
			select {
			case <-ctx.Done():
			case <-in.run.flush:
			case <-time.After(jitter(in.run.reportInterval())):
			}
		}
	}
	return nil
}

// firstReport is the SDK's delay of a stream's first report.
const firstReport = time.Second

// jitter is the SDK's: d ± 10 %. (The package's generator: an instance's
// own is not safe to share between its stream's two goroutines.)
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (r *loadRun) recordReport(d time.Duration) {
	if r.measuring.Load() == 0 {
		return
	}
	r.reports.Add(1)
	r.latMu.Lock()
	r.lat = append(r.lat, d)
	r.latMu.Unlock()
}

func (r *loadRun) reportInterval() time.Duration {
	if r.cfg.interval > 0 {
		return r.cfg.interval
	}
	if d := time.Duration(r.intervalNs.Load()); d > 0 {
		return d
	}
	return 10 * time.Second
}

func (r *loadRun) setInterval(d time.Duration) {
	if r.cfg.interval == 0 {
		r.intervalNs.Store(int64(d))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
