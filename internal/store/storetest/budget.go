package storetest

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/go-cmp/cmp"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// newBudget returns a valid budget with every field set.
func newBudget(name string) budget.Budget {
	return budget.Budget{
		Name:        name,
		Description: "budget " + name,
		Scope: budget.Scope{
			Services:   []string{"checkout-*", "cart"},
			RuleLabels: map[string]string{"team": "payments"},
		},
		MonthlyAmountMicros:   1_234_500_000,
		Currency:              "EUR",
		PricePerMillionMicros: 4_250_001,
		FreeTraces:            1_000_000,
		Mode:                  budget.AlertOnly,
		SpendThresholds:       []float64{0.5, 0.8, 1},
		ForecastThresholds:    []float64{1, 1.2},
		Channels: []budget.Channel{
			{WebhookURL: "https://hooks.example.com/a", Secret: "s3cret"},
			{WebhookURL: "http://alerts.internal/b"},
		},
		FloorPerSecond: 0.5,
	}
}

// stampedBudget returns b as a store should return it.
func stampedBudget(b budget.Budget, revision int64, created, updated time.Time) budget.Budget {
	b.Revision, b.CreateTime, b.UpdateTime = revision, created, updated
	return b
}

// diffBudget describes how got differs from want, or returns "". Times are
// compared as instants, and empty slices and maps equal nil ones, since a
// store may keep either.
func diffBudget(got, want budget.Budget) string {
	var d []string
	if !got.CreateTime.Equal(want.CreateTime) {
		d = append(d, fmt.Sprintf("CreateTime = %v, want %v", got.CreateTime, want.CreateTime))
	}
	if !got.UpdateTime.Equal(want.UpdateTime) {
		d = append(d, fmt.Sprintf("UpdateTime = %v, want %v", got.UpdateTime, want.UpdateTime))
	}
	norm := func(b *budget.Budget) {
		b.CreateTime, b.UpdateTime = time.Time{}, time.Time{}
		if len(b.Scope.Services) == 0 {
			b.Scope.Services = nil
		}
		if len(b.Scope.RuleLabels) == 0 {
			b.Scope.RuleLabels = nil
		}
		if len(b.SpendThresholds) == 0 {
			b.SpendThresholds = nil
		}
		if len(b.ForecastThresholds) == 0 {
			b.ForecastThresholds = nil
		}
		if len(b.Channels) == 0 {
			b.Channels = nil
		}
	}
	norm(&got)
	norm(&want)
	if !reflect.DeepEqual(got, want) {
		d = append(d, fmt.Sprintf("got %+v\nwant %+v", got, want))
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

func checkBudget(t *testing.T, what string, got, want budget.Budget) {
	t.Helper()
	if d := diffBudget(got, want); d != "" {
		t.Errorf("%s: %s", what, d)
	}
}

func mustCreateBudget(t *testing.T, s store.Store, b budget.Budget) budget.Budget {
	t.Helper()
	got, err := s.CreateBudget(t.Context(), b)
	if err != nil {
		t.Fatalf("CreateBudget(%q): %v", b.Name, err)
	}
	return got
}

func mustBudget(t *testing.T, s store.Store, name string) budget.Budget {
	t.Helper()
	got, err := s.Budget(t.Context(), name)
	if err != nil {
		t.Fatalf("Budget(%q): %v", name, err)
	}
	return got
}

func budgetNames(bs []budget.Budget) []string {
	out := make([]string, len(bs))
	for i := range bs {
		out[i] = bs[i].Name
	}
	return out
}

func testBudgetCRUD(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()

	createdAt := clk.Add(time.Second)
	created := mustCreateBudget(t, s, newBudget("team-a"))
	want := stampedBudget(newBudget("team-a"), 1, createdAt, createdAt)
	checkBudget(t, "CreateBudget", created, want)
	clk.Add(time.Hour) // reads must not restamp anything
	checkBudget(t, "Budget from the peer", mustBudget(t, other, "team-a"), want)

	// A budget with only the required fields comes back as it went in.
	minimal := budget.Budget{Name: "minimal", MonthlyAmountMicros: 10 * budget.MicrosPerUnit}
	now := clk.Now()
	checkBudget(t, "CreateBudget(minimal)", mustCreateBudget(t, s, minimal), stampedBudget(minimal, 1, now, now))
	checkBudget(t, "Budget(minimal)", mustBudget(t, other, "minimal"), stampedBudget(minimal, 1, now, now))

	// Update: the revision in the budget itself is ignored; the create
	// time is kept.
	next := newBudget("team-a")
	next.MonthlyAmountMicros, next.Mode, next.Channels = 99*budget.MicrosPerUnit, budget.Enforce, nil
	next.Revision = 42
	updatedAt := clk.Add(time.Minute)
	got, err := other.UpdateBudget(ctx, next, 1)
	if err != nil {
		t.Fatalf("UpdateBudget: %v", err)
	}
	want = stampedBudget(next, 2, createdAt, updatedAt)
	checkBudget(t, "UpdateBudget", got, want)
	checkBudget(t, "Budget after update", mustBudget(t, s, "team-a"), want)

	// Delete at the current revision; the name is free again and a new
	// budget starts afresh.
	if err := s.DeleteBudget(ctx, "team-a", 2); err != nil {
		t.Fatalf("DeleteBudget: %v", err)
	}
	if _, err := other.Budget(ctx, "team-a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Budget after delete: error = %v, want ErrNotFound", err)
	}
	now = clk.Add(time.Second)
	checkBudget(t, "re-created budget", mustCreateBudget(t, other, newBudget("team-a")),
		stampedBudget(newBudget("team-a"), 1, now, now))
	// Delete at any revision.
	if err := other.DeleteBudget(ctx, "minimal", 0); err != nil {
		t.Fatalf("DeleteBudget(any revision): %v", err)
	}
	page, err := s.Budgets(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(budgetNames(page.Budgets), []string{"team-a"}) || page.NextToken != "" {
		t.Errorf("Budgets = %q (next %q), want [team-a]", budgetNames(page.Budgets), page.NextToken)
	}
	if _, err := s.Budget(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Budget(unknown) error = %v, want ErrNotFound", err)
	}
}

func testBudgetRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	mustCreateBudget(t, s, newBudget("keep"))
	kept, err := s.UpdateBudget(ctx, newBudget("keep"), 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(s store.Store) error
		want error
	}{
		{"create existing", func(s store.Store) error { _, err := s.CreateBudget(ctx, newBudget("keep")); return err }, store.ErrAlreadyExists},
		{"update stale", func(s store.Store) error { _, err := s.UpdateBudget(ctx, newBudget("keep"), 1); return err }, store.ErrConflict},
		{"update future", func(s store.Store) error { _, err := s.UpdateBudget(ctx, newBudget("keep"), 3); return err }, store.ErrConflict},
		{"update revision zero", func(s store.Store) error { _, err := s.UpdateBudget(ctx, newBudget("keep"), 0); return err }, store.ErrConflict},
		{"update unknown", func(s store.Store) error { _, err := s.UpdateBudget(ctx, newBudget("ghost"), 1); return err }, store.ErrNotFound},
		{"delete stale", func(s store.Store) error { return s.DeleteBudget(ctx, "keep", 1) }, store.ErrConflict},
		{"delete future", func(s store.Store) error { return s.DeleteBudget(ctx, "keep", 3) }, store.ErrConflict},
		{"delete unknown", func(s store.Store) error { return s.DeleteBudget(ctx, "ghost", 0) }, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Add(time.Second)
			if err := tt.edit(other); !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			checkBudget(t, "budget after a refused edit", mustBudget(t, s, "keep"), kept)
			if _, err := s.Budget(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refused edit created a budget: %v", err)
			}
		})
	}
}

