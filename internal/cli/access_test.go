package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/jaeger"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/ui"
	"github.com/tracesampling/controlplane/internal/xray"
)

// testAdminToken is the --admin-token-file of the access tests' servers.
const testAdminToken = "0123456789abcdef0123456789abcdef"

// writeFile writes content to a file of its own under t's temporary
// directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// accessServeConfig is serve's test configuration with a first admin.
func accessServeConfig(t *testing.T) *serveConfig {
	t.Helper()
	c := testServeConfig(t)
	c.access.adminTokenFile = writeFile(t, "admin-token", testAdminToken+"\n")
	return c
}

// bearerCtx is a call context that sends token ("": none).
func bearerCtx(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// createToken makes a token through the TokenService as the admin, and
// waits until the server knows it.
func (s *serving) createToken(t *testing.T, req *pb.CreateTokenRequest) string {
	t.Helper()
	resp, err := pb.NewTokenServiceClient(s.conn).CreateToken(bearerCtx(callCtx(t), testAdminToken), req)
	if err != nil {
		t.Fatalf("CreateToken(%s): %v", req.GetName(), err)
	}
	return resp.GetSecret()
}

// waitAuth polls until a call with token is refused as unauthenticated
// (refused) or not (!refused): the guard's token cache follows the store
// within a second.
func (s *serving) waitAuth(t *testing.T, token string, refused bool) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	pollUntil(t, "the token is known to be "+map[bool]string{true: "refused", false: "valid"}[refused], func() bool {
		_, err = s.sampling.GetSamplingRules(bearerCtx(callCtx(t), token), &pb.GetSamplingRulesRequest{ServiceName: "shop-cart"})
		return (status.Code(err) == codes.Unauthenticated) == refused
	})
	return time.Since(start)
}

// matrixColumn is a kind of caller.
type matrixColumn struct {
	name  string
	token string
	// role is the role of a valid credential, "" for none or an invalid one.
	role string
	// outOfScope: valid, but scoped to services other than the calls'.
	outOfScope bool
}

// grpcExpected is the policy the issue states, written out by hand so that
// the test checks serve against it rather than against auth's table: who
// may call each method. "public" is anyone; "scoped" methods also refuse a
// principal scoped to other services than the call's. A method serve
// registers that is missing here fails the test.
var grpcExpected = map[string]string{
	"/controlplane.v1.RuleService/CreateRule":     "editor admin scoped",
	"/controlplane.v1.RuleService/GetRule":        "viewer editor admin",
	"/controlplane.v1.RuleService/ListRules":      "viewer editor admin",
	"/controlplane.v1.RuleService/UpdateRule":     "editor admin scoped",
	"/controlplane.v1.RuleService/BatchEditRules": "editor admin scoped",
	"/controlplane.v1.RuleService/DeleteRule":     "editor admin scoped",
	"/controlplane.v1.RuleService/ListRuleEvents": "viewer editor admin",

	"/controlplane.v1.SamplingService/GetSamplingRules":   "sdk admin scoped",
	"/controlplane.v1.SamplingService/GetSamplingTargets": "sdk admin scoped",
	"/controlplane.v1.SamplingService/StreamSampling":     "sdk admin scoped",
	"/jaeger.api_v2.SamplingManager/GetSamplingStrategy":  "sdk admin scoped",

	"/controlplane.v1.BudgetService/CreateBudget":     "editor admin scoped",
	"/controlplane.v1.BudgetService/GetBudget":        "viewer editor admin",
	"/controlplane.v1.BudgetService/ListBudgets":      "viewer editor admin",
	"/controlplane.v1.BudgetService/UpdateBudget":     "editor admin scoped",
	"/controlplane.v1.BudgetService/DeleteBudget":     "editor admin scoped",
	"/controlplane.v1.BudgetService/GetBudgetStatus":  "viewer editor admin",
	"/controlplane.v1.BudgetService/GetBudgetHistory": "viewer editor admin",
	"/controlplane.v1.BudgetService/ListAlerts":       "viewer editor admin",
	"/controlplane.v1.BudgetService/WatchAlerts":      "viewer editor admin",
	"/controlplane.v1.BudgetService/SimulateCost":     "viewer editor admin",

	"/controlplane.v1.StatusService/GetFleetStatus": "viewer editor admin",
	"/controlplane.v1.StatusService/Explain":        "viewer editor admin",

	"/controlplane.v1.TokenService/CreateToken": "admin",
	"/controlplane.v1.TokenService/GetToken":    "admin",
	"/controlplane.v1.TokenService/ListTokens":  "admin",
	"/controlplane.v1.TokenService/RevokeToken": "admin",

	"/grpc.health.v1.Health/Check": "public",
	"/grpc.health.v1.Health/Watch": "public",
	"/grpc.health.v1.Health/List":  "viewer editor admin",

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      "viewer editor admin",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "viewer editor admin",
}

