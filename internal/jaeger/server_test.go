package jaeger

import (
	stdcmp "cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memSource is an in-memory Source: a rule list and per-rule factors.
type memSource struct {
	mu      sync.Mutex
	rules   []rules.Rule
	factors map[string][2]float64
	err     error
}

func (m *memSource) Rules(_ context.Context, _ string) ([]rules.Rule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rules, m.err
}

func (m *memSource) Factors(_ string, r *rules.Rule) (float64, float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.factors[r.Name]; ok {
		return f[0], f[1]
	}
	return 1, 1
}

// countingPollers records every poll and answers a fixed count.
type countingPollers struct {
	mu    sync.Mutex
	polls []string
	n     int
}

func (c *countingPollers) Seen(service, poller string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.polls = append(c.polls, service+"@"+poller)
	return c.n
}

func (c *countingPollers) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.polls...)
}

func shopRules() []rules.Rule {
	return []rules.Rule{rule("checkout", 10, 0.5, 8, route("POST", "/checkout")), def(0.05, 4)}
}

// The JSON is Jaeger's collector's, byte for byte in layout.
const shopJSON = `{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.05},"operationSampling":{"defaultSamplingProbability":0.05,"defaultLowerBoundTracesPerSecond":2,"perOperationStrategies":[{"operation":"POST /checkout","probabilisticSampling":{"samplingRate":0.5}}],"defaultUpperBoundTracesPerSecond":0}}`