// collectBudgets lists every budget page by page with pageSize and checks
// each page.
func collectBudgets(t *testing.T, s store.Store, pageSize int) []budget.Budget {
	t.Helper()
	size := pageSize
	if size == 0 {
		size = 100 // the documented default
	}
	var out []budget.Budget
	token := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, err := s.Budgets(t.Context(), pageSize, token)
		if err != nil {
			t.Fatalf("Budgets(%d, page %d): %v", pageSize, pages, err)
		}
		if len(page.Budgets) > size || page.NextToken != "" && len(page.Budgets) != size {
			t.Fatalf("page %d has %d budgets (next %q), want a full page of %d before the last", pages, len(page.Budgets), page.NextToken, size)
		}
		out = append(out, page.Budgets...)
		if page.NextToken == "" {
			return out
		}
		token = page.NextToken
	}
}

func testBudgetPaging(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	var want []string
	for i := range 23 {
		want = append(want, fmt.Sprintf("b-%02d", i))
	}
	want = append(want, "A-upper", "z-last")
	slices.Sort(want)
	shuffled := slices.Clone(want)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, n := range shuffled {
		clk.Add(time.Millisecond)
		mustCreateBudget(t, s, newBudget(n))
	}
	for _, size := range []int{1, 5, 7, 25, 100, 0} {
		t.Run(fmt.Sprint("pages of ", size), func(t *testing.T) {
			if got := budgetNames(collectBudgets(t, s, size)); !slices.Equal(got, want) {
				t.Fatalf("paged budgets %q, want %q", got, want)
			}
		})
	}

	t.Run("while editing", func(t *testing.T) {
		first, err := s.Budgets(t.Context(), 4, "")
		if err != nil {
			t.Fatal(err)
		}
		// Budgets created before the token's name are not listed; deleting
		// a listed budget shifts nothing.
		mustCreateBudget(t, s, newBudget("AAA-new"))
		mustCreateBudget(t, s, newBudget("c-new"))
		if err := s.DeleteBudget(t.Context(), first.Budgets[0].Name, 0); err != nil {
			t.Fatal(err)
		}
		got := budgetNames(first.Budgets)
		for token := first.NextToken; token != ""; {
			page, err := s.Budgets(t.Context(), 4, token)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, budgetNames(page.Budgets)...)
			token = page.NextToken
		}
		wantNow := append(slices.Clone(want), "c-new")
		slices.Sort(wantNow)
		if !slices.Equal(got, wantNow) {
			t.Fatalf("paged budgets %q, want %q", got, wantNow)
		}
	})
}

// checkListingRefused checks that list refuses each bad token and size with
// a *rules.ValidationError for the right field.
func checkListingRefused(t *testing.T, list func(pageSize int, token string) error, good, otherListing string) {
	t.Helper()
	tests := []struct {
		name     string
		pageSize int
		token    string
		field    string
	}{
		{"not base64", 10, "!!!not a token!!!", "page_token"},
		{"base64 of junk", 10, "aGVsbG8gd29ybGQ", "page_token"},
		{"truncated", 10, good[:len(good)/2], "page_token"},
		{"extended", 10, good + "AAAA", "page_token"},
		{"another listing's token", 10, otherListing, "page_token"},
		{"negative page size", -1, "", "page_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := list(tt.pageSize, tt.token)
			var verr *rules.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("error = %v, want a *rules.ValidationError", err)
			}
			if len(verr.Violations) != 1 || verr.Violations[0].Field != tt.field {
				t.Errorf("violations = %+v, want one for %s", verr.Violations, tt.field)
			}
		})
	}
}

func testBudgetListingRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	makeEvents(t, s, clk, 3)
	for _, n := range []string{"a", "b", "c"} {
		mustCreateBudget(t, s, newBudget(n))
	}
	page, err := s.Budgets(ctx, 1, "")
	if err != nil || page.NextToken == "" {
		t.Fatalf("Budgets = %+v, %v; want a next page", page, err)
	}
	events, err := s.RuleEvents(ctx, "", 1, "")
	if err != nil || events.NextToken == "" {
		t.Fatalf("RuleEvents = %+v, %v; want a next page", events, err)
	}
	checkListingRefused(t, func(size int, token string) error {
		_, err := s.Budgets(ctx, size, token)
		return err
	}, page.NextToken, events.NextToken)
	// And the other way round.
	if _, err := s.RuleEvents(ctx, "", 1, page.NextToken); err == nil {
		t.Error("RuleEvents accepted a token of Budgets")
	}
}

func testConcurrentBudgetUpdates(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	mustCreateBudget(t, s, newBudget("hot"))

	const writers = 16
	errs := make([]error, writers)
	createErrs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			next := newBudget("hot")
			next.MonthlyAmountMicros = int64(100 + i)
			_, errs[i] = stores[i%len(stores)].UpdateBudget(context.Background(), next, 1)
			_, createErrs[i] = stores[i%len(stores)].CreateBudget(context.Background(), newBudget("new"))
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("writer %d: error = %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got := mustBudget(t, s, "hot")
	if got.Revision != 2 || got.MonthlyAmountMicros != int64(100+winner) {
		t.Errorf("budget = revision %d amount %d micros, want revision 2 amount %d", got.Revision, got.MonthlyAmountMicros, 100+winner)
	}
	created := 0
	for i, err := range createErrs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("creator %d: error = %v, want ErrAlreadyExists", i, err)
		}
	}
	if created != 1 {
		t.Errorf("%d creates won, want 1", created)
	}
}

