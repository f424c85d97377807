package server_test

// Fleet tests: real SDK instances (clients/go/sampler) against real
// replicas on a real Redis, counting the traces the fleet samples each
// second against the rule's reservoir R — at a cold start, and while Redis
// is frozen (SIGSTOP) and after it thaws. The default sizes keep them short
// enough for CI on a shared machine; FLEET_INSTANCES, FLEET_RESERVOIR,
// FLEET_SECONDS and FLEET_FREEZE make the bigger runs whose figures are in
// docs/RELIABILITY.md.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fleetConfig is one run.
type fleetConfig struct {
	instances int
	replicas  int
	reservoir int64
	perSecond float64       // requests a second of an average instance
	interval  time.Duration // the control plane's report interval
	// The run: steady for settle, then Redis frozen for freeze, then after.
	settle, freeze, after time.Duration
}

// second counts one second of the fleet's sampled traces, by reason.
type second struct {
	reservoir, borrowed, fallback, requests atomic.Int64
}

func (s *second) sampled() int64 { return s.reservoir.Load() + s.borrowed.Load() + s.fallback.Load() }

type fleetResult struct {
	cfg     fleetConfig
	seconds []second
	frozeAt int // the first second of the freeze; -1 without one
	thawAt  int
}

// window returns the mean of f over seconds [from, to).
func (r *fleetResult) window(from, to int, f func(*second) int64) float64 {
	to = min(to, len(r.seconds))
	if to <= from {
		return 0
	}
	var sum int64
	for i := from; i < to; i++ {
		sum += f(&r.seconds[i])
	}
	return float64(sum) / float64(to-from)
}

func (r *fleetResult) max(from, to int, f func(*second) int64) int64 {
	var m int64
	for i := from; i < min(to, len(r.seconds)); i++ {
		m = max(m, f(&r.seconds[i]))
	}
	return m
}

func total(s *second) int64     { return s.sampled() }
func reservoir(s *second) int64 { return s.reservoir.Load() }

// startFleetReplica runs one replica on rs and returns its address.
func startFleetReplica(t *testing.T, rs *redistest.Server, interval time.Duration) (addr string, cat *catalog.Catalog) {
	t.Helper()
	st, err := redisstore.New(context.Background(), rs.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat = servetest.Catalog(t, st, catalog.Options{Logger: quiet, Poll: time.Second})
	_, addr = servetest.Serve(t, server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Logger: quiet, ReportInterval: interval}))
	return addr, cat
}

// runFleet starts the replicas and the instances at once (a cold start),
// loads them with Zipf-skewed traffic, freezes Redis after settle if
// cfg.freeze is set, and counts every second's sampled traces.
func runFleet(t *testing.T, cfg fleetConfig) *fleetResult {
	rs := redistest.Start(t)
	var addrs []string
	var cats []*catalog.Catalog
	for range cfg.replicas {
		a, c := startFleetReplica(t, rs, cfg.interval)
		addrs, cats = append(addrs, a), append(cats, c)
	}
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewRuleServiceClient(conn).CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: "fleet", Priority: 1, ServiceName: "shop", ReservoirSize: cfg.reservoir,
	}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range cats {
		for c.Current().Rule("fleet") == nil {
			if ctx.Err() != nil {
				t.Fatal("the replicas did not load the rule")
			}
			c.Kick()
			time.Sleep(5 * time.Millisecond)
		}
	}

	total := cfg.settle + cfg.freeze + cfg.after
	res := &fleetResult{cfg: cfg, seconds: make([]second, int(total/time.Second)+2), frozeAt: -1}
	rng := rand.New(rand.NewPCG(1, 2))
	weights := make([]float64, cfg.instances)
	var sum float64
	for i := range weights {
		weights[i] = 1 / math.Pow(float64(i+1), 0.8)
		sum += weights[i]
	}
	rng.Shuffle(len(weights), func(i, j int) { weights[i], weights[j] = weights[j], weights[i] })

	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range cfg.instances {
		s, err := sampler.New(sampler.WithEndpoint(addrs[i%len(addrs)]), sampler.WithService("shop", ""),
			sampler.WithLogger(quiet), sampler.WithFallback(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		rate := cfg.perSecond * float64(cfg.instances) * weights[i] / sum
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			load(loadCtx, s, rate, start, res.seconds, uint64(i))
		}()
	}
	if cfg.freeze > 0 {
		sleepUntil(start.Add(cfg.settle))
		rs.Freeze()
		res.frozeAt = int(time.Since(start) / time.Second)
		sleepUntil(start.Add(cfg.settle + cfg.freeze))
		rs.Thaw()
		res.thawAt = int(time.Since(start) / time.Second)
	}
	sleepUntil(start.Add(total))
	stopLoad()
	wg.Wait()
	waitSamplersGone(t)
	res.seconds = res.seconds[:int(total/time.Second)]
	return res
}

