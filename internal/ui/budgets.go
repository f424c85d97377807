package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
)

// History is where a budget's burn-down chart gets the month so far. The
// store's hourly usage (UsageHistory) is the source for now; another one
// (an API of the month's hourly spend and forecasts) can replace it without
// touching the page. Safe for concurrent use.
type History interface {
	Burn(ctx context.Context, b *budget.Budget, now time.Time) (Burn, error)
}

// Burn is a budget's month so far, for its chart.
type Burn struct {
	// MonthStart and MonthEnd bound the month (UTC).
	MonthStart, MonthEnd time.Time
	// SpentMicros is the spend at the end of each hour of the month so far,
	// cumulative, the current hour (up to now) last.
	SpentMicros []int64
}

// UsageStore is what UsageHistory reads.
type UsageStore interface {
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
}

// UsageHistory draws the burn-down from the hourly sampled traces that
// reports add to a budget's month, priced as the budget prices them (free
// allowance first).
type UsageHistory struct {
	Store UsageStore
}

// Burn implements History.
func (h UsageHistory) Burn(ctx context.Context, b *budget.Budget, now time.Time) (Burn, error) {
	u, err := h.Store.Usage(ctx, b.Name, now)
	if err != nil {
		return Burn{}, fmt.Errorf("usage of budget %s: %w", b.Name, err)
	}
	start := budget.MonthStart(now)
	out := Burn{MonthStart: start, MonthEnd: start.Add(time.Duration(budget.HoursIn(start)) * time.Hour)}
	hours := min(int(now.Sub(start)/time.Hour)+1, len(u.Sampled))
	var traces float64
	for h := range hours {
		traces += u.Sampled[h]
		out.SpentMicros = append(out.SpentMicros, budget.Micros(b.Cost(traces)))
	}
	return out, nil
}

// budgetView is one budget as the page shows it. Budget and Status are the
// API's messages, as protojson.
type budgetView struct {
	Budget json.RawMessage `json:"budget"`
	Status json.RawMessage `json:"status"`
	Burn   burnView        `json:"burn"`
	// EnforcementStarted is when enforcement started this month, from the
	// alert that said so (among the newest maxAlerts); absent if it did
	// not, or if the alert is older.
	EnforcementStarted *time.Time `json:"enforcement_started,omitempty"`
}

type burnView struct {
	MonthStart  time.Time `json:"month_start"`
	MonthEnd    time.Time `json:"month_end"`
	SpentMicros []int64   `json:"spent_micros"`
	// Error says why the history is missing; the rest of the budget
	// still shows.
	Error string `json:"error,omitempty"`
}

type budgetsView struct {
	Now     time.Time    `json:"now"`
	Budgets []budgetView `json:"budgets"`
	// More counts the budgets beyond the first maxBudgets, by name.
	More int `json:"more"`
	// Warning says what could not be read (the figures that could are
	// there).
	Warning string `json:"warning,omitempty"`
}

// budgets answers with every budget (the first maxBudgets by name), its
// status as GetBudgetStatus gives it, its burn-down so far and when
// enforcement started. Budgets and decisions come from the replica's
// catalog, so they show while the store is down; the charts need it.
func (h *handler) budgets(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := h.opts.Now()
	month := budget.MonthStart(now)
	bs := h.opts.Catalog.CurrentBudgets()
	out := budgetsView{Now: now, Budgets: []budgetView{}}
	list := bs.Budgets // by name, as the store lists them
	if len(list) > maxBudgets {
		out.More = len(list) - maxBudgets
		list = list[:maxBudgets]
	}
	started := map[string]time.Time{}
	if len(list) > 0 {
		alerts, err := h.opts.Store.Alerts(ctx, "", maxAlerts, "")
		if err != nil {
			h.opts.Logger.WarnContext(ctx, "dashboard: no alerts", "err", err)
			out.Warning = "when enforcement started cannot be read now"
		}
		for _, a := range alerts.Alerts { // newest first: the earliest wins
			if a.Kind == budget.AlertEnforcementStarted && a.MonthStart.Equal(month) {
				started[a.Budget] = a.Time
			}
		}
	}
	for i := range list {
		b := &list[i]
		v := budgetView{}
		var err error
		if v.Budget, err = marshal.Marshal(apiconv.BudgetToProto(b)); err != nil {
			h.fail(w, r, err)
			return
		}
		var st *budget.State
		if x, ok := bs.States[b.Name]; ok {
			st = &x
		}
		if v.Status, err = marshal.Marshal(apiconv.StatusToProto(b, st)); err != nil {
			h.fail(w, r, err)
			return
		}
		burn, err := h.opts.History.Burn(ctx, b, now)
		if err != nil {
			h.opts.Logger.WarnContext(ctx, "dashboard: no burn-down", "budget", b.Name, "err", err)
			burn = Burn{MonthStart: month, MonthEnd: month.Add(time.Duration(budget.HoursIn(month)) * time.Hour)}
			v.Burn.Error = "the spend history cannot be read now"
			out.Warning = "some spend histories cannot be read now"
		}
		v.Burn.MonthStart, v.Burn.MonthEnd, v.Burn.SpentMicros = burn.MonthStart, burn.MonthEnd, burn.SpentMicros
		if v.Burn.SpentMicros == nil {
			v.Burn.SpentMicros = []int64{}
		}
		if t, ok := started[b.Name]; ok {
			v.EnforcementStarted = &t
		}
		out.Budgets = append(out.Budgets, v)
	}
	writeJSON(w, http.StatusOK, out)
}
