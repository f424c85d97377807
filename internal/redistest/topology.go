package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// cliBinary is redis-cli, which Debian's redis-server package brings (it
// depends on redis-tools); scripts/install-deps makes sure it is there.
const cliBinary = "/usr/bin/redis-cli"

// Topology timing. Failures are detected after about a second, short
// enough for tests yet long enough that a loaded machine does not fail a
// healthy master over; the waits are generous for the same reason.
const (
	// NodeTimeout is the Cluster's cluster-node-timeout and Sentinel's
	// down-after-milliseconds: how long a master may stay silent before
	// its replica takes over.
	NodeTimeout = 2 * time.Second
	// sentinelFailoverTimeout is Sentinel's failover-timeout: a failover
	// that stalls is retried after twice this.
	sentinelFailoverTimeout = 3 * time.Second
	// formTimeout bounds forming a Cluster or a Sentinel set.
	formTimeout = 60 * time.Second
	// FailoverTimeout bounds WaitFailover and Rejoin.
	FailoverTimeout = 60 * time.Second
	// pollInterval is how often the waits look again.
	pollInterval = 50 * time.Millisecond
)

// Freeze stops the server's process with SIGSTOP: it keeps its connections
// but answers nothing, as a stalled machine would. Thaw resumes it; Stop
// kills a frozen server too.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP, true) }

// Thaw resumes a server stopped by Freeze.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT, false) }

// signal sends sig to the process. A failure is reported with Errorf, so
// that Freeze and Thaw may be called from any goroutine.
func (s *Server) signal(sig syscall.Signal, frozen bool) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.tb.Errorf("redistest: signal %v to %s: not running", sig, s.Addr())
		return
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.tb.Errorf("redistest: signal %v to %s: %v", sig, s.Addr(), err)
		return
	}
	s.frozen = frozen
}

// Running reports whether the server's process runs (it may be frozen).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// answers reports whether the server runs and is not frozen: whether the
// topology's checks can ask it anything.
func (s *Server) answers() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.frozen
}

// Cluster is a Redis Cluster of three masters with a replica each, every
// node a redis-server on a loopback port, formed by redis-cli --cluster
// create. Methods that take a testing.TB fail that test, and must be
// called from its goroutine; a frozen node is left out of their checks.
type Cluster struct {
	nodes []*Server
}

// clusterMasters and clusterReplicas are the shape of a Cluster.
const (
	clusterMasters  = 3
	clusterReplicas = 1
)

// StartCluster starts a Cluster and waits until every slot is served and
// every master's replica is in sync. It stops every node when the test
// ends.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if _, err := os.Stat(cliBinary); err != nil {
		tb.Fatalf("redistest: %s not found (%v); run scripts/install-deps", cliBinary, err)
	}
	c := &Cluster{}
	opts := Options{Cluster: true, member: true, args: []string{
		"--cluster-node-timeout", strconv.FormatInt(NodeTimeout.Milliseconds(), 10),
		// A replica however far behind may take over: tests kill masters
		// on purpose and want the failover, not a cluster left down.
		"--cluster-replica-validity-factor", "0",
		// Replicas stay with their master, so the topology is the one the
		// test reads.
		"--cluster-allow-replica-migration", "no",
	}}
	addrs := make([]string, 0, clusterMasters*(1+clusterReplicas))
	for range cap(addrs) {
		n := StartWith(tb, opts)
		c.nodes = append(c.nodes, n)
		addrs = append(addrs, n.Addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), formTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(clusterReplicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, cliBinary, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	waitUntil(tb, formTimeout, "the cluster to form (every slot served, every replica in sync)", c.nodes, c.formed)
	return c
}

// Nodes returns every node, masters and replicas, in start order.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// Addrs returns every node's host:port.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns the redis+cluster:// URL that names every node.
func (c *Cluster) URL() string { return "redis+cluster://" + strings.Join(c.Addrs(), ",") }

// Client returns a Cluster client, closed when the test ends. It reads the
// slots again every second: a dead master answers no MOVED, and go-redis
// would otherwise keep sending it commands for a minute.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		ContextTimeoutEnabled:      true,
		DialTimeout:                2 * time.Second,
		ClusterStateReloadInterval: time.Second,
	})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// MasterOf returns the running master that serves key's slot, as every
