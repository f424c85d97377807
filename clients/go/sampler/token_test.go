package sampler_test

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// tokenServer records the authorization its first stream carries.
type tokenServer struct {
	pb.UnimplementedSamplingServiceServer
	seen chan []string
}

func (s *tokenServer) StreamSampling(ss pb.SamplingService_StreamSamplingServer) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	select {
	case s.seen <- md.Get("authorization"):
	default:
	}
	<-ss.Context().Done()
	return nil
}

func TestWithToken(t *testing.T) {
	noLeaks(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{seen: make(chan []string, 1)}
	srv := grpc.NewServer()
	pb.RegisterSamplingServiceServer(srv, ts)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()

	s, err := sampler.New(sampler.WithEndpoint(lis.Addr().String()), sampler.WithService("shop", ""),
		sampler.WithLogger(discard), sampler.WithToken("tsc_example"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case got := <-ts.seen:
		if len(got) != 1 || got[0] != "Bearer tsc_example" {
			t.Errorf("the stream carried authorization %q, want one Bearer tsc_example", got)
		}
	case <-time.After(deadline):
		t.Fatalf("no stream within %v", deadline)
	}
}