func testBudgetsReturnCopies(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	in := newBudget("copy")
	created := mustCreateBudget(t, s, in)
	want := stampedBudget(newBudget("copy"), 1, created.CreateTime, created.UpdateTime)
	scribble := func(b *budget.Budget) {
		b.Scope.Services[0] = "changed"
		b.Scope.RuleLabels["team"] = "changed"
		b.SpendThresholds[0] = 0.01
		b.ForecastThresholds[0] = 9
		b.Channels[0].Secret = "changed"
	}
	scribble(&in)
	scribble(&created)
	got := mustBudget(t, s, "copy")
	scribble(&got)
	page, err := s.Budgets(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	scribble(&page.Budgets[0])
	checkBudget(t, "budget after callers changed their copies", mustBudget(t, s, "copy"), want)

	next := newBudget("copy")
	updated, err := s.UpdateBudget(ctx, next, 1)
	if err != nil {
		t.Fatal(err)
	}
	want = stampedBudget(newBudget("copy"), 2, updated.CreateTime, updated.UpdateTime)
	scribble(&next)
	scribble(&updated)
	checkBudget(t, "budget after callers changed update copies", mustBudget(t, s, "copy"), want)
}

// march is the month of newClock, in UTC: 31 days, 744 hours.
var march = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func recordUsage(t *testing.T, s store.Store, now time.Time, incs ...store.UsageIncrement) {
	t.Helper()
	if _, err := s.RecordReports(t.Context(), store.ReportBatch{Now: now, Usage: incs}); err != nil {
		t.Fatalf("RecordReports(usage): %v", err)
	}
}

func mustUsage(t *testing.T, s store.Store, name string, month time.Time) budget.Usage {
	t.Helper()
	u, err := s.Usage(t.Context(), name, month)
	if err != nil {
		t.Fatalf("Usage(%q, %v): %v", name, month, err)
	}
	return u
}

// wantUsage is a month's expected counts: hour → {requests, sampled}.
type wantUsage struct {
	start     time.Time
	hours     map[int][2]float64
	rules     map[string]budget.RuleUsage
	ruleHours map[string]map[int]float64 // rule → hour → requests; nil: not checked
}

func checkUsage(t *testing.T, what string, got budget.Usage, want wantUsage) {
	t.Helper()
	if !got.MonthStart.Equal(want.start) {
		t.Errorf("%s: MonthStart = %v, want %v", what, got.MonthStart, want.start)
	}
	n := budget.HoursIn(want.start)
	if len(got.Requests) != n || len(got.Sampled) != n {
		t.Fatalf("%s: %d/%d hours, want %d", what, len(got.Requests), len(got.Sampled), n)
	}
	for h := range n {
		w := want.hours[h]
		if got.Requests[h] != w[0] || got.Sampled[h] != w[1] {
			t.Errorf("%s: hour %d = %v/%v, want %v/%v", what, h, got.Requests[h], got.Sampled[h], w[0], w[1])
		}
	}
	if len(got.Rules) != len(want.rules) || len(want.rules) > 0 && !reflect.DeepEqual(got.Rules, want.rules) {
		t.Errorf("%s: rules = %v, want %v", what, got.Rules, want.rules)
	}
	if want.ruleHours == nil {
		return // not checked
	}
	if len(got.RuleRequests) != len(want.ruleHours) {
		t.Errorf("%s: hours of %d rules, want %d", what, len(got.RuleRequests), len(want.ruleHours))
	}
	for rule, hours := range want.ruleHours {
		g := got.RuleRequests[rule]
		if len(g) != n {
			t.Errorf("%s: rule %s has %d hours, want %d", what, rule, len(g), n)
			continue
		}
		for h := range n {
			if g[h] != hours[h] {
				t.Errorf("%s: rule %s, hour %d: %v requests, want %v", what, rule, h, g[h], hours[h])
			}
		}
	}
}

func testUsage(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	now := clk.Now()
	inc := func(name string, hour int, rule string, requests, sampled int64) store.UsageIncrement {
		return store.UsageIncrement{Budget: name, Month: now, Hour: hour, Rule: rule, Requests: requests, Sampled: sampled}
	}

	recordUsage(t, s, now,
		inc("team", 5, "a", 100, 10),
		inc("team", 5, "b", 50, 5),
		inc("team", 700, "a", 1, 1),
		inc("ops", 5, "a", 7, 3),
		inc("team", 9, "", 4, 2), // counted in the hour, under no rule
		inc("team", 10, "a", 0, 0),
	)
	// Another replica, in a batch with ledger updates; many increments of
	// one field in one batch.
	incs := []store.UsageIncrement{inc("team", 5, "a", 100, 10)}
	for range 100 {
		incs = append(incs, inc("team", 6, "c", 1, 1))
	}
	l := testLedgerConfig()
	sums, err := other.RecordReports(ctx, store.ReportBatch{Now: now, Ledger: l, Usage: incs,
		Rates: []store.RateUpdate{rateUpdate(l, now, "a", 3), rateUpdate(l, now, "a", 4)}})
	if err != nil {
		t.Fatalf("RecordReports(usage and rates): %v", err)
	}
	if !slices.Equal(fleetRates(sums), []float64{7, 7}) {
		t.Errorf("fleet rates = %v, want [7 7]", sums)
	}
	// The last hour of the month, reported by a client whose clock is in
	// another zone, where it is the next month already: months are UTC.
	lastHour := time.Date(2026, 4, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600))
	recordUsage(t, s, now, store.UsageIncrement{Budget: "team", Month: lastHour, Hour: 743, Rule: "b", Requests: 8, Sampled: 8})

	want := wantUsage{
		start:     march,
		hours:     map[int][2]float64{5: {250, 25}, 6: {100, 100}, 9: {4, 2}, 700: {1, 1}, 743: {8, 8}},
		rules:     map[string]budget.RuleUsage{"a": {Requests: 201, Sampled: 21}, "b": {Requests: 58, Sampled: 13}, "c": {Requests: 100, Sampled: 100}},
		ruleHours: map[string]map[int]float64{"a": {5: 200, 700: 1}, "b": {5: 50, 743: 8}, "c": {6: 100}},
	}
	for _, st := range []store.Store{s, other} {
		// Any instant of the month, in any zone, names it.
		checkUsage(t, "team", mustUsage(t, st, "team", time.Date(2026, 3, 20, 1, 2, 3, 4, time.FixedZone("Y", -7200))), want)
	}
	u := mustUsage(t, s, "team", march)
	if r, sampled := u.Totals(); r != 363 || sampled != 136 {
		t.Errorf("totals = %v/%v, want 363/136", r, sampled)
	}
	checkUsage(t, "ops", mustUsage(t, other, "ops", now), wantUsage{
		start: march, hours: map[int][2]float64{5: {7, 3}}, rules: map[string]budget.RuleUsage{"a": {Requests: 7, Sampled: 3}},
		ruleHours: map[string]map[int]float64{"a": {5: 7}},
	})
	checkUsage(t, "a budget without reports", mustUsage(t, s, "ghost", now), wantUsage{start: march})
}

// testReportKey: where the store remembers keys, a report batch sent again
// under its Key, to any replica, is applied once and answers the fleet rates
// as they are, and batches under other keys or none are applied each time.
// Every store says that a batch whose context ended before it started
// changed nothing, so that the caller may send it again.
func testReportKey(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	now := clk.Now()
	l := testLedgerConfig()
	batch := store.ReportBatch{Now: now, Ledger: l,
		Rates: []store.RateUpdate{rateUpdate(l, now, "a", 3)},
		Usage: []store.UsageIncrement{{Budget: "team", Month: now, Hour: 5, Rule: "a", Requests: 10, Sampled: 1}}}
	want := wantUsage{start: march}
	if b.RemembersKeys {
		for _, st := range []struct {
			name string
			st   store.Store
			key  string
			want float64
		}{
			{"first", s, "batch-1", 3},
			{"again", s, "batch-1", 3},
			{"again, to another replica", other, "batch-1", 3},
			{"another key", other, "batch-2", 6},
			{"no key", s, "", 9},
			{"no key again", s, "", 12},
		} {
			batch.Key = st.key
			sums, err := st.st.RecordReports(t.Context(), batch)
			if err != nil || !slices.Equal(fleetRates(sums), []float64{st.want}) {
				t.Errorf("%s: fleet rates %v (%v), want [%v]", st.name, sums, err, st.want)
			}
		}
		want.hours = map[int][2]float64{5: {40, 4}}
		want.rules = map[string]budget.RuleUsage{"a": {Requests: 40, Sampled: 4}}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	batch.Key = "batch-3"
	if _, err := s.RecordReports(ctx, batch); !errors.Is(err, context.Canceled) || !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("a cancelled batch: %v, want context.Canceled and ErrNotApplied", err)
	}
	checkUsage(t, "team", mustUsage(t, s, "team", now), want)
}

