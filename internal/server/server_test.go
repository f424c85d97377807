package server

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type testServer struct {
	srv   *Server
	conn  *grpc.ClientConn
	rules pb.RuleServiceClient
}

// startServer runs a real gRPC server on a loopback port in front of st and
// returns a client connected to it.
func startServer(t *testing.T, st RuleStore) *testServer {
	t.Helper()
	srv := New(Options{Rules: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	conn, _ := servetest.Serve(t, srv)
	return &testServer{srv: srv, conn: conn, rules: pb.NewRuleServiceClient(conn)}
}

func newMemStore(t *testing.T) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fieldViolations returns the BadRequest field names carried by err.
func fieldViolations(t *testing.T, err error) []string {
	t.Helper()
	st := status.Convert(err)
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

func checkout() *pb.Rule {
	return &pb.Rule{
		Name: "checkout", Priority: 10, FixedRate: 0.5, ReservoirSize: 5,
		ServiceName: "shop-*", HttpMethod: "POST", UrlPath: "/checkout*",
		Attributes: map[string]string{"tier": "gold"}, Labels: map[string]string{"team": "payments"},
	}
}

func TestHealthAndReflection(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	hc := healthpb.NewHealthClient(ts.conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before readiness: %v %v, want NOT_SERVING", resp, err)
	}
	ts.srv.SetServing(true)
	resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.RuleService_ServiceDesc.ServiceName})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after SetServing(true): %v %v", resp, err)
	}

	rc, err := rpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"controlplane.v1.RuleService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
	_ = rc.CloseSend()
}

func TestCreateGetDelete(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	// A client's claim of who it is changes nothing: the audit log records
	// the authenticated principal, here the loopback peer of a server
	// without credentials.
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "x-controlplane-actor", "alice@laptop")
	created, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: checkout()})
	if err != nil {
		t.Fatal(err)
	}
	r := created.GetRule()
	if r.GetEtag() == "" || r.GetCreateTime() == nil || r.GetUpdateTime() == nil {
		t.Errorf("created rule lacks etag or times: %v", r)
	}
	if r.GetServiceType() != "*" || r.GetHost() != "*" {
		t.Errorf("empty globs not normalised to *: %v", r)
	}
	got, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "checkout"})
	if err != nil || got.GetRule().GetEtag() != r.GetEtag() || got.GetRule().GetFixedRate() != 0.5 {
		t.Fatalf("GetRule = %v, %v", got, err)
	}
	if _, err := ts.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: "checkout", Etag: r.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "checkout"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after delete: %v, want NotFound", err)
	}
	ev, err := ts.rules.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{RuleName: "checkout"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.GetEvents()) != 2 {
		t.Fatalf("events = %v, want create and delete", ev.GetEvents())
	}
	del, cre := ev.GetEvents()[0], ev.GetEvents()[1]
	if del.GetAction() != pb.RuleEvent_ACTION_DELETE || del.GetBefore().GetName() != "checkout" || del.GetAfter() != nil ||
		cre.GetAction() != pb.RuleEvent_ACTION_CREATE || cre.GetAfter().GetFixedRate() != 0.5 || cre.GetActor() != "local" || del.GetActor() != "local" {
		t.Errorf("events = %v", ev.GetEvents())
	}
}

func TestUpdate(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	created, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: checkout()})
	if err != nil {
		t.Fatal(err)
	}
	up, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{
		Rule:       &pb.Rule{Name: "checkout", FixedRate: 0.1, UrlPath: "/ignored", Etag: created.GetRule().GetEtag()},
		UpdateMask: mask("fixed_rate"),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := up.GetRule()
	if r.GetFixedRate() != 0.1 || r.GetUrlPath() != "/checkout*" || r.GetEtag() == created.GetRule().GetEtag() {
		t.Errorf("update applied outside its mask or kept the etag: %v", r)
	}
	if !r.GetCreateTime().AsTime().Equal(created.GetRule().GetCreateTime().AsTime()) {
		t.Errorf("create time changed")
	}
	// Without an etag the update applies to whatever is current.
	if _, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", ReservoirSize: 9}, UpdateMask: mask("reservoir_size")}); err != nil {
		t.Fatal(err)
	}
	// Re-rating the Default rule is allowed.
	def, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", FixedRate: 0.01, ReservoirSize: 2}, UpdateMask: mask("fixed_rate", "reservoir_size")})
	if err != nil || def.GetRule().GetFixedRate() != 0.01 || def.GetRule().GetPriority() != 10000 {
		t.Fatalf("re-rate Default: %v, %v", def, err)
	}
}

