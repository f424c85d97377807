package sampling

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// LedgerStore is what the sampling service needs from a store.
type LedgerStore interface {
	reportStore
	ReceiptKeys(ctx context.Context, now time.Time) (receipt.KeySet, error)
}

// reportStore is what the batcher needs.
type reportStore interface {
	RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error)
}

// reportBatcher group-commits client reports: while one batch is at the
// store, the reports that arrive queue up and go together in the next one.
// Each report still costs at most one round trip of waiting, and the store
// sees one call per batch instead of one per report, which is what lets one
// replica take tens of thousands of reports a second.
//
// It has no goroutine of its own (flat combining): the caller whose report
// finds no batch in flight leads, sending its report with whatever queued
// meanwhile; when its own is answered, it hands the lead to the caller of
// the oldest report still queued, which sends the next batch. A report that
// finds the store idle so goes out from its caller's goroutine, with no
// hand-off to wake another, and a busy store still sees one call per batch.
// Everything below mu's fields is the leader's alone.
type reportBatcher struct {
	store    reportStore
	ledger   reservoir.Ledger
	now      func() time.Time
	log      *slog.Logger
	timeout  time.Duration
	maxBatch int // rate updates per store call

	mu sync.Mutex
	// queue holds the reports waiting for the next batch, each of a caller
	// still waiting (one that gives up takes its report out), so it is
	// bounded by the calls and streams the server admits.
	queue   []*pendingReport
	leading bool       // a caller is sending batches
	stopped bool       // close was called: reports fail
	idle    *sync.Cond // on mu: leading ended

	batch []*pendingReport // the batch being sent, reused
	// sendCtx carries the deadline of the store calls made until renewAt
	// (send); cancelSend releases it.
	sendCtx    context.Context
	cancelSend context.CancelFunc
	renewAt    time.Time

	// carried holds the budget usage of unnumbered stream reports that the
	// store surely did not take (store.ErrNotApplied), summed by budget,
	// month, hour and rule, until a batch goes through: such a client
	// counts its report as sent, and the spend in it would be lost. (A
	// unary client is told, and reports its counts again; a numbered report
	// is not acknowledged, and comes again.) Only run touches it.
	carried map[usageKey]*store.UsageIncrement
	// unsure holds the usage of stream reports in batches that failed
	// without the store saying they changed nothing: they may have landed.
	// Each is sent again under its batch's Key, which the store applies at
	// most once, until the store's memory of the key runs out.
	unsure  []unsureBatch
	maxHeld int // entries, carried and unsure together
	held    prometheus.Gauge
	dropped prometheus.Counter
	// storeDown, if set, is told when a batch goes through: the store
	// answers again.
	storeDown *condition.Condition

	// downSince is when the store call that began the current run of
	// failures was sent (zero while the store answers); outage is the last
	// run of failures that ended, which the batches of the next intervals
	// name (store.ReportBatch.DownSince). Only run touches them.
	downSince time.Time
	outage    struct{ from, to time.Time }
	keys      batchKeys
	sent      sentBuffers

	once sync.Once
}

type usageKey struct {
	budget, rule, service string
	month                 int64 // unix seconds of the month's start
	hour                  int
}

type unsureBatch struct {
	key   string
	sent  time.Time // when the batch was first sent
	usage []store.UsageIncrement
}

// unsureWindow is how long after its first try an unsure batch is sent
// again: within the store's memory of its Key (store.KeyWindow), with a
// minute to spare for the time a call spends on the way.
const unsureWindow = store.KeyWindow - time.Minute

type pendingReport struct {
	updates []store.RateUpdate
	usage   []store.UsageIncrement
	seq     reportSeq
	carry   bool // hold the usage for later if the store took nothing
	results []store.RateResult
	// seen: the store had recorded this numbered report before, and
	// billed nothing now (store.ReportBatch.Seen).
	seen bool
	err  error
	// answered: results or err are set (the leader's alone).
	answered bool
	// wake, made for a caller that waits (or kept from the caller's last
	// report, see ReportBuffers), is signalled once (signal): when the
	// report is answered or, with lead set (under mu), when its caller is
	// to lead.
	wake chan struct{}
	lead bool
}