// grpcRequests are the requests the matrix sends (protojson), each made so
// that an allowed call ends at once without changing anything a later
// column needs: an edit names the rule or budget "shop" (for service
// shop-cart-*) with a stale etag, a creation one that exists, a sampling call
// the service shop-cart. Methods not listed get an empty request.
var grpcRequests = map[string]string{
	"/controlplane.v1.RuleService/CreateRule":                        `{"rule": {"name": "shop", "priority": 5, "fixed_rate": 0.1, "service_name": "shop-cart-*"}}`,
	"/controlplane.v1.RuleService/GetRule":                           `{"name": "shop"}`,
	"/controlplane.v1.RuleService/UpdateRule":                        `{"rule": {"name": "shop", "fixed_rate": 0.2, "etag": "999"}, "update_mask": "fixedRate"}`,
	"/controlplane.v1.RuleService/BatchEditRules":                    `{"updates": [{"rule": {"name": "shop", "fixed_rate": 0.2, "etag": "999"}, "update_mask": "fixedRate"}]}`,
	"/controlplane.v1.RuleService/DeleteRule":                        `{"name": "shop", "etag": "999"}`,
	"/controlplane.v1.SamplingService/GetSamplingRules":              `{"service_name": "shop-cart"}`,
	"/controlplane.v1.SamplingService/GetSamplingTargets":            `{"service_name": "shop-cart", "client_id": "matrix"}`,
	"/controlplane.v1.SamplingService/StreamSampling":                `{"hello": {"service_name": "shop-cart", "client_id": "matrix"}}`,
	"/jaeger.api_v2.SamplingManager/GetSamplingStrategy":             `{"serviceName": "shop-cart"}`,
	"/controlplane.v1.BudgetService/CreateBudget":                    `{"budget": {"name": "shop", "monthly_amount_micros": 5000000, "scope": {"service_names": ["shop-cart-*"]}}}`,
	"/controlplane.v1.BudgetService/GetBudget":                       `{"name": "shop"}`,
	"/controlplane.v1.BudgetService/UpdateBudget":                    `{"budget": {"name": "shop", "description": "x", "etag": "999"}, "update_mask": "description"}`,
	"/controlplane.v1.BudgetService/DeleteBudget":                    `{"name": "shop", "etag": "999"}`,
	"/controlplane.v1.BudgetService/GetBudgetStatus":                 `{"name": "shop"}`,
	"/controlplane.v1.BudgetService/WatchAlerts":                     `{"budget_name": "not a name!"}`,
	"/controlplane.v1.TokenService/GetToken":                         `{"name": "nope"}`,
	"/controlplane.v1.TokenService/RevokeToken":                      `{"name": "nope"}`,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      `{"list_services": ""}`,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": `{"list_services": ""}`,
}

// httpExpected is the same for the HTTP routes, by http.ServeMux pattern.
var httpExpected = map[string]string{
	"GET /healthz":         "public",
	"GET /readyz":          "public",
	"GET /metrics":         "viewer editor admin",
	"GET /ui":              "viewer editor admin",
	"/ui/":                 "viewer editor admin",
	"GET /ui/":             "viewer editor admin",
	"GET /ui/api/fleet":    "viewer editor admin",
	"GET /ui/api/budgets":  "viewer editor admin",
	"GET /ui/api/alerts":   "viewer editor admin",
	"POST /ui/api/explain": "viewer editor admin",
	"GET /ui/api/explain":  "viewer editor admin",
	"GET /ui/api/":         "viewer editor admin",
	"/debug/pprof/":        "admin",
	"/debug/pprof/profile": "admin",
	"/debug/pprof/symbol":  "admin",
	"/debug/pprof/trace":   "admin",
}

// jaegerExpected is the same for the routes of --jaeger-addr, with the
// request the matrix makes of each.
var jaegerExpected = map[string]struct{ path, policy string }{
	"GET /sampling": {"/sampling?service=shop-cart", "sdk admin scoped"},
	"GET /{$}":      {"/?service=shop-cart", "sdk admin scoped"},
}

