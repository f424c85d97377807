package sdke2e_test

// Fault tests: streams that fail under the sampler, replicas killed, the
// store down, and a fleet of samplers through all of it. Where spans are
// counted, the test checks what the instances sampled against what the
// store billed, exactly.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/redistest"
)

// wallClock reads the wall clock at every decision: with many samplers in
// one process it spares each its own clock goroutine.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// fleet is many samplers, their spans decided by a few goroutines and
// counted per instance.
type fleet struct {
	samplers []*sampler.Sampler
	ids      []string
	sampled  []atomic.Int64
	closed   []atomic.Bool

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// startFleet starts n samplers for service "shop", each with the options
// opts returns for it and a client id of its own.
func startFleet(t *testing.T, n int, opts func(i int) []sampler.Option) *fleet {
	t.Helper()
	f := &fleet{sampled: make([]atomic.Int64, n), closed: make([]atomic.Bool, n), done: make(chan struct{})}
	close(f.done) // until runLoad
	f.cancel = func() {}
	for i := range n {
		id := fmt.Sprintf("fleet-%03d", i)
		o := append([]sampler.Option{sampler.WithService("shop", ""), sampler.WithLogger(discard), sampler.WithClientID(id), sampler.WithClock(wallClock{})}, opts(i)...)
		s, err := sampler.New(o...)
		if err != nil {
			t.Fatal(err)
		}
		f.samplers = append(f.samplers, s)
		f.ids = append(f.ids, id)
	}
	// The load stops before the samplers close, if the test has not
	// closed them.
	t.Cleanup(func() {
		f.stopLoad()
		f.closeAll(t, deadline)
	})
	return f
}

// runLoad starts root spans on every instance at perSecond each, from
// workers goroutines, until stopLoad.
func (f *fleet) runLoad(perSecond float64, workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), rand.Uint64()))
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			start := time.Now()
			var n int64
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for due := int64(perSecond * time.Since(start).Seconds()); n < due; n++ {
					for i := w; i < len(f.samplers); i += workers {
						if f.samplers[i].ShouldSample(params(rng)).Decision == sdktrace.RecordAndSample {
							f.sampled[i].Add(1)
						}
					}
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(f.done)
	}()
}

// stopLoad stops the load and waits for its goroutines.
func (f *fleet) stopLoad() {
	f.stopOnce.Do(f.cancel)
	<-f.done
}

// sampledTotal is what every instance counted as sampled.
func (f *fleet) sampledTotal() int64 {
	var sum int64
	for i := range f.sampled {
		sum += f.sampled[i].Load()
	}
	return sum
}

// closeAll closes every sampler not closed yet, at once, and returns how
// many Close calls had not returned after limit (they are left running).
func (f *fleet) closeAll(t *testing.T, limit time.Duration) (stuck int) {
	t.Helper()
	var wg sync.WaitGroup
	var returned atomic.Int64
	n := 0
	for i, s := range f.samplers {
		if f.closed[i].Swap(true) {
			continue
		}
		n++
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Logf("instance %d: Close: %v", i, err)
			}
			returned.Add(1)
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
	}
	return n - int(returned.Load())
}

// fallbackWatch samples, every period, whether each instance decides by
// the local default, and adds up the time each spends so.
type fallbackWatch struct {
	mu     sync.Mutex
	onIt   []time.Duration
	cancel context.CancelFunc
	done   chan struct{}
}

