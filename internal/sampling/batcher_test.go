package sampling

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
)

// flakyLedger is a LedgerStore that fails while down (with an error that
// says nothing was applied, or, when unsure, one that does not, the call
// having been applied if lands) and records the usage of the calls it
// applies, each Key once.
type flakyLedger struct {
	mu     sync.Mutex
	down   bool
	unsure bool
	lands  bool
	// failResends fails that many calls of held usage (calls without
	// rates) as unsure, even while the store is up.
	failResends int
	refuse      bool // every call fails with an error that is no outage
	keys        map[string]bool
	seqs        map[string]uint64 // the highest seq applied per client
	usage       []store.UsageIncrement
	downSince   []time.Time // of every call with rates
}

func (f *flakyLedger) RecordReports(_ context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(b.Rates) > 0 {
		f.downSince = append(f.downSince, b.DownSince)
	}
	if f.refuse {
		return nil, errors.New("refused: bad usage")
	}
	if len(b.Rates) == 0 && f.failResends > 0 {
		f.failResends--
		return nil, fmt.Errorf("%w: timed out", store.ErrUnavailable)
	}
	switch {
	case f.down && !f.unsure:
		return nil, fmt.Errorf("%w: %w: connection refused", store.ErrUnavailable, store.ErrNotApplied)
	case f.down && !f.lands:
		return nil, fmt.Errorf("%w: timed out", store.ErrUnavailable)
	}
	if b.Key == "" || !f.keys[b.Key] {
		f.usage = append(f.usage, b.Usage...)
		for _, sq := range b.Sequenced {
			if sq.Seq > f.seqs[sq.Client] {
				if f.seqs == nil {
					f.seqs = map[string]uint64{}
				}
				f.seqs[sq.Client] = sq.Seq
				f.usage = append(f.usage, sq.Usage...)
			}
		}
	}
	if b.Key != "" {
		if f.keys == nil {
			f.keys = map[string]bool{}
		}
		f.keys[b.Key] = true
	}
	if f.down {
		return nil, fmt.Errorf("%w: timed out after it was applied", store.ErrUnavailable)
	}
	return make([]store.RateResult, len(b.Rates)), nil
}

func (f *flakyLedger) set(down, unsure, lands bool) {
	f.mu.Lock()
	f.down, f.unsure, f.lands = down, unsure, lands
	f.mu.Unlock()
}

// sampledBy sums the sampled counts the store took, by budget.
func (f *flakyLedger) sampledBy() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := map[string]int64{}
	for _, u := range f.usage {
		got[u.Budget] += u.Sampled
	}
	return got
}

var (
	nov    = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	update = []store.RateUpdate{{Rule: "r"}}
)

func usageOf(budget string, at time.Time, sampled int64) []store.UsageIncrement {
	return []store.UsageIncrement{{Budget: budget, Month: at, Hour: 10, Rule: "r", Requests: 10 * sampled, Sampled: sampled}}
}

// TestBatcherHoldsStreamUsage: while the store takes nothing, the usage of
// carried reports is summed by budget, month, hour and rule up to a limit,
// the rest counted as dropped; uncarried (unary) usage is not kept; once a
// batch goes through, what was held follows in a call of its own.
func TestBatcherHoldsStreamUsage(t *testing.T) {
	led := &flakyLedger{down: true}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	b.maxHeld = 2
	defer b.close()
	ctx := context.Background()
	for _, r := range []struct {
		usage []store.UsageIncrement
		carry bool
	}{
		{usage: usageOf("a", nov, 1), carry: true},
		{usage: usageOf("a", nov.Add(time.Minute), 2), carry: true}, // the same month and hour: summed
		{usage: usageOf("b", nov, 4)},                               // unary: its client reports again
		{usage: usageOf("c", nov, 8), carry: true},
		{usage: usageOf("d", nov, 16), carry: true}, // past the limit of two: dropped
	} {
		if _, err := b.record(ctx, update, r.usage, r.carry, reportSeq{}); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("store down: %v", err)
		}
	}
	if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 2 || dropped != 1 {
		t.Errorf("held %v, dropped %v; want 2 and 1 (the one past the limit)", held, dropped)
	}
	led.set(false, false, false)
	if _, err := b.record(ctx, update, usageOf("e", nov, 32), true, reportSeq{}); err != nil {
		t.Fatal(err)
	}
	// The held usage follows that batch; one more report waits for it.
	if _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
		t.Fatal(err)
	}
	if got := led.sampledBy(); len(got) != 3 || got["a"] != 3 || got["c"] != 8 || got["e"] != 32 {
		t.Errorf("the store got %v, want a:3 c:8 e:32", got)
	}
	if held := metricValue(t, b.held); held != 0 {
		t.Errorf("still held: %v", held)
	}
}

