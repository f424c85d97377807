package controller

import (
	"math"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
)

// TestRecentRateFromFirstTraffic: a rule's recent rate in scope counts an
// hour from when the budget's traffic started, if it started in that
// hour, and at least a minute. Before, traffic that started at 10:46 had
// its requests spread over the 46 minutes before it: 600 requests a
// minute in were 0.22 requests a second, not 10, and the scope's part of
// the reservoir (this rate over the ledger's) was a fiftieth of what it
// was.
func TestRecentRateFromFirstTraffic(t *testing.T) {
	month := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(hour, min, sec int) time.Time {
		return month.Add(time.Duration(hour)*time.Hour + time.Duration(min)*time.Minute + time.Duration(sec)*time.Second)
	}
	usage := func(hours ...float64) *budget.Usage {
		return &budget.Usage{MonthStart: month, RuleRequests: map[string][]float64{"r": hours}}
	}
	for _, c := range []struct {
		name  string
		u     *budget.Usage
		since time.Time
		now   time.Time
		want  float64
	}{
		{"started unknown: the hour so far", usage(0, 600), time.Time{}, at(1, 46, 0), 600.0 / (46 * 60)},
		{"started at 10:45, a minute ago", usage(0, 600), at(1, 45, 0), at(1, 46, 0), 10},
		{"started 10 s ago: a minute at least", usage(0, 600), at(1, 45, 50), at(1, 46, 0), 10},
		{"started before the hour", usage(0, 600), at(0, 30, 0), at(1, 46, 0), 600.0 / (46 * 60)},
		{"the last hour, started 10 minutes before its end", usage(0, 3000, 100), at(1, 50, 0), at(2, 0, 30), 5},
		{"the last hour, whole", usage(0, 3600, 100), time.Time{}, at(2, 0, 30), 1},
		{"started in the future (a clock ahead)", usage(0, 600), at(1, 50, 0), at(1, 46, 0), 600.0 / (46 * 60)},
	} {
		if got := recentRate(c.u, "r", c.since, c.now); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: %v requests/s, want %v", c.name, got, c.want)
		}
	}
}
