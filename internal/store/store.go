// Package store keeps sampling rules and their audit log. It declares the
// contract shared by the two implementations — memstore, the embedded default,
// and redisstore, for fleets — and storetest checks both against it.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/rules"
)

// Errors every implementation returns (wrapped) so that the gRPC boundary can
// map them to status codes without knowing which store is behind it.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the caller's etag (revision) is not the current one.
	ErrConflict = errors.New("revision conflict")
	// ErrUnavailable: the backing service cannot be reached; retry later.
	ErrUnavailable = errors.New("store unavailable")
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
}

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
}

// Topic names what changed in a change notification.
type Topic string

// TopicRules is published after every rule edit.
const TopicRules Topic = "rules"

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
	// returns ErrAlreadyExists.
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	// UpdateRule replaces the rule named r.Name if its revision is
	// ifRevision, bumping the revision and update time; ErrNotFound or
	// ErrConflict otherwise. The create time is kept.
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	// DeleteRule removes a rule; ifRevision 0 means any revision.
	DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error
	// RuleEvents lists the audit log newest first, optionally for one rule.
	RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (EventPage, error)
	// RulesVersion returns the rules version, which grows on every edit.
	RulesVersion(ctx context.Context) (int64, error)
	// WatchChanges calls notify for every change notification until ctx ends,
	// and once each time it (re)subscribes, since messages may have been
	// missed meanwhile. Notifications are hints: re-read the version. It
	// returns ctx's error.
	WatchChanges(ctx context.Context, notify func(Topic)) error
	// Ping reports whether the store can serve requests now.
	Ping(ctx context.Context) error
	// Close releases resources. It is safe to call more than once.
	Close() error

	LedgerStore
}

// RateUpdate is one rule's part of a client report, for the rule's fleet
// ledger (see reservoir.Ledger).
type RateUpdate struct {
	Rule string
	// Add is the client's request rate now, in the bucket of the report.
	Add reservoir.Receipt
	// Retract is the client's previous contribution, taken out if its bucket
	// is still live; nil for a client's first report.
	Retract *reservoir.Receipt
}

// ReportBatch is the store work for one or more client reports, done in one
// atomic step (one round trip to Redis).
type ReportBatch struct {
	Now    time.Time
	Ledger reservoir.Ledger
	Rates  []RateUpdate
}

// LedgerStore keeps the fleet ledgers that reservoirs are split by. The
// storage for a rule is a handful of buckets, whatever the number of clients.
type LedgerStore interface {
	// RecordReports applies every update in order and returns, for each
	// update, its rule's fleet rate (the sum of the live buckets at b.Now)
	// after all of them. A bucket never goes below zero; buckets that are no
	// longer live are dropped.
	RecordReports(ctx context.Context, b ReportBatch) ([]float64, error)
}