func watchFallback(f *fleet, period time.Duration) *fallbackWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &fallbackWatch{onIt: make([]time.Duration, len(f.samplers)), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		rng := rand.New(rand.NewPCG(7, 7))
		tick := time.NewTicker(period)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				step := now.Sub(last)
				last = now
				w.mu.Lock()
				for i, s := range f.samplers {
					if s.Explain(params(rng)).Reason == sampler.ReasonFallback {
						w.onIt[i] += step
					}
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// stop ends the watch and returns the longest and the total time on the
// local default, and how many instances were seen on it.
func (w *fallbackWatch) stop() (longest, total time.Duration, instances int) {
	w.cancel()
	<-w.done
	for _, d := range w.onIt {
		longest = max(longest, d)
		total += d
		if d > 0 {
			instances++
		}
	}
	return longest, total, instances
}

// recvGuard is a stream interceptor that fails the first report's SendMsg
// with io.EOF, as gRPC does when the server has ended the stream, and notes
// the most goroutines ever in RecvMsg of one stream at once.
type recvGuard struct {
	failed    chan struct{} // closed once a send failed
	once      sync.Once
	streams   atomic.Int32
	acked     atomic.Int32 // targets acknowledging a report, on later streams
	maxInRecv atomic.Int32
}

func (g *recvGuard) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &guardedStream{ClientStream: cs, g: g, n: g.streams.Add(1)}, nil
}

type guardedStream struct {
	grpc.ClientStream
	g      *recvGuard
	n      int32 // the stream's number, from 1
	inRecv atomic.Int32
}

func (s *guardedStream) SendMsg(m any) error {
	if r, ok := m.(*pb.StreamSamplingRequest); ok && r.GetReport() != nil {
		fail := false
		s.g.once.Do(func() { fail = true })
		if fail {
			close(s.g.failed)
			return io.EOF
		}
	}
	return s.ClientStream.SendMsg(m)
}

func (s *guardedStream) RecvMsg(m any) error {
	n := s.inRecv.Add(1)
	defer s.inRecv.Add(-1)
	for cur := s.g.maxInRecv.Load(); n > cur && !s.g.maxInRecv.CompareAndSwap(cur, n); cur = s.g.maxInRecv.Load() {
	}
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*pb.StreamSamplingResponse); ok && err == nil && s.n > 1 && r.GetTargets().GetAckedSeq() > 0 {
		s.g.acked.Add(1)
	}
	return err
}

// closeWithin closes s and fails the test if Close does not return within
// limit (leaving it running).
func closeWithin(t *testing.T, s *sampler.Sampler, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(limit):
		t.Errorf("Close did not return within %v", limit)
	}
}

// TestE2EStreamSendFailureDoesNotStick: when a report's Send fails with
// io.EOF (the stream has ended), the sampler takes the stream's status from
// its receiving goroutine instead of calling Recv beside it, which could
// wait forever; it opens a new stream, gets its report acknowledged there,
// and closes.
func TestE2EStreamSendFailureDoesNotStick(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-eof", Priority: 1, ServiceName: "shop", ReservoirSize: 10, FixedRate: 0.1})
	g := &recvGuard{failed: make(chan struct{})}
	s, err := sampler.New(sampler.WithEndpoint(cp.addr), sampler.WithService("shop", ""), sampler.WithLogger(discard),
		sampler.WithDialOptions(grpc.WithStreamInterceptor(g.intercept)))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.failed:
	case <-time.After(deadline):
		t.Fatal("no report sent")
	}
	waitFor(t, 2*deadline, "a report acknowledged on a new stream, or Recv called twice at once", func() bool {
		return g.acked.Load() > 0 || g.maxInRecv.Load() > 1
	})
	if n := g.maxInRecv.Load(); n > 1 {
		t.Errorf("RecvMsg was called by %d goroutines at once on one stream", n)
	}
	closeWithin(t, s, 2*deadline)
}

// TestE2EShutdownHonoursItsContext: with the control plane gone, Shutdown
// gives up on the last counts when its context ends, and says so.
func TestE2EShutdownHonoursItsContext(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-ctx", Priority: 1, ServiceName: "shop", ReservoirSize: 10, FixedRate: 0.1})
	s, err := sampler.New(sampler.WithEndpoint(cp.addr), sampler.WithService("shop", ""), sampler.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deadline, "the rule", func() bool { return explain(s).Rule == "shop-ctx" })
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		s.ShouldSample(params(rng))
	}
	cp.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown without a control plane: %v, want an error wrapping context.DeadlineExceeded", err)
		}
	case <-time.After(2 * deadline):
		t.Fatal("Shutdown did not return after its context ended")
	}
	if err := s.Close(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close after Shutdown: %v, want Shutdown's error again", err)
	}
}

