package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// child is a server process the driver started and stops.
type child struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{} // closed once the process has exited
	grpcAddr string
	httpAddr string // Go's profiles under /debug/pprof/
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// start runs cmd and waits until found, given each line of the stream
// that out returns, says where the process serves. The stream's later lines
// go to log.
func start(ctx context.Context, name string, cmd *exec.Cmd, out func(*exec.Cmd) (io.ReadCloser, error), found func(line string) (grpcAddr, httpAddr string, ok bool), log io.Writer) (*child, error) {
	// The child dies with the driver, even if the driver is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r, err := out(cmd)
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	addrs := make(chan [2]string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if !seen {
				if g, h, ok := found(line); ok {
					seen = true
					addrs <- [2]string{g, h}
					continue
				}
			}
			fmt.Fprintf(log, "%s: %s\n", name, line)
		}
	}()
	go func() {
		<-copied
		_ = cmd.Wait()
		close(c.done)
	}()
	select {
	case a := <-addrs:
		c.grpcAddr, c.httpAddr = a[0], a[1]
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("%s exited before it served: %v", name, cmd.ProcessState)
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s did not say where it serves within 30 s", name)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// startEcho runs this program as the echo server (echoEnv).
func startEcho(ctx context.Context, log io.Writer) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-test.run=^$") // the flag is for a test binary; the command ignores its arguments in this mode
	cmd.Env = append(os.Environ(), echoEnv+"=1")
	cmd.Stderr = log
	return start(ctx, "echo", cmd, (*exec.Cmd).StdoutPipe, func(line string) (string, string, bool) {
		var g, h string
		if _, err := fmt.Sscanf(line, "echo grpc=%s http=%s", &g, &h); err != nil {
			return "", "", false
		}
		return g, h, true
	}, log)
}

// startControlplane runs `controlplane serve` from bin on loopback ports,
// with its profiles served, on the embedded store or on Redis.
func startControlplane(ctx context.Context, name, bin, redisURL, redisPrefix string, log io.Writer) (*child, error) {
	args := []string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json",
		"--xray-addr=", "--log-level", "info", "--debug-endpoints", "--data-dir=", "--redis-url=" + redisURL}
	if redisPrefix != "" {
		args = append(args, "--redis-prefix", redisPrefix)
	}
	cmd := exec.Command(bin, args...)
	// Only the flags decide: no CONTROLPLANE_* variable of the caller's.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTROLPLANE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Jaeger's sampling endpoint off (servers that have one listen on a
	// fixed port, which two of them cannot share); by the environment,
	// which servers without one ignore, so that older binaries still start.
	cmd.Env = append(cmd.Env, "CONTROLPLANE_JAEGER_ADDR=")
	return start(ctx, name, cmd, (*exec.Cmd).StderrPipe, func(line string) (string, string, bool) {
		var m struct {
			Msg      string `json:"msg"`
			GRPCAddr string `json:"grpc_addr"`
			HTTPAddr string `json:"http_addr"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg != "control plane serving" {
			return "", "", false
		}
		return m.GRPCAddr, m.HTTPAddr, true
	}, log)
}

var errNoBinary = errors.New("--controlplane: the path of a controlplane binary is required (go build -o /tmp/cp ./cmd/controlplane)")