// xrayExpected is the same for the X-Ray API on --xray-addr, with the
// body the matrix posts to each route: an edit of rule "shop" that either
// fails without changing anything a later column needs (a create of a rule
// that exists, tags the rule model refuses) or changes nothing (the fixed
// rate it has, untagging a tag it lacks); a delete names a rule that does
// not exist, so it is checked against the route's policy only (the core's
// scope check of deletes is package xraycore's test). Sampling calls of a
// principal scoped elsewhere are answered, with the rules it may see and
// its other documents rejected, not refused (package auth, ScopeXRay).
var xrayExpected = map[string]struct{ body, policy string }{
	"/GetSamplingRules":           {`{}`, "sdk admin"},
	"/SamplingTargets":            {`{"SamplingStatisticsDocuments": [{"RuleName": "shop", "ClientID": "0123456789abcdef01234567", "Timestamp": $TIME, "RequestCount": 10, "SampledCount": 1, "BorrowCount": 0}]}`, "sdk admin"},
	"/SamplingStatisticSummaries": {`{}`, "viewer editor admin"},
	"/ListTagsForResource":        {`{"ResourceARN": "$ARN"}`, "viewer editor admin"},
	"/CreateSamplingRule":         {`{"SamplingRule": {"RuleName": "shop", "Priority": 5, "FixedRate": 0.1, "ReservoirSize": 1, "ServiceName": "shop-cart-*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*", "ResourceARN": "*", "Version": 1}}`, "editor admin scoped"},
	"/UpdateSamplingRule":         {`{"SamplingRuleUpdate": {"RuleName": "shop", "FixedRate": 0.1}}`, "editor admin scoped"},
	"/DeleteSamplingRule":         {`{"RuleName": "nope"}`, "editor admin"},
	"/TagResource":                {`{"ResourceARN": "$ARN", "Tags": [{"Key": "team", "Value": "shop"}]}`, "editor admin scoped"},
	"/UntagResource":              {`{"ResourceARN": "$ARN", "TagKeys": ["nope"]}`, "editor admin scoped"},
}

// httpPaths are the concrete requests the matrix makes of a pattern
// (pprof's profiles as short as they go).
var httpPaths = map[string]string{
	"/debug/pprof/profile": "/debug/pprof/profile?seconds=1",
	"/debug/pprof/trace":   "/debug/pprof/trace?seconds=0.01",
	"GET /ui/api/":         "/ui/api/nothing",
}

// serveMethods returns every method of every service serve registered, as
// its reflection service lists them, with their descriptors.
func serveMethods(t *testing.T, s *serving) map[string]protoreflect.MethodDescriptor {
	t.Helper()
	rc, err := rpb.NewServerReflectionClient(s.conn).ServerReflectionInfo(bearerCtx(callCtx(t), testAdminToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.CloseSend()
	methods := map[string]protoreflect.MethodDescriptor{}
	for _, svc := range resp.GetListServicesResponse().GetService() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc.GetName()))
		if err != nil {
			t.Fatalf("serve registers %s, whose descriptor this test cannot find: %v", svc.GetName(), err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			methods["/"+svc.GetName()+"/"+string(m.Name())] = m
		}
	}
	return methods
}

// call makes one call of method with token and returns its status code.
func call(t *testing.T, conn *grpc.ClientConn, token, method string, m protoreflect.MethodDescriptor) codes.Code {
	t.Helper()
	req := dynamicpb.NewMessage(m.Input())
	if js, ok := grpcRequests[method]; ok {
		if err := protojson.Unmarshal([]byte(js), req); err != nil {
			t.Fatalf("request of %s: %v", method, err)
		}
	}
	ctx, cancel := context.WithTimeout(bearerCtx(t.Context(), token), serveWait)
	defer cancel() // ends a stream the call left open
	resp := dynamicpb.NewMessage(m.Output())
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		return status.Code(conn.Invoke(ctx, method, req, resp))
	}
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, method)
	if err != nil {
		return status.Code(err)
	}
	if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return status.Code(err)
	}
	_ = cs.CloseSend()
	err = cs.RecvMsg(resp)
	if errors.Is(err, io.EOF) {
		return codes.OK
	}
	return status.Code(err)
}

