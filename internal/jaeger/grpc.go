package jaeger

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/internal/store"
)

// RegisterGRPC registers jaeger.api_v2.SamplingManager on a gRPC server: the
// protocol of OpenTelemetry Java's jaeger_remote sampler.
func (s *Server) RegisterGRPC(reg grpc.ServiceRegistrar) {
	api.RegisterSamplingManagerServer(reg, grpcService{s: s})
}

type grpcService struct {
	api.UnimplementedSamplingManagerServer
	s *Server
}

// GetSamplingStrategy answers one poll.
func (g grpcService) GetSamplingStrategy(ctx context.Context, req *api.SamplingStrategyParameters) (*api.SamplingStrategyResponse, error) {
	poller := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		poller = pollerOf(p.Addr.String())
	}
	resp, err := g.s.Strategy(ctx, req.GetServiceName(), poller)
	return resp, g.s.toStatus(ctx, err)
}

// toStatus is the one place where errors become gRPC statuses for this
// service: a bad service name is INVALID_ARGUMENT with a BadRequest naming
// serviceName; errors that are not the client's are logged here and reach it
// only as a generic message.
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var bad *invalidServiceError
	switch {
	case errors.As(err, &bad):
		br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "serviceName", Description: bad.reason}}}
		st, derr := status.New(codes.InvalidArgument, bad.Error()).WithDetails(br)
		if derr != nil {
			return status.Error(codes.InvalidArgument, bad.Error())
		}
		return st.Err()
	case errors.Is(err, store.ErrUnavailable):
		s.log.WarnContext(ctx, "jaeger sampling: store unavailable", "err", err)
		return status.Error(codes.Unavailable, "the rule store is unavailable; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		s.log.ErrorContext(ctx, "jaeger sampling: internal error", "err", err)
		return status.Error(codes.Internal, "internal error")
	}
}
