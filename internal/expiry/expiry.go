// Package expiry deletes time-limited rules once their expire_time has
// passed: once per interval for the whole control plane (whichever replica
// claims the interval in the store, as the budget controller does), all the
// rules that expired in one batch edit, each with an audit entry by
// system:expiry that says the rule expired. SDKs stop applying a rule at
// its expire_time by themselves; this removes it from the rules.
package expiry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/store"
)

// Store is what the reaper needs from the store.
type Store interface {
	ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error)
	Snapshot(ctx context.Context) (store.Snapshot, error)
	ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error)
}

// Actor and Message are what the audit log records of a rule the reaper
// deleted (the rule before, in the entry, holds its expire_time).
const (
	Actor   = "system:expiry"
	Message = "the rule expired: its expire_time passed"
)

// Options configure a Reaper. Zero values take the defaults given.
type Options struct {
	// Interval between looks, and the longest a rule outlives its expiry.
	// Default 10 s.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the reaper's counters. Default: none.
	Registerer prometheus.Registerer
}

// Reaper deletes expired rules. Run it on every replica; only one of them
// works on each interval.
type Reaper struct {
	store   Store
	catalog *catalog.Catalog
	opts    Options
	expired prometheus.Counter
	failing *condition.Condition
}

// New returns a reaper of st's rules. With cat, an interval in which the
// replica's current rules hold no expired rule costs no store call.
func New(st Store, cat *catalog.Catalog, opts Options) *Reaper {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Reaper{store: st, catalog: cat, opts: opts, expired: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_rules_expired_total",
		Help: "Time-limited rules this replica deleted once their expire_time passed.",
	})}
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_rule_expiry_errors_total",
		Help: "Intervals in which expired rules could not be deleted, mostly for want of the store; they are deleted in a later interval.",
	})
	r.failing = condition.New(opts.Logger, "rule expiry: expired rules cannot be deleted; SDKs skip them meanwhile", failures)
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(r.expired, failures)
	}
	return r
}

// Run looks every interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			switch _, err := r.Tick(ctx); {
			case ctx.Err() != nil:
			case err != nil:
				r.failing.Occurred(ctx, err)
			default:
				r.failing.Cleared(ctx)
			}
		}
	}
}

// Tick claims the current interval if some rule has expired and, if this
// replica got it, deletes every rule that has, in one batch. It returns the
// names of the rules it deleted.
func (r *Reaper) Tick(ctx context.Context) ([]string, error) {
	now := r.opts.Now()
	if r.catalog != nil && !anyExpired(r.catalog.Current(), now) {
		return nil, nil
	}
	// Ticks of their own, apart from the budget controller's (which are
	// never negative).
	tick := -1 - now.UnixNano()/int64(r.opts.Interval)
	ok, err := r.store.ClaimTick(ctx, tick, 2*r.opts.Interval)
	if err != nil || !ok {
		return nil, err
	}
	return r.Reap(ctx, now)
}

// Reap deletes every rule expired at now, in one batch, with the revision
// read: a rule edited meanwhile fails the batch, which the next interval
// tries again.
func (r *Reaper) Reap(ctx context.Context, now time.Time) ([]string, error) {
	snap, err := r.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var edits []store.RuleEdit
	var names []string
	for i := range snap.Rules {
		rule := &snap.Rules[i]
		if rule.IsDefault() || !rule.Expired(now) {
			continue
		}
		edits = append(edits, store.RuleEdit{Action: store.ActionDelete, Rule: rule.Clone(), IfRevision: rule.Revision})
		names = append(names, rule.Name)
	}
	if len(edits) == 0 {
		return nil, nil
	}
	if _, err := r.store.ApplyRuleEdits(ctx, edits, Actor, Message); err != nil {
		return nil, fmt.Errorf("delete %d expired rules: %w", len(edits), err)
	}
	r.expired.Add(float64(len(edits)))
	for i, name := range names {
		r.opts.Logger.Info("rule expired and deleted", "rule", name, "expire_time", edits[i].Rule.ExpireTime)
	}
	return names, nil
}

func anyExpired(v *catalog.View, now time.Time) bool {
	if v == nil {
		return true
	}
	for i := range v.Rules {
		if v.Rules[i].Expired(now) {
			return true
		}
	}
	return false
}