func newHTTP(t *testing.T, src Source, p Pollers) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewServer(src, p, Options{Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestHTTPServesTheStrategy(t *testing.T) {
	pollers := &countingPollers{n: 2}
	srv := newHTTP(t, &memSource{rules: shopRules()}, pollers)
	for _, path := range []string{"/sampling?service=shop", "/?service=shop"} {
		code, h, body := get(t, srv.URL+path)
		if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s: %d %q, want 200 application/json", path, code, h.Get("Content-Type"))
		}
		if body != shopJSON {
			t.Errorf("GET %s:\n got %s\nwant %s", path, body, shopJSON)
		}
		// It is the proto-JSON of the translated strategy.
		var got api.SamplingStrategyResponse
		if err := protojson.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(Translate("shop", in(shopRules()...), 2), &got, protocmp.Transform()); diff != "" {
			t.Errorf("GET %s decoded (-want +got):\n%s", path, diff)
		}
	}
	if diff := cmp.Diff([]string{"shop@127.0.0.1", "shop@127.0.0.1"}, pollers.seen()); diff != "" {
		t.Errorf("polls counted (-want +got):\n%s", diff)
	}
}

func TestMarshalJSONEmptyAndZero(t *testing.T) {
	got, err := MarshalJSON(want(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0},"operationSampling":{"defaultSamplingProbability":0,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[],"defaultUpperBoundTracesPerSecond":0}}`
	if string(got) != wantJSON {
		t.Errorf("MarshalJSON:\n got %s\nwant %s", got, wantJSON)
	}
	rl, err := MarshalJSON(&api.SamplingStrategyResponse{StrategyType: api.SamplingStrategyType_RATE_LIMITING, RateLimitingSampling: &api.RateLimitingSamplingStrategy{MaxTracesPerSecond: 3}})
	if err != nil || string(rl) != `{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":3}}` {
		t.Errorf("MarshalJSON rate limiting = %s, %v", rl, err)
	}
}

func TestHTTPErrors(t *testing.T) {
	long := strings.Repeat("é", rules.MaxServiceNameLen+1)
	tests := []struct {
		name     string
		method   string
		path     string
		srcErr   error
		wantCode int
		wantBody string
	}{
		{name: "no service", path: "/sampling", wantCode: 400, wantBody: "'service' parameter must be provided once"},
		{name: "two services", path: "/sampling?service=a&service=b", wantCode: 400, wantBody: "'service' parameter must be provided once"},
		{name: "empty service", path: "/sampling?service=", wantCode: 400, wantBody: "service: is required"},
		{name: "long service", path: "/sampling?service=" + long, wantCode: 400, wantBody: "service: at most 64 characters of UTF-8"},
		{name: "not UTF-8", path: "/?service=%ff", wantCode: 400, wantBody: "service: at most 64 characters of UTF-8"},
		{name: "store down", path: "/sampling?service=shop", srcErr: fmt.Errorf("read: %w", store.ErrUnavailable), wantCode: 503, wantBody: "the rule store is unavailable; retry later"},
		{name: "a bug", path: "/sampling?service=shop", srcErr: errors.New("redis: secret detail"), wantCode: 500, wantBody: "internal error"},
		{name: "canceled", path: "/sampling?service=shop", srcErr: context.Canceled, wantCode: 503, wantBody: "request canceled or timed out; retry later"},
		{name: "POST", method: http.MethodPost, path: "/sampling?service=shop", wantCode: 405, wantBody: "Method Not Allowed"},
		{name: "another path", path: "/api/sampling?service=shop", wantCode: 404, wantBody: "404 page not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pollers := &countingPollers{n: 1}
			srv := newHTTP(t, &memSource{rules: shopRules(), err: tt.srcErr}, pollers)
			req, err := http.NewRequest(stdcmp.Or(tt.method, http.MethodGet), srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode || strings.TrimSpace(string(body)) != tt.wantBody {
				t.Errorf("%s %s = %d %q, want %d %q", req.Method, tt.path, resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			if tt.wantCode == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if tt.wantCode == 400 && len(pollers.seen()) != 0 {
				t.Errorf("a refused poll was counted: %v", pollers.seen())
			}
		})
	}
}

// The instance estimate divides each reservoir among the pollers.
func TestStrategyDividesByPollers(t *testing.T) {
	s := NewServer(&memSource{rules: shopRules()}, NewEstimator(EstimatorOptions{}), Options{})
	for i, wantLower := range []float64{4, 2, 4.0 / 3, 4.0 / 3} {
		poller := fmt.Sprint("10.0.0.", min(i, 2))
		resp, err := s.Strategy(context.Background(), "shop", poller)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetOperationSampling().GetDefaultLowerBoundTracesPerSecond(); got != wantLower {
			t.Errorf("poll %d by %s: lower bound %v, want %v", i, poller, got, wantLower)
		}
	}
}

func TestPollerOf(t *testing.T) {
	for addr, want := range map[string]string{"10.1.2.3:4567": "10.1.2.3", "[::1]:80": "::1", "@": "@", "": ""} {
		if got := pollerOf(addr); got != want {
			t.Errorf("pollerOf(%q) = %q, want %q", addr, got, want)
		}
	}
}

func newGRPC(t *testing.T, src Source, p Pollers) api.SamplingManagerClient {
	t.Helper()
	gs := grpc.NewServer()
	NewServer(src, p, Options{Logger: slog.New(slog.DiscardHandler)}).RegisterGRPC(gs)
	conn, _ := servetest.Serve(t, servetest.GRPC(gs))
	return api.NewSamplingManagerClient(conn)
}

func TestGRPCServesTheStrategy(t *testing.T) {
	pollers := &countingPollers{n: 2}
	c := newGRPC(t, &memSource{rules: shopRules()}, pollers)
	got, err := c.GetSamplingStrategy(context.Background(), &api.SamplingStrategyParameters{ServiceName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Translate("shop", in(shopRules()...), 2), got, protocmp.Transform()); diff != "" {
		t.Errorf("GetSamplingStrategy (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"shop@127.0.0.1"}, pollers.seen()); diff != "" {
		t.Errorf("polls counted (-want +got):\n%s", diff)
	}
}

func TestGRPCErrors(t *testing.T) {
	tests := []struct {
		name      string
		service   string
		srcErr    error
		wantCode  codes.Code
		wantMsg   string
		wantField string
	}{
		{name: "no service", wantCode: codes.InvalidArgument, wantMsg: "service: is required", wantField: "serviceName"},
		{name: "long service", service: strings.Repeat("x", 65), wantCode: codes.InvalidArgument, wantMsg: "service: at most 64 characters of UTF-8", wantField: "serviceName"},
		{name: "store down", service: "shop", srcErr: store.ErrUnavailable, wantCode: codes.Unavailable, wantMsg: "the rule store is unavailable; retry later"},
		{name: "a bug", service: "shop", srcErr: errors.New("redis: secret detail"), wantCode: codes.Internal, wantMsg: "internal error"},
		{name: "deadline", service: "shop", srcErr: context.DeadlineExceeded, wantCode: codes.DeadlineExceeded, wantMsg: "deadline exceeded"},
		{name: "canceled", service: "shop", srcErr: context.Canceled, wantCode: codes.Canceled, wantMsg: "request canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pollers := &countingPollers{n: 1}
			c := newGRPC(t, &memSource{rules: shopRules(), err: tt.srcErr}, pollers)
			_, err := c.GetSamplingStrategy(context.Background(), &api.SamplingStrategyParameters{ServiceName: tt.service})
			st := status.Convert(err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Fatalf("GetSamplingStrategy = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			var wantFields []string
			if tt.wantField != "" {
				wantFields = []string{tt.wantField}
				if len(pollers.seen()) != 0 {
					t.Errorf("a refused poll was counted: %v", pollers.seen())
				}
			}
			if diff := cmp.Diff(wantFields, fields); diff != "" {
				t.Errorf("BadRequest fields (-want +got):\n%s", diff)
			}
		})
	}
}
