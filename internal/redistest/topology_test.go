package redistest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
)

// retry calls f until it succeeds, failing the test after a minute: clients
// see errors while a failover is under way.
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after a minute: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterFailover forms a Cluster, kills the master of a key, and
// finds the key (written with WAIT, so its replica had it) on the replica
// that took over; the killed node then rejoins as a replica.
func TestClusterFailover(t *testing.T) {
	start := time.Now()
	c := redistest.StartCluster(t)
	t.Logf("cluster of %d nodes formed in %v", len(c.Nodes()), time.Since(start))
	if got := strings.Count(c.URL(), "127.0.0.1:"); got != 6 || !strings.HasPrefix(c.URL(), "redis+cluster://") {
		t.Fatalf("URL() = %q, want redis+cluster:// and six loopback nodes", c.URL())
	}
	client := c.Client(t)
	ctx := t.Context()

	// Keys spread over the three masters.
	masters := map[string]bool{}
	for _, k := range []string{"{a}", "{b}", "{c}", "{d}", "{e}", "{f}"} {
		masters[c.MasterOf(t, k).Addr()] = true
	}
	if len(masters) < 2 {
		t.Errorf("six hash tags on %d masters, want them spread", len(masters))
	}

	const key = "{k}:v"
	if err := client.Set(ctx, key, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	master := c.MasterOf(t, key)
	// WAIT counts what this connection wrote: SET and WAIT on one.
	retry(t, "WAIT 1 after SET", func(ctx context.Context) error {
		conn := master.Client(t).Conn()
		defer conn.Close()
		if err := conn.Set(ctx, key, "2", 0).Err(); err != nil {
			return err
		}
		n, err := conn.Wait(ctx, 1, 5*time.Second).Result()
		if err == nil && n != 1 {
			err = errors.New("no replica confirmed")
		}
		return err
	})

	killed := c.KillMaster(t, key)
	if killed.Addr() != master.Addr() || killed.Running() {
		t.Fatalf("KillMaster killed %s (running %v), want %s stopped", killed.Addr(), killed.Running(), master.Addr())
	}
	killedAt := time.Now()
	promoted := c.WaitFailover(t, key)
	t.Logf("failover took %v", time.Since(killedAt))
	if promoted == killed || !slices.Contains(c.Nodes(), promoted) {
		t.Fatalf("WaitFailover returned %s, want a replica of %s", promoted.Addr(), killed.Addr())
	}
	retry(t, "GET after the failover", func(ctx context.Context) error {
		got, err := client.Get(ctx, key).Result()
		if err == nil && got != "2" {
			t.Fatalf("GET after the failover = %q, want \"2\"", got)
		}
		return err
	})

	t.Logf("GET answered %v after the kill", time.Since(killedAt))
	rejoin := time.Now()
	c.Rejoin(t, killed)
	t.Logf("rejoined in %v", time.Since(rejoin))
	if got := c.MasterOf(t, key); got != promoted {
		t.Errorf("after the old master rejoined, %s serves the key, want %s", got.Addr(), promoted.Addr())
	}
}

// TestSentinelSetFailover starts a Sentinel set, kills its master, and
// finds what was written (with WAIT) on the promoted replica, through a
// client that follows the Sentinels.
func TestSentinelSetFailover(t *testing.T) {
	start := time.Now()
	s := redistest.StartSentinelSet(t)
	t.Logf("Sentinel set formed in %v", time.Since(start))
	if !strings.HasPrefix(s.URL(), "redis+sentinel://") || !strings.HasSuffix(s.URL(), "/"+redistest.SentinelMaster) {
		t.Fatalf("URL() = %q", s.URL())
	}
	addrs := make([]string, 0, 3)
	for _, n := range s.Sentinels() {
		addrs = append(addrs, n.Addr())
	}
	client := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.SentinelMaster, SentinelAddrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	ctx := t.Context()

	first := s.Master(t)
	if first != s.Nodes()[0] {
		t.Fatalf("master %s, want the first node %s", first.Addr(), s.Nodes()[0].Addr())
	}
	conn := client.Conn()
	if err := conn.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d, %v", n, err)
	}
	conn.Close()

	killed := s.KillMaster(t)
	killedAt := time.Now()
	promoted := s.WaitFailover(t)
	t.Logf("failover took %v", time.Since(killedAt))
	if killed != first || promoted != s.Nodes()[1] {
		t.Fatalf("killed %s and promoted %s, want %s and %s", killed.Addr(), promoted.Addr(), first.Addr(), s.Nodes()[1].Addr())
	}
	retry(t, "GET after the failover", func(ctx context.Context) error {
		got, err := client.Get(ctx, "k").Result()
		if err == nil && got != "v" {
			t.Fatalf("GET after the failover = %q, want \"v\"", got)
		}
		return err
	})

	// Rejoin waits until the Sentinels agree on a running master with the
	// other node in sync as its replica. Which one: on a loaded machine a
	// second failover back to the rejoined node is legitimate.
	s.Rejoin(t, killed)
	if got := s.Master(t); got != promoted && got != killed {
		t.Errorf("after the old master rejoined the Sentinels name %s, want %s or %s", got.Addr(), promoted.Addr(), killed.Addr())
	}
	retry(t, "GET after the rejoin", func(ctx context.Context) error {
		got, err := client.Get(ctx, "k").Result()
		if err == nil && got != "v" {
			t.Fatalf("GET after the rejoin = %q, want \"v\"", got)
		}
		return err
	})
}

func TestFreezeThaw(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	srv.Freeze()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered by a frozen server")
	}
	srv.Thaw()
	retry(t, "PING after Thaw", func(ctx context.Context) error { return c.Ping(ctx).Err() })
}
