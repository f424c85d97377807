package sdke2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

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

// startExampleControlPlane runs a control plane on the embedded store on a loopback
// port, with a one-second report interval, until the test ends.
func startExampleControlPlane(t *testing.T) (string, pb.RuleServiceClient) {
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

// TestExampleExplainsARule runs the example (clients/go/example, built as
// a user builds it) against a control plane where
// only checkouts are traced, and waits for it to explain one.
func TestExampleExplainsARule(t *testing.T) {
	buildExample(t)
	addr, rc := startExampleControlPlane(t)
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
	go func() { done <- runExample(runCtx, t, []string{"--endpoint", addr, "--rate", "200"}, &stdout, &stderr) }()

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

// TestExampleEndpoint: without --endpoint the example goes where
// CONTROLPLANE_ENDPOINT says, as the SDK does and the README promises;
// --endpoint wins over it.
func TestExampleEndpoint(t *testing.T) {
	buildExample(t)
	addr, _ := startExampleControlPlane(t)
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
			go func() { done <- runExample(ctx, t, append(tc.args, "--rate", "200"), &stdout, &stderr) }()
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

// exampleDir holds the example program, built once for the package's
// tests; TestMain makes it and removes it.
var exampleDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sdke2e-example")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// exampleBinary is the example program, built once.
var exampleBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(exampleDir, "example")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tracesampling/controlplane/clients/go/example").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// runExample runs the example with args until ctx ends, then interrupts it
// as a terminal's Ctrl-C does, and returns its error.
func runExample(ctx context.Context, t *testing.T, args []string, stdout, stderr io.Writer) error {
	bin, err := exampleBinary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		return fmt.Errorf("the example ended before it was stopped: %v", err)
	case <-ctx.Done():
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		return err
	}
	return <-waited
}

// buildExample builds the example before a test's deadlines start: a build
// on a busy machine can take longer than they allow.
func buildExample(t *testing.T) {
	t.Helper()
	if _, err := exampleBinary(); err != nil {
		t.Fatal(err)
	}
}
