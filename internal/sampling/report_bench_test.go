package sampling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BenchmarkStreamReport is what a stream's report costs the server besides
// gRPC and the stream loop: report (checks, receipts, the batcher and the
// embedded store) and withBudgets, from many streams at once as in
// bench/reportcost, each with a Held keeper and ReportBuffers of its own.
//
//	go test -run '^$' -bench StreamReport -benchmem -count 10 ./internal/sampling
//
// The cases on Redis (a redis-server of their own, as in the tests) add
// what group commit costs there: most reports wait behind a batch at the
// store, and go-redis encodes and parses each batch's script call.
func BenchmarkStreamReport(b *testing.B) {
	for _, c := range []struct {
		rules, budgets int
		redis          bool
	}{{1, 0, false}, {10, 0, false}, {1, 3, false}, {1, 0, true}, {10, 0, true}} {
		name := fmt.Sprintf("rules=%d", c.rules)
		if c.budgets > 0 {
			name += fmt.Sprintf("/budgets=%d", c.budgets)
		}
		if c.redis {
			name += "/redis"
		}
		n := c.rules
		b.Run(name, func(b *testing.B) {
			s, names := benchService(b, benchStore(b, c.redis), n, c.budgets)
			ctx := context.Background()
			var ids atomic.Int64
			b.SetParallelism(100) // 200 streams on two cores
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				client := fmt.Sprintf("bench-%d", ids.Add(1))
				keeper := receipt.NewHeld().Over(s.tokens)
				bufs := new(ReportBuffers)
				for pb.Next() {
					docs := benchDocs(names)
					base, err := s.Report(ctx, Report{Client: client, Service: "bench", Statistics: docs, Carry: true, Buffers: bufs}, keeper)
					if err != nil {
						b.Error(err)
						return
					}
					if ts := s.WithBudgets(base, "bench"); len(ts.Targets) != n {
						b.Errorf("%d targets, want %d", len(ts.Targets), n)
						return
					}
				}
			})
			// The wall-clock time per report depends on how the batcher's
			// round trips overlap; the CPU time is the cost.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkSessionReport is BenchmarkStreamReport's rules=1 case through
// a Session, as a stream's handler calls it (Record, Answer, RuleSet):
// what the session adds to the core's report.
//
//	go test -run '^$' -bench 'StreamReport/^rules=1$|SessionReport' -benchmem ./internal/sampling
func BenchmarkSessionReport(b *testing.B) {
	s, names := benchService(b, benchStore(b, false), 1, 0)
	ctx := context.Background()
	var ids atomic.Int64
	b.SetParallelism(100)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		sess := s.Session(Hello{Client: fmt.Sprintf("bench-%d", ids.Add(1)), Service: "bench"})
		if _, changed := sess.RuleSet(ctx); !changed {
			b.Error("no first rule set")
			return
		}
		var seq uint64
		for pb.Next() {
			seq++
			a := sess.Answer(sess.Record(ctx, &Report{Statistics: benchDocs(names), Seq: seq}))
			if a.Err != nil || len(a.Targets.Targets) != 1 {
				b.Errorf("report %d: %v, %d targets", seq, a.Err, len(a.Targets.Targets))
				return
			}
			if rs, changed := sess.RuleSet(ctx); changed {
				b.Errorf("report %d: rule set %v sent again", seq, rs)
				return
			}
		}
	})
}

// processCPU returns the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDocs is one report, as the SDK makes it.
func benchDocs(names []string) []Statistics {
	now := time.Now()
	docs := make([]Statistics, len(names))
	for i, name := range names {
		docs[i] = Statistics{Rule: name, Requests: 100, Sampled: 2, Time: now, Interval: 10 * time.Second}
	}
	return docs
}

// benchStore is the embedded store, or with redis, a Redis store on a
// redis-server of the benchmark's own.
func benchStore(b *testing.B, redis bool) benchBackend {
	b.Helper()
	if !redis {
		st, err := memstore.New(memstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	srv := redistest.Start(b)
	st, err := redisstore.New(context.Background(), srv.Client(b), redisstore.Options{Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchBackend is what the benchmark's core and catalog need of a store.
type benchBackend interface {
	LedgerStore
	catalog.Source
	catalog.BudgetSource
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	CreateBudget(ctx context.Context, bg budget.Budget) (budget.Budget, error)
}

// benchService is the core as server.New wires it, on st, with n rules
// and budgets enforcing on the service (not deciding yet: each covers
// every report, none lowers a rate).
func benchService(b *testing.B, st benchBackend, n, budgets int) (*Core, []string) {
	b.Helper()
	ctx := context.Background()
	var names []string
	for i := range n {
		r := rules.Rule{Name: fmt.Sprintf("r%02d", i), Priority: int32(100 + i), ServiceName: "bench", URLPath: fmt.Sprintf("/r%d/*", i), FixedRate: 0.01, ReservoirSize: 100}
		if _, err := st.CreateRule(ctx, r.Normalize(), "bench"); err != nil {
			b.Fatal(err)
		}
		names = append(names, r.Name)
	}
	for i := range budgets {
		bg := budget.Budget{Name: fmt.Sprintf("b%d", i), Scope: budget.Scope{Services: []string{"other", "be*"}}, Mode: budget.Enforce,
			MonthlyAmountMicros: 1_000_000_000, PricePerMillionMicros: 1_000_000}
		if _, err := st.CreateBudget(ctx, bg); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := errors.Join(cat.Load(ctx), cat.LoadBudgets(ctx)); err != nil {
		b.Fatal(err)
	}
	if got := len(cat.CurrentBudgets().Budgets); got != budgets {
		b.Fatalf("%d budgets loaded, want %d", got, budgets)
	}
	s := New(Options{Catalog: cat, Store: st, Logger: log})
	b.Cleanup(s.Close)
	return s, names
}
