package server

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

func newRedisStore(t *testing.T, srv *redistest.Server) *redisstore.Store {
	t.Helper()
	st, err := redisstore.New(context.Background(), srv.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestTwoReplicasBehaveAsOne runs two servers on one Redis: an edit made
// through replica A reaches a stream held on replica B, and a reservoir is
// split across clients reporting to different replicas.
func TestTwoReplicasBehaveAsOne(t *testing.T) {
	rs := redistest.Start(t)
	clock := newClock()
	a := startReplica(t, newRedisStore(t, rs), clock.Now)
	b := startReplica(t, newRedisStore(t, rs), clock.Now)
	ctx := ctxT(t)

	stream, first := openStream(ctx, t, b.sampling, "on-b", "shop")
	createRule(t, a.rules, &pb.Rule{Name: "checkout", Priority: 1, ServiceName: "shop", ReservoirSize: 12, FixedRate: 0.1})
	got := recvRules(t, stream)
	if got.GetRulesVersion() <= first.GetRulesVersion() || got.GetRules()[0].GetName() != "checkout" {
		t.Fatalf("stream on B after an edit on A: %v", got)
	}
	waitVersion(t, a.catalog, got.GetRulesVersion())

	// Client 1 reports 30 req/s to A, client 2 10 req/s to B.
	r1, err := a.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c1", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 300, 0, "")}})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Second)
	r2, err := b.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c2", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 100, 0, "")}})
	if err != nil {
		t.Fatal(err)
	}
	if q := r2.GetTargets()[0].GetReservoirQuota(); math.Abs(q-3) > 1e-9 {
		t.Errorf("client on B: quota %v, want 12×10/40 = 3 (B must count A's client)", q)
	}
	clock.Add(9 * time.Second)
	r1, err = a.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c1", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 300, 0, r1.GetTargets()[0].GetReceipt())}})
	if err != nil {
		t.Fatal(err)
	}
	q1, q2 := r1.GetTargets()[0].GetReservoirQuota(), r2.GetTargets()[0].GetReservoirQuota()
	if math.Abs(q1-9) > 1e-9 || math.Abs(q1+q2-12) > 1e-9 {
		t.Errorf("quotas %v + %v, want 9 + 3 = the reservoir of 12", q1, q2)
	}
}

// TestReportsWhileRedisIsDown: a unary report gets UNAVAILABLE, a stream
// stays open and gets targets again once Redis is back.
func TestReportsWhileRedisIsDown(t *testing.T) {
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	rep := startReplica(t, newRedisStore(t, rs), time.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ServiceName: "shop", ReservoirSize: 4})
	waitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	stream, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	rs.Stop()
	req := &pb.GetSamplingTargetsRequest{ClientId: "u", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 10, 0, "")}}
	if _, err := rep.sampling.GetSamplingTargets(ctx, req); statusCode(err) != "Unavailable" {
		t.Errorf("unary report without Redis: %v, want Unavailable", err)
	}
	report := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: []*pb.SamplingStatistics{stats("checkout", 10, 0, "")}}}}
	if err := stream.Send(report); err != nil {
		t.Fatal(err)
	}
	// The stream had no quotas yet: nothing to renew, so no answer. Bring
	// Redis back for one report, so the client holds a quota.
	rs.Restart()
	var last *pb.SamplingTarget
	for last == nil {
		if err := stream.Send(report); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ts := m.GetTargets().GetTargets(); len(ts) == 1 {
			last = ts[0]
		}
	}
	// Without Redis, the stream renews that quota instead of going silent.
	rs.Stop()
	if err := stream.Send(report); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetTargets().GetTargets(); len(got) != 1 || got[0].GetReservoirQuota() != last.GetReservoirQuota() {
		t.Fatalf("without Redis: %v, want the last quota %v renewed", m, last.GetReservoirQuota())
	}
	rs.Restart()
	// Reports sent after the restart get targets on the same stream.
	deadline := time.Now().Add(8 * time.Second)
	for {
		if err := stream.Send(report); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetTargets().GetTargets()) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no targets after Redis came back")
		}
	}
}

// TestStopEndsStreams: a stopping replica ends its SDK streams with
// UNAVAILABLE at once, so a graceful stop does not wait out its timeout.
func TestStopEndsStreams(t *testing.T) {
	st := newMemStore(t)
	srv := New(Options{Rules: st, Catalog: catalogFor(t, st), Ledger: st, Logger: discardLogger()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, _ := openStream(ctxT(t), t, pb.NewSamplingServiceClient(conn), "c", "s")
	// A stop with an hour of grace returns as soon as the stream is gone.
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		srv.Stop(ctx)
		close(stopped)
	}()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream during stop: %v, want Unavailable", err)
	}
	<-stopped
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// catalogFor returns a catalog loaded from st (not running: the test does
// not edit rules).
func catalogFor(t *testing.T, st *memstore.Store) *catalog.Catalog {
	t.Helper()
	cat := catalog.New(st, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cat
}
