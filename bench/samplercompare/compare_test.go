// Package samplercompare benchmarks the Go SDK's ShouldSample against two
// reference samplers on equivalent rules and inputs, in one run, for rule
// sets of each size the -rules flag names (default 50, 200 and 1,000):
//
//   - controlplane: our sampler (clients/go/sampler), fed the rules and
//     quotas by a fake control plane over a real gRPC stream;
//   - jaegerremote: OpenTelemetry's Jaeger remote sampler
//     (go.opentelemetry.io/contrib/samplers/jaegerremote), fed a
//     per-operation strategy with an operation for each rule but the default
//     by a local HTTP server in the Jaeger remote-sampling JSON format;
//   - xray: the AWS X-Ray Go SDK's centralized sampling strategy
//     (github.com/aws/aws-xray-sdk-go/strategy/sampling), fed the same
//     rules and reservoir quotas by a local HTTP server speaking X-Ray's
//     GetSamplingRules / SamplingTargets JSON.
//
// Every system is checked to have loaded its rules (a probe request must be
// decided by the intended non-default rule) before anything is timed. It is
// a module of its own so that the reference samplers' dependencies stay out
// of the main module.
package samplercompare

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-xray-sdk-go/daemoncfg"
	"github.com/aws/aws-xray-sdk-go/strategy/sampling"
	"github.com/aws/aws-xray-sdk-go/xray"
	"github.com/aws/aws-xray-sdk-go/xraylog"
	"go.opentelemetry.io/contrib/samplers/jaegerremote"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// The rules, the same for every system: n-1 rules for services shop-*,
// each on one HTTP method and one path "/api/vN/items/*" (every fifth also
// on the attribute tier=gold), then the Default rule. Every rule is 1
// trace/s plus 5 % of the rest.
const (
	service     = "shop-api"
	host        = "shop.example.com"
	fixedRate   = 0.05
	reservoir   = 1 // traces per second: the rule's size and this client's quota
	defaultRule = "Default"
)

// ruleCounts are the sizes of rule set the benchmark runs, each with its own
// three systems.
var ruleCounts = flag.String("rules", "50,200,1000", "comma-separated rule set sizes, each at least 10")

type ruleSpec struct {
	name     string
	priority int32
	method   string
	path     string // URL path glob
	attrs    map[string]string
}

// operation is the rule's Jaeger operation name, as an HTTP server span is
// named: "GET /api/v40/items".
func (r ruleSpec) operation() string {
	return r.method + " " + strings.TrimSuffix(r.path, "/*")
}

// fixture is one size of rule set: its rules but the Default, and the
// benchmark request, as each system takes it. The request matches rule
// n×4/5 after the rules before it failed: with 50 rules GET
// /api/v40/items/42 with tier=gold matches rule-40, the 41st rule.
type fixture struct {
	n        int // rules, the Default included
	rules    []ruleSpec
	probe    string // the rule the request matches
	attrs    []attribute.KeyValue
	spanName string // what Jaeger keys its strategies by
	xray     sampling.Request
}

func newFixture(n int) fixture {
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	fx := fixture{n: n}
	for i := 0; i < n-1; i++ {
		r := ruleSpec{name: fmt.Sprintf("rule-%02d", i), priority: int32(i + 1), method: methods[i%4], path: fmt.Sprintf("/api/v%d/items/*", i)}
		if i%5 == 0 {
			r.attrs = map[string]string{"tier": "gold"}
		}
		fx.rules = append(fx.rules, r)
	}
	// A multiple of 20 (GET, with the attribute) that n×4/5 rounds to.
	p := n * 4 / 5 / 20 * 20
	path := fmt.Sprintf("/api/v%d/items/42", p)
	fx.probe = fx.rules[p].name
	fx.attrs = []attribute.KeyValue{
		attribute.String("http.request.method", "GET"),
		attribute.String("url.path", path),
		attribute.String("server.address", host),
		attribute.String("tier", "gold"),
	}
	fx.spanName = fx.rules[p].operation()
	fx.xray = sampling.Request{Host: host, Method: "GET", URL: path, ServiceName: service}
	return fx
}

