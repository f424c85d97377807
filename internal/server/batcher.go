package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
)

// LedgerStore is what the sampling service needs from a store.
type LedgerStore interface {
	RecordReports(ctx context.Context, b store.ReportBatch) ([]float64, error)
}

// reportBatcher group-commits client reports: while one batch is at the
// store, the reports that arrive queue up and go together in the next one.
// Each report still costs at most one round trip of waiting, and the store
// sees one call per batch instead of one per report, which is what lets one
// replica take tens of thousands of reports a second.
type reportBatcher struct {
	store    LedgerStore
	ledger   reservoir.Ledger
	now      func() time.Time
	log      *slog.Logger
	timeout  time.Duration
	maxBatch int // rate updates per store call
	queue    chan *pendingReport

	// carried holds the budget usage of stream reports that the store did
	// not take, summed by budget, month, hour and rule, for the next batch:
	// a stream's client counts its report as sent, and the spend in it
	// would be lost. (A unary client is told, and reports its counts again.)
	// Only run touches it.
	carried    map[usageKey]*store.UsageIncrement
	maxCarried int
	held       prometheus.Gauge
	dropped    prometheus.Counter

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type usageKey struct {
	budget, rule string
	month        int64 // unix seconds of the month's start
	hour         int
}

type pendingReport struct {
	updates []store.RateUpdate
	usage   []store.UsageIncrement
	carry   bool // keep usage for a later batch if the store fails
	rates   []float64
	err     error
	done    chan struct{}
}

func newReportBatcher(st LedgerStore, ledger reservoir.Ledger, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) *reportBatcher {
	b := &reportBatcher{
		store:      st,
		ledger:     ledger,
		now:        now,
		log:        log,
		timeout:    5 * time.Second,
		maxBatch:   4096,
		queue:      make(chan *pendingReport, 1024),
		carried:    map[usageKey]*store.UsageIncrement{},
		maxCarried: 100_000,
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_usage_held",
			Help: "Budget usage entries (budget, month, hour, rule) from stream reports that the store has not taken yet; they go with the next batch.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_usage_dropped_total",
			Help: "Budget usage entries lost: held past the limit while the store was unreachable, or at shutdown.",
		}),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	reg.MustRegister(b.held, b.dropped)
	go b.run()
	return b
}

// record sends one report's updates to the store with the next batch and
// returns each update's fleet rate. With carry, the report's usage is held
// for a later batch if the store fails.
func (b *reportBatcher) record(ctx context.Context, updates []store.RateUpdate, usage []store.UsageIncrement, carry bool) ([]float64, error) {
	p := &pendingReport{updates: updates, usage: usage, carry: carry, done: make(chan struct{})}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		return nil, store.ErrUnavailable
	}
	select {
	case <-p.done:
		return p.rates, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *reportBatcher) run() {
	defer close(b.done)
	var batch []*pendingReport
	for {
		batch = batch[:0]
		select {
		case p := <-b.queue:
			batch = append(batch, p)
		case <-b.stop:
			b.failQueued()
			return
		}
		n := len(batch[0].updates)
	drain:
		for n < b.maxBatch {
			select {
			case p := <-b.queue:
				batch = append(batch, p)
				n += len(p.updates)
			default:
				break drain
			}
		}
		b.flush(batch, n)
	}
}

func (b *reportBatcher) flush(batch []*pendingReport, n int) {
	updates := make([]store.RateUpdate, 0, n)
	usage := make([]store.UsageIncrement, 0, len(b.carried))
	for _, u := range b.carried {
		usage = append(usage, *u)
	}
	for _, p := range batch {
		updates = append(updates, p.updates...)
		usage = append(usage, p.usage...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	rates, err := b.store.RecordReports(ctx, store.ReportBatch{Now: b.now(), Ledger: b.ledger, Rates: updates, Usage: usage})
	cancel()
	if err == nil && len(rates) != len(updates) {
		err = fmt.Errorf("store returned %d fleet rates for %d updates", len(rates), len(updates))
	}
	if err == nil {
		clear(b.carried)
	} else {
		for _, p := range batch {
			if p.carry {
				b.carry(p.usage)
			}
		}
	}
	b.held.Set(float64(len(b.carried)))
	for _, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.rates, rates = rates[:len(p.updates):len(p.updates)], rates[len(p.updates):]
		}
		close(p.done)
	}
}

// carry adds usage to what is held for the next batch.
func (b *reportBatcher) carry(usage []store.UsageIncrement) {
	for _, u := range usage {
		month := budget.MonthStart(u.Month)
		k := usageKey{budget: u.Budget, rule: u.Rule, month: month.Unix(), hour: u.Hour}
		switch held := b.carried[k]; {
		case held != nil:
			held.Requests += u.Requests
			held.Sampled += u.Sampled
		case len(b.carried) < b.maxCarried:
			u.Month = month
			b.carried[k] = &u
		default:
			b.dropped.Inc()
		}
	}
}

func (b *reportBatcher) failQueued() {
	for {
		select {
		case p := <-b.queue:
			p.err = store.ErrUnavailable
			close(p.done)
		default:
			return
		}
	}
}

// close stops the batcher after the batch in flight; later reports fail, and
// usage still held is lost (and logged).
func (b *reportBatcher) close() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
	if n := len(b.carried); n > 0 {
		b.dropped.Add(float64(n))
		b.log.Warn("stopping with budget usage the store never took: it is lost", "entries", n)
	}
}