func testLedgerConfig() reservoir.Ledger {
	return reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
}

func rateUpdate(l reservoir.Ledger, now time.Time, rule string, rate float64) store.RateUpdate {
	return store.RateUpdate{Rule: rule, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: rate}}
}

func testUsageMonths(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	recordUsage(t, s, clk.Now(), store.UsageIncrement{Budget: "team", Month: clk.Now(), Hour: 11, Rule: "a", Requests: 10, Sampled: 5})
	marchWant := wantUsage{start: march, hours: map[int][2]float64{11: {10, 5}}, rules: map[string]budget.RuleUsage{"a": {Requests: 10, Sampled: 5}}}

	// A month on: April starts afresh, and March is left as it was.
	april := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	now := clk.Add(april.Sub(clk.Now()) + 90*time.Minute)
	recordUsage(t, other, now, store.UsageIncrement{Budget: "team", Month: now, Hour: 1, Rule: "a", Requests: 3, Sampled: 3})
	checkUsage(t, "March after April's first report", mustUsage(t, s, "team", march), marchWant)
	checkUsage(t, "April", mustUsage(t, s, "team", now), wantUsage{
		start: april, hours: map[int][2]float64{1: {3, 3}}, rules: map[string]budget.RuleUsage{"a": {Requests: 3, Sampled: 3}},
	})
	// February has 28 days and nothing in it.
	checkUsage(t, "February", mustUsage(t, other, "team", march.AddDate(0, 0, -1)), wantUsage{start: march.AddDate(0, -1, 0)})
}

func testUsageRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	now := clk.Now()
	l := testLedgerConfig()
	good := store.UsageIncrement{Budget: "team", Month: now, Hour: 1, Rule: "a", Requests: 1, Sampled: 1}
	recordUsage(t, s, now, good)
	tests := []struct {
		name string
		inc  store.UsageIncrement
	}{
		{"negative hour", store.UsageIncrement{Budget: "team", Month: now, Hour: -1, Requests: 1}},
		{"hour past the month", store.UsageIncrement{Budget: "team", Month: now, Hour: 744, Requests: 1}},
		{"hour past a short month", store.UsageIncrement{Budget: "team", Month: march.AddDate(0, 1, 3), Hour: 720, Requests: 1}},
		{"no budget", store.UsageIncrement{Month: now, Hour: 1, Requests: 1}},
		{"no month", store.UsageIncrement{Budget: "team", Hour: 1, Requests: 1}},
		{"negative count", store.UsageIncrement{Budget: "team", Month: now, Hour: 1, Requests: 1, Sampled: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.RecordReports(ctx, store.ReportBatch{
				Now: now, Ledger: l, Usage: []store.UsageIncrement{good, tt.inc}, Rates: []store.RateUpdate{rateUpdate(l, now, "r", 1)},
			})
			if err == nil {
				t.Fatal("RecordReports accepted the increment")
			}
			// Nothing of the batch was applied.
			checkUsage(t, "usage after a refused batch", mustUsage(t, s, "team", now), wantUsage{
				start: march, hours: map[int][2]float64{1: {1, 1}}, rules: map[string]budget.RuleUsage{"a": {Requests: 1, Sampled: 1}},
			})
			sums, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Ledger: l, Rates: []store.RateUpdate{rateUpdate(l, now, "r", 0)}})
			if err != nil || len(sums) != 1 || sums[0].Fleet != 0 {
				t.Errorf("ledger after a refused batch = %v, %v; want 0", sums, err)
			}
		})
	}
}

func testUsageReopen(t *testing.T, b Backend) {
	clk := newClock()
	s := b.Open(t, clk.Now)
	now := clk.Now()
	recordUsage(t, s, now, store.UsageIncrement{Budget: "team", Month: now, Hour: 3, Rule: "a", Requests: 10, Sampled: 4})
	recordUsage(t, s, now, store.UsageIncrement{Budget: "team", Month: now, Hour: 3, Rule: "a", Requests: 10, Sampled: 4})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Usage(t.Context(), "team", now); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Usage after Close: error = %v, want ErrUnavailable", err)
	}
	s2 := open(t, b, clk)
	want := wantUsage{start: march}
	if b.Durable {
		want.hours = map[int][2]float64{3: {20, 8}}
		want.rules = map[string]budget.RuleUsage{"a": {Requests: 20, Sampled: 8}}
	}
	checkUsage(t, "usage after reopening", mustUsage(t, s2, "team", now), want)
	// And it goes on adding up.
	recordUsage(t, s2, now, store.UsageIncrement{Budget: "team", Month: now, Hour: 3, Rule: "a", Requests: 1, Sampled: 1})
	if u := mustUsage(t, s2, "team", now); u.Requests[3] != want.hours[3][0]+1 {
		t.Errorf("hour 3 after reopening and reporting = %v, want %v", u.Requests[3], want.hours[3][0]+1)
	}
}

