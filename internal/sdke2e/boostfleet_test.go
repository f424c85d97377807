package sdke2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	fleetstatus "github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xraycore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// boostFleet is a control plane (the gRPC server and the X-Ray core on one
// report pipeline, the embedded store) on a clock the test moves, with
// real SDK instances that report through their unary path, and X-Ray
// clients.
type boostFleet struct {
	clk   *clocktest.Clock
	st    *memstore.Store
	cat   *catalog.Catalog
	reg   *prometheus.Registry
	sdks  []*sampler.Sampler
	trs   []trace.Tracer
	xray  *xraycore.Core
	xrays int
}

func newBoostFleet(t *testing.T, sdks, xrays int) *boostFleet {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &boostFleet{clk: clocktest.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)), reg: prometheus.NewRegistry(), xrays: xrays}
	st, err := memstore.New(memstore.Options{Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	f.cat = catalog.New(st, catalog.Options{Logger: log})
	if err := f.cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Rules: st, Catalog: f.cat, Ledger: st, Budgets: st, Now: f.clk.Now, Logger: log, Registerer: f.reg, ReportInterval: 10 * time.Second})
	srv.SetServing(true)
	conn, addr := servetest.Serve(t, srv)
	rule := &pb.Rule{Name: "checkout", Priority: 1, FixedRate: 0.005, ServiceName: "shop", HttpMethod: "*", UrlPath: "*", Host: "*", ServiceType: "*", ResourceArn: "*",
		SamplingRateBoost: &pb.SamplingRateBoost{MaxRate: 0.25, CooldownWindowMinutes: 5}}
	if _, err := pb.NewRuleServiceClient(conn).CreateRule(ctx, &pb.CreateRuleRequest{Rule: rule}); err != nil {
		t.Fatal(err)
	}
	if err := f.cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if f.xray, err = xraycore.New(xraycore.Options{Catalog: f.cat, Rules: edit.NewRules(st, edit.WithClock(f.clk.Now)), Sampling: srv.Sampling(),
		Fleet: fleetstatus.New(f.cat, st, 10*time.Second, f.clk.Now), Now: f.clk.Now}); err != nil {
		t.Fatal(err)
	}
	for i := range sdks {
		s, err := sampler.New(sampler.WithEndpoint(addr), sampler.WithService("shop", ""), sampler.WithClock(f.clk), sampler.WithClientID(fmt.Sprintf("sdk-%d", i)), sampler.WithLogger(log), sampler.WithManualReports())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(s.SpanProcessor()))
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		f.sdks = append(f.sdks, s)
		f.trs = append(f.trs, tp.Tracer("fleet"))
	}
	return f
}

// boostSeen is one boost as the fleet's clients saw it.
type boostSeen struct {
	first   time.Time
	maxRate float64
	by      map[string]bool // the kinds of client handed it: "sdk", "xray"
}

