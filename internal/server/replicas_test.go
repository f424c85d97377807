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
	"github.com/tracesampling/controlplane/internal/servetest"
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
	servetest.WaitVersion(t, a.catalog, got.GetRulesVersion())

	// Client 1 reports 30 req/s to A, client 2 10 req/s to B.
	report := func(rep *replica, client string, requests int64, receipt string) *pb.SamplingTarget {
		t.Helper()
		resp, err := rep.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: client, ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", requests, 0, receipt)}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetTargets()[0]
	}
	r1 := report(a, "c1", 300, "")
	clock.Add(time.Second)
	r2 := report(b, "c2", 100, "")
	if q := r2.GetReservoirQuota(); q != 0 {
		t.Errorf("client on B: quota %v, want 0 (B must count what A's client holds: all 12)", q)
	}
	clock.Add(9 * time.Second)
	r1 = report(a, "c1", 300, r1.GetReceipt())
	clock.Add(time.Second)
	r2 = report(b, "c2", 100, r2.GetReceipt())
	q1, q2 := r1.GetReservoirQuota(), r2.GetReservoirQuota()
	if math.Abs(q1-9) > 1e-9 || math.Abs(q2-3) > 1e-9 {
		t.Errorf("quotas %v + %v, want 12×30/40 + 12×10/40 = 9 + 3 = the reservoir of 12", q1, q2)
	}
}

// TestReportsWhileRedisIsDown: a unary report gets UNAVAILABLE; a stream
// stays open and its reports are answered with the last quotas renewed: the
// stream's own, or the one the receipt of a client that reconnects names,
// or an explicit zero for a client the replica knows nothing of (so that it
// does not borrow). Once Redis is back, reports get new targets.
func TestReportsWhileRedisIsDown(t *testing.T) {
	rs := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	rep := startReplica(t, newRedisStore(t, rs), time.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, ServiceName: "shop", ReservoirSize: 4})
	servetest.WaitVersion(t, rep.catalog, rep.first+1)
	ctx := ctxT(t)
	quota := func(ts *pb.TargetSet) float64 {
		t.Helper()
		if len(ts.GetTargets()) != 1 {
			t.Fatalf("targets %v, want one", ts)
		}
		return ts.GetTargets()[0].GetReservoirQuota()
	}
	// 10 requests a second: a first quota may be twice that
	// (reservoir.FirstQuota), so the whole reservoir.
	stream, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	ts := sendReport(t, stream, stats("checkout", 100, 0, ""))
	if q := quota(ts); q != 4 {
		t.Fatalf("quota %v, want the whole reservoir of 4", q)
	}
	receipt := ts.GetTargets()[0].GetReceipt()

	rs.Stop()
	req := &pb.GetSamplingTargetsRequest{ClientId: "u", ServiceName: "shop", Statistics: []*pb.SamplingStatistics{stats("checkout", 100, 0, "")}}
	if _, err := rep.sampling.GetSamplingTargets(ctx, req); statusCode(err) != "Unavailable" {
		t.Errorf("unary report without Redis: %v, want Unavailable", err)
	}
	ts = sendReport(t, stream, stats("checkout", 100, 0, ""))
	if q := quota(ts); q != 4 || !ts.GetTargets()[0].GetReservoirQuotaExpireTime().AsTime().After(time.Now()) {
		t.Errorf("without Redis: %v, want the last quota, 4, renewed", ts)
	}
	// The client reconnects (here, while its old stream is still open) with
	// its receipt: its quota is renewed from it. A client that brings none
	// gets an explicit zero.
	again, _ := openStream(ctx, t, rep.sampling, "c", "shop")
	if q := quota(sendReport(t, again, stats("checkout", 100, 0, receipt))); q != 4 {
		t.Errorf("reconnected without Redis: quota %v, want 4 from the receipt", q)
	}
	fresh, _ := openStream(ctx, t, rep.sampling, "d", "shop")
	if q := quota(sendReport(t, fresh, stats("checkout", 100, 0, ""))); q != 0 {
		t.Errorf("a new client without Redis: quota %v, want 0", q)
	}

	rs.Restart()
	// Reports sent after the restart get targets with receipts on the same
	// stream.
	deadline := time.Now().Add(8 * time.Second)
	for {
		ts := sendReport(t, stream, stats("checkout", 100, 0, ""))
		if len(ts.GetTargets()) == 1 && ts.GetTargets()[0].GetReceipt() != "" {
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