// wantRefusal is the refusal the policy makes of a column's call, or OK.
func wantRefusal(policy string, col matrixColumn, httpCodes bool) codes.Code {
	words := strings.Fields(policy)
	switch {
	case slices.Contains(words, "public"):
		return codes.OK
	case col.role == "":
		return codes.Unauthenticated
	case !slices.Contains(words, col.role):
		return codes.PermissionDenied
	case col.outOfScope && slices.Contains(words, "scoped") && !httpCodes:
		return codes.PermissionDenied
	}
	return codes.OK
}

// TestAccessMatrixOfServe crosses every gRPC method that serve registers
// (listed by its reflection service) and every HTTP route of its HTTP port
// (the patterns its handler and the dashboard register) with every kind of
// caller: none, a wrong, malformed, expired and revoked token, the first
// admin's, and each role unscoped, scoped to the calls' services and scoped
// to others. Each call is checked against the policy written out above:
// refused as UNAUTHENTICATED (401) or PERMISSION_DENIED (403), or let
// through to the handler. A method or route without an expectation fails,
// as does a path no route serves (refused by default, 403).
func TestAccessMatrixOfServe(t *testing.T) {
	c := accessServeConfig(t)
	c.debug = true
	s := startServe(t, c)
	ctx := bearerCtx(callCtx(t), testAdminToken)

	// What the edits of the matrix name: rule and budget "shop".
	if _, err := s.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "shop", Priority: 5, FixedRate: 0.1, ServiceName: "shop-cart-*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewBudgetServiceClient(s.conn).CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop-cart-*"}},
	}}); err != nil {
		t.Fatal(err)
	}

	cols := []matrixColumn{
		{name: "no credentials"},
		{name: "wrong token", token: "tsc_" + strings.Repeat("a", 58)},
		{name: "malformed token", token: "not-a-token"},
		{name: "expired token", token: s.createToken(t, &pb.CreateTokenRequest{Name: "expired", Role: pb.Role_ROLE_ADMIN, Ttl: durationpb.New(time.Nanosecond)})},
		{name: "revoked token", token: s.createToken(t, &pb.CreateTokenRequest{Name: "revoked", Role: pb.Role_ROLE_ADMIN})},
		{name: "first admin", token: testAdminToken, role: "admin"},
	}
	if _, err := pb.NewTokenServiceClient(s.conn).RevokeToken(ctx, &pb.RevokeTokenRequest{Name: "revoked"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []pb.Role{pb.Role_ROLE_VIEWER, pb.Role_ROLE_EDITOR, pb.Role_ROLE_SDK, pb.Role_ROLE_ADMIN} {
		role := strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
		cols = append(cols,
			matrixColumn{name: role, role: role, token: s.createToken(t, &pb.CreateTokenRequest{Name: role, Role: r})},
			matrixColumn{name: role + " scoped in", role: role, token: s.createToken(t, &pb.CreateTokenRequest{Name: role + "-in", Role: r, Services: []string{"shop-*"}})},
			matrixColumn{name: role + " scoped out", role: role, outOfScope: true,
				token: s.createToken(t, &pb.CreateTokenRequest{Name: role + "-out", Role: r, Services: []string{"payments-*"}})},
		)
	}
	for _, col := range cols {
		if col.token != "" && col.token != testAdminToken {
			s.waitAuth(t, col.token, col.role == "")
		}
	}

	methods := serveMethods(t, s)
	if len(methods) < len(grpcExpected) {
		t.Errorf("serve registers %d methods, fewer than the %d expected", len(methods), len(grpcExpected))
	}
	for m := range grpcExpected {
		if _, ok := methods[m]; !ok {
			t.Errorf("%s is expected but serve does not register it", m)
		}
	}
	routes := append(server.HTTPRoutes(c.debug, true), ui.Routes()...)
	for _, col := range cols {
		t.Run(col.name, func(t *testing.T) {
			for name, md := range methods {
				policy, ok := grpcExpected[name]
				if !ok {
					t.Errorf("serve registers %s, which the matrix does not list", name)
					continue
				}
				got, want := call(t, s.conn, col.token, name, md), wantRefusal(policy, col, false)
				if refused := got == codes.Unauthenticated || got == codes.PermissionDenied; want == codes.OK && refused || want != codes.OK && got != want {
					t.Errorf("%s: %v, want %v", name, got, want)
				}
			}
			for _, pattern := range routes {
				policy, ok := httpExpected[pattern]
				if !ok {
					t.Errorf("serve routes %q, which the matrix does not list", pattern)
					continue
				}
				method, path, found := strings.Cut(pattern, " ")
				if !found {
					method, path = http.MethodGet, pattern
				}
				if p, ok := httpPaths[pattern]; ok {
					path = p
				}
				got := s.request(t, method, path, col.token)
				want := map[codes.Code]int{codes.Unauthenticated: http.StatusUnauthorized, codes.PermissionDenied: http.StatusForbidden}[wantRefusal(policy, col, true)]
				if want == 0 && (got == http.StatusUnauthorized || got == http.StatusForbidden) || want != 0 && got != want {
					t.Errorf("%s %s: %d, want %v", method, path, got, map[int]string{0: "through"}[want]+strings.TrimLeft(http.StatusText(want), " "))
				}
			}
			if got := s.request(t, http.MethodGet, "/nothing-here", col.token); got != http.StatusForbidden {
				t.Errorf("GET /nothing-here: %d, want 403: a path without a policy is refused", got)
			}
			for _, pattern := range jaeger.Routes() {
				e, ok := jaegerExpected[pattern]
				if !ok {
					t.Errorf("--jaeger-addr routes %q, which the matrix does not list", pattern)
					continue
				}
				got := s.requestAt(t, s.jaegerAddr, http.MethodGet, e.path, col.token)
				want := map[codes.Code]int{codes.Unauthenticated: http.StatusUnauthorized, codes.PermissionDenied: http.StatusForbidden}[wantRefusal(e.policy, col, false)] // Jaeger's routes name a service, so scopes apply
				if want == 0 && (got == http.StatusUnauthorized || got == http.StatusForbidden) || want != 0 && got != want {
					t.Errorf("jaeger GET %s: %d, want %v", e.path, got, map[int]string{0: "through"}[want]+strings.TrimLeft(http.StatusText(want), " "))
				}
			}
			if got := s.requestAt(t, s.jaegerAddr, http.MethodGet, "/nothing-here", col.token); got != http.StatusForbidden {
				t.Errorf("jaeger GET /nothing-here: %d, want 403: a path without a policy is refused", got)
			}
			for _, path := range append(xray.Routes(), "/nothing-here") {
				e, ok := xrayExpected[path]
				if !ok && path != "/nothing-here" {
					t.Errorf("--xray-addr routes %q, which the matrix does not list", path)
					continue
				}
				body := strings.NewReplacer("$TIME", strconv.FormatInt(time.Now().Unix(), 10), "$ARN", "arn:aws:xray:us-east-1:000000000000:sampling-rule/shop").Replace(e.body)
				got, typ := s.xrayRequest(t, path, body, col.token)
				want := wantRefusal(e.policy, col, false)
				if !ok {
					// No policy: refused by default, as on every port.
					if got != http.StatusForbidden {
						t.Errorf("xray POST %s: %d, want 403: a path without a policy is refused", path, got)
					}
					continue
				}
				// X-Ray answers every refusal 403, with the type AWS gives.
				wantType := map[codes.Code][]string{
					codes.Unauthenticated:  {"MissingAuthenticationTokenException", "UnrecognizedClientException"},
					codes.PermissionDenied: {"AccessDeniedException"},
				}[want]
				if want == codes.OK && got == http.StatusForbidden || want != codes.OK && (got != http.StatusForbidden || !slices.Contains(wantType, typ)) {
					t.Errorf("xray POST %s: %d %s, want %v", path, got, typ, map[bool]string{true: "through", false: fmt.Sprintf("403 %v", wantType)}[want == codes.OK])
				}
			}
		})
	}
}

// request makes an HTTP request of serve's HTTP port with token and returns
// its status code.
func (s *serving) request(t *testing.T, method, path, token string) int {
	t.Helper()
	return s.requestAt(t, s.httpAddr, method, path, token)
}

// xrayRequest posts body to path on serve's X-Ray port with token, and
// returns the status code and X-Ray's error type.
func (s *serving) xrayRequest(t *testing.T, path, body, token string) (int, string) {
	t.Helper()
	resp := s.do(t, s.xrayAddr, http.MethodPost, path, body, token)
	return resp.StatusCode, resp.Header.Get("X-Amzn-Errortype")
}

// requestAt is request of the port at addr.
func (s *serving) requestAt(t *testing.T, addr, method, path, token string) int {
	t.Helper()
	body := ""
	if method == http.MethodPost {
		body = "{}"
	}
	return s.do(t, addr, method, path, body, token).StatusCode
}

// do makes one request with token and returns its response, body read.
func (s *serving) do(t *testing.T, addr, method, path, body, token string) *http.Response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(callCtx(t), method, "http://"+addr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestRevokedOnAnotherReplica: two replicas on one Redis; a token created
// and revoked through one is refused by the other within a second (logged:
// the test asserts only that it is refused, as machines here are shared).
func TestRevokedOnAnotherReplica(t *testing.T) {
	r := redistest.Start(t)
	replica := func() *serving {
		c := accessServeConfig(t)
		c.redisURL = r.URL()
		return startServe(t, c)
	}
	a, b := replica(), replica()
	token := a.createToken(t, &pb.CreateTokenRequest{Name: "shop-sdk", Role: pb.Role_ROLE_SDK, Services: []string{"shop-*"}})
	b.waitAuth(t, token, false)
	if _, err := pb.NewTokenServiceClient(a.conn).RevokeToken(bearerCtx(callCtx(t), testAdminToken), &pb.RevokeTokenRequest{Name: "shop-sdk"}); err != nil {
		t.Fatal(err)
	}
	took := b.waitAuth(t, token, true)
	t.Logf("the other replica refused the revoked token after %v", took)
	_, err := b.sampling.GetSamplingRules(bearerCtx(callCtx(t), token), &pb.GetSamplingRulesRequest{ServiceName: "shop-cart"})
	if !strings.Contains(status.Convert(err).Message(), "revoked") {
		t.Errorf("the refusal %v does not say the token was revoked", err)
	}
	// The token list of either replica says who revoked it.
	resp, err := pb.NewTokenServiceClient(b.conn).GetToken(bearerCtx(callCtx(t), testAdminToken), &pb.GetTokenRequest{Name: "shop-sdk"})
	if err != nil || resp.GetToken().GetState() != pb.Token_STATE_REVOKED || resp.GetToken().GetRevokedBy() != "static:admin" {
		t.Errorf("GetToken on the other replica: %v, %v; want revoked by static:admin", resp, err)
	}
}

// TestSpoofedActorChangesNothing: a client that claims to be someone else
// in x-controlplane-actor is recorded as the principal it authenticated as,
// in `rules history` and on budgets.
func TestSpoofedActorChangesNothing(t *testing.T) {
	s := startServe(t, accessServeConfig(t))
	editor := s.createToken(t, &pb.CreateTokenRequest{Name: "shop-editor", Role: pb.Role_ROLE_EDITOR, Services: []string{"shop-*"}})
	s.waitAuth(t, editor, false)
	ctx := metadata.AppendToOutgoingContext(bearerCtx(callCtx(t), editor), "x-controlplane-actor", "admin@example.com")
	if _, err := s.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "cart", Priority: 5, FixedRate: 1, ServiceName: "shop-cart"}}); err != nil {
		t.Fatal(err)
	}
	b, err := pb.NewBudgetServiceClient(s.conn).CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 5_000_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop-*"}},
	}})
	if err != nil || b.GetBudget().GetUpdateActor() != "token:shop-editor" {
		t.Errorf("budget created with a spoofed actor: %v, %v; want update_actor token:shop-editor", b, err)
	}

	res := runCLI(t, "", "rules", "history", "cart", "--server", s.grpcAddr, "--token", editor).mustOK(t)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "token:shop-editor") || strings.Contains(res.stdout, "admin@example.com") {
		t.Errorf("rules history cart:\n%s\nwant one create by token:shop-editor", res.stdout)
	}
	// The CLI reads the token from the environment as well.
	t.Setenv(tokenEnv, editor)
	res = runCLI(t, "", "rules", "history", "cart", "--server", s.grpcAddr).mustOK(t)
	if !strings.Contains(res.stdout, "token:shop-editor") {
		t.Errorf("rules history with %s:\n%s", tokenEnv, res.stdout)
	}
}

