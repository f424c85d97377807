package cli

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// syncBuffer is a log sink safe for the watcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// watched is a store under a replica's shard watch, with its log and
// gauge.
type watched struct {
	s     *redisstore.Store
	logs  syncBuffer
	gauge prometheus.Gauge
}

func (w *watched) read(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := w.gauge.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// watch opens a store of prefix on the Cluster and runs the shard watch
// on it until the test ends; reshard lets it lay the shards out again.
func watch(t *testing.T, url, prefix string, reshard bool) *watched {
	t.Helper()
	client, err := redisstore.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	s, err := redisstore.New(t.Context(), client, redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	w := &watched{s: s, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	var rs resharder
	if reshard {
		rs = s
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchShards(ctx, s, rs, w.gauge, slog.New(slog.NewTextHandler(&w.logs, nil)), 20*time.Millisecond, 200*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// TestWatchShardsOnGrownCluster grows a real Cluster by a master under two
// replicas' shard watches, of two prefixes. Before: no warning, gauges 0.
// The one that may not reshard (--redis-reshard=false) warns, naming the
// master left without a shard, and its gauge stays 1. The one that may
// warns and lays the shards out again by itself, once, after the rebalance
// (gauge back to 0, generation 1). Then 'controlplane redis reshard' finds
// nothing to do on that prefix, --force lays it out once more, and on the
// other prefix it reshards.
func TestWatchShardsOnGrownCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	if res := runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "grow"); res.code != exitNotFound {
		t.Errorf("reshard before any replica laid the shards out: exit %d (%v), want %d", res.code, res.err, exitNotFound)
	}
	warns := watch(t, cluster.URL(), "warn", false)
	grows := watch(t, cluster.URL(), "grow", true)
	time.Sleep(500 * time.Millisecond)
	for _, w := range []*watched{warns, grows} {
		if got := w.read(t); got != 0 || strings.Contains(w.logs.String(), "level=WARN") {
			t.Fatalf("before growth: gauge %v, logs %q; want 0 and no warning", got, w.logs.String())
		}
	}
	if res := runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "grow"); res.code != 0 || !strings.Contains(res.stdout, "every master holds a shard") {
		t.Errorf("reshard of a Cluster whose masters all hold a shard: exit %d, %q, %v", res.code, res.stdout, res.err)
	}

	cluster.AddMaster(t)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(grows.logs.String(), "laid the report path's shards out again") || grows.read(t) != 0 || warns.read(t) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after adding a master: gauges %v (reshard) and %v (warn only), logs %q and %q; want a reshard and 0, and 1",
				grows.read(t), warns.read(t), grows.logs.String(), warns.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(600 * time.Millisecond) // a few more reads
	// A warning each time the set of masters without a shard changes (the
	// new master, then an old one whose shard's slot the rebalance moved
	// to it), not one each read.
	for _, w := range []*watched{warns, grows} {
		if n := strings.Count(w.logs.String(), "hold no shard"); n < 1 || n > 3 {
			t.Errorf("%d warnings of masters without a shard, want 1 to 3:\n%s", n, w.logs.String())
		}
	}
	if got := warns.read(t); got != 1 {
		t.Errorf("warn-only watch: gauge %v after the rebalance, want 1", got)
	}
	if n := strings.Count(grows.logs.String(), "laid the report path's shards out again"); n != 1 {
		t.Errorf("%d reshards, want 1 (none while the rebalance moved slots):\n%s", n, grows.logs.String())
	}
	c, err := grows.s.ShardCoverage(t.Context())
	if err != nil || len(c.Shards) != 4 || len(c.Unsharded) != 0 {
		t.Errorf("coverage after the watch's reshard: %+v, %v; want 4 shards, every master one", c, err)
	}

	res := runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "grow")
	if res.code != 0 || !strings.Contains(res.stdout, "every master holds a shard: generation 1") {
		t.Errorf("reshard after the watch's: exit %d, %q, %v; want nothing done at generation 1", res.code, res.stdout, res.err)
	}
	res = runCLI(t, "", "redis", "reshard", "--force", "--redis-url", cluster.URL(), "--redis-prefix", "grow")
	if res.code != 0 || !strings.Contains(res.stdout, "generation 1 -> 2") {
		t.Errorf("reshard --force: exit %d, %q, %v; want generation 1 -> 2", res.code, res.stdout, res.err)
	}
	res = runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "warn")
	if res.code != 0 || !strings.Contains(res.stdout, "generation 0 -> 1") {
		t.Errorf("reshard of the warn-only prefix: exit %d, %q, %v; want generation 0 -> 1", res.code, res.stdout, res.err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for warns.read(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("warn-only watch after 'controlplane redis reshard': gauge %v, want 0", warns.read(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReshardRefusesBadURL: the command wants a Cluster's URL, and says so
// as a usage error before it talks to Redis.
func TestReshardRefusesBadURL(t *testing.T) {
	for _, url := range []string{"", "redis://127.0.0.1:1", "redis+cluster://"} {
		if res := runCLI(t, "", "redis", "reshard", "--redis-url", url); res.code != exitUsage {
			t.Errorf("reshard --redis-url %q: exit %d (%v), want %d", url, res.code, res.err, exitUsage)
		}
	}
}
