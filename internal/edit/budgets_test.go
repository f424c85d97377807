package edit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

// listBudgets returns every budget as stored.
func listBudgets(t *testing.T, st edit.BudgetStore) []budget.Budget {
	t.Helper()
	page, err := st.Budgets(t.Context(), 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	return page.Budgets
}

func TestBudgetCreateAndUpdate(t *testing.T) {
	ctx := admin(t)
	changes := 0
	e := edit.NewBudgets(newStore(t), edit.BudgetOptions{Changed: func() { changes++ }})
	created, err := e.Create(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 100 * budget.MicrosPerUnit, Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	// Created normalized, as a new incarnation, by the principal.
	if created.UID == "" || created.UpdatedBy != "static:root" || created.Currency != budget.DefaultCurrency {
		t.Errorf("created %+v", created)
	}
	// Only the named field changes; the rest keeps the stored values. The
	// description is no money: the generation stays.
	updated, err := e.Update(ctx, budget.Budget{Name: "shop", Description: "new", MonthlyAmountMicros: 1}, []string{"description"}, created.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Description != "new" || updated.MonthlyAmountMicros != created.MonthlyAmountMicros || updated.Generation != created.Generation || updated.UID != created.UID {
		t.Errorf("after a description update: %+v", updated)
	}
	// A new amount starts a new generation: its alerts are due again.
	moved, err := e.Update(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 200 * budget.MicrosPerUnit}, []string{"monthly_amount_micros"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Generation != created.Generation+1 {
		t.Errorf("generation %d after a new amount, want %d", moved.Generation, created.Generation+1)
	}
	// A stale etag is a conflict, and changes nothing.
	if _, err := e.Update(ctx, budget.Budget{Name: "shop", Description: "x"}, []string{"description"}, created.Revision); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update at a stale revision: %v, want ErrConflict", err)
	}
	if err := e.Delete(ctx, "shop", created.Revision); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete at a stale revision: %v, want ErrConflict", err)
	}
	got, err := e.Get(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(moved, got); diff != "" {
		t.Errorf("a refused edit changed the budget (-want +got):\n%s", diff)
	}
	if err := e.Delete(ctx, "shop", moved.Revision); err != nil {
		t.Fatal(err)
	}
	// Each edit made (create, two updates, delete) asked this replica to
	// take it up; the refused ones did not.
	if changes != 4 {
		t.Errorf("Changed called %d times, want 4", changes)
	}
	// A budget created again under the name is another incarnation.
	again, err := e.Create(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 1})
	if err != nil || again.UID == created.UID {
		t.Errorf("created again: UID %q (the first %q), %v", again.UID, created.UID, err)
	}
}

func TestBudgetRefusals(t *testing.T) {
	ctx := admin(t)
	st := newStore(t)
	egress, err := budget.NewEgress(budget.EgressOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := edit.NewBudgets(st, edit.BudgetOptions{Egress: egress})
	if _, err := e.Create(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 1}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		do   func() error
		want func(error) bool
	}{
		{"create invalid", func() error {
			_, err := e.Create(ctx, budget.Budget{Name: "x", MonthlyAmountMicros: -1})
			return err
		}, isViolation("monthly_amount_micros")},
		{"create a webhook inside the network", func() error {
			_, err := e.Create(ctx, budget.Budget{Name: "x", MonthlyAmountMicros: 1, Channels: []budget.Channel{{WebhookURL: "http://127.0.0.1/hook"}}})
			return err
		}, isViolation("channels[0].webhook_url")},
		{"create with a redacted URL", func() error {
			_, err := e.Create(ctx, budget.Budget{Name: "x", MonthlyAmountMicros: 1, Channels: []budget.Channel{{WebhookURL: budget.RedactURL("https://h.example/long-secret-path")}}})
			return err
		}, isViolation("channels[0].webhook_url")},
		{"create twice", func() error {
			_, err := e.Create(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 1})
			return err
		}, func(err error) bool { return errors.Is(err, store.ErrAlreadyExists) }},
		{"update an unknown field", func() error {
			_, err := e.Update(ctx, budget.Budget{Name: "shop"}, []string{"uid"}, 0)
			return err
		}, isViolation("uid")},
		{"update to invalid", func() error {
			_, err := e.Update(ctx, budget.Budget{Name: "shop", Currency: "usd"}, []string{"currency_code"}, 0)
			return err
		}, isViolation("currency_code")},
		{"update a missing budget", func() error {
			_, err := e.Update(ctx, budget.Budget{Name: "nope"}, []string{"description"}, 0)
			return err
		}, func(err error) bool { return errors.Is(err, store.ErrNotFound) }},
		{"delete a missing budget", func() error { return e.Delete(ctx, "nope", 0) },
			func(err error) bool { return errors.Is(err, store.ErrNotFound) }},
		{"bad name", func() error { _, err := e.Get(ctx, ""); return err }, isViolation("name")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := listBudgets(t, st)
			if err := tt.do(); !tt.want(err) {
				t.Errorf("got %v", err)
			}
			if diff := cmp.Diff(before, listBudgets(t, st)); diff != "" {
				t.Errorf("a refused edit changed the budgets (-before +after):\n%s", diff)
			}
		})
	}
}

