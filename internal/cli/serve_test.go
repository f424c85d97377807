package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/redistest"
)

// serveWait bounds every wait in these tests: for a server to start or stop,
// or for readiness to follow the store (it is probed every 2 s, each probe
// given up to 2 s).
const serveWait = 20 * time.Second

// testServeConfig is serve's default configuration, on loopback ports the
// kernel picks.
func testServeConfig(t *testing.T) *serveConfig {
	t.Helper()
	fs, c := serveFlags()
	if err := fs.Parse([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--jaeger-addr", "127.0.0.1:0", "--xray-addr", "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	return c
}

// serving is one run of serve, with clients of it.
type serving struct {
	grpcAddr, httpAddr, jaegerAddr, xrayAddr string
	rules                                    pb.RuleServiceClient
	sampling                                 pb.SamplingServiceClient
	health                                   healthpb.HealthClient
	http                                     *http.Client

	conn    *grpc.ClientConn
	cancel  context.CancelFunc // stops serve, as SIGINT or SIGTERM do
	done    chan struct{}      // closed when serve has returned
	err     error              // what serve returned; read after done
	timeout time.Duration
	logs    lockedBuffer // what serve logged
}

// startServe runs serve with c until the test ends or stop is called, and
// waits until it has bound its listeners.
func startServe(t *testing.T, c *serveConfig) *serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{cancel: cancel, done: make(chan struct{}), timeout: c.shutdown}
	ready := make(chan listening, 1)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &s.logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() {
		defer close(s.done)
		s.err = serve(ctx, c, log, ready)
	}()
	select {
	case addrs := <-ready:
		s.grpcAddr, s.httpAddr, s.jaegerAddr, s.xrayAddr = addrs.GRPC, addrs.HTTP, addrs.Jaeger, addrs.XRay
	case <-s.done:
		cancel()
		t.Fatalf("serve returned before it was ready: %v", s.err)
	case <-time.After(serveWait):
		cancel()
		<-s.done
		t.Fatalf("serve not ready within %v", serveWait)
	}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		<-s.done
		t.Fatal(err)
	}
	s.conn = conn
	s.rules = pb.NewRuleServiceClient(conn)
	s.sampling = pb.NewSamplingServiceClient(conn)
	s.health = healthpb.NewHealthClient(conn)
	// No keep-alive: no idle connection outlives the test.
	s.http = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// stop cancels serve's context, as SIGINT or SIGTERM do, and returns what
// serve returned. It fails if serve takes longer than its shutdown timeout
// and a margin. Calling it again returns the same.
func (s *serving) stop() error {
	_ = s.conn.Close()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(s.timeout + serveWait):
		return errors.New("serve did not return within its shutdown timeout after its context was cancelled")
	}
}

func (s *serving) mustStop(t *testing.T) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), serveWait)
	t.Cleanup(cancel)
	return ctx
}

// ruleState is everything a client can read back: the rules and the audit log.
type ruleState struct {
	rules  *pb.ListRulesResponse
	events *pb.ListRuleEventsResponse
}

func (s *serving) state(t *testing.T) ruleState {
	t.Helper()
	rs, err := s.rules.ListRules(callCtx(t), &pb.ListRulesRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("ListRules: %v", err)
	}
	evs, err := s.rules.ListRuleEvents(callCtx(t), &pb.ListRuleEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("ListRuleEvents: %v", err)
	}
	return ruleState{rs, evs}
}

// cli runs `controlplane rules ARGS... --server ADDR` against this server.
func (s *serving) cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCLI(t, "", append(append([]string{"rules"}, args...), "--server", s.grpcAddr)...)
}

// get fetches path from the HTTP listener.
func (s *serving) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(callCtx(t), http.MethodGet, "http://"+s.httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func (s *serving) healthStatus(t *testing.T) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := s.health.Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus()
}

