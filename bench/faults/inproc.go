package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// skewedReplica is a replica run in this process, wired as `serve` wires
// one (internal/cli's serve: store, catalog, server, budget controller,
// readiness probe; not the Jaeger ports or the dashboard, which no fault
// here uses), whose clock can be set off the real time. `serve` has no
// clock option, so clock skew is the one fault that needs it; every other
// fault runs the real binary. The clock is read by everything that reads
// one in `serve`: the server (ledger buckets, quota expiries), the store
// (audit times, the hours of budget usage) and the budget controller (its
// ticks).
type skewedReplica struct {
	redisURL string
	interval time.Duration
	grpcAddr string
	offset   atomic.Int64 // ns added to the real time
	warns    atomic.Int64

	mu      sync.Mutex
	running *inprocRun
}

// inprocRun is one start of a skewedReplica.
type inprocRun struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	srv    *server.Server
	bg     sync.WaitGroup
	close  func()
}

func startSkewedReplica(ctx context.Context, redisURL string, interval time.Duration) (*skewedReplica, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	r := &skewedReplica{redisURL: redisURL, interval: interval, grpcAddr: addr}
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *skewedReplica) now() time.Time { return time.Now().Add(time.Duration(r.offset.Load())) }

// setSkew sets the replica's clock d off the real time, at once, as a
// stepped clock does.
func (r *skewedReplica) setSkew(d time.Duration) { r.offset.Store(int64(d)) }

func (r *skewedReplica) addr() string { return r.grpcAddr }

func (r *skewedReplica) warnings() int { return int(r.warns.Load()) }

func (r *skewedReplica) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running != nil {
		return errors.New("already running")
	}
	log := slog.New(&warnCounter{n: &r.warns})
	client, err := redisstore.NewClient(r.redisURL)
	if err != nil {
		return err
	}
	st, err := redisstore.New(ctx, client, redisstore.Options{Now: r.now})
	if err != nil {
		_ = client.Close()
		return fmt.Errorf("open redis store: %w", err)
	}
	lis, err := net.Listen("tcp", r.grpcAddr)
	if err != nil {
		_ = st.Close()
		_ = client.Close()
		return err
	}
	reg := prometheus.NewRegistry()
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := cat.Load(ctx); err != nil {
		log.Warn("cannot load rules yet; will keep trying", "err", err)
	}
	// As serve wires it: budgets decided at once on an edit and on their
	// first traffic.
	ctl := controller.New(st, cat, controller.Options{Interval: r.interval, Logger: log, Registerer: reg, Now: r.now})
	srv := server.New(server.Options{
		Rules: st, Catalog: cat, Ledger: st, Budgets: st, Decider: ctl, Waker: ctl,
		ReportInterval: r.interval, Logger: log, Registerer: reg, Now: r.now,
	})
	readiness := server.NewReadiness(srv, reg)
	runCtx, cancel := context.WithCancel(context.Background())
	run := &inprocRun{reg: reg, cancel: cancel, srv: srv, close: func() { _ = st.Close(); _ = client.Close() }}
	run.bg.Add(4)
	go func() { defer run.bg.Done(); _ = srv.Serve(lis) }()
	go func() { defer run.bg.Done(); ctl.Run(runCtx) }()
	go func() { defer run.bg.Done(); readiness.Run(runCtx, st.Ping, rulesLoaded(cat), 2*time.Second) }()
	go func() { defer run.bg.Done(); _ = cat.Run(runCtx) }()
	r.running = run
	return nil
}

func (r *skewedReplica) counter(name string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		return 0
	}
	mfs, err := r.running.reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// stop stops the replica as `serve` does on SIGTERM: background work first,
// then a graceful stop of the gRPC server (5 s, as the binaries are given).
func (r *skewedReplica) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.running
	if run == nil {
		return
	}
	r.running = nil
	run.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	run.srv.Stop(ctx)
	run.bg.Wait()
	run.close()
}

// rulesLoaded is serve's second readiness probe: not ready before the first
// rules are loaded.
func rulesLoaded(cat *catalog.Catalog) func(context.Context) error {
	return func(context.Context) error {
		if cat.Current().Version == 0 {
			return errors.New("no rules loaded yet")
		}
		return nil
	}
}

// kill is stop: an in-process replica cannot crash without taking the
// suite with it. No fault kills the skewed replica.
func (r *skewedReplica) kill() { r.stop() }

func (r *skewedReplica) restart(ctx context.Context) error {
	r.stop()
	return r.start(ctx)
}

// warnCounter is a slog handler that only counts records at WARN or above,
// like countWarnings does for the binaries' logs.
type warnCounter struct{ n *atomic.Int64 }

func (h *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *warnCounter) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnCounter) WithGroup(string) slog.Handler      { return h }
