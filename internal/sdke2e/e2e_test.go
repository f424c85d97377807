package sdke2e_test

// End-to-end tests: real samplers against a complete in-process control
// plane (rule and sampling services, catalog, fleet ledger in a real Redis)
// on a loopback port. The server reports every second, so quotas arrive fast
// and expire two seconds after the last report.
//
// Nothing here asserts a propagation time tighter than a generous deadline:
// machines are shared and noisy. The times are logged; the load generator's
// benchmark is where they are measured.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/testpki"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

const (
	// e2eInterval is the control plane's report interval in these tests.
	e2eInterval = time.Second
	// deadline bounds every wait for something the control plane pushes.
	deadline = 10 * time.Second
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// noLeaks checks, when the test ends, that every goroutine it started is
// gone. It is a per-test check rather than goleak.VerifyTestMain so that it
// does not compete with a TestMain of the package's internal tests (a test
// binary has one).
func noLeaks(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	opts = append(opts, goleak.IgnoreCurrent())
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// controlPlane is one replica: store, catalog and gRPC server.
type controlPlane struct {
	addr    string
	rules   pb.RuleServiceClient
	budgets pb.BudgetServiceClient
	status  pb.StatusServiceClient
	store   *redisstore.Store
	catalog *catalog.Catalog
	metrics *prometheus.Registry
	stop    func() // idempotent
	// kill drops every connection at once and accepts no more, as a
	// replica whose process was killed; the rest of it stops with stop.
	kill func()
}

// replicaOptions configure a replica for startControlPlaneWith.
type replicaOptions struct {
	addr string // "127.0.0.1:0" for a free port
	// serverCreds (nil: plaintext) the replica serves with; its own client
	// dials with clientCreds (nil: plaintext).
	serverCreds, clientCreds credentials.TransportCredentials
	// maxConnAge and its grace: zero for the server's defaults.
	maxConnAge, maxConnAgeGrace time.Duration
	// client is the store's Redis (nil: the server given) and storeOpts
	// its options.
	client    redis.UniversalClient
	storeOpts redisstore.Options
}

// startControlPlane runs a replica on the Redis rs, listening on addr
// ("127.0.0.1:0" for a free port). It is stopped when the test ends, if the
// test has not stopped it.
func startControlPlane(t *testing.T, rs *redistest.Server, addr string) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, rs, replicaOptions{addr: addr})
}

// startControlPlaneTLS is startControlPlane serving with serverCreds (nil:
// plaintext); its own client dials with clientCreds.
func startControlPlaneTLS(t *testing.T, rs *redistest.Server, addr string, serverCreds, clientCreds credentials.TransportCredentials) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, rs, replicaOptions{addr: addr, serverCreds: serverCreds, clientCreds: clientCreds})
}

// startControlPlaneOn is startControlPlaneTLS on any Redis client (a
// Cluster's, one that follows Sentinel) with the store's options.
func startControlPlaneOn(t *testing.T, client redis.UniversalClient, opts redisstore.Options, addr string, serverCreds, clientCreds credentials.TransportCredentials) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, nil, replicaOptions{addr: addr, serverCreds: serverCreds, clientCreds: clientCreds, client: client, storeOpts: opts})
}

func startControlPlaneWith(t *testing.T, rs *redistest.Server, o replicaOptions) *controlPlane {
	t.Helper()
	if o.clientCreds == nil {
		o.clientCreds = insecure.NewCredentials()
	}
	if o.client == nil {
		o.client = rs.Client(t)
	}
	st, err := redisstore.New(context.Background(), o.client, o.storeOpts)
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(st, catalog.Options{Logger: discard, Poll: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	if err := cat.Load(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	catDone := make(chan struct{})
	go func() {
		defer close(catDone)
		_ = cat.Run(ctx)
	}()
	inner, err := net.Listen("tcp", o.addr)
	if err != nil {
		cancel()
		<-catDone
		t.Fatal(err)
	}
	lis := &killableListener{Listener: inner}
	reg := prometheus.NewRegistry()
	srv := server.New(server.Options{
		Rules: st, Catalog: cat, Ledger: st, Budgets: st, Logger: discard, Registerer: reg, ReportInterval: e2eInterval,
		Credentials: o.serverCreds, MaxConnectionAge: o.maxConnAge, MaxConnectionAgeGrace: o.maxConnAgeGrace,
	})
	srv.SetServing(true)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(o.clientCreds))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			// Streams never end by themselves: a short grace period, then
			// every connection is closed (Serve closes the listener).
			sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer scancel()
			srv.Stop(sctx)
			<-served
			cancel()
			<-catDone
			st.Close()
		})
	}
	t.Cleanup(stop)
	return &controlPlane{
		addr: lis.Addr().String(), rules: pb.NewRuleServiceClient(conn), budgets: pb.NewBudgetServiceClient(conn),
		status: pb.NewStatusServiceClient(conn), store: st, catalog: cat, metrics: reg, stop: stop, kill: lis.kill,
	}
}

