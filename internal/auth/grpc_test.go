package auth_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/servetest"
)

// ruleServer records what a handler sees of its caller.
type ruleServer struct {
	pb.UnimplementedRuleServiceServer
	mu     sync.Mutex
	actors []string // auth.Actor and the actor metadata, per call
}

func (s *ruleServer) CreateRule(ctx context.Context, req *pb.CreateRuleRequest) (*pb.CreateRuleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.actors = append(s.actors, auth.Actor(ctx)+" "+strings.Join(md.Get(auth.ActorMetadataKey), ","))
	s.mu.Unlock()
	return &pb.CreateRuleResponse{Rule: req.GetRule()}, nil
}

type samplingServer struct {
	pb.UnimplementedSamplingServiceServer
}

func (samplingServer) StreamSampling(ss pb.SamplingService_StreamSamplingServer) error {
	if _, err := ss.Recv(); err != nil {
		return err
	}
	return ss.Send(&pb.StreamSamplingResponse{})
}

// serve starts a real gRPC server on loopback with the guard's
// interceptors and returns a client connection to it.
func serve(t *testing.T, g *auth.Guard, rs *ruleServer) *grpc.ClientConn {
	t.Helper()
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(g.UnaryInterceptor), grpc.ChainStreamInterceptor(g.StreamInterceptor))
	pb.RegisterRuleServiceServer(s, rs)
	pb.RegisterSamplingServiceServer(s, samplingServer{})
	cc, _ := servetest.Serve(t, servetest.GRPC(s))
	return cc
}

func withToken(ctx context.Context, secret string, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, append([]string{"authorization", "Bearer " + secret}, kv...)...)
}

func TestGRPCInterceptors(t *testing.T) {
	e := newEnv(t, auth.Options{Limits: auth.Limits{EditBurst: 2, EditsPerSecond: 0.001}})
	rs := &ruleServer{}
	cc := serve(t, e.guard, rs)
	rules := pb.NewRuleServiceClient(cc)
	ctx := t.Context()
	editor := e.issue(t, auth.TokenSpec{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}})
	viewer := e.issue(t, auth.TokenSpec{Name: "viewer", Role: auth.RoleViewer})
	create := func(ctx context.Context, service string) error {
		_, err := rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "r", ServiceName: service}})
		return err
	}

	// The client claims to be someone else: the handler sees the token.
	if err := create(withToken(ctx, editor.Secret, auth.ActorMetadataKey, "admin@example.com"), "shop-cart"); err != nil {
		t.Fatal(err)
	}
	if got := rs.actors; len(got) != 1 || got[0] != "token:shop-editor token:shop-editor" {
		t.Errorf("the handler saw actors %q, want the token's twice", got)
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		svc  string
		code codes.Code
	}{
		{"no credentials", ctx, "shop-cart", codes.Unauthenticated},
		{"a viewer", withToken(ctx, viewer.Secret), "shop-cart", codes.PermissionDenied},
		{"out of scope", withToken(ctx, editor.Secret), "payments", codes.PermissionDenied},
		{"every service", withToken(ctx, editor.Secret), "", codes.PermissionDenied},
		{"a second edit", withToken(ctx, editor.Secret), "shop-a", codes.OK},
		{"over the edit rate", withToken(ctx, editor.Secret), "shop-a", codes.ResourceExhausted},
	} {
		if got := status.Code(create(tc.ctx, tc.svc)); got != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.code)
		}
	}
	if len(rs.actors) != 2 {
		t.Errorf("the handler ran %d times, want 2: refused calls reached it", len(rs.actors))
	}
	// A method the policy does not name is refused by default (gRPC
	// answers Unimplemented to methods no service registered before any
	// interceptor, so the interceptor is called as for a registered one).
	_, err := e.guard.UnaryInterceptor(withToken(ctx, adminSecret), &pb.GetRuleRequest{}, &grpc.UnaryServerInfo{FullMethod: "/controlplane.v1.RuleService/Unknown"},
		func(context.Context, any) (any, error) {
			t.Error("the handler of an unknown method ran")
			return nil, nil
		})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "no access policy") {
		t.Errorf("an unknown method: %v", err)
	}
}

func TestGRPCStreams(t *testing.T) {
	e := newEnv(t, auth.Options{})
	cc := serve(t, e.guard, &ruleServer{})
	sampling := pb.NewSamplingServiceClient(cc)
	sdk := e.issue(t, auth.TokenSpec{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}})
	ctx, cancel := context.WithCancel(withToken(t.Context(), sdk.Secret))
	defer cancel()
	hello := func(st pb.SamplingService_StreamSamplingClient, service string) error {
		if err := st.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "c1", ServiceName: service}}}); err != nil {
			return err
		}
		_, err := st.Recv()
		return err
	}

	out, err := sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := hello(out, "payments"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a Hello for another service: %v, want PermissionDenied", err)
	}
	// That stream ended; one in scope is served, a second at once is over
	// the limit of one.
	in, err := sampling.StreamSampling(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := hello(in, "shop-cart"); err != nil {
		t.Fatalf("a Hello in scope: %v", err)
	}
	bad, err := sampling.StreamSampling(withToken(t.Context(), auth.NewTokenSecret()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a stream with an unknown token: %v, want Unauthenticated", err)
	}
	viewer := e.issue(t, auth.TokenSpec{Name: "v", Role: auth.RoleViewer})
	st, err := sampling.StreamSampling(withToken(t.Context(), viewer.Secret))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a viewer's stream: %v, want PermissionDenied", err)
	}
}

// TestProtectedModeRemoteRefusal calls the interceptor as gRPC does for a
// remote peer (no traffic leaves loopback).
func TestProtectedModeRemoteRefusal(t *testing.T) {
	g, err := auth.New(auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(remote.String()), Port: 4242}})
	called := false
	_, err = g.UnaryInterceptor(ctx, &pb.ListRulesRequest{}, &grpc.UnaryServerInfo{FullMethod: "/controlplane.v1.RuleService/ListRules"},
		func(context.Context, any) (any, error) { called = true; return nil, nil })
	st := status.Convert(err)
	if called || st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "answers only loopback clients; set --admin-token-file") {
		t.Errorf("remote peer of an unconfigured server: called=%v, %v", called, st)
	}
	ctx = peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 4242}})
	_, err = g.UnaryInterceptor(ctx, &pb.ListRulesRequest{}, &grpc.UnaryServerInfo{FullMethod: "/controlplane.v1.RuleService/ListRules"},
		func(ctx context.Context, _ any) (any, error) { called = auth.Actor(ctx) == "local"; return nil, nil })
	if err != nil || !called {
		t.Errorf("loopback peer: called=%v, %v", called, err)
	}
}
