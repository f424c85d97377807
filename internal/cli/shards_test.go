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

// TestWatchShardsWarnsOfAddedMaster runs the replica's shard watch on a
// real Cluster grown by a master: no warning and a gauge of 0 before, one
// warning naming the master left without a shard and a gauge of 1 after.
func TestWatchShardsWarnsOfAddedMaster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	client, err := redisstore.NewClient(cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	s, err := redisstore.New(t.Context(), client, redisstore.Options{Prefix: "watch"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	read := func() float64 {
		var m dto.Metric
		if err := gauge.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchShards(ctx, s, nil, gauge, log, 20*time.Millisecond, 100*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()

	time.Sleep(500 * time.Millisecond)
	if got := read(); got != 0 || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("before growth: gauge %v, logs %q; want 0 and no warning", got, logs.String())
	}
	cluster.AddMaster(t)
	deadline := time.Now().Add(30 * time.Second)
	for read() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after adding a master: gauge %v, logs %q; want 1", read(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a few more reads: one warning, not one each
	if n := strings.Count(logs.String(), "hold no shard"); n != 1 {
		t.Errorf("%d warnings of masters without a shard, want 1:\n%s", n, logs.String())
	}
}

// TestReshardGrownCluster grows a real Cluster by a master under a
// replica's shard watch that may reshard: the watch warns, then lays the
// shards out again by itself (gauge back to 0, generation 1), and
// 'controlplane redis reshard' then finds nothing to do, and with --force
// lays them out once more.
func TestReshardGrownCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	client, err := redisstore.NewClient(cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	s, err := redisstore.New(t.Context(), client, redisstore.Options{Prefix: "grow"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if res := runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "grow"); res.code != exitNotFound {
		t.Errorf("reshard before any replica laid the shards out: exit %d (%v), want %d", res.code, res.err, exitNotFound)
	}
	if _, err := s.ShardCoverage(t.Context()); err != nil { // lays them out
		t.Fatal(err)
	}
	if res := runCLI(t, "", "redis", "reshard", "--redis-url", cluster.URL(), "--redis-prefix", "grow"); res.code != 0 || !strings.Contains(res.stdout, "every master holds a shard") {
		t.Errorf("reshard of a Cluster whose masters all hold a shard: exit %d, %q, %v", res.code, res.stdout, res.err)
	}

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	read := func() float64 {
		var m dto.Metric
		if err := gauge.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchShards(ctx, s, s, gauge, log, 20*time.Millisecond, 200*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()

	cluster.AddMaster(t)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "laid the report path's shards out again") || read() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after adding a master: gauge %v, logs %q; want a reshard and 0", read(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A warning each time the set changes: the new master, then the old
	// ones the rebalance takes a shard's slot from.
	if n := strings.Count(logs.String(), "hold no shard"); n < 1 {
		t.Errorf("no warning of masters without a shard:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), "laid the report path's shards out again"); n != 1 {
		t.Errorf("%d reshards, want 1 (none while the rebalance moved slots):\n%s", n, logs.String())
	}
	c, err := s.ShardCoverage(t.Context())
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