// waitReadiness polls /readyz and the gRPC health check until they both say
// ready (or both say not ready).
func (s *serving) waitReadiness(t *testing.T, ready bool) {
	t.Helper()
	wantCode, wantHealth := http.StatusOK, healthpb.HealthCheckResponse_SERVING
	if !ready {
		wantCode, wantHealth = http.StatusServiceUnavailable, healthpb.HealthCheckResponse_NOT_SERVING
	}
	deadline := time.Now().Add(serveWait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		code, _ := s.get(t, "/readyz")
		h := s.healthStatus(t)
		if code == wantCode && h == wantHealth {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v /readyz is %d and gRPC health %v; want %d and %v", serveWait, code, h, wantCode, wantHealth)
		}
		<-tick.C
	}
}

func stateNames(st ruleState) []string { return ruleNames(st.rules.GetRules()) }

// editRules applies both test files through the CLI, so that the audit log
// holds creates, updates and a delete, all acknowledged.
func editRules(t *testing.T, s *serving) {
	t.Helper()
	s.cli(t, "apply", "-f", "testdata/rules.yaml").mustOK(t)
	s.cli(t, "apply", "-f", "testdata/rules_edited.yaml", "--prune").mustOK(t)
}

func TestServeRestartKeepsRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup configures the store and returns what to do between the
		// two runs of the control plane.
		setup func(t *testing.T, c *serveConfig) (between func())
	}{
		{"embedded store with a data dir", func(t *testing.T, c *serveConfig) func() {
			c.dataDir = t.TempDir()
			return func() {}
		}},
		{"redis, restarted too", func(t *testing.T, c *serveConfig) func() {
			r := redistest.StartWith(t, redistest.Options{AppendOnly: true})
			c.redisURL = r.URL()
			return r.Restart
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testServeConfig(t)
			between := tc.setup(t, c)

			first := startServe(t, c)
			editRules(t, first)
			before := first.state(t)
			first.mustStop(t)
			if got, want := stateNames(before), []string{"health", "checkout", "login", "Default"}; !slices.Equal(got, want) {
				t.Fatalf("rules before the restart: %v, want %v", got, want)
			}
			if n := len(before.events.GetEvents()); n != 8 {
				t.Fatalf("%d audit events before the restart, want 8 (Default, 3 creates, then 2 updates, a create and a delete)", n)
			}

			between()
			second := startServe(t, c)
			after := second.state(t)
			if d := cmp.Diff(before.rules, after.rules, protocmp.Transform()); d != "" {
				t.Errorf("rules after the restart (-before +after):\n%s", d)
			}
			if d := cmp.Diff(before.events, after.events, protocmp.Transform()); d != "" {
				t.Errorf("audit log after the restart (-before +after):\n%s", d)
			}

			// Edits carry on from there: etags and the log continue.
			second.cli(t, "update", "checkout", "--fixed-rate", "0.3", "--etag", "2").mustOK(t)
			again := second.state(t)
			evs := again.events.GetEvents()
			if len(evs) != 9 {
				t.Fatalf("audit log after one more edit: %d events, want the 8 before it and one new", len(evs))
			}
			if d := cmp.Diff(before.events, &pb.ListRuleEventsResponse{Events: evs[1:]}, protocmp.Transform()); d != "" {
				t.Fatalf("audit log after one more edit, past the new event (-before +after):\n%s", d)
			}
			if evs[0].GetRulesVersion() <= before.events.GetEvents()[0].GetRulesVersion() {
				t.Errorf("the rules version went from %d to %d after an edit", before.events.GetEvents()[0].GetRulesVersion(), evs[0].GetRulesVersion())
			}
		})
	}
}

func TestServeRestartWithoutDataDirForgets(t *testing.T) {
	c := testServeConfig(t)
	first := startServe(t, c)
	editRules(t, first)
	first.mustStop(t)

	second := startServe(t, c)
	st := second.state(t)
	if got := stateNames(st); !slices.Equal(got, []string{"Default"}) {
		t.Errorf("rules after a restart without --data-dir: %v, want only Default", got)
	}
	if evs := st.events.GetEvents(); len(evs) != 1 || evs[0].GetRuleName() != "Default" {
		t.Errorf("audit log after a restart without --data-dir: %v, want the Default rule's creation", evs)
	}
}

