package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSumAndValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "v_total"}, []string{"rule", "code"})
	unused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unused_total"}, []string{"rule"})
	reg.MustRegister(c, g, vec, unused)
	c.Add(3)
	g.Set(-2)
	vec.WithLabelValues("a", "ok").Add(1)
	vec.WithLabelValues("a", "bad").Add(2)
	vec.WithLabelValues("b", "ok").Add(4)

	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", nil, 3},
		{"g", nil, -2},
		{"v_total", nil, 7},
		{"v_total", []string{"rule", "a"}, 3},
		{"v_total", []string{"code", "ok"}, 5},
		{"v_total", []string{"rule", "a", "code", "ok"}, 1},
	} {
		if got := Value(t, reg, tt.name, tt.labels...); got != tt.want {
			t.Errorf("Value(%s, %q) = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
		if got := Sum(t, reg, tt.name, tt.labels...); got != tt.want {
			t.Errorf("Sum(%s, %q) = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, tt := range []struct {
		name   string
		labels []string
	}{
		{"unused_total", nil},
		{"missing_total", nil},
		{"v_total", []string{"rule", "c"}},
		{"v_total", []string{"rule", "b", "code", "bad"}},
	} {
		if got := Sum(t, reg, tt.name, tt.labels...); got != 0 {
			t.Errorf("Sum(%s, %q) = %v, want 0", tt.name, tt.labels, got)
		}
		ft := &fatalT{TB: t}
		func() {
			defer func() { _ = recover() }()
			Value(ft, reg, tt.name, tt.labels...)
		}()
		if !ft.failed {
			t.Errorf("Value(%s, %q) did not fail the test", tt.name, tt.labels)
		}
	}
}

// fatalT records a Fatal instead of ending the test.
type fatalT struct {
	testing.TB
	failed bool
}

func (f *fatalT) Fatalf(string, ...any) { f.failed = true; panic(f) }

func (f *fatalT) Helper() {}
