package budgettest_test

import (
	"reflect"
	"testing"

	"github.com/tracesampling/controlplane/internal/budget/budgettest"
)

// TestFilledSetsEveryField: no field is left zero, and two seeds differ in
// every field (the mask tests rely on both).
func TestFilledSetsEveryField(t *testing.T) {
	a, b := budgettest.Filled(t, 1), budgettest.Filled(t, 2)
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		if va.Field(i).IsZero() {
			t.Errorf("Filled(1) leaves %s zero", name)
		}
		if reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			t.Errorf("Filled(1) and Filled(2) have the same %s", name)
		}
	}
}
