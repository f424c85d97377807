package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// testReplicaWait is the stores' ReplicaWait in these tests: generous, for
// a loaded test machine, where the default would do in production.
const testReplicaWait = 5 * time.Second

// topology is a replicated Redis the tests start: a Cluster or a Sentinel
// set. Each function fails the test it is given.
type topology struct {
	url string
	// kill kills the master that holds key, as a crash would, and returns
	// it; failover waits until a replica has taken over; rejoin brings a
	// killed node back as a replica.
	kill     func(t *testing.T, key string) *redistest.Server
	failover func(t *testing.T, key string)
	rejoin   func(t *testing.T, n *redistest.Server)
	// replicaOf returns the replica of the master that holds key.
	replicaOf func(t *testing.T, key string) *redistest.Server
	cluster   *redistest.Cluster // nil for Sentinel
}

func startCluster(t *testing.T) topology {
	c := redistest.StartCluster(t)
	return topology{
		url:  c.URL(),
		kill: func(t *testing.T, key string) *redistest.Server { return c.KillMaster(t, key) },
		failover: func(t *testing.T, key string) {
			t.Helper()
			c.WaitFailover(t, key)
		},
		rejoin: func(t *testing.T, n *redistest.Server) {
			t.Helper()
			c.Rejoin(t, n)
		},
		replicaOf: func(t *testing.T, key string) *redistest.Server { return c.ReplicaOf(t, c.MasterOf(t, key)) },
		cluster:   c,
	}
}

func startSentinelSet(t *testing.T) topology {
	s := redistest.StartSentinelSet(t)
	return topology{
		url:  s.URL(),
		kill: func(t *testing.T, _ string) *redistest.Server { return s.KillMaster(t) },
		failover: func(t *testing.T, _ string) {
			t.Helper()
			s.WaitFailover(t)
		},
		rejoin: func(t *testing.T, n *redistest.Server) {
			t.Helper()
			s.Rejoin(t, n)
		},
		replicaOf: func(t *testing.T, _ string) *redistest.Server { return s.Replica(t) },
	}
}

var topologies = []struct {
	name  string
	start func(t *testing.T) topology
}{
	{"cluster 3x2", startCluster},
	{"sentinel", startSentinelSet},
}

// newClient returns a client for url, closed when the test ends.
func newClient(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	c, err := redisstore.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestConformanceTopologies runs the store contract on a six-node Redis
// Cluster and on a Sentinel set, through their URLs, and fails a master
// over under edits (the suite's Failover clause).
func TestConformanceTopologies(t *testing.T) {
	for _, tt := range topologies {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			topo := tt.start(t)
			t.Logf("started in %v", time.Since(start))
			if topo.cluster != nil {
				t.Run("ShardsSpreadOverMasters", func(t *testing.T) { testShardsSpread(t, topo.url) })
				t.Run("PartialBatchAppliesOnce", func(t *testing.T) { testPartialBatch(t, topo.url, topo.cluster) })
				t.Run("FailingShardHoldsBatch", func(t *testing.T) { testFailingShardHoldsBatch(t, topo.url, topo.cluster) })
				t.Run("UpgradeToShards", func(t *testing.T) {
					testUpgrade(t, func(t *testing.T) redis.UniversalClient { return newClient(t, topo.url) }, 0)
				})
			}
			var n atomic.Int64
			storetest.Run(t, func(t *testing.T) storetest.Backend {
				prefix := fmt.Sprintf("t%d", n.Add(1))
				key := "{" + prefix + "}:rules"
				return storetest.Backend{
					Open: func(t *testing.T, now func() time.Time) store.Store {
						return newStore(t, newClient(t, topo.url), redisstore.Options{Prefix: prefix, Now: now, ReplicaWait: testReplicaWait})
					},
					OpenLimited: func(t *testing.T, now func() time.Time, maxRules int) store.Store {
						return newStore(t, newClient(t, topo.url), redisstore.Options{Prefix: prefix, Now: now, ReplicaWait: testReplicaWait, MaxRules: maxRules})
					},
					Shared:        true,
					Durable:       true,
					RemembersKeys: true,
					Failover: func(t *testing.T) func() {
						killed := topo.kill(t, key)
						topo.failover(t, key)
						return func() { topo.rejoin(t, killed) }
					},
				}
			})
		})
	}
}