// run runs the fleet for d: every client has 500 requests of the rule
// each 10 s, every share(elapsed)-th of them anomalous (an HTTP 500), and
// reports every 10 s, the clients spread over the interval. It returns the
// boosts the clients were handed, by expiry (one per boost), and fails the
// test if one was in force past its expiry or before the rise at calm.
func (f *boostFleet) run(t *testing.T, calm, d time.Duration) map[time.Time]boostSeen {
	t.Helper()
	ctx := context.Background()
	const interval, requests = 10 * time.Second, 500
	seen := map[time.Time]boostSeen{}
	note := func(by string, now time.Time, rate float64, expiry time.Time) {
		b, ok := seen[expiry]
		if !ok {
			b.first, b.by = now, map[string]bool{}
		}
		b.by[by] = true
		b.maxRate = max(b.maxRate, rate)
		seen[expiry] = b
	}
	clients := len(f.sdks) + f.xrays
	start := f.clk.Now()
	for elapsed := time.Duration(0); elapsed < d; elapsed += interval {
		every := 200 // 0.5 %
		if elapsed >= calm {
			every = 20 // 5 %
		}
		for i := range clients {
			f.clk.Add(interval / time.Duration(clients))
			now := f.clk.Now()
			if i < len(f.sdks) {
				s := f.sdks[i]
				for n := range requests {
					code := 200
					if n%every == 0 {
						code = 500
					}
					_, span := f.trs[i].Start(ctx, "GET /checkout", trace.WithAttributes(attribute.Int("http.response.status_code", code)))
					span.End()
				}
				if err := s.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				e := s.Explain(sdktrace.SamplingParameters{TraceID: trace.TraceID{1}, Name: "GET /checkout"})
				if e.Rule != "checkout" {
					t.Fatalf("the SDK matched %q, want checkout", e.Rule)
				}
				if !e.BoostExpiry.IsZero() {
					note("sdk", now, e.FixedRate, e.BoostExpiry)
					if e.FixedRate <= 0.005 {
						t.Fatalf("the SDK samples at %v under a boost, not above the rule's 0.005", e.FixedRate)
					}
				}
				continue
			}
			anomalies := int64(requests / every)
			got, err := f.xray.Report(ctx, xray.Report{ClientID: fmt.Sprintf("%024x", i+1),
				Statistics: []xray.Statistics{{Rule: "checkout", Requests: requests, Sampled: 3, Time: now}},
				Boosts:     []xray.BoostStatistics{{Rule: "checkout", Service: "shop", Total: requests, Anomalies: anomalies}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Targets) != 1 || len(got.Rejected)+len(got.BoostRejected) > 0 {
				t.Fatalf("X-Ray answer %+v", got)
			}
			if b := got.Targets[0].Boost; b != nil {
				note("xray", now, b.Rate, b.Expiry.UTC())
			}
		}
	}
	for expiry, b := range seen {
		if b.first.Before(start.Add(calm)) {
			t.Errorf("a boost handed out at %v, before the rise at %v", b.first, start.Add(calm))
		}
		if expiry.Sub(b.first) > time.Minute {
			t.Errorf("a boost first seen at %v expires at %v: more than a minute", b.first, expiry)
		}
	}
	return seen
}

// TestFleetBoostSDK: two SDK instances (real decisions and spans, the
// span processor's counts, the unary report path over gRPC) and two X-Ray
// clients of one rule, ten calm minutes, then the anomalous share jumps
// tenfold for four: the control plane starts one boost, every client is
// handed the same one (the SDKs sample at it), above the fixed rate and at
// most MaxRate, for at most a minute; none again within the cooldown; and
// the boost's traces count (none cut as over the bound).
func TestFleetBoostSDK(t *testing.T) {
	f := newBoostFleet(t, 2, 2)
	seen := f.run(t, 10*time.Minute, 14*time.Minute)
	if len(seen) != 1 {
		t.Fatalf("%d boosts, want 1: %+v", len(seen), seen)
	}
	for _, b := range seen {
		if !(b.maxRate > 0.005 && b.maxRate <= 0.25) {
			t.Errorf("boost rate %v, want in (0.005, 0.25]", b.maxRate)
		}
		if !b.by["sdk"] || !b.by["xray"] {
			t.Errorf("the boost reached %v, want the SDKs and the X-Ray clients", b.by)
		}
		t.Logf("boost: first handed out %v, highest rate %v", b.first, b.maxRate)
	}
	if n := promtest.Sum(t, f.reg, "controlplane_report_traces_clamped_total"); n != 0 {
		t.Errorf("%v sampled traces cut as over the bound", n)
	}
	if n := promtest.Sum(t, f.reg, "controlplane_boosts_started_total"); n != 1 {
		t.Errorf("%v boosts started, want 1", n)
	}
}

// TestFleetBoostSDKExhaustedBudget: the same fleet and jump under an
// exhausted budget covering the rule: no boost.
func TestFleetBoostSDKExhaustedBudget(t *testing.T) {
	f := newBoostFleet(t, 2, 2)
	ctx := context.Background()
	bg, err := f.st.CreateBudget(ctx, budget.Budget{Name: "shop", Scope: budget.Scope{Services: []string{"shop"}}, Mode: budget.Enforce,
		MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	now := f.clk.Now()
	if err := f.st.PutStates(ctx, []budget.State{{Budget: bg.Name, BudgetUID: bg.UID, MonthStart: budget.MonthStart(now), Computed: now,
		Decision: budget.Decision{FixedRateFactor: 1, ReservoirFactor: 1, Exhausted: true, Spent: 2e6, Forecast: 2e6}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	if seen := f.run(t, 10*time.Minute, 14*time.Minute); len(seen) != 0 {
		t.Fatalf("boosts under an exhausted budget: %+v", seen)
	}
}