// TestE2EShutdownWaitsForTheControlPlane: the last counts go out once the
// control plane is back, within Shutdown's context, rather than failing at
// once because it is down at that instant (a replica restarting, a stream
// being rotated).
func TestE2EShutdownWaitsForTheControlPlane(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-wait", Priority: 1, ServiceName: "shop", ReservoirSize: 10, FixedRate: 0.5})
	cp.createBudget(t, "all")
	since := time.Now()
	s, err := sampler.New(sampler.WithEndpoint(cp.addr), sampler.WithService("shop", ""), sampler.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deadline, "the rule", func() bool { return explain(s).Rule == "shop-wait" })
	var sampled int64
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		if s.ShouldSample(params(rng)).Decision == sdktrace.RecordAndSample {
			sampled++
		}
	}
	cp.stop()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*deadline)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	back := startControlPlane(t, rs, cp.addr)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(4 * deadline):
		t.Fatal("Shutdown did not return")
	}
	if got := back.billed(t, "all", since); got != sampled {
		t.Errorf("the store billed %d sampled traces, want the %d the instance sampled", got, sampled)
	}
}

// TestE2ECloseSendsAReportLostOnTheStream: a report sent on the stream
// that never reached the store (its replica went away with it) is not
// counted as delivered: Close sends it again, and the store bills it once.
func TestE2ECloseSendsAReportLostOnTheStream(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-lost", Priority: 1, ServiceName: "shop", ReservoirSize: 5, FixedRate: 0.5})
	cp.createBudget(t, "all")
	since := time.Now()
	p := &proxy{}
	addr := startProxy(t, cp, p)
	s, err := sampler.New(sampler.WithEndpoint(addr), sampler.WithService("shop", ""), sampler.WithLogger(discard), sampler.WithReportInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, deadline, "the rule and a quota", func() bool {
		e := explain(s)
		return e.Rule == "shop-lost" && e.Reason != sampler.ReasonBorrowed
	})
	p.dropReports.Store(true)
	var sampled int64
	rng := rand.New(rand.NewPCG(9, 10))
	for range 500 {
		if s.ShouldSample(params(rng)).Decision == sdktrace.RecordAndSample {
			sampled++
		}
	}
	waitFor(t, deadline, "a report with sampled spans, swallowed", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, r := range p.streamReports {
			for _, d := range r.msg.GetStatistics() {
				if d.GetSampledCount() > 0 {
					return true
				}
			}
		}
		return false
	})
	closeWithin(t, s, 2*deadline)
	if got := cp.billed(t, "all", since); got != sampled {
		t.Errorf("the store billed %d sampled traces, want the %d the instance sampled", got, sampled)
	}
}

// TestE2EFailoverToAnotherReplica: samplers given two replicas' addresses
// spread their streams over both. When one replica is killed, every
// instance gets its targets from the other, and every count reaches the
// store once. The time instances spend on the local default is logged.
func TestE2EFailoverToAnotherReplica(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cps := []*controlPlane{startControlPlane(t, rs, "127.0.0.1:0"), startControlPlane(t, rs, "127.0.0.1:0")}
	cps[0].createRule(t, &pb.Rule{Name: "shop-failover", Priority: 1, ServiceName: "shop", ReservoirSize: 1000, FixedRate: 0.2})
	cps[0].createBudget(t, "all")
	cps[1].waitBudget(t, "all")
	waitFor(t, deadline, "the rule on replica 1", func() bool { return cps[1].catalog.Current().Rule("shop-failover") != nil })
	since := time.Now()
	proxies := []*proxy{{}, {}}
	addrs := []string{startProxy(t, cps[0], proxies[0]), startProxy(t, cps[1], proxies[1])}

	const n = 10
	f := startFleet(t, n, func(int) []sampler.Option { return []sampler.Option{sampler.WithEndpoints(addrs...)} })
	f.runLoad(20, 2)
	for i, s := range f.samplers {
		waitFor(t, deadline, fmt.Sprintf("a quota on instance %d", i), func() bool {
			e := explain(s)
			return e.Rule == "shop-failover" && e.Reason == sampler.ReasonReservoir
		})
	}
	open := func(p *proxy) int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.open
	}
	// The replica with more streams goes.
	dead, live := 0, 1
	if open(proxies[1]) > open(proxies[0]) {
		dead, live = 1, 0
	}
	t.Logf("streams before the kill: %d and %d", open(proxies[0]), open(proxies[1]))
	survivor := proxies[live]
	survivor.mu.Lock()
	mark := len(survivor.streamTargets)
	survivor.mu.Unlock()
	watch := watchFallback(f, 10*time.Millisecond)
	proxies[dead].stop()
	cps[dead].kill()
	killed := time.Now()

	// Every instance gets a report acknowledged by the survivor.
	for i, id := range f.ids {
		waitFor(t, 3*deadline, fmt.Sprintf("targets for instance %d from the survivor", i), func() bool {
			survivor.mu.Lock()
			defer survivor.mu.Unlock()
			for _, ts := range survivor.streamTargets[mark:] {
				if ts.msg.GetAckedSeq() > 0 && survivor.clientOf(ts.stream) == id {
					return true
				}
			}
			return false
		})
	}
	t.Logf("every instance had targets from the survivor %v after the kill", time.Since(killed))
	longest, total, onFallback := watch.stop()
	t.Logf("after the kill, %d of %d instances were seen on the local default: %v in all, %v at most", onFallback, n, total, longest)
	f.stopLoad()
	if stuck := f.closeAll(t, 2*deadline); stuck > 0 {
		t.Fatalf("%d Close calls did not return", stuck)
	}
	if got, want := cps[live].billed(t, "all", since), f.sampledTotal(); got != want {
		t.Errorf("the store billed %d sampled traces, want the %d the instances sampled", got, want)
	}
}

