package sampling

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/reservoir"
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
		if _, _, err := b.record(ctx, update, r.usage, r.carry, reportSeq{}); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("store down: %v", err)
		}
	}
	if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 2 || dropped != 1 {
		t.Errorf("held %v, dropped %v; want 2 and 1 (the one past the limit)", held, dropped)
	}
	led.set(false, false, false)
	if _, _, err := b.record(ctx, update, usageOf("e", nov, 32), true, reportSeq{}); err != nil {
		t.Fatal(err)
	}
	// The held usage follows that batch; one more report waits for it.
	if _, _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
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
			if _, _, err := b.record(ctx, update, usageOf("a", nov, 1), true, seq); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("store down: %v", err)
			}
			if held, dropped := metricValue(t, b.held), metricValue(t, b.dropped); held != 0 || dropped != 0 {
				t.Errorf("held %v, dropped %v; want neither: the client sends the report again", held, dropped)
			}
			led.set(false, false, false)
			for range 2 { // sent again, then once more (its answer lost)
				if _, _, err := b.record(ctx, update, usageOf("a", nov, 1), true, seq); err != nil {
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
			clock := clocktest.New(nov)
			b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), clock.Now, discardLogger(), prometheus.NewRegistry())
			defer b.close()
			ctx := context.Background()
			if _, _, err := b.record(ctx, update, usageOf("x", nov, 64), true, reportSeq{}); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("store timing out: %v", err)
			}
			if held := metricValue(t, b.held); held != 1 {
				t.Errorf("held %v, want 1", held)
			}
			clock.Add(tt.after)
			led.mu.Lock()
			led.down, led.failResends = false, tt.failResends
			led.mu.Unlock()
			if _, _, err := b.record(ctx, update, usageOf("e", nov, 32), true, reportSeq{}); err != nil {
				t.Fatal(err)
			}
			// The held usage follows each batch until it goes through; the
			// next reports wait for it.
			for range 1 + tt.failResends {
				if _, _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
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
	if _, _, err := b.record(context.Background(), update, usageOf("a", nov, 1), true, reportSeq{}); err == nil {
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
			if _, _, err := b.record(ctx, update, twice, true, reportSeq{}); err == nil {
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
				if _, _, err := b.record(ctx, update, nil, true, reportSeq{}); err != nil {
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
		if _, _, err := b.record(context.Background(), update, usageOf("a", nov, 1), true, reportSeq{}); err == nil {
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
	clock := clocktest.New(nov)
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
		_, _, err := b.record(ctx, update, usageOf("a", nov, 1), true, reportSeq{})
		errs <- err
	}()
	<-led.entered
	for _, name := range []string{"b", "c"} {
		go func() {
			_, _, err := b.record(ctx, update, usageOf(name, nov, 2), true, reportSeq{})
			errs <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	queued := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue)
	}
	for queued() < 2 {
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

// heldLedger holds its first call until released; every call goes through,
// and the number of rate updates in each is recorded.
type heldLedger struct {
	entered, release chan struct{}
	mu               sync.Mutex
	sizes            []int
}

func (h *heldLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	h.mu.Lock()
	h.sizes = append(h.sizes, len(b.Rates))
	first := len(h.sizes) == 1
	h.mu.Unlock()
	if first {
		close(h.entered)
		<-h.release
	}
	return make([]store.RateResult, len(b.Rates)), nil
}

func (h *heldLedger) calls() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.sizes)
}

// waitQueued waits until n reports are queued behind the batch in flight.
func waitQueued(t *testing.T, b *reportBatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := len(b.queue)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reports queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatcherGroupsReportsQueuedBehindABatch: the reports that arrive while
// a batch is at the store go together in the next call, sent by one of
// their callers, and each gets its own results; a caller that gives up
// while queued takes its report out.
func TestBatcherGroupsReportsQueuedBehindABatch(t *testing.T) {
	led := &heldLedger{entered: make(chan struct{}), release: make(chan struct{})}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	type answer struct {
		n   int // updates sent
		got int // results received
		err error
	}
	answers := make(chan answer, 5)
	record := func(ctx context.Context, n int) {
		res, _, err := b.record(ctx, make([]store.RateUpdate, n), nil, true, reportSeq{})
		answers <- answer{n, len(res), err}
	}
	go record(context.Background(), 1)
	<-led.entered
	gaveUp, giveUp := context.WithCancel(context.Background())
	go record(gaveUp, 7)
	waitQueued(t, b, 1)
	for n := 2; n <= 4; n++ {
		go record(context.Background(), n)
	}
	waitQueued(t, b, 4)
	giveUp()
	waitQueued(t, b, 3)
	close(led.release)
	for range 5 {
		a := <-answers
		switch {
		case a.n == 7 && !errors.Is(a.err, context.Canceled):
			t.Errorf("the report whose caller gave up: %v, want context.Canceled", a.err)
		case a.n != 7 && (a.err != nil || a.got != a.n):
			t.Errorf("report of %d updates: %d results, %v", a.n, a.got, a.err)
		}
	}
	if got, want := led.calls(), []int{1, 2 + 3 + 4}; !slices.Equal(got, want) {
		t.Errorf("store calls of %v updates, want %v", got, want)
	}
}

// TestBatcherCloseWaitsForTheBatchInFlight: close lets the batch at the
// store finish, fails the reports queued behind it, and every later one.
func TestBatcherCloseWaitsForTheBatchInFlight(t *testing.T) {
	led := &heldLedger{entered: make(chan struct{}), release: make(chan struct{})}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, _, err := b.record(context.Background(), update, nil, true, reportSeq{})
			errs <- err
		}()
		if i == 0 {
			<-led.entered
		}
	}
	waitQueued(t, b, 1)
	closed := make(chan struct{})
	go func() {
		b.close()
		close(closed)
	}()
	for {
		b.mu.Lock()
		stopped := b.stopped
		b.mu.Unlock()
		if stopped {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-closed:
		t.Fatal("close returned with a batch at the store")
	default:
	}
	close(led.release)
	<-closed
	var failed int
	for range 2 {
		if err := <-errs; errors.Is(err, store.ErrUnavailable) {
			failed++
		} else if err != nil {
			t.Errorf("report: %v", err)
		}
	}
	if failed != 1 {
		t.Errorf("%d reports failed, want the one queued", failed)
	}
	if _, _, err := b.record(context.Background(), update, nil, true, reportSeq{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("report after close: %v, want ErrUnavailable", err)
	}
	if got := led.calls(); len(got) != 1 {
		t.Errorf("%d store calls, want the one in flight", len(got))
	}
}

// slowLedger answers every call after a pause, so that callers queue.
type slowLedger struct{ calls atomic.Int32 }

func (s *slowLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	s.calls.Add(1)
	time.Sleep(50 * time.Microsecond)
	return make([]store.RateResult, len(b.Rates)), nil
}

// TestBatcherManyCallersSomeGivingUp: callers that report at once, some of
// them giving up at random moments (while queued, while handed the lead,
// while their batch is at the store), all return; every report whose caller
// waited is answered with its own results; the lead is never lost.
func TestBatcherManyCallersSomeGivingUp(t *testing.T) {
	b := newReportBatcher(&slowLedger{}, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	var wg sync.WaitGroup
	var answered, gaveUp atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%3 == 0 {
					go cancel()
				}
				n := 1 + (g+i)%3
				res, _, err := b.record(ctx, make([]store.RateUpdate, n), nil, true, reportSeq{})
				cancel()
				switch {
				case errors.Is(err, context.Canceled):
					gaveUp.Add(1)
				case err != nil || len(res) != n:
					t.Errorf("report of %d updates: %d results, %v", n, len(res), err)
				default:
					answered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if answered.Load()+gaveUp.Load() != 1600 || answered.Load() == 0 {
		t.Errorf("%d answered, %d gave up, of 1600", answered.Load(), gaveUp.Load())
	}
}

// TestBatcherLeadHandedToACallerGivingUp: a caller handed the lead as it
// gives up still sends the batch it leads (other callers wait for it), then
// gives the lead up. (Handed and cancelled at once, its wait sees either
// first; both ways must lead.)
func TestBatcherLeadHandedToACallerGivingUp(t *testing.T) {
	for range 20 {
		led := &slowLedger{}
		b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
		b.mu.Lock()
		b.leading = true // as if another caller led
		b.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, _, err := b.record(ctx, update, nil, true, reportSeq{})
			done <- err
		}()
		waitQueued(t, b, 1)
		b.mu.Lock()
		p := b.queue[0]
		p.lead = true
		signal(p.wake)
		cancel()
		b.mu.Unlock()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("report: %v", err)
		}
		b.mu.Lock()
		leading, queued := b.leading, len(b.queue)
		b.mu.Unlock()
		if leading || queued != 0 || led.calls.Load() != 1 {
			t.Fatalf("after it led: leading %v, %d queued, %d store calls; want false, 0, 1", leading, queued, led.calls.Load())
		}
		b.close()
	}
}

// deadlineLedger records what is left of each call's deadline; its first
// call waits for its context to end.
type deadlineLedger struct {
	mu   sync.Mutex
	left []time.Duration // -1: no deadline
}

func (d *deadlineLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	d.mu.Lock()
	d.left = append(d.left, left)
	first := len(d.left) == 1
	d.mu.Unlock()
	if first {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
	}
	return make([]store.RateResult, len(b.Rates)), nil
}

// TestBatcherStoreCallsHaveTheirDeadline: every store call has a deadline
// of at most the batcher's timeout (a shared one has most of it left), and
// the calls after one that ran out get a new one.
func TestBatcherStoreCallsHaveTheirDeadline(t *testing.T) {
	led := &deadlineLedger{}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	b.timeout = 50 * time.Millisecond
	if _, _, err := b.record(context.Background(), update, nil, true, reportSeq{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its deadline: %v", err)
	}
	b.timeout = time.Hour
	for range 3 {
		if _, _, err := b.record(context.Background(), update, nil, true, reportSeq{}); err != nil {
			t.Fatal(err)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if left := led.left[0]; left < 0 || left > 50*time.Millisecond {
		t.Errorf("first call: %v left of its deadline, want at most 50ms", left)
	}
	for i, left := range led.left[1:] {
		if left <= 30*time.Minute || left > time.Hour {
			t.Errorf("call %d: %v left of its deadline, want most of an hour", i+1, left)
		}
	}
}

// loggedBatch is what a store call was sent, copied.
type loggedBatch struct {
	Rules     []string
	Usage     []string // budgets
	Sequenced []string // client:seq
}

// logLedger logs each call's batch, and holds a call while holdNext is set
// until released.
type logLedger struct {
	holdNext         atomic.Bool
	entered, release chan struct{}
	mu               sync.Mutex
	log              []loggedBatch
	// seenOdd: the store says it saw the numbered reports of odd seq.
	seenOdd bool
}

func (l *logLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	var lb loggedBatch
	for _, u := range b.Rates {
		lb.Rules = append(lb.Rules, u.Rule)
	}
	for _, u := range b.Usage {
		lb.Usage = append(lb.Usage, u.Budget)
	}
	for _, sq := range b.Sequenced {
		lb.Sequenced = append(lb.Sequenced, fmt.Sprintf("%s:%d", sq.Client, sq.Seq))
	}
	if b.Seen != nil && len(b.Seen) != len(b.Sequenced) {
		return nil, fmt.Errorf("%d entries in Seen for %d numbered reports", len(b.Seen), len(b.Sequenced))
	}
	if l.seenOdd && b.Seen != nil {
		// Only the true entries are written: what the store leaves is
		// what the batcher handed it.
		for i, sq := range b.Sequenced {
			if sq.Seq%2 == 1 {
				b.Seen[i] = true
			}
		}
	}
	l.mu.Lock()
	l.log = append(l.log, lb)
	l.mu.Unlock()
	if l.holdNext.CompareAndSwap(true, false) {
		l.entered <- struct{}{}
		<-l.release
	}
	return make([]store.RateResult, len(b.Rates)), nil
}

// TestBatcherGathersBatchesInReusedSlices: batches of several reports are
// gathered in slices kept from one batch to the next; each batch holds its
// own reports and nothing of the one before, and the reports' own usage is
// left as it was.
func TestBatcherGathersBatchesInReusedSlices(t *testing.T) {
	led := &logLedger{entered: make(chan struct{}), release: make(chan struct{})}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	type report struct {
		rule  string
		seq   uint64
		usage []store.UsageIncrement
	}
	mk := func(rule string, seq uint64) report {
		return report{rule, seq, usageOf("budget-"+rule, nov, 1)}
	}
	// batch sends lead alone, held at the store while the others queue
	// behind it in order, and returns when all are answered.
	batch := func(lead report, queued ...report) {
		t.Helper()
		errs := make(chan error, 1+len(queued))
		send := func(r report) {
			_, _, err := b.record(context.Background(), []store.RateUpdate{{Rule: r.rule}}, r.usage, true, reportSeq{"client-" + r.rule, r.seq})
			errs <- err
		}
		led.holdNext.Store(true)
		go send(lead)
		<-led.entered
		for i, r := range queued {
			go send(r)
			waitQueued(t, b, i+1)
		}
		led.release <- struct{}{}
		for range 1 + len(queued) {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	l1, l2 := mk("l1", 0), mk("l2", 0)
	a, bb, c, d, e := mk("a", 0), mk("b", 1), mk("c", 0), mk("d", 0), mk("e", 4)
	batch(l1, a, bb, c)
	batch(l2, d, e)
	want := []loggedBatch{
		{Rules: []string{"l1"}, Usage: []string{"budget-l1"}},
		{Rules: []string{"a", "b", "c"}, Usage: []string{"budget-a", "budget-c"}, Sequenced: []string{"client-b:1"}},
		{Rules: []string{"l2"}, Usage: []string{"budget-l2"}},
		{Rules: []string{"d", "e"}, Usage: []string{"budget-d"}, Sequenced: []string{"client-e:4"}},
	}
	led.mu.Lock()
	got := slices.Clone(led.log)
	led.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("batches sent (-want +got):\n%s", diff)
	}
	for _, r := range []report{l1, a, bb, c, l2, d, e} {
		if diff := cmp.Diff(usageOf("budget-"+r.rule, nov, 1), r.usage); diff != "" {
			t.Errorf("report %s's own usage changed (-before +after):\n%s", r.rule, diff)
		}
	}
}

// TestBatcherSeenByNumberedReport: each numbered report's caller is told
// what the store said of that report (store.ReportBatch.Seen), in batches
// gathered in reused slices, where a report after one the store saw must
// not inherit its answer.
func TestBatcherSeenByNumberedReport(t *testing.T) {
	led := &logLedger{entered: make(chan struct{}), release: make(chan struct{}), seenOdd: true}
	b := newReportBatcher(led, reservoir.NewLedger(10*time.Second), time.Now, discardLogger(), prometheus.NewRegistry())
	defer b.close()
	type report struct {
		rule string
		seq  uint64
	}
	// batch sends lead alone, held at the store while the others queue
	// behind it in order, and returns what each caller was told.
	batch := func(lead report, queued ...report) map[string]bool {
		t.Helper()
		type answer struct {
			rule string
			seen bool
			err  error
		}
		answers := make(chan answer, 1+len(queued))
		send := func(r report) {
			_, seen, err := b.record(context.Background(), []store.RateUpdate{{Rule: r.rule}}, usageOf("budget-"+r.rule, nov, 1), true, reportSeq{"client-" + r.rule, r.seq})
			answers <- answer{r.rule, seen, err}
		}
		led.holdNext.Store(true)
		go send(lead)
		<-led.entered
		for i, r := range queued {
			go send(r)
			waitQueued(t, b, i+1)
		}
		led.release <- struct{}{}
		got := map[string]bool{}
		for range 1 + len(queued) {
			a := <-answers
			if a.err != nil {
				t.Fatal(a.err)
			}
			got[a.rule] = a.seen
		}
		return got
	}
	got := batch(report{"l1", 0}, report{"a", 1}, report{"b", 0}, report{"c", 3}, report{"d", 5}, report{"i", 11})
	for k, v := range batch(report{"l2", 7}, report{"e", 2}, report{"f", 9}, report{"g", 4}, report{"h", 6}) {
		got[k] = v
	}
	want := map[string]bool{
		"l1": false, "a": true, "b": false, "c": true, "d": true, "i": true,
		"l2": true, "e": false, "f": true, "g": false, "h": false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("seen per report (-want +got):\n%s", diff)
	}
}
