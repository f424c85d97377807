package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

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
	// control is OpenTelemetry's TraceIDRatioBased sampler, called right
	// after every decision as many times in a row as make up the mean
	// length of a decision, and timed the same way: pure computation that
	// cannot block, so its stretches over slowDecision count how often the
	// machine itself (scheduling, a busy neighbour, the collector) stretches
	// a call of that length that far.
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
	// everyReplica gives every instance every replica's address
	// (sampler.WithEndpoints), so an instance whose replica dies moves to
	// another.
	everyReplica endpoints = iota
	// oneReplica gives instance i the address of replica i % n only
	// (sampler.WithEndpoint("host:port")).
	oneReplica
)

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
			opts = append(opts, sampler.WithEndpoints(addrs...))
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
	var c calibration
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			dt := now.Sub(last).Seconds()
			last = now
			var sampled int64
			reps := c.reps()
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
					if f.decide(in.s, &p, reps, &c) {
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

// decide runs one decision, timing it and catching a panic, then times
// reps calls of the control sampler.
func (f *fleet) decide(s *sampler.Sampler, p *sdktrace.SamplingParameters, reps int, c *calibration) (sampled bool) {
	defer func() {
		if recover() != nil {
			f.panics.Add(1)
		}
	}()
	t0 := time.Now()
	r := s.ShouldSample(*p)
	d := time.Since(t0)
	t1 := time.Now()
	for range reps {
		f.control.ShouldSample(*p)
	}
	dc := time.Since(t1)
	c.add(d, dc, reps)
	if dc > slowDecision {
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

// calibration keeps one driver's mean decision time and mean control call
// time, stretched calls left out, to size the control's run.
type calibration struct {
	decisionNs, decisions int64
	controlNs, controls   int64
}

func (c *calibration) add(decision, control time.Duration, reps int) {
	if decision > slowDecision || control > slowDecision {
		return // the stretches are what is counted, not the length
	}
	c.decisionNs += int64(decision)
	c.decisions++
	c.controlNs += int64(control)
	c.controls += int64(reps)
}

// reps is how many control calls last as long as a decision, on average.
func (c *calibration) reps() int {
	if c.decisions == 0 || c.controlNs == 0 {
		return 1
	}
	per := float64(c.controlNs) / float64(c.controls)
	return int(min(1000, max(1, float64(c.decisionNs)/float64(c.decisions)/per+0.5)))
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

// sdkGoroutines counts the goroutines running the SDK's code. A closed
// sampler leaves none behind.
func sdkGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("/clients/go/sampler.")) {
			count++
		}
	}
	return count
}

// sdkGoroutinesLeft waits up to wait for the SDK's goroutines to come down
// to before and returns how many more there are.
func sdkGoroutinesLeft(before int, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	for {
		n := sdkGoroutines() - before
		if n <= 0 || time.Now().After(deadline) {
			return max(n, 0)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
