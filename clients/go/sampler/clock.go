package sampler

import (
	"sync"
	"sync/atomic"
	"time"
)

// Clock tells the time. Tests pass a fake one so that decisions are exact.
type Clock interface {
	Now() time.Time
}

// coarseClock reads the wall clock once per tick and hands out the last
// reading. Reading the clock costs tens of nanoseconds on many virtual
// machines, which is most of a span start's budget. A token bucket needs no
// more than a few milliseconds of precision: a quota's burst capacity is a
// second's worth of tokens (at least one), so a tick that releases several
// at once keeps the rate; and a coarser tick wakes an idle process less.
type coarseClock struct {
	// nanos has two cache lines to itself: every span start reads it, and
	// a neighbouring object that its program writes often would otherwise
	// make those reads miss.
	_     [cacheLinePair]byte
	nanos atomic.Int64
	_     [cacheLinePair - 8]byte
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newCoarseClock(tick time.Duration) *coarseClock {
	c := &coarseClock{stop: make(chan struct{}), done: make(chan struct{})}
	c.nanos.Store(time.Now().UnixNano())
	go func() {
		defer close(c.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case now := <-t.C:
				c.nanos.Store(now.UnixNano())
			}
		}
	}()
	return c
}

func (c *coarseClock) unixNano() int64 { return c.nanos.Load() }

func (c *coarseClock) close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}