// running node sees it. It fails the test if they disagree or none does.
func (c *Cluster) MasterOf(tb testing.TB, key string) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.masterOf(ctx, key)
	if err != nil {
		tb.Fatalf("redistest: master of %q: %v", key, err)
	}
	return m
}

// ReplicaOf returns a running replica of the master m.
func (c *Cluster) ReplicaOf(tb testing.TB, m *Server) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.running() {
		if n == m {
			continue
		}
		info, err := n.admin(ctx).Info(ctx, "replication").Result()
		if err != nil {
			tb.Fatalf("redistest: %s: INFO replication: %v", n.Addr(), err)
		}
		if field(info, "role") == "slave" && field(info, "master_port") == strconv.Itoa(m.port) {
			return n
		}
	}
	tb.Fatalf("redistest: no running replica of %s", m.Addr())
	return nil
}

// KillMaster kills the master that serves key's slot with SIGKILL, as a
// crash would, and returns it.
func (c *Cluster) KillMaster(tb testing.TB, key string) *Server {
	tb.Helper()
	m := c.MasterOf(tb, key)
	m.Stop()
	return m
}

// WaitFailover waits until a running node serves key's slot as master, every
// running node agrees on it and says the cluster is ok, and returns that
// master. It fails the test after FailoverTimeout.
func (c *Cluster) WaitFailover(tb testing.TB, key string) *Server {
	tb.Helper()
	var m *Server
	waitUntil(tb, FailoverTimeout, fmt.Sprintf("a replica to take over the slot of %q", key), c.nodes, func(ctx context.Context) error {
		var err error
		if m, err = c.masterOf(ctx, key); err != nil {
			return err
		}
		for _, n := range c.running() {
			info, err := n.admin(ctx).ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s says the cluster is not ok", n.Addr())
			}
		}
		return nil
	})
	return m
}

// AddMaster grows the Cluster by a master without a replica: it starts a
// node, joins it (redis-cli --cluster add-node) and moves slots to it
// (redis-cli --cluster rebalance --cluster-use-empty-masters), as an
// operator scaling out would, and waits until every running node sees it
// serve slots and the cluster ok. It returns the new master. The Cluster's
// other waits (WaitFailover, Rejoin) expect its first shape: a test that
// grows a Cluster starts its own.
func (c *Cluster) AddMaster(tb testing.TB) *Server {
	tb.Helper()
	n := StartWith(tb, Options{Cluster: true, member: true, args: c.nodes[0].opts.args})
	ctx, cancel := context.WithTimeout(context.Background(), formTimeout)
	defer cancel()
	seed := c.running()[0].Addr()
	if out, err := exec.CommandContext(ctx, cliBinary, "--cluster", "add-node", n.Addr(), seed).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster add-node: %v\n%s", err, out)
	}
	c.nodes = append(c.nodes, n)
	known := fmt.Sprintf("cluster_known_nodes:%d", len(c.nodes))
	everyone := func(ctx context.Context, want ...string) error {
		for _, m := range c.running() {
			info, err := m.admin(ctx).ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: CLUSTER INFO: %w", m.Addr(), err)
			}
			for _, w := range want {
				if !strings.Contains(info, w+"\r\n") {
					return fmt.Errorf("%s: CLUSTER INFO lacks %s", m.Addr(), w)
				}
			}
		}
		return nil
	}
	// rebalance refuses to run before every node knows the new one.
	waitUntil(tb, formTimeout, "every node to know "+n.Addr(), c.nodes, func(ctx context.Context) error {
		return everyone(ctx, known, "cluster_state:ok")
	})
	args := []string{"--cluster", "rebalance", seed, "--cluster-use-empty-masters"}
	if out, err := exec.CommandContext(ctx, cliBinary, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	waitUntil(tb, formTimeout, n.Addr()+" to serve slots", c.nodes, func(ctx context.Context) error {
		if err := everyone(ctx, known, "cluster_state:ok", "cluster_slots_ok:16384"); err != nil {
			return err
		}
		for _, m := range c.running() {
			shards, err := m.admin(ctx).ClusterShards(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: CLUSTER SHARDS: %w", m.Addr(), err)
			}
			serves := false
			for _, sh := range shards {
				for _, node := range sh.Nodes {
					addr := net.JoinHostPort(node.IP, strconv.FormatInt(node.Port, 10))
					serves = serves || len(sh.Slots) > 0 && node.Role == "master" && addr == n.Addr()
				}
			}
			if !serves {
				return fmt.Errorf("%s does not see %s serve a slot", m.Addr(), n.Addr())
			}
		}
		return nil
	})
	return n
}

