package main

import (
	"context"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/reservoir"
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
	borrow   reservoir.Bucket
	requests atomic.Int64
	sampled  atomic.Int64
	borrowed atomic.Int64

	receipt    string // unary only; the measured rule's
	lastReport time.Time
	sawEdit    bool
}

// simulate plays request arrivals for every instance, one step at a time,
// spending quotas exactly as the SDK does.
func (r *loadRun) simulate(ctx context.Context) {
	rng := rand.New(rand.NewPCG(1, 2))
	t := time.NewTicker(r.cfg.tick)
	defer t.Stop()
	for i := range r.instances {
		r.instances[i].borrow.SetRate(time.Now().UnixNano(), 1, 0)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ns := now.UnixNano()
			sec := -1
			if start := r.measuring.Load(); start != 0 {
				sec = int((ns - start) / int64(time.Second))
			}
			step := r.cfg.tick.Seconds()
			for _, in := range r.instances {
				n := poisson(rng, in.rate*step)
				for k := 0; k < n; k++ {
					in.requests.Add(1)
					switch {
					case ns <= in.expiry.Load() && in.quota.Take(ns):
						in.sampled.Add(1)
						if sec >= 0 && sec < len(r.perSec) {
							r.perSec[sec].Add(1)
						}
					case ns > in.expiry.Load() && in.borrow.Take(ns):
						in.sampled.Add(1)
						in.borrowed.Add(1)
					case rng.Float64() < 0.01:
						in.sampled.Add(1)
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
	if !in.lastReport.IsZero() {
		span = now.Sub(in.lastReport)
	}
	in.lastReport = now
	b, s := in.borrowed.Swap(0), in.sampled.Swap(0)
	q := in.requests.Swap(0)
	s, b = min(s, q), min(b, s, q)
	docs := []*pb.SamplingStatistics{{
		RuleName: in.rules[0], RequestCount: q, SampledCount: s, BorrowCount: b,
		Timestamp: timestamppb.New(now), Interval: durationpb.New(span),
	}}
	if unary {
		docs[0].Receipt = in.receipt
	}
	for _, name := range in.rules[1:] {
		docs = append(docs, &pb.SamplingStatistics{RuleName: name, Timestamp: timestamppb.New(now), Interval: durationpb.New(span)})
	}
	return docs
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
		in.expiry.Store(t.GetReservoirQuotaExpiry().AsTime().UnixNano())
		in.receipt = t.GetReceipt()
	}
}

func (in *instance) sawRules(rs *pb.RuleSet) {
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
	var sentAt atomic.Int64
	targets := make(chan struct{}, 1)
	recvErr := make(chan error, 1)
	go func() {
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
				in.applyTargets(ts)
				in.run.recordReport(time.Duration(time.Now().UnixNano() - sentAt.Load()))
				select {
				case targets <- struct{}{}:
				default:
				}
			}
		}
	}()
	// Reports start at a random phase of the interval, as a real fleet's do.
	next := time.NewTimer(time.Duration(in.rng.Int64N(int64(in.run.reportInterval()))) + time.Millisecond)
	if in.run.cfg.closedLoop {
		next.Reset(time.Millisecond)
	}
	defer next.Stop()
	send := func() error {
		docs := in.statistics(time.Now(), false)
		sentAt.Store(time.Now().UnixNano())
		return st.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs}}})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return err
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
				next.Reset(in.run.reportInterval())
			}
		}
	}
}

func (in *instance) unary(ctx context.Context, ready func()) error {
	resp, err := in.client.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "loadgen"})
	if err != nil {
		return err
	}
	in.sawRules(&pb.RuleSet{RulesVersion: resp.GetRulesVersion()})
	ready()
	sleep(ctx, time.Duration(in.rng.Int64N(int64(in.run.reportInterval()))))
	for ctx.Err() == nil {
		docs := in.statistics(time.Now(), true)
		start := time.Now()
		out, err := in.client.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: in.id, ServiceName: "loadgen", Statistics: docs})
		if err != nil {
			return err
		}
		in.run.recordReport(time.Since(start))
		in.applyTargets(&pb.TargetSet{Targets: out.GetTargets(), ReportInterval: out.GetReportInterval(), RulesVersion: out.GetRulesVersion()})
		if !in.run.cfg.closedLoop {
			sleep(ctx, in.run.reportInterval())
		}
	}
	return nil
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
