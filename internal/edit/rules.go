// Package edit is the transport-neutral core of editing rules and budgets:
// the Default rule's constraints, validation, field masks, optimistic
// concurrency — an etag the caller read, or, without one, a
// read-modify-write that retries when another edit lands in between — and
// who may make the edit; for budgets also their webhooks' addresses and
// sealed secrets (Budgets). Transports (the gRPC RuleService and
// BudgetService, the X-Ray API) authenticate the caller (package auth puts
// the principal in the context), decode into its types, call it, encode,
// and map its errors in one place each.
//
// Every edit takes its principal from the context: the audit log records
// auth.Actor(ctx), never something a client claims, and a principal scoped
// to some services may only edit rules whose service glob lies within them
// (auth.CheckScope), the rule as stored before an update or delete as well
// as after it. A context without a principal edits nothing.
package edit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// RuleStore is what rule edits need from a store.
type RuleStore interface {
	Snapshot(ctx context.Context) (store.Snapshot, error)
	Rule(ctx context.Context, name string) (rules.Rule, error)
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error
	ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error)
	RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (store.EventPage, error)
}

// UpdateRetries bounds the read-modify-write loop of an update without an
// etag, which only retries when another edit lands in between.
const UpdateRetries = 5

// Rules edits rules. It is safe for concurrent use.
type Rules struct {
	store RuleStore
	now   func() time.Time
}

// Option configures a Rules.
type Option func(*Rules)

// WithClock sets the clock that an expiry time must be after (default:
// time.Now).
func WithClock(now func() time.Time) Option { return func(e *Rules) { e.now = now } }

// NewRules returns the rule editor over st.
func NewRules(st RuleStore, opts ...Option) *Rules {
	e := &Rules{store: st, now: time.Now}
	for _, o := range opts {
		o(e)
	}
	return e
}

// setsExpiry reports whether an update of fields (empty: all) to next
// gives cur an expiry time that must be checked: a new one. An expiry
// the rule already has may have passed (the rule awaits deletion); other
// fields can still be changed.
func setsExpiry(cur, next *rules.Rule, fields []string) bool {
	return (len(fields) == 0 || slices.Contains(fields, "expire_time")) && !next.ExpireTime.Equal(cur.ExpireTime)
}

// Create stores a new rule. Validation errors name the rule's own fields
// (fixed_rate, not rule.fixed_rate): the transport places them.
func (e *Rules) Create(ctx context.Context, r rules.Rule) (rules.Rule, error) {
	r = r.Normalize()
	if r.IsDefault() {
		return rules.Rule{}, fmt.Errorf("rule %q: %w (it always exists; update it instead)", r.Name, store.ErrAlreadyExists)
	}
	if err := rules.Validate(&r); err != nil {
		return rules.Rule{}, err
	}
	if err := auth.CheckScope(ctx, r.ServiceName); err != nil {
		return rules.Rule{}, fmt.Errorf("create rule %q: %w", r.Name, err)
	}
	if err := rules.CheckExpiry(&r, e.now()); err != nil {
		return rules.Rule{}, err
	}
	return e.store.CreateRule(ctx, r, auth.Actor(ctx))
}

// Get returns one rule.
func (e *Rules) Get(ctx context.Context, name string) (rules.Rule, error) {
	if err := rules.ValidateName(name); err != nil {
		return rules.Rule{}, err
	}
	return e.store.Rule(ctx, name)
}

// Snapshot returns every rule, in matching order, at one rules version.
func (e *Rules) Snapshot(ctx context.Context) (store.Snapshot, error) {
	return e.store.Snapshot(ctx)
}