// killableListener is a listener that can drop every connection it
// accepted, at once.
type killableListener struct {
	net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	killed bool
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns = append(l.conns, c)
	return c, nil
}

// kill closes the listener and resets every connection.
func (l *killableListener) kill() {
	l.mu.Lock()
	l.killed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	l.Listener.Close()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// openStreams is how many SDK streams the replica holds now.
func (cp *controlPlane) openStreams(t *testing.T) int {
	return int(promtest.Sum(t, cp.metrics, "controlplane_sampling_streams"))
}

// endedStreams is how many SDK streams the replica has seen end.
func (cp *controlPlane) endedStreams(t *testing.T) int {
	return int(promtest.Sum(t, cp.metrics, "controlplane_grpc_requests_total", "method", pb.SamplingService_StreamSampling_FullMethodName))
}

// createBudget creates a budget over every service and rule, far from its
// cap, so that the store bills every count reported, and waits until the
// replica's catalog has it.
func (cp *controlPlane) createBudget(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := cp.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{Name: name, MonthlyAmountMicros: 1e15}}); err != nil {
		t.Fatal(err)
	}
	cp.waitBudget(t, name)
}

// waitBudget waits until the replica's catalog has the budget.
func (cp *controlPlane) waitBudget(t *testing.T, name string) {
	t.Helper()
	waitFor(t, deadline, fmt.Sprintf("catalog to load budget %q", name), func() bool {
		for _, b := range cp.catalog.CurrentBudgets().Budgets {
			if b.Name == name {
				return true
			}
		}
		return false
	})
}

// billed is the sampled count the store recorded for a budget in the
// months from since to now.
func (cp *controlPlane) billed(t *testing.T, name string, since time.Time) int64 {
	t.Helper()
	var sum float64
	for m := budget.MonthStart(since); !m.After(time.Now()); m = m.AddDate(0, 1, 0) {
		u, err := cp.store.Usage(context.Background(), name, m)
		if err != nil {
			t.Fatal(err)
		}
		_, sampled := u.Totals()
		sum += sampled
	}
	return int64(sum)
}

// createRule creates r and waits until the replica's catalog serves it.
func (cp *controlPlane) createRule(t *testing.T, r *pb.Rule) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := cp.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, deadline, fmt.Sprintf("catalog to load rule %q", r.GetName()), func() bool {
		return cp.catalog.Current().Rule(r.GetName()) != nil
	})
}

// newSampler starts a sampler for service "shop" against addr and closes
// it when the test ends.
func newSampler(t *testing.T, addr string, opts ...sampler.Option) *sampler.Sampler {
	t.Helper()
	opts = append([]sampler.Option{sampler.WithEndpoint(addr), sampler.WithService("shop", ""), sampler.WithLogger(discard)}, opts...)
	s, err := sampler.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond every 10 ms until it holds, and fails the test after
// limit. It returns how long it waited.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("no %s within %v", what, limit)
		}
		<-tick.C
	}
	return time.Since(start)
}

var requestAttrs = []attribute.KeyValue{
	attribute.String("http.request.method", "GET"),
	attribute.String("url.path", "/cart/42"),
	attribute.String("server.address", "shop.example.com"),
}

func params(rng *rand.Rand) sdktrace.SamplingParameters {
	var id trace.TraceID
	for i := range id {
		id[i] = byte(rng.Uint32())
	}
	return sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: "GET /cart/{id}", Kind: trace.SpanKindServer, Attributes: requestAttrs}
}

// explain asks s why a fresh root span would be sampled now.
func explain(s *sampler.Sampler) sampler.Explanation {
	return s.Explain(params(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))))
}

// load is a steady stream of root spans into one sampler.
type load struct {
	calls, sampled atomic.Int64
	slowest        atomic.Int64 // ns, the longest ShouldSample call
}