func testClaimTick(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	for _, tick := range []int64{1000, 1001, 1_700_000_000} {
		const claimers = 16
		won := make([]bool, claimers)
		errs := make([]error, claimers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range claimers {
			wg.Go(func() {
				<-start
				won[i], errs[i] = stores[i%len(stores)].ClaimTick(context.Background(), tick, time.Minute)
			})
		}
		close(start)
		wg.Wait()
		n := 0
		for i := range claimers {
			if errs[i] != nil {
				t.Fatalf("ClaimTick(%d): %v", tick, errs[i])
			}
			if won[i] {
				n++
			}
		}
		if n != 1 {
			t.Errorf("ClaimTick(%d): %d claims won, want 1", tick, n)
		}
	}
	if ok, err := stores[1].ClaimTick(t.Context(), 1000, time.Minute); ok || err != nil {
		t.Errorf("ClaimTick of a claimed tick = %v, %v; want false", ok, err)
	}
	if _, err := s.ClaimTick(t.Context(), 5, 0); err == nil {
		t.Error("ClaimTick accepted a ttl of 0")
	}
}

func newState(name string, factor float64, computed time.Time) budget.State {
	return budget.State{
		Budget:     name,
		MonthStart: march,
		Computed:   computed,
		BudgetUID:  "uid-" + name,
		Decision: budget.Decision{
			Spent: 1e6, Forecast: 3e6, ForecastUnenforced: 4e6,
			FixedRateFactor: factor, ReservoirFactor: 1, Exhausted: factor == 0,
			Rules: []budget.RulePlan{{Name: "a", Priority: -2, FixedRateFactor: factor, ReservoirFactor: 1, Reservoir: 3,
				Requests: 4e8, Forecast: 2e6, ForecastUnenforced: 3e6}},
			Explain: budget.Explain{Method: budget.MethodProfile, Profile: []float64{1, 2, 3}, Level: 1.2, Trend: 0.01,
				CurrentRate: 5, ExpectedRate: 4, Requests: 4e8},
			CoverageReserve: 10, LastHour: 1000,
			Memory: budget.Memory{Observed: computed.UTC(), Requests: 5e8, FirstSeen: march.Add(time.Hour), RecentRate: 7,
				Episode: 1, EpisodeOpen: true, LastEnforced: computed.UTC()},
		},
		Requests: 5e8,
		Rules:    map[string]budget.RuleUsage{"a": {Requests: 10, Sampled: 2}},
	}
}

func checkStates(t *testing.T, what string, got map[string]budget.State, want []budget.State) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d states, want %d: %+v", what, len(got), len(want), got)
	}
	for _, w := range want {
		g, ok := got[w.Budget]
		if !ok {
			t.Errorf("%s: no state for %q", what, w.Budget)
			continue
		}
		if !g.MonthStart.Equal(w.MonthStart) || !g.Computed.Equal(w.Computed) {
			t.Errorf("%s: %q times = %v, %v; want %v, %v", what, w.Budget, g.MonthStart, g.Computed, w.MonthStart, w.Computed)
		}
		if !g.BudgetCreated.Equal(w.BudgetCreated) {
			t.Errorf("%s: %q budget created %v, want %v", what, w.Budget, g.BudgetCreated, w.BudgetCreated)
		}
		g.MonthStart, g.Computed, w.MonthStart, w.Computed = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		g.BudgetCreated, w.BudgetCreated = time.Time{}, time.Time{}
		if len(g.Rules) == 0 && len(w.Rules) == 0 {
			g.Rules, w.Rules = nil, nil
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: state %+v, want %+v", what, g, w)
		}
	}
}