func TestServeHTTP(t *testing.T) {
	s := startServe(t, testServeConfig(t))
	if code, body := s.get(t, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	s.waitReadiness(t, true)
	if _, err := s.rules.ListRules(callCtx(t), &pb.ListRulesRequest{}); err != nil {
		t.Fatal(err)
	}
	code, body := s.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`controlplane_grpc_requests_total{code="OK",method="/controlplane.v1.RuleService/ListRules"} 1`,
		"controlplane_store_up 1",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// A path without an access policy is refused before it is routed.
	if code, _ := s.get(t, "/nope"); code != http.StatusForbidden {
		t.Errorf("/nope = %d, want 403", code)
	}
	if code, _ := s.get(t, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --debug-endpoints = %d, want 404", code)
	}
}

// TestServeDebugEndpoints: --debug-endpoints serves Go's profiles, which the
// load generator reads heap figures from.
func TestServeDebugEndpoints(t *testing.T) {
	c := testServeConfig(t)
	c.debug = true
	s := startServe(t, c)
	code, body := s.get(t, "/debug/pprof/heap?gc=1&debug=1")
	if code != http.StatusOK || !strings.Contains(body, "# HeapAlloc = ") {
		t.Errorf("heap profile = %d, %.80q", code, body)
	}
}

func TestServeWithoutHTTP(t *testing.T) {
	c := testServeConfig(t)
	c.httpAddr = ""
	s := startServe(t, c)
	if s.httpAddr != "" {
		t.Errorf("serve reported HTTP address %q with --http-addr empty", s.httpAddr)
	}
	if _, err := s.rules.ListRules(callCtx(t), &pb.ListRulesRequest{}); err != nil {
		t.Fatal(err)
	}
}

// TestServeReadinessThroughRedisOutage stops Redis under a running control
// plane: readiness and health stay up (the replica keeps serving the last
// rules, and a Service must keep sending it SDKs), controlplane_store_up
// goes to 0, rule calls fail with UNAVAILABLE, SDKs are still served the
// last rules, and all of it recovers when Redis is back.
func TestServeReadinessThroughRedisOutage(t *testing.T) {
	r := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	c := testServeConfig(t)
	c.redisURL = r.URL()
	s := startServe(t, c)
	s.waitReadiness(t, true)
	s.cli(t, "apply", "-f", "testdata/rules.yaml").mustOK(t)
	before := s.state(t)

	// The catalog follows the edit; from now on SDKs get these rules.
	want := before.events.GetEvents()[0].GetRulesVersion()
	sdkRules := func() *pb.GetSamplingRulesResponse {
		t.Helper()
		resp, err := s.sampling.GetSamplingRules(callCtx(t), &pb.GetSamplingRulesRequest{ServiceName: "shop-api"})
		if err != nil {
			t.Fatalf("GetSamplingRules: %v", err)
		}
		// The rules, not whether this new instance may borrow at first
		// (the replica's borrow gate answers each call anew).
		resp.RatesInForce = nil
		return resp
	}
	pollUntil(t, "SDKs get the applied rules", func() bool { return sdkRules().GetRulesVersion() == want })
	served := sdkRules()

	r.Stop()
	pollUntil(t, "controlplane_store_up 0 while Redis is down", func() bool {
		_, body := s.get(t, "/metrics")
		return strings.Contains(body, "controlplane_store_up 0")
	})
	s.waitReadiness(t, true)
	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"ListRules", func(ctx context.Context) error {
			_, err := s.rules.ListRules(ctx, &pb.ListRulesRequest{})
			return err
		}},
		{"GetRule", func(ctx context.Context) error {
			_, err := s.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "checkout"})
			return err
		}},
		{"CreateRule", func(ctx context.Context) error {
			_, err := s.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "login", Priority: 5, FixedRate: 0.1}})
			return err
		}},
		{"ListRuleEvents", func(ctx context.Context) error {
			_, err := s.rules.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{})
			return err
		}},
	} {
		err := call.do(callCtx(t))
		if st := status.Convert(err); st.Code() != codes.Unavailable || strings.Contains(st.Message(), "127.0.0.1") {
			t.Errorf("%s with Redis down: %v, want UNAVAILABLE without Redis's own message", call.name, err)
		}
	}
	if res := s.cli(t, "list"); res.code != exitUnavailable {
		t.Errorf("rules list with Redis down: exit %d, want %d (%v)", res.code, exitUnavailable, res.err)
	}
	if d := cmp.Diff(served, sdkRules(), protocmp.Transform()); d != "" {
		t.Errorf("with Redis down SDKs get other than the last rules (-want +got):\n%s", d)
	}

	r.Restart()
	pollUntil(t, "controlplane_store_up 1 once Redis is back", func() bool {
		_, body := s.get(t, "/metrics")
		return strings.Contains(body, "controlplane_store_up 1")
	})
	// PING answers while Redis still loads its append-only file; the audit
	// log's reads wait for the load.
	pollUntil(t, "the audit log reads again", func() bool {
		_, err := s.rules.ListRuleEvents(callCtx(t), &pb.ListRuleEventsRequest{PageSize: 1})
		return err == nil
	})
	after := s.state(t)
	if d := cmp.Diff(before.rules, after.rules, protocmp.Transform()); d != "" {
		t.Errorf("rules after Redis came back (-before +after):\n%s", d)
	}
	if d := cmp.Diff(before.events, after.events, protocmp.Transform()); d != "" {
		t.Errorf("audit log after Redis came back (-before +after):\n%s", d)
	}
}

