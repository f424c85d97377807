package memstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, opts memstore.Options) *memstore.Store {
	t.Helper()
	s, err := memstore.New(opts)
	if err != nil {
		t.Fatalf("memstore.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Run("in memory", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) storetest.Backend {
			return storetest.Backend{
				Open: func(t *testing.T, now func() time.Time) store.Store {
					return open(t, memstore.Options{Now: now})
				},
				OpenLimited: func(t *testing.T, now func() time.Time, maxRules int) store.Store {
					return open(t, memstore.Options{Now: now, MaxRules: maxRules})
				},
				OpenTrimmed: func(t *testing.T, now func() time.Time, maxEvents int) store.Store {
					return open(t, memstore.Options{Now: now, MaxEvents: maxEvents})
				},
			}
		})
	})
	t.Run("with data dir", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) storetest.Backend {
			dir := t.TempDir()
			return storetest.Backend{
				Open: func(t *testing.T, now func() time.Time) store.Store {
					return open(t, memstore.Options{DataDir: dir, Now: now})
				},
				OpenLimited: func(t *testing.T, now func() time.Time, maxRules int) store.Store {
					return open(t, memstore.Options{DataDir: dir, Now: now, MaxRules: maxRules})
				},
				OpenTrimmed: func(t *testing.T, now func() time.Time, maxEvents int) store.Store {
					return open(t, memstore.Options{DataDir: dir, Now: now, MaxEvents: maxEvents})
				},
				Durable: true,
				Lose: func(t *testing.T) {
					if err := os.RemoveAll(dir); err != nil {
						t.Fatal(err)
					}
				},
			}
		})
	})
}

func TestMaxEvents(t *testing.T) {
	dir := t.TempDir()
	s := open(t, memstore.Options{DataDir: dir, MaxEvents: 5})
	ctx := t.Context()
	r, err := s.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if r, err = s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *memstore.Store) {
		t.Helper()
		page, err := s.RuleEvents(ctx, "", 100, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Events) != 5 || page.Events[0].After.Revision != 11 || page.Events[4].After.Revision != 7 {
			t.Fatalf("kept %d events, want the newest 5 (revisions 11 to 7): %+v", len(page.Events), page.Events)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(open(t, memstore.Options{DataDir: dir, MaxEvents: 5}))
}

// TestFailedWriteChangesNothing breaks the data directory so that writing
// the state fails at different steps, and checks that edits fail and leave
// memory, the state file and the directory as they were.
func TestFailedWriteChangesNothing(t *testing.T) {
	tests := []struct {
		name string
		// brk breaks dir and returns where the state file now is and how
		// to repair dir.
		brk func(t *testing.T, dir string) (saved string, repair func())
	}{
		{
			// Creating the temporary file fails.
			name: "directory replaced by a file",
			brk: func(t *testing.T, dir string) (string, func()) {
				moved := dir + ".moved"
				mustDo(t, os.Rename(dir, moved))
				mustDo(t, os.WriteFile(dir, nil, 0o600))
				return filepath.Join(moved, "rules.json"), func() {
					mustDo(t, os.Remove(dir))
					mustDo(t, os.Rename(moved, dir))
				}
			},
		},
		{
			// The temporary file is written, then renaming it fails.
			name: "state file replaced by a directory",
			brk: func(t *testing.T, dir string) (string, func()) {
				state := filepath.Join(dir, "rules.json")
				aside := filepath.Join(t.TempDir(), "rules.json")
				mustDo(t, os.Rename(state, aside))
				mustDo(t, os.MkdirAll(filepath.Join(state, "occupied"), 0o700))
				return aside, func() {
					mustDo(t, os.RemoveAll(state))
					mustDo(t, os.Rename(aside, state))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			s := open(t, memstore.Options{DataDir: dir})
			ctx := t.Context()
			if _, err := s.CreateRule(ctx, rules.Rule{Name: "before", Priority: 1}, "u"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateBudget(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1 * budget.MicrosPerUnit}); err != nil {
				t.Fatal(err)
			}
			want, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			saved, err := os.ReadFile(filepath.Join(dir, "rules.json"))
			if err != nil {
				t.Fatal(err)
			}

			savedAt, repair := tt.brk(t, dir)
			edits := map[string]func() error{
				"create": func() error {
					_, err := s.CreateRule(ctx, rules.Rule{Name: "after", Priority: 1}, "u")
					return err
				},
				"update": func() error {
					_, err := s.UpdateRule(ctx, rules.Rule{Name: "before", Priority: 2}, 1, "u")
					return err
				},
				"delete": func() error { return s.DeleteRule(ctx, "before", 0, "u") },
				"create budget": func() error {
					_, err := s.CreateBudget(ctx, budget.Budget{Name: "new", MonthlyAmountMicros: 1 * budget.MicrosPerUnit})
					return err
				},
				"update budget": func() error {
					_, err := s.UpdateBudget(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 2 * budget.MicrosPerUnit}, 1)
					return err
				},
				"delete budget": func() error { return s.DeleteBudget(ctx, "b", 0) },
				"fire alert": func() error {
					_, _, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 1})
					return err
				},
			}
			for name, edit := range edits {
				if err := edit(); err == nil {
					t.Errorf("%s succeeded although the state could not be written", name)
				}
			}
			got, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != want.Version || len(got.Rules) != len(want.Rules) || got.Rules[0].Revision != 1 {
				t.Fatalf("after failed edits: %+v, want %+v", got, want)
			}
			if page, err := s.RuleEvents(ctx, "", 0, ""); err != nil || len(page.Events) != 2 {
				t.Fatalf("after failed edits: events %+v, %v; want the 2 from before", page.Events, err)
			}
			if b, err := s.Budget(ctx, "b"); err != nil || b.Revision != 1 || b.MonthlyAmountMicros != budget.MicrosPerUnit {
				t.Fatalf("after failed edits: budget %+v, %v; want revision 1", b, err)
			}
			if _, err := s.Budget(ctx, "new"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after failed edits: a failed create left a budget (%v)", err)
			}
			if page, err := s.Alerts(ctx, "", 0, ""); err != nil || len(page.Alerts) != 0 {
				t.Fatalf("after failed edits: alerts %+v, %v; want none", page.Alerts, err)
			}
			if after, err := os.ReadFile(savedAt); err != nil || string(after) != string(saved) {
				t.Fatalf("state file changed by failed edits (err %v)", err)
			}

			repair()
			entries, err := os.ReadDir(dir)
			mustDo(t, err)
			for _, e := range entries {
				if e.Name() != "rules.json" && e.Name() != "rules.lock" {
					t.Errorf("failed edits left %s in the data directory", e.Name())
				}
			}
			// Edits work again, from the old state.
			if _, err := s.UpdateRule(ctx, rules.Rule{Name: "before", Priority: 2}, 1, "u"); err != nil {
				t.Fatalf("update after repair: %v", err)
			}
			if v, err := s.RulesVersion(ctx); err != nil || v != want.Version+1 {
				t.Errorf("version after repair = %d, %v; want %d", v, err, want.Version+1)
			}
			if _, fired, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 1}); err != nil || !fired {
				t.Errorf("alert after repair: fired %v, %v; want fired", fired, err)
			}

		})
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDataDirTakesOneStore(t *testing.T) {
	dir := t.TempDir()
	first := open(t, memstore.Options{DataDir: dir})
	if s, err := memstore.New(memstore.Options{DataDir: dir}); err == nil {
		_ = s.Close()
		t.Fatal("a second store opened a data directory in use")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, memstore.Options{DataDir: dir}) // free again after Close
}

