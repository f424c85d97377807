package server

import (
	"context"
	"fmt"
	"sync"
	"time"

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
	timeout  time.Duration
	maxBatch int // rate updates per store call
	queue    chan *pendingReport

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type pendingReport struct {
	updates []store.RateUpdate
	usage   []store.UsageIncrement
	rates   []float64
	err     error
	done    chan struct{}
}

func newReportBatcher(st LedgerStore, ledger reservoir.Ledger, now func() time.Time) *reportBatcher {
	b := &reportBatcher{
		store:    st,
		ledger:   ledger,
		now:      now,
		timeout:  5 * time.Second,
		maxBatch: 4096,
		queue:    make(chan *pendingReport, 1024),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go b.run()
	return b
}

// record sends one report's updates to the store with the next batch and
// returns each update's fleet rate.
func (b *reportBatcher) record(ctx context.Context, updates []store.RateUpdate, usage []store.UsageIncrement) ([]float64, error) {
	p := &pendingReport{updates: updates, usage: usage, done: make(chan struct{})}
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
	var usage []store.UsageIncrement
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
	for _, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.rates, rates = rates[:len(p.updates):len(p.updates)], rates[len(p.updates):]
		}
		close(p.done)
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

// close stops the batcher after the batch in flight; later reports fail.
func (b *reportBatcher) close() {
	b.once.Do(func() { close(b.stop) })
	<-b.done
}
