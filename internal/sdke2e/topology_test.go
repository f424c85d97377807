package sdke2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// failoverDeadline bounds every wait that spans a Redis failover.
const failoverDeadline = 30 * time.Second

// TestE2EFailover runs a control plane on a six-node Redis Cluster and on a
// Sentinel set, through their URLs: an instance gets its rule and quota,
// an edit reaches it; then the master holding the control plane's keys is
// killed, and once a replica has taken over, an edit still reaches the
// instance, its reports get it a quota of the new reservoir, and its usage
// is counted again.
func TestE2EFailover(t *testing.T) {
	for _, tt := range []struct {
		name  string
		start func(t *testing.T) (url string, failover func(t *testing.T))
	}{
		{"cluster 3x2", func(t *testing.T) (string, func(t *testing.T)) {
			c := redistest.StartCluster(t)
			return c.URL(), func(t *testing.T) {
				c.KillMaster(t, "{tsc}:rules")
				c.WaitFailover(t, "{tsc}:rules")
			}
		}},
		{"sentinel", func(t *testing.T) (string, func(t *testing.T)) {
			s := redistest.StartSentinelSet(t)
			return s.URL(), func(t *testing.T) {
				s.KillMaster(t)
				s.WaitFailover(t)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// As noLeaks, but for go-redis's pool, which redials a dead
			// node in the background and looks once a second whether its
			// pool was closed: that goroutine ends a second after Close.
			opt := goleak.IgnoreCurrent()
			t.Cleanup(func() {
				goleak.VerifyNone(t, opt, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
			})
			url, failover := tt.start(t)
			client, err := redisstore.NewClient(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { client.Close() })
			// Generous: the test machine is loaded.
			opts := redisstore.Options{ReplicaWait: 5 * time.Second}
			cp := startControlPlaneOn(t, client, opts, "127.0.0.1:0", nil, insecure.NewCredentials())

			// The test's own view of the store, for budgets and usage.
			viewClient, err := redisstore.NewClient(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { viewClient.Close() })
			view, err := redisstore.New(t.Context(), viewClient, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { view.Close() })
			if _, err := view.CreateBudget(t.Context(), budget.Budget{
				Name: "shop", Scope: budget.Scope{Services: []string{"shop"}},
				MonthlyAmountMicros: 1e12, Currency: "EUR", PricePerMillionMicros: 1e6, Mode: budget.AlertOnly,
			}); err != nil {
				t.Fatal(err)
			}
			requests := func() (float64, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				u, err := view.Usage(ctx, "shop", time.Now())
				if err != nil {
					return 0, err
				}
				n, _ := u.Totals()
				return n, nil
			}

			cp.createRule(t, &pb.Rule{Name: "shop-ha", Priority: 1, ServiceName: "shop", ReservoirSize: 1000, FixedRate: 0})
			s := newSampler(t, cp.addr, sampler.WithReportInterval(200*time.Millisecond))
			runLoad(t, s, 100)
			waitFor(t, deadline, "rule and quota", func() bool {
				e := explain(s)
				return e.Rule == "shop-ha" && e.Reason == sampler.ReasonReservoir
			})
			waitFor(t, deadline, "usage counted", func() bool { n, err := requests(); return err == nil && n > 0 })

			edit := func(what string, reservoir int64, fixedRate float64) {
				t.Helper()
				limit := time.Now().Add(failoverDeadline)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err := cp.rules.UpdateRule(ctx, &pb.UpdateRuleRequest{
						Rule:       &pb.Rule{Name: "shop-ha", ReservoirSize: reservoir, FixedRate: fixedRate},
						UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"reservoir_size", "fixed_rate"}},
					})
					cancel()
					if err == nil {
						return
					}
					// Unavailable while the failover lasts; an earlier try
					// may have landed without its answer, which the next
					// try (no etag) simply applies again.
					if status.Code(err) != codes.Unavailable || time.Now().After(limit) {
						t.Fatalf("%s: %v", what, err)
					}
					time.Sleep(100 * time.Millisecond) // pacing, not synchronisation
				}
			}

			edit("edit before the failover", 0, 1)
			waitFor(t, deadline, "edit in force before the failover", func() bool {
				e := explain(s)
				return e.Rule == "shop-ha" && e.Reason == sampler.ReasonFixedRate && e.Sampled
			})

			killed := time.Now()
			failover(t)
			t.Logf("failover took %v", time.Since(killed))
			var before float64
			waitFor(t, failoverDeadline, "answer from the store after the failover", func() bool {
				n, err := requests()
				before = n
				return err == nil
			})

			edit("edit after the failover", 500, 0)
			took := waitFor(t, failoverDeadline, "edit in force after the failover, with a quota of the new reservoir", func() bool {
				e := explain(s)
				return e.Rule == "shop-ha" && e.Reason == sampler.ReasonReservoir
			})
			t.Logf("edit in force %v after it was accepted, %v after the kill", took, time.Since(killed))
			waitFor(t, failoverDeadline, fmt.Sprintf("usage counted after the failover (above %v requests)", before), func() bool {
				n, err := requests()
				return err == nil && n > before
			})
		})
	}
}
