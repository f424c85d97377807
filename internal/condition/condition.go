// Package condition logs a condition that recurs on every request while it
// lasts (a store that fails every call, a limit that refuses every new
// stream) once when it begins and once when it ends, with how often it
// occurred in between, instead of once per occurrence: an outage seen by
// thousands of clients is two log lines, and its size is in a metric.
package condition

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Quiet is how long a condition must not occur before it is over, so that
// one that comes and goes (a store failing every other call) is one
// condition, not two log lines per failure.
const Quiet = 5 * time.Second

// Condition is one recurring condition. Its methods are safe for concurrent
// use; Cleared costs one atomic load while the condition is clear, so it
// can sit on a hot path.
type Condition struct {
	log     *slog.Logger
	msg     string
	counter prometheus.Counter // may be nil
	now     func() time.Time

	active atomic.Bool
	mu     sync.Mutex // orders the transitions and guards what follows
	since  time.Time  // when it began
	last   time.Time  // when it last occurred
	n      int64      // occurrences since it began
	first  error      // of the first occurrence
}

// New returns a clear condition that logs msg to log and counts every
// occurrence in counter (nil: not counted).
func New(log *slog.Logger, msg string, counter prometheus.Counter) *Condition {
	return &Condition{log: log, msg: msg, counter: counter, now: time.Now}
}

// Occurred records one occurrence. The first one since the condition was
// clear is logged at WARN with err; the rest are only counted.
func (c *Condition) Occurred(ctx context.Context, err error) {
	if c.counter != nil {
		c.counter.Inc()
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = now
	c.n++
	if c.active.Load() {
		return
	}
	c.active.Store(true)
	c.since, c.n, c.first = now, 1, err
	c.log.WarnContext(ctx, c.msg, "err", err)
}

// Cleared says the condition did not occur where it could have (a call
// succeeded). If the condition is active and did not occur for Quiet, it is
// over: that is logged at INFO with how many occurrences it had and how
// long it lasted.
func (c *Condition) Cleared(ctx context.Context) {
	if !c.active.Load() {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active.Load() || now.Sub(c.last) < Quiet {
		return
	}
	c.active.Store(false)
	c.log.InfoContext(ctx, c.msg+": over", "occurrences", c.n, "lasted", c.last.Sub(c.since).Round(time.Millisecond), "first_err", c.first)
}

// Active reports whether the condition is active.
func (c *Condition) Active() bool { return c.active.Load() }
