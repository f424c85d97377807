// Package jaegercompat checks internal/jaeger with the real Jaeger remote
// samplers: OpenTelemetry Go's (go.opentelemetry.io/contrib/samplers/jaegerremote),
// which parses the HTTP answer with gogo's jsonpb; Jaeger's own gogo
// generated types (github.com/jaegertracing/jaeger-idl), which speak the
// binary gRPC protocol as OpenTelemetry Java does; and, when Node.js is
// installed, OpenTelemetry JS's (@opentelemetry/sampler-jaeger-remote, see
// js/); and, in fleet_test.go, a fleet of Go samplers whose lower bounds
// should add up to a rule's reservoir on a real serve. It is a module of
// its own so that these clients stay out of the main module.
package jaegercompat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/jsonpb"
	gogoproto "github.com/gogo/protobuf/proto"
	"github.com/google/go-cmp/cmp"
	jaegeridl "github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	"go.opentelemetry.io/contrib/samplers/jaegerremote"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/internal/jaeger"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

const service = "shop-api"

// source is an in-memory jaeger.Source whose rules and factors a test edits.
type source struct {
	mu      sync.Mutex
	rules   []rules.Rule
	factors map[string][2]float64
}

func (s *source) Rules(context.Context, string) ([]rules.Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rules, nil
}

func (s *source) Factors(_ string, r *rules.Rule) (float64, float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.factors[r.Name]; ok {
		return f[0], f[1]
	}
	return 1, 1
}

func (s *source) set(rs []rules.Rule, factors map[string][2]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules, s.factors = rs, factors
}

// shop returns the rules of the test: an exact checkout rule, a health rule
// that drops everything, a rule on an attribute (which Jaeger cannot see and
// which, being higher, changes nothing), and the Default.
func shop(checkout, dflt float64, reservoir int64) []rules.Rule {
	d := rules.Default()
	d.FixedRate, d.ReservoirSize = dflt, reservoir
	return []rules.Rule{
		{Name: "checkout", Priority: 10, FixedRate: checkout, ReservoirSize: reservoir, ServiceName: "shop-*", HTTPMethod: "POST", URLPath: "/checkout"},
		{Name: "health", Priority: 20, FixedRate: 0, ReservoirSize: reservoir, HTTPMethod: "GET", URLPath: "/health"},
		{Name: "vip", Priority: 30, FixedRate: 1, ReservoirSize: reservoir, Attributes: map[string]string{"tier": "gold"}},
		d,
	}
}

func newServer(src jaeger.Source) *jaeger.Server {
	return jaeger.NewServer(src, jaeger.NewEstimator(jaeger.EstimatorOptions{}), jaeger.Options{Logger: slog.New(slog.DiscardHandler)})
}

// goID returns a trace ID that OpenTelemetry Go's TraceIDRatioBased (which
// jaegerremote uses) samples at probability p exactly when inside is true:
// the ID just below, or at, the boundary of p.
func goID(p float64, inside bool) trace.TraceID {
	bound := uint64(p * (1 << 63))
	v := bound
	if inside {
		v--
	}
	var id trace.TraceID
	id[0] = 1 // a valid ID even when the low half is zero
	binary.BigEndian.PutUint64(id[8:], v<<1)
	return id
}

// never is sampled by no probability below 1: only a lower bound takes it.
var never = trace.TraceID{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}

type probe struct {
	span    string
	id      trace.TraceID
	sampled bool
}

// probes returns, for each span name, a trace ID just inside and one just
// outside its probability.
func probes(byOp map[string]float64) []probe {
	var out []probe
	for _, span := range slices.Sorted(func(yield func(string) bool) {
		for k := range byOp {
			if !yield(k) {
				return
			}
		}
	}) {
		p := byOp[span]
		if p > 0 {
			out = append(out, probe{span, goID(p, true), true})
		}
		out = append(out, probe{span, goID(p, false), false})
	}
	return out
}

