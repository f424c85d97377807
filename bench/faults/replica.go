package faults

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// replica is one control plane replica of a run: a `controlplane serve`
// process, or (for clock skew) one run in-process.
type replica interface {
	// addr is its gRPC address.
	addr() string
	// kill stops it at once, as a crash would: nothing is flushed.
	kill()
	// restart starts it again on the same address.
	restart(ctx context.Context) error
	// stop stops it gracefully, as SIGTERM does, and waits.
	stop()
	// warnings counts the log lines at WARN or above so far.
	warnings() int
	// counter reads a counter of the replica's metrics since it started,
	// summed over its labels.
	counter(name string) float64
}

// Counters read from the replicas at the end of a run.
const (
	// droppedMetric counts budget usage entries a replica lost, or may
	// have lost.
	droppedMetric = "controlplane_usage_dropped_total"
	// clampedMetric counts sampled traces cut from reports that claimed
	// more than their client can have sampled.
	clampedMetric = "controlplane_report_traces_clamped_total"
)

// replicaStart bounds how long a replica may take to become ready.
const replicaStart = 30 * time.Second

// procReplica is a `controlplane serve` process, logging JSON to a file.
type procReplica struct {
	bin      string
	dir      string
	name     string
	redisURL string
	interval time.Duration
	grpcAddr string
	httpAddr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startProcReplica starts `bin serve` on free loopback ports against
// redisURL and waits until it is ready.
func startProcReplica(ctx context.Context, bin, dir, name, redisURL string, interval time.Duration) (*procReplica, error) {
	r := &procReplica{bin: bin, dir: dir, name: name, redisURL: redisURL, interval: interval}
	var err error
	// Another process may take a port between our probe and the replica's
	// bind: pick new ones then.
	for range 5 {
		if r.grpcAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		if r.httpAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		if err = r.start(ctx); err == nil {
			return r, nil
		}
	}
	return nil, fmt.Errorf("start replica %s: %w", name, err)
}

func (r *procReplica) addr() string { return r.grpcAddr }

func (r *procReplica) logPath() string { return filepath.Join(r.dir, r.name+".log") }

func (r *procReplica) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("already running")
	}
	logf, err := os.OpenFile(r.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(r.bin, "serve",
		"--grpc-addr", r.grpcAddr,
		"--http-addr", r.httpAddr,
		"--jaeger-addr", "", // off: replicas would share its default port
		"--xray-addr", "", // off, as the Jaeger port
		"--redis-url", r.redisURL,
		"--report-interval", r.interval.String(),
		"--shutdown-timeout", "5s",
		"--log-format", "json",
	)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := waitReady(ctx, r.httpAddr, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%w; log: %s", err, tailFile(r.logPath()))
	}
	r.cmd, r.done = cmd, done
	return nil
}

// cleanEnv is this process's environment without CONTROLPLANE_ variables,
// which serve would take for flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !bytes.HasPrefix([]byte(kv), []byte("CONTROLPLANE_")) {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls /readyz until it answers 200, the process exits, or
// replicaStart passes.
func waitReady(ctx context.Context, httpAddr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, replicaStart)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the replica exited")
		case <-ctx.Done():
			return fmt.Errorf("not ready within %v", replicaStart)
		case <-t.C:
		}
	}
}

func (r *procReplica) signal(sig syscall.Signal, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.done:
	case <-time.After(wait):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd, r.done = nil, nil
}

func (r *procReplica) kill() { r.signal(syscall.SIGKILL, time.Minute) }

// stop sends SIGTERM; serve's --shutdown-timeout (5 s here) bounds it, and
// a replica still running 30 s later is killed.
func (r *procReplica) stop() { r.signal(syscall.SIGTERM, 30*time.Second) }

func (r *procReplica) restart(ctx context.Context) error {
	r.kill()
	var err error
	// The ports were ours a moment ago; retry briefly rather than move,
	// since the SDKs know this address.
	for range 5 {
		if err = r.start(ctx); err == nil {
			return nil
		}
	}
	return err
}

func (r *procReplica) warnings() int { return countWarnings(r.logPath()) }

func (r *procReplica) counter(name string) float64 {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + r.httpAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

// countWarnings counts the JSON log lines of a file whose level is WARN or
// ERROR.
func countWarnings(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte(`"level":"WARN"`)) || bytes.Contains(line, []byte(`"level":"ERROR"`)) {
			n++
		}
	}
	return n
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Addr().(*net.TCPAddr).Port)), nil
}

// tailFile returns the end of a log file, for error messages.
func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(bytes.TrimSpace(b))
}