// racingBudgets lands another edit between the editor's read and its
// write, a given number of times.
type racingBudgets struct {
	*memstore.Store
	races int
}

func (s *racingBudgets) UpdateBudget(ctx context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error) {
	if s.races > 0 {
		s.races--
		cur, err := s.Store.Budget(ctx, b.Name)
		if err != nil {
			return budget.Budget{}, err
		}
		cur.Description = "someone else"
		if _, err := s.Store.UpdateBudget(ctx, cur, cur.Revision); err != nil {
			return budget.Budget{}, err
		}
	}
	return s.Store.UpdateBudget(ctx, b, ifRevision)
}

func TestBudgetUpdateWithoutEtagRetries(t *testing.T) {
	ctx := admin(t)
	tests := []struct {
		races    int
		conflict bool
	}{
		{races: 1},
		{races: edit.UpdateRetries},
		{races: edit.UpdateRetries + 1, conflict: true},
	}
	for _, tt := range tests {
		st := &racingBudgets{Store: newStore(t)}
		e := edit.NewBudgets(st, edit.BudgetOptions{})
		if _, err := e.Create(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1}); err != nil {
			t.Fatal(err)
		}
		st.races = tt.races
		got, err := e.Update(ctx, budget.Budget{Name: "b", FreeTraces: 7}, []string{"free_traces"}, 0)
		if tt.conflict {
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("%d races: %v, want ErrConflict", tt.races, err)
			}
			continue
		}
		if err != nil || got.FreeTraces != 7 || got.Description != "someone else" {
			t.Errorf("%d races: %+v, %v; want the other edit kept and free_traces 7", tt.races, got, err)
		}
	}
}

