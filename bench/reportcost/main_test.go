package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/redistest"
)

// TestMain serves the echo when the driver starts this binary as one.
func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := serveEcho(ctx, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestShortRun runs the command's CI mode against the echo and a real
// control plane on the embedded store and on Redis, and checks that every
// server answered, that CPU time was read for each, and that the echo's
// answers are the size of the control plane's (the point of the echo). It
// asserts no figure of speed: the machine is shared.
func TestShortRun(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the control plane with")
	}
	cp := filepath.Join(t.TempDir(), "controlplane")
	build := exec.Command(gobin, "build", "-o", cp, "../../cmd/controlplane")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	rds := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"-controlplane", cp, "-redis-url", rds.URL(), "-short", "-rules", "2"}, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not the JSON result: %v\n%s", err, stdout.String())
	}
	if len(res.Measurements) != 3 || len(res.Summary) != 3 {
		t.Fatalf("%d measurements and %d summaries, want 3 each (echo, embedded, redis):\n%s", len(res.Measurements), len(res.Summary), stdout.String())
	}
	size := map[string]float64{}
	for _, m := range res.Measurements {
		size[m.Server] = m.ResponseBytes
		if m.Reports <= 0 || m.ServerCPUus <= 0 || m.RatioToEcho == nil {
			t.Errorf("%s: %d reports, %.2f µs CPU each, ratio %v; want reports, CPU time and a ratio", m.Server, m.Reports, m.ServerCPUus, m.RatioToEcho)
		}
		if (m.Server == "redis") != (m.RedisCPUus != nil) {
			t.Errorf("%s: Redis CPU %v, want it for the server on Redis only", m.Server, m.RedisCPUus)
		}
	}
	// A target whose quota is 0 leaves the field out (9 bytes of about 200).
	for _, s := range []string{"embedded", "redis"} {
		if d := size[s] - size["echo"]; d < -10 || d > 10 {
			t.Errorf("%s's targets are %.0f bytes, the echo's %.0f: the echo must answer with the same shape", s, size[s], size["echo"])
		}
	}
}

// TestServerThatDoesNotStart: a control plane that exits at once is an
// error, and the echo already started is stopped (goleak and the test's
// end would notice it otherwise).
func TestServerThatDoesNotStart(t *testing.T) {
	bin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"-controlplane", bin, "-short"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "exited before it served") {
		t.Errorf("run with %s as the control plane: %v, want it to say the server exited", bin, err)
	}
}

// TestBracketedRun: with -bracket the echo is measured before the first
// server and after each, and a server's ratio is its CPU time per report
// over the mean of the two echo windows beside it.
func TestBracketedRun(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the control plane with")
	}
	cp := filepath.Join(t.TempDir(), "controlplane")
	if out, err := exec.Command(gobin, "build", "-o", cp, "../../cmd/controlplane").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"-controlplane", cp, "-short", "-bracket"}, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not the JSON result: %v\n%s", err, stdout.String())
	}
	var order []string
	for _, m := range res.Measurements {
		order = append(order, m.Server)
	}
	if diff := cmp.Diff([]string{"echo", "embedded", "echo"}, order); diff != "" {
		t.Fatalf("windows (-want +got):\n%s", diff)
	}
	ms := res.Measurements
	want := ms[1].ServerCPUus / ((ms[0].ServerCPUus + ms[2].ServerCPUus) / 2)
	if ms[1].RatioToEcho == nil || math.Abs(*ms[1].RatioToEcho-want) > 1e-9 {
		t.Errorf("embedded's ratio %v, want %.4f (over the mean of the echo windows beside it)", ms[1].RatioToEcho, want)
	}
	if !res.Bracket {
		t.Error("the result does not say its ratios are bracketed")
	}
}