// reportSeq is a client's report number (pb.Report.seq); seq 0: none.
type reportSeq struct {
	client string
	seq    uint64
}

func newReportBatcher(st reportStore, ledger reservoir.Ledger, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) *reportBatcher {
	b := &reportBatcher{
		store:  st,
		ledger: ledger,
		now:    now,
		log:    log,
		// A report waits for the batch at the store, then for its own:
		// with a frozen store, two of these must fit in what is left of
		// a stream's quota after its next report (which comes within 1.1
		// intervals of the last answer; the quota lasts two), so that the
		// stream can answer with the last quotas renewed before they
		// lapse. A failed batch fails the reports queued behind it at
		// once, so in practice it is one.
		timeout:  min(5*time.Second, ledger.Interval/2),
		maxBatch: 4096,
		carried:  map[usageKey]*store.UsageIncrement{},
		maxHeld:  100_000,
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_usage_held",
			Help: "Budget usage entries (budget, month, hour, rule) from unnumbered stream reports that the store has not taken, or may not have taken (sent again under their call's key); they are sent once a batch goes through.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_usage_dropped_total",
			Help: "Budget usage entries (budget, month, hour, rule, per report) of stream reports lost, or perhaps lost: over the limit while the store was unreachable, refused, still held at shutdown, or in a store call that failed without saying it changed nothing and could not be sent again within the store's memory of the call.",
		}),
	}
	b.idle = sync.NewCond(&b.mu)
	reg.MustRegister(b.held, b.dropped)
	return b
}

// record sends one report's updates to the store with the next batch and
// returns each update's fleet rate and quota. The usage of a numbered
// report (seq) is billed only if the store has not recorded that report of
// its client before; seen says it had. With carry, the usage of a report without a number is
// held for later if the store says it took nothing. A numbered report is
// never held: its client keeps it until it is acknowledged, and sends it
// again.
func (b *reportBatcher) record(ctx context.Context, updates []store.RateUpdate, usage []store.UsageIncrement, carry bool, seq reportSeq) (results []store.RateResult, seen bool, err error) {
	return b.recordPending(ctx, &pendingReport{updates: updates, usage: usage, seq: seq, carry: carry})
}

// recordPending is record, of a report whose caller made p (with its
// updates, usage, seq and carry set, and nothing else), so that p can
// share an allocation with the report's slices. p is the batcher's until
// recordPending returns, and may be written after, if the caller gave up.
func (b *reportBatcher) recordPending(ctx context.Context, p *pendingReport) (results []store.RateResult, seen bool, err error) {
	p.carry = p.carry && p.seq.seq == 0
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		if p.carry {
			b.dropped.Add(float64(len(p.usage)))
		}
		return nil, false, store.ErrUnavailable
	}
	b.queue = append(b.queue, p)
	if !b.leading {
		b.leading = true
		b.mu.Unlock()
		b.lead(p)
		return p.results, p.seen, p.err
	}
	if p.wake == nil {
		p.wake = make(chan struct{}, 1)
	}
	b.mu.Unlock()
	select {
	case <-p.wake:
	case <-ctx.Done():
		b.mu.Lock()
		lead := p.lead
		if !lead {
			// Taken out if not sent yet; in a batch at the store, it
			// goes without its caller.
			if i := slices.Index(b.queue, p); i >= 0 {
				b.queue = slices.Delete(b.queue, i, i+1)
			}
		}
		b.mu.Unlock()
		if lead {
			// The batch it leads holds other callers' reports.
			b.lead(p)
		}
		return nil, false, ctx.Err()
	}
	if p.lead {
		b.lead(p)
	}
	return p.results, p.seen, p.err
}