// TestServeGracefulStopFinishesCallsInFlight holds a CreateRule inside Redis
// (CLIENT PAUSE WRITE) while the control plane is told to stop: it stops
// accepting connections, but finishes the call and acknowledges it.
func TestServeGracefulStopFinishesCallsInFlight(t *testing.T) {
	r := redistest.Start(t)
	admin := r.Client(t)
	c := testServeConfig(t)
	c.redisURL = r.URL()
	s := startServe(t, c)
	ctx := callCtx(t)

	if err := admin.Do(ctx, "CLIENT", "PAUSE", int64(serveWait/time.Millisecond), "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })
	created := make(chan error, 1)
	go func() {
		_, err := s.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "login", Priority: 5, FixedRate: 0.1}})
		created <- err
	}()
	// The call is in flight once Redis holds its script.
	pollUntil(t, "the CreateRule script is held by CLIENT PAUSE", func() bool {
		info, err := admin.Info(ctx, "clients").Result()
		return err == nil && strings.Contains(info, "blocked_clients:1\r\n")
	})

	s.cancel()
	// The listener closes as the graceful stop begins.
	pollUntil(t, "the gRPC listener is closed", func() bool {
		conn, err := net.DialTimeout("tcp", s.grpcAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case <-s.done:
		t.Fatalf("serve returned (%v) while a call was in flight", s.err)
	case err := <-created:
		t.Fatalf("CreateRule returned (%v) while Redis held it", err)
	default:
	}

	if err := admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-created:
		if err != nil {
			t.Errorf("CreateRule in flight during the stop: %v, want success", err)
		}
	case <-time.After(serveWait):
		t.Fatal("CreateRule did not return after Redis let it go")
	}
	s.mustStop(t)
	if ok, err := admin.HExists(ctx, "{tsc}:rules", "login").Result(); err != nil || !ok {
		t.Errorf("the acknowledged rule is not in Redis: %v, %v", ok, err)
	}
}

// TestServeStopEndsOpenStreams: SDK streams never end by themselves, so a
// stop waits for them only as long as --shutdown-timeout allows.
func TestServeStopEndsOpenStreams(t *testing.T) {
	c := testServeConfig(t)
	c.shutdown = 300 * time.Millisecond
	s := startServe(t, c)
	stream, err := s.sampling.StreamSampling(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "c1", ServiceName: "shop-api"}}}
	if err := stream.Send(hello); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetRules() == nil {
		t.Fatalf("first message on the stream: %v, %v; want the rule set", m, err)
	}

	start := time.Now()
	s.cancel()
	select {
	case <-s.done:
		if s.err != nil {
			t.Errorf("serve: %v", s.err)
		}
	case <-time.After(c.shutdown + serveWait):
		t.Fatalf("serve did not return within %v of being stopped with a stream open", c.shutdown+serveWait)
	}
	t.Logf("stopped in %v with a stream open", time.Since(start))
	if _, err := stream.Recv(); err == nil {
		t.Error("the stream is still open after serve returned")
	}
}

