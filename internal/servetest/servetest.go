// Package servetest runs what tests serve on loopback — a gRPC server and
// the catalog in front of it — and stops and waits for each when the test
// ends, so that every test of the server, the controller and the CLI starts
// a replica the same way.
package servetest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tracesampling/controlplane/internal/catalog"
)

// Server is what Serve runs: *server.Server, declared here so that the
// server's own tests can use this package, or a bare *grpc.Server through
// GRPC.
type Server interface {
	Serve(lis net.Listener) error
	Stop(ctx context.Context)
}

// Serve runs srv on a free loopback port until the test ends and returns a
// client connection to it and its address. At the end it closes the
// connection, stops srv (5 s at most) and reports an error Serve returned.
func Serve(t testing.TB, srv Server) (*grpc.ClientConn, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	t.Cleanup(func() {
		if conn != nil {
			conn.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn, lis.Addr().String()
}

// Catalog loads a catalog of src and has it follow src until the test
// ends.
func Catalog(t testing.TB, src catalog.Source, opts catalog.Options) *catalog.Catalog {
	t.Helper()
	cat := catalog.New(src, opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := cat.Load(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cat.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cat
}

// GRPC adapts a bare *grpc.Server, holding a test's own services, to
// Serve. Its Stop is grpc's Stop: calls in flight end at once.
func GRPC(s *grpc.Server) Server { return grpcServer{s} }

type grpcServer struct{ *grpc.Server }

func (s grpcServer) Stop(context.Context) { s.Server.Stop() }

// WaitVersion waits, kicking c, until it has loaded rules version v or a
// later one; after 10 s the test fails.
func WaitVersion(t testing.TB, c *catalog.Catalog, v int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Current().Version < v {
		if time.Now().After(deadline) {
			t.Fatalf("catalog stuck at version %d, want %d", c.Current().Version, v)
		}
		c.Kick()
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitBudgets waits, kicking c, until it holds budgets satisfying ok;
// after 10 s the test fails.
func WaitBudgets(t testing.TB, c *catalog.Catalog, ok func(*catalog.Budgets) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(c.CurrentBudgets()) {
		if time.Now().After(deadline) {
			t.Fatalf("catalog budgets never got there: %+v", c.CurrentBudgets())
		}
		c.Kick()
		time.Sleep(5 * time.Millisecond)
	}
}
