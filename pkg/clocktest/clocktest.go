// Package clocktest is the one fake clock of the tests: a time that moves
// only when the test says, safe for the goroutines of the code under test
// to read.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock; its Now is what the code under test takes as
// its clock (a func() time.Time).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock that reads t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on by d and returns the new time, the time a step
// of the test is stamped with.
func (c *Clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
