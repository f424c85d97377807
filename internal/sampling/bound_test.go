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
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// honestStep is one report of an honest client that samples its quota
// exactly: it takes its counts at take (real time) over the interval since
// its last take, and a replica whose clock reads real time plus skew
// handles them at arrive and grants quota (0: the test's usual one); the
// answer reaches the client late after that, and it samples on the quota
// it held until then.
type honestStep struct {
	take, arrive time.Duration // since the test's start
	skew         time.Duration
	quota        float64
	late         time.Duration
}

// TestBoundNeverCutsHonestReports follows honest clients' chains of claims
// through what the fault suite does to them: a replica whose clock is
// ahead or behind the one that made the last claim, a report held back by
// a store outage or a replica's death (sent again until it is taken), with
// the report after it, and a quota that falls while the answer saying so is
// on its way. Before claims recorded the end of the time their counts
// covered, a report's time was the time since its claim was handed out on
// the replica's clock: the report after an outage covered a second, not the
// outage; one reaching a replica two intervals behind, 100 ms. Before
// claims recorded their overlap, the report after a fleet's first quota (R,
// then R/n) was cut by what the client sampled on R until R/n reached it.
func TestBoundNeverCutsHonestReports(t *testing.T) {
	// Reports every 10 s (the default interval), from a client granted
	// four traces a second: the slack of a few traces does not hide a cut.
	const quota = 4.0
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	iv := 10 * time.Second // an interval
	ms := time.Millisecond
	for _, c := range []struct {
		name     string
		interval time.Duration
		steps    []honestStep
	}{
		{"one replica", iv, []honestStep{{take: 1 * iv, arrive: 1 * iv}, {take: 2 * iv, arrive: 2 * iv}, {take: 3 * iv, arrive: 3 * iv}}},
		{"the next replica's clock two intervals behind", iv, []honestStep{{take: 1 * iv, arrive: 1 * iv}, {take: 2 * iv, arrive: 2 * iv, skew: -2 * iv}, {take: 3 * iv, arrive: 3 * iv, skew: -2 * iv}}},
		{"the next replica's clock two intervals ahead, then back", iv, []honestStep{{take: 1 * iv, arrive: 1 * iv, skew: 2 * iv}, {take: 2 * iv, arrive: 2 * iv, skew: 2 * iv}, {take: 3 * iv, arrive: 3 * iv}, {take: 4 * iv, arrive: 4 * iv}}},
		{"a report held back by a store outage of 20 intervals, and the next", iv, []honestStep{{take: 1 * iv, arrive: 1 * iv}, {take: 2 * iv, arrive: 22 * iv}, {take: 23 * iv, arrive: 23 * iv}, {take: 24 * iv, arrive: 24 * iv}}},
		{"a report held back by a replica's death, on a replica an interval behind", iv, []honestStep{{take: 1 * iv, arrive: 1 * iv}, {take: 2 * iv, arrive: 4 * iv, skew: -iv}, {take: 5 * iv, arrive: 5 * iv, skew: -iv}}},
		{"a client's first report four intervals late, and the next", iv, []honestStep{{take: 1 * iv, arrive: 5 * iv}, {take: 6 * iv, arrive: 6 * iv}, {take: 7 * iv, arrive: 7 * iv}}},
		// The fault suite's first seconds (R = 20, 30 instances, 1 s
		// reports) on a loaded machine: the first report gets all of R,
		// the next R/30, which reaches the client 400 ms after its counts
		// end.
		{"a first quota of R, then R/30 late", time.Second, []honestStep{
			{take: 800 * ms, arrive: 900 * ms, quota: 20}, {take: 2100 * ms, arrive: 2300 * ms, quota: 0.9, late: 200 * ms}, {take: 3200 * ms, arrive: 3300 * ms, quota: 0.8}, {take: 4200 * ms, arrive: 4300 * ms, quota: 0.8}}},
		// A first quota capped at twice the client's rate
		// (reservoir.FirstQuota), then its share, far above it, late;
		// then lower again.
		{"a capped first quota, then a larger share late", time.Second, []honestStep{
			{take: 800 * ms, arrive: 900 * ms, quota: 0.5}, {take: 2100 * ms, arrive: 2300 * ms, quota: 20, late: 400 * ms}, {take: 3200 * ms, arrive: 3300 * ms, quota: 0.8, late: 200 * ms}, {take: 4200 * ms, arrive: 4300 * ms, quota: 0.8}}},
		{"a quota falling after a store outage, answered late", iv, []honestStep{
			{take: 1 * iv, arrive: 1 * iv, quota: 40}, {take: 2 * iv, arrive: 8 * iv, quota: 1, late: iv / 2}, {take: 9 * iv, arrive: 9 * iv, quota: 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Core{ledger: reservoir.NewLedger(c.interval), interval: c.interval}
			// in force[i] is the quota the client samples on from
			// since[i] until since[i+1].
			var (
				prev    receipt.Claim
				ok      bool
				last    time.Duration // the last take
				inForce []float64
				since   []time.Duration
				sampled = func(from, to time.Duration) float64 {
					var n float64
					for i, q := range inForce {
						end := to
						if i+1 < len(since) {
							end = min(end, since[i+1])
						}
						if start := max(from, since[i]); end > start {
							n += q * (end - start).Seconds()
						}
					}
					return n
				}
			)
			for i, st := range c.steps {
				interval := st.take - last
				d := Statistics{Rule: "r", Requests: 1000, Sampled: int64(sampled(last, st.take)), Interval: interval, Time: t0.Add(st.take)}
				last = st.take
				now := t0.Add(st.arrive + st.skew)
				b := s.bound(&d, prev, ok, 0, 0, now)
				if got := clamp(&d, b); got != d.Sampled {
					t.Errorf("report %d (%d sampled over %v): cut to %d (bound over %v)", i, d.Sampled, interval, got, b.span)
				}
				granted := st.quota
				if granted == 0 {
					granted = quota
				}
				held := 0.0
				if ok {
					held = prev.Quota
				}
				prev, ok = receipt.Claim{Receipt: reservoir.Receipt{Quota: granted}, Issued: b.until, Overlap: s.overlap(held, granted, b.until, now)}, true
				inForce, since = append(inForce, granted), append(since, st.arrive+st.late)
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
		b := s.bound(&d, prev, true, 0, 0, t0.Add(time.Duration(i)*time.Second))
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

// TestBoundFirstReportAtTheRulesRate: a client's first report (no claim)
// sampled at the rule's own fixed rate, its rule set having come before a
// budget cut the rate to nothing, is not cut; a client with a claim is
// bounded by the rates its claim and the budget give, as before. Before,
// a first report after the cut was bounded by the rate in force: a
// budget cut at its first traffic cut the honest first reports of every
// other instance.
func TestBoundFirstReportAtTheRulesRate(t *testing.T) {
	s := &Core{ledger: reservoir.NewLedger(10 * time.Second), interval: 10 * time.Second}
	now := time.Date(2026, 12, 2, 12, 0, 1, 0, time.UTC)
	for _, c := range []struct {
		name    string
		claim   bool
		sampled int64
		want    int64
	}{
		{"first report at the rule's rate", false, 50, 50},
		{"a claim at the cut rate", true, 50, 5},
	} {
		// 1,000 requests over a second at 0.05; the budget's factor 0.
		d := Statistics{Rule: "r", Requests: 1000, Sampled: c.sampled, Interval: time.Second, Time: now}
		prev := receipt.Claim{Issued: now.Add(-time.Second)}
		if got := clamp(&d, s.bound(&d, prev, c.claim, 0, 0.05, now)); got != c.want {
			t.Errorf("%s: %d sampled cut to %d, want %d", c.name, c.sampled, got, c.want)
		}
	}
}
