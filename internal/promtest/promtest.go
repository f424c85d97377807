// Package promtest reads what a test's metrics registry holds, so that a
// test states a counter's value instead of walking the gathered families.
// (client_golang's testutil would do, but it adds a requirement to go.mod.)
package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sum returns the sum of the series of the counter, gauge or untyped
// metric name in g whose labels include every pair of labels (name,
// value, name, value…): all its series without labels. It returns 0 when
// no series matches, as a vector has none before its first use.
func Sum(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, _ := sum(t, g, name, labels)
	return v
}

// Value is Sum of a series that must be there: it fails the test when no
// series matches, so that a misspelt name or label cannot read as 0.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, n := sum(t, g, name, labels)
	if n == 0 {
		t.Fatalf("no series of %s with labels %q", name, labels)
	}
	return v
}

// sum returns the sum and the number of the matching series.
func sum(t testing.TB, g prometheus.Gatherer, name string, labels []string) (float64, int) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("labels %q: want name, value pairs", labels)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	var n int
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v += m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				v += m.GetUntyped().GetValue()
			default:
				t.Fatalf("%s is a %v, not a counter or a gauge", name, mf.GetType())
			}
			n++
		}
	}
	return v, n
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