// TestAcknowledgedEditSurvivesFailover holds an edit back from the replica
// (frozen, behind 32 MiB of replication stream the master cannot send it
// yet), kills the master and lets the replica take over. Without waiting
// for replicas the store acknowledges the edit and the failover loses it;
// with ReplicaWait it reports the edit as not replicated instead, so no
// acknowledged edit is lost: the edit it acknowledged just before, it
// keeps. (The suite's Failover clause kills a master under a stream of
// edits: every one acknowledged up to the kill survives.)
func TestAcknowledgedEditSurvivesFailover(t *testing.T) {
	for _, tt := range topologies {
		t.Run(tt.name, func(t *testing.T) {
			topo := tt.start(t)
			variants := []struct {
				name    string
				wait    time.Duration
				wantAck bool
			}{
				{"without WAIT", -1, true},
				// Shorter than redistest.NodeTimeout: the frozen replica is
				// not judged down, and is fit to take over at once.
				{"with WAIT", redistest.NodeTimeout / 2, false},
			}
			for i, wait := range variants {
				t.Run(wait.name, func(t *testing.T) {
					prefix := strings.ReplaceAll(wait.name, " ", "-")
					key := "{" + prefix + "}:rules"
					client := newClient(t, topo.url)
					s := newStore(t, client, redisstore.Options{Prefix: prefix, ReplicaWait: wait.wait})
					ctx := t.Context()

					// Acknowledged by the replica too, before it froze: without
					// WAIT nothing says the replica had it yet, and on a
					// loaded machine it did not always.
					replicated := s
					if wait.wait < 0 {
						replicated = newStore(t, client, redisstore.Options{Prefix: prefix, ReplicaWait: testReplicaWait})
					}
					before, err := replicated.CreateRule(ctx, rules.Rule{Name: "before", Priority: 1}, "u")
					if err != nil {
						t.Fatal(err)
					}
					replica := topo.replicaOf(t, key)
					replica.Freeze()
					thawed := false
					defer func() {
						if !thawed {
							replica.Thaw()
						}
					}()
					junk := strings.Repeat("x", 32<<20)
					if err := client.Set(ctx, "{"+prefix+"}:junk", junk, 0).Err(); err != nil {
						t.Fatal(err)
					}
					_, err = s.CreateRule(ctx, rules.Rule{Name: "held", Priority: 2}, "u")
					acked := err == nil
					if acked != wait.wantAck || !acked && !errors.Is(err, store.ErrNotReplicated) {
						t.Fatalf("edit the replica cannot have yet: %v; want acknowledged %v, or else ErrNotReplicated", err, wait.wantAck)
					}
					if !acked && !errors.Is(err, store.ErrUnavailable) {
						t.Errorf("not replicated: %v, want ErrUnavailable too", err)
					}

					killed := topo.kill(t, key)
					replica.Thaw()
					thawed = true
					topo.failover(t, key)
					if got, err := ruleSoon(t, s, "before"); err != nil || got.Revision != before.Revision {
						t.Errorf("rule acknowledged before the replica froze: %+v, %v", got, err)
					}
					_, err = ruleSoon(t, s, "held")
					lost := errors.Is(err, store.ErrNotFound)
					if err != nil && !lost {
						t.Fatal(err)
					}
					t.Logf("held-back edit: acknowledged %v, lost in the failover %v", acked, lost)
					if acked && !lost {
						t.Fatal("the replica had the edit after all: the test did not hold it back")
					}
					// Without WAIT the store acknowledged an edit it then lost:
					// the risk that WAIT closes.

					if i < len(variants)-1 {
						topo.rejoin(t, killed) // for the next variant
					}
				})
			}
		})
	}
}

// ruleSoon reads a rule, retrying while the store is unavailable.
func ruleSoon(t *testing.T, s store.Store, name string) (rules.Rule, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := s.Rule(ctx, name)
		cancel()
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
