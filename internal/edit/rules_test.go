package edit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func newStore(t *testing.T) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// admin is a context whose principal may edit every rule.
func admin(t *testing.T) context.Context {
	return auth.NewContext(t.Context(), &auth.Principal{Name: "root", Role: auth.RoleAdmin, Kind: auth.KindStatic})
}

func TestCreateAndUpdate(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	created, err := e.Create(ctx, rules.Rule{Name: "checkout", Priority: 10, FixedRate: 0.5, ReservoirSize: 2, URLPath: "/checkout"})
	if err != nil {
		t.Fatal(err)
	}
	// Only the named field changes; the rest keeps the stored values.
	updated, err := e.Update(ctx, rules.Rule{Name: "checkout", FixedRate: 0.2, URLPath: "/ignored"}, []string{"fixed_rate"}, created.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if updated.FixedRate != 0.2 || updated.URLPath != "/checkout" || updated.Priority != 10 || updated.Revision != created.Revision+1 {
		t.Errorf("after a fixed_rate update: %+v", updated)
	}
	// A stale etag is a conflict, and changes nothing.
	if _, err := e.Update(ctx, rules.Rule{Name: "checkout", FixedRate: 0.9}, []string{"fixed_rate"}, created.Revision); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update at a stale revision: %v, want ErrConflict", err)
	}
	got, err := e.Get(ctx, "checkout")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(updated, got); diff != "" {
		t.Errorf("a refused update changed the rule (-want +got):\n%s", diff)
	}
}

func TestRefusals(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	tests := []struct {
		name string
		do   func() error
		want func(error) bool
	}{
		{"create Default", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: rules.DefaultName, Priority: 1})
			return err
		}, func(err error) bool { return errors.Is(err, store.ErrAlreadyExists) }},
		{"create invalid", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: "x", Priority: 1, FixedRate: 1.5})
			return err
		}, isViolation("fixed_rate")},
		{"narrow Default", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName, URLPath: "/only"}, []string{"url_path"}, 0)
			return err
		}, func(err error) bool { return errors.Is(err, rules.ErrDefaultRule) }},
		{"boost Default", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName, Boost: &rules.RateBoost{MaxRate: 1}}, []string{"sampling_rate_boost"}, 0)
			return err
		}, func(err error) bool { return errors.Is(err, rules.ErrDefaultRule) }},
		{"create a reserved tag", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: "x", Priority: 1, Tags: map[string]string{"aws:x": "y"}})
			return err
		}, isViolation("tags.aws:x")},
		{"delete Default", func() error { return e.Delete(ctx, rules.DefaultName, 0) },
			func(err error) bool { return errors.Is(err, rules.ErrDefaultRule) }},
		{"update an unknown field", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName}, []string{"name"}, 0)
			return err
		}, isViolation("name")},
		{"update a missing rule", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: "nope", FixedRate: 0.1}, []string{"fixed_rate"}, 0)
			return err
		}, func(err error) bool { return errors.Is(err, store.ErrNotFound) }},
		{"bad name", func() error { _, err := e.Get(ctx, ""); return err }, isViolation("name")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := e.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.do(); !tt.want(err) {
				t.Errorf("got %v", err)
			}
			after, err := e.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if before.Version != after.Version {
				t.Errorf("a refused edit moved the rules version from %d to %d", before.Version, after.Version)
			}
		})
	}
}

func isViolation(field string) func(error) bool {
	return func(err error) bool {
		var ve *rules.ValidationError
		return errors.As(err, &ve) && len(ve.Violations) > 0 && ve.Violations[0].Field == field
	}
}

// racingStore lands another edit between the editor's read and its write,
// a given number of times.
type racingStore struct {
	*memstore.Store
	races int
}

func (s *racingStore) UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error) {
	if s.races > 0 {
		s.races--
		cur, err := s.Store.Rule(ctx, r.Name)
		if err != nil {
			return rules.Rule{}, err
		}
		cur.Description = "someone else"
		if _, err := s.Store.UpdateRule(ctx, cur, cur.Revision, "other"); err != nil {
			return rules.Rule{}, err
		}
	}
	return s.Store.UpdateRule(ctx, r, ifRevision, actor)
}