// runLoad starts spans on s at perSecond until the test ends, each with a
// fresh random trace ID. The rate is kept by catching up on a 10 ms ticker,
// so a late tick does not lower it.
func runLoad(t *testing.T, s *sampler.Sampler, perSecond float64) *load {
	l := &load{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
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
				p := params(rng)
				t0 := time.Now()
				r := s.ShouldSample(p)
				if d := int64(time.Since(t0)); d > l.slowest.Load() {
					l.slowest.Store(d)
				}
				l.calls.Add(1)
				if r.Decision == sdktrace.RecordAndSample {
					l.sampled.Add(1)
				}
			}
		}
	}()
	// Stops before the samplers close (cleanups run last-in first-out).
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// TestE2EFleetSharesReservoir: three instances with different traffic share
// one rule's reservoir, so the fleet traces about R per second in all, and the
// busiest instance gets the biggest share.
func TestE2EFleetSharesReservoir(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	const reservoir = 20
	cp.createRule(t, &pb.Rule{Name: "shop-all", Priority: 1, ServiceName: "shop", ReservoirSize: reservoir, FixedRate: 0})

	rates := []float64{300, 100, 30}
	var samplers []*sampler.Sampler
	var loads []*load
	for _, r := range rates {
		s := newSampler(t, cp.addr)
		samplers = append(samplers, s)
		loads = append(loads, runLoad(t, s, r))
	}
	for i, s := range samplers {
		waitFor(t, deadline, fmt.Sprintf("rule on instance %d", i), func() bool { return explain(s).Rule == "shop-all" })
	}
	// Warm-up: the first reports, then quotas from rates measured over a
	// whole interval.
	time.Sleep(4 * e2eInterval)

	const window = 6 * time.Second
	before := make([]int64, len(loads))
	calls := make([]int64, len(loads))
	for i, l := range loads {
		before[i], calls[i] = l.sampled.Load(), l.calls.Load()
	}
	start := time.Now()
	time.Sleep(window)
	elapsed := time.Since(start).Seconds()
	var total float64
	perInstance := make([]float64, len(loads))
	for i, l := range loads {
		perInstance[i] = float64(l.sampled.Load()-before[i]) / elapsed
		total += perInstance[i]
		calls[i] = l.calls.Load() - calls[i]
	}
	t.Logf("fleet traced %.2f/s (reservoir %d/s); per instance %.2f, %.2f, %.2f /s of %.0f, %.0f, %.0f req/s",
		total, reservoir, perInstance[0], perInstance[1], perInstance[2],
		float64(calls[0])/elapsed, float64(calls[1])/elapsed, float64(calls[2])/elapsed)
	if math.Abs(total-reservoir) > 0.35*reservoir {
		t.Errorf("fleet traced %.2f/s, want %d/s ± 35%%", total, reservoir)
	}
	if perInstance[0] <= perInstance[2] {
		t.Errorf("the instance with %v req/s traced %.2f/s, not more than the one with %v req/s (%.2f/s)", rates[0], perInstance[0], rates[2], perInstance[2])
	}
}

