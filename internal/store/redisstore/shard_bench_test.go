package redisstore_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// BenchmarkRecordReportsShards runs report batches as the server's batcher
// makes them (60 numbered reports of 10 rules each, from 60 of 200 clients,
// with the fleet's usage) on one node, in one slot and spread over 3 and 16:
// what sharding costs Redis, apart from Cluster mode, as the shards a batch
// touches grow. Besides ns/op it reports
// Redis's CPU per report (INFO cpu).
func BenchmarkRecordReportsShards(b *testing.B) {
	for _, shards := range []int{1, 3, 16} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			srv := redistest.Start(b)
			c := srv.Client(b)
			s := newStore(b, c, redisstore.Options{Shards: shards})
			const reports, rules, clients = 60, 10, 200
			l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
			seqs := make([]uint64, clients)
			ctx := b.Context()
			before := redisCPU(b, c)
			b.ResetTimer()
			for i := range b.N {
				now := time.Now()
				batch := store.ReportBatch{Now: now, Ledger: l}
				for r := range reports {
					client := (i*reports + r) % clients
					seqs[client]++
					var usage []store.UsageIncrement
					for k := range rules {
						rule := "rule-" + strconv.Itoa(k)
						batch.Rates = append(batch.Rates, store.RateUpdate{Rule: rule, Client: true, Reservoir: 100,
							Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 5, Sampled: 1}})
						usage = append(usage, store.UsageIncrement{Budget: store.FleetUsage, Month: now, Hour: 1, Rule: rule, Service: "svc", Requests: 50, Sampled: 1})
					}
					batch.Sequenced = append(batch.Sequenced, store.SequencedUsage{Client: "client-" + strconv.Itoa(client), Seq: seqs[client], Usage: usage})
				}
				if _, err := s.RecordReports(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric((redisCPU(b, c)-before)*1e6/float64(b.N*reports), "redis-µs/report")
		})
	}
}

// redisCPU is the CPU seconds Redis has used (INFO cpu).
func redisCPU(tb testing.TB, c *redis.Client) float64 {
	tb.Helper()
	info, err := c.Info(tb.Context(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatal(err)
			}
			sum += f
		}
	}
	return sum
}
