package auth

import (
	"context"
	"errors"
	"net"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/store"
)

// ActorMetadataKey is the metadata key in which clients used to claim an
// actor for the audit log. The interceptors overwrite it with the
// authenticated principal's actor, so a handler that still reads it (and
// any later code) records who really called, whatever the client sent.
const ActorMetadataKey = "x-controlplane-actor"

// GRPCStatus maps an error of Check (or of the Limiter) to its gRPC status:
// UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED with a
// google.rpc.RetryInfo, or UNAVAILABLE when the token store cannot be
// read. It returns nil for nil.
func GRPCStatus(err error) error {
	if err == nil {
		return nil
	}
	var le *LimitError
	switch {
	case errors.As(err, &le):
		st := status.New(codes.ResourceExhausted, le.Message)
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(le.RetryAfter)}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, "the token store is unavailable; retry later")
	default:
		return status.Error(codes.Internal, "internal error")
	}
}

// grpcCredentials collects what a gRPC call presents.
func grpcCredentials(ctx context.Context) Credentials {
	var c Credentials
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		c.Authorization = md.Get("authorization")
	}
	if p, ok := peer.FromContext(ctx); ok {
		switch a := p.Addr.(type) {
		case *net.TCPAddr:
			c.Peer = a.AddrPort().Addr()
		case *net.UnixAddr:
			c.Local = true
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			c.Cert = ti.State.VerifiedChains[0][0]
		}
	}
	return c
}

// grpcCall describes a call for the policy: the services a sampling call
// acts for and the globs a creation edits, read from the request. Updates
// and deletes name their resource only; their handlers call CheckScope with
// the stored globs.
func grpcCall(method string, rule Rule, req any) Call {
	call := Call{Name: method, Rule: rule}
	if rule.Need == Sample {
		if r, ok := req.(interface{ GetServiceName() string }); ok {
			call.Services = []string{r.GetServiceName()}
		}
	}
	switch r := req.(type) {
	case *pb.CreateRuleRequest:
		call.Globs = []string{r.GetRule().GetServiceName()}
	case *pb.CreateBudgetRequest:
		call.Globs = budgetGlobs(r.GetBudget().GetScope().GetServiceNames())
	}
	return call
}

// budgetGlobs: a budget without services covers every service.
func budgetGlobs(names []string) []string {
	if len(names) == 0 {
		return []string{""}
	}
	return names
}

// withActor returns ctx with p in it, and with the incoming actor metadata
// replaced by p's actor (removed for a public call without a principal).
func withActor(ctx context.Context, p *Principal) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	if p == nil {
		md.Delete(ActorMetadataKey)
		return metadata.NewIncomingContext(ctx, md)
	}
	md.Set(ActorMetadataKey, p.Actor())
	return NewContext(metadata.NewIncomingContext(ctx, md), p)
}

// UnaryInterceptor checks every unary call against the policy, counts it
// against the principal's limits (its client ID too), and passes the
// principal in the context. Chain it after the server's recovery and
// metrics interceptor, so refusals are logged and counted there.
func (g *Guard) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	rule, ok := MethodRule(info.FullMethod)
	if !ok {
		g.refusals.WithLabelValues("permission_denied").Inc()
		return nil, status.Errorf(codes.PermissionDenied, "%s has no access policy, so it is refused", info.FullMethod)
	}
	p, err := g.Check(ctx, grpcCredentials(ctx), grpcCall(info.FullMethod, rule, req))
	if err != nil {
		return nil, GRPCStatus(err)
	}
	if r, ok := req.(interface{ GetClientId() string }); ok && rule.Need == Sample {
		if err := g.limiter.ClientID(p, r.GetClientId()); err != nil {
			return nil, GRPCStatus(err)
		}
	}
	return handler(withActor(ctx, p), req)
}

// StreamInterceptor checks every stream against the policy, holds one of
// the principal's streams while it is open, and checks the service and
// client ID of a sampling stream's Hello.
func (g *Guard) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	rule, ok := MethodRule(info.FullMethod)
	if !ok {
		g.refusals.WithLabelValues("permission_denied").Inc()
		return status.Errorf(codes.PermissionDenied, "%s has no access policy, so it is refused", info.FullMethod)
	}
	p, err := g.Check(ctx, grpcCredentials(ctx), Call{Name: info.FullMethod, Rule: rule})
	if err != nil {
		return GRPCStatus(err)
	}
	if rule.Class == ClassStream {
		release, err := g.limiter.OpenStream(p)
		if err != nil {
			return GRPCStatus(err)
		}
		defer release()
	}
	return handler(srv, &guardedStream{ServerStream: ss, ctx: withActor(ctx, p), g: g, p: p, rule: rule})
}

// guardedStream checks the first message of a sampling stream: the Hello
// names the service and client the stream reports for.
type guardedStream struct {
	grpc.ServerStream
	ctx   context.Context
	g     *Guard
	p     *Principal
	rule  Rule
	hello bool
}

func (s *guardedStream) Context() context.Context { return s.ctx }

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.hello || s.rule.Need != Sample {
		return nil
	}
	s.hello = true
	req, ok := m.(*pb.StreamSamplingRequest)
	if !ok || req.GetHello() == nil {
		return nil // the handler refuses a stream that does not start with Hello
	}
	h := req.GetHello()
	if err := Authorize(s.p, "StreamSampling", s.rule, []string{h.GetServiceName()}, nil); err != nil {
		s.g.count(err)
		return GRPCStatus(err)
	}
	return GRPCStatus(s.g.limiter.ClientID(s.p, h.GetClientId()))
}
