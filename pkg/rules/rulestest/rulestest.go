// Package rulestest fills every field of a rule, for the tests that check a
// field is carried through every layer (the API mapping, the files, the
// stores, the CLI's output): a field added to rules.Rule is filled here
// without anyone listing it, so a layer that drops it fails those tests.
package rulestest

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// StoreSet are the fields of rules.Rule that the store sets, not the
// client: a layer that takes a rule from a client leaves them out.
var StoreSet = []string{"Revision", "RulesVersion", "CreateTime", "UpdateTime"}

// Filled returns a rule with every field set to a value of its own that
// rules.Validate accepts (an expiry in 2030 and later), seed making the
// values differ between calls. It fails tb for a field whose type it has
// no filler for: add one, and check that every layer carries the field.
func Filled(tb testing.TB, seed int) rules.Rule {
	tb.Helper()
	var r rules.Rule
	n := seed * 100
	fill(tb, reflect.ValueOf(&r).Elem(), "Rule", &n)
	if err := rules.Validate(&r); err != nil {
		tb.Fatalf("rulestest.Filled made an invalid rule (fix its fillers): %v", err)
	}
	return r
}

// fill sets every field of the struct v, each to the next value of *n.
func fill(tb testing.TB, v reflect.Value, path string, n *int) {
	tb.Helper()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		*n++
		k := *n
		name := path + "." + sf.Name
		switch f.Interface().(type) {
		case string:
			f.SetString("f" + strconv.Itoa(k)) // a valid name, glob and text
		case int32, int64:
			f.SetInt(int64(k%9999 + 1)) // a priority too
		case float64:
			f.SetFloat(1 / float64(k%1000+2)) // a rate in (0, 1)
		case map[string]string:
			f.Set(reflect.ValueOf(map[string]string{"k" + strconv.Itoa(k): "v" + strconv.Itoa(k)}))
		case time.Time:
			f.Set(reflect.ValueOf(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k) * time.Hour)))
		case time.Duration:
			f.SetInt(int64(time.Duration(k%1440) * time.Minute)) // whole minutes, within a day
		case *rules.RateBoost:
			b := &rules.RateBoost{}
			fill(tb, reflect.ValueOf(b).Elem(), name, n)
			f.Set(reflect.ValueOf(b))
		default:
			tb.Fatalf("rulestest: no filler for %s (%s): add one, and carry the field through every layer", name, sf.Type)
		}
	}
}

// Without returns r with the fields named (of StoreSet, say) zero.
func Without(tb testing.TB, r rules.Rule, fields ...string) rules.Rule {
	tb.Helper()
	v := reflect.ValueOf(&r).Elem()
	for _, name := range fields {
		f := v.FieldByName(name)
		if !f.IsValid() {
			tb.Fatalf("rulestest.Without: rules.Rule has no field %s", name)
		}
		f.SetZero()
	}
	return r
}