// TestE2ERuleEditReachesInstances: an edit on the server changes every
// instance's decisions, with no restart and no poll.
func TestE2ERuleEditReachesInstances(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-edit", Priority: 1, ServiceName: "shop", ReservoirSize: 0, FixedRate: 0})

	var samplers []*sampler.Sampler
	for range 3 {
		samplers = append(samplers, newSampler(t, cp.addr))
	}
	// With a quota in force (of nothing: the reservoir is 0) an instance
	// neither borrows nor samples.
	for i, s := range samplers {
		waitFor(t, deadline, fmt.Sprintf("rule and quota on instance %d", i), func() bool {
			e := explain(s)
			return e.Rule == "shop-edit" && e.Reason == sampler.ReasonFixedRate && !e.Sampled
		})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, s := range samplers {
		for range 100 {
			if d := s.ShouldSample(params(rng)).Decision; d != sdktrace.Drop {
				t.Fatalf("instance %d before the edit, at fixed rate 0: decision %v", i, d)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	edited := time.Now()
	_, err := cp.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{
		Rule:       &pb.Rule{Name: "shop-edit", FixedRate: 1},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	took := make([]time.Duration, len(samplers))
	for i, s := range samplers {
		waitFor(t, deadline, fmt.Sprintf("fixed rate 1 on instance %d", i), func() bool {
			e := explain(s)
			return e.Rule == "shop-edit" && e.Reason == sampler.ReasonFixedRate && e.Sampled
		})
		took[i] = time.Since(edited)
	}
	t.Logf("edit in force on the three instances %v, %v, %v after the update returned", took[0], took[1], took[2])
	for i, s := range samplers {
		for range 100 {
			if d := s.ShouldSample(params(rng)).Decision; d != sdktrace.RecordAndSample {
				t.Fatalf("instance %d after the edit to fixed rate 1: decision %v", i, d)
			}
		}
	}
	// Each instance's reports acknowledge the rules version it applied: the
	// control plane sees all three run the rule as edited.
	var st *pb.RuleStatus
	waitFor(t, deadline, "three instances running the edited rule", func() bool {
		for range 10 {
			for _, s := range samplers {
				s.ShouldSample(params(rng))
			}
		}
		resp, err := cp.status.GetFleetStatus(ctx, &pb.GetFleetStatusRequest{})
		if err != nil || len(resp.GetRules()) == 0 {
			return false
		}
		st = resp.GetRules()[0]
		return st.GetInstances() == 3 && st.GetInstancesCurrent() == 3
	})
	if v := cp.catalog.Current().Rule("shop-edit").RulesVersion; st.GetRuleVersion() != v {
		t.Errorf("rule_version %d, want the edit's %d", st.GetRuleVersion(), v)
	}
}

// TestE2EControlPlaneOutage: with the control plane gone, instances keep
// their last rules and quotas until the quotas expire, then decide by the
// local default, never blocking a span start; a control plane started again
// on the same address (and Redis) takes them back.
func TestE2EControlPlaneOutage(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	// A reservoir far above the traffic: with a quota in force every span
	// finds a token, so Explain tells a quota from borrowing.
	cp.createRule(t, &pb.Rule{Name: "shop-out", Priority: 1, ServiceName: "shop", ReservoirSize: 1000, FixedRate: 0.2})

	var samplers []*sampler.Sampler
	var loads []*load
	for range 2 {
		// Reports every 200 ms, so the last quota before the outage is
		// fresh and outlives the stop by well over a second.
		s := newSampler(t, cp.addr, sampler.WithReportInterval(200*time.Millisecond))
		samplers = append(samplers, s)
		loads = append(loads, runLoad(t, s, 100))
	}
	onQuota := func(e sampler.Explanation) bool {
		return e.Rule == "shop-out" && e.Reason == sampler.ReasonReservoir
	}
	for i, s := range samplers {
		waitFor(t, deadline, fmt.Sprintf("rule and quota on instance %d", i), func() bool { return onQuota(explain(s)) })
	}

	cp.stop()
	stopped := time.Now()
	for i, s := range samplers {
		if e := explain(s); !onQuota(e) {
			t.Errorf("instance %d just after the control plane stopped: %+v, want the last rule and quota still in force", i, e)
		}
	}
	calls := make([]int64, len(loads))
	for i, l := range loads {
		calls[i] = l.calls.Load()
	}
	for i, s := range samplers {
		waitFor(t, deadline, fmt.Sprintf("fallback on instance %d", i), func() bool {
			e := explain(s)
			return e.Reason == sampler.ReasonFallback && e.Rule == ""
		})
		t.Logf("instance %d fell back to the local default %v after the stop", i, time.Since(stopped))
	}
	e := explain(samplers[0])
	t.Logf("offline: %s", e.Detail)
	for i, l := range loads {
		if l.calls.Load() <= calls[i] {
			t.Errorf("instance %d decided no span while the control plane was down", i)
		}
	}

	restart := time.Now()
	startControlPlane(t, rs, cp.addr)
	for i, s := range samplers {
		waitFor(t, 3*deadline, fmt.Sprintf("rule again on instance %d", i), func() bool { return explain(s).Rule == "shop-out" })
		t.Logf("instance %d back on the rule %v after the restart", i, time.Since(restart))
	}
	for i, l := range loads {
		slowest := time.Duration(l.slowest.Load())
		t.Logf("instance %d: %d spans decided, slowest ShouldSample %v", i, l.calls.Load(), slowest)
		if slowest > time.Second {
			t.Errorf("instance %d: a ShouldSample call took %v: it must never wait for the network", i, slowest)
		}
	}
}

// proxy is a SamplingService in front of a real control plane: it forwards
// every call, keeps what passed, and with refuseStreams answers
// StreamSampling with UNIMPLEMENTED, as a server without streams would.
type proxy struct {
	pb.UnimplementedSamplingServiceServer
	up            pb.SamplingServiceClient
	refuseStreams bool
	dropTargets   atomic.Bool // stream targets are not passed on
	dropReports   atomic.Bool // stream reports are not passed on
	stop          func()      // stops the proxy's server, dropping its connections

	mu            sync.Mutex
	streamCalls   int
	open          int // streams open now
	hellos        []onStream[*pb.Hello]
	streamReports []onStream[*pb.Report]
	streamTargets []onStream[*pb.TargetSet]
	cuts          []context.CancelFunc
	reports       []*pb.GetSamplingTargetsRequest
	answers       []*pb.GetSamplingTargetsResponse
}

// onStream is a message and the stream it passed on, counted from 1.
type onStream[M any] struct {
	stream int
	msg    M
}

// cut ends every stream open now, as a replica that goes away does.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cancel := range p.cuts {
		cancel()
	}
	p.cuts = nil
}

// on returns the messages of ms that passed on stream n, under p.mu.
func on[M any](p *proxy, ms *[]onStream[M], n int) []M {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []M
	for _, m := range *ms {
		if m.stream == n {
			out = append(out, m.msg)
		}
	}
	return out
}

func (p *proxy) GetSamplingRules(ctx context.Context, req *pb.GetSamplingRulesRequest) (*pb.GetSamplingRulesResponse, error) {
	return p.up.GetSamplingRules(ctx, req)
}

func (p *proxy) GetSamplingTargets(ctx context.Context, req *pb.GetSamplingTargetsRequest) (*pb.GetSamplingTargetsResponse, error) {
	resp, err := p.up.GetSamplingTargets(ctx, req)
	if err == nil {
		p.mu.Lock()
		p.reports = append(p.reports, proto.Clone(req).(*pb.GetSamplingTargetsRequest))
		p.answers = append(p.answers, proto.Clone(resp).(*pb.GetSamplingTargetsResponse))
		p.mu.Unlock()
	}
	return resp, err
}

func (p *proxy) StreamSampling(down pb.SamplingService_StreamSamplingServer) error {
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	p.mu.Lock()
	p.streamCalls++
	p.open++
	n := p.streamCalls
	p.cuts = append(p.cuts, cancel)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.open--
		p.mu.Unlock()
	}()
	if p.refuseStreams {
		return status.Error(codes.Unimplemented, "this server takes no streams")
	}
	up, err := p.up.StreamSampling(ctx)
	if err != nil {
		return err
	}
	// Client to server. This goroutine ends when the client's side ends:
	// Recv fails once the handler has returned, as in the real service.
	go func() {
		for {
			m, err := down.Recv()
			if err != nil {
				_ = up.CloseSend()
				return
			}
			p.mu.Lock()
			if h := m.GetHello(); h != nil {
				p.hellos = append(p.hellos, onStream[*pb.Hello]{n, proto.Clone(h).(*pb.Hello)})
			}
			r := m.GetReport()
			if r != nil {
				p.streamReports = append(p.streamReports, onStream[*pb.Report]{n, proto.Clone(r).(*pb.Report)})
			}
			p.mu.Unlock()
			if r != nil && p.dropReports.Load() {
				continue
			}
			if err := up.Send(m); err != nil {
				return
			}
		}
	}()
	for {
		m, err := up.Recv()
		if err == io.EOF {
			return nil
		}
		if ctx.Err() != nil && down.Context().Err() == nil {
			return status.Error(codes.Unavailable, "stream cut by the proxy")
		}
		if err != nil {
			return err
		}
		if m.GetTargets() != nil && p.dropTargets.Load() {
			continue
		}
		if err := down.Send(m); err != nil {
			return err
		}
		if ts := m.GetTargets(); ts != nil {
			p.mu.Lock()
			p.streamTargets = append(p.streamTargets, onStream[*pb.TargetSet]{n, proto.Clone(ts).(*pb.TargetSet)})
			p.mu.Unlock()
		}
	}
}

// startProxy serves p on a loopback port in front of cp.
func startProxy(t *testing.T, cp *controlPlane, p *proxy) string {
	t.Helper()
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.up = pb.NewSamplingServiceClient(conn)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterSamplingServiceServer(gs, p)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			gs.Stop()
			<-served
			conn.Close()
		})
	}
	t.Cleanup(p.stop)
	return lis.Addr().String()
}

