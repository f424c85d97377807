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
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BenchmarkStreamReport is what a stream's report costs the server besides
// gRPC and the stream loop: report (checks, receipts, the batcher and the
// embedded store) and withBudgets, from many streams at once as in
// bench/reportcost, each with a Held keeper and ReportBuffers of its own.
//
//	go test -run '^$' -bench StreamReport -benchmem -count 10 ./internal/sampling
func BenchmarkStreamReport(b *testing.B) {
	for _, c := range []struct{ rules, budgets int }{{1, 0}, {10, 0}, {1, 3}} {
		name := fmt.Sprintf("rules=%d", c.rules)
		if c.budgets > 0 {
			name += fmt.Sprintf("/budgets=%d", c.budgets)
		}
		n := c.rules
		b.Run(name, func(b *testing.B) {
			s, names := benchService(b, n, c.budgets)
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

// benchService is the core as server.New wires it, on the embedded
// store, with n rules and budgets enforcing on the service (not deciding
// yet: each covers every report, none lowers a rate).
func benchService(b *testing.B, n, budgets int) (*Core, []string) {
	b.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
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
