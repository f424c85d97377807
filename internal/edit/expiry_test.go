package edit_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestExpiry: an expiry time must be in the future when a create or an
// update sets it, by the editor's clock; a rule whose expiry has passed
// (awaiting deletion) can still have its other fields changed.
func TestExpiry(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	now := clk.Now() // the time the rules below are made at
	st, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := edit.NewRules(st, edit.WithClock(clk.Now))
	ctx := admin(t)
	soon := now.Add(30 * time.Minute)
	if _, err := e.Create(ctx, rules.Rule{Name: "debug", Priority: 1, FixedRate: 1, ExpireTime: soon}); err != nil {
		t.Fatalf("create with an expiry in 30 minutes: %v", err)
	}
	tests := []struct {
		name  string
		do    func() error
		field string // of the violation; "" for success
		err   error
	}{
		{"create already expired", func() error {
			_, err := e.Create(ctx, rules.Rule{Name: "late", Priority: 1, ExpireTime: now})
			return err
		}, "expire_time", nil},
		{"update to an expiry in the past", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: "debug", ExpireTime: now.Add(-time.Second)}, []string{"expire_time"}, 0)
			return err
		}, "expire_time", nil},
		{"a full update carries the expiry the rule has", func() error {
			r, err := e.Get(ctx, "debug")
			if err != nil {
				return err
			}
			r.Description = "still going"
			_, err = e.Update(ctx, r, nil, 0)
			return err
		}, "", nil},
		{"the Default rule never expires", func() error {
			_, err := e.Update(ctx, rules.Rule{Name: rules.DefaultName, ExpireTime: soon}, []string{"expire_time"}, 0)
			return err
		}, "", rules.ErrDefaultRule},
		{"a batch create already expired", func() error {
			_, err := e.Batch(ctx, edit.Batch{Creates: []rules.Rule{{Name: "b", Priority: 1, ExpireTime: now.Add(-time.Hour)}}})
			return err
		}, "creates[0].expire_time", nil},
		{"a batch update to an expiry in the past", func() error {
			_, err := e.Batch(ctx, edit.Batch{Updates: []edit.Patch{{Rule: rules.Rule{Name: "debug", ExpireTime: now}, Fields: []string{"expire_time"}}}})
			return err
		}, "updates[0].expire_time", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			var ve *rules.ValidationError
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Errorf("error = %v, want %v", err, tt.err)
				}
			case tt.field == "":
				if err != nil {
					t.Errorf("error = %v, want none", err)
				}
			case !errors.As(err, &ve) || ve.Violations[0].Field != tt.field:
				t.Errorf("error = %v, want a violation of %s", err, tt.field)
			}
		})
	}

	// Once the expiry has passed, other fields still change.
	clk.Set(soon.Add(time.Minute))
	got, err := e.Update(ctx, rules.Rule{Name: "debug", FixedRate: 0.5}, []string{"fixed_rate"}, 0)
	if err != nil || got.FixedRate != 0.5 || !got.ExpireTime.Equal(soon) {
		t.Errorf("update of an expired rule's fixed rate: %+v, %v", got, err)
	}
	// And the expiry can be removed, or moved into the future.
	if got, err := e.Update(ctx, rules.Rule{Name: "debug"}, []string{"expire_time"}, 0); err != nil || !got.ExpireTime.IsZero() {
		t.Errorf("removing the expiry: %+v, %v", got, err)
	}
}