// clientOf returns the client id that said hello on stream n, under p.mu.
func (p *proxy) clientOf(n int) string {
	for _, h := range p.hellos {
		if h.stream == n {
			return h.msg.GetClientId()
		}
	}
	return ""
}

// quotaOf returns the rule's target in a response, or nil.
func quotaOf(resp *pb.GetSamplingTargetsResponse, rule string) *pb.SamplingTarget {
	for _, tg := range resp.GetTargets() {
		if tg.GetRuleName() == rule {
			return tg
		}
	}
	return nil
}

func statsOf(req *pb.GetSamplingTargetsRequest, rule string) *pb.SamplingStatistics {
	for _, st := range req.GetStatistics() {
		if st.GetRuleName() == rule {
			return st
		}
	}
	return nil
}

// TestE2EUnaryFallback: against a server that refuses streams, the sampler
// polls GetSamplingRules and GetSamplingTargets, echoing its receipts, so an
// instance alone gets the whole reservoir from its second report on.
func TestE2EUnaryFallback(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	const reservoir = 8
	cp.createRule(t, &pb.Rule{Name: "shop-unary", Priority: 1, ServiceName: "shop", ReservoirSize: reservoir, FixedRate: 0})
	p := &proxy{refuseStreams: true}
	addr := startProxy(t, cp, p)

	s := newSampler(t, addr)
	runLoad(t, s, 50)
	waitFor(t, deadline, "rule over unary calls", func() bool { return explain(s).Rule == "shop-unary" })
	waitFor(t, 2*deadline, "three unary reports", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.reports) >= 3
	})

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.streamCalls != 1 {
		t.Errorf("%d stream attempts, want 1: after UNIMPLEMENTED the sampler polls", p.streamCalls)
	}
	for i := 1; i < len(p.reports); i++ {
		prev := quotaOf(p.answers[i-1], "shop-unary")
		st := statsOf(p.reports[i], "shop-unary")
		if prev == nil || st == nil {
			t.Fatalf("report %d: no statistics or no previous target for the rule: %v / %v", i, p.reports[i], p.answers[i-1])
		}
		if st.GetReceipt() != prev.GetReceipt() || st.GetReceipt() == "" {
			t.Errorf("report %d echoes receipt %q, want the previous target's %q", i, st.GetReceipt(), prev.GetReceipt())
		}
		if len(p.answers[i].GetRejected()) > 0 {
			t.Errorf("report %d: rejected %v", i, p.answers[i].GetRejected())
		}
		// Alone, with its previous rate retracted, the instance is the whole
		// fleet.
		q := quotaOf(p.answers[i], "shop-unary").GetReservoirQuota()
		if st.GetRequestCount() > 0 && math.Abs(q-reservoir) > 1e-6 {
			t.Errorf("report %d (%d requests): quota %v, want the whole reservoir %d", i, st.GetRequestCount(), q, reservoir)
		}
	}
}

