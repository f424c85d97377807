// Package edit is the transport-neutral core of editing rules: the Default
// rule's constraints, validation, field masks, and optimistic concurrency —
// an etag the caller read, or, without one, a read-modify-write that retries
// when another edit lands in between. Transports (the gRPC RuleService, the
// X-Ray API) decode into its types, call it with the actor the audit log
// records, encode, and map its errors in one place each.
package edit

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

// RuleStore is what rule edits need from a store.
type RuleStore interface {
	Snapshot(ctx context.Context) (store.Snapshot, error)
	Rule(ctx context.Context, name string) (rules.Rule, error)
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error
	RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (store.EventPage, error)
}

// UpdateRetries bounds the read-modify-write loop of an update without an
// etag, which only retries when another edit lands in between.
const UpdateRetries = 5

// Rules edits rules. It is safe for concurrent use.
type Rules struct {
	store RuleStore
}

// NewRules returns the rule editor over st.
func NewRules(st RuleStore) *Rules { return &Rules{store: st} }

// Create stores a new rule. Validation errors name the rule's own fields
// (fixed_rate, not rule.fixed_rate): the transport places them.
func (e *Rules) Create(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error) {
	r = r.Normalize()
	if r.IsDefault() {
		return rules.Rule{}, fmt.Errorf("rule %q: %w (it always exists; update it instead)", r.Name, store.ErrAlreadyExists)
	}
	if err := rules.Validate(&r); err != nil {
		return rules.Rule{}, err
	}
	return e.store.CreateRule(ctx, r, actor)
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
// must be at ifRevision (store.ErrConflict).
func (e *Rules) Update(ctx context.Context, patch rules.Rule, fields []string, ifRevision int64, actor string) (rules.Rule, error) {
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
		updated, err := e.store.UpdateRule(ctx, next, cur.Revision, actor)
		if errors.Is(err, store.ErrConflict) && ifRevision == 0 && attempt < UpdateRetries {
			continue // another edit landed between our read and write
		}
		return updated, err
	}
}

// Delete removes a rule; ifRevision 0 means any revision. The Default rule
// is never deleted.
func (e *Rules) Delete(ctx context.Context, name string, ifRevision int64, actor string) error {
	if err := rules.ValidateName(name); err != nil {
		return err
	}
	if name == rules.DefaultName {
		return fmt.Errorf("delete %q: %w", name, rules.ErrDefaultRule)
	}
	return e.store.DeleteRule(ctx, name, ifRevision, actor)
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
