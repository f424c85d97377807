package controller

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestBackfillCountsTheCreationHourOnce: a budget created at 10:45 whose
// first decision comes at 10:50. The fleet's 10:00 hour holds what was
// reported before the creation and what was reported after it, which the
// budget counted itself; the backfill adds the hours before 10:00 and of
// the 10:00 hour only the part the budget does not hold. (It added 45/60
// of the whole hour, counting the reports made after the creation twice:
// the fault suite saw 42 % more spend than the SDKs sampled.)
func TestBackfillCountsTheCreationHourOnce(t *testing.T) {
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateRule(t.Context(), rules.Rule{Name: "checkout", Priority: 1, FixedRate: 0.1}.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(st, catalog.Options{})
	if err := cat.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	month := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	created := month.Add(10*time.Hour + 45*time.Minute)
	b := &budget.Budget{Name: "shop", UID: "u1", CreateTime: created}

	fleet := budget.NewUsage(month)
	fleet.Rules["checkout"] = budget.RuleUsage{Requests: 1600, Sampled: 160}
	fleet.RuleRequests["checkout"] = make([]float64, len(fleet.Requests))
	fleet.RuleSampled = map[string][]float64{"checkout": make([]float64, len(fleet.Requests))}
	// 9:00: 1,000 requests and 100 traces; 10:00: 600 and 60, of which 200
	// and 20 came after the creation (and are in the budget's own month).
	fleet.RuleRequests["checkout"][9], fleet.RuleSampled["checkout"][9] = 1000, 100
	fleet.RuleRequests["checkout"][10], fleet.RuleSampled["checkout"][10] = 600, 60
	own := budget.NewUsage(month)
	own.Requests[10], own.Sampled[10] = 200, 20
	own.RuleRequests["checkout"] = make([]float64, len(own.Requests))
	own.RuleRequests["checkout"][10] = 200

	got := backfillIncrements(b, &fleet, &own, cat.Current(), created)
	want := []store.UsageIncrement{
		{Budget: "shop", Month: month, Hour: 9, Rule: "checkout", Requests: 1000, Sampled: 100},
		{Budget: "shop", Month: month, Hour: 10, Rule: "checkout", Requests: 400, Sampled: 40},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backfill (-want +got):\n%s", diff)
	}
}
