package edit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func seed(t *testing.T, e *edit.Rules, names ...string) map[string]rules.Rule {
	t.Helper()
	out := map[string]rules.Rule{}
	for i, n := range names {
		r, err := e.Create(admin(t), rules.Rule{Name: n, Priority: int32(10 + i), FixedRate: 0.1, ReservoirSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		out[n] = r
	}
	return out
}

func TestBatch(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	have := seed(t, e, "a", "b", "c")
	before, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Batch(ctx, edit.Batch{
		Creates: []rules.Rule{{Name: "new", Priority: 5, FixedRate: 1, URLPath: "/checkout"}},
		Updates: []edit.Patch{
			{Rule: rules.Rule{Name: "a", FixedRate: 0.5, URLPath: "/ignored"}, Fields: []string{"fixed_rate"}, IfRevision: have["a"].Revision},
			{Rule: rules.Rule{Name: rules.DefaultName, FixedRate: 0.01}, Fields: []string{"fixed_rate"}},
		},
		Deletes: []edit.Deletion{{Name: "b", IfRevision: have["b"].Revision}, {Name: "c"}},
		Message: "from rules.yaml",
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if res.Version != before.Version+1 {
		t.Errorf("version = %d, want %d", res.Version, before.Version+1)
	}
	if len(res.Created) != 1 || res.Created[0].Name != "new" || res.Created[0].URLPath != "/checkout" || res.Created[0].HTTPMethod != "*" || res.Created[0].Revision != 1 {
		t.Errorf("created = %+v, want rule new, normalized, at revision 1", res.Created)
	}
	if len(res.Updated) != 2 || res.Updated[0].FixedRate != 0.5 || res.Updated[0].Priority != 10 || res.Updated[0].Revision != 2 || res.Updated[1].FixedRate != 0.01 {
		t.Errorf("updated = %+v, want a's fixed rate only, then Default's", res.Updated)
	}
	snap, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range snap.Rules {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"new", "a", rules.DefaultName}, names); diff != "" {
		t.Errorf("rules after the batch (-want +got):\n%s", diff)
	}
	page, err := e.Events(ctx, "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range page.Events[:5] {
		if ev.Actor != "static:root" || ev.Message != "from rules.yaml" || ev.RulesVersion != res.Version {
			t.Errorf("event %+v, want actor static:root (the caller), the message and version %d", ev, res.Version)
		}
	}
}

func TestBatchRefused(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	have := seed(t, e, "a", "b")
	ok := rules.Rule{Name: "ok", Priority: 1}
	long := make([]rules.Rule, store.MaxBatchEdits+1)
	for i := range long {
		long[i] = rules.Rule{Name: fmt.Sprintf("r%d", i), Priority: 1}
	}
	full := make([]rules.Rule, rules.MaxRules)
	for i := range full {
		full[i] = rules.Rule{Name: fmt.Sprintf("f%d", i), Priority: 1}
	}
	tests := []struct {
		name   string
		batch  edit.Batch
		fields []string // the violations' fields; nil: not a validation error
		want   error
		in     string // the error names this edit
	}{
		{name: "every bad field of every edit", batch: edit.Batch{
			Creates: []rules.Rule{ok, {Name: "x", Priority: 0, FixedRate: 2}},
			Updates: []edit.Patch{{Rule: rules.Rule{Name: "a"}, Fields: []string{"name"}}, {Rule: rules.Rule{Name: ""}}},
			Deletes: []edit.Deletion{{Name: rules.DefaultName}, {Name: "bad name!"}},
		}, fields: []string{"creates[1].priority", "creates[1].fixed_rate", "updates[0].update_mask", "updates[1].name", "deletes[0].name", "deletes[1].name"}},
		{name: "one rule twice", batch: edit.Batch{
			Creates: []rules.Rule{ok},
			Deletes: []edit.Deletion{{Name: "a"}, {Name: "ok"}},
			Updates: []edit.Patch{{Rule: rules.Rule{Name: "a", FixedRate: 0.2}, Fields: []string{"fixed_rate"}}},
		}, fields: []string{"deletes[0].name", "deletes[1].name"}},
		{name: "create the Default rule", batch: edit.Batch{Creates: []rules.Rule{{Name: rules.DefaultName}}}, fields: []string{"creates[0].name"}},
		{name: "an update that makes a bad rule", batch: edit.Batch{Creates: []rules.Rule{ok}, Updates: []edit.Patch{
			{Rule: rules.Rule{Name: "a", FixedRate: -1}, Fields: []string{"fixed_rate"}},
			{Rule: rules.Rule{Name: "b", ReservoirSize: -1}, Fields: []string{"reservoir_size"}},
		}}, fields: []string{"updates[0].fixed_rate", "updates[1].reservoir_size"}},
		{name: "too many edits", batch: edit.Batch{Creates: long}, fields: []string{"creates"}},
		{name: "a create that exists", batch: edit.Batch{Creates: []rules.Rule{ok, {Name: "b", Priority: 2}}}, want: store.ErrAlreadyExists, in: "creates[1]"},
		{name: "an update of a missing rule", batch: edit.Batch{Creates: []rules.Rule{ok}, Updates: []edit.Patch{{Rule: rules.Rule{Name: "nope"}}}}, want: store.ErrNotFound, in: "updates[0]"},
		{name: "a stale etag", batch: edit.Batch{Creates: []rules.Rule{ok}, Updates: []edit.Patch{{Rule: rules.Rule{Name: "a", Priority: 3}, IfRevision: have["a"].Revision + 1}}}, want: store.ErrConflict, in: "updates[0]"},
		{name: "a delete of a missing rule", batch: edit.Batch{Creates: []rules.Rule{ok}, Deletes: []edit.Deletion{{Name: "nope"}}}, want: store.ErrNotFound, in: "deletes[0]"},
		{name: "a stale etag on a delete", batch: edit.Batch{Deletes: []edit.Deletion{{Name: "a"}, {Name: "b", IfRevision: 7}}}, want: store.ErrConflict, in: "deletes[1]"},
		{name: "narrowing the Default rule", batch: edit.Batch{Updates: []edit.Patch{{Rule: rules.Rule{Name: rules.DefaultName, URLPath: "/x"}, Fields: []string{"url_path"}}}}, want: rules.ErrDefaultRule, in: "updates[0]"},
		{name: "past the rule limit", batch: edit.Batch{Creates: full}, want: store.ErrRuleLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := e.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Batch(ctx, tt.batch)
			var ve *rules.ValidationError
			switch {
			case tt.fields != nil:
				if !errors.As(err, &ve) {
					t.Fatalf("error = %v, want violations of %v", err, tt.fields)
				}
				var got []string
				for _, v := range ve.Violations {
					got = append(got, v.Field)
				}
				if diff := cmp.Diff(tt.fields, got); diff != "" {
					t.Errorf("violations (-want +got):\n%s\n%v", diff, err)
				}
			case !errors.Is(err, tt.want):
				t.Errorf("error = %v, want %v", err, tt.want)
			case tt.in != "" && !strings.Contains(err.Error(), tt.in):
				t.Errorf("error %q does not name %s", err, tt.in)
			}
			after, err := e.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after.Version != before.Version || len(after.Rules) != len(before.Rules) {
				t.Errorf("a refused batch changed the rules: version %d → %d, %d → %d rules", before.Version, after.Version, len(before.Rules), len(after.Rules))
			}
		})
	}
}

func TestBatchValidateOnly(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	seed(t, e, "a")
	before, _ := e.Snapshot(ctx)
	res, err := e.Batch(ctx, edit.Batch{
		Creates:      []rules.Rule{{Name: "n", Priority: 2}},
		Updates:      []edit.Patch{{Rule: rules.Rule{Name: "a", FixedRate: 0.7}, Fields: []string{"fixed_rate"}}},
		ValidateOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != before.Version || res.Updated[0].FixedRate != 0.7 || res.Created[0].Name != "n" {
		t.Errorf("ValidateOnly result = %+v", res)
	}
	after, _ := e.Snapshot(ctx)
	if after.Version != before.Version || len(after.Rules) != len(before.Rules) {
		t.Errorf("ValidateOnly changed the rules")
	}
}

// racingBatchStore lands another edit of a rule between the editor's read
// and its batch, a given number of times.
type racingBatchStore struct {
	*racingStore
}

func (s *racingBatchStore) ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error) {
	if s.races > 0 {
		s.races--
		cur, err := s.Store.Rule(ctx, "r")
		if err != nil {
			return store.BatchResult{}, err
		}
		cur.Description = "someone else"
		if _, err := s.Store.UpdateRule(ctx, cur, cur.Revision, "other"); err != nil {
			return store.BatchResult{}, err
		}
	}
	return s.Store.ApplyRuleEdits(ctx, edits, actor, message)
}

func TestBatchRetriesWithoutEtags(t *testing.T) {
	ctx := admin(t)
	tests := []struct {
		name     string
		races    int
		etag     bool
		conflict bool
	}{
		{name: "one race", races: 1},
		{name: "as many races as retries", races: edit.UpdateRetries},
		{name: "more races than retries", races: edit.UpdateRetries + 1, conflict: true},
		{name: "an etag is not retried", races: 1, etag: true, conflict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &racingBatchStore{&racingStore{Store: newStore(t)}}
			e := edit.NewRules(st)
			r := seed(t, e, "r")["r"]
			st.races = tt.races
			p := edit.Patch{Rule: rules.Rule{Name: "r", FixedRate: 0.3}, Fields: []string{"fixed_rate"}}
			if tt.etag {
				p.IfRevision = r.Revision
			}
			res, err := e.Batch(ctx, edit.Batch{Updates: []edit.Patch{p}})
			if tt.conflict {
				if !errors.Is(err, store.ErrConflict) {
					t.Errorf("%v, want ErrConflict", err)
				}
				return
			}
			if err != nil || res.Updated[0].FixedRate != 0.3 || res.Updated[0].Description != "someone else" {
				t.Errorf("%+v, %v; want the other edit kept and fixed_rate 0.3", res, err)
			}
		})
	}
}

// TestBatchScope: a batch is checked as its single edits are: a team's
// editor may not create, update or delete a rule outside its services in a
// batch either, and a refused batch changes nothing.
func TestBatchScope(t *testing.T) {
	e := edit.NewRules(newStore(t))
	for _, r := range []rules.Rule{{Name: "shop", Priority: 1, ServiceName: "shop-cart"}, {Name: "payments", Priority: 2, ServiceName: "payments"}} {
		if _, err := e.Create(admin(t), r); err != nil {
			t.Fatal(err)
		}
	}
	team := auth.NewContext(t.Context(), &auth.Principal{Name: "shop-editor", Role: auth.RoleEditor, Services: []string{"shop-*"}, Kind: auth.KindToken})
	tests := []struct {
		name  string
		batch edit.Batch
		ok    bool
	}{
		{"create within", edit.Batch{Creates: []rules.Rule{{Name: "shop-2", Priority: 3, ServiceName: "shop-api"}}}, true},
		{"create outside", edit.Batch{Creates: []rules.Rule{{Name: "pay-2", Priority: 3, ServiceName: "payments"}}}, false},
		{"update outside", edit.Batch{Updates: []edit.Patch{{Rule: rules.Rule{Name: "payments", FixedRate: 0.5}, Fields: []string{"fixed_rate"}}}}, false},
		{"update moving out", edit.Batch{Updates: []edit.Patch{{Rule: rules.Rule{Name: "shop", ServiceName: "payments"}, Fields: []string{"service_name"}}}}, false},
		{"delete outside", edit.Batch{Deletes: []edit.Deletion{{Name: "payments"}}}, false},
		{"within, with one outside", edit.Batch{
			Updates: []edit.Patch{{Rule: rules.Rule{Name: "shop", FixedRate: 0.3}, Fields: []string{"fixed_rate"}}},
			Deletes: []edit.Deletion{{Name: "payments"}},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := e.Snapshot(admin(t))
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Batch(team, tt.batch)
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, auth.ErrPermissionDenied) {
				t.Fatalf("Batch: %v, want allowed %v (else PERMISSION_DENIED)", err, tt.ok)
			}
			after, err := e.Snapshot(admin(t))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.ok && after.Version != before.Version {
				t.Errorf("a refused batch moved the rules version from %d to %d", before.Version, after.Version)
			}
		})
	}
}