// pollUntil polls cond until it holds or serveWait passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(serveWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", serveWait, what)
		}
		<-tick.C
	}
}

func TestApplyEnv(t *testing.T) {
	defaults := serveConfig{
		grpcAddr: ":7070", httpAddr: ":7071", jaegerAddr: ":5778", xrayAddr: ":2000", xrayAccount: "000000000000", xrayClients: 100_000, redisPrefix: "tsc", reshard: true, logLevel: "info", logFormat: "text",
		maxConnAge: 30 * time.Minute, shutdown: 20 * time.Second, interval: 10 * time.Second,
		maxStreams: 10_000, maxConns: 10_000, maxStreamsPerConn: 1000, maxRequestBytes: 1 << 20, maxHeaderBytes: 16 << 10,
		windowBytes: 64 << 10, keepaliveMinTime: 10 * time.Second,
		replicaWait: time.Second,
		access:      accessConfig{xrayRegion: "us-east-1"},
	}
	// with returns base changed by edit.
	with := func(base serveConfig, edit func(c *serveConfig)) serveConfig {
		edit(&base)
		return base
	}
	everyVariable := map[string]string{
		"CONTROLPLANE_GRPC_ADDR":          "127.0.0.1:9000",
		"CONTROLPLANE_HTTP_ADDR":          "",
		"CONTROLPLANE_JAEGER_ADDR":        "127.0.0.1:5779",
		"CONTROLPLANE_XRAY_ADDR":          "127.0.0.1:2001",
		"CONTROLPLANE_XRAY_ACCOUNT":       "123456789012",
		"CONTROLPLANE_XRAY_MAX_CLIENTS":   "500",
		"CONTROLPLANE_REDIS_URL":          "redis://127.0.0.1:6380/1",
		"CONTROLPLANE_REDIS_PREFIX":       "staging",
		"CONTROLPLANE_REDIS_REPLICA_WAIT": "250ms",
		"CONTROLPLANE_REDIS_RESHARD":      "false",
		"CONTROLPLANE_DATA_DIR":           "/var/lib/controlplane",
		"CONTROLPLANE_REPORT_INTERVAL":    "5s",
		"CONTROLPLANE_MAX_CONNECTION_AGE": "1h",
		"CONTROLPLANE_SHUTDOWN_TIMEOUT":   "3s",
		"CONTROLPLANE_LOG_LEVEL":          "debug",
		"CONTROLPLANE_LOG_FORMAT":         "json",
		"CONTROLPLANE_MAX_STREAMS":        "500",

		"CONTROLPLANE_ADMIN_TOKEN_FILE":            "/etc/controlplane/admin-token",
		"CONTROLPLANE_CLIENT_CERT_MAP":             "/etc/controlplane/certs.yaml",
		"CONTROLPLANE_ANONYMOUS_SAMPLING_NETWORKS": "10.20.0.0/16,10.30.0.0/16",
		"CONTROLPLANE_ANONYMOUS_SAMPLING_SERVICES": "shop-*",
		"CONTROLPLANE_SECRETS_KEY_FILE":            "/etc/controlplane/secrets.key",
		"CONTROLPLANE_WEBHOOK_ALLOW":               "10.1.0.0/16,hooks.internal",
		"CONTROLPLANE_XRAY_REGION":                 "eu-west-1",
		"CONTROLPLANE_AUDIT_LOG_ENTRIES":           "5000",
	}
	fromEnv := serveConfig{
		grpcAddr: "127.0.0.1:9000", httpAddr: "", jaegerAddr: "127.0.0.1:5779", xrayAddr: "127.0.0.1:2001", xrayAccount: "123456789012", xrayClients: 500, redisURL: "redis://127.0.0.1:6380/1", redisPrefix: "staging",
		dataDir: "/var/lib/controlplane", interval: 5 * time.Second, maxConnAge: time.Hour, shutdown: 3 * time.Second,
		logLevel: "debug", logFormat: "json",
		maxStreams: 500, maxConns: 10_000, maxStreamsPerConn: 1000, maxRequestBytes: 1 << 20, maxHeaderBytes: 16 << 10,
		windowBytes: 64 << 10, keepaliveMinTime: 10 * time.Second,
		replicaWait: 250 * time.Millisecond,
		auditKeep:   5000,
		access: accessConfig{
			adminTokenFile: "/etc/controlplane/admin-token", clientCertMap: "/etc/controlplane/certs.yaml",
			anonNetworks: []string{"10.20.0.0/16", "10.30.0.0/16"}, anonServices: []string{"shop-*"},
			secretsKeyFile: "/etc/controlplane/secrets.key", webhookAllow: []string{"10.1.0.0/16", "hooks.internal"},
			xrayRegion: "eu-west-1",
		},
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want serveConfig
	}{
		{name: "defaults", want: defaults},
		{name: "unrelated variables", env: map[string]string{"GRPC_ADDR": "x", "CONTROLPLANE_SERVER": "x"}, want: defaults},
		{name: "env beats defaults", env: everyVariable, want: fromEnv},
		{
			name: "flags beat env",
			args: []string{"--grpc-addr", "127.0.0.1:1", "--max-connection-age", "1m", "--log-format", "text"},
			env:  everyVariable,
			want: with(fromEnv, func(c *serveConfig) {
				c.grpcAddr, c.maxConnAge, c.logFormat = "127.0.0.1:1", time.Minute, "text"
			}),
		},
		{
			name: "a flag given its default value still wins",
			args: []string{"--log-level", "info", "--redis-prefix", "tsc"},
			env:  map[string]string{"CONTROLPLANE_LOG_LEVEL": "debug", "CONTROLPLANE_REDIS_PREFIX": "staging"},
			want: defaults,
		},
		{
			name: "an empty flag wins",
			args: []string{"--http-addr="},
			env:  map[string]string{"CONTROLPLANE_HTTP_ADDR": "127.0.0.1:1"},
			want: with(defaults, func(c *serveConfig) { c.httpAddr = "" }),
		},
		{
			name: "an empty variable sets an empty value",
			env:  map[string]string{"CONTROLPLANE_HTTP_ADDR": ""},
			want: with(defaults, func(c *serveConfig) { c.httpAddr = "" }),
		},
		{
			name: "a bad variable under a flag is not read",
			args: []string{"--max-connection-age", "1m"},
			env:  map[string]string{"CONTROLPLANE_MAX_CONNECTION_AGE": "banana"},
			want: with(defaults, func(c *serveConfig) { c.maxConnAge = time.Minute }),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, c := serveFlags()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(fs, fakeEnv(tc.env)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, *c, cmp.AllowUnexported(serveConfig{}, accessConfig{}), cmpopts.IgnoreFields(accessConfig{}, "isLoopback")); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // each in the error
	}{
		{
			name: "bad duration",
			env:  map[string]string{"CONTROLPLANE_MAX_CONNECTION_AGE": "banana"},
			want: []string{"CONTROLPLANE_MAX_CONNECTION_AGE", "banana"},
		},
		{
			name: "every bad variable is named",
			env:  map[string]string{"CONTROLPLANE_SHUTDOWN_TIMEOUT": "soon", "CONTROLPLANE_REPORT_INTERVAL": "-"},
			want: []string{"CONTROLPLANE_SHUTDOWN_TIMEOUT", "soon", "CONTROLPLANE_REPORT_INTERVAL"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := serveFlags()
			err := applyEnv(fs, fakeEnv(tc.env))
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("applyEnv = %v, want an error naming %q", err, want)
				}
			}
		})
	}
}

