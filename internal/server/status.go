package server

import (
	"context"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/fleet"
)

// statusService is the gRPC face of package fleet.
type statusService struct {
	pb.UnimplementedStatusServiceServer
	fleet *fleet.Service
}

func (s *statusService) GetFleetStatus(ctx context.Context, req *pb.GetFleetStatusRequest) (*pb.GetFleetStatusResponse, error) {
	st, err := s.fleet.Status(ctx, fleet.Query{PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(), Service: req.GetServiceName()})
	if err != nil {
		return nil, err
	}
	return fleet.StatusToProto(&st), nil
}

func (s *statusService) Explain(_ context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	e, err := s.fleet.Explain(fleet.ExplainRequestFromProto(req))
	if err != nil {
		return nil, err
	}
	return fleet.ExplanationToProto(&e), nil
}