// TestRemotePeerOfUnconfiguredServer: a server without credentials answers
// loopback clients only. Tests may use loopback addresses only (127.0.0.2
// is loopback too), so serve's guard is told that no peer is loopback:
// everything else, the listener, the CLI, its error mapping, is as for a
// remote peer. The guard's own test (auth TestProtectedModeRemoteRefusal)
// checks the decision for a real non-loopback address.
func TestRemotePeerOfUnconfiguredServer(t *testing.T) {
	c := testServeConfig(t)
	c.access.isLoopback = func(netip.Addr) bool { return false }
	s := startServe(t, c)
	if !strings.Contains(s.logs.String(), "protected mode: this control plane has no credentials configured") {
		t.Errorf("serve did not say at start-up that it is in protected mode:\n%s", s.logs.String())
	}
	res := s.cli(t, "list")
	if res.code != exitDenied {
		t.Fatalf("rules list from a remote peer: exit %d, %v; want %d", res.code, res.err, exitDenied)
	}
	for _, want := range []string{"answers only loopback clients", "--admin-token-file", "CONTROLPLANE_ADMIN_TOKEN_FILE", "--client-cert-map", "--anonymous-sampling-networks"} {
		if !strings.Contains(res.err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", res.err, want)
		}
	}
	code, body := s.get(t, "/metrics")
	if code != http.StatusUnauthorized || !strings.Contains(body, "--admin-token-file") {
		t.Errorf("/metrics from a remote peer: %d %q, want 401 saying what to configure", code, body)
	}
	if code, _ := s.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz from a remote peer: %d, want 200: probes need no credentials", code)
	}
	if got := s.healthStatus(t); got == healthpb.HealthCheckResponse_UNKNOWN {
		t.Errorf("gRPC health from a remote peer: %v", got)
	}
}

