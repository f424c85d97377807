// Package budgettest fills every field of a budget, for the tests that
// check a field is carried through every layer (the API mapping, the
// budgets file, the CLI's output, the store's records, the edit masks, the
// server): a field added to budget.Budget is filled here without anyone
// listing it, so a layer that drops it fails those tests. It is the budget's
// twin of rules/rulestest.
package budgettest

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
)

// StoreSet are the fields of budget.Budget that the server or the store
// sets, not the client: a layer that takes a budget from a client leaves
// them out.
var StoreSet = []string{"UID", "Generation", "Revision", "CreateTime", "UpdateTime", "UpdatedBy"}

// Filled returns a budget with every field set to a value of its own that
// budget.Validate accepts and Normalize leaves as it is, seed making the
// values differ between calls (Mode too: AlertOnly for odd seeds, Enforce
// for even ones). It fails tb for a field whose type it has no filler for:
// add one, and check that every layer carries the field.
func Filled(tb testing.TB, seed int) budget.Budget {
	tb.Helper()
	var b budget.Budget
	f := filler{tb: tb, seed: seed, n: seed * 100}
	f.fill(reflect.ValueOf(&b).Elem(), "Budget")
	if err := budget.Validate(&b); err != nil {
		tb.Fatalf("budgettest.Filled made an invalid budget (fix its fillers): %v", err)
	}
	if !reflect.DeepEqual(b.Normalize(), b) {
		tb.Fatalf("budgettest.Filled made a budget that Normalize changes (fix its fillers): %+v", b)
	}
	return b
}

type filler struct {
	tb   testing.TB
	seed int
	n    int
}

// byPath fills the fields whose valid values their type does not say.
var byPath = map[string]func(k, seed int) any{
	"Budget.Currency": func(k, _ int) any { return "X" + string(rune('A'+k%26)) + string(rune('A'+k/26%26)) },
	// An amount the floor's cost fits in.
	"Budget.MonthlyAmountMicros":   func(k, _ int) any { return int64(k+1) * 1_000 * budget.MicrosPerUnit },
	"Budget.Mode":                  func(_, seed int) any { return budget.Mode(seed % 2) },
	"Budget.Channels.WebhookURL":   func(k, _ int) any { return "https://hooks" + strconv.Itoa(k) + ".example/f" + strconv.Itoa(k) },
	"Budget.Priorities.RuleLabels": func(k, _ int) any { return map[string]string{"k" + strconv.Itoa(k): "v" + strconv.Itoa(k)} },
}

// fill sets every field of the struct v, each to the next value of f.n.
func (f *filler) fill(v reflect.Value, path string) {
	f.tb.Helper()
	for i := range v.NumField() {
		fv, sf := v.Field(i), v.Type().Field(i)
		f.n++
		k := f.n
		name := path + "." + sf.Name
		if mk, ok := byPath[name]; ok {
			fv.Set(reflect.ValueOf(mk(k, f.seed)))
			continue
		}
		switch fv.Interface().(type) {
		case string:
			fv.SetString("f" + strconv.Itoa(k)) // a valid name, glob and text
		case int32, int64:
			fv.SetInt(int64(k%999 + 1)) // a priority, minutes within a day, micros
		case float64:
			fv.SetFloat(1 / float64(k%1000+2)) // a share or multiple in (0, 1)
		case []float64:
			fv.Set(reflect.ValueOf([]float64{1 / float64(k%1000+2)}))
		case []string:
			fv.Set(reflect.ValueOf([]string{"f" + strconv.Itoa(k)}))
		case map[string]string:
			fv.Set(reflect.ValueOf(map[string]string{"k" + strconv.Itoa(k): "v" + strconv.Itoa(k)}))
		case time.Time:
			fv.Set(reflect.ValueOf(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k) * time.Hour)))
		case budget.Scope:
			f.fill(fv, name)
		case []budget.Channel, []budget.RulePriority:
			// One element, its fields filled; the path names the list's
			// elements without an index.
			fv.Set(reflect.MakeSlice(sf.Type, 1, 1))
			f.fill(fv.Index(0), name)
		default:
			f.tb.Fatalf("budgettest: no filler for %s (%s): add one, and carry the field through every layer", name, sf.Type)
		}
	}
}

// Without returns b with the fields named (of StoreSet, say) zero.
func Without(tb testing.TB, b budget.Budget, fields ...string) budget.Budget {
	tb.Helper()
	v := reflect.ValueOf(&b).Elem()
	for _, name := range fields {
		f := v.FieldByName(name)
		if !f.IsValid() {
			tb.Fatalf("budgettest.Without: budget.Budget has no field %s", name)
		}
		f.SetZero()
	}
	return b
}

// FieldNames returns the names of budget.Budget's fields.
func FieldNames() []string {
	t := reflect.TypeFor[budget.Budget]()
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = t.Field(i).Name
	}
	return names
}
