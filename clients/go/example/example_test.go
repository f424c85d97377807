package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer that the example writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startControlPlane runs a control plane on the embedded store on a loopback
// port, with a one-second report interval, until the test ends.
func startControlPlane(t *testing.T) (string, pb.RuleServiceClient) {
	t.Helper()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat := servetest.Catalog(t, st, catalog.Options{Logger: discard})
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Logger: discard, ReportInterval: time.Second})
	conn, addr := servetest.Serve(t, srv)
	return addr, pb.NewRuleServiceClient(conn)
}

// TestExampleExplainsARule runs the example against a control plane where
// only checkouts are traced, and waits for it to explain one.
func TestExampleExplainsARule(t *testing.T) {
	addr, rc := startControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rc.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: "checkout", Priority: 10, ServiceName: "example-*", HttpMethod: "POST", UrlPath: "/checkout", FixedRate: 1,
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.UpdateRule(ctx, &pb.UpdateRuleRequest{
		Rule:       &pb.Rule{Name: "Default", FixedRate: 0, ReservoirSize: 0},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate", "reservoir_size"}},
	}); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr syncBuffer
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(runCtx, []string{"--endpoint", addr, "--rate", "200"}, &stdout, &stderr) }()

	const want = `? rule "checkout" matched, it has no reservoir, and the trace ID fell inside its fixed rate of 1 (reason fixed_rate, rule "checkout"`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), want) {
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("no explanation of a checkout within 10 s; output:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v; stderr:\n%s", err, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "requests,") || !strings.Contains(out, "stopped: ") {
		t.Errorf("output lacks the counts or the final line:\n%s", out)
	}
	t.Logf("output:\n%s", out)
}

func TestExampleRejectsBadFlags(t *testing.T) {
	var stdout, stderr syncBuffer
	if err := run(context.Background(), []string{"--rate", "0"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "--rate") {
		t.Errorf("--rate 0: %v, want an error naming --rate", err)
	}
	if err := run(context.Background(), []string{"--nope"}, &stdout, &stderr); err == nil {
		t.Error("an unknown flag was accepted")
	}
}

// TestExampleEndpoint: without --endpoint the example goes where
// CONTROLPLANE_ENDPOINT says, as the SDK does and the README promises;
// --endpoint wins over it.
func TestExampleEndpoint(t *testing.T) {
	addr, _ := startControlPlane(t)
	for _, tc := range []struct {
		name, env string
		args      []string
	}{
		{name: "env", env: addr},
		{name: "flag wins", env: "127.0.0.1:1", args: []string{"--endpoint", addr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CONTROLPLANE_ENDPOINT", tc.env)
			var stdout, stderr syncBuffer
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- run(ctx, append(tc.args, "--rate", "200"), &stdout, &stderr) }()
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(stdout.String(), "sampler ") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("run: %v; stderr:\n%s", err, stderr.String())
			}
			if want := "endpoint=" + addr + "}"; !strings.Contains(stdout.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, stdout.String())
			}
		})
	}
}