func decide(s sdktrace.Sampler, span string, id trace.TraceID) sdktrace.SamplingResult {
	return s.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: span, Kind: trace.SpanKindServer})
}

// waitFor polls cond until it returns nil, for at most 30 s: the client
// refetches every few milliseconds, so this waits for a poll, not a clock.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mismatch(s sdktrace.Sampler, ps []probe) error {
	var errs []error
	for _, p := range ps {
		if got := decide(s, p.span, p.id).Decision == sdktrace.RecordAndSample; got != p.sampled {
			errs = append(errs, fmt.Errorf("%q %v: sampled %v, want %v", p.span, p.id, got, p.sampled))
		}
	}
	return errors.Join(errs...)
}

// The Go sampler follows the control plane: per-operation probabilities,
// the default for other spans, an edit, a budget factor, and the lower bound.
func TestGoClientFollowsEdits(t *testing.T) {
	src := &source{}
	src.set(shop(0.5, 0.1, 0), nil)
	srv := httptest.NewServer(newServer(src).Handler())
	defer srv.Close()
	s := jaegerremote.New(service,
		jaegerremote.WithSamplingServerURL(srv.URL+"/sampling"),
		jaegerremote.WithSamplingRefreshInterval(10*time.Millisecond),
		jaegerremote.WithInitialSampler(sdktrace.NeverSample()),
	)
	defer s.Close()

	phases := []struct {
		name    string
		rules   []rules.Rule
		factors map[string][2]float64
		want    map[string]float64 // span name -> probability
	}{
		{name: "first rules", rules: shop(0.5, 0.1, 0), want: map[string]float64{"POST /checkout": 0.5, "GET /health": 0, "GET /cart": 0.1}},
		{name: "an edit", rules: shop(0.25, 0.2, 0), want: map[string]float64{"POST /checkout": 0.25, "GET /health": 0, "GET /cart": 0.2}},
		{name: "a budget halves the Default", rules: shop(0.25, 0.2, 0), factors: map[string][2]float64{rules.DefaultName: {0.5, 1}}, want: map[string]float64{"POST /checkout": 0.25, "GET /health": 0, "GET /cart": 0.1}},
	}
	for _, ph := range phases {
		src.set(ph.rules, ph.factors)
		ps := probes(ph.want)
		waitFor(t, ph.name, func() error { return mismatch(s, ps) })
	}

	// A reservoir becomes the lower bound: a trace that no probability
	// takes is sampled by the rate limiter of the operation.
	src.set(shop(0.25, 0.2, 100), nil)
	for _, span := range []string{"POST /checkout", "GET /cart"} {
		waitFor(t, "lower bound on "+span, func() error {
			r := decide(s, span, never)
			if r.Decision != sdktrace.RecordAndSample || !slices.Contains(r.Attributes, attribute.String("jaeger.sampler.type", "ratelimiting")) {
				return fmt.Errorf("%v %v, want sampled by the rate limiter", r.Decision, r.Attributes)
			}
			return nil
		})
	}
}

