package faults

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRecovery(t *testing.T) {
	tests := []struct {
		name      string
		rates     []float64
		from, to  int
		off, back int
	}{
		{"never left", []float64{1, 1, 1.1, 0.9, 1}, 2, 3, -1, 2},
		{"one stray window is not a departure", []float64{1, 1, 1, 3, 1, 1}, 2, 3, 3, 2},
		{"left and came back", []float64{1, 1, 3, 2, 1, 1, 1, 1}, 2, 4, 2, 4},
		{"back during the fault", []float64{1, 1, 3, 3, 1, 1, 1, 1}, 2, 6, 2, 4},
		{"left again after the fault", []float64{1, 1, 3, 3, 1, 1, 3, 3, 1, 1}, 2, 4, 2, 8},
		{"a stray window after coming back", []float64{1, 1, 3, 3, 1, 0.5, 1, 1}, 2, 3, 2, 4},
		{"did not come back", []float64{1, 1, 3, 3, 1, 1, 2, 2}, 2, 4, 2, -1},
		{"off before the fault does not count", []float64{3, 3, 1, 1}, 2, 3, -1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, back := recovery(tt.rates, tt.from, tt.to, 0.25)
			if diff := cmp.Diff([2]int{tt.off, tt.back}, [2]int{off, back}); diff != "" {
				t.Errorf("recovery (-want +got): [off back]\n%s", diff)
			}
		})
	}
}

func TestBackText(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{"never left", Result{Rates: make([]float64, 10), FaultFrom: 3, FaultTo: 5, Off: -1, Back: 3, Window: 1e9}, "never left"},
		{"stray windows only", Result{Rates: make([]float64, 10), FaultFrom: 3, FaultTo: 5, Off: 4, Back: 3, Window: 1e9}, "never left for two windows in a row"},
		{"after the end", Result{Rates: make([]float64, 10), FaultFrom: 3, FaultTo: 5, Off: 3, Back: 7, Window: 1e9}, "2s after it ended"},
		{"before the end", Result{Rates: make([]float64, 10), FaultFrom: 3, FaultTo: 6, Off: 3, Back: 5, Window: 1e9}, "2s after it began, before it ended"},
		{"not back", Result{Rates: make([]float64, 10), FaultFrom: 3, FaultTo: 5, Off: 3, Back: -1, Window: 2e9}, "not within 10s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.backText(); got != tt.want {
				t.Errorf("backText() = %q, want %q", got, tt.want)
			}
		})
	}
}
