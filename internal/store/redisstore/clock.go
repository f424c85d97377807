package redisstore

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// redisClock is what a store knows of Redis's clock: its offset from the
// replica's, learnt from the answers of the report script, so that a batch's
// deadline can be given in Redis's time and checked there whatever the
// clocks of the two hosts say.
type redisClock struct {
	mu     sync.Mutex
	offset time.Duration // Redis's clock minus the replica's
	rtt    time.Duration // of the call the offset was taken from; 0: none yet
	at     time.Time     // when
}

// observe takes Redis's clock (unix ms) as read by a call sent at sent and
// answered at recv. The offset of the fastest recent call is the best.
func (c *redisClock) observe(ms string, sent, recv time.Time) {
	v, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return
	}
	rtt := recv.Sub(sent)
	offset := time.UnixMilli(v).Sub(sent.Add(rtt / 2))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rtt == 0 || rtt <= c.rtt || recv.Sub(c.at) > time.Minute {
		c.offset, c.rtt, c.at = offset, max(rtt, time.Millisecond), recv
	}
}

// deadline returns the deadline of ctx in Redis's clock, unix ms, or 0 if
// ctx has none or Redis's clock is not known yet. It errs early by the
// uncertainty of the offset: a batch refused a little before its caller
// gave up is only a batch that failed (and says it changed nothing), while
// one applied after would land behind its caller's back.
func (c *redisClock) deadline(ctx context.Context) int64 {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rtt == 0 {
		return 0
	}
	return dl.Add(c.offset - c.rtt/2 - time.Millisecond).UnixMilli()
}

// forget drops what is known of Redis's clock, after a batch was refused as
// late: if the offset was wrong, the next batch goes without a deadline and
// learns it again, rather than every batch being refused.
func (c *redisClock) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rtt = 0
}
