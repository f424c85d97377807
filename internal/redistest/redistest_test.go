package redistest_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartAnswersOnLoopback(t *testing.T) {
	srv := redistest.Start(t)
	if !strings.HasPrefix(srv.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr() = %q, want a 127.0.0.1 address", srv.Addr())
	}
	if want := "redis://" + srv.Addr(); srv.URL() != want {
		t.Fatalf("URL() = %q, want %q", srv.URL(), want)
	}
	c := srv.Client(t)
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	ctx := t.Context()
	if err := a.Client(t).Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Client(t).Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET on the other server: err = %v, want redis.Nil", err)
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name     string
		opts     redistest.Options
		wantKept bool
	}{
		{name: "in memory", opts: redistest.Options{}, wantKept: false},
		{name: "append only", opts: redistest.Options{AppendOnly: true}, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tt.opts)
			c := srv.Client(t)
			ctx := t.Context()
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			addr := srv.Addr()

			srv.Stop()
			if err := c.Ping(ctx).Err(); err == nil {
				t.Fatal("PING succeeded on a stopped server")
			}
			srv.Stop() // stopping twice is harmless

			srv.Restart()
			if srv.Addr() != addr {
				t.Fatalf("restarted on %s, want %s", srv.Addr(), addr)
			}
			got, err := c.Get(ctx, "k").Result()
			switch {
			case tt.wantKept && (err != nil || got != "v"):
				t.Fatalf("after restart GET = %q, %v; want \"v\"", got, err)
			case !tt.wantKept && !errors.Is(err, redis.Nil):
				t.Fatalf("after restart GET = %q, %v; want redis.Nil", got, err)
			}
		})
	}
}

func TestRestartRunningServer(t *testing.T) {
	srv := redistest.Start(t)
	srv.Restart()
	if err := srv.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

func TestCluster(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true, AppendOnly: true})
	c := srv.ClusterClient(t)
	ctx := t.Context()
	if err := c.Set(ctx, "{tag}:a", "1", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	// Keys in different slots cannot meet in one command, as in a real
	// cluster; with a shared hash tag they can.
	if err := c.Do(ctx, "MSET", "a", "1", "b", "2").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("MSET across slots: error = %v, want CROSSSLOT", err)
	}
	if err := c.MSet(ctx, "{tag}:b", "2", "{tag}:c", "3").Err(); err != nil {
		t.Errorf("MSET within one hash tag: %v", err)
	}

	srv.Restart()
	got, err := c.Get(ctx, "{tag}:a").Result()
	if err != nil || got != "1" {
		t.Fatalf("GET after restart = %q, %v; want \"1\"", got, err)
	}
}

func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartWith(t, redistest.Options{SentinelOf: master})
	got, err := sentinel.Client(t).Do(t.Context(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", redistest.SentinelMaster).StringSlice()
	if err != nil {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v", err)
	}
	host, port, _ := net.SplitHostPort(master.Addr())
	if diff := cmp.Diff([]string{host, port}, got); diff != "" {
		t.Errorf("master address (-want +got):\n%s", diff)
	}
}

// TestFreeze: a frozen server answers nothing, and what a client sent
// meanwhile runs once it thaws, although the client gave up on it: the
// hazard the report script's deadline is for.
func TestFreeze(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	// A connection made before the freeze: a new one would wait for its
	// handshake, and send nothing.
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := c.Set(ctx, "k", "sent while frozen", 0).Err(); !errors.Is(err, context.DeadlineExceeded) {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("SET while frozen: %v, want a timeout", err)
		}
	}
	srv.Thaw()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(t.Context(), "k").Result()
		if err == nil && v == "sent while frozen" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the thaw, GET k = %q, %v; want the SET sent while frozen to have run", v, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
