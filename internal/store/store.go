// Package store keeps sampling rules and their audit log. It declares the
// contract shared by the two implementations — memstore, the embedded default,
// and redisstore, for fleets — and storetest checks both against it.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Errors every implementation returns (wrapped) so that the gRPC boundary can
// map them to status codes without knowing which store is behind it.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the caller's etag (revision) is not the current one.
	ErrConflict = errors.New("revision conflict")
	// ErrRuleLimit: the store already holds as many rules as it may
	// (rules.MaxRules, the Default rule included); one must go before
	// another can be created.
	ErrRuleLimit = errors.New("rule limit reached")
	// ErrUnavailable: the backing service cannot be reached; retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrNotApplied comes with another error when the store knows that the
	// call changed nothing (it never reached the backing service), so that
	// sending it again cannot count anything twice. Without it, a failed
	// write may or may not have landed.
	ErrNotApplied = errors.New("not applied")
	// ErrNotReplicated comes with ErrUnavailable when an edit was applied
	// but no replica confirmed it in time: it is in force, and a failover
	// before the replicas catch up may lose it. Read it back rather than
	// send it again.
	ErrNotReplicated = errors.New("applied but not confirmed by a replica")
)

// Action is what an edit did to a rule.
type Action int

const (
	ActionCreate Action = iota + 1
	ActionUpdate
	ActionDelete
)

func (a Action) String() string {
	switch a {
	case ActionCreate:
		return "create"
	case ActionUpdate:
		return "update"
	case ActionDelete:
		return "delete"
	}
	return "unknown"
}

// Event is one audit-log entry, written atomically with the edit it records.
type Event struct {
	// ID is opaque and orders events by time.
	ID           string
	RuleName     string
	Action       Action
	Actor        string
	Time         time.Time
	Before       *rules.Rule // nil on create
	After        *rules.Rule // nil on delete
	RulesVersion int64
	// Message says why the edit was made, when its maker said: the rule
	// reaper writes "expired at …". Empty for most edits.
	Message string
}

// FirstVersion is the rules version of the first edit of a store that has
// none (a new store, or one that lost its data): the clock, in microseconds
// since 1970. From there each edit adds one. So a store that starts again
// empty, as Redis does after a restart without persistence or the embedded
// store without a data directory, starts above every version the lost one
// handed out (unless that one made more edits than microseconds passed
// between the two starts, or the clock of the replica seeding it is behind by
// more than that), and an SDK that reconnects with an old version is never
// told that its stale rules are current. Versions stay below 2^53, exact
// as JSON numbers, until the year 2255.
func FirstVersion(now time.Time) int64 { return now.UnixMicro() }

// Snapshot is every rule at one rules version, in matching order.
type Snapshot struct {
	Rules   []rules.Rule
	Version int64
}

// EventPage is one page of the audit log, newest first.
type EventPage struct {
	Events []Event
	// NextToken continues the listing; empty on the last page.
	NextToken string
	// Trimmed is set on the last page when entries older than its last one
	// were dropped by the log's retention: the listing is not the whole
	// history.
	Trimmed bool
}

// Topic names what changed in a change notification.
type Topic string

// Topics of change notifications.
const (
	// TopicRules is published after every rule edit.
	TopicRules Topic = "rules"
	// TopicBudgets is published after every budget edit and every new set
	// of budget states (enforcement factors).
	TopicBudgets Topic = "budgets"
	// TopicAlerts is published after an alert fires.
	TopicAlerts Topic = "alerts"
)

