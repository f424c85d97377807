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
		watchShards(ctx, s, gauge, log, 20*time.Millisecond, 100*time.Millisecond)
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