// lead sends batches until own's is answered, then hands the lead on to the
// caller of the oldest report queued, if any. The caller that leads waits
// for no one else's batch but those queued ahead of its own report, and
// for the usage held (flushHeld), which follows a batch that goes through.
func (b *reportBatcher) lead(own *pendingReport) {
	for {
		b.mu.Lock()
		switch {
		case b.stopped:
			b.failQueued(own)
			b.leading = false
			b.idle.Broadcast()
			b.mu.Unlock()
			return
		case own.answered && len(b.queue) > 0:
			next := b.queue[0]
			next.lead = true
			signal(next.wake)
			b.mu.Unlock()
			return
		case own.answered:
			b.leading = false
			b.idle.Broadcast()
			b.mu.Unlock()
			return
		}
		n := len(b.queue[0].updates)
		i := 1
		for ; i < len(b.queue) && n < b.maxBatch; i++ {
			n += len(b.queue[i].updates)
		}
		batch := append(b.batch[:0], b.queue[:i]...)
		rest := copy(b.queue, b.queue[i:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		if b.flush(batch, n, own) {
			if b.storeDown != nil {
				b.storeDown.Cleared(context.Background())
			}
			b.flushHeld()
		}
		clear(batch)
		b.batch = batch
	}
}

// signal wakes the caller waiting on wake, a channel of one slot that is
// signalled once per report: a caller that gave up leaves the signal in
// it, and its buffers are not used again (ReportBuffers.drop).
func signal(wake chan struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// answer tells p's caller that its report is answered; own's caller is the
// leader, which needs no telling.
func answer(p, own *pendingReport) {
	p.answered = true
	if p != own {
		signal(p.wake)
	}
}

// errStoreFailing fails the reports that were waiting behind a batch the
// store failed: they were not sent, and would most likely fail too, after
// as long a wait.
var errStoreFailing = fmt.Errorf("%w: %w: the store failed the batch before this report's", store.ErrUnavailable, store.ErrNotApplied)

// failQueuedAfter fails the reports queued behind a batch that failed with
// err, holding their usage as not sent. It runs before the batch's own
// reports learn of the failure, so it takes only reports that were queued
// while the batch was at the store (or did not fit in it).
func (b *reportBatcher) failQueuedAfter(err error, own *pendingReport) {
	if !errors.Is(err, store.ErrUnavailable) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failQueuedWith(errStoreFailing, own)
}

// downSinceFor returns the DownSince of a batch sent at now: the start of
// the outage it may end, or of the last one, for the intervals after it in
// which ledgers it left unwritten are first written again. An outage shorter
// than an interval leaves no gap that needs it.
func (b *reportBatcher) downSinceFor(now time.Time) time.Time {
	if !b.downSince.IsZero() {
		if now.Sub(b.downSince) < b.ledger.Interval {
			return time.Time{}
		}
		return b.downSince
	}
	o := b.outage
	if o.from.IsZero() || o.to.Sub(o.from) < b.ledger.Interval || now.Sub(o.to) > time.Duration(b.ledger.Retain+1)*b.ledger.Interval {
		return time.Time{}
	}
	return o.from
}

// noteOutcome keeps track of the runs of failed store calls.
func (b *reportBatcher) noteOutcome(sent time.Time, err error) {
	switch {
	case err == nil && !b.downSince.IsZero():
		b.outage.from, b.outage.to = b.downSince, b.now()
		b.downSince = time.Time{}
	case errors.Is(err, store.ErrUnavailable) && b.downSince.IsZero():
		b.downSince = sent
	}
}

// flush sends a batch, own's among others (the leader's), and reports
// whether the store took it.
func (b *reportBatcher) flush(batch []*pendingReport, n int, own *pendingReport) bool {
	// A batch of one, the usual one when the store keeps up, sends the
	// report's own slices, which the store only reads; a bigger one's are
	// gathered in slices kept from batch to batch (sentBuffers), as are
	// the numbered reports of any.
	multi := len(batch) > 1
	updates := batch[0].updates
	if multi {
		updates = b.sent.updates[:0]
		for _, p := range batch {
			updates = append(updates, p.updates...)
		}
	}
	var (
		usage     []store.UsageIncrement
		sequenced = b.sent.sequenced[:0]
		numbered  = b.sent.numbered[:0] // of sequenced, in order
	)
	for _, p := range batch {
		switch {
		case len(p.usage) == 0:
			// Nothing to bill: the report's seq need not be recorded.
		case p.seq.seq != 0:
			sequenced = append(sequenced, store.SequencedUsage{Client: p.seq.client, Seq: p.seq.seq, Usage: p.usage})
			numbered = append(numbered, p)
		case !multi:
			usage = p.usage
		case usage == nil:
			usage = append(b.sent.usage[:0], p.usage...)
		default:
			usage = append(usage, p.usage...)
		}
	}
	var seen []bool
	if len(sequenced) > 0 {
		// Cleared by reuse, like the rest of sentBuffers.
		seen = b.sent.seen[:0]
		if cap(seen) < len(sequenced) {
			seen = make([]bool, 0, len(sequenced))
		}
		seen = seen[:len(sequenced)]
	}
	defer func() {
		if multi {
			b.sent.updates = reuse(updates)
			if usage != nil {
				b.sent.usage = reuse(usage)
			}
		}
		b.sent.sequenced = reuse(sequenced)
		b.sent.numbered = reuse(numbered)
		if seen != nil {
			b.sent.seen = reuse(seen)
		}
	}()
	sent, key := b.now(), b.keys.next()
	results, err := b.send(store.ReportBatch{Now: sent, Ledger: b.ledger, Rates: updates, Usage: usage, Sequenced: sequenced, Seen: seen, Key: key, DownSince: b.downSinceFor(sent)})
	if err == nil && len(results) != len(updates) {
		err = fmt.Errorf("store returned %d results for %d updates", len(results), len(updates))
	}
	if err == nil {
		for i, p := range numbered {
			p.seen = seen[i]
		}
	}
	b.noteOutcome(sent, err)
	// What the store surely did not take is summed with the rest held. What
	// it may have taken is kept apart, to go again under the batch's key:
	// usage applied twice would bill twice.
	var unsure []store.UsageIncrement
	for _, p := range batch {
		switch {
		case err == nil || !p.carry:
		case errors.Is(err, store.ErrNotApplied):
			b.carry(p.usage)
		case errors.Is(err, store.ErrUnavailable):
			unsure = append(unsure, p.usage...)
		default: // refused: sending it again would not help
			b.dropped.Add(float64(len(p.usage)))
		}
	}
	b.holdUnsure(unsureBatch{key: key, sent: sent, usage: unsure})
	b.failQueuedAfter(err, own)
	for _, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.results, results = results[:len(p.updates):len(p.updates)], results[len(p.updates):]
		}
		answer(p, own)
	}
	return err == nil
}

// flushHeld sends the usage held, in calls of its own, once the store is
// back: while it is down, nothing is retried, and usage that the store
// refuses for good fails only these calls, not the reports.
func (b *reportBatcher) flushHeld() {
	if !b.resendUnsure() {
		return // the store failed again: the rest waits for the next batch
	}
	if len(b.carried) > 0 {
		usage := make([]store.UsageIncrement, 0, len(b.carried))
		for _, u := range b.carried {
			usage = append(usage, *u)
		}
		sent, key := b.now(), b.keys.next()
		_, err := b.send(store.ReportBatch{Now: sent, Usage: usage, Key: key})
		switch {
		case err == nil:
			b.log.Info("budget usage held while the store was unreachable is recorded", "entries", len(usage))
			clear(b.carried)
		case errors.Is(err, store.ErrNotApplied):
		case errors.Is(err, store.ErrUnavailable):
			// It may have landed: it goes again under its key.
			clear(b.carried)
			b.holdUnsure(unsureBatch{key: key, sent: sent, usage: usage})
		default:
			b.dropped.Add(float64(len(usage)))
			b.log.Warn("the store refused budget usage held while it was unreachable", "entries", len(usage), "err", err)
			clear(b.carried)
		}
	}
	b.held.Set(float64(b.heldEntries()))
}

// resendUnsure sends the usage of each unsure batch again under the batch's
// key: the store applies it now if the first try did not land, and changes
// nothing if it did. It stops at the first failure, so that a store that
// fails again costs the reports waiting one call, not one per batch, and
// reports whether there was none.
func (b *reportBatcher) resendUnsure() (ok bool) {
	kept := b.unsure[:0]
	failed := false
	expired := 0
	defer func() {
		if expired > 0 {
			b.log.Warn("budget usage of store calls that may have failed was not confirmed in time: it may be lost", "entries", expired)
		}
	}()
	for _, u := range b.unsure {
		switch {
		case b.now().Sub(u.sent) >= unsureWindow:
			// The store may have forgotten the key: sending it now
			// could bill twice.
			b.dropped.Add(float64(len(u.usage)))
			expired += len(u.usage)
		case failed:
			kept = append(kept, u)
		default:
			_, err := b.send(store.ReportBatch{Now: b.now(), Usage: u.usage, Key: u.key})
			switch {
			case err == nil:
			case errors.Is(err, store.ErrUnavailable):
				failed = true
				kept = append(kept, u)
			default:
				b.dropped.Add(float64(len(u.usage)))
				b.log.Warn("the store refused budget usage sent again", "entries", len(u.usage), "err", err)
			}
		}
	}
	clear(b.unsure[len(kept):])
	b.unsure = kept
	b.held.Set(float64(b.heldEntries()))
	return !failed
}

// holdUnsure keeps the usage of a batch that may have landed, summed by
// budget, month, hour and rule, within the limit of entries.
func (b *reportBatcher) holdUnsure(u unsureBatch) {
	u.usage = summed(u.usage)
	switch {
	case len(u.usage) == 0:
		return
	case b.heldEntries()+len(u.usage) > b.maxHeld:
		b.dropped.Add(float64(len(u.usage)))
		return
	case len(b.unsure) == 0:
		b.log.Warn("a store call failed and may have landed: its budget usage goes again under the call's key", "entries", len(u.usage))
	}
	b.unsure = append(b.unsure, u)
	b.held.Set(float64(b.heldEntries()))
}

// summed adds up usage by budget, month, hour, rule and service.
func summed(usage []store.UsageIncrement) []store.UsageIncrement {
	sums := map[usageKey]int{}
	var out []store.UsageIncrement
	for _, u := range usage {
		k := keyOf(&u)
		if i, ok := sums[k]; ok {
			out[i].Requests += u.Requests
			out[i].Sampled += u.Sampled
			continue
		}
		sums[k] = len(out)
		out = append(out, u)
	}
	return out
}

// keyOf is what held usage is summed by; it sets u's month to its start.
func keyOf(u *store.UsageIncrement) usageKey {
	u.Month = budget.MonthStart(u.Month)
	return usageKey{budget: u.Budget, rule: u.Rule, service: u.Service, month: u.Month.Unix(), hour: u.Hour}
}

// heldEntries counts the usage entries held, summed and unsure.
func (b *reportBatcher) heldEntries() int {
	n := len(b.carried)
	for _, u := range b.unsure {
		n += len(u.usage)
	}
	return n
}

// send makes one store call, with the batcher's own deadline: a report's
// caller giving up does not cut short the batch it shares with others.
// The deadline's context (a timer and a few allocations) is made once per
// tenth of the timeout and shared by the calls within it, so each call has
// between nine tenths of the timeout and all of it.
func (b *reportBatcher) send(batch store.ReportBatch) ([]store.RateResult, error) {
	if now := time.Now(); b.sendCtx == nil || !now.Before(b.renewAt) {
		if b.cancelSend != nil {
			b.cancelSend()
		}
		b.sendCtx, b.cancelSend = context.WithTimeout(context.Background(), b.timeout)
		b.renewAt = now.Add(b.timeout / 10)
	}
	return b.store.RecordReports(b.sendCtx, batch)
}

// sentBuffers are the slices the leader gathers a batch of several
// reports in (and the numbered reports of any batch), kept for the next
// batch: the store only reads them, during its call. On Redis, where most
// batches hold several reports, they were a few allocations a batch
// (issue 17).
type sentBuffers struct {
	updates   []store.RateUpdate
	usage     []store.UsageIncrement
	sequenced []store.SequencedUsage
	// numbered are the reports of sequenced, in its order, and seen the
	// store's answer for each (store.ReportBatch.Seen).
	numbered []*pendingReport
	seen     []bool
}

// maxKept is the most entries a slice of sentBuffers keeps between batches.
const maxKept = 4096

// reuse returns s cleared (it points into the batch's reports) and empty,
// to gather the next batch in; nil if it grew past maxKept.
func reuse[T any](s []T) []T {
	clear(s)
	if cap(s) > maxKept {
		return nil
	}
	return s[:0]
}

// batchKeys names store calls: 128 random bits each, in 32 hex digits.
// They are made keysAhead at a time, in one string, rather than one
// allocation per call (issue 17). The leader's alone.
type batchKeys struct {
	block string // keys not handed out yet, one after the other
}

const keysAhead = 64

func (k *batchKeys) next() string {
	if k.block == "" {
		var raw [16]byte
		var buf [keysAhead * 32]byte
		for i := range keysAhead {
			binary.BigEndian.PutUint64(raw[:8], rand.Uint64())
			binary.BigEndian.PutUint64(raw[8:], rand.Uint64())
			hex.Encode(buf[i*32:], raw[:])
		}
		k.block = string(buf[:])
	}
	key := k.block[:32]
	k.block = k.block[32:]
	return key
}

// carry adds usage to what is held.
func (b *reportBatcher) carry(usage []store.UsageIncrement) {
	if len(b.carried) == 0 && len(usage) > 0 {
		b.log.Warn("the store took no report: holding the budget usage of stream reports until it is back")
	}
	room := b.maxHeld - b.heldEntries()
	for _, u := range usage {
		k := keyOf(&u)
		switch held := b.carried[k]; {
		case held != nil:
			held.Requests += u.Requests
			held.Sampled += u.Sampled
		case room > 0:
			room--
			b.carried[k] = &u
		default:
			b.dropped.Inc()
		}
	}
	b.held.Set(float64(b.heldEntries()))
}

// failQueued fails the reports still queued at stop, holding their usage
// for the last try. b.mu is held.
func (b *reportBatcher) failQueued(own *pendingReport) {
	b.failQueuedWith(store.ErrUnavailable, own)
}

// failQueuedWith fails every report queued with err, holding the usage of
// those carried. b.mu is held, by the leader.
func (b *reportBatcher) failQueuedWith(err error, own *pendingReport) {
	for _, p := range b.queue {
		if p.carry {
			b.carry(p.usage)
		}
		p.err = err
		answer(p, own)
	}
	clear(b.queue)
	b.queue = b.queue[:0]
}

// close stops the batcher after the batch in flight; later reports fail.
// Usage still held gets one more try, then is counted as dropped.
func (b *reportBatcher) close() {
	b.once.Do(func() {
		b.mu.Lock()
		b.stopped = true
		for b.leading {
			b.idle.Wait()
		}
		// The lead, for good: no report is sent after this.
		b.leading = true
		b.failQueued(nil)
		b.mu.Unlock()
		b.flushHeld()
		if n := b.heldEntries(); n > 0 {
			b.dropped.Add(float64(n))
			b.log.Warn("stopping with budget usage the store may not have taken: it may be lost", "entries", n)
			clear(b.carried)
			b.unsure = nil
			b.held.Set(0)
		}
		if b.cancelSend != nil {
			b.cancelSend()
		}
	})
}
