package edit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BudgetViewStore is what the reads of budgets' status, history and alerts
// need from a store.
type BudgetViewStore interface {
	Budget(ctx context.Context, name string) (budget.Budget, error)
	States(ctx context.Context) (map[string]budget.State, error)
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
	History(ctx context.Context, budgetName string, month time.Time) ([]budget.HistoryPoint, error)
	Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error)
}

// BudgetViews reads what the control plane knows of its budgets: each
// one's status (the controller's last decision), its month's history and
// the alerts fired, for the transports to encode. It is safe for
// concurrent use.
type BudgetViews struct {
	store BudgetViewStore
	now   func() time.Time
}

// NewBudgetViews returns the budget reader over st; now nil is time.Now.
func NewBudgetViews(st BudgetViewStore, now func() time.Time) *BudgetViews {
	if now == nil {
		now = time.Now
	}
	return &BudgetViews{store: st, now: now}
}

// Status returns a budget and the controller's last decision of it, nil if
// it has none yet.
func (v *BudgetViews) Status(ctx context.Context, name string) (budget.Budget, *budget.State, error) {
	if err := rules.ValidateName(name); err != nil {
		return budget.Budget{}, nil, err
	}
	b, err := v.store.Budget(ctx, name)
	if err != nil {
		return budget.Budget{}, nil, err
	}
	states, err := v.store.States(ctx)
	if err != nil {
		return budget.Budget{}, nil, err
	}
	if st, ok := states[b.Name]; ok {
		return b, &st, nil
	}
	return b, nil, nil
}

// BudgetHistory is a budget's month: its usage and the hourly points of
// its history, read at Now.
type BudgetHistory struct {
	Budget budget.Budget
	Usage  budget.Usage
	Points []budget.HistoryPoint
	Now    time.Time
}

// History returns the month of the budget called name that contains month
// (zero: the current month). A month that has not begun is a validation
// error of month_time.
func (v *BudgetViews) History(ctx context.Context, name string, month time.Time) (BudgetHistory, error) {
	if err := rules.ValidateName(name); err != nil {
		return BudgetHistory{}, err
	}
	now := v.now()
	start := budget.MonthStart(now)
	if !month.IsZero() {
		start = budget.MonthStart(month)
		if start.After(now) {
			return BudgetHistory{}, invalid("month_time", fmt.Sprintf("the month of %s has not begun", start.Format("2006-01")))
		}
	}
	b, err := v.store.Budget(ctx, name)
	if err != nil {
		return BudgetHistory{}, err
	}
	u, err := v.store.Usage(ctx, b.Name, start)
	if err != nil {
		return BudgetHistory{}, err
	}
	points, err := v.store.History(ctx, b.Name, start)
	if err != nil {
		return BudgetHistory{}, err
	}
	return BudgetHistory{Budget: b, Usage: u, Points: points, Now: now}, nil
}

// Alerts returns a page of the alerts fired, newest first, of the budget
// called budgetName (empty: of every budget). A bad name is a validation
// error of budget_name, the filter's field.
func (v *BudgetViews) Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error) {
	if err := checkBudgetFilter(budgetName); err != nil {
		return store.AlertPage{}, err
	}
	return v.store.Alerts(ctx, budgetName, pageSize, pageToken)
}

// MaxAlertIDLen bounds the alert ID a watch starts after: the stores' IDs
// are far shorter.
const MaxAlertIDLen = 128

// maxCatchUp is how many alerts AlertsSince returns at most: the newest
// ones, when the alert last seen is older or no longer listed.
const maxCatchUp = 1000

// NewestAlert returns the ID of the newest alert of budgetName (empty:
// of every budget), empty if none is kept: where a watch from now starts.
func (v *BudgetViews) NewestAlert(ctx context.Context, budgetName string) (string, error) {
	page, err := v.Alerts(ctx, budgetName, 1, "")
	if err != nil || len(page.Alerts) == 0 {
		return "", err
	}
	return page.Alerts[0].ID, nil
}

// AlertsSince returns, oldest first, the alerts of budgetName (empty:
// every budget) newer than the one whose ID is last (empty: every alert
// kept), at most the maxCatchUp newest: what a watch has not sent yet.
func (v *BudgetViews) AlertsSince(ctx context.Context, budgetName, last string) ([]budget.Alert, error) {
	if err := checkBudgetFilter(budgetName); err != nil {
		return nil, err
	}
	if n := len(last); n > MaxAlertIDLen {
		return nil, invalid("after_id", fmt.Sprintf("at most %d characters, got %d", MaxAlertIDLen, n))
	}
	var fresh []budget.Alert
	for token := ""; ; {
		page, err := v.store.Alerts(ctx, budgetName, 100, token)
		if err != nil {
			return nil, err
		}
		stop := false
		for _, a := range page.Alerts {
			if a.ID == last {
				stop = true
				break
			}
			fresh = append(fresh, a)
		}
		if token = page.NextToken; stop || token == "" || len(fresh) >= maxCatchUp {
			break
		}
	}
	fresh = fresh[:min(len(fresh), maxCatchUp)]
	slices.Reverse(fresh)
	return fresh, nil
}

// checkBudgetFilter checks the budget_name filter of the alert reads:
// empty, or a budget name.
func checkBudgetFilter(name string) error {
	if name == "" {
		return nil
	}
	var ve *rules.ValidationError
	if err := rules.ValidateName(name); errors.As(err, &ve) {
		return invalid("budget_name", ve.Violations[0].Description)
	} else if err != nil {
		return err
	}
	return nil
}