// Jaeger's gogo types read the HTTP answer (with the jsonpb jaegerremote
// uses) and the gRPC answer (the binary protocol of OpenTelemetry Java) as
// the strategy Translate made.
func TestJaegerTypesReadBothProtocols(t *testing.T) {
	src := &source{}
	src.set(shop(0.5, 0.1, 6), nil)
	js := newServer(src)
	want := jaeger.Translate(service, []jaeger.Rule{
		{Rule: &src.rules[0], FixedRateFactor: 1, ReservoirFactor: 1},
		{Rule: &src.rules[1], FixedRateFactor: 1, ReservoirFactor: 1},
		{Rule: &src.rules[2], FixedRateFactor: 1, ReservoirFactor: 1},
		{Rule: &src.rules[3], FixedRateFactor: 1, ReservoirFactor: 1},
	}, 1)

	// HTTP, parsed as jaegerremote parses it.
	srv := httptest.NewServer(js.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/sampling?service=" + service)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON jaegeridl.SamplingStrategyResponse
	if err := jsonpb.Unmarshal(bytes.NewReader(body), &fromJSON); err != nil {
		t.Fatalf("gogo jsonpb: %v\n%s", err, body)
	}
	checkSame(t, "HTTP", want, &fromJSON)

	// gRPC, with Jaeger's own client.
	gs := grpc.NewServer()
	js.RegisterGRPC(gs)
	conn, _ := servetest.Serve(t, servetest.GRPC(gs))
	fromGRPC, err := jaegeridl.NewSamplingManagerClient(conn).GetSamplingStrategy(context.Background(), &jaegeridl.SamplingStrategyParameters{ServiceName: service})
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, "gRPC", want, fromGRPC)
}

// checkSame compares a gogo message with ours through the binary encoding.
func checkSame(t *testing.T, what string, want *api.SamplingStrategyResponse, got *jaegeridl.SamplingStrategyResponse) {
	t.Helper()
	b, err := gogoproto.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var ours api.SamplingStrategyResponse
	if err := proto.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, &ours, protocmp.Transform()); diff != "" {
		t.Errorf("%s: Jaeger's types read (-want +got):\n%s", what, diff)
	}
	if len(got.GetOperationSampling().GetPerOperationStrategies()) == 0 {
		t.Errorf("%s: no operation read: %v", what, got)
	}
}

// jsID returns a trace ID that OpenTelemetry JS's TraceIdRatioBasedSampler
// samples at probability p exactly when inside is true: it XORs the four
// 32-bit words of the ID and samples below floor(p × 0xffffffff).
func jsID(p float64, inside bool) string {
	bound := uint32(p * 0xffffffff)
	v := bound
	if inside {
		v--
	}
	var id [16]byte
	id[0] = 1
	binary.BigEndian.PutUint32(id[12:], v^1<<24)
	return hex.EncodeToString(id[:])
}

// OpenTelemetry JS's sampler (no lower bounds: it reads only probabilities)
// follows the same answers and the same edit. It needs Node.js and the
// packages that scripts/install-deps installs in js/.
func TestJSClientFollowsEdits(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("Node.js is not installed; the JS check needs it")
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "@opentelemetry", "sampler-jaeger-remote")); err != nil {
		t.Fatalf("the JS packages are missing: run scripts/install-deps (%v)", err)
	}
	src := &source{}
	src.set(shop(0.5, 0.1, 3), nil)
	srv := httptest.NewServer(newServer(src).Handler())
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "check.mjs", srv.URL, service)
	cmd.Dir = "js"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	phase := func(name string, byOp map[string]float64) {
		t.Helper()
		type jsProbe struct {
			Span    string `json:"span"`
			TraceID string `json:"traceId"`
			Sampled bool   `json:"sampled"`
		}
		var ps []jsProbe
		for span, p := range byOp {
			if p > 0 {
				ps = append(ps, jsProbe{span, jsID(p, true), true})
			}
			ps = append(ps, jsProbe{span, jsID(p, false), false})
		}
		line, err := json.Marshal(ps)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(stdin, "%s\n", line); err != nil {
			t.Fatal(err)
		}
		if !lines.Scan() || lines.Text() != "ok" {
			t.Fatalf("%s: node said %q (%v); stderr:\n%s", name, lines.Text(), lines.Err(), stderr.String())
		}
	}
	phase("first rules", map[string]float64{"POST /checkout": 0.5, "GET /health": 0, "GET /cart": 0.1})
	src.set(shop(0.25, 0.2, 3), nil)
	phase("an edit", map[string]float64{"POST /checkout": 0.25, "GET /health": 0, "GET /cart": 0.2})
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v; stderr:\n%s", err, strings.TrimSpace(stderr.String()))
	}
}