// Rejoin restarts a node that was killed and waits until the cluster is
// whole again: the node back (a master that lost its slots while it was
// away returns as a replica), every master with a replica in sync.
func (c *Cluster) Rejoin(tb testing.TB, n *Server) {
	tb.Helper()
	n.restart(tb)
	waitUntil(tb, FailoverTimeout, fmt.Sprintf("%s to rejoin and every master to have a replica in sync", n.Addr()), c.nodes, c.formed)
}

// running returns the nodes that run and are not frozen.
func (c *Cluster) running() []*Server {
	var live []*Server
	for _, n := range c.nodes {
		if n.answers() {
			live = append(live, n)
		}
	}
	return live
}

// byAddr returns the node listening on addr, or nil.
func (c *Cluster) byAddr(addr string) *Server {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// formed checks that every node sees every slot served and the cluster
// ok, and that every master has an online replica that is in sync.
func (c *Cluster) formed(ctx context.Context) error {
	var masters, replicas int
	for _, n := range c.running() {
		info, err := n.admin(ctx).ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_slots_ok:16384", fmt.Sprintf("cluster_known_nodes:%d", len(c.nodes))} {
			if !strings.Contains(info, want+"\r\n") {
				return fmt.Errorf("%s: CLUSTER INFO lacks %s:\n%s", n.Addr(), want, info)
			}
		}
		repl, err := n.admin(ctx).Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", n.Addr(), err)
		}
		switch field(repl, "role") {
		case "master":
			masters++
			if online := onlineReplicas(repl); online != clusterReplicas {
				return fmt.Errorf("%s: master with %d replicas online, want %d", n.Addr(), online, clusterReplicas)
			}
		default:
			replicas++
			if err := replicaInSync(ctx, n); err != nil {
				return err
			}
		}
	}
	if masters != clusterMasters {
		return fmt.Errorf("%d masters and %d replicas running, want %d masters", masters, replicas, clusterMasters)
	}
	return nil
}

// masterOf returns the master of key's slot if every running node agrees
// on it and it runs.
func (c *Cluster) masterOf(ctx context.Context, key string) (*Server, error) {
	live := c.running()
	if len(live) == 0 {
		return nil, errors.New("no node runs")
	}
	slot, err := live[0].admin(ctx).ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER KEYSLOT: %w", live[0].Addr(), err)
	}
	var master string
	for _, n := range live {
		nodes, err := n.admin(ctx).ClusterNodes(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("%s: CLUSTER NODES: %w", n.Addr(), err)
		}
		addr, ok := slotMaster(nodes, int(slot))
		if !ok {
			return nil, fmt.Errorf("%s: no healthy master serves slot %d:\n%s", n.Addr(), slot, nodes)
		}
		if master != "" && addr != master {
			return nil, fmt.Errorf("nodes disagree on the master of slot %d: %s and %s", slot, master, addr)
		}
		master = addr
	}
	m := c.byAddr(master)
	if m == nil || !m.Running() {
		return nil, fmt.Errorf("slot %d is served by %s, which does not run", slot, master)
	}
	role, err := m.admin(ctx).Info(ctx, "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("%s: INFO replication: %w", m.Addr(), err)
	}
	if field(role, "role") != "master" {
		return nil, fmt.Errorf("%s serves slot %d but is not a master yet", m.Addr(), slot)
	}
	return m, nil
}

// slotMaster reads CLUSTER NODES and returns the address of the master
// that serves slot and is not flagged as failing.
func slotMaster(nodes string, slot int) (string, bool) {
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		if !slices.Contains(flags, "master") || slices.Contains(flags, "fail") || slices.Contains(flags, "fail?") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && a <= slot && slot <= b {
				addr, _, _ := strings.Cut(f[1], "@") // ip:port@cport[,hostname]
				return addr, true
			}
		}
	}
	return "", false
}

// SentinelSet is a master, a replica and three Sentinels with a quorum of
// two, every process a redis-server on a loopback port. Methods that take a
// testing.TB fail that test, and must be called from its goroutine.
type SentinelSet struct {
	data      []*Server // the master and the replica, in start order
	sentinels []*Server
}

// sentinelCount and sentinelQuorum are the shape of a SentinelSet.
const (
	sentinelCount  = 3
	sentinelQuorum = 2
)