func testStates(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	got, err := s.States(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("States of a new store = %v, %v; want none", got, err)
	}
	first := []budget.State{newState("a", 0.5, clk.Now()), newState("b", 0, clk.Now())}
	first[1].Rules = nil
	if err := s.PutStates(ctx, first); err != nil {
		t.Fatalf("PutStates: %v", err)
	}
	got, err = other.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStates(t, "States", got, first)
	got["a"].Rules["a"] = budget.RuleUsage{} // callers own what they get
	first[0].Rules["a"] = budget.RuleUsage{Requests: 1}

	// The next states replace these: a budget left out has no state.
	second := []budget.State{newState("b", 0.25, clk.Add(10*time.Second))}
	if err := other.PutStates(ctx, second); err != nil {
		t.Fatal(err)
	}
	got, err = s.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStates(t, "States after new ones", got, second)
	if err := s.PutStates(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := other.States(ctx); err != nil || len(got) != 0 {
		t.Errorf("States after putting none = %v, %v; want none", got, err)
	}
}

// testHistory: every decision put is its hour's point of the budget's
// month, the last of the hour staying; any replica reads it back by hour.
func testHistory(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	if got, err := s.History(ctx, "a", march); err != nil || len(got) != 0 {
		t.Fatalf("History of a new store = %v, %v; want none", got, err)
	}
	at := func(hour int, minute int) time.Time {
		return march.Add(time.Duration(hour)*time.Hour + time.Duration(minute)*time.Minute)
	}
	put := func(st store.Store, states ...budget.State) {
		t.Helper()
		if err := st.PutStates(ctx, states); err != nil {
			t.Fatal(err)
		}
	}
	put(s, newState("a", 1, at(3, 0)), newState("b", 1, at(3, 0)))
	put(other, newState("a", 0.5, at(3, 59)))
	put(s, newState("a", 0.25, at(7, 10)))
	aprilState := newState("a", 0.1, march.AddDate(0, 1, 0).Add(time.Hour))
	aprilState.MonthStart = march.AddDate(0, 1, 0)
	put(other, aprilState)
	for _, st := range []store.Store{s, other} {
		got, err := st.History(ctx, "a", march.Add(5*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		want := []budget.HistoryPoint{
			{Hour: 3, Computed: at(3, 59), Spent: 1e6, Forecast: 3e6, ForecastUnenforced: 4e6, FixedRateFactor: 0.5, ReservoirFactor: 1},
			{Hour: 7, Computed: at(7, 10), Spent: 1e6, Forecast: 3e6, ForecastUnenforced: 4e6, FixedRateFactor: 0.25, ReservoirFactor: 1},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("History of a in March (-want +got):\n%s", diff)
		}
		if got, err := st.History(ctx, "a", aprilState.MonthStart); err != nil || len(got) != 1 || got[0].Hour != 1 {
			t.Errorf("History of a in April = %+v, %v; want hour 1", got, err)
		}
		if got, err := st.History(ctx, "b", march); err != nil || len(got) != 1 || got[0].Hour != 3 {
			t.Errorf("History of b = %+v, %v; want hour 3", got, err)
		}
	}
}

func newAlert(name string, kind budget.AlertKind, threshold float64, month, at time.Time) budget.Alert {
	return budget.Alert{
		Budget: name, Kind: kind, Threshold: threshold, Time: at, MonthStart: month,
		Spent: 617.25, Forecast: 1300.5, Cap: 1234.5, Currency: "EUR",
		Message: fmt.Sprintf("budget %s %s at %g", name, kind, threshold),
	}
}

// diffAlert describes how got differs from want, ignoring the ID.
func diffAlert(got, want budget.Alert) string {
	if !got.Time.Equal(want.Time) || !got.MonthStart.Equal(want.MonthStart) {
		return fmt.Sprintf("times %v, %v; want %v, %v", got.Time, got.MonthStart, want.Time, want.MonthStart)
	}
	got.Time, got.MonthStart, want.Time, want.MonthStart = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	got.ID, want.ID = "", ""
	if got != want {
		return fmt.Sprintf("got %+v\nwant %+v", got, want)
	}
	return ""
}

func mustFire(t *testing.T, s store.Store, a budget.Alert) budget.Alert {
	t.Helper()
	got, fired, err := s.FireAlert(t.Context(), a)
	if err != nil || !fired {
		t.Fatalf("FireAlert(%s) = %v, %v; want fired", a.DedupKey(), fired, err)
	}
	if got.ID == "" {
		t.Fatalf("FireAlert(%s) gave no ID", a.DedupKey())
	}
	if d := diffAlert(got, a); d != "" {
		t.Errorf("FireAlert(%s): %s", a.DedupKey(), d)
	}
	return got
}

// allAlerts lists every alert (or one budget's) in one page.
func allAlerts(t *testing.T, s store.Store, budgetName string) []budget.Alert {
	t.Helper()
	page, err := s.Alerts(t.Context(), budgetName, 1000, "")
	if err != nil {
		t.Fatalf("Alerts(%q): %v", budgetName, err)
	}
	if page.NextToken != "" {
		t.Fatalf("Alerts(%q): more than 1000", budgetName)
	}
	return page.Alerts
}

func alertIDs(as []budget.Alert) []string {
	out := make([]string, len(as))
	for i := range as {
		out[i] = as[i].ID
	}
	return out
}

func testFireAlertOnce(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	a := newAlert("team", budget.AlertSpend, 0.8, march, clk.Now())

	const firers = 16
	got := make([]budget.Alert, firers)
	fired := make([]bool, firers)
	errs := make([]error, firers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range firers {
		wg.Go(func() {
			<-start
			got[i], fired[i], errs[i] = stores[i%len(stores)].FireAlert(context.Background(), a)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range firers {
		switch {
		case errs[i] != nil:
			t.Fatalf("FireAlert %d: %v", i, errs[i])
		case fired[i] && winner >= 0:
			t.Errorf("FireAlert %d and %d both fired", winner, i)
		case fired[i]:
			winner = i
		case got[i] != (budget.Alert{}):
			t.Errorf("FireAlert %d of a repeat returned %+v, want the zero alert", i, got[i])
		}
	}
	if winner < 0 {
		t.Fatal("no FireAlert fired")
	}
	stored := got[winner]
	if stored.ID == "" {
		t.Error("the fired alert has no ID")
	}
	if d := diffAlert(stored, a); d != "" {
		t.Errorf("fired alert: %s", d)
	}
	for _, st := range stores {
		for _, name := range []string{"", "team"} {
			list := allAlerts(t, st, name)
			if len(list) != 1 || list[0].ID != stored.ID {
				t.Fatalf("Alerts(%q) = %+v, want the one fired alert %s", name, list, stored.ID)
			}
			if d := diffAlert(list[0], a); d != "" {
				t.Errorf("listed alert: %s", d)
			}
		}
	}
	// Later, with other figures, the same budget, month, kind and
	// threshold is still a repeat.
	later := a
	later.Time, later.Spent = clk.Add(24*time.Hour), 1000
	if _, fired, err := stores[1].FireAlert(t.Context(), later); fired || err != nil {
		t.Errorf("FireAlert a day later = %v, %v; want a repeat", fired, err)
	}
	if n := len(allAlerts(t, s, "")); n != 1 {
		t.Errorf("%d alerts after a repeat, want 1", n)
	}
}

func testAlertsFireSeparately(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	april := march.AddDate(0, 1, 0)
	alerts := []budget.Alert{
		newAlert("team", budget.AlertSpend, 0.5, march, clk.Add(time.Second)),
		newAlert("team", budget.AlertSpend, 0.8, march, clk.Add(time.Second)),
		newAlert("team", budget.AlertForecast, 0.8, march, clk.Add(time.Second)),
		newAlert("team", budget.AlertEnforcementStarted, 0, march, clk.Add(time.Second)),
		newAlert("team", budget.AlertExhausted, 1, march, clk.Add(time.Second)),
		newAlert("ops", budget.AlertSpend, 0.5, march, clk.Add(time.Second)),
		newAlert("team", budget.AlertSpend, 0.5, april, clk.Add(time.Second)),
	}
	var fired []budget.Alert
	for i, a := range alerts {
		fired = append(fired, mustFire(t, []store.Store{s, other}[i%2], a))
	}
	var want, team []string
	for i := len(fired) - 1; i >= 0; i-- {
		want = append(want, fired[i].ID)
		if fired[i].Budget == "team" {
			team = append(team, fired[i].ID)
		}
	}
	if got := alertIDs(allAlerts(t, s, "")); !slices.Equal(got, want) {
		t.Errorf("Alerts = %q, want %q (newest first)", got, want)
	}
	if got := alertIDs(allAlerts(t, other, "team")); !slices.Equal(got, team) {
		t.Errorf("Alerts(team) = %q, want %q", got, team)
	}
	if got := allAlerts(t, s, "ghost"); len(got) != 0 {
		t.Errorf("Alerts(unknown budget) = %+v, want none", got)
	}
}

func testAlertPaging(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	for i := range 23 {
		name := "team"
		if i%3 == 0 {
			name = "ops"
		}
		mustFire(t, s, newAlert(name, budget.AlertSpend, 0.01*float64(i+1), march, clk.Add(time.Second)))
	}
	all := allAlerts(t, s, "")
	ops := allAlerts(t, s, "ops")
	if len(all) != 23 || len(ops) != 8 {
		t.Fatalf("%d alerts, %d of ops; want 23 and 8", len(all), len(ops))
	}
	collectAlerts := func(t *testing.T, name string, pageSize int) []budget.Alert {
		size := pageSize
		if size == 0 {
			size = 100
		}
		var out []budget.Alert
		token := ""
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("paging does not end")
			}
			page, err := s.Alerts(t.Context(), name, pageSize, token)
			if err != nil {
				t.Fatalf("Alerts(%q, %d, page %d): %v", name, pageSize, pages, err)
			}
			if len(page.Alerts) > size || page.NextToken != "" && len(page.Alerts) != size {
				t.Fatalf("page %d has %d alerts (next %q), want a full page of %d before the last", pages, len(page.Alerts), page.NextToken, size)
			}
			out = append(out, page.Alerts...)
			if page.NextToken == "" {
				return out
			}
			token = page.NextToken
		}
	}
	tests := []struct {
		name     string
		budget   string
		pageSize int
		want     []budget.Alert
	}{
		{"one per page", "", 1, all},
		{"pages of 5", "", 5, all},
		{"exact fit", "", 23, all},
		{"default size", "", 0, all},
		{"one budget, pages of 3", "ops", 3, ops},
		{"one budget, exact fit", "ops", 8, ops},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := collectAlerts(t, tt.budget, tt.pageSize); !slices.Equal(alertIDs(got), alertIDs(tt.want)) {
				t.Fatalf("paged alerts %q, want %q", alertIDs(got), alertIDs(tt.want))
			}
		})
	}
	t.Run("while firing", func(t *testing.T) {
		first, err := s.Alerts(t.Context(), "", 4, "")
		if err != nil {
			t.Fatal(err)
		}
		mustFire(t, s, newAlert("team", budget.AlertExhausted, 1, march, clk.Add(time.Second)))
		got := first.Alerts
		for token := first.NextToken; token != ""; {
			page, err := s.Alerts(t.Context(), "", 4, token)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page.Alerts...)
			token = page.NextToken
		}
		if !slices.Equal(alertIDs(got), alertIDs(all)) {
			t.Fatalf("paged alerts %q, want %q", alertIDs(got), alertIDs(all))
		}
	})
}

func testAlertListingRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	for i := range 3 {
		mustFire(t, s, newAlert("team", budget.AlertSpend, float64(i+1)/4, march, clk.Add(time.Second)))
	}
	page, err := s.Alerts(ctx, "", 1, "")
	if err != nil || page.NextToken == "" {
		t.Fatalf("Alerts = %+v, %v; want a next page", page, err)
	}
	for _, n := range []string{"a", "b"} {
		mustCreateBudget(t, s, newBudget(n))
	}
	budgets, err := s.Budgets(ctx, 1, "")
	if err != nil || budgets.NextToken == "" {
		t.Fatalf("Budgets = %+v, %v; want a next page", budgets, err)
	}
	checkListingRefused(t, func(size int, token string) error {
		_, err := s.Alerts(ctx, "", size, token)
		return err
	}, page.NextToken, budgets.NextToken)
	makeEvents(t, s, clk, 3)
	events, err := s.RuleEvents(ctx, "", 1, "")
	if err != nil || events.NextToken == "" {
		t.Fatalf("RuleEvents = %+v, %v; want a next page", events, err)
	}
	if _, err := s.Alerts(ctx, "", 1, events.NextToken); err == nil {
		t.Error("Alerts accepted a token of RuleEvents")
	}
	if _, err := s.RuleEvents(ctx, "", 1, page.NextToken); err == nil {
		t.Error("RuleEvents accepted a token of Alerts")
	}
}

func testAlertsReopen(t *testing.T, b Backend) {
	clk := newClock()
	s := b.Open(t, clk.Now)
	a := newAlert("team", budget.AlertSpend, 0.5, march, clk.Now())
	fired := mustFire(t, s, a)
	mustCreateBudget(t, s, newBudget("kept"))
	if err := s.PutStates(t.Context(), []budget.State{newState("kept", 0.5, clk.Now())}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	clk.Add(time.Hour)
	s2 := open(t, b, clk)
	_, again, err := s2.FireAlert(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	list := allAlerts(t, s2, "")
	_, budgetErr := s2.Budget(t.Context(), "kept")
	if !b.Durable {
		if !again || len(list) != 1 || !errors.Is(budgetErr, store.ErrNotFound) {
			t.Errorf("a fresh store: fired %v, alerts %+v, budget error %v; want fired, one alert, no budget", again, list, budgetErr)
		}
		return
	}
	if again {
		t.Error("an alert fired again after reopening")
	}
	if len(list) != 1 || list[0].ID != fired.ID {
		t.Fatalf("alerts after reopening = %+v, want %s", list, fired.ID)
	}
	if budgetErr != nil {
		t.Errorf("budget after reopening: %v", budgetErr)
	}
	// The next alert still sorts newest first.
	next := mustFire(t, s2, newAlert("team", budget.AlertSpend, 0.8, march, clk.Now()))
	if got := alertIDs(allAlerts(t, s2, "team")); !slices.Equal(got, []string{next.ID, fired.ID}) {
		t.Errorf("alerts after reopening and firing = %q, want %q", got, []string{next.ID, fired.ID})
	}
}

func testWatchBudgetsAndAlerts(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	editor := peer(t, b, s, clk)
	ctx := t.Context()

	ch, _ := watch(t, s)
	waitTopic(t, ch, store.TopicRules, "on subscribing")
	edits := []struct {
		name  string
		edit  func() error
		topic store.Topic
	}{
		{"create budget", func() error { _, err := editor.CreateBudget(ctx, newBudget("w")); return err }, store.TopicBudgets},
		{"update budget", func() error { _, err := editor.UpdateBudget(ctx, newBudget("w"), 1); return err }, store.TopicBudgets},
		{"delete budget", func() error { return editor.DeleteBudget(ctx, "w", 0) }, store.TopicBudgets},
		{"put states", func() error { return editor.PutStates(ctx, []budget.State{newState("w", 1, clk.Now())}) }, store.TopicBudgets},
		{"fire alert", func() error {
			_, _, err := editor.FireAlert(ctx, newAlert("w", budget.AlertSpend, 0.5, march, clk.Now()))
			return err
		}, store.TopicAlerts},
	}
	for _, e := range edits {
		drain(ch)
		if err := e.edit(); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		waitTopic(t, ch, e.topic, "after "+e.name)
	}

	// Changes of different topics in quick succession: neither is lost
	// behind the other.
	drain(ch)
	if _, _, err := editor.FireAlert(ctx, newAlert("w", budget.AlertSpend, 0.8, march, clk.Now())); err != nil {
		t.Fatal(err)
	}
	if err := editor.PutStates(ctx, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[store.Topic]bool{}
	timeout := time.After(watchTimeout)
	for !seen[store.TopicAlerts] || !seen[store.TopicBudgets] {
		select {
		case topic := <-ch:
			seen[topic] = true
		case <-timeout:
			t.Fatalf("after an alert and new states: heard only %v within %v", seen, watchTimeout)
		}
	}
}

// testFleetUsage: the fleet's record keeps, besides a budget's, each rule's
// sampled traces per hour and its month per service, at most
// store.MaxFleetPairs pairs of service and rule; a pair already kept still
// counts when the bound is reached.
func testFleetUsage(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	now := clk.Now()
	inc := func(hour int, rule, service string, requests, sampled int64) store.UsageIncrement {
		return store.UsageIncrement{Budget: store.FleetUsage, Month: now, Hour: hour, Rule: rule, Service: service, Requests: requests, Sampled: sampled}
	}
	recordUsage(t, s, now, inc(5, "a", "shop", 100, 10), inc(5, "a", "ads", 50, 5), inc(6, "b", "shop", 10, 10))
	recordUsage(t, other, now, inc(6, "a", "shop", 1, 1))
	for _, st := range []store.Store{s, other} {
		u := mustUsage(t, st, store.FleetUsage, now)
		checkUsage(t, "fleet", u, wantUsage{
			start:     march,
			hours:     map[int][2]float64{5: {150, 15}, 6: {11, 11}},
			rules:     map[string]budget.RuleUsage{"a": {Requests: 151, Sampled: 16}, "b": {Requests: 10, Sampled: 10}},
			ruleHours: map[string]map[int]float64{"a": {5: 150, 6: 1}, "b": {6: 10}},
		})
		if got, want := u.RuleSampled["a"][5], 15.0; got != want || u.RuleSampled["b"][6] != 10 {
			t.Errorf("sampled per rule and hour: a@5 %v (want %v), b@6 %v (want 10)", got, want, u.RuleSampled["b"][6])
		}
		want := map[string]map[string]budget.RuleUsage{
			"a": {"shop": {Requests: 101, Sampled: 11}, "ads": {Requests: 50, Sampled: 5}},
			"b": {"shop": {Requests: 10, Sampled: 10}},
		}
		if diff := cmp.Diff(want, u.Services); diff != "" {
			t.Errorf("services (-want +got):\n%s", diff)
		}
	}
	if u := mustUsage(t, s, "budget", now); u.Services != nil || u.RuleSampled != nil {
		t.Errorf("a budget's usage has the fleet's fields: %+v %+v", u.Services, u.RuleSampled)
	}
	// A numbered report's fleet counts, its service's pair too, are kept
	// once, whichever replica gets it again.
	for _, st := range []store.Store{s, other, s} {
		batch := store.ReportBatch{Now: now, Sequenced: []store.SequencedUsage{{Client: "c", Seq: 1, Usage: []store.UsageIncrement{inc(9, "b", "ads", 4, 2)}}}}
		if _, err := st.RecordReports(t.Context(), batch); err != nil {
			t.Fatalf("RecordReports(numbered): %v", err)
		}
	}
	if u := mustUsage(t, other, store.FleetUsage, now); u.Services["b"]["ads"] != (budget.RuleUsage{Requests: 4, Sampled: 2}) ||
		u.RuleSampled["b"][9] != 2 || u.RuleRequests["b"][9] != 4 {
		t.Errorf("a numbered report sent three times: b/ads %v (want 4 requests, 2 sampled), sampled in hour 9 %v (want 2), requests %v (want 4)",
			u.Services["b"]["ads"], u.RuleSampled["b"][9], u.RuleRequests["b"][9])
	}
	// Fill the bound: the pairs past it are dropped, a kept one counts on.
	incs := make([]store.UsageIncrement, 0, store.MaxFleetPairs)
	for i := range store.MaxFleetPairs {
		incs = append(incs, inc(7, "c", fmt.Sprintf("svc-%d", i), 1, 0))
	}
	recordUsage(t, s, now, incs...)
	recordUsage(t, other, now, inc(8, "a", "shop", 1, 0), inc(8, "a", "new", 1, 0))
	u := mustUsage(t, s, store.FleetUsage, now)
	var pairs int
	for _, m := range u.Services {
		pairs += len(m)
	}
	if pairs != store.MaxFleetPairs || u.Services["a"]["shop"].Requests != 102 || u.Services["a"]["new"] != (budget.RuleUsage{}) {
		t.Errorf("%d pairs kept (want %d), a/shop %v (want 102 requests), a/new %v (want none)", pairs, store.MaxFleetPairs, u.Services["a"]["shop"], u.Services["a"]["new"])
	}
	if u.Requests[8] != 2 {
		t.Errorf("hour 8: %v requests, want 2: the hours count every report", u.Requests[8])
	}
}

// testSequencedUsage: the usage of a numbered report is applied only if its
// seq is above the highest the store recorded for its client, whichever
// store instance (replica) gets it, also twice in one batch; other clients
// and unnumbered usage are not affected; a bad seq or client, or a Seen
// that is not one entry per report, refuses the whole batch. The store
// says which reports it had seen before (Seen), for the replica to count
// its cuts of the reports it bills only.
func testSequencedUsage(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	now := clk.Now()
	l := testLedgerConfig()
	report := func(client string, seq uint64, sampled int64) store.SequencedUsage {
		return store.SequencedUsage{Client: client, Seq: seq, Usage: []store.UsageIncrement{
			{Budget: "team", Month: now, Hour: 5, Rule: "a", Requests: 10 * sampled, Sampled: sampled},
		}}
	}
	var sampled int64
	for _, tt := range []struct {
		name   string
		st     store.Store
		batch  []store.SequencedUsage
		usage  int64 // unnumbered, sampled
		bills  int64 // sampled counts the batch adds
		refuse bool
		alone  bool // without rate updates
		// seen is what the store must say of each numbered report: seen
		// before (billed nothing now) or not; nil: not asked.
		seen []bool
	}{
		{name: "first", st: s, batch: []store.SequencedUsage{report("c", 5, 1)}, bills: 1, seen: []bool{false}},
		{name: "again", st: s, batch: []store.SequencedUsage{report("c", 5, 1)}, seen: []bool{true}},
		{name: "again, to another replica", st: other, batch: []store.SequencedUsage{report("c", 5, 1)}, seen: []bool{true}},
		{name: "an older one", st: other, batch: []store.SequencedUsage{report("c", 4, 2)}, seen: []bool{true}},
		{name: "the next", st: other, batch: []store.SequencedUsage{report("c", 6, 4)}, bills: 4, seen: []bool{false}},
		{name: "another client, alone", st: s, batch: []store.SequencedUsage{report("d", 1, 8)}, bills: 8, alone: true, seen: []bool{false}},
		{name: "twice in a batch, with unnumbered usage", st: s, batch: []store.SequencedUsage{report("c", 7, 16), report("d", 1, 8), report("c", 7, 16)}, usage: 32, bills: 48, seen: []bool{false, true, true}},
		{name: "one new of two", st: other, batch: []store.SequencedUsage{report("c", 7, 16), report("c", 9, 64)}, bills: 64, seen: []bool{true, false}},
		{name: "two new of one client", st: other, batch: []store.SequencedUsage{report("c", 10, 256), report("c", 11, 512)}, bills: 768, seen: []bool{false, false}},
		{name: "the later of them again", st: s, batch: []store.SequencedUsage{report("c", 11, 512)}, seen: []bool{true}},
		{name: "no client", st: s, batch: []store.SequencedUsage{report("e", 1, 1), report("", 1, 1)}, refuse: true},
		{name: "seq 0", st: s, batch: []store.SequencedUsage{report("e", 1, 1), report("f", 0, 1)}, refuse: true},
		{name: "seq past MaxSeq", st: s, batch: []store.SequencedUsage{report("e", 1, 1), report("f", store.MaxSeq+1, 1)}, refuse: true},
		{name: "seq MaxSeq", st: s, batch: []store.SequencedUsage{report("f", store.MaxSeq, 1024)}, bills: 1024, seen: []bool{false}},
		{name: "seq MaxSeq again", st: other, batch: []store.SequencedUsage{report("f", store.MaxSeq, 1024)}, seen: []bool{true}},
		{name: "Seen too short", st: s, batch: []store.SequencedUsage{report("g", 1, 1), report("h", 1, 1)}, refuse: true, seen: []bool{false}},
	} {
		batch := store.ReportBatch{Now: now, Ledger: l, Rates: []store.RateUpdate{rateUpdate(l, now, "a", 1)}, Sequenced: tt.batch}
		if tt.alone {
			batch = store.ReportBatch{Now: now, Sequenced: tt.batch}
		}
		if tt.usage > 0 {
			batch.Usage = []store.UsageIncrement{{Budget: "team", Month: now, Hour: 5, Rule: "a", Requests: 10 * tt.usage, Sampled: tt.usage}}
		}
		if tt.seen != nil {
			// Each entry starts as the wrong answer: the store must set
			// every one.
			batch.Seen = make([]bool, len(tt.seen))
			for i, w := range tt.seen {
				batch.Seen[i] = !w
			}
		}
		_, err := tt.st.RecordReports(t.Context(), batch)
		if tt.refuse != (err != nil) {
			t.Fatalf("%s: RecordReports: %v, want refused %v", tt.name, err, tt.refuse)
		}
		if err == nil && tt.seen != nil {
			if diff := cmp.Diff(tt.seen, batch.Seen); diff != "" {
				t.Errorf("%s: Seen (-want +got):\n%s", tt.name, diff)
			}
		}
		sampled += tt.bills
		checkUsage(t, tt.name, mustUsage(t, s, "team", now), wantUsage{
			start: march, hours: map[int][2]float64{5: {float64(10 * sampled), float64(sampled)}},
			rules: map[string]budget.RuleUsage{"a": {Requests: 10 * sampled, Sampled: sampled}},
		})
	}
}