// TestE2EReplicaKilledDuringStoreOutage: reports made while the store is
// down are not acknowledged, so when the replica that got them is killed
// before the store comes back, the instances send them again to the other
// replica: the store bills every sampled trace once.
func TestE2EReplicaKilledDuringStoreOutage(t *testing.T) {
	// A go-redis client that failed to dial while Redis was down waits a
	// second before it tries again, even once closed.
	noLeaks(t, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	cps := []*controlPlane{startControlPlane(t, rs, "127.0.0.1:0"), startControlPlane(t, rs, "127.0.0.1:0")}
	cps[0].createRule(t, &pb.Rule{Name: "shop-outage", Priority: 1, ServiceName: "shop", ReservoirSize: 100, FixedRate: 0.3})
	cps[0].createBudget(t, "all")
	cps[1].waitBudget(t, "all")
	waitFor(t, deadline, "the rule on replica 1", func() bool { return cps[1].catalog.Current().Rule("shop-outage") != nil })
	since := time.Now()
	proxies := []*proxy{{}, {}}
	addrs := []string{startProxy(t, cps[0], proxies[0]), startProxy(t, cps[1], proxies[1])}

	const n = 8
	f := startFleet(t, n, func(int) []sampler.Option {
		return []sampler.Option{sampler.WithEndpoints(addrs...), sampler.WithReportInterval(300 * time.Millisecond)}
	})
	f.runLoad(20, 2)
	for i, s := range f.samplers {
		waitFor(t, deadline, fmt.Sprintf("a quota on instance %d", i), func() bool {
			e := explain(s)
			return e.Rule == "shop-outage" && e.Reason == sampler.ReasonReservoir
		})
	}
	// locked runs fn under p's lock.
	locked := func(p *proxy, fn func() int) int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return fn()
	}
	// The replica with more streams goes.
	dead, live := 0, 1
	if locked(proxies[1], func() int { return proxies[1].open }) > locked(proxies[0], func() int { return proxies[0].open }) {
		dead, live = 1, 0
	}
	reports := func() int { return locked(proxies[dead], func() int { return len(proxies[dead].streamReports) }) }
	rs.Stop()
	// Reports while the store is down: a few from every instance there.
	before, streams := reports(), locked(proxies[dead], func() int { return proxies[dead].open })
	waitFor(t, deadline, "reports while the store is down", func() bool { return reports() >= before+3*streams })
	proxies[dead].stop()
	cps[dead].kill()
	cps[dead].stop()
	rs.Restart()
	// The instances keep running until the survivor reaches the store
	// again; then they close, sending what is left.
	waitFor(t, 3*deadline, "the survivor to reach the store", func() bool {
		_, err := cps[live].store.Usage(context.Background(), "all", time.Now())
		return err == nil
	})
	f.stopLoad()
	if stuck := f.closeAll(t, 3*deadline); stuck > 0 {
		t.Fatalf("%d Close calls did not return", stuck)
	}
	if got, want := cps[live].billed(t, "all", since), f.sampledTotal(); got != want {
		t.Errorf("the store billed %d sampled traces, want the %d the instances sampled (%.3f %% lost)", got, want, 100*float64(want-got)/float64(want))
	}
}

