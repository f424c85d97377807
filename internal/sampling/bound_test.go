package sampling

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

// honestStep is one report of an honest client that samples its quota
// exactly: it takes its counts at take (real time) over the interval since
// its last take, and a replica whose clock reads real time plus skew
// handles them at arrive.
type honestStep struct {
	take, arrive time.Duration // since the test's start
	skew         time.Duration
}

// TestBoundNeverCutsHonestReports follows honest clients' chains of claims
// through what the fault suite does to them: a replica whose clock is
// ahead or behind the one that made the last claim, a report held back by
// a store outage or a replica's death (sent again until it is taken), with
// the report after it. Before claims recorded the end of the time their counts
// covered, a report's time was the time since its claim was handed out on
// the replica's clock: the report after an outage covered a second, not the
// outage; one reaching a replica two intervals behind, 100 ms.
func TestBoundNeverCutsHonestReports(t *testing.T) {
	// Reports every 10 s (the default interval), from a client granted
	// four traces a second: the slack of a few traces does not hide a cut.
	const quota = 4.0
	s := &Core{ledger: reservoir.NewLedger(10 * time.Second)}
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	iv := 10 * time.Second // an interval
	for _, c := range []struct {
		name  string
		steps []honestStep
	}{
		{"one replica", []honestStep{{1 * iv, 1 * iv, 0}, {2 * iv, 2 * iv, 0}, {3 * iv, 3 * iv, 0}}},
		{"the next replica's clock two intervals behind", []honestStep{{1 * iv, 1 * iv, 0}, {2 * iv, 2 * iv, -2 * iv}, {3 * iv, 3 * iv, -2 * iv}}},
		{"the next replica's clock two intervals ahead, then back", []honestStep{{1 * iv, 1 * iv, 2 * iv}, {2 * iv, 2 * iv, 2 * iv}, {3 * iv, 3 * iv, 0}, {4 * iv, 4 * iv, 0}}},
		{"a report held back by a store outage of 20 intervals, and the next", []honestStep{{1 * iv, 1 * iv, 0}, {2 * iv, 22 * iv, 0}, {23 * iv, 23 * iv, 0}, {24 * iv, 24 * iv, 0}}},
		{"a report held back by a replica's death, on a replica an interval behind", []honestStep{{1 * iv, 1 * iv, 0}, {2 * iv, 4 * iv, -iv}, {5 * iv, 5 * iv, -iv}}},
		{"a client's first report four intervals late, and the next", []honestStep{{1 * iv, 5 * iv, 0}, {6 * iv, 6 * iv, 0}, {7 * iv, 7 * iv, 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var (
				prev receipt.Claim
				ok   bool
				last time.Duration // the last take
			)
			for i, st := range c.steps {
				interval := st.take - last
				last = st.take
				granted := 0.0
				if ok {
					granted = prev.Quota
				}
				d := Statistics{Rule: "r", Requests: 1000, Sampled: int64(granted * interval.Seconds()), Interval: interval, Time: t0.Add(st.take)}
				b := s.bound(&d, prev, ok, 0, t0.Add(st.arrive+st.skew))
				if got := clamp(&d, b); got != d.Sampled {
					t.Errorf("report %d (%d sampled over %v): cut to %d (bound over %v)", i, d.Sampled, interval, got, b.span)
				}
				prev, ok = receipt.Claim{Receipt: reservoir.Receipt{Quota: quota}, Issued: b.until}, true
			}
		})
	}
}

// TestBoundChainClaimsNoMoreThanItsTime: a client that says an hour in each
// report, one a second, is bounded by the time its chain spans plus the
// lead, not an hour a report.
func TestBoundChainClaimsNoMoreThanItsTime(t *testing.T) {
	s := &Core{ledger: reservoir.NewLedger(time.Second)}
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	prev := receipt.Claim{Receipt: reservoir.Receipt{Quota: 10}, Issued: t0}
	var covered time.Duration
	const reports = 20
	for i := 1; i <= reports; i++ {
		d := Statistics{Rule: "r", Requests: 1e6, Sampled: 1e6, Interval: time.Hour}
		b := s.bound(&d, prev, true, 0, t0.Add(time.Duration(i)*time.Second))
		covered += b.span
		if !b.until.After(prev.Issued) {
			t.Fatalf("report %d: the chain's end %v is not after the last one %v: the guard would refuse its receipt", i, b.until, prev.Issued)
		}
		prev.Issued = b.until
	}
	if most := reports*time.Second + s.maxLead(); covered > most {
		t.Errorf("%d reports a second apart, each saying an hour, covered %v, want at most %v", reports, covered, most)
	}
}

// failingOnce fails the first RecordReports call as unavailable, then lets
// the store take the rest.
type failingOnce struct {
	*memstore.Store
	failed atomic.Bool
}

func (f *failingOnce) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("down: %w: %w", store.ErrUnavailable, store.ErrNotApplied)
	}
	return f.Store.RecordReports(ctx, b)
}

// TestClampCountedOncePerRecordedReport: a numbered report that the store
// failed comes again; its cut counts once, when it is recorded. Before, it
// counted on each attempt, so that the metric said more was cut than the
// budget missed.
func TestClampCountedOncePerRecordedReport(t *testing.T) {
	ctx := context.Background()
	mem, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	r := rules.Rule{Name: "r", Priority: 1, ServiceName: "shop", ReservoirSize: 1}
	if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := New(Options{Catalog: cat, Store: &failingOnce{Store: mem}, Logger: discardLogger(), Registerer: reg, Interval: time.Second})
	t.Cleanup(s.Close)

	// A new client claims 100 sampled of 100 requests over a second: it
	// may have borrowed one or two.
	rep := Report{Client: "c", Service: "shop", Seq: 7, Statistics: []Statistics{{Rule: "r", Requests: 100, Sampled: 100, Interval: time.Second}}}
	var cut float64
	for attempt := range 2 {
		_, err := s.Report(ctx, rep, s.Tokens())
		if attempt == 0 && !errors.Is(err, store.ErrUnavailable) || attempt == 1 && err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		got := metricValue(t, s.reports.clamped.WithLabelValues("over_bound"))
		if attempt == 0 && got != 0 {
			t.Errorf("a report the store failed counted %v traces cut, want 0: it comes again", got)
		}
		cut = got
	}
	u, err := mem.Usage(ctx, store.FleetUsage, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	recorded := float64(u.Rules["r"].Sampled)
	if recorded <= 0 || recorded+cut != 100 {
		t.Errorf("recorded %v and counted %v cut, want them to add up to the 100 claimed", recorded, cut)
	}
}