// waitSamplersGone waits for the goroutines of closed samplers to end: with
// dozens of connections torn down at once on a loaded machine that takes
// longer than the package's leak check waits. One still there after 15 s
// is a sampler that did not stop.
func waitSamplersGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	buf := make([]byte, 1<<22)
	for {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("controlplane/clients/go/sampler.")) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("sampler goroutines still running 15 s after Close:\n%s", buf[:n])
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sleepUntil waits for a moment of the run: the scenario's own time, not a
// wait for something to happen.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// load starts root spans on s at perSecond until ctx ends, counting each
// sampled one under the second of the run it falls in, by the reason
// Explain gives just before (the instance's buckets are its own: nothing
// else takes from them in between).
func load(ctx context.Context, s *sampler.Sampler, perSecond float64, start time.Time, seconds []second, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		elapsed := time.Since(start)
		sec := int(elapsed / time.Second)
		if sec >= len(seconds) {
			continue
		}
		c := &seconds[sec]
		for due := int64(perSecond * elapsed.Seconds()); n < due; n++ {
			var id trace.TraceID
			for i := range id {
				id[i] = byte(rng.Uint32())
			}
			p := sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: "GET /", Kind: trace.SpanKindServer}
			why := s.Explain(p).Reason
			c.requests.Add(1)
			if s.ShouldSample(p).Decision != sdktrace.RecordAndSample {
				continue
			}
			switch why {
			case sampler.ReasonReservoir:
				c.reservoir.Add(1)
			case sampler.ReasonBorrowed:
				c.borrowed.Add(1)
			default:
				c.fallback.Add(1)
			}
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func (r *fleetResult) log(t *testing.T) {
	t.Helper()
	var line string
	for i := range r.seconds {
		s := &r.seconds[i]
		line += fmt.Sprintf(" %d/%d/%d", s.reservoir.Load(), s.borrowed.Load(), s.fallback.Load())
	}
	t.Logf("R = %d, %d instances, %d replicas: traces each second (reservoir/borrowed/fallback):%s", r.cfg.reservoir, r.cfg.instances, r.cfg.replicas, line)
}

// TestFleetColdStartRealSDK: a fleet that starts at once never holds quotas
// adding up to more than the reservoir, so the reservoir traces of the
// fleet stay about R a second from the first quotas on, instead of R × ln N
// at first. (A fresh quota's bucket starts full, so the first instance to
// report, alone with all of R, may take up to 2 R in its first second.)
func TestFleetColdStartRealSDK(t *testing.T) {
	cfg := fleetConfig{
		instances: envInt("FLEET_INSTANCES", 60), replicas: 2, reservoir: int64(envInt("FLEET_RESERVOIR", 10)),
		perSecond: 20, interval: time.Second, settle: time.Duration(envInt("FLEET_SECONDS", 10)) * time.Second,
	}
	r := runFleet(t, cfg)
	r.log(t)
	R := float64(cfg.reservoir)
	n := len(r.seconds)
	peak := r.max(0, n, reservoir)
	t.Logf("reservoir traces a second (R = %v): largest second %d, mean %.1f over the first 5 s and %.1f over the next %d; all sampled (with the borrowing before the first targets): %.1f and %.1f",
		R, peak, r.window(0, 5, reservoir), r.window(5, n, reservoir), n-5, r.window(0, 5, total), r.window(5, n, total))
	if float64(peak) > 3.5*R {
		t.Errorf("%d reservoir traces in one second, want at most about 2 R = %v", peak, 2*R)
	}
	if late := r.window(5, n, reservoir); late > 1.4*R || late < 0.6*R {
		t.Errorf("%.1f reservoir traces a second once settled, want about R = %v", late, R)
	}
}

// TestFleetStoreFreezeRealSDK: with Redis frozen for a while at a 1 s
// interval, the replicas answer every report with the last quotas renewed
// before they lapse, so the fleet keeps sampling about R a second instead of
// falling back to borrowing (a trace a second per instance) and the local
// default; and after the thaw, the reserve keeps new quotas within R while
// the old ones are still held.
func TestFleetStoreFreezeRealSDK(t *testing.T) {
	cfg := fleetConfig{
		instances: envInt("FLEET_INSTANCES", 60), replicas: 2, reservoir: int64(envInt("FLEET_RESERVOIR", 10)),
		perSecond: 20, interval: time.Second,
		settle: 6 * time.Second, freeze: time.Duration(envInt("FLEET_FREEZE", 6)) * time.Second, after: 6 * time.Second,
	}
	r := runFleet(t, cfg)
	r.log(t)
	R := float64(cfg.reservoir)
	before := r.window(3, r.frozeAt, total)
	during := r.window(r.frozeAt, r.thawAt, total)
	after := r.window(r.thawAt, len(r.seconds), total)
	t.Logf("sampled a second (R = %v): %.1f before, %.1f during the freeze (largest second %d), %.1f after it",
		R, before, during, r.max(r.frozeAt, r.thawAt, total), after)
	if during > 1.5*R {
		t.Errorf("%.1f traces a second while Redis was frozen, want about R = %v", during, R)
	}
	if after > 1.5*R {
		t.Errorf("%.1f traces a second after the thaw, want about R = %v", after, R)
	}
}