// TestBatcherNeverHoldsNumberedUsage: the usage of a numbered stream
// report that the store did not take (surely or perhaps) is not held: its
// client sends the report again, and the store bills it once by its seq.
func TestBatcherNeverHoldsNumberedUsage(t *testing.T) {
	for _, unsure := range []bool{false, true} {
		t.Run(fmt.Sprint("unsure=", unsure), func(t *testing.T) {
			led := &flakyLedger{down: true, unsure: unsure, lands: unsure}
			b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
			defer b.close()
			ctx := context.Background()
			seq := reportSeq{client: "c", seq: 7}
			if _, err := b.record(ctx, update, usageOf("a", nov, 1), true, seq); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("store down: %v", err)
			}
			if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 0 || dropped != 0 {
				t.Errorf("held %v, dropped %v; want neither: the client sends the report again", held, dropped)
			}
			led.set(false, false, false)
			for range 2 { // sent again, then once more (its answer lost)
				if _, err := b.record(ctx, update, usageOf("a", nov, 1), true, seq); err != nil {
					t.Fatal(err)
				}
			}
			if got := led.sampledBy(); got["a"] != 1 {
				t.Errorf("the store billed %v, want the report once", got)
			}
		})
	}
}

// TestBatcherResendsUnsureUsageUnderItsKey: the usage of a batch that
// failed without the store saying it changed nothing is sent again under the
// batch's key once the store is back, so it counts once whether the first
// try landed or not; past the window in which the store remembers the key,
// it is dropped instead.
func TestBatcherResendsUnsureUsageUnderItsKey(t *testing.T) {
	for _, tt := range []struct {
		name        string
		lands       bool
		failResends int           // resends that fail again
		after       time.Duration // from the failed try to the store's return
		want        int64         // x's sampled count in the store
		dropped     float64
	}{
		{"landed", true, 0, time.Second, 64, 0},
		{"not landed", false, 0, time.Second, 64, 0},
		{"not landed, first resend fails too", false, 1, time.Second, 64, 0},
		{"landed, first resend fails too", true, 1, time.Second, 64, 0},
		{"landed, back too late", true, 0, unsureWindow, 64, 1},
		{"not landed, back too late", false, 0, unsureWindow, 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			led := &flakyLedger{down: true, unsure: true, lands: tt.lands}
			clock := &fakeClock{t: nov}
			b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), clock.Now, discardLogger(), prometheus.NewRegistry())
			defer b.close()
			ctx := context.Background()
			if _, err := b.record(ctx, update, usageOf("x", nov, 64), true, reportSeq{}); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("store timing out: %v", err)
			}
			if held := metricValue(t, b.held); held != 1 {
				t.Errorf("held %v, want 1", held)
			}
			clock.Add(tt.after)
			led.mu.Lock()
			led.down, led.failResends = false, tt.failResends
			led.mu.Unlock()
			if _, err := b.record(ctx, update, usageOf("e", nov, 32), true, reportSeq{}); err != nil {
				t.Fatal(err)
			}
			// The held usage follows each batch until it goes through; the
			// next reports wait for it.
			for range 1 + tt.failResends {
				if _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
					t.Fatal(err)
				}
			}
			if got := led.sampledBy(); got["x"] != tt.want || got["e"] != 32 {
				t.Errorf("the store got %v, want x:%d e:32", got, tt.want)
			}
			if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 0 || dropped != tt.dropped {
				t.Errorf("held %v, dropped %v; want 0 and %v", held, dropped, tt.dropped)
			}
		})
	}
}

// TestBatcherDropsRefusedUsage: usage the store refuses (no outage) is not
// held: sending it again would not help.
func TestBatcherDropsRefusedUsage(t *testing.T) {
	led := &flakyLedger{refuse: true}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	if _, err := b.record(context.Background(), update, usageOf("a", nov, 1), true, reportSeq{}); err == nil {
		t.Fatal("the store refused, yet the report went through")
	}
	if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 0 || dropped != 1 {
		t.Errorf("held %v, dropped %v; want 0 and 1", held, dropped)
	}
}

// TestBatcherUnsureUsageIsSummedAndCountsOnce: a report's usage whose store
// call may have landed is held summed by budget, month, hour and rule, and
// sent again under the call's key; so is usage held while the store was down
// whose own call then times out. Either way it counts once.
func TestBatcherUnsureUsageIsSummedAndCountsOnce(t *testing.T) {
	for _, tt := range []struct {
		name        string
		unsure      bool // the report's call times out; else it surely fails
		failResends int  // calls of held usage that time out afterwards
	}{
		{"the report's call times out", true, 0},
		{"the held usage's own call times out", false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			led := &flakyLedger{down: true, unsure: tt.unsure}
			b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
			defer b.close()
			ctx := context.Background()
			twice := append(usageOf("a", nov, 1), usageOf("a", nov.Add(time.Minute), 2)...)
			if _, err := b.record(ctx, update, twice, true, reportSeq{}); err == nil {
				t.Fatal("store down, yet the report went through")
			}
			if held := metricValue(t, b.held); held != 1 {
				t.Errorf("held %v, want 1: one budget, month, hour and rule", held)
			}
			led.mu.Lock()
			led.down, led.failResends = false, tt.failResends
			led.mu.Unlock()
			// Each batch that goes through is followed by the held usage;
			// the next report waits for that.
			for range 2 + tt.failResends {
				if _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
					t.Fatal(err)
				}
			}
			if got := led.sampledBy(); got["a"] != 3 {
				t.Errorf("the store got %v, want a:3", got)
			}
			if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 0 || dropped != 0 {
				t.Errorf("held %v, dropped %v; want 0 and 0", held, dropped)
			}
		})
	}
}