// TestLoopbackOfUnconfiguredServer: the README's `serve` on a laptop, and
// the CLI beside it, need no credentials.
func TestLoopbackOfUnconfiguredServer(t *testing.T) {
	s := startServe(t, testServeConfig(t))
	s.cli(t, "create", "--name", "checkout", "--priority", "10", "--fixed-rate", "0.5").mustOK(t)
	res := s.cli(t, "history", "checkout").mustOK(t)
	if !strings.Contains(res.stdout, "local") {
		t.Errorf("history:\n%s\nwant the edit by local", res.stdout)
	}
	res = runCLI(t, "", "tokens", "create", "ci", "--role", "viewer", "--server", s.grpcAddr).mustOK(t)
	if secret := strings.TrimSpace(res.stdout); !strings.HasPrefix(secret, "tsc_") || strings.Contains(res.stderr, secret) {
		t.Errorf("tokens create: stdout %q, stderr %q; want the secret alone on stdout", res.stdout, res.stderr)
	}
}

// TestHistoryAfterTrimming is the finding at a smaller scale: after
// an apply of many rules and a prune, the log of all rules is trimmed to its
// retention (--audit-log-entries), but `rules history Default` still shows
// the Default rule's own history, and `rules history` says what it dropped.
func TestHistoryAfterTrimming(t *testing.T) {
	c := testServeConfig(t)
	c.auditKeep = 50
	s := startServe(t, c)
	s.cli(t, "update", "Default", "--fixed-rate", "0.01").mustOK(t)
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "  - {name: r%d, priority: %d, fixed_rate: 0.1}\n", i, i+1)
	}
	s.cli(t, "apply", "-f", writeFile(t, "many.yaml", b.String())).mustOK(t)
	s.cli(t, "apply", "--prune", "-f", writeFile(t, "none.yaml", "rules: []\n")).mustOK(t)

	res := s.cli(t, "history", "Default").mustOK(t)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "update  Default") || !strings.Contains(lines[2], "create  Default") {
		t.Errorf("rules history Default after 400 edits:\n%s\nwant its update and creation", res.stdout)
	}
	if res.stderr != "" {
		t.Errorf("rules history Default says %q, but its history is whole", res.stderr)
	}
	res = s.cli(t, "history", "--limit", "0").mustOK(t)
	if n := strings.Count(res.stdout, "\n") - 1; n != c.auditKeep {
		t.Errorf("rules history lists %d entries, want the %d the log keeps", n, c.auditKeep)
	}
	if !strings.Contains(res.stderr, "older entries of the audit log were dropped by the audit log's retention") {
		t.Errorf("rules history does not say it was trimmed; stderr %q", res.stderr)
	}
}