// envInt returns the environment variable key as a number, or def.
func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// TestE2EFleetUnderRotationAndAReplicaKill runs a fleet of samplers, each
// given both replicas' addresses, against two replicas on one Redis whose
// connections age out every couple of seconds (streams rotate). Once the
// streams have rotated, one replica is killed; once they have rotated on
// the other, it is started again on its address; once they have rotated
// again, every instance closes. Every Close returns, and the store bills
// exactly what the instances sampled. The time instances spend on the
// local default from the kill on is logged.
//
// It runs 100 instances (24 with -short). SAMPLER_FLEET_INSTANCES sets
// another number; SAMPLER_FLEET_ROTATIONS how many times each stream
// rotates on average in each phase (2); SAMPLER_FLEET_ONE_ENDPOINT=1 gives
// each instance one replica's address only (half of them each), as before
// the SDK took several: the killed replica's instances then wait for it to
// come back; SAMPLER_FLEET_KILL=0 kills no replica (streams only rotate),
// SAMPLER_FLEET_KILL=graceful stops it as SIGTERM does (its streams end
// with UNAVAILABLE) instead of dropping its connections;
// SAMPLER_FLEET_SETTLE=1 waits, once the load has stopped, until what the
// store bills has not changed for a second and logs it, to tell what was
// lost while running from what Close loses (without it the instances close
// as soon as the load stops, as an application's shutdown does).
func TestE2EFleetUnderRotationAndAReplicaKill(t *testing.T) {
	noLeaks(t)
	n := 100
	if testing.Short() {
		n = 24
	}
	n = envInt(t, "SAMPLER_FLEET_INSTANCES", n)
	rotations := envInt(t, "SAMPLER_FLEET_ROTATIONS", 2)
	oneEndpoint := os.Getenv("SAMPLER_FLEET_ONE_ENDPOINT") == "1"
	kill, graceful := os.Getenv("SAMPLER_FLEET_KILL") != "0", os.Getenv("SAMPLER_FLEET_KILL") == "graceful"
	settle := os.Getenv("SAMPLER_FLEET_SETTLE") == "1"
	rs := redistest.Start(t)
	replica := func(addr string) *controlPlane {
		return startControlPlaneWith(t, rs, replicaOptions{addr: addr, maxConnAge: 2 * time.Second, maxConnAgeGrace: time.Second})
	}
	cps := []*controlPlane{replica("127.0.0.1:0"), replica("127.0.0.1:0")}
	addrs := []string{cps[0].addr, cps[1].addr}
	cps[0].createRule(t, &pb.Rule{Name: "shop-fleet", Priority: 1, ServiceName: "shop", ReservoirSize: 50, FixedRate: 0.2})
	cps[0].createBudget(t, "all")
	cps[1].waitBudget(t, "all")
	waitFor(t, deadline, "the rule on replica 1", func() bool { return cps[1].catalog.Current().Rule("shop-fleet") != nil })
	since := time.Now()

	f := startFleet(t, n, func(i int) []sampler.Option {
		if oneEndpoint {
			return []sampler.Option{sampler.WithEndpoint(addrs[i%2])}
		}
		return []sampler.Option{sampler.WithEndpoints(addrs...)}
	})
	for i, s := range f.samplers {
		waitFor(t, 3*deadline, fmt.Sprintf("the rule on instance %d", i), func() bool { return explain(s).Rule == "shop-fleet" })
	}
	f.runLoad(10, 4)
	ended := func() int { return cps[0].endedStreams(t) + cps[1].endedStreams(t) }
	// rotate waits until the streams have rotated rotations times on
	// average.
	rotate := func(what string) {
		t.Helper()
		start := ended()
		waitFor(t, 10*deadline, what, func() bool { return ended() >= start+rotations*n })
	}
	watch := watchFallback(f, 20*time.Millisecond)
	rotate("streams to rotate")
	longest, total, onFallback := watch.stop()
	t.Logf("streams open before the kill: %d and %d", cps[0].openStreams(t), cps[1].openStreams(t))
	t.Logf("while streams rotated, %d of %d instances were seen on the local default: %v in all, %v at most", onFallback, n, total, longest)

	if kill {
		watch = watchFallback(f, 20*time.Millisecond)
		if graceful {
			go cps[0].stop()
		} else {
			cps[0].kill()
		}
		killed := time.Now()
		waitFor(t, 10*deadline, "the killed replica's streams to end", func() bool { return cps[0].openStreams(t) == 0 })
		// Streams on the survivor alone rotate half as often as on both.
		start := cps[1].endedStreams(t)
		waitFor(t, 10*deadline, "streams to rotate on the survivor", func() bool { return cps[1].endedStreams(t) >= start+rotations*n/2 })
		cps[0].stop()
		cps[0] = replica(addrs[0])
		t.Logf("replica 0 started again %v after the kill", time.Since(killed))
		rotate("streams to rotate after the restart")
		longest, total, onFallback = watch.stop()
		t.Logf("from the kill on (%v), %d of %d instances were seen on the local default: %v in all, %v at most", time.Since(killed), onFallback, n, total, longest)
	}

	f.stopLoad()
	if settle {
		// A measurement, not a wait for an event: what the store bills
		// once every instance has reported since the load stopped.
		settled, last, still := int64(-1), time.Now(), 0
		for still < 3 && time.Since(last) < 3*deadline {
			time.Sleep(500 * time.Millisecond)
			b := cps[1].billed(t, "all", since)
			if b == settled {
				still++
			} else {
				settled, still = b, 0
			}
		}
		t.Logf("before Close: instances sampled %d traces; the store billed %d once settled (%d lost while running)", f.sampledTotal(), settled, f.sampledTotal()-settled)
	}
	closing := time.Now()
	stuck := f.closeAll(t, 6*deadline)
	t.Logf("%d instances closed in %v; %d Close calls had not returned", n, time.Since(closing), stuck)
	if stuck > 0 {
		t.Errorf("%d of %d Close calls did not return", stuck, n)
	}
	got, want := cps[1].billed(t, "all", since), f.sampledTotal()
	t.Logf("instances sampled %d traces; the store billed %d", want, got)
	if got != want {
		t.Errorf("the store billed %d sampled traces, want the %d the instances sampled (%.3f %% lost)", got, want, 100*float64(want-got)/float64(want))
	}
}

