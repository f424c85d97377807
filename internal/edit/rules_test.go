package edit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
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

func TestCreateAndUpdate(t *testing.T) {
	ctx := t.Context()
	e := edit.NewRules(newStore(t))
	created, err := e.Create(ctx, rules.Rule{Name: "checkout", Priority: 10, FixedRate: 0.5, ReservoirSize: 2, URLPath: "/checkout"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Only the named field changes; the rest keeps the stored values.
	updated, err := e.Update(ctx, rules.Rule{Name: "checkout", FixedRate: 0.2, URLPath: "/ignored"}, []string{"fixed_rate"}, created.Revision, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if updated.FixedRate != 0.2 || updated.URLPath != "/checkout" || updated.Priority != 10 || updated.Revision != created.Revision+1 {
		t.Errorf("after a fixed_rate update: %+v", updated)
	}
	// A stale etag is a conflict, and changes nothing.
	if _, err := e.Update(ctx, rules.Rule{Name: "checkout", FixedRate: 0.9}, []string{"fixed_rate"}, created.Revision, "bob"); !errors.Is(err, store.ErrConflict) {
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
	ctx := t.Context()
	e := edit.NewRules(newStore(t))
	tests := []struct {
		name string
		do   func() error
		want func(error) bool
	}{
		{"create Default", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: rules.DefaultName, Priority: 1}, "a")
			return err
		}, func(err error) bool { return errors.Is(err, store.ErrAlreadyExists) }},
		{"create invalid", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: "x", Priority: 1, FixedRate: 1.5}, "a")
			return err
		}, isViolation("fixed_rate")},
		{"narrow Default", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName, URLPath: "/only"}, []string{"url_path"}, 0, "a")
			return err
		}, func(err error) bool { return errors.Is(err, rules.ErrDefaultRule) }},
		{"delete Default", func() error { return e.Delete(ctx, rules.DefaultName, 0, "a") },
			func(err error) bool { return errors.Is(err, rules.ErrDefaultRule) }},
		{"update an unknown field", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName}, []string{"name"}, 0, "a")
			return err
		}, isViolation("name")},
		{"update a missing rule", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: "nope", FixedRate: 0.1}, []string{"fixed_rate"}, 0, "a")
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
	ctx := t.Context()
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
		if _, err := e.Create(ctx, rules.Rule{Name: "r", Priority: 1, FixedRate: 0.1}, "a"); err != nil {
			t.Fatal(err)
		}
		st.races = tt.races
		got, err := e.Update(ctx, rules.Rule{Name: "r", FixedRate: 0.3}, []string{"fixed_rate"}, 0, "a")
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