// Store is the contract both implementations meet. All methods are safe for
// concurrent use; returned rules are copies the caller owns. Rules are
// validated by the caller; a store only enforces existence and revisions.
//
// Every store holds the Default rule from the start and refuses to delete it.
type Store interface {
	// Snapshot returns every rule and the rules version they were read at.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Rule returns one rule or ErrNotFound.
	Rule(ctx context.Context, name string) (rules.Rule, error)
	// CreateRule stores r with revision 1 and both times set to now, or
	// returns ErrAlreadyExists, or ErrRuleLimit if the store holds its
	// limit of rules. The count is checked in the same atomic step as the
	// create, so concurrent creates on any number of replicas never pass
	// the limit.
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	// UpdateRule replaces the rule named r.Name if its revision is
	// ifRevision, bumping the revision and update time; ErrNotFound or
	// ErrConflict otherwise. The create time is kept.
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	// DeleteRule removes a rule; ifRevision 0 means any revision.
	DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error
	// ApplyRuleEdits makes every edit of a batch in one atomic step, or
	// none (see RuleEdit and EditError).
	ApplyRuleEdits(ctx context.Context, edits []RuleEdit, actor, message string) (BatchResult, error)
	// RuleEvents lists the audit log newest first, optionally for one rule.
	RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (EventPage, error)
	// RulesVersion returns the rules version, which grows on every edit and
	// never repeats, even after the store lost its data (see FirstVersion);
	// 0 before the first edit.
	RulesVersion(ctx context.Context) (int64, error)
	// WatchChanges calls notify for every change notification until ctx ends,
	// and once per topic each time it (re)subscribes, since messages may have
	// been missed meanwhile. Notifications are hints: re-read the version. It
	// returns ctx's error.
	WatchChanges(ctx context.Context, notify func(Topic)) error
	// Ping reports whether the store can serve requests now.
	Ping(ctx context.Context) error
	// Close releases resources. It is safe to call more than once.
	Close() error

	LedgerStore
	BudgetStore
}

// BudgetPage is one page of budgets, by name.
type BudgetPage struct {
	Budgets   []budget.Budget
	NextToken string
}

// AlertPage is one page of alerts, newest first.
type AlertPage struct {
	Alerts    []budget.Alert
	NextToken string
}

// BudgetStore keeps budgets, their monthly usage, the controller's decisions
// and the alerts. Validation is the caller's; the store enforces existence,
// revisions and "fires once".
type BudgetStore interface {
	// Budgets lists budgets by name.
	Budgets(ctx context.Context, pageSize int, pageToken string) (BudgetPage, error)
	Budget(ctx context.Context, name string) (budget.Budget, error)
	// CreateBudget stores b at revision 1, or ErrAlreadyExists.
	CreateBudget(ctx context.Context, b budget.Budget) (budget.Budget, error)
	// UpdateBudget replaces b.Name if at ifRevision (ErrConflict, ErrNotFound).
	UpdateBudget(ctx context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error)
	// DeleteBudget removes a budget; ifRevision 0 means any. Its usage,
	// state and alerts stay until they age out.
	DeleteBudget(ctx context.Context, name string, ifRevision int64) error
	// Usage returns a budget's month as recorded by RecordReports.
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
	// ClaimTick returns true for exactly one caller per tick (across
	// replicas), so the controller runs once per interval for the whole
	// control plane; a claim lapses after ttl.
	ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error)
	// PutStates stores the decisions of a controller interval, every
	// budget's, and publishes TopicBudgets, in one atomic step. Per budget
	// the newer of the stored and the given decision stays
	// (budget.CompareStates; a tie goes to the given one): a decision made
	// for an older incarnation or revision of a budget, or computed
	// earlier, never replaces a newer one, so that an interval that read
	// the budgets before an edit cannot undo the edit's immediate decision
	// (PutState). A stored decision of a budget absent from states is
	// removed (its budget was deleted) unless it was computed after the
	// latest of states (it was put by a PutState the interval did not
	// know of: a budget created meanwhile); an empty states removes all.
	// Each decision that stays is also kept as its hour's point of the
	// budget's month (State.Point; the last of each hour stays), for as
	// long as the month's usage; one that lost is not.
	PutStates(ctx context.Context, states []budget.State) error
	// PutState stores one budget's decision, made at once when the budget
	// is created or changed, and publishes TopicBudgets: as PutStates for
	// that budget, leaving the other budgets' decisions as they are.
	PutState(ctx context.Context, st budget.State) error
	// History returns the points PutStates kept for a budget's month, by
	// hour.
	History(ctx context.Context, budgetName string, month time.Time) ([]budget.HistoryPoint, error)
	// States returns the last decisions, by budget name.
	States(ctx context.Context) (map[string]budget.State, error)
	// FireAlert records a if no alert with its DedupKey fired before, gives
	// it an ID, and publishes TopicAlerts; fired is false for a repeat.
	FireAlert(ctx context.Context, a budget.Alert) (stored budget.Alert, fired bool, err error)
	// Alerts lists alerts newest first, optionally of one budget.
	Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (AlertPage, error)
}

