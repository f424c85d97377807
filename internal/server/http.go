package server

import (
	"context"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness tracks whether the replica is ready, for /readyz and the gRPC
// health service, and whether its store answers, for
// controlplane_store_up. A replica is ready once it has loaded the rules,
// whatever its store does afterwards: through a store outage it keeps
// serving the last rules it loaded and renewing the last quotas, so taking
// every replica out of its Service then would leave the fleet nothing. The
// probes run in the background so that a slow store never makes a
// readiness check itself slow.
type Readiness struct {
	ready  atomic.Bool
	server *Server
	up     prometheus.Gauge
}

// NewReadiness starts out not ready; Run makes it follow the probes.
func NewReadiness(s *Server, reg prometheus.Registerer) *Readiness {
	r := &Readiness{server: s, up: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "controlplane_store_up",
		Help: "1 when the last probe of the store succeeded.",
	})}
	reg.MustRegister(r.up)
	return r
}

// Ready reports the outcome of the last probe.
func (r *Readiness) Ready() bool { return r.ready.Load() }

// Run calls ping (the store) and loaded (the replica has what it serves)
// every interval until ctx ends, and then reports not ready. A ping that
// succeeds also tells the store condition that the store answers.
func (r *Readiness) Run(ctx context.Context, ping, loaded func(context.Context) error, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		perr := ping(pctx)
		cancel()
		if ctx.Err() != nil {
			r.set(false)
			return
		}
		if perr == nil {
			r.server.storeDown.Cleared(ctx)
			r.up.Set(1)
		} else {
			r.up.Set(0)
		}
		err := loaded(ctx)
		if ok := err == nil; ok != r.ready.Load() {
			if ok {
				r.server.log.Info("ready")
			} else {
				r.server.log.Warn("not ready", "err", err)
			}
		}
		r.set(err == nil)
		select {
		case <-ctx.Done():
			r.set(false)
			return
		case <-t.C:
		}
	}
}

func (r *Readiness) set(ok bool) {
	r.ready.Store(ok)
	r.server.SetServing(ok)
}

// HTTPHandler serves /healthz (the process is alive), /readyz (the rules
// are loaded) and /metrics for Prometheus; with debug also Go's profiles under
// /debug/pprof/, which the load generator reads heap figures from; with ui
// the dashboard under /ui/ (package ui).
func HTTPHandler(ready *Readiness, gatherer prometheus.Gatherer, debug bool, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Ready() {
			http.Error(w, "not ready: the rules are not loaded yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	if ui != nil {
		mux.Handle("/ui/", ui)
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
	}
	if debug {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
