package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BenchmarkStreamSampling is one stream's report and its answer through the
// whole handler — decoding, the stream's session, the core on the embedded
// store, encoding — over loopback, the client's side included: what the
// handler and the session add to package sampling's BenchmarkStreamReport.
// Reports are numbered, one rule each, as the SDK sends them.
//
//	go test -run '^$' -bench StreamSampling -benchmem ./internal/server
func BenchmarkStreamSampling(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	r := rules.Rule{Name: "checkout", Priority: 1, ServiceName: "bench", FixedRate: 0.01, ReservoirSize: 100}
	if _, err := st.CreateRule(ctx, r.Normalize(), "bench"); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := servetest.Catalog(b, st, catalog.Options{Logger: log, Poll: time.Minute})
	conn, _ := servetest.Serve(b, New(Options{Rules: st, Catalog: cat, Ledger: st, Logger: log, ReportInterval: 10 * time.Second}))
	stream, err := pb.NewSamplingServiceClient(conn).StreamSampling(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "bench", ServiceName: "bench"}}}); err != nil {
		b.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetRules() == nil {
		b.Fatalf("first message %v, %v: want the rule set", m, err)
	}
	report := &pb.Report{Statistics: []*pb.SamplingStatistics{{RuleName: r.Name, RequestCount: 100, SampledCount: 2, Interval: durationpb.New(10 * time.Second)}}}
	req := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: report}}
	b.ReportAllocs()
	for b.Loop() {
		report.Seq++
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if got := m.GetTargets().GetAckedSeq(); got != report.Seq {
			b.Fatalf("report %d: answer %v", report.Seq, m)
		}
	}
	b.StopTimer()
	if err := stream.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		b.Fatalf("after the last report: %v, want the stream's end", err)
	}
}