// Update sets the fields of the rule named patch.Name that fields names
// (rules.MutableFields; all of them when fields is empty) to patch's. With
// ifRevision 0 it applies the change to whatever revision is current,
// retrying a few times if other edits land in between; otherwise the rule
// must be at ifRevision (store.ErrConflict). The principal must be allowed
// the rule's service glob as stored and as updated.
func (e *Rules) Update(ctx context.Context, patch rules.Rule, fields []string, ifRevision int64) (rules.Rule, error) {
	if err := rules.ValidateName(patch.Name); err != nil {
		return rules.Rule{}, err
	}
	if len(fields) == 0 {
		fields = rules.MutableFields
	}
	for _, f := range fields {
		if !rules.IsMutableField(f) {
			return rules.Rule{}, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: f, Description: "is not a field that can be updated"}}}
		}
	}
	for attempt := 0; ; attempt++ {
		cur, err := e.store.Rule(ctx, patch.Name)
		if err != nil {
			return rules.Rule{}, err
		}
		if err := auth.CheckScope(ctx, cur.ServiceName); err != nil {
			return rules.Rule{}, fmt.Errorf("update rule %q: %w", cur.Name, err)
		}
		if ifRevision != 0 && cur.Revision != ifRevision {
			return rules.Rule{}, fmt.Errorf("rule %q has etag %q, not %q: %w", cur.Name, cur.Etag(), strconv.FormatInt(ifRevision, 10), store.ErrConflict)
		}
		next := rules.WithFields(cur, &patch, fields).Normalize()
		if err := rules.CheckDefault(&next); err != nil {
			return rules.Rule{}, err
		}
		if err := rules.Validate(&next); err != nil {
			return rules.Rule{}, err
		}
		if err := auth.CheckScope(ctx, next.ServiceName); err != nil {
			return rules.Rule{}, fmt.Errorf("update rule %q: service_name: %w", cur.Name, err)
		}
		if setsExpiry(&cur, &next, fields) {
			if err := rules.CheckExpiry(&next, e.now()); err != nil {
				return rules.Rule{}, err
			}
		}
		updated, err := e.store.UpdateRule(ctx, next, cur.Revision, auth.Actor(ctx))
		if errors.Is(err, store.ErrConflict) && ifRevision == 0 && attempt < UpdateRetries {
			continue // another edit landed between our read and write
		}
		return updated, err
	}
}

// Delete removes a rule; ifRevision 0 means any revision. The Default rule
// is never deleted. The principal must be allowed the rule's service glob:
// the rule is read, checked, and deleted only at the revision checked
// (retrying if another edit lands in between), so that a rule moved into
// a principal's scope a moment ago is not deleted as it was before.
func (e *Rules) Delete(ctx context.Context, name string, ifRevision int64) error {
	if err := rules.ValidateName(name); err != nil {
		return err
	}
	if name == rules.DefaultName {
		return fmt.Errorf("delete %q: %w", name, rules.ErrDefaultRule)
	}
	for attempt := 0; ; attempt++ {
		cur, err := e.store.Rule(ctx, name)
		if err != nil {
			return err
		}
		if err := auth.CheckScope(ctx, cur.ServiceName); err != nil {
			return fmt.Errorf("delete rule %q: %w", name, err)
		}
		if ifRevision != 0 && cur.Revision != ifRevision {
			return fmt.Errorf("rule %q has etag %q, not %q: %w", cur.Name, cur.Etag(), strconv.FormatInt(ifRevision, 10), store.ErrConflict)
		}
		err = e.store.DeleteRule(ctx, name, cur.Revision, auth.Actor(ctx))
		if ifRevision == 0 && attempt < UpdateRetries && (errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)) {
			continue // changed or deleted between our read and write: read again
		}
		return err
	}
}

// Events lists the audit log newest first, of one rule or (name empty) of
// all.
func (e *Rules) Events(ctx context.Context, name string, pageSize int, pageToken string) (store.EventPage, error) {
	if name != "" {
		if err := rules.ValidateName(name); err != nil {
			return store.EventPage{}, err
		}
	}
	return e.store.RuleEvents(ctx, name, pageSize, pageToken)
}