func TestCorruptStateFile(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"not json", "{"},
		{"unknown format", `{"format": 99}`},
		{"unknown action", `{"format": 1, "last_seq": 1, "events": [{"seq": 1, "action": "explode"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "rules.json"), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := memstore.New(memstore.Options{DataDir: dir}); err == nil {
				_ = s.Close()
				t.Fatal("New accepted a corrupt state file")
			}
		})
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s := open(t, memstore.Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]error{
		"Ping":         s.Ping(ctx),
		"DeleteRule":   s.DeleteRule(ctx, "x", 0, "u"),
		"WatchChanges": s.WatchChanges(ctx, func(store.Topic) {}),
	}
	_, calls["Snapshot"] = s.Snapshot(ctx)
	_, calls["Rule"] = s.Rule(ctx, rules.DefaultName)
	_, calls["CreateRule"] = s.CreateRule(ctx, rules.Rule{Name: "x", Priority: 1}, "u")
	_, calls["RulesVersion"] = s.RulesVersion(ctx)
	_, calls["RuleEvents"] = s.RuleEvents(ctx, "", 0, "")
	_, calls["RecordReports"] = s.RecordReports(ctx, store.ReportBatch{})
	_, calls["Budgets"] = s.Budgets(ctx, 0, "")
	_, calls["Budget"] = s.Budget(ctx, "b")
	_, calls["CreateBudget"] = s.CreateBudget(ctx, budget.Budget{Name: "b"})
	_, calls["UpdateBudget"] = s.UpdateBudget(ctx, budget.Budget{Name: "b"}, 1)
	calls["DeleteBudget"] = s.DeleteBudget(ctx, "b", 0)
	_, calls["Usage"] = s.Usage(ctx, "b", time.Now())
	_, calls["ClaimTick"] = s.ClaimTick(ctx, 1, time.Second)
	calls["PutStates"] = s.PutStates(ctx, nil)
	_, calls["States"] = s.States(ctx)
	_, _, calls["FireAlert"] = s.FireAlert(ctx, budget.Alert{Budget: "b"})
	_, calls["Alerts"] = s.Alerts(ctx, "", 0, "")
	for name, err := range calls {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s after Close: error = %v, want ErrUnavailable", name, err)
		}
	}
}

// TestMaxRulesOverTheLimit: a store cannot be opened to hold more rules than
// an SDK is sure to accept.
func TestMaxRulesOverTheLimit(t *testing.T) {
	if _, err := memstore.New(memstore.Options{MaxRules: rules.MaxRules + 1}); err == nil {
		t.Error("New with MaxRules over rules.MaxRules succeeded")
	}
}
