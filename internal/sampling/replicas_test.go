package sampling

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// recordingStore fails the next failures calls as unavailable (changing
// nothing), and keeps the rate updates of the batches it passes on.
type recordingStore struct {
	*memstore.Store
	mu       sync.Mutex
	failures int
	updates  []store.RateUpdate
}

func (r *recordingStore) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	r.mu.Lock()
	if r.failures > 0 {
		r.failures--
		r.mu.Unlock()
		return nil, fmt.Errorf("down: %w: %w", store.ErrUnavailable, store.ErrNotApplied)
	}
	r.updates = append(r.updates, b.Rates...)
	r.mu.Unlock()
	return r.Store.RecordReports(ctx, b)
}

// failNext makes the next n calls fail, and forgets the updates kept.
func (r *recordingStore) failNext(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures, r.updates = n, nil
}

func (r *recordingStore) kept() []store.RateUpdate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.RateUpdate(nil), r.updates...)
}

// replicaPair is two replicas' report pipelines on one store, each with its
// own replay guard and metrics, on one fake clock.
type replicaPair struct {
	clk  *clocktest.Clock
	mem  *memstore.Store
	a, b *Core
	st   *recordingStore // b's store: a's is mem itself
}

func newReplicaPair(t *testing.T) *replicaPair {
	t.Helper()
	ctx := context.Background()
	clk := clocktest.New(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	mem, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	r := rules.Rule{Name: "r", Priority: 1, ServiceName: "shop", ReservoirSize: 10}
	if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	p := &replicaPair{clk: clk, mem: mem, st: &recordingStore{Store: mem}}
	p.a = New(Options{Catalog: cat, Store: mem, Now: clk.Now, Interval: time.Second, Logger: discardLogger(), Registerer: prometheus.NewRegistry()})
	p.b = New(Options{Catalog: cat, Store: p.st, Now: clk.Now, Interval: time.Second, Logger: discardLogger(), Registerer: prometheus.NewRegistry()})
	t.Cleanup(p.a.Close)
	t.Cleanup(p.b.Close)
	return p
}

// cut is what both replicas counted as cut.
func (p *replicaPair) cut(t *testing.T) float64 {
	t.Helper()
	return metricValue(t, p.a.reports.clamped.WithLabelValues("over_bound")) + metricValue(t, p.b.reports.clamped.WithLabelValues("over_bound"))
}

// sampledRecorded is the fleet's sampled traces of rule r in the store.
func (p *replicaPair) sampledRecorded(t *testing.T) int64 {
	t.Helper()
	u, err := p.mem.Usage(context.Background(), store.FleetUsage, p.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	return u.Rules["r"].Sampled
}

// TestCutCountedOnlyWhereBilled: a numbered report that was recorded, and
// cut, by one replica, whose answer was lost, comes again to another; the
// store bills it nothing then, and that replica counts no cut. Before, both
// counted theirs, so that the replicas said twice what budgets missed.
func TestCutCountedOnlyWhereBilled(t *testing.T) {
	ctx := context.Background()
	p := newReplicaPair(t)
	// A new client claims 100 sampled of 100 requests over a second,
	// without a receipt: most of it is cut, by both replicas alike.
	rep := Report{Client: "c", Service: "shop", Seq: 7, Statistics: []Statistics{{Rule: "r", Requests: 100, Sampled: 100, Interval: time.Second, Time: p.clk.Now()}}}
	for _, core := range []*Core{p.a, p.b} {
		if _, err := core.Report(ctx, rep, core.Tokens()); err != nil {
			t.Fatal(err)
		}
	}
	recorded := p.sampledRecorded(t)
	if cut := p.cut(t); recorded <= 0 || float64(recorded)+cut != 100 {
		t.Errorf("recorded %d and counted %v cut, want them to add up to the 100 claimed", recorded, cut)
	}
}
