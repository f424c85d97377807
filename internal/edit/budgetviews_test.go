package edit_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestBudgetViews: a month's history is refused before it begins, the
// alert reads name their filter's field, and a watch's catch-up returns the
// alerts after the last one seen, oldest first.
func TestBudgetViews(t *testing.T) {
	ctx := admin(t)
	st := newStore(t)
	now := time.Date(2030, 5, 17, 12, 0, 0, 0, time.UTC)
	v := edit.NewBudgetViews(st, func() time.Time { return now })
	if _, err := edit.NewBudgets(st, edit.BudgetOptions{}).Create(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 100e6}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		a, fired, err := st.FireAlert(ctx, budget.Alert{
			Budget: "shop", Kind: budget.AlertSpend, Threshold: float64(i+1) / 10,
			Time: now.Add(time.Duration(i) * time.Minute), MonthStart: budget.MonthStart(now), Message: fmt.Sprint(i),
		})
		if err != nil || !fired {
			t.Fatalf("FireAlert %d: %v, fired %v", i, err, fired)
		}
		ids = append(ids, a.ID)
	}

	h, err := v.History(ctx, "shop", time.Time{})
	if err != nil || !h.Now.Equal(now) || h.Budget.Name != "shop" {
		t.Errorf("History of this month = %+v, %v", h, err)
	}
	newest, err := v.NewestAlert(ctx, "shop")
	if err != nil || newest != ids[4] {
		t.Errorf("NewestAlert = %q, %v; want %q", newest, err, ids[4])
	}
	since := func(last string) []string {
		t.Helper()
		as, err := v.AlertsSince(ctx, "", last)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range as {
			got = append(got, a.ID)
		}
		return got
	}
	if diff := cmp.Diff(ids[2:], since(ids[1])); diff != "" {
		t.Errorf("AlertsSince the second (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids, since("")); diff != "" {
		t.Errorf("AlertsSince the start (-want +got):\n%s", diff)
	}
	if got := since(ids[4]); len(got) != 0 {
		t.Errorf("AlertsSince the newest = %v, want none", got)
	}

	for _, tt := range []struct {
		name, field string
		call        func() error
	}{
		{"month not begun", "month_time", func() error { _, err := v.History(ctx, "shop", now.AddDate(0, 1, 0)); return err }},
		{"bad budget to list", "budget_name", func() error { _, err := v.Alerts(ctx, "no spaces", 10, ""); return err }},
		{"bad budget to watch", "budget_name", func() error { _, err := v.AlertsSince(ctx, "no spaces", ""); return err }},
		{"long after_id", "after_id", func() error { _, err := v.AlertsSince(ctx, "", string(make([]byte, edit.MaxAlertIDLen+1))); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ve *rules.ValidationError
			if err := tt.call(); !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tt.field {
				t.Errorf("got %v, want a validation error of %s", err, tt.field)
			}
		})
	}
}