func TestErrors(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	created, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: checkout()})
	if err != nil {
		t.Fatal(err)
	}
	stale := created.GetRule().GetEtag()
	if _, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", FixedRate: 0.2}, UpdateMask: mask("fixed_rate")}); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 2<<20)

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		fields []string
	}{
		{"create without rule", func() error {
			_, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{})
			return err
		}, codes.InvalidArgument, []string{"rule"}},
		{"create with many bad fields", func() error {
			_, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{
				Name: "bad name!", Priority: 0, FixedRate: 1.5, ReservoirSize: -1, HttpMethod: "VERYLONGMETHOD",
				Attributes: map[string]string{"k": ""},
			}})
			return err
		}, codes.InvalidArgument, []string{"rule.name", "rule.priority", "rule.fixed_rate", "rule.reservoir_size", "rule.http_method", "rule.attributes.k"}},
		{"create duplicate", func() error {
			_, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: checkout()})
			return err
		}, codes.AlreadyExists, nil},
		{"create Default", func() error {
			_, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "Default", Priority: 10000}})
			return err
		}, codes.AlreadyExists, nil},
		{"create oversized", func() error {
			r := checkout()
			r.Description = big
			_, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r})
			return err
		}, codes.ResourceExhausted, nil},
		{"get invalid name", func() error {
			_, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "no/slashes"})
			return err
		}, codes.InvalidArgument, []string{"name"}},
		{"get unknown", func() error {
			_, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "nope"})
			return err
		}, codes.NotFound, nil},
		{"update stale etag", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", FixedRate: 0.3, Etag: stale}, UpdateMask: mask("fixed_rate")})
			return err
		}, codes.Aborted, nil},
		{"update malformed etag", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", Etag: "W/x"}, UpdateMask: mask("fixed_rate")})
			return err
		}, codes.InvalidArgument, []string{"rule.etag"}},
		{"update output-only field", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout"}, UpdateMask: mask("create_time")})
			return err
		}, codes.InvalidArgument, []string{"update_mask"}},
		{"update invalid value", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", FixedRate: -1}, UpdateMask: mask("fixed_rate")})
			return err
		}, codes.InvalidArgument, []string{"rule.fixed_rate"}},
		{"update unknown", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "nope"}, UpdateMask: mask("fixed_rate")})
			return err
		}, codes.NotFound, nil},
		{"narrow Default", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", ServiceName: "shop"}, UpdateMask: mask("service_name")})
			return err
		}, codes.FailedPrecondition, nil},
		{"re-prioritise Default", func() error {
			_, err := ts.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "Default", Priority: 5}, UpdateMask: mask("priority")})
			return err
		}, codes.FailedPrecondition, nil},
		{"delete Default", func() error {
			_, err := ts.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: "Default"})
			return err
		}, codes.FailedPrecondition, nil},
		{"delete stale etag", func() error {
			_, err := ts.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: "checkout", Etag: stale})
			return err
		}, codes.Aborted, nil},
		{"delete unknown", func() error {
			_, err := ts.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: "nope"})
			return err
		}, codes.NotFound, nil},
		{"list negative page size", func() error {
			_, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument, []string{"page_size"}},
		{"list bad token", func() error {
			_, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{PageToken: "garbage"})
			return err
		}, codes.InvalidArgument, []string{"page_token"}},
		{"list bad filter", func() error {
			_, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{Filter: "owner=bob"})
			return err
		}, codes.InvalidArgument, []string{"filter"}},
		{"events bad token", func() error {
			_, err := ts.rules.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{PageToken: "garbage"})
			return err
		}, codes.InvalidArgument, []string{"page_token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call()
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if got := fieldViolations(t, err); strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("field violations = %v, want %v", got, tt.fields)
			}
			after, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if after.GetRulesVersion() != before.GetRulesVersion() {
				t.Errorf("a refused call changed the rules version from %d to %d", before.GetRulesVersion(), after.GetRulesVersion())
			}
		})
	}
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

func statusCode(err error) string { return status.Code(err).String() }

// TestRuleLimit: a create past the store's rule limit gets
// FAILED_PRECONDITION with a PreconditionFailure and changes nothing; a
// delete makes room.
func TestRuleLimit(t *testing.T) {
	st, err := memstore.New(memstore.Options{MaxRules: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts := startServer(t, st)
	ctx := ctxT(t)
	if _, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: checkout()}); err != nil {
		t.Fatal(err)
	}
	before, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	over := checkout()
	over.Name = "over"
	_, err = ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: over})
	if got := status.Code(err); got != codes.FailedPrecondition {
		t.Fatalf("create past the limit: code = %v (%v), want FailedPrecondition", got, err)
	}
	var details []any
	for _, d := range status.Convert(err).Details() {
		if pf, ok := d.(*errdetails.PreconditionFailure); ok {
			for _, v := range pf.GetViolations() {
				details = append(details, v.GetType(), v.GetSubject())
			}
		}
	}
	if diff := cmp.Diff([]any{"RULE_LIMIT", "rules"}, details); diff != "" {
		t.Errorf("PreconditionFailure violations (-want +got):\n%s", diff)
	}
	after, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetRulesVersion() != before.GetRulesVersion() || len(after.GetRules()) != 2 {
		t.Errorf("after the refused create: version %d, %d rules; want %d, 2", after.GetRulesVersion(), len(after.GetRules()), before.GetRulesVersion())
	}
	if _, err := ts.rules.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: "checkout"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: over}); err != nil {
		t.Errorf("create after a delete: %v", err)
	}
}