// TestWebhookToTheNetworkRefused: serve refuses, when a budget is written,
// webhooks to loopback and to the cloud metadata service, unless
// --webhook-allow opens them.
func TestWebhookToTheNetworkRefused(t *testing.T) {
	s := startServe(t, testServeConfig(t))
	for url, why := range map[string]string{
		"http://127.0.0.1:8080/hook":               "127.0.0.1 is a loopback address",
		"http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local",
	} {
		res := runCLI(t, "", "budgets", "create", "shop", "--amount", "5", "--webhook", url, "--server", s.grpcAddr)
		if res.code != exitInvalid || !strings.Contains(res.err.Error(), "channels[0].webhook_url") || !strings.Contains(res.err.Error(), why) {
			t.Errorf("budgets create --webhook %s: exit %d, %v; want %d saying %q", url, res.code, res.err, exitInvalid, why)
		}
	}
	res := runCLI(t, "", "budgets", "list", "--server", s.grpcAddr).mustOK(t)
	if strings.Contains(res.stdout, "shop") {
		t.Errorf("a refused budget was stored:\n%s", res.stdout)
	}

	c := testServeConfig(t)
	c.access.webhookAllow = []string{"127.0.0.1/32"}
	s = startServe(t, c)
	runCLI(t, "", "budgets", "create", "shop", "--amount", "5", "--webhook", "http://127.0.0.1:8080/hook", "--server", s.grpcAddr).mustOK(t)
}