// TestBudgetScope: a principal scoped to shop-* edits only budgets whose
// service globs lie within it (a budget without services covers every
// service), judged on the budget as stored and as changed; a refused edit
// changes nothing, and the budget records its last editor.
func TestBudgetScope(t *testing.T) {
	st := newStore(t)
	e := edit.NewBudgets(st, edit.BudgetOptions{})
	root := admin(t)
	for _, b := range []budget.Budget{
		{Name: "shop", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop-cart"}}},
		{Name: "payments", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"payments"}}},
		{Name: "all", MonthlyAmountMicros: 1},
	} {
		if _, err := e.Create(root, b); err != nil {
			t.Fatal(err)
		}
	}
	team := auth.NewContext(t.Context(), &auth.Principal{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}, Kind: auth.KindToken})
	scope := func(services ...string) budget.Budget {
		return budget.Budget{Scope: budget.Scope{Services: services}}
	}
	named := func(name string, b budget.Budget) budget.Budget { b.Name = name; return b }
	tests := []struct {
		name string
		ctx  context.Context
		do   func(ctx context.Context) error
		want error // nil: allowed
		// edited is the budget an allowed edit leaves, last edited by the
		// principal.
		edited string
	}{
		{"create within", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, budget.Budget{Name: "shop-eu", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop-*-eu"}}})
			return err
		}, nil, "shop-eu"},
		{"create outside", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, budget.Budget{Name: "pay2", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop-a", "payments"}}})
			return err
		}, auth.ErrPermissionDenied, ""},
		{"create for every service", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, budget.Budget{Name: "every", MonthlyAmountMicros: 1})
			return err
		}, auth.ErrPermissionDenied, ""},
		{"update within", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, budget.Budget{Name: "shop", FreeTraces: 5}, []string{"free_traces"}, 0)
			return err
		}, nil, "shop"},
		{"update a budget outside", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, budget.Budget{Name: "payments", FreeTraces: 5}, []string{"free_traces"}, 0)
			return err
		}, auth.ErrPermissionDenied, ""},
		{"update a budget of every service", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, budget.Budget{Name: "all", FreeTraces: 5}, []string{"free_traces"}, 0)
			return err
		}, auth.ErrPermissionDenied, ""},
		{"update moving a budget out", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, named("shop", scope("payments")), []string{"scope"}, 0)
			return err
		}, auth.ErrPermissionDenied, ""},
		{"update narrowing another's budget in", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, named("payments", scope("shop-pay")), []string{"scope"}, 0)
			return err
		}, auth.ErrPermissionDenied, ""},
		{"delete outside", team, func(ctx context.Context) error { return e.Delete(ctx, "payments", 0) }, auth.ErrPermissionDenied, ""},
		{"no principal", t.Context(), func(ctx context.Context) error {
			_, err := e.Create(ctx, budget.Budget{Name: "anon", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop-cart"}}})
			return err
		}, auth.ErrUnauthenticated, ""},
		{"delete within", team, func(ctx context.Context) error { return e.Delete(ctx, "shop-eu", 0) }, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := listBudgets(t, st)
			err := tt.do(tt.ctx)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, b := range listBudgets(t, st) {
					if b.Name == tt.edited && b.UpdatedBy != "token:shop-editor" {
						t.Errorf("budget %q last edited by %q, want token:shop-editor", b.Name, b.UpdatedBy)
					}
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if diff := cmp.Diff(before, listBudgets(t, st)); diff != "" {
				t.Errorf("a refused edit changed the budgets (-before +after):\n%s", diff)
			}
		})
	}
}

// TestBudgetSecretsSealed: with a key, webhook secrets are stored sealed;
// an update of another field keeps the secret, sealed again; a channel
// sent back as answers show it (URL redacted, secret masked) keeps its URL
// and secret.
func TestBudgetSecretsSealed(t *testing.T) {
	ctx := admin(t)
	st := newStore(t)
	box, err := secrets.NewBox(make([]byte, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	e := edit.NewBudgets(st, edit.BudgetOptions{Secrets: box})
	url := "https://hooks.example/services/T000/B000/XXXXXXXX"
	if _, err := e.Create(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1, Channels: []budget.Channel{{WebhookURL: url, Secret: "s3cret"}}}); err != nil {
		t.Fatal(err)
	}
	opened := func() budget.Channel {
		t.Helper()
		b, err := st.Budget(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		if s := b.Channels[0].Secret; !secrets.IsSealed(s) {
			t.Fatalf("secret stored as %q, not sealed", s)
		}
		open, err := budget.OpenSecrets(b, box)
		if err != nil {
			t.Fatal(err)
		}
		return open.Channels[0]
	}
	want := budget.Channel{WebhookURL: url, Secret: "s3cret"}
	if got := opened(); got != want {
		t.Errorf("created channel %+v, want %+v", got, want)
	}
	if _, err := e.Update(ctx, budget.Budget{Name: "b", Description: "d"}, []string{"description"}, 0); err != nil {
		t.Fatal(err)
	}
	if got := opened(); got != want {
		t.Errorf("after a description update the channel is %+v, want %+v", got, want)
	}
	asShown := budget.Channel{WebhookURL: budget.RedactURL(url), Secret: budget.SecretMask}
	if _, err := e.Update(ctx, budget.Budget{Name: "b", Channels: []budget.Channel{asShown}}, []string{"channels"}, 0); err != nil {
		t.Fatal(err)
	}
	if got := opened(); got != want {
		t.Errorf("after the channels sent back as shown the channel is %+v, want %+v", got, want)
	}
}
