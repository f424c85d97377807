package redisstore_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// BenchmarkReshard lays out again, from 3 shards to 4, a Cluster grown
// from 3 masters to 4 whose report path holds the ledgers of `rules` rules
// and the seqs of `clients` clients: what a growth costs, the time from
// the fence to the new list (the report path waits meanwhile) and the
// whole reshard. Each round puts the 3-shard list back first (not timed)
// and reshards with a new store, so that every round moves the same keys.
func BenchmarkReshard(b *testing.B) {
	for _, size := range [][2]int{{100, 1000}, {1000, 10000}} {
		rules, clients := size[0], size[1]
		b.Run(fmt.Sprintf("rules=%d/clients=%d", rules, clients), func(b *testing.B) {
			cluster := redistest.StartCluster(b)
			ctx := b.Context()
			client := newClient(b, cluster.URL())
			s := newStore(b, client, redisstore.Options{Prefix: "bench"})
			now := time.Now()
			l := reservoir.Ledger{Interval: time.Hour, Retain: 3}
			for i := 0; i < rules; i += 100 {
				batch := store.ReportBatch{Now: now, Ledger: l}
				for r := i; r < min(i+100, rules); r++ {
					batch.Rates = append(batch.Rates, store.RateUpdate{Rule: "rule-" + strconv.Itoa(r), Client: true, Reservoir: 100,
						Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 1}})
				}
				if _, err := s.RecordReports(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < clients; i += 500 {
				batch := store.ReportBatch{Now: now}
				for c := i; c < min(i+500, clients); c++ {
					batch.Sequenced = append(batch.Sequenced, store.SequencedUsage{Client: "client-" + strconv.Itoa(c), Seq: 1,
						Usage: []store.UsageIncrement{{Budget: "team", Month: now, Hour: 1, Rule: "rule-0", Requests: 1}}})
				}
				if _, err := s.RecordReports(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			list, err := client.Get(ctx, "{bench}:shards").Result()
			if err != nil {
				b.Fatal(err)
			}
			old := s.ShardTagList()
			cluster.AddMaster(b)
			var fenced time.Duration
			var moved redisstore.Reshard
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if i > 0 {
					if err := client.Set(ctx, "{bench}:shards", list, 0).Err(); err != nil {
						b.Fatal(err)
					}
					for _, tag := range append(old, moved.Tags...) {
						if err := client.Del(ctx, tag+":fence").Err(); err != nil {
							b.Fatal(err)
						}
					}
				}
				fresh := newStore(b, client, redisstore.Options{Prefix: "bench"})
				if _, err := fresh.ShardCoverage(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := fresh.Reshard(ctx, false)
				if err != nil || res.To != 1 {
					b.Fatalf("reshard: %+v, %v", res, err)
				}
				fenced += res.Fenced
				moved = res
			}
			b.StopTimer()
			b.ReportMetric(float64(fenced.Milliseconds())/float64(b.N), "fenced-ms/op")
			b.ReportMetric(float64(moved.Ledgers), "ledgers-moved")
			b.ReportMetric(float64(moved.Seqs), "seqs-moved")
		})
	}
}
