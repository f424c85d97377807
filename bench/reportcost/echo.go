package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// echoEnv, set in the environment, makes the command serve the echo instead
// of measuring: the driver starts it as a process of its own, so that its CPU
// time is its alone.
const echoEnv = "REPORTCOST_SERVE_ECHO"

// echoService is the floor: the control plane's streaming call, served by a
// bare grpc-go server (default options, no interceptors) that answers each
// report with a TargetSet of the shape the control plane's answer has — one
// target per statistics document, with a quota, an expiry, a fixed rate and
// a receipt as long as a real one — built once per stream and sent again.
type echoService struct {
	pb.UnimplementedSamplingServiceServer
	receipt string
	version int64 // as large as the control plane's, which are clock readings in µs
}

func newEchoService() *echoService {
	now := time.Now()
	ring := receipt.Ring{receipt.NewKey(now)}
	c := receipt.Claim{Receipt: reservoir.Receipt{Bucket: 1, Rate: 123.4, Quota: 0.5}, Issued: now, FixedRate: 0.01}
	return &echoService{receipt: ring.Sign("client", "rule", c), version: now.UnixMicro()}
}

func (e *echoService) StreamSampling(st pb.SamplingService_StreamSamplingServer) error {
	if _, err := st.Recv(); err != nil { // the hello
		return err
	}
	if err := st.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: &pb.RuleSet{RulesVersion: e.version}}}); err != nil {
		return err
	}
	var (
		names []string
		resp  *pb.StreamSamplingResponse
	)
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		docs := m.GetReport().GetStatistics()
		if !sameRules(docs, names) {
			names, resp = names[:0], e.targets(docs)
			for _, d := range docs {
				names = append(names, d.GetRuleName())
			}
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func sameRules(docs []*pb.SamplingStatistics, names []string) bool {
	if len(docs) != len(names) {
		return false
	}
	for i, d := range docs {
		if d.GetRuleName() != names[i] {
			return false
		}
	}
	return true
}

// targets is the answer to a report of docs, as the control plane shapes it.
func (e *echoService) targets(docs []*pb.SamplingStatistics) *pb.StreamSamplingResponse {
	ts := &pb.TargetSet{RulesVersion: e.version, ReportInterval: durationpb.New(10 * time.Second)}
	expiry := timestamppb.New(time.Now().Add(20 * time.Second))
	for _, d := range docs {
		ts.Targets = append(ts.Targets, &pb.SamplingTarget{
			RuleName: d.GetRuleName(), ReservoirQuota: 0.5, ReservoirQuotaExpireTime: expiry, FixedRate: 0.01, Receipt: e.receipt,
		})
	}
	return &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: ts}}
}

// serveEcho serves the echo on a loopback port, and Go's profiles on
// another, until ctx ends. It writes one line with both addresses.
func serveEcho(ctx context.Context, stdout io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		lis.Close()
		return err
	}
	gs := grpc.NewServer()
	pb.RegisterSamplingServiceServer(gs, newEchoService())
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/debug/pprof/allocs", pprof.Handler("allocs"))
	hs := &http.Server{Handler: mux}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = gs.Serve(lis)
	}()
	go func() {
		defer wg.Done()
		_ = hs.Serve(hlis)
	}()
	fmt.Fprintf(stdout, "echo grpc=%s http=%s\n", lis.Addr(), hlis.Addr())
	<-ctx.Done()
	gs.Stop()
	hs.Close()
	wg.Wait()
	return nil
}