// TestE2EFleetShutdown closes a fleet of samplers while their load runs and
// their reports are on the way, as an application's shutdown does, against
// two replicas whose connections do not age out: every Close returns, and
// the store bills exactly what the instances sampled. It runs 100 instances
// (24 with -short; SAMPLER_FLEET_INSTANCES sets another number), each until
// it has sampled 30 traces.
func TestE2EFleetShutdown(t *testing.T) {
	noLeaks(t)
	n := 100
	if testing.Short() {
		n = 24
	}
	n = envInt(t, "SAMPLER_FLEET_INSTANCES", n)
	rs := redistest.Start(t)
	cps := []*controlPlane{startControlPlane(t, rs, "127.0.0.1:0"), startControlPlane(t, rs, "127.0.0.1:0")}
	addrs := []string{cps[0].addr, cps[1].addr}
	cps[0].createRule(t, &pb.Rule{Name: "shop-shutdown", Priority: 1, ServiceName: "shop", ReservoirSize: 50, FixedRate: 0.2})
	cps[0].createBudget(t, "all")
	cps[1].waitBudget(t, "all")
	waitFor(t, deadline, "the rule on replica 1", func() bool { return cps[1].catalog.Current().Rule("shop-shutdown") != nil })
	since := time.Now()
	f := startFleet(t, n, func(i int) []sampler.Option { return []sampler.Option{sampler.WithEndpoint(addrs[i%2])} })
	for i, s := range f.samplers {
		waitFor(t, 3*deadline, fmt.Sprintf("the rule on instance %d", i), func() bool { return explain(s).Rule == "shop-shutdown" })
	}
	f.runLoad(20, 4)
	waitFor(t, 10*deadline, "30 sampled traces on every instance", func() bool {
		for i := range f.sampled {
			if f.sampled[i].Load() < 30 {
				return false
			}
		}
		return true
	})
	f.stopLoad()
	stuck := f.closeAll(t, 6*deadline)
	got, want := cps[0].billed(t, "all", since), f.sampledTotal()
	t.Logf("%d instances closed, %d Close calls had not returned; instances sampled %d traces, the store billed %d", n, stuck, want, got)
	if stuck > 0 {
		t.Errorf("%d of %d Close calls did not return", stuck, n)
	}
	if got != want {
		t.Errorf("the store billed %d sampled traces, want the %d the instances sampled (%d lost)", got, want, want-got)
	}
}
