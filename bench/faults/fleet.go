package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/tracesampling/controlplane/clients/go/sampler"
)

// slowDecision is the time past which a decision counts as blocked. A
// decision takes tens of nanoseconds and never waits on the network, so one
// over a millisecond was either blocked or descheduled by a busy machine.
const slowDecision = time.Millisecond

// driverTick is how often the drivers hand each instance its due requests.
const driverTick = 10 * time.Millisecond

// fleet is the SDK instances of a run and the load they decide on: instance
// i serves rates[i % len(rates)] requests per second, every one of which
// matches the measured rule. Decisions are counted by the fleet itself, so
// that what the instances sampled can be compared with what the control
// plane recorded.
type fleet struct {
	start   time.Time
	window  time.Duration
	insts   []*instance
	windows []atomic.Int64 // sampled decisions per window since start

	decisions atomic.Int64
	slow      atomic.Int64
	maxNs     atomic.Int64
	panics    atomic.Int64
	// control is OpenTelemetry's TraceIDRatioBased sampler, timed right
	// after every decision in the same way: pure computation that cannot
	// block, so its calls over slowDecision measure how often the machine
	// itself (scheduling, a busy neighbour) stretches a call that far.
	control     sdktrace.Sampler
	controlSlow atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// instance is one SDK instance and what it decided. requests and sampled
// belong to its driver until the drivers stop.
type instance struct {
	s        *sampler.Sampler
	rate     float64
	carry    float64
	requests int64
	sampled  int64
}

// endpoints says how instances find the replicas.
type endpoints int

const (
	// everyReplica gives every instance every replica's address through a
	// gRPC resolver, with pick_first over a shuffled list: what a dns:///
	// name with one record per replica gives, so an instance whose replica
	// dies connects to another.
	everyReplica endpoints = iota
	// oneReplica gives instance i the address of replica i % n only, as
	// sampler.WithEndpoint("host:port") does.
	oneReplica
)

const pickFirstShuffled = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// startFleet starts n instances against the replicas' addresses and drives
// their traffic until stop. windows must cover the whole run.
func startFleet(n int, rates []float64, addrs []string, how endpoints, window time.Duration, windows int) (*fleet, error) {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fleet{window: window, windows: make([]atomic.Int64, windows), control: sdktrace.TraceIDRatioBased(0.01)}
	for i := range n {
		opts := []sampler.Option{
			sampler.WithService(service, ""),
			sampler.WithClientID(fmt.Sprintf("fault-instance-%04d", i)),
			sampler.WithLogger(discard),
		}
		switch how {
		case everyReplica:
			r := manual.NewBuilderWithScheme("faults")
			var eps []resolver.Endpoint
			for _, a := range addrs {
				eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
			}
			r.InitialState(resolver.State{Endpoints: eps})
			opts = append(opts,
				sampler.WithEndpoint("faults:///replicas"),
				sampler.WithDialOptions(grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(pickFirstShuffled)))
		case oneReplica:
			opts = append(opts, sampler.WithEndpoint(addrs[i%len(addrs)]))
		}
		s, err := sampler.New(opts...)
		if err != nil {
			f.closeAll(time.Minute)
			return nil, err
		}
		f.insts = append(f.insts, &instance{s: s, rate: rates[i%len(rates)]})
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.start = time.Now()
	drivers := min(4, n)
	for d := range drivers {
		var mine []*instance
		for i := d; i < n; i += drivers {
			mine = append(mine, f.insts[i])
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.drive(ctx, mine, uint64(d))
		}()
	}
	return f, nil
}

// attrs are those of every request: a GET of the API, which the measured
// rule matches and the editor's rules never do.
var attrs = []attribute.KeyValue{
	attribute.String("http.request.method", "GET"),
	attribute.String("url.path", "/api/orders"),
}

// drive hands each instance the requests due since the last tick, deciding
// each with ShouldSample and timing it.
func (f *fleet) drive(ctx context.Context, insts []*instance, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	t := time.NewTicker(driverTick)
	defer t.Stop()
	last := time.Now()
	p := sdktrace.SamplingParameters{
		ParentContext: context.Background(),
		Name:          "GET /api/orders",
		Kind:          trace.SpanKindServer,
		Attributes:    attrs,
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			dt := now.Sub(last).Seconds()
			last = now
			var sampled int64
			for _, in := range insts {
				due := in.rate*dt + in.carry
				k := int(due)
				in.carry = due - float64(k)
				for range k {
					var id trace.TraceID
					for b := range 2 {
						v := rng.Uint64()
						for j := range 8 {
							id[b*8+j] = byte(v >> (8 * j))
						}
					}
					p.TraceID = id
					in.requests++
					if f.decide(in.s, &p) {
						in.sampled++
						sampled++
					}
				}
			}
			if w := int(now.Sub(f.start) / f.window); w >= 0 && w < len(f.windows) {
				f.windows[w].Add(sampled)
			}
		}
	}
}

// decide runs one decision, timing it and catching a panic.
func (f *fleet) decide(s *sampler.Sampler, p *sdktrace.SamplingParameters) (sampled bool) {
	defer func() {
		if recover() != nil {
			f.panics.Add(1)
		}
	}()
	t0 := time.Now()
	r := s.ShouldSample(*p)
	d := time.Since(t0)
	t1 := time.Now()
	f.control.ShouldSample(*p)
	if time.Since(t1) > slowDecision {
		f.controlSlow.Add(1)
	}
	f.decisions.Add(1)
	if d > slowDecision {
		f.slow.Add(1)
	}
	for {
		cur := f.maxNs.Load()
		if int64(d) <= cur || f.maxNs.CompareAndSwap(cur, int64(d)) {
			break
		}
	}
	return r.Decision == sdktrace.RecordAndSample
}

// stopTraffic ends the drivers; the instances stay open.
func (f *fleet) stopTraffic() {
	f.cancel()
	f.wg.Wait()
}

// totals returns what the instances decided; call it after stopTraffic.
func (f *fleet) totals() (requests, sampled int64) {
	for _, in := range f.insts {
		requests += in.requests
		sampled += in.sampled
	}
	return requests, sampled
}

// closeAll closes every instance at once and returns how many Close calls
// had not returned within wait. Those are left running: there is no way to
// stop them.
func (f *fleet) closeAll(wait time.Duration) (hung int) {
	var returned atomic.Int64
	all := make(chan struct{})
	var wg sync.WaitGroup
	for _, in := range f.insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = in.s.Close()
			returned.Add(1)
		}()
	}
	go func() {
		wg.Wait()
		close(all)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-all:
	case <-t.C:
	}
	return len(f.insts) - int(returned.Load())
}
