package sampler_test

import (
	"net"
	"slices"
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
	for token, want := range map[string][]string{"tsc_example": {"Bearer tsc_example"}, "": nil, " ": nil} {
		if got := tokenSent(t, token); !slices.Equal(got, want) {
			t.Errorf("WithToken(%q): the stream carried authorization %q, want %q", token, got, want)
		}
	}
}

// tokenSent returns the authorization a sampler made WithToken(token)
// sends on its stream.
func tokenSent(t *testing.T, token string) []string {
	t.Helper()
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
		sampler.WithLogger(discard), sampler.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case got := <-ts.seen:
		return got
	case <-time.After(deadline):
		t.Fatalf("no stream within %v", deadline)
		return nil
	}
}