// traceIDs are random trace IDs, so that fixed-rate decisions vary as they
// would in production.
var traceIDs = func() (ids [1024]trace.TraceID) {
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	return ids
}()

// ---------------------------------------------------------------------------
// A fake control plane: the real gRPC API, a fixed rule set, a quota for
// every rule on every report.

type fakeControlPlane struct {
	pb.UnimplementedSamplingServiceServer
	rules   []*pb.Rule
	reports atomic.Int64
}

func newFakeControlPlane(fx fixture) *fakeControlPlane {
	cp := &fakeControlPlane{}
	for _, r := range fx.rules {
		cp.rules = append(cp.rules, &pb.Rule{
			Name: r.name, Priority: r.priority, ServiceName: "shop-*", HttpMethod: r.method, UrlPath: r.path,
			Attributes: r.attrs, FixedRate: fixedRate, ReservoirSize: reservoir,
		})
	}
	cp.rules = append(cp.rules, &pb.Rule{Name: defaultRule, Priority: 10000, FixedRate: fixedRate, ReservoirSize: reservoir})
	return cp
}

func (cp *fakeControlPlane) targets() *pb.TargetSet {
	expiry := timestamppb.New(time.Now().Add(time.Hour))
	ts := &pb.TargetSet{RulesVersion: 1, ReportInterval: durationpb.New(10 * time.Second)}
	for _, r := range cp.rules {
		ts.Targets = append(ts.Targets, &pb.SamplingTarget{
			RuleName: r.GetName(), ReservoirQuota: reservoir, ReservoirQuotaExpireTime: expiry, FixedRate: fixedRate, Receipt: "r",
		})
	}
	return ts
}

func (cp *fakeControlPlane) GetSamplingRules(_ context.Context, req *pb.GetSamplingRulesRequest) (*pb.GetSamplingRulesResponse, error) {
	if req.GetKnownRulesVersion() == 1 {
		return &pb.GetSamplingRulesResponse{RulesVersion: 1, Unchanged: true}, nil
	}
	return &pb.GetSamplingRulesResponse{RulesVersion: 1, Rules: cp.rules}, nil
}

func (cp *fakeControlPlane) GetSamplingTargets(context.Context, *pb.GetSamplingTargetsRequest) (*pb.GetSamplingTargetsResponse, error) {
	cp.reports.Add(1)
	ts := cp.targets()
	return &pb.GetSamplingTargetsResponse{Targets: ts.Targets, RulesVersion: ts.RulesVersion, ReportInterval: ts.ReportInterval}, nil
}

func (cp *fakeControlPlane) StreamSampling(stream pb.SamplingService_StreamSamplingServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return errors.New("the first message must be a hello")
	}
	if first.GetHello().GetKnownRulesVersion() != 1 {
		if err := stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: &pb.RuleSet{RulesVersion: 1, Rules: cp.rules}}}); err != nil {
			return err
		}
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if m.GetReport() == nil {
			continue
		}
		cp.reports.Add(1)
		if err := stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: cp.targets()}}); err != nil {
			return err
		}
	}
}

// ---------------------------------------------------------------------------
// A Jaeger remote-sampling endpoint: GET /sampling?service=NAME, answered
// with a per-operation strategy in the JSON that jaegerremote's HTTP fetcher
// parses (jaeger.api_v2.SamplingStrategyResponse through gogo jsonpb).

type jaegerStrategy struct {
	StrategyType          string               `json:"strategyType"`
	ProbabilisticSampling *jaegerProbabilistic `json:"probabilisticSampling,omitempty"`
	OperationSampling     *jaegerPerOperation  `json:"operationSampling,omitempty"`
}