// StartSentinelSet starts a SentinelSet and waits until the replica is in
// sync and every Sentinel knows the replica and the other Sentinels, so a
// failover can be agreed. It stops every process when the test ends.
func StartSentinelSet(tb testing.TB) *SentinelSet {
	tb.Helper()
	s := &SentinelSet{}
	master := Start(tb)
	replica := StartWith(tb, Options{ReplicaOf: master})
	s.data = []*Server{master, replica}
	// Sentinels find replicas in the master's INFO: start them once the
	// replica is there, or they would learn of it ten seconds later.
	waitUntil(tb, formTimeout, "the replica to sync", s.data, func(ctx context.Context) error { return replicaInSync(ctx, replica) })
	for range sentinelCount {
		s.sentinels = append(s.sentinels, StartWith(tb, Options{
			SentinelOf: master,
			quorum:     sentinelQuorum,
			sentinelConf: []string{
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", SentinelMaster, NodeTimeout.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s %d", SentinelMaster, sentinelFailoverTimeout.Milliseconds()),
			},
		}))
	}
	waitUntil(tb, formTimeout, "every Sentinel to know the replica and the other Sentinels", s.all(), s.formed)
	return s
}

// all returns the data nodes and the Sentinels.
func (s *SentinelSet) all() []*Server { return append(slices.Clone(s.data), s.sentinels...) }

// Sentinels returns the Sentinels.
func (s *SentinelSet) Sentinels() []*Server { return slices.Clone(s.sentinels) }

// Nodes returns the data nodes: the first master, then the replica.
func (s *SentinelSet) Nodes() []*Server { return slices.Clone(s.data) }

// URL returns the redis+sentinel:// URL that names every Sentinel and the
// master.
func (s *SentinelSet) URL() string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.Addr()
	}
	return "redis+sentinel://" + strings.Join(addrs, ",") + "/" + SentinelMaster
}

// Master returns the master every running Sentinel names. It fails the test
// if they disagree or name a server that is not running as a master.
func (s *SentinelSet) Master(tb testing.TB) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := s.master(ctx)
	if err != nil {
		tb.Fatalf("redistest: Sentinel master: %v", err)
	}
	return m
}

// Replica returns the running data node that is not the master.
func (s *SentinelSet) Replica(tb testing.TB) *Server {
	tb.Helper()
	m := s.Master(tb)
	for _, n := range s.data {
		if n != m && n.Running() {
			return n
		}
	}
	tb.Fatal("redistest: no running replica")
	return nil
}

// KillMaster kills the master with SIGKILL, as a crash would, and returns
// it.
func (s *SentinelSet) KillMaster(tb testing.TB) *Server {
	tb.Helper()
	m := s.Master(tb)
	m.Stop()
	return m
}

// WaitFailover waits until every running Sentinel names the same running
// master and that server says it is a master, and returns it. It fails
// the test after FailoverTimeout.
func (s *SentinelSet) WaitFailover(tb testing.TB) *Server {
	tb.Helper()
	var m *Server
	waitUntil(tb, FailoverTimeout, "the Sentinels to promote the replica", s.all(), func(ctx context.Context) error {
		var err error
		m, err = s.master(ctx)
		return err
	})
	return m
}

// Rejoin restarts a data node that was killed as a replica of the current
// master and waits until the set is whole again: a master every Sentinel
// names, and a replica in sync that every Sentinel counts. (Sentinel may
// fail over once more meanwhile: a master that was frozen as a replica
// just before its promotion can be judged down a second later.)
func (s *SentinelSet) Rejoin(tb testing.TB, n *Server) {
	tb.Helper()
	m := s.Master(tb)
	n.mu.Lock()
	n.opts.ReplicaOf = m
	n.mu.Unlock()
	n.restart(tb)
	waitUntil(tb, FailoverTimeout, fmt.Sprintf("%s to rejoin and the replica to be in sync", n.Addr()), s.all(), s.formed)
}

