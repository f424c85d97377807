package edit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BudgetStore is what budget edits need from a store.
type BudgetStore interface {
	Budgets(ctx context.Context, pageSize int, pageToken string) (store.BudgetPage, error)
	Budget(ctx context.Context, name string) (budget.Budget, error)
	CreateBudget(ctx context.Context, b budget.Budget) (budget.Budget, error)
	UpdateBudget(ctx context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error)
	DeleteBudget(ctx context.Context, name string, ifRevision int64) error
}

// BudgetOptions configure a Budgets.
type BudgetOptions struct {
	// Egress decides which webhook URLs a budget may have
	// (budget.ValidateWebhooks); nil: the default refusals only.
	Egress *budget.Egress
	// Secrets seals webhook secrets at rest; nil: stored as given.
	Secrets *secrets.Box
	// Changed is called after each edit that changed a budget, to have
	// this replica take it up at once (the catalog's Kick); nil: nothing.
	Changed func()
}

// Budgets edits budgets, as Rules edits rules: the same optimistic
// concurrency and the principal from the context, whose service scope must
// cover the budget's (an empty scope is every service) as stored and as
// changed. It also checks the webhooks' addresses, seals their secrets and
// records the principal as the budget's last editor (UpdatedBy). It is safe
// for concurrent use.
type Budgets struct {
	store BudgetStore
	opts  BudgetOptions
}

// NewBudgets returns the budget editor over st.
func NewBudgets(st BudgetStore, opts BudgetOptions) *Budgets {
	if opts.Egress == nil {
		opts.Egress, _ = budget.NewEgress(budget.EgressOptions{}) // no allow-list, no error
	}
	return &Budgets{store: st, opts: opts}
}

func (e *Budgets) changed() {
	if e.opts.Changed != nil {
		e.opts.Changed()
	}
}

// Create stores a new budget, a new incarnation (UID) of its name.
// Validation errors name the budget's own fields (channels[0].webhook_url,
// not budget.channels[0].webhook_url): the transport places them.
func (e *Budgets) Create(ctx context.Context, b budget.Budget) (budget.Budget, error) {
	b = b.Normalize()
	// A redacted URL or masked secret matches nothing stored: Validate
	// refuses it.
	b.Channels = budget.KeepHidden(b.Channels, nil)
	stored, err := e.check(ctx, b)
	if err != nil {
		return budget.Budget{}, err
	}
	stored.UID = newUID()
	created, err := e.store.CreateBudget(ctx, stored)
	if err != nil {
		return budget.Budget{}, err
	}
	e.changed()
	return created, nil
}

// check checks a budget as it will be stored by a create or update: its
// fields, its webhooks' addresses, and that the principal may edit budgets
// for its services. It returns the budget to store: secrets sealed, and
// the principal as its last editor.
func (e *Budgets) check(ctx context.Context, b budget.Budget) (budget.Budget, error) {
	if err := budget.Validate(&b); err != nil {
		return budget.Budget{}, err
	}
	if err := budget.ValidateWebhooks(&b, e.opts.Egress); err != nil {
		return budget.Budget{}, err
	}
	if err := auth.CheckScope(ctx, scopeGlobs(b.Scope.Services)...); err != nil {
		return budget.Budget{}, fmt.Errorf("budget %q: scope.service_names: %w", b.Name, err)
	}
	b.UpdatedBy = auth.Actor(ctx)
	return budget.SealSecrets(b, e.opts.Secrets)
}

// scopeGlobs are the service globs a budget's scope edits: one without
// services covers every service ("").
func scopeGlobs(services []string) []string {
	if len(services) == 0 {
		return []string{""}
	}
	return services
}

// newUID names a budget's incarnation: 64 random bits.
func newUID() string { return fmt.Sprintf("%016x", rand.Uint64()) }

// Get returns one budget.
func (e *Budgets) Get(ctx context.Context, name string) (budget.Budget, error) {
	if err := rules.ValidateName(name); err != nil {
		return budget.Budget{}, err
	}
	return e.store.Budget(ctx, name)
}

// List returns a page of budgets.
func (e *Budgets) List(ctx context.Context, pageSize int, pageToken string) (store.BudgetPage, error) {
	return e.store.Budgets(ctx, pageSize, pageToken)
}

// Update sets the fields of the budget named patch.Name that fields names
// (budget.MutableFields; all of them when fields is empty) to patch's,
// with ifRevision as Rules.Update takes it. The principal must be allowed
// the budget's scope as stored and as updated: a team may not take over
// another's budget by narrowing its scope. Secrets kept from the stored
// budget are checked and sealed again as new ones are (a key may have been
// configured since); a change of amount, currency or prices starts a new
// generation, whose alerts are due again.
func (e *Budgets) Update(ctx context.Context, patch budget.Budget, fields []string, ifRevision int64) (budget.Budget, error) {
	if err := rules.ValidateName(patch.Name); err != nil {
		return budget.Budget{}, err
	}
	if len(fields) == 0 {
		fields = budget.MutableFields
	}
	for _, f := range fields {
		if !budget.IsMutableField(f) {
			return budget.Budget{}, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: f, Description: "is not a field that can be updated"}}}
		}
	}
	for attempt := 0; ; attempt++ {
		cur, err := e.store.Budget(ctx, patch.Name)
		if err != nil {
			return budget.Budget{}, err
		}
		if err := auth.CheckScope(ctx, scopeGlobs(cur.Scope.Services)...); err != nil {
			return budget.Budget{}, fmt.Errorf("update budget %q: %w", cur.Name, err)
		}
		if ifRevision != 0 && cur.Revision != ifRevision {
			return budget.Budget{}, fmt.Errorf("budget %q has etag %q, not %q: %w", cur.Name, cur.Etag(), strconv.FormatInt(ifRevision, 10), store.ErrConflict)
		}
		open, err := budget.OpenSecrets(cur, e.opts.Secrets)
		if err != nil {
			return budget.Budget{}, err
		}
		next, err := e.check(ctx, budget.WithFields(open, &patch, fields).Normalize())
		if err != nil {
			return budget.Budget{}, err
		}
		if budget.MoneyChanged(&cur, &next) {
			next.Generation = cur.Generation + 1
		}
		updated, err := e.store.UpdateBudget(ctx, next, cur.Revision)
		if errors.Is(err, store.ErrConflict) && ifRevision == 0 && attempt < UpdateRetries {
			continue // another edit landed between our read and write
		}
		if err != nil {
			return budget.Budget{}, err
		}
		e.changed()
		return updated, nil
	}
}

// Delete removes a budget; ifRevision 0 means any revision. As Rules.Delete
// does, it reads the budget, checks the principal's scope against it, and
// deletes only the revision checked.
func (e *Budgets) Delete(ctx context.Context, name string, ifRevision int64) error {
	if err := rules.ValidateName(name); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		cur, err := e.store.Budget(ctx, name)
		if err != nil {
			return err
		}
		if err := auth.CheckScope(ctx, scopeGlobs(cur.Scope.Services)...); err != nil {
			return fmt.Errorf("delete budget %q: %w", cur.Name, err)
		}
		if ifRevision != 0 && cur.Revision != ifRevision {
			return fmt.Errorf("budget %q has etag %q, not %q: %w", cur.Name, cur.Etag(), strconv.FormatInt(ifRevision, 10), store.ErrConflict)
		}
		err = e.store.DeleteBudget(ctx, cur.Name, cur.Revision)
		if ifRevision == 0 && attempt < UpdateRetries && (errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)) {
			continue // changed or deleted between our read and write: read again
		}
		if err != nil {
			return err
		}
		e.changed()
		return nil
	}
}