func TestUpdateWithoutEtagRetries(t *testing.T) {
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
		st := &racingStore{Store: newStore(t)}
		e := edit.NewRules(st)
		if _, err := e.Create(ctx, rules.Rule{Name: "r", Priority: 1, FixedRate: 0.1}); err != nil {
			t.Fatal(err)
		}
		st.races = tt.races
		got, err := e.Update(ctx, rules.Rule{Name: "r", FixedRate: 0.3}, []string{"fixed_rate"}, 0)
		if tt.conflict {
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("%d races: %v, want ErrConflict", tt.races, err)
			}
			continue
		}
		if err != nil || got.FixedRate != 0.3 || got.Description != "someone else" {
			t.Errorf("%d races: %+v, %v; want the other edit kept and fixed_rate 0.3", tt.races, got, err)
		}
	}
}

// TestScope: a principal scoped to shop-* edits only rules whose service
// glob lies within it, judged on the rule as stored and as changed; a
// refused edit changes nothing, and the audit log records the principal.
func TestScope(t *testing.T) {
	st := newStore(t)
	e := edit.NewRules(st)
	root := admin(t)
	for _, r := range []rules.Rule{
		{Name: "shop", Priority: 1, FixedRate: 0.1, ServiceName: "shop-cart"},
		{Name: "payments", Priority: 2, FixedRate: 0.1, ServiceName: "payments"},
	} {
		if _, err := e.Create(root, r); err != nil {
			t.Fatal(err)
		}
	}
	team := auth.NewContext(t.Context(), &auth.Principal{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}, Kind: auth.KindToken})
	tests := []struct {
		name string
		ctx  context.Context
		do   func(ctx context.Context) error
		want error // nil: allowed
	}{
		{"create within", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, rules.Rule{Name: "shop-eu", Priority: 3, FixedRate: 0.1, ServiceName: "shop-*-eu"})
			return err
		}, nil},
		{"create outside", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, rules.Rule{Name: "pay2", Priority: 3, FixedRate: 0.1, ServiceName: "payments"})
			return err
		}, auth.ErrPermissionDenied},
		{"create for every service", team, func(ctx context.Context) error {
			_, err := e.Create(ctx, rules.Rule{Name: "all", Priority: 3, FixedRate: 0.1})
			return err
		}, auth.ErrPermissionDenied},
		{"update within", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, rules.Rule{Name: "shop", FixedRate: 0.2}, []string{"fixed_rate"}, 0)
			return err
		}, nil},
		{"update a rule outside", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, rules.Rule{Name: "payments", FixedRate: 0.2}, []string{"fixed_rate"}, 0)
			return err
		}, auth.ErrPermissionDenied},
		{"update moving a rule out", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, rules.Rule{Name: "shop", ServiceName: "payments"}, []string{"service_name"}, 0)
			return err
		}, auth.ErrPermissionDenied},
		{"update moving a rule in", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, rules.Rule{Name: "payments", ServiceName: "shop-pay"}, []string{"service_name"}, 0)
			return err
		}, auth.ErrPermissionDenied},
		{"update the Default rule", team, func(ctx context.Context) error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName, FixedRate: 1}, []string{"fixed_rate"}, 0)
			return err
		}, auth.ErrPermissionDenied},
		{"delete outside", team, func(ctx context.Context) error { return e.Delete(ctx, "payments", 0) }, auth.ErrPermissionDenied},
		{"no principal", t.Context(), func(ctx context.Context) error {
			_, err := e.Create(ctx, rules.Rule{Name: "anon", Priority: 3, FixedRate: 0.1, ServiceName: "shop-cart"})
			return err
		}, auth.ErrUnauthenticated},
		{"delete within", team, func(ctx context.Context) error { return e.Delete(ctx, "shop-eu", 0) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := st.RulesVersion(root)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.do(tt.ctx)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				page, err := e.Events(root, "", 1, "")
				if err != nil || len(page.Events) != 1 || page.Events[0].Actor != "token:shop-editor" {
					t.Errorf("newest audit event %+v (%v), want actor token:shop-editor", page.Events, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if after, err := st.RulesVersion(root); err != nil || after != before {
				t.Errorf("a refused edit moved the rules version from %d to %d (%v)", before, after, err)
			}
		})
	}
}