// fakeEnv is an environment for applyEnv that holds only env.
func fakeEnv(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// hermetic pins every serve flag that could point somewhere, so that a
// CONTROLPLANE_* variable in the environment running the tests cannot; the
// case's own flags come after and win.
func hermetic(args ...string) []string {
	return append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--jaeger-addr", "127.0.0.1:0", "--xray-addr", "127.0.0.1:0", "--redis-url=", "--data-dir="}, args...)
}

func TestServeCommandLineErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// An unreachable Redis is not among them: serve starts and waits for
	// it (TestServeStartsBeforeRedis).
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		message string // in the error
		secret  string // not in the error or the log
	}{
		{"unknown log level", hermetic("--log-level", "loud"), exitUsage, "--log-level", ""},
		{"unknown log format", hermetic("--log-format", "xml"), exitUsage, "--log-format", ""},
		{"bad duration flag", hermetic("--shutdown-timeout", "soon"), exitUsage, "shutdown-timeout", ""},
		{"unknown flag", hermetic("--bogus"), exitUsage, "bogus", ""},
		{"report interval too short", hermetic("--report-interval", "1ms"), exitUsage, "--report-interval must be from 1s to 1m0s", ""},
		{"report interval too long", hermetic("--report-interval", "10m"), exitUsage, "--report-interval must be from 1s to 1m0s", ""},
		{"no stream bound", hermetic("--max-streams", "0"), exitUsage, "--max-streams", ""},
		{"window gRPC would ignore", hermetic("--flow-control-window", "1024"), exitUsage, "--flow-control-window", ""},
		{"no keepalive bound", hermetic("--keepalive-min-time", "0s"), exitUsage, "--keepalive-min-time", ""},
		{"arguments", hermetic("now"), exitUsage, "no arguments", ""},
		{"unparsable redis url", hermetic("--redis-url", "http://127.0.0.1:1"), exitUsage, "--redis-url", ""},
		{"unknown redis url parameter", hermetic("--redis-url", "redis://app:hunter2@127.0.0.1:1/0?colour=red"), exitUsage, "--redis-url", "hunter2"},
		{"grpc addr in use", hermetic("--grpc-addr", busy.Addr().String()), exitFailure, "--grpc-addr", ""},
		{"http addr in use", hermetic("--http-addr", busy.Addr().String()), exitFailure, "--http-addr", ""},
		{"jaeger addr in use", hermetic("--jaeger-addr", busy.Addr().String()), exitFailure, "--jaeger-addr", ""},
		{"xray addr in use", hermetic("--xray-addr", busy.Addr().String()), exitFailure, "--xray-addr", ""},
		{"no X-Ray client bound", hermetic("--xray-max-clients", "0"), exitUsage, "--xray-max-clients: want at least 1", ""},
		{"X-Ray region not AWS's form", hermetic("--xray-region", "EU West"), exitUsage, "--xray-region, --xray-account", ""},
		{"X-Ray account not 12 digits", hermetic("--xray-account", "12345"), exitUsage, "want 12 digits", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Were serve to start instead of failing, it would stop when
			// this ends and return nil, which fails the test.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			start := time.Now()
			err := run(ctx, tc.args, nil, &stdout, &stderr)
			if err == nil {
				t.Fatalf("serve %q succeeded", tc.args)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("failing took %v", took)
			}
			if code := exitCode(err); code != tc.code {
				t.Errorf("exit code %d, want %d (%v)", code, tc.code, err)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not contain %q", err, tc.message)
			}
			if tc.secret != "" && (strings.Contains(err.Error(), tc.secret) || strings.Contains(stderr.String(), tc.secret)) {
				t.Errorf("the password is printed: %q\n%s", err, stderr.String())
			}
		})
	}
}

// A bad environment variable is a usage error of serve like a bad flag.
func TestServeBadEnvironmentIsUsageError(t *testing.T) {
	t.Setenv("CONTROLPLANE_MAX_CONNECTION_AGE", "banana")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := run(ctx, hermetic(), nil, io.Discard, io.Discard)
	if code := exitCode(err); code != exitUsage || !strings.Contains(fmt.Sprint(err), "CONTROLPLANE_MAX_CONNECTION_AGE") {
		t.Errorf("serve with CONTROLPLANE_MAX_CONNECTION_AGE=banana: exit %d, %v; want %d naming the variable", code, err, exitUsage)
	}
}

func TestServeHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"serve", "-h"}, nil, &stdout, &stderr)
	// The help is the output: on stdout, and serve does not start.
	if err != nil || stderr.Len() > 0 {
		t.Errorf("serve -h: %v (exit %d), stderr %q; want exit 0 and nothing on stderr", err, exitCode(err), stderr.String())
	}
	for _, want := range []string{"CONTROLPLANE_REDIS_URL", "--grpc-addr", "--shutdown-timeout"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("serve -h lacks %q:\n%s", want, stdout.String())
		}
	}
}