// RateUpdate is one rule's part of a client report, for the rule's fleet
// ledger (see reservoir.Ledger).
type RateUpdate struct {
	Rule string
	// Add is the client's request rate now, in the bucket of the report. Its
	// Quota is ignored: the store grants the quota.
	Add reservoir.Receipt
	// Reservoir is the rule's reservoir, traces per second. An update
	// without one grants nothing and does not count as a write: it reads
	// the fleet rate.
	Reservoir float64
	// Retract is the client's previous contribution, taken out if its bucket
	// is still live; nil for a client's first report.
	Retract *reservoir.Receipt
	// Client marks a client's report, which counts the client as one of the
	// rule's instances (see reservoir.Update); reads leave it unset.
	Client bool
	// RuleVersion is the rule's RulesVersion as the replica knows it;
	// Applied says that the client's report names a rules version at or
	// after it, and counts the client as one that runs the rule as it is
	// (see reservoir.Update). A read's RuleVersion is the version whose
	// count it asks for.
	RuleVersion int64
	Applied     bool
}

// RateResult is the ledger's answer to one RateUpdate.
type RateResult struct {
	// Fleet is the rule's fleet rate after the whole batch.
	Fleet float64
	// Quota is the quota granted to the client: its share of the
	// reservoir, within what the quotas outstanding leave of it.
	Quota float64
	// Sampled is the rule's fleet sampled rate (traces per second),
	// Instances the number of clients whose latest report is live, and
	// Granted the quotas that clients may hold, all after the whole batch
	// (see reservoir.Totals).
	Sampled   float64
	Instances int64
	Granted   float64
	// Applied is how many of the Instances run the rule as it is at the
	// batch's newest RuleVersion for the rule, or a later version.
	Applied int64
}

// ReportBatch is the store work for one or more client reports, done in one
// atomic step (one round trip to Redis).
type ReportBatch struct {
	Now    time.Time
	Ledger reservoir.Ledger
	Rates  []RateUpdate
	// Usage adds reported counts to budgets' months, in the same step.
	Usage []UsageIncrement
	// Sequenced adds the counts of numbered client reports, each once: see
	// SequencedUsage.
	Sequenced []SequencedUsage
	// Seen, if not nil, has one entry per Sequenced, which a store that
	// applies the batch sets: true if that report was seen before (its seq
	// not above the highest recorded for its client, or a repeat of an
	// earlier report of the batch), and so billed nothing now; false if it
	// was billed by this batch. A replica counts what it cut from a report
	// only for the report it bills: a report sent again whose first send
	// was recorded was billed, and cut, where it was first handled.
	Seen []bool
	// DownSince, when not zero, says that the replica could not reach the
	// store from then until a moment ago, and renewed its clients' last
	// quotas meanwhile: a ledger that nobody wrote since then keeps them
	// counted (see reservoir.Ledger.Apply).
	DownSince time.Time
	// Key names the batch, so that a batch sent again with the same Key
	// within KeyWindow of the first (after an error that did not say it
	// changed nothing) is applied once: a repeat changes nothing, returns
	// the fleet rates as they are and grants no quota. Empty: every call is
	// new. A
	// store whose every failure says ErrNotApplied or is a refusal is never
	// sent a batch again, and may ignore Key.
	Key string
}

// KeyWindow is how long a store remembers a ReportBatch's Key once applied.
const KeyWindow = 5 * time.Minute

// SequencedUsage is the usage of one numbered client report. The store
// applies it only if Seq is above the highest seq it recorded for Client,
// and then records Seq, in the same atomic step as the rest of the batch:
// a report that a client sends again because its acknowledgement was lost
// is billed once, whichever replica it reaches. An applied batch counts as
// recorded whether or not each of its reports was new.
type SequencedUsage struct {
	Client string
	Seq    uint64 // 1..MaxSeq
	Usage  []UsageIncrement
}

