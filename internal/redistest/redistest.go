// Package redistest runs a real redis-server on a free loopback port for
// tests, so that code using Redis is tested against the real thing (Lua,
// streams, pub/sub, persistence, replication, failover) rather than a fake:
// one node, a Redis Cluster of three masters with a replica each
// (StartCluster), or a master and a replica watched by three Sentinels
// (StartSentinelSet).
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// binary is where scripts/install-deps puts redis-server (Debian's package).
const binary = "/usr/bin/redis-server"

const (
	// startTimeout bounds how long a server may take to answer PING.
	startTimeout = 15 * time.Second
	// bindAttempts is how often Start picks a new port when another process
	// took the one it picked between closing its probe listener and the
	// server binding it.
	bindAttempts = 5
)

// Options configure the server.
type Options struct {
	// AppendOnly turns on the append-only file, fsynced on every write, so
	// that Restart (even after Stop's SIGKILL) keeps every acknowledged
	// write. Default: off, nothing is kept on disk.
	AppendOnly bool
	// Cluster runs the server as a one-node Redis Cluster that owns every
	// slot. Redis then refuses commands and scripts whose keys hash to
	// different slots, as a real cluster would, so tests catch keys that
	// lack a shared hash tag. Use ClusterClient. Default: off.
	Cluster bool
	// SentinelOf, when set, runs the server as a Redis Sentinel that
	// monitors that server as the master named SentinelMaster, with a
	// quorum of one. Default: nil, a data node.
	SentinelOf *Server
	// ReplicaOf, when set, runs the server as a replica of that server.
	// Default: nil, a master.
	ReplicaOf *Server

	// The rest is set by StartCluster and StartSentinelSet.

	// member is a node of a multi-node cluster: it starts empty and is
	// ready once it answers PING; StartCluster gives it its slots.
	member bool
	// quorum is a Sentinel's quorum; 0 means one.
	quorum int
	// sentinelConf are more lines of a Sentinel's configuration file.
	sentinelConf []string
	// args are more redis-server arguments.
	args []string
}

// SentinelMaster is the name under which a Sentinel started with
// Options.SentinelOf knows its master.
const SentinelMaster = "mymaster"

// Server is one redis-server process owned by a test. Its methods are safe
// for concurrent use.
type Server struct {
	tb   testing.TB
	opts Options
	dir  string
	port int

	mu          sync.Mutex
	proc        *process      // nil while stopped
	frozen      bool          // stopped by Freeze
	adminClient *redis.Client // see admin; nil until first used
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // set before done is closed
}

// Start starts a server without persistence and stops it when the test ends.
// It fails the test if redis-server is missing or does not come up.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith starts a server configured by opts and stops it when the test
// ends.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if _, err := os.Stat(binary); err != nil {
		tb.Fatalf("redistest: %s not found (%v); run scripts/install-deps", binary, err)
	}
	s := &Server{tb: tb, opts: opts, dir: tb.TempDir()}
	tb.Cleanup(s.Stop)

	var lastErr error
	for range bindAttempts {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: pick a port: %v", err)
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// Addr returns the server's host:port, always on 127.0.0.1.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a client of the server that is closed when the test ends.
// Retries are short so that tests of an unreachable server stay fast.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  s.Addr(),
		ContextTimeoutEnabled: true,
		DialTimeout:           2 * time.Second,
		DialerRetries:         1,
		MaxRetries:            1,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// ClusterClient returns a Redis Cluster client of a server started with
// Options.Cluster, closed when the test ends.
func (s *Server) ClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	if !s.opts.Cluster {
		tb.Fatal("redistest: ClusterClient needs a server started with Options.Cluster")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 []string{s.Addr()},
		ContextTimeoutEnabled: true,
		DialTimeout:           2 * time.Second,
		DialerRetries:         1,
		MaxRetries:            1,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server with SIGKILL, as a crash would, and waits for it to
// exit; a frozen server too. It does nothing if the server is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.cmd.Process.Kill()
	<-s.proc.done
	s.proc, s.frozen = nil, false
}

// Restart stops the server if it runs and starts it again on the same port
// and directory, so clients reconnect to the same address and, with
// Options.AppendOnly, find their data again. Like t.Fatal, it must be called
// from the test's goroutine.
func (s *Server) Restart() {
	s.tb.Helper()
	s.restart(s.tb)
}

// restart is Restart failing tb.
func (s *Server) restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	// The port was ours a moment ago; another process taking it in between
	// is possible but rare, so retry briefly rather than move.
	var err error
	for range bindAttempts {
		if err = s.start(); err == nil {
			return
		}
	}
	tb.Fatalf("redistest: restart redis-server on port %d: %v", s.port, err)
}

// start starts the process on s.port and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	logPath := s.logPath()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor

	var args []string
	if m := s.opts.SentinelOf; m != nil {
		// Sentinel wants a config file it can rewrite; a restart keeps it.
		conf := filepath.Join(s.dir, "sentinel.conf")
		if _, err := os.Stat(conf); err != nil {
			quorum := max(s.opts.quorum, 1)
			lines := append([]string{fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", SentinelMaster, m.port, quorum)}, s.opts.sentinelConf...)
			if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				return err
			}
		}
		args = append(args, conf, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "yes",
	)
	if s.opts.Cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", // in --dir, kept across restarts
			"--cluster-announce-ip", "127.0.0.1",
		)
	}
	if s.opts.SentinelOf == nil {
		// A replica's first full sync starts at once rather than after
		// Redis's default five-second wait for more replicas.
		args = append(args, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	}
	if r := s.opts.ReplicaOf; r != nil {
		args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(r.port))
	}
	args = append(args, s.opts.args...)
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = s.dir
	// An *os.File is handed to the child directly, so no copying goroutine
	// outlives the test.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := waitReady(s.Addr(), s.opts.Cluster && !s.opts.member, p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%w; log:\n%s", err, tail(logPath))
	}
	s.proc = p
	return nil
}

// logPath is where the server's output goes.
func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

// waitReady polls the server with PING until it answers, the process exits
// (typically because the port was taken) or startTimeout passes. A cluster
// node is given every slot on its first start and is ready once its cluster
// state is ok.
func waitReady(addr string, cluster bool, p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		MaxRetries:            -1,
	})
	defer c.Close()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		// A plain dial first: go-redis logs every refused dial, which
		// would fill test output while the server starts.
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			err = c.Ping(ctx).Err()
		}
		if err == nil && cluster {
			err = clusterReady(ctx, c)
		}
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("no answer to PING on %s within %v: %v", addr, startTimeout, err)
		case <-tick.C:
		}
	}
}

// clusterReady assigns every slot to the node if none is assigned yet (its
// nodes.conf keeps them across restarts) and reports whether the cluster
// state is ok.
func clusterReady(ctx context.Context, c *redis.Client) error {
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if strings.Contains(info, "cluster_slots_assigned:0\r\n") {
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
			return err
		}
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return errors.New("cluster state is not ok yet")
	}
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the end of the server's log, for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const limit = 2000
	if len(b) > limit {
		b = b[len(b)-limit:]
	}
	return strings.TrimSpace(string(b))
}
