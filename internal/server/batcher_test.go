package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
)

// flakyLedger is a LedgerStore that fails while down and records the usage
// of the calls it takes.
type flakyLedger struct {
	mu    sync.Mutex
	down  bool
	usage []store.UsageIncrement
}

func (f *flakyLedger) RecordReports(_ context.Context, b store.ReportBatch) ([]float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, store.ErrUnavailable
	}
	f.usage = append(f.usage, b.Usage...)
	return make([]float64, len(b.Rates)), nil
}

func (f *flakyLedger) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// TestBatcherHoldsStreamUsage: while the store fails, the usage of carried
// reports is summed by budget, month, hour and rule up to a limit, the rest
// counted as dropped; uncarried (unary) usage is not kept; the first batch
// the store takes brings what was held.
func TestBatcherHoldsStreamUsage(t *testing.T) {
	led := &flakyLedger{down: true}
	reg := prometheus.NewRegistry()
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), reg)
	b.maxCarried = 2
	defer b.close()
	ctx := context.Background()
	nov := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	update := []store.RateUpdate{{Rule: "r"}}
	use := func(budget string, at time.Time, sampled int64) []store.UsageIncrement {
		return []store.UsageIncrement{{Budget: budget, Month: at, Hour: 10, Rule: "r", Requests: 10 * sampled, Sampled: sampled}}
	}
	for _, r := range []struct {
		usage []store.UsageIncrement
		carry bool
	}{
		{use("a", nov, 1), true},
		{use("a", nov.Add(time.Minute), 2), true}, // the same month and hour: summed
		{use("b", nov, 4), false},                 // unary: its client reports again
		{use("c", nov, 8), true},
		{use("d", nov, 16), true}, // past the limit of two: dropped
	} {
		if _, err := b.record(ctx, update, r.usage, r.carry); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("store down: %v", err)
		}
	}
	if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 2 || dropped != 1 {
		t.Errorf("held %v, dropped %v; want 2 and 1", held, dropped)
	}
	led.setDown(false)
	if _, err := b.record(ctx, update, use("e", nov, 32), true); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, u := range led.usage {
		got[u.Budget] += u.Sampled
	}
	if len(got) != 3 || got["a"] != 3 || got["c"] != 8 || got["e"] != 32 {
		t.Errorf("the store got %v, want a:3 c:8 e:32", got)
	}
	if held := metricValue(t, b.held); held != 0 {
		t.Errorf("still held: %v", held)
	}
}

func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
