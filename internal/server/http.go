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
//
// Every route is also held against the access policy (package auth), which
// serve puts in front of this handler: HTTPRoutes lists them for its test.
func HTTPHandler(ready *Readiness, gatherer prometheus.Gatherer, debug bool, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, r := range httpRoutes(ready, gatherer, debug, ui) {
		mux.Handle(r.pattern, r.h)
	}
	return mux
}

type httpRoute struct {
	pattern string
	h       http.Handler
}

func httpRoutes(ready *Readiness, gatherer prometheus.Gatherer, debug bool, ui http.Handler) []httpRoute {
	routes := []httpRoute{
		{"GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("ok\n"))
		})},
		{"GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Ready() {
				http.Error(w, "not ready: the rules are not loaded yet", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})},
		{"GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})},
	}
	if ui != nil {
		routes = append(routes,
			httpRoute{"/ui/", ui},
			httpRoute{"GET /ui", http.RedirectHandler("/ui/", http.StatusFound)})
	}
	if debug {
		routes = append(routes,
			httpRoute{"/debug/pprof/", http.HandlerFunc(pprof.Index)},
			httpRoute{"/debug/pprof/profile", http.HandlerFunc(pprof.Profile)},
			httpRoute{"/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol)},
			httpRoute{"/debug/pprof/trace", http.HandlerFunc(pprof.Trace)})
	}
	return routes
}

// HTTPRoutes returns the patterns (http.ServeMux's) of HTTPHandler's
// routes with debug and, if withUI, the dashboard mounted (the
// dashboard's own routes under /ui/ are ui.Routes).
func HTTPRoutes(debug, withUI bool) []string {
	var ui http.Handler
	if withUI {
		ui = http.NotFoundHandler()
	}
	var out []string
	for _, r := range httpRoutes(nil, nil, debug, ui) {
		out = append(out, r.pattern)
	}
	return out
}
