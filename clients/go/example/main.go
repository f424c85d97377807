// Command example wires the control plane's sampler into an OpenTelemetry
// TracerProvider and traces fake shop requests. Once a second it prints how
// many requests it served and how many were sampled, and for one of them the
// sampler's answer to "why was this request traced?".
//
// Start a control plane, then the example:
//
//	go run ./cmd/controlplane serve
//	go run ./clients/go/example --endpoint localhost:7070 --service example-shop
//
// Edit a rule for service example-shop (controlplane rules apply/update) and
// watch the sampled counts follow within a second. Ctrl-C stops it; the
// sampler's last counts reach the control plane on the way out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracesampling/controlplane/clients/go/sampler"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// run serves fake requests until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "", "the control plane's gRPC address (default: env CONTROLPLANE_ENDPOINT, else localhost:7070)")
	service := fs.String("service", "example-shop", "the service name rules are matched against")
	rate := fs.Float64("rate", 50, "fake requests per second")
	token := fs.String("token", "", "bearer token of role sdk, for a control plane with access control (default: env CONTROLPLANE_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !(*rate > 0) || *rate > 100_000 {
		return fmt.Errorf("--rate must be between 0 and 100000, got %v", *rate)
	}

	// The one line that matters: a sampler fed by the control plane. It
	// decides locally; connection trouble is logged, never waited for.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *token == "" {
		*token = os.Getenv("CONTROLPLANE_TOKEN")
	}
	opts := []sampler.Option{
		sampler.WithService(*service, ""),
		sampler.WithToken(*token), // none: a control plane on this machine needs none
		sampler.WithLogger(log),
	}
	if *endpoint != "" { // else the sampler's own default, as in any program
		opts = append(opts, sampler.WithEndpoint(*endpoint))
	}
	s, err := sampler.New(opts...)
	if err != nil {
		return err
	}
	why := &explainer{Sampler: s}
	counter := &countingProcessor{}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(why),
		// A real program adds its exporter here (sdktrace.WithBatcher);
		// this one only counts what would be exported.
		sdktrace.WithSpanProcessor(counter),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(*service))),
	)
	tracer := tp.Tracer("github.com/tracesampling/controlplane/clients/go/example")
	fmt.Fprintf(stdout, "serving %v fake requests/s as service %q; sampler %s\n", *rate, *service, s.Description())

	serve := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer serve.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	why.want.Store(true)
	var requests, total, totalSampled int64
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-serve.C:
			handle(ctx, tracer, rng)
			requests++
		case now := <-report.C:
			sampled := counter.sampled.Swap(0)
			total, totalSampled = total+requests, totalSampled+sampled
			fmt.Fprintf(stdout, "%s  %4d requests, %3d sampled\n", now.Format("15:04:05"), requests, sampled)
			if e, ok := why.take(); ok {
				fmt.Fprintf(stdout, "          why was %q %s? %s (reason %s, rule %q, rules version %d)\n",
					e.span, sampledWord(e.Sampled), e.Detail, e.Reason, e.Rule, e.RulesVersion)
			}
			requests = 0
			why.want.Store(true)
		}
	}

	// Spans first (the provider flushes its processors), then the sampler,
	// which sends its last counts to the control plane: both within the
	// same 5 s.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = tp.Shutdown(sctx)
	if cerr := s.Shutdown(sctx); err == nil {
		err = cerr
	}
	total, totalSampled = total+requests, totalSampled+counter.sampled.Load()
	fmt.Fprintf(stdout, "stopped: %d requests, %d sampled\n", total, totalSampled)
	return err
}

// route is one kind of fake request.
type route struct {
	method, route, path string
}

var routes = []route{
	{"GET", "/products/{id}", "/products/%d"},
	{"GET", "/products/{id}", "/products/%d"},
	{"GET", "/products/{id}", "/products/%d"},
	{"GET", "/cart", "/cart"},
	{"POST", "/cart/items", "/cart/items"},
	{"POST", "/checkout", "/checkout"},
}

// handle serves one fake request under a server span carrying the
// attributes rules match on: http.request.method, url.path, server.address.
func handle(ctx context.Context, tracer trace.Tracer, rng *rand.Rand) {
	r := routes[rng.IntN(len(routes))]
	path := r.path
	if r.route == "/products/{id}" {
		path = fmt.Sprintf(r.path, rng.IntN(1000))
	}
	_, span := tracer.Start(ctx, r.method+" "+r.route,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String(string(semconv.HTTPRequestMethodKey), r.method),
			semconv.URLPath(path),
			semconv.HTTPRoute(r.route),
			semconv.ServerAddress("shop.example.com"),
		))
	// The request's work would happen here.
	span.End()
}

// explainer asks the sampler why it decides as it does, for the first
// sampled span after want is set (or the last one looked at, if none was
// sampled). Explain looks without taking a token or counting, so asking it
// just before ShouldSample, with the same parameters, gives the reason of that
// very decision.
type explainer struct {
	*sampler.Sampler
	want atomic.Bool

	mu   sync.Mutex
	last explained
	has  bool
}

type explained struct {
	sampler.Explanation
	span string
}

// ShouldSample implements sdktrace.Sampler.
func (e *explainer) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if !e.want.Load() {
		return e.Sampler.ShouldSample(p)
	}
	x := e.Explain(p)
	res := e.Sampler.ShouldSample(p)
	e.mu.Lock()
	e.last, e.has = explained{Explanation: x, span: p.Name}, true
	e.mu.Unlock()
	if res.Decision == sdktrace.RecordAndSample {
		e.want.Store(false)
	}
	return res
}

// take returns the latest explanation, once.
func (e *explainer) take() (explained, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.last, e.has
	e.has = false
	return x, ok
}

// countingProcessor counts the spans that would be exported. Only sampled
// spans are recorded, so only they reach a processor.
type countingProcessor struct {
	sampled atomic.Int64
}

func (c *countingProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (c *countingProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if s.SpanContext().IsSampled() {
		c.sampled.Add(1)
	}
}

func (c *countingProcessor) Shutdown(context.Context) error   { return nil }
func (c *countingProcessor) ForceFlush(context.Context) error { return nil }

func sampledWord(b bool) string {
	if b {
		return "traced"
	}
	return "not traced"
}