// TestTokensCommands: an admin creates, lists and revokes credentials; the
// secret is printed once and no output carries a token's hash or an AWS
// key's sealed secret.
func TestTokensCommands(t *testing.T) {
	c := accessServeConfig(t)
	c.access.secretsKeyFile = writeFile(t, "secrets.key", strings.Repeat("ab", 32)+"\n")
	s := startServe(t, c)
	tokens := func(args ...string) cliResult {
		return runCLI(t, "", append(append([]string{"tokens"}, args...), "--server", s.grpcAddr, "--token", testAdminToken)...)
	}
	res := tokens("create", "shop-sdk", "--role", "sdk", "--services", "shop-*", "--expires", "90d").mustOK(t)
	secret := strings.TrimSpace(res.stdout)
	if !strings.HasPrefix(secret, "tsc_") || !strings.Contains(res.stderr, "services shop-*") || !strings.Contains(res.stderr, "expires ") {
		t.Errorf("tokens create: stdout %q, stderr %q", res.stdout, res.stderr)
	}
	res = tokens("create", "xray-ci", "--role", "editor", "--aws").mustOK(t)
	if !strings.HasPrefix(res.stdout, "AWS_ACCESS_KEY_ID=TSCK") || !strings.Contains(res.stdout, "\nAWS_SECRET_ACCESS_KEY=") {
		t.Errorf("tokens create --aws: %q", res.stdout)
	}
	if res := tokens("create", "x", "--role", "root"); res.code != exitUsage {
		t.Errorf("tokens create --role root: exit %d, %v", res.code, res.err)
	}
	if res := tokens("create", "shop-sdk", "--role", "sdk"); res.code != exitConflict {
		t.Errorf("tokens create of a name in use: exit %d, %v", res.code, res.err)
	}
	// Only an admin manages tokens.
	s.waitAuth(t, secret, false)
	res = runCLI(t, "", "tokens", "list", "--server", s.grpcAddr, "--token", secret)
	if res.code != exitDenied || !strings.Contains(res.err.Error(), "needs the admin role") && !strings.Contains(res.err.Error(), "admin") {
		t.Errorf("tokens list with an sdk token: exit %d, %v", res.code, res.err)
	}

	tokens("revoke", "shop-sdk").mustOK(t)
	s.waitAuth(t, secret, true)
	list := tokens("list").mustOK(t).stdout
	for _, want := range []string{"shop-sdk  sdk     shop-*", "revoked", "xray-ci", "aws TSCK", "static:admin"} {
		if !strings.Contains(list, want) {
			t.Errorf("tokens list lacks %q:\n%s", want, list)
		}
	}
	js := tokens("list", "-o", "json").mustOK(t).stdout + tokens("get", "xray-ci", "-o", "yaml").mustOK(t).stdout
	for _, leak := range []string{auth.HashToken(secret), "enc1:", secret} {
		if strings.Contains(list+js, leak) {
			t.Errorf("an answer carries %q:\n%s%s", leak, list, js)
		}
	}

	// Without a sealing key, AWS keys are refused and say what to set.
	s = startServe(t, accessServeConfig(t))
	res = runCLI(t, "", "tokens", "create", "ci", "--role", "sdk", "--aws", "--server", s.grpcAddr, "--token", testAdminToken)
	if res.code != exitConflict || !strings.Contains(res.err.Error(), "--secrets-key-file") {
		t.Errorf("tokens create --aws without a key: exit %d, %v", res.code, res.err)
	}
}
