package jaeger

import (
	"fmt"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/pkg/clocktest"
)

func newTestEstimator(maxPollers int) (*Estimator, *clocktest.Clock) {
	c := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	return NewEstimator(EstimatorOptions{Window: time.Minute, MaxPollers: maxPollers, Now: c.Now}), c
}

func TestEstimatorCountsDistinctPollersPerService(t *testing.T) {
	e, c := newTestEstimator(0)
	steps := []struct {
		after             time.Duration
		service, poller   string
		want, wantTracked int
	}{
		{0, "shop", "10.0.0.1", 1, 1},
		{time.Second, "shop", "10.0.0.2", 2, 2},
		{time.Second, "shop", "10.0.0.1", 2, 2},          // the same poller again
		{time.Second, "billing", "10.0.0.1", 1, 3},       // one address, another service
		{time.Minute, "shop", "10.0.0.3", 3, 4},          // a window later the others still count
		{30 * time.Second, "shop", "10.0.0.1", 3, 4},     // moved to the current window
		{time.Minute, "shop", "10.0.0.1", 2, 2},          // 10.0.0.2 has not polled for two windows
		{3 * time.Minute, "shop", "10.0.0.4", 1, 1},      // all gone
		{0, "billing", "10.0.0.1", 1, 2},                 // a new entry
		{-time.Hour, "shop", "10.0.0.4", 1, 2},           // a clock going back keeps the window
		{62 * time.Minute, "checkout", "10.0.0.9", 1, 1}, // the sweep forgets what went quiet
	}
	for i, s := range steps {
		c.Add(s.after)
		if got := e.Seen(s.service, s.poller); got != s.want {
			t.Errorf("step %d: Seen(%q, %q) = %d, want %d", i, s.service, s.poller, got, s.want)
		}
		if got := e.Tracked(); got != s.wantTracked {
			t.Errorf("step %d: Tracked() = %d, want %d", i, got, s.wantTracked)
		}
	}
}

// A client inventing addresses or service names cannot grow the table past
// its bound; a poller it cannot record still counts itself.
func TestEstimatorIsBounded(t *testing.T) {
	e, c := newTestEstimator(3)
	for i := range 3 {
		e.Seen("shop", fmt.Sprint("10.0.0.", i))
	}
	for i := range 100 {
		if got := e.Seen("shop", fmt.Sprint("10.1.0.", i)); got != 4 {
			t.Fatalf("Seen of an unrecorded poller = %d, want 4 (3 recorded + itself)", got)
		}
		if got := e.Seen(fmt.Sprint("svc-", i), "10.0.0.1"); got != 1 {
			t.Fatalf("Seen of an unrecorded service = %d, want 1", got)
		}
	}
	if got := e.Tracked(); got != 3 {
		t.Fatalf("Tracked() = %d, want the bound, 3", got)
	}
	if got := e.Seen("shop", "10.0.0.1"); got != 3 {
		t.Errorf("Seen of a recorded poller = %d, want 3", got)
	}
	// Once the old entries expire there is room again.
	c.Add(2 * time.Minute)
	if got := e.Seen("billing", "10.0.0.7"); got != 1 || e.Tracked() != 1 {
		t.Errorf("after expiry: Seen = %d, Tracked = %d, want 1 and 1", got, e.Tracked())
	}
}
