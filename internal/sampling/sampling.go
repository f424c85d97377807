// Package sampling is the transport-neutral core of "a report comes in,
// quotas go out": it checks each statistics document, finds the claim it
// replaces through the transport's receipt.Keeper, bounds what it may claim,
// group-commits the fleet ledger and budget usage of concurrent reports in
// one store call (the batcher), and hands out each client's quota with the
// fixed rate and the budgets in force. Its API holds no transport's types:
// the gRPC SamplingService (package server) and the X-Ray API (package
// xraycore) decode into Report, call Core.Report, and encode TargetSet; a
// stream keeps what it must remember between reports in a Session.
package sampling

import (
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/boost"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// MaxFutureSkew is how far ahead of the server's clock a document's
// timestamp may be.
const MaxFutureSkew = time.Minute

// Rejection codes of statistics documents, stable for clients to act on.
const (
	RejectUnknownRule  = "UNKNOWN_RULE"
	RejectDuplicate    = "DUPLICATE_RULE"
	RejectNegative     = "NEGATIVE_COUNT"
	RejectInconsistent = "INCONSISTENT_COUNTS"
	RejectFuture       = "FUTURE_TIMESTAMP"
	RejectInterval     = "BAD_INTERVAL"
	RejectReceipt      = "BAD_RECEIPT" // longer than a receipt can be
	RejectTooLarge     = "COUNT_TOO_LARGE"
)

// Report is one client's report.
type Report struct {
	// Client identifies the SDK instance; Service is the service it runs
	// in, which budgets are scoped by. Clients that name no service (X-Ray
	// SDKs) leave it empty: each document then counts for its rule's
	// ServiceName, as written.
	Client, Service string
	Statistics      []Statistics
	// Carry holds the usage of a report the store did not take for later
	// (a stream's client counts its report as sent); without it the call
	// fails and the client reports again.
	Carry bool
	// Seq numbers the report (0: none), so that one sent again is billed
	// once.
	Seq uint64
	// Resent says that the report was sent before, with the receipts it
	// was taken with: they bound what it may claim and retract nothing
	// (receipt.ResendKeeper).
	Resent bool
	// Applied is the rules version the client applies (0: it does not
	// say).
	Applied int64
	// Boosts are the client's anomaly counts, per rule, in documents of
	// their own (X-Ray's).
	Boosts []BoostStatistics
	// Buffers, if not nil, lends the call memory that a caller reporting
	// one report after another (a stream) keeps from call to call. The
	// targets a call returns then last until the second call after it
	// with the same Buffers, and calls with the same Buffers must not
	// overlap.
	Buffers *ReportBuffers
}

// Statistics is one rule's counts from one client since its last report.
type Statistics struct {
	Rule                        string
	Requests, Sampled, Borrowed int64
	// Time is when the client took the counts; zero: not said.
	Time time.Time
	// Interval is the time the counts cover as the client says; zero: not
	// said, one report interval. Negative is a bad interval (a transport
	// maps a given but unusable one so).
	Interval time.Duration
	// Receipt is the token of the client's last target, if it echoes
	// them.
	Receipt string
	// Boost is the rule's anomaly counts over the same interval (the gRPC
	// API carries them in the document); nil: none. They are checked
	// apart: refused, they are named with the document's Index in
	// TargetSet.BoostRejected, and the rest of the document counts.
	Boost *BoostCounts
}

// TargetSet answers a report.
type TargetSet struct {
	RulesVersion int64
	// Interval is how often the client should report.
	Interval time.Duration
	Targets  []Target
	Rejected []Rejection
	// BoostRejected lists the boost counts not taken, Index their place in
	// Report.Boosts, or for a Statistics' own, in Report.Statistics.
	BoostRejected []Rejection
}

// Target is one client's quota and fixed rate for one rule.
type Target struct {
	Rule string
	// Quota is the client's share of the rule's reservoir, in traces per
	// second (fractional), and FixedRate the rule's; Core.WithBudgets
	// applies the budgets' factors to both.
	Quota, FixedRate float64
	// Expiry is when the quota lapses if the client does not report again.
	Expiry time.Time
	// Receipt is what the keeper returned for the claim; "" for none.
	Receipt string
	// Boost is the rule's boost in force, for every client of the rule:
	// sample at Boost.Rate instead of FixedRate until Boost.Expiry. The
	// zero Boost: none.
	Boost boost.Boost
}

// Rejection says why one statistics document was not taken.
type Rejection struct {
	Rule    string
	Index   int // of the document in the report
	Code    string
	Message string
}

// Options configure a Core.
type Options struct {
	// Catalog is the replica's view of the rules and budgets. Required.
	Catalog *catalog.Catalog
	// Store keeps the fleet ledgers and the receipt keys. Required.
	Store LedgerStore
	// Interval is how often clients report, and the ledger's bucket
	// length. Default 10 s.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger and Registerer receive the batcher's logs and the report
	// metrics. Defaults: slog.Default() and a private registry.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// StoreDown, if set, is told when a batch goes through after the store
	// failed.
	StoreDown *condition.Condition
	// Boosts keeps the rules' boost states; nil: Store's, if it keeps them
	// (both stores do), else no boosts. Boost and BoostRoom are the
	// model's settings (docs/BOOSTS.md); Boost.Interval defaults to
	// Interval.
	Boosts    BoostStore
	Boost     boost.Options
	BoostRoom boost.RoomOptions
	// Borrows keeps the first-borrow gate's buckets for every replica
	// (borrow.go); nil: Store's, if it keeps them (both stores do), else
	// a gate of this replica's own.
	Borrows store.BorrowStore
	// Waker, if set, is told of each enforcing budget whose decision in
	// force saw no traffic once a report of traffic in its scope is
	// recorded (catalog.Budgets.Quiet), so that the budget is decided at
	// once; nil: budgets wait for the controller's next interval.
	Waker BudgetWaker
}

// BudgetWaker has a budget decided soon, between the controller's
// intervals (the budget controller is one). Wake must not block: the
// report path calls it.
type BudgetWaker interface {
	Wake(budgetName string)
}

// Core is the report pipeline of one replica, shared by every transport.
// It is safe for concurrent use; Close stops its batcher.
type Core struct {
	catalog  *catalog.Catalog
	batcher  *reportBatcher
	ledger   reservoir.Ledger
	keys     *receipt.Keys
	tokens   receipt.Tokens
	now      func() time.Time
	reports  *reportMetrics
	interval time.Duration
	log      *slog.Logger
	waker    BudgetWaker // nil: none

	borrows      *firstBorrowGate
	boosts       BoostStore // nil: no boosts
	boostOpts    boost.Options
	roomOpts     boost.RoomOptions
	boostMetrics *boostMetrics
}

// New returns a Core and starts its batcher.
func New(opts Options) *Core {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	ledger := reservoir.NewLedger(opts.Interval)
	b := newReportBatcher(opts.Store, ledger, opts.Now, opts.Logger, opts.Registerer)
	b.storeDown = opts.StoreDown
	keys := receipt.NewKeys(opts.Store, opts.Now, b.timeout)
	if opts.Boosts == nil {
		opts.Boosts, _ = opts.Store.(BoostStore)
	}
	if opts.Borrows == nil {
		opts.Borrows, _ = opts.Store.(store.BorrowStore)
	}
	if opts.Boost.Interval <= 0 {
		opts.Boost.Interval = opts.Interval
	}
	return &Core{
		catalog:  opts.Catalog,
		batcher:  b,
		ledger:   ledger,
		keys:     keys,
		tokens:   receipt.Tokens{Keys: keys, Guard: receipt.NewGuard(maxGuarded, maxReportSpan)},
		now:      opts.Now,
		reports:  newReportMetrics(opts.Registerer),
		interval: opts.Interval,
		log:      opts.Logger,
		waker:    opts.Waker,

		borrows:      newFirstBorrowGate(opts.Borrows, opts),
		boosts:       opts.Boosts,
		boostOpts:    opts.Boost.WithDefaults(),
		roomOpts:     opts.BoostRoom,
		boostMetrics: newBoostMetrics(opts.Registerer),
	}
}

// Close stops the batcher, after it has tried to send the usage it holds.
// It is idempotent.
func (s *Core) Close() { s.batcher.close() }

// Tokens is the keeper of clients that echo their receipts.
func (s *Core) Tokens() receipt.Tokens { return s.tokens }

// QuotaLifetime is how long a quota lasts if its client does not report
// again (two intervals).
func (s *Core) QuotaLifetime() time.Duration { return s.ledger.QuotaLifetime() }

// Interval is how often clients report.
func (s *Core) Interval() time.Duration { return s.interval }

// WithBudgets returns the targets as the budgets in force have them: fixed
// rates and reservoir quotas scaled by the strictest enforcing budget that
// covers each rule for this service (empty: each rule's own, see Report).
// base is not modified.
func (s *Core) WithBudgets(base TargetSet, service string) TargetSet {
	return s.WithBudgetsInto(slices.Clone(base.Targets), base, service)
}

// WithBudgetsInto is WithBudgets, with the targets written over dst's
// (grown if it is too short): a stream that encodes each answer as soon as
// it is made reuses one slice for them.
func (s *Core) WithBudgetsInto(dst []Target, base TargetSet, service string) TargetSet {
	budgets := s.catalog.CurrentBudgets()
	view := s.catalog.Current()
	out := base
	out.Targets = append(dst[:0], base.Targets...)
	now := s.now()
	for i := range out.Targets {
		t := &out.Targets[i]
		if r := view.Rule(t.Rule); r != nil {
			f, g := budgets.Factors(serviceOf(service, r), r, now)
			t.FixedRate *= f
			t.Quota *= g
		}
	}
	return out
}