// TestE2EReconnectKeepsTheShare: when its stream is cut, the sampler opens
// a new one and echoes its last receipts in the first report there, so the
// control plane replaces what it reported on the old stream instead of
// counting it twice: alone, the instance keeps the whole reservoir.
func TestE2EReconnectKeepsTheShare(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	const reservoir = 8
	cp.createRule(t, &pb.Rule{Name: "shop-reconnect", Priority: 1, ServiceName: "shop", ReservoirSize: reservoir, FixedRate: 0})
	p := &proxy{}
	addr := startProxy(t, cp, p)

	s := newSampler(t, addr)
	runLoad(t, s, 50)
	waitFor(t, deadline, "the rule's target on the first stream", func() bool {
		for _, ts := range on(p, &p.streamTargets, 1) {
			if ts.GetRulesVersion() > 0 && len(ts.GetTargets()) > 0 {
				return true
			}
		}
		return false
	})
	p.cut()
	waitFor(t, 2*deadline, "a target on the second stream", func() bool { return len(on(p, &p.streamTargets, 2)) > 0 })

	var last string // the receipt of the rule's last target on the first stream
	for _, ts := range on(p, &p.streamTargets, 1) {
		for _, tg := range ts.GetTargets() {
			if tg.GetRuleName() == "shop-reconnect" {
				last = tg.GetReceipt()
			}
		}
	}
	first := on(p, &p.streamReports, 2)[0]
	var st *pb.SamplingStatistics
	for _, d := range first.GetStatistics() {
		if d.GetRuleName() == "shop-reconnect" {
			st = d
		}
	}
	if st == nil || last == "" || st.GetReceipt() != last {
		t.Fatalf("the new stream's first report has %v, want the receipt %q of the last target", st, last)
	}
	for _, r := range on(p, &p.streamReports, 2)[1:] {
		for _, d := range r.GetStatistics() {
			if d.GetReceipt() != "" {
				t.Errorf("a later report on the stream carries a receipt: %v", d)
			}
		}
	}
	ts := on(p, &p.streamTargets, 2)[0]
	if len(ts.GetRejected()) > 0 {
		t.Errorf("rejected: %v", ts.GetRejected())
	}
	if st.GetRequestCount() == 0 {
		t.Fatal("no requests in the first report on the new stream: the load did not run")
	}
	var q *pb.SamplingTarget
	for _, tg := range ts.GetTargets() {
		if tg.GetRuleName() == "shop-reconnect" {
			q = tg
		}
	}
	if q == nil || math.Abs(q.GetReservoirQuota()-reservoir) > 1e-6 {
		t.Errorf("target after the reconnect %v, want the whole reservoir %d: the old stream's figure was counted as another instance", q, reservoir)
	}

	// A report whose answer never came may have been applied, its
	// receipts retracted already: after the next cut it goes again
	// marked resent, with the receipt it was taken with (which its first
	// send, a stream's later report, did not echo), for its bound only.
	p.dropTargets.Store(true)
	sent := len(on(p, &p.streamReports, 2))
	waitFor(t, 2*deadline, "an unanswered report", func() bool { return len(on(p, &p.streamReports, 2)) > sent })
	unanswered := on(p, &p.streamReports, 2)[sent]
	p.cut()
	waitFor(t, 2*deadline, "a report on the third stream", func() bool { return len(on(p, &p.streamReports, 3)) > 0 })
	again := on(p, &p.streamReports, 3)[0]
	if !again.GetResent() || again.GetSeq() != unanswered.GetSeq() {
		t.Errorf("the first report after an unanswered one: seq %d, resent %v; want seq %d, resent", again.GetSeq(), again.GetResent(), unanswered.GetSeq())
	}
	for _, d := range again.GetStatistics() {
		if d.GetRuleName() == "shop-reconnect" && d.GetReceipt() == "" {
			t.Errorf("the report sent again carries no receipt for its bound: %v", d)
		}
	}
}

