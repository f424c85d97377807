package cli

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// The memory tests run serve in a process of its own, so that the heap
// they measure is the server's alone, not the clients' too.

// serveProcessEnv, set, makes the test binary run serve with the arguments
// it holds (JSON) instead of the tests.
const serveProcessEnv = "CONTROLPLANE_TEST_SERVE_ARGS"

var boundCalls = flag.Int("bound-calls", 400, "calls the memory tests try to hold open on one replica")

// runServeProcess is the test binary's main when serveProcessEnv is set.
func runServeProcess(args string) int {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, argv, nil, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
	}
	return exitCode(err)
}

// serveProcess is serve running in a child process.
type serveProcess struct {
	grpcAddr, httpAddr string
	http               *http.Client
}

// startServeProcess runs `serve args...` on loopback ports with JSON logs and
// the debug endpoints, and stops it (SIGTERM) when the test ends.
func startServeProcess(t *testing.T, args ...string) *serveProcess {
	t.Helper()
	argv, err := json.Marshal(append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--jaeger-addr=", "--xray-addr=",
		"--redis-url=", "--data-dir=", "--log-format", "json", "--debug-endpoints"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveProcessEnv+"="+string(argv))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	found := make(chan struct{}) // closed once the addresses are read
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-found:
				t.Log(sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-copied
		_ = cmd.Wait()
	})
	p := &serveProcess{http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}}
	deadline := time.After(serveWait)
	for p.grpcAddr == "" {
		select {
		case line := <-lines:
			var rec struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "control plane serving" {
				p.grpcAddr, p.httpAddr = rec.GRPCAddr, rec.HTTPAddr
				close(found)
			}
		case <-copied:
			t.Fatal("serve exited before it was serving")
		case <-deadline:
			t.Fatalf("serve not serving within %v", serveWait)
		}
	}
	return p
}

// metric returns a metric without labels from /metrics, and whether it is
// there.
func (p *serveProcess) metric(t *testing.T, name string) (float64, bool) {
	t.Helper()
	for line := range strings.Lines(p.get(t, "/metrics")) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f, true
		}
	}
	return 0, false
}

func (p *serveProcess) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := p.http.Get("http://" + p.httpAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// settledHeap waits until the server has seen every one of calls (open or
// refused, where it counts them) and its live heap stops growing, and
// returns that heap.
func (p *serveProcess) settledHeap(t *testing.T, calls int) float64 {
	t.Helper()
	deadline := time.Now().Add(serveWait)
	for time.Now().Before(deadline) {
		open, ok1 := p.metric(t, "controlplane_grpc_calls_open")
		refused, ok2 := p.metric(t, "controlplane_grpc_calls_refused_total")
		if !ok1 || !ok2 || open+refused >= float64(calls) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	prev := p.liveHeap(t)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		h := p.liveHeap(t)
		if h-prev < 256<<10 {
			return h
		}
		prev = h
	}
	return prev
}

// liveHeap collects the server's garbage (the heap profile's gc=1) and
// returns its heap and goroutine stacks in use then, from /metrics.
func (p *serveProcess) liveHeap(t *testing.T) float64 {
	t.Helper()
	p.get(t, "/debug/pprof/heap?gc=1")
	heap, ok1 := p.metric(t, "go_memstats_heap_inuse_bytes")
	stacks, ok2 := p.metric(t, "go_memstats_stack_inuse_bytes")
	if !ok1 || !ok2 {
		t.Fatal("no go_memstats_heap_inuse_bytes or go_memstats_stack_inuse_bytes on /metrics")
	}
	return heap + stacks
}

// holdUnfinishedMessages opens n StreamSampling calls over HTTP/2 (a new
// connection whenever one is full, as a client ignoring the limit per
// connection would), and on each sends all but the last byte of a message
// of size bytes. It returns once every call has either taken its bytes or
// been refused; the calls stay open until the test ends.
func holdUnfinishedMessages(t *testing.T, addr string, n, size int) (refused int) {
	t.Helper()
	// HTTP/2 without TLS; a new connection whenever one is full.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols, HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: false}}
	ctx, cancel := context.WithCancel(context.Background())
	var held sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		held.Wait()
		tr.CloseIdleConnections()
	})
	var (
		mu   sync.Mutex
		sent sync.WaitGroup
	)
	payload := make([]byte, size-1)
	for range n {
		pr, pw := io.Pipe()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/controlplane.v1.SamplingService/StreamSampling", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		held.Go(func() {
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			_ = pw.CloseWithError(io.ErrClosedPipe) // unblocks a write the call will not take
		})
		sent.Go(func() {
			var header [5]byte
			binary.BigEndian.PutUint32(header[1:], uint32(size))
			_, err := pw.Write(header[:])
			if err == nil {
				_, err = pw.Write(payload)
			}
			if err != nil {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		})
	}
	sent.Wait()
	return refused
}

// holdUnreadStreams opens n SDK streams over connections of at most perConn
// streams each, says hello on each and never reads what the server sends.
func holdUnreadStreams(t *testing.T, addr string, n, perConn int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var client pb.SamplingServiceClient
	for i := range n {
		if i%perConn == 0 {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			client = pb.NewSamplingServiceClient(conn)
		}
		stream, err := client.StreamSampling(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hello := &pb.Hello{ClientId: "idle-" + strconv.Itoa(i), ServiceName: "shop"}
		_ = stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}})
	}
}

// TestServeMemoryIsBounded: what clients can make a replica hold is bounded
// by --max-streams (and the message size): calls holding unfinished 1 MiB
// messages, and SDK streams that never read, grow the server's heap by about
// --max-streams of them, however many more are tried.
func TestServeMemoryIsBounded(t *testing.T) {
	const maxStreams = 40
	const message = 1 << 20
	// perConn is what a connection may hold at most, refused calls or not
	// (buffers and goroutines; about 70 KB measured): --max-connections
	// bounds that.
	const perConn = 128 << 10
	tests := []struct {
		name  string
		calls int
		conns int // connections the clients open
		hold  func(t *testing.T, addr string)
		// per is what one call may hold at most.
		per float64
	}{
		{"unfinished 1 MiB messages", *boundCalls, *boundCalls/1000 + 1, func(t *testing.T, addr string) {
			refused := holdUnfinishedMessages(t, addr, *boundCalls, message)
			t.Logf("%d of %d calls refused", refused, *boundCalls)
		}, message + 64<<10 + 32<<10},
		{"SDK streams that never read", *boundCalls * 5, *boundCalls*5/100 + 1, func(t *testing.T, addr string) {
			holdUnreadStreams(t, addr, *boundCalls*5, 100)
		}, 128 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startServeProcess(t, "--max-streams", strconv.Itoa(maxStreams))
			before := p.liveHeap(t)
			tt.hold(t, p.grpcAddr)
			growth := p.settledHeap(t, tt.calls) - before
			bound := maxStreams*tt.per + float64(tt.conns*perConn) + 8<<20
			t.Logf("heap growth %.1f MiB with --max-streams %d (bound %.1f MiB)", growth/(1<<20), maxStreams, bound/(1<<20))
			if growth > bound {
				t.Errorf("the server's heap grew by %.1f MiB, over %.1f MiB", growth/(1<<20), bound/(1<<20))
			}
		})
	}
}