// SeqWindow is how long at least a store remembers the seq of a client's
// report after the batch that recorded it, if the batches' clocks (Now)
// differ by less than 10 minutes. A client stops sending a report again
// well within it.
const SeqWindow = time.Hour

// MaxSeq is the largest report seq: Redis scripts compare numbers as
// doubles, exact up to 2^53.
const MaxSeq = 1<<53 - 1

// UsageIncrement adds counts to one budget's month: to an hour of it, and to
// one rule's totals.
type UsageIncrement struct {
	Budget   string
	Month    time.Time // any instant of the month; UTC months
	Hour     int       // hour of the month, from 0
	Rule     string
	Requests int64
	Sampled  int64
	// Service is the reporting service, kept in FleetUsage's record only.
	Service string
}

// FleetUsage is the name under which every report's counts are kept,
// whatever budgets cover them: besides what a budget's month holds, each
// rule's sampled traces per hour (Usage.RuleSampled) and each rule's month
// per service (Usage.Services, at most MaxFleetPairs pairs of service and
// rule a month; the pairs past that are not kept). From it a budget created
// mid-month counts the month before it, and a plan counts the service ×
// rule pairs it keeps coverage for. No budget can be called "*".
const FleetUsage = "*"

// MaxFleetPairs bounds the service × rule pairs FleetUsage keeps a month
// (Redis keeps up to this many for requests and as many for sampled
// traces): services are whatever SDKs say they are.
const MaxFleetPairs = 10_000

// LedgerStore keeps the fleet ledgers that reservoirs are split by, and the
// keys that receipts of the ledgers are signed with. The storage for a rule
// is a handful of buckets, whatever the number of clients.
type LedgerStore interface {
	// RecordReports applies the updates of each rule in order, as
	// reservoir.Ledger.Apply does, and returns, for each update, its rule's
	// fleet rate (the sum of the live buckets at b.Now) after all of them
	// and the quota granted. A bucket never goes below zero; buckets that
	// are no longer live are dropped. A batch that reaches the store after
	// the deadline of ctx has passed is not applied, so that a call the
	// caller gave up on cannot land later.
	RecordReports(ctx context.Context, b ReportBatch) ([]RateResult, error)
	// ReceiptKeys returns the receipt keys after applying receipt.Rotate at
	// now, atomically: every replica gets the same keys, and the first call
	// creates them.
	ReceiptKeys(ctx context.Context, now time.Time) (receipt.KeySet, error)
}

// BorrowTake asks a rule's first-borrow bucket, which every replica shares,
// for Count tokens: how many more new SDK instances may borrow for the rule
// before their first targets (the first-borrow gate, package sampling)?
type BorrowTake struct {
	Rule string
	// Rate is the bucket's refill, tokens a second (a share of the rule's
	// reservoir as budgets scale it); it holds max(1, Rate) tokens (see
	// reservoir.GateBucket). A Rate that is not positive and finite lends
	// nothing and stores nothing.
	Rate float64
	// Count is how many tokens are asked for (one per new instance); one
	// below 1 gets none and stores nothing.
	Count int64
}

// MaxBorrowTakes bounds the takes of one TakeFirstBorrows call: a rule set
// holds at most rules.MaxRules rules.
const MaxBorrowTakes = rules.MaxRules

// BorrowStore keeps the first-borrow gate's buckets, one per rule, shared
// by every replica, so that the gate's share holds fleet-wide whatever the
// number of replicas new instances connect to.
type BorrowStore interface {
	// TakeFirstBorrows takes up to Count whole tokens from each take's
	// rule bucket at now, in order (a rule taken twice is taken twice),
	// as reservoir.GateBucket.Take does, and says how many each got, in
	// one atomic step per rule (in Redis one script per shard, all in one
	// round trip). A bucket is kept until it is full again
	// (GateBucket.TTL): storage is bounded by the rules taken from
	// lately. More than MaxBorrowTakes takes are refused, changing
	// nothing.
	TakeFirstBorrows(ctx context.Context, now time.Time, takes []BorrowTake) ([]int64, error)
}