// TestE2ECloseFlushes: the counts of spans decided since the last report
// reach the server when the sampler closes, and Close is idempotent.
func TestE2ECloseFlushes(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	cp.createRule(t, &pb.Rule{Name: "shop-flush", Priority: 1, ServiceName: "shop", ReservoirSize: 5, FixedRate: 0.1})
	p := &proxy{}
	addr := startProxy(t, cp, p)

	// One report soon after connecting, then none for an hour: what
	// follows can only reach the server by Close.
	s, err := sampler.New(sampler.WithEndpoint(addr), sampler.WithService("shop", ""), sampler.WithLogger(discard), sampler.WithReportInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFor(t, deadline, "the first stream report", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.streamReports) > 0
	})
	// Its target: a quota of zero (no requests yet), so no borrowing.
	waitFor(t, deadline, "the first target", func() bool {
		e := explain(s)
		return e.Rule == "shop-flush" && e.Reason == sampler.ReasonFixedRate
	})

	const spans = 500
	var sampled int64
	rng := rand.New(rand.NewPCG(3, 4))
	for range spans {
		if s.ShouldSample(params(rng)).Decision == sdktrace.RecordAndSample {
			sampled++
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reports) != 1 {
		t.Fatalf("%d unary reports after Close, want the one flush", len(p.reports))
	}
	st := statsOf(p.reports[0], "shop-flush")
	if st.GetRequestCount() != spans || st.GetSampledCount() != sampled || st.GetBorrowCount() > st.GetSampledCount() {
		t.Errorf("flushed %d requests, %d sampled, %d borrowed; want %d and %d", st.GetRequestCount(), st.GetSampledCount(), st.GetBorrowCount(), spans, sampled)
	}
	if st.GetReceipt() == "" {
		t.Error("the flush echoes no receipt of the stream's last target")
	}
	if rej := p.answers[0].GetRejected(); len(rej) > 0 {
		t.Errorf("the server rejected the flush: %v", rej)
	}
	var streamed int64
	for _, r := range p.streamReports {
		for _, d := range r.msg.GetStatistics() {
			streamed += d.GetRequestCount()
		}
	}
	if streamed != 0 {
		t.Errorf("the stream reported %d requests before any span: want 0", streamed)
	}

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("second Close: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("second Close did not return")
	}
	// Closed, it still decides, with the last rules.
	if e := explain(s); e.Rule != "shop-flush" {
		t.Errorf("after Close: %+v, want the last rule still in force", e)
	}
}

