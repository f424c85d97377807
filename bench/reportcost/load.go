package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// target is one server under load.
type target struct {
	name  string
	proc  *child
	rules []string      // the rules each report names
	redis *redis.Client // the store's Redis, whose CPU is read too; nil for none
}

// window is what one measured window saw.
type window struct {
	reports   int64
	wall      time.Duration
	server    time.Duration // CPU time of the server process
	driver    time.Duration // of this process
	redis     time.Duration // of Redis, if the target has one
	respBytes int64         // size of the targets messages received, summed
	errors    int64         // streams that failed
}

// loadOptions shape the load.
type loadOptions struct {
	streams, conns  int
	warmup, measure time.Duration
}

// during, if not nil, runs while the window is measured and ends it; it
// must return after about measure.
type during func(ctx context.Context) error

// load runs closed-loop streams against t: each stream sends a hello, waits
// for its rules, then sends a report as soon as the targets of the last one
// arrive. After the warm-up it reads the CPU time of the server, of this
// process and of Redis, and again at the end of the window.
func load(ctx context.Context, t target, o loadOptions, d during) (window, error) {
	var w window
	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		c, err := grpc.NewClient(t.proc.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return w, err
		}
		defer c.Close()
		conns[i] = c
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		reports, respBytes, failed atomic.Int64
		wg                         sync.WaitGroup
		ready                      = make(chan struct{}, o.streams)
		firstErr                   = make(chan error, 1)
	)
	for i := range o.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := pb.NewSamplingServiceClient(conns[i%len(conns)])
			id := fmt.Sprintf("rc-%d-%d", os.Getpid(), i)
			// A stream runs until it fails: only a failure before the
			// window's end counts.
			err := stream(ctx, client, id, t.rules, ready, &reports, &respBytes)
			if ctx.Err() == nil {
				failed.Add(1)
				select {
				case firstErr <- fmt.Errorf("stream %s: %w", id, err):
				default:
				}
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	for range o.streams {
		select {
		case <-ready:
		case err := <-firstErr:
			return w, err
		case <-ctx.Done():
			return w, ctx.Err()
		}
	}
	if err := sleep(ctx, o.warmup); err != nil {
		return w, err
	}
	type reading struct {
		at                     time.Time
		reports, bytes         int64
		server, driver, redisT time.Duration
	}
	read := func() (reading, error) {
		r := reading{at: time.Now(), reports: reports.Load(), bytes: respBytes.Load()}
		var err error
		if r.server, err = cpuTime(t.proc.pid()); err != nil {
			return r, err
		}
		if r.driver, err = cpuTime(os.Getpid()); err != nil {
			return r, err
		}
		if t.redis != nil {
			if r.redisT, err = redisCPU(ctx, t.redis); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	before, err := read()
	if err != nil {
		return w, err
	}
	if d != nil {
		err = d(ctx)
	} else {
		err = sleep(ctx, o.measure)
	}
	if err != nil {
		return w, err
	}
	after, err := read()
	if err != nil {
		return w, err
	}
	w = window{
		reports: after.reports - before.reports, wall: after.at.Sub(before.at),
		server: after.server - before.server, driver: after.driver - before.driver, redis: after.redisT - before.redisT,
		respBytes: after.bytes - before.bytes, errors: failed.Load(),
	}
	if w.errors > 0 {
		return w, <-firstErr
	}
	return w, nil
}

// stream is one closed-loop SDK stream: it counts each targets message that
// answers a report.
func stream(ctx context.Context, c pb.SamplingServiceClient, id string, rules []string, ready chan<- struct{}, reports, respBytes *atomic.Int64) error {
	st, err := c.StreamSampling(ctx)
	if err != nil {
		return err
	}
	hello := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: id, ServiceName: "reportcost"}}}
	if err := st.Send(hello); err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if m.GetRules() != nil {
			break
		}
	}
	ready <- struct{}{}
	last := time.Now()
	for {
		now := time.Now()
		docs := make([]*pb.SamplingStatistics, len(rules))
		for i, name := range rules {
			docs[i] = &pb.SamplingStatistics{RuleName: name, RequestCount: 100, SampledCount: 2, BorrowCount: 0,
				EndTime: timestamppb.New(now), Interval: durationpb.New(max(now.Sub(last), time.Millisecond))}
		}
		last = now
		if err := st.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs}}}); err != nil {
			return err
		}
		// A rule set may come first (a rules change), or targets unasked
		// (a budget change): only targets answer.
		for {
			m, err := st.Recv()
			if err != nil {
				return err
			}
			if ts := m.GetTargets(); ts != nil {
				if len(ts.GetTargets()) != len(rules) {
					return fmt.Errorf("%d targets for %d rules (rejected: %v)", len(ts.GetTargets()), len(rules), ts.GetRejected())
				}
				reports.Add(1)
				respBytes.Add(int64(proto.Size(m)))
				break
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