type jaegerProbabilistic struct {
	SamplingRate float64 `json:"samplingRate"`
}

type jaegerPerOperation struct {
	DefaultSamplingProbability       float64           `json:"defaultSamplingProbability"`
	DefaultLowerBoundTracesPerSecond float64           `json:"defaultLowerBoundTracesPerSecond"`
	PerOperationStrategies           []jaegerOperation `json:"perOperationStrategies"`
}

type jaegerOperation struct {
	Operation             string              `json:"operation"`
	ProbabilisticSampling jaegerProbabilistic `json:"probabilisticSampling"`
}

type fakeJaeger struct {
	fx       fixture
	fetches  atomic.Int64
	services sync.Map // service name -> true
}

func (j *fakeJaeger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if r.Method != http.MethodGet || r.URL.Path != "/sampling" || svc == "" {
		http.Error(w, "want GET /sampling?service=NAME", http.StatusBadRequest)
		return
	}
	j.fetches.Add(1)
	j.services.Store(svc, true)
	// The Default rule is the default probability and the lower bound every
	// operation gets; each other rule is one operation.
	per := &jaegerPerOperation{DefaultSamplingProbability: fixedRate, DefaultLowerBoundTracesPerSecond: reservoir}
	for _, r := range j.fx.rules {
		per.PerOperationStrategies = append(per.PerOperationStrategies, jaegerOperation{Operation: r.operation(), ProbabilisticSampling: jaegerProbabilistic{SamplingRate: fixedRate}})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(jaegerStrategy{
		StrategyType:          "PROBABILISTIC",
		ProbabilisticSampling: &jaegerProbabilistic{SamplingRate: fixedRate},
		OperationSampling:     per,
	})
}

// ---------------------------------------------------------------------------
// An X-Ray sampling endpoint where the SDK expects its daemon's TCP proxy:
// POST /GetSamplingRules and POST /SamplingTargets in X-Ray's REST-JSON
// shapes (aws-sdk-go service/xray: timestamps are epoch seconds).

type xrayRule struct {
	RuleName      string            `json:"RuleName"`
	RuleARN       string            `json:"RuleARN"`
	ResourceARN   string            `json:"ResourceARN"`
	Priority      int32             `json:"Priority"`
	FixedRate     float64           `json:"FixedRate"`
	ReservoirSize int64             `json:"ReservoirSize"`
	ServiceName   string            `json:"ServiceName"`
	ServiceType   string            `json:"ServiceType"`
	Host          string            `json:"Host"`
	HTTPMethod    string            `json:"HTTPMethod"`
	URLPath       string            `json:"URLPath"`
	Version       int64             `json:"Version"`
	Attributes    map[string]string `json:"Attributes"`
}

type xrayRuleRecord struct {
	CreatedAt    float64  `json:"CreatedAt"`
	ModifiedAt   float64  `json:"ModifiedAt"`
	SamplingRule xrayRule `json:"SamplingRule"`
}

type xrayTarget struct {
	RuleName          string  `json:"RuleName"`
	FixedRate         float64 `json:"FixedRate"`
	ReservoirQuota    int64   `json:"ReservoirQuota"`
	ReservoirQuotaTTL float64 `json:"ReservoirQuotaTTL"`
	Interval          int64   `json:"Interval"`
}

type fakeXRay struct {
	rules        []xrayRuleRecord
	ruleFetches  atomic.Int64
	targetCalls  atomic.Int64
	targetsFor   sync.Map // rule name -> true, every rule a target was sent for
	modifiedTime float64
}

func newFakeXRay(fx fixture) *fakeXRay {
	x := &fakeXRay{modifiedTime: float64(time.Now().Add(-time.Hour).Unix())}
	add := func(name string, priority int32, svc, method, path string) {
		x.rules = append(x.rules, xrayRuleRecord{CreatedAt: x.modifiedTime, ModifiedAt: x.modifiedTime, SamplingRule: xrayRule{
			RuleName: name, RuleARN: "arn:aws:xray:us-west-1:000000000000:sampling-rule/" + name, ResourceARN: "*",
			Priority: priority, FixedRate: fixedRate, ReservoirSize: reservoir, ServiceName: svc, ServiceType: "*",
			Host: "*", HTTPMethod: method, URLPath: path, Version: 1,
			// The X-Ray Go SDK skips every rule that has attributes
			// ("Sampling rule with non nil Attributes is not applicable"),
			// so its copies of the attribute rules carry none: it checks
			// less per rule than the other two.
			Attributes: map[string]string{},
		}})
	}
	for _, r := range fx.rules {
		add(r.name, r.priority, "shop-*", r.method, r.path)
	}
	add(defaultRule, 10000, "*", "*", "*")
	return x
}

func (x *fakeXRay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/GetSamplingRules":
		x.ruleFetches.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"SamplingRuleRecords": x.rules})
	case "/SamplingTargets":
		var req struct {
			SamplingStatisticsDocuments []struct {
				RuleName string `json:"RuleName"`
			} `json:"SamplingStatisticsDocuments"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ttl := float64(time.Now().Add(time.Hour).Unix())
		targets := []xrayTarget{}
		for _, d := range req.SamplingStatisticsDocuments {
			targets = append(targets, xrayTarget{RuleName: d.RuleName, FixedRate: fixedRate, ReservoirQuota: reservoir, ReservoirQuotaTTL: ttl, Interval: 10})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"LastRuleModification":    x.modifiedTime,
			"SamplingTargetDocuments": targets,
			"UnprocessedStatistics":   []any{},
		})
		for _, t := range targets {
			x.targetsFor.Store(t.RuleName, true)
		}
		x.targetCalls.Add(1)
	default:
		http.Error(w, "unknown operation "+r.URL.Path, http.StatusNotFound)
	}
}

// ---------------------------------------------------------------------------
// The three systems, started once per test binary and checked before use.

type systems struct {
	fx       fixture
	cp       *fakeControlPlane
	grpcSrv  *grpc.Server
	ours     *sampler.Sampler
	jSrv     *httptest.Server
	jFake    *fakeJaeger
	jaeger   *jaegerremote.Sampler
	xSrv     *httptest.Server
	xFake    *fakeXRay
	xray     *sampling.CentralizedStrategy
	xTargets sync.Once
	xErr     error
}

var (
	setupOnce sync.Once
	envs      []*systems // by rule count, as -rules names them
	setupErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The X-Ray SDK's logger is global and read by every system's pollers:
	// set once, before any starts.
	xray.SetLogger(xraylog.NewDefaultLogger(io.Discard, xraylog.LogLevelError))
	code := m.Run()
	for _, s := range envs {
		s.close()
	}
	os.Exit(code)
}

// setup starts the three systems for every rule count and waits until each
// has loaded its rules. They all start at once, so that the X-Ray SDKs' first
// quota polls, 10 s after the start, come together.
func setup(tb testing.TB) []*systems {
	tb.Helper()
	setupOnce.Do(func() {
		var errs []error
		for _, f := range strings.Split(*ruleCounts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 10 {
				setupErr = fmt.Errorf("-rules %q: want sizes of at least 10", *ruleCounts)
				return
			}
			s := &systems{fx: newFixture(n)}
			envs = append(envs, s)
			errs = append(errs, s.start())
		}
		setupErr = errors.Join(errs...)
	})
	if setupErr != nil {
		tb.Fatal(setupErr)
	}
	return envs
}

func (s *systems) start() error {
	// Our sampler, on a real gRPC stream.
	s.cp = newFakeControlPlane(s.fx)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.grpcSrv = grpc.NewServer()
	pb.RegisterSamplingServiceServer(s.grpcSrv, s.cp)
	go func() { _ = s.grpcSrv.Serve(lis) }()
	s.ours, err = sampler.New(
		sampler.WithEndpoint(lis.Addr().String()),
		sampler.WithService(service, ""),
		sampler.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		return err
	}

	// Jaeger. The initial sampler never samples, so that any sampled probe
	// shows the remote strategy is in force; MaxOperations is the number of
	// operations served, so an operation the strategy does not list falls to
	// the default probabilistic sampler instead of getting one of its own.
	s.jFake = &fakeJaeger{fx: s.fx}
	s.jSrv = httptest.NewServer(s.jFake)
	s.jaeger = jaegerremote.New(service,
		jaegerremote.WithSamplingServerURL(s.jSrv.URL+"/sampling"),
		jaegerremote.WithInitialSampler(sdktrace.NeverSample()),
		jaegerremote.WithMaxOperations(s.fx.n-1),
	)

	// X-Ray, its daemon address pointing at the fake endpoint. Its logger
	// is quietened (it logs at Info on every rules refresh). The endpoint is
	// plain HTTP on loopback: the SDK's AWS session must not depend on the
	// machine's AWS settings (a CA bundle that cannot be read would make it
	// panic on its first decision).
	for _, k := range []string{"AWS_CA_BUNDLE", "AWS_SDK_LOAD_CONFIG", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"} {
		_ = os.Unsetenv(k)
	}
	s.xFake = newFakeXRay(s.fx)
	s.xSrv = httptest.NewServer(s.xFake)
	tcp, err := net.ResolveTCPAddr("tcp", s.xSrv.Listener.Addr().String())
	if err != nil {
		return err
	}
	udp, err := net.ResolveUDPAddr("udp", s.xSrv.Listener.Addr().String())
	if err != nil {
		return err
	}
	s.xray, err = sampling.NewCentralizedStrategy()
	if err != nil {
		return err
	}
	s.xray.LoadDaemonEndpoints(&daemoncfg.DaemonEndpoints{TCPAddr: tcp, UDPAddr: udp})

	return errors.Join(s.checkOurs(), s.checkJaeger(), s.checkXRay())
}

func (s *systems) close() {
	if s.ours != nil {
		_ = s.ours.Close()
	}
	if s.jaeger != nil {
		s.jaeger.Close()
	}
	if s.grpcSrv != nil {
		s.grpcSrv.Stop()
	}
	if s.jSrv != nil {
		s.jSrv.Close()
	}
	// The X-Ray strategy cannot be stopped: its pollers run for the life of
	// the process. Its server is closed all the same.
	if s.xSrv != nil {
		s.xSrv.Close()
	}
}

// poll calls f until it returns nil or the deadline passes.
func poll(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func params(name string, id trace.TraceID, attrs []attribute.KeyValue) sdktrace.SamplingParameters {
	return sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: id, Name: name, Kind: trace.SpanKindServer, Attributes: attrs}
}

func httpAttrs(method, path string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("http.request.method", method),
		attribute.String("url.path", path),
		attribute.String("server.address", host),
	}
}

// checkOurs waits until the probe is decided by its rule with a reservoir
// quota in force (rules and targets both arrived over the stream), then
// checks a second rule and the Default rule.
func (s *systems) checkOurs() error {
	err := poll(10*time.Second, func() error {
		e := s.ours.Explain(params(s.fx.spanName, traceIDs[0], s.fx.attrs))
		if e.Rule != s.fx.probe || e.Reason != sampler.ReasonReservoir {
			return fmt.Errorf("controlplane, %d rules: probe decided by rule %q (%s: %s), want %q with a reservoir quota", s.fx.n, e.Rule, e.Reason, e.Detail, s.fx.probe)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range []struct {
		attrs []attribute.KeyValue
		want  string
	}{
		{httpAttrs("DELETE", "/api/v3/items/7"), "rule-03"},
		{append(httpAttrs("GET", "/api/v0/items/7"), attribute.String("tier", "silver")), defaultRule}, // rule-00 wants tier=gold
		{httpAttrs("GET", "/health"), defaultRule},
	} {
		if e := s.ours.Explain(params("x", traceIDs[1], c.attrs)); e.Rule != c.want {
			return fmt.Errorf("controlplane: %v decided by %q (%s), want %q", c.attrs, e.Rule, e.Reason, c.want)
		}
	}
	return nil
}

// checkJaeger waits until the strategy is in force: a trace ID that no
// probability samples is still sampled once, by the lower bound that only a
// listed operation has. It then checks another operation and the default.
func (s *systems) checkJaeger() error {
	never := trace.TraceID{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	always := trace.TraceID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}
	lowerBound := func(op string) error {
		r := s.jaeger.ShouldSample(params(op, never, nil))
		if r.Decision != sdktrace.RecordAndSample || !hasAttr(r.Attributes, "jaeger.sampler.type", "ratelimiting") {
			return fmt.Errorf("jaegerremote: operation %q: %v %v, want sampled by its per-operation lower bound", op, r.Decision, r.Attributes)
		}
		return nil
	}
	if err := poll(10*time.Second, func() error { return lowerBound(s.fx.spanName) }); err != nil {
		return err
	}
	if err := lowerBound("DELETE /api/v3/items"); err != nil {
		return err
	}
	// An operation the strategy does not list: the default probability
	// (sampled when the trace ID is under it), no lower bound.
	if r := s.jaeger.ShouldSample(params("GET /health", never, nil)); r.Decision != sdktrace.Drop {
		return fmt.Errorf("jaegerremote: unlisted operation sampled by %v, want the default probability only", r.Attributes)
	}
	if r := s.jaeger.ShouldSample(params("GET /health", always, nil)); r.Decision != sdktrace.RecordAndSample ||
		!hasAttr(r.Attributes, "jaeger.sampler.type", "probabilistic") || !hasAttr(r.Attributes, "jaeger.sampler.param", "0.05") {
		return fmt.Errorf("jaegerremote: unlisted operation: %v %v, want sampled by the default probability 0.05", r.Decision, r.Attributes)
	}
	return nil
}

func hasAttr(attrs []attribute.KeyValue, key, value string) bool {
	for _, a := range attrs {
		if string(a.Key) == key && a.Value.String() == value {
			return true
		}
	}
	return false
}

// checkXRay waits until the probe is decided by its rule (the first call
// starts the SDK's pollers; until the rules arrive it uses its local
// fallback, which names no rule), then checks another rule and Default.
func (s *systems) checkXRay() error {
	decidedBy := func(req sampling.Request) string {
		d := s.xray.ShouldTrace(&req)
		if d == nil || d.Rule == nil {
			return ""
		}
		return *d.Rule
	}
	err := poll(10*time.Second, func() error {
		if got := decidedBy(s.fx.xray); got != s.fx.probe {
			return fmt.Errorf("xray, %d rules: probe decided by rule %q, want %q", s.fx.n, got, s.fx.probe)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range []struct {
		req  sampling.Request
		want string
	}{
		{sampling.Request{Host: host, Method: "DELETE", URL: "/api/v3/items/7", ServiceName: service}, "rule-03"},
		{sampling.Request{Host: host, Method: "GET", URL: "/health", ServiceName: service}, defaultRule},
	} {
		if got := decidedBy(c.req); got != c.want {
			return fmt.Errorf("xray: %+v decided by %q, want %q", c.req, got, c.want)
		}
	}
	return nil
}

// waitXRayTargets waits for the X-Ray SDK's first target poll (about 10 s
// after it started), so that the benchmark runs with a reservoir quota in
// force, as ours does.
func (s *systems) waitXRayTargets(tb testing.TB) {
	tb.Helper()
	s.xTargets.Do(func() {
		s.xErr = poll(30*time.Second, func() error {
			if _, ok := s.xFake.targetsFor.Load(s.fx.probe); !ok {
				return fmt.Errorf("xray, %d rules: no reservoir quota for %s after 30 s", s.fx.n, s.fx.probe)
			}
			return nil
		})
		// The SDK applies the targets just after the response is written.
		time.Sleep(100 * time.Millisecond)
	})
	if s.xErr != nil {
		tb.Fatal(s.xErr)
	}
}

// TestSamplersLoadedRules checks that each system loaded its rules from its
// local server, for every rule count: setup fails unless every probe was
// decided by the intended rule.
func TestSamplersLoadedRules(t *testing.T) {
	for _, s := range setup(t) {
		t.Run(fmt.Sprintf("rules=%d", s.fx.n), func(t *testing.T) {
			if n := len(s.cp.rules); n != s.fx.n {
				t.Errorf("controlplane: served %d rules, want %d", n, s.fx.n)
			}
			if n := s.cp.reports.Load(); n == 0 {
				t.Error("controlplane: no report reached the fake control plane")
			}
			if _, ok := s.jFake.services.Load(service); !ok || s.jFake.fetches.Load() == 0 {
				t.Errorf("jaegerremote: never fetched the strategy of %q", service)
			}
			if n := len(s.xFake.rules); n != s.fx.n {
				t.Errorf("xray: served %d rules, want %d", n, s.fx.n)
			}
			if s.xFake.ruleFetches.Load() == 0 {
				t.Error("xray: never fetched the rules")
			}
			// Our decision for the benchmark request does not allocate.
			p := params(s.fx.spanName, traceIDs[2], s.fx.attrs)
			if n := testing.AllocsPerRun(100, func() { s.ours.ShouldSample(p) }); n != 0 {
				t.Errorf("controlplane: ShouldSample allocates %v times per call, want 0", n)
			}
		})
	}
}

// sink keeps the compiler from discarding decisions.
var sink atomic.Int64

// BenchmarkSamplers times one root-span decision of each system for the same
// request, for each rule count (with 50 rules GET /api/v40/items/42,
// tier=gold, host shop.example.com: rule 41 of 50 for controlplane and
// X-Ray, one of 49 operations for Jaeger; with 1,000 rule 801), with random
// trace IDs, on every core at once. Sub-benchmarks are named
// rules=N/SAMPLER.
func BenchmarkSamplers(b *testing.B) {
	all := setup(b)
	for _, s := range all {
		s.waitXRayTargets(b)
	}
	var start atomic.Uint64
	for _, s := range all {
		b.Run(fmt.Sprintf("rules=%d", s.fx.n), func(b *testing.B) { s.bench(b, &start) })
	}
}

// bench is BenchmarkSamplers for one rule count.
func (s *systems) bench(b *testing.B, start *atomic.Uint64) {
	b.Run("controlplane", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(p *testing.PB) {
			i, n := start.Add(97), int64(0)
			for p.Next() {
				r := s.ours.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: traceIDs[i&1023], Name: s.fx.spanName, Kind: trace.SpanKindServer, Attributes: s.fx.attrs})
				n += int64(r.Decision)
				i++
			}
			sink.Add(n)
		})
	})

	b.Run("jaegerremote", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(p *testing.PB) {
			i, n := start.Add(97), int64(0)
			for p.Next() {
				r := s.jaeger.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: traceIDs[i&1023], Name: s.fx.spanName, Kind: trace.SpanKindServer, Attributes: s.fx.attrs})
				n += int64(r.Decision)
				i++
			}
			sink.Add(n)
		})
	})

	b.Run("xray", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(p *testing.PB) {
			// ShouldTrace writes the request's ServiceType when it is
			// empty, so each goroutine has its own request. X-Ray decides
			// the fixed rate with its own random numbers, not the trace ID.
			req := s.fx.xray
			n := int64(0)
			for p.Next() {
				if s.xray.ShouldTrace(&req).Sample {
					n++
				}
			}
			sink.Add(n)
		})
	})
}