// TestE2ETLS: a sampler given TLS credentials gets its rules and quotas from
// a control plane that serves TLS only, and one without them gets nothing.
func TestE2ETLS(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	pki := testpki.New(t)
	serverCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pki.ServerCert}, MinVersion: tls.VersionTLS12})
	clientCreds := credentials.NewTLS(&tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12})
	cp := startControlPlaneTLS(t, rs, "127.0.0.1:0", serverCreds, clientCreds)
	cp.createRule(t, &pb.Rule{Name: "shop-tls", Priority: 1, ServiceName: "shop", ReservoirSize: 5, FixedRate: 0.1})

	s, err := sampler.New(sampler.WithEndpoint(cp.addr), sampler.WithService("shop", ""), sampler.WithLogger(discard), sampler.WithTransportCredentials(clientCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFor(t, deadline, "rules over TLS", func() bool { return explain(s).Rule == "shop-tls" })

	plain, err := sampler.New(sampler.WithEndpoint(cp.addr), sampler.WithService("shop", ""), sampler.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	time.Sleep(2 * e2eInterval)
	if e := explain(plain); e.Reason != sampler.ReasonFallback || e.RulesVersion != 0 {
		t.Errorf("a plaintext sampler against a TLS control plane: %+v, want the local default and no rules", e)
	}
}

// largestRule returns a rule at maximum field sizes as SDKs get it, every
// character four bytes of UTF-8 where a field allows any, except the
// service globs: 64 stars, the longest glob that matches every service.
// Description and labels, which SDKs do not get (TestForServiceSendsWhatSDKsUse
// in internal/catalog), are left empty: they would only slow the test.
func largestRule(i int) *pb.Rule {
	wide := func(n int) string { return strings.Repeat("\U0010FFFD", n) }
	r := &pb.Rule{
		Name: fmt.Sprintf("%0*d", rules.MaxNameLen, i), Priority: int32(1 + i%rules.MaxPriority),
		FixedRate: 0.123456789, ReservoirSize: rules.MaxReservoirSize,
		ServiceName: strings.Repeat("*", rules.MaxServiceNameLen), ServiceType: strings.Repeat("*", rules.MaxServiceTypeLen),
		Host: wide(rules.MaxHostLen), HttpMethod: wide(rules.MaxHTTPMethodLen), UrlPath: wide(rules.MaxURLPathLen),
		ResourceArn: wide(rules.MaxResourceARNLen), Attributes: map[string]string{},
		SamplingRateBoost: &pb.SamplingRateBoost{MaxRate: 0.987654321, CooldownWindowMinutes: int32(rules.MaxBoostCooldown / time.Minute)},
	}
	for k := range rules.MaxAttributes {
		r.Attributes[fmt.Sprintf("%02d", k)+wide(rules.MaxAttributeLen-2)] = wide(rules.MaxAttributeLen)
	}
	// Literal globs, which largestResource declares: the rule set is
	// the instance's.
	r.ResourceAttributes = largestResource()
	return r
}

// largestResource is the resource of the instance that gets the largest
// rule set: rules.MaxResourceAttributes attributes whose keys and values
// are as long as a rule's resource globs may be.
func largestResource() map[string]string {
	wide := func(n int) string { return strings.Repeat("\U0010FFFD", n) }
	m := map[string]string{}
	for k := range rules.MaxResourceAttributes {
		m[fmt.Sprintf("%02d", k)+wide(rules.MaxResourceAttributeLen-2)] = wide(rules.MaxResourceAttributeLen)
	}
	return m
}

// TestE2ELargestRuleSet: a control plane holding rules.MaxRules rules at
// maximum field sizes, all matching every service, refuses one more and
// sends them in one message over gRPC's default 4 MiB, which the sampler
// accepts: it decides by the last rule of the set.
func TestE2ELargestRuleSet(t *testing.T) {
	noLeaks(t)
	rs := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The last before Default, the one the sampler decides by: a rule on
	// a resource ARN can match no span, so it has none.
	last := largestRule(rules.MaxRules - 2)
	last.Priority, last.ResourceArn, last.Host, last.HttpMethod, last.UrlPath, last.Attributes = rules.MaxPriority, "*", "*", "*", "*", nil
	// Straight into the store, before the replica starts, so that its
	// catalog loads them once instead of after every create; each is
	// checked as the server would.
	st, err := redisstore.New(ctx, rs.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rules.MaxRules - 1 {
		p := largestRule(i)
		if i == rules.MaxRules-2 {
			p = last
		}
		r := rulepb.FromProto(p).Normalize()
		if err := rules.Validate(&r); err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateRule(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	cp := startControlPlane(t, rs, "127.0.0.1:0")
	if _, err := cp.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: largestRule(rules.MaxRules)}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a create past %d rules: %v, want FailedPrecondition", rules.MaxRules, err)
	}

	// The rule set as the sampler gets it, read with no size limit.
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var set *pb.GetSamplingRulesResponse
	waitFor(t, deadline, "the whole rule set", func() bool {
		set, err = pb.NewSamplingServiceClient(conn).GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: "shop", ResourceAttributes: largestResource()})
		return err == nil && len(set.GetRules()) == rules.MaxRules
	})
	size := proto.Size(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: &pb.RuleSet{RulesVersion: set.GetRulesVersion(), Rules: set.GetRules()}}})
	t.Logf("%d rules at maximum field sizes: %d bytes", len(set.GetRules()), size)
	// rules.MaxRules says at most 9,713 bytes a rule, well under the 16
	// MiB the sampler accepts; over 4 MiB, this test needs the sampler's
	// limit.
	if size > rules.MaxRules*9_713+32 || size <= 4<<20 {
		t.Errorf("the largest rule set is %d bytes, want over 4 MiB and at most %d", size, rules.MaxRules*9_713+32)
	}

	s := newSampler(t, cp.addr, sampler.WithResourceAttributes(largestResource()))
	waitFor(t, deadline, "a decision by the last rule", func() bool { return explain(s).Rule == last.GetName() })
}