// TestBatcherTriesHeldUsageAtStop: usage still held when the server stops,
// the store being back, is recorded then; if the store is still down, it is
// counted as dropped.
func TestBatcherTriesHeldUsageAtStop(t *testing.T) {
	for _, back := range []bool{true, false} {
		led := &flakyLedger{down: true}
		b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
		if _, err := b.record(context.Background(), update, usageOf("a", nov, 1), true, reportSeq{}); err == nil {
			t.Fatal("store down, yet the report went through")
		}
		led.set(!back, false, false)
		b.close()
		if got, dropped := led.sampledBy()["a"], metricValue(t, b.dropped); back && (got != 1 || dropped != 0) || !back && (got != 0 || dropped != 1) {
			t.Errorf("store back %v: recorded %d, dropped %v", back, got, dropped)
		}
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

// TestBatcherNamesTheLastOutage: the batches of the intervals after an
// outage of the store name its start (store.ReportBatch.DownSince), so that
// the ledgers it left unwritten keep counting the quotas renewed during it;
// an outage shorter than an interval leaves no such gap, and is not named.
func TestBatcherNamesTheLastOutage(t *testing.T) {
	led := &flakyLedger{down: true}
	clock := &fakeClock{t: nov}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), clock.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	ctx := context.Background()
	record := func() time.Time {
		t.Helper()
		b.record(ctx, update, nil, true, reportSeq{})
		led.mu.Lock()
		defer led.mu.Unlock()
		return led.downSince[len(led.downSince)-1]
	}
	start := clock.Now()
	record()
	clock.Add(25 * time.Second)
	record() // still down
	led.set(false, false, false)
	clock.Add(time.Second)
	if got := record(); !got.Equal(start) {
		t.Errorf("first batch after the outage: DownSince %v, want %v", got, start)
	}
	clock.Add(39 * time.Second)
	if got := record(); !got.Equal(start) {
		t.Errorf("39 s after: DownSince %v, want %v", got, start)
	}
	clock.Add(2 * time.Second)
	if got := record(); !got.IsZero() {
		t.Errorf("41 s after: DownSince %v, want none", got)
	}
	// A blip.
	led.set(true, false, false)
	record()
	led.set(false, false, false)
	clock.Add(5 * time.Second)
	if got := record(); !got.IsZero() {
		t.Errorf("after a 5 s outage: DownSince %v, want none", got)
	}
}

// gateLedger holds its first call until released, then fails it as a call
// that timed out would.
type gateLedger struct {
	entered, release chan struct{}
	calls            atomic.Int32
}

func (g *gateLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if g.calls.Add(1) == 1 {
		close(g.entered)
		<-g.release
		return nil, fmt.Errorf("%w: timed out", store.ErrUnavailable)
	}
	return make([]store.RateResult, len(b.Rates)), nil
}

// TestBatcherFailsReportsQueuedBehindAFailedBatch: when the store fails a
// batch, the reports that waited behind it fail at once, as not sent, with
// their usage held: a frozen store costs a report one store deadline, not
// one per batch ahead of it, so a stream answers before its client's quota
// lapses.
func TestBatcherFailsReportsQueuedBehindAFailedBatch(t *testing.T) {
	led := &gateLedger{entered: make(chan struct{}), release: make(chan struct{})}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	ctx := context.Background()
	errs := make(chan error, 3)
	go func() {
		_, err := b.record(ctx, update, usageOf("a", nov, 1), true, reportSeq{})
		errs <- err
	}()
	<-led.entered
	for _, name := range []string{"b", "c"} {
		go func() {
			_, err := b.record(ctx, update, usageOf(name, nov, 2), true, reportSeq{})
			errs <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(b.queue) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the reports did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	close(led.release)
	var notSent int
	for range 3 {
		err := <-errs
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("report: %v, want ErrUnavailable", err)
		}
		if errors.Is(err, store.ErrNotApplied) {
			notSent++
		}
	}
	if n := led.calls.Load(); n != 1 || notSent != 2 {
		t.Errorf("%d store calls, %d reports failed as not sent; want 1 call and the 2 queued reports not sent", n, notSent)
	}
	// a's usage may have landed, b's and c's surely did not: all are held.
	if held := metricValue(t, b.held); held != 3 {
		t.Errorf("held %v, want 3", held)
	}
}