// formed checks that every Sentinel sees the master up, one replica up
// and the other Sentinels, and that the replica is in sync.
func (s *SentinelSet) formed(ctx context.Context) error {
	m, err := s.master(ctx)
	if err != nil {
		return err
	}
	for _, n := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		state, err := sc.Master(ctx, SentinelMaster).Result()
		replicas, rerr := sc.Replicas(ctx, SentinelMaster).Result()
		_ = sc.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", n.Addr(), err)
		}
		if rerr != nil {
			return fmt.Errorf("sentinel %s: SENTINEL REPLICAS: %w", n.Addr(), rerr)
		}
		if state["flags"] != "master" || state["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
			return fmt.Errorf("sentinel %s: master flags %q, %s other Sentinels; want master and %d",
				n.Addr(), state["flags"], state["num-other-sentinels"], sentinelCount-1)
		}
		// A replica's link status as Sentinel reports it comes from an
		// INFO it sends every ten seconds; the replica's own INFO, checked
		// below, is fresh. Flags without s_down or disconnected say that
		// the Sentinel reaches it.
		up := 0
		for _, r := range replicas {
			if r["flags"] == "slave" {
				up++
			}
		}
		if up != len(s.data)-1 {
			return fmt.Errorf("sentinel %s: %d replicas up, want %d: %v", n.Addr(), up, len(s.data)-1, replicas)
		}
	}
	for _, n := range s.data {
		if n != m {
			if err := replicaInSync(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// master returns the master every running Sentinel names, if it runs and
// says it is a master.
func (s *SentinelSet) master(ctx context.Context) (*Server, error) {
	var addr string
	for _, n := range s.sentinels {
		if !n.answers() {
			continue
		}
		got, err := n.admin(ctx).Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
		if err != nil {
			return nil, fmt.Errorf("sentinel %s: %w", n.Addr(), err)
		}
		if len(got) != 2 {
			return nil, fmt.Errorf("sentinel %s: master address %q", n.Addr(), got)
		}
		a := net.JoinHostPort(got[0], got[1])
		if addr != "" && a != addr {
			return nil, fmt.Errorf("the Sentinels disagree on the master: %s and %s", addr, a)
		}
		addr = a
	}
	var m *Server
	for _, n := range s.data {
		if n.Addr() == addr {
			m = n
		}
	}
	if m == nil || !m.Running() {
		return nil, fmt.Errorf("the Sentinels name %s, which does not run", addr)
	}
	info, err := m.admin(ctx).Info(ctx, "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("%s: INFO replication: %w", addr, err)
	}
	if field(info, "role") != "master" {
		return nil, fmt.Errorf("the Sentinels name %s, which is not a master yet", addr)
	}
	return m, nil
}

// replicaInSync checks that n is a replica whose link to its master is up
// and whose master counts it online.
func replicaInSync(ctx context.Context, n *Server) error {
	info, err := n.admin(ctx).Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", n.Addr(), err)
	}
	if field(info, "role") != "slave" || field(info, "master_link_status") != "up" {
		return fmt.Errorf("%s: role %s, master link %s; want a replica with its link up",
			n.Addr(), field(info, "role"), field(info, "master_link_status"))
	}
	if field(info, "master_sync_in_progress") != "0" {
		return fmt.Errorf("%s: still syncing", n.Addr())
	}
	return nil
}

// onlineReplicas counts the replicas an INFO replication of a master lists
// as online.
func onlineReplicas(info string) int {
	n := 0
	for line := range strings.Lines(info) {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			n++
		}
	}
	return n
}

// field returns the value of name in an INFO reply.
func field(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// admin returns a client of the server for the topology's checks: no
// retries, closed when the test ends. It must not be used while the server
// is stopped (go-redis would log every refused dial).
func (s *Server) admin(ctx context.Context) *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adminClient == nil {
		s.adminClient = redis.NewClient(&redis.Options{
			Addr:                  s.Addr(),
			ContextTimeoutEnabled: true,
			DialTimeout:           2 * time.Second,
			MaxRetries:            -1,
			PoolSize:              2,
		})
		c := s.adminClient
		s.tb.Cleanup(func() { _ = c.Close() })
	}
	return s.adminClient
}

// waitUntil calls check every pollInterval until it returns nil, and fails
// the test with check's last error and the end of each of procs' logs
// after timeout. Each call gets a few seconds of its own.
func waitUntil(tb testing.TB, timeout time.Duration, what string, procs []*Server, check func(ctx context.Context) error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, p := range procs {
				fmt.Fprintf(&logs, "\n--- %s (running %v), end of its log:\n%s\n", p.Addr(), p.Running(), lastLines(p.logPath(), 12))
			}
			tb.Fatalf("redistest: waited %v for %s: %v%s", timeout, what, err, logs.String())
		}
		<-tick.C
	}
}

// lastLines returns the last n lines of the file at path.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
