package sdke2e_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/servetest"
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
	ts := &tokenServer{seen: make(chan []string, 1)}
	srv := grpc.NewServer()
	pb.RegisterSamplingServiceServer(srv, ts)
	_, addr := servetest.Serve(t, servetest.GRPC(srv))

	s, err := sampler.New(sampler.WithEndpoint(addr), sampler.WithService("shop", ""),
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
