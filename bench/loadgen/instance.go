package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
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
	hasRules atomic.Bool // requests are the rule's once the instance holds it
	// rulesAt is when the first rules came (unix ns): the first report's
	// counts run from there, and its interval says so, as the SDK's does;
	// a default interval back made the first rate of an instance that
	// reported a second after its start a tenth of its traffic.
	rulesAt  atomic.Int64
	fixed    atomic.Uint64 // the fixed rate in force, math.Float64bits
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

func (in *instance) setFixedRate(rate float64) { in.fixed.Store(math.Float64bits(rate)) }

// threshold is the fixed rate in force as the SDK decides by it; ok is
// false for a rate that keeps nothing.
func (in *instance) threshold() (th sampler.Threshold, ok bool) {
	return sampler.RateThreshold(math.Float64frombits(in.fixed.Load()))
}

// fixedRate is the probability the fixed rate in force keeps a trace with.
func (in *instance) fixedRate() float64 {
	if th, ok := in.threshold(); ok {
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
	// holdsRules says whether it has its rules (requests are the rule's
	// from then on).
	holdsRules() bool
	// decide decides one request at ns (unix nanoseconds) as the SDK it
	// plays does, and counts it for its next report.
	decide(ns int64, rng *rand.Rand) decision
	// tallies are what its reports carried, whether its last report was
	// answered, and the fixed rate in force.
	tallies() (reported *counts, flushed bool, fixedRate float64)
}

func (in *instance) load() float64    { return in.rate }
func (in *instance) holdsRules() bool { return in.hasRules.Load() }

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
		if th, ok := in.threshold(); ok && th.ShouldSample(randomTrace(rng)) {
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
// one step at a time, each decided by the instance as its SDK does (a new
// instance borrows nothing while its first borrow is withheld). It counts
// the fleet's traces (and the X-Ray instances' apart), the sampled,
// reservoir-sampled and borrowed ones per second since the instances
// started, and the quotas the SDK instances hold at each second's start.
// A step it is late for is played whole all the same; a step it missed
// (the ticker drops them) is not, and shows as fewer ticks than the run
// had time for, and lag.
func (r *loadRun) simulate(ctx context.Context) {
	rng := rand.New(rand.NewPCG(1, 2))
	t := time.NewTicker(r.cfg.tick)
	defer t.Stop()
	members := make([]member, 0, len(r.instances)+len(r.xinstances))
	for _, in := range r.instances {
		members = append(members, in)
	}
	for _, x := range r.xinstances {
		members = append(members, x)
	}
	xrayFrom := len(r.instances)
	lastSec := -1
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ns := now.UnixNano()
			r.ticks++
			r.lag = max(r.lag, time.Since(now))
			sec := -1
			if start := r.measuring.Load(); start != 0 {
				sec = int((ns - start) / int64(time.Second))
			}
			if sec > lastSec && sec < len(r.heldSec) {
				// Once a second, the quotas the instances hold (current
				// ones): what the reservoir should give that second.
				lastSec = sec
				var held float64
				for _, in := range r.instances {
					if ns <= in.expiry.Load() {
						held += math.Float64frombits(in.quotaNow.Load())
					}
				}
				r.heldSec[sec] = held
			}
			step := r.cfg.tick.Seconds()
			for i, m := range members {
				n := poisson(rng, m.load()*step)
				if n == 0 || !m.holdsRules() {
					continue
				}
				for k := 0; k < n; k++ {
					d := m.decide(ns, rng)
					r.fleet.add(d, sec >= 0)
					if i >= xrayFrom {
						r.xfleet.add(d, sec >= 0)
					}
					if d == byReservoir && sec >= 0 && sec < len(r.perSec) {
						r.perSec[sec].Add(1)
					}
					if d == byBorrow && sec >= 0 && sec < len(r.borrowedSec) {
						r.borrowedSec[sec]++
					}
					if d != notSampled && sec >= 0 && sec < len(r.sampledSec) {
						r.sampledSec[sec].Add(1)
					}
				}
			}
		}
	}
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
			in.setFixedRate(t.GetFixedRate())
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
			in.setFixedRate(inForce.GetFixedRate())
			in.borrowRate = min(1, max(0, inForce.GetReservoirFactor()))
			in.withheld = in.withheld || inForce.GetFirstBorrowWithheld() && in.expiry.Load() == 0
		default:
			in.borrowRate = 1
			if in.targetVersion < version {
				in.setFixedRate(r.GetFixedRate())
			}
		}
		in.setBorrow(now)
		in.versionMu.Unlock()
		in.rulesAt.CompareAndSwap(0, now)
		in.hasRules.Store(true)
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
