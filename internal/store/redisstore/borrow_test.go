package redisstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// TestFirstBorrowKeys: the gate's buckets are one hash per rule in the
// rule's shard (a rule set over 16 shards touches many tags, each script
// one), each expiring once it would be full again: a second's refill and a
// second more at 1/s, at most reservoir.GateMaxTTL however slow the rate.
func TestFirstBorrowKeys(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := t.Context()
	s := newStore(t, c, redisstore.Options{Shards: 16})
	takes := make([]store.BorrowTake, 32)
	for i := range takes {
		takes[i] = store.BorrowTake{Rule: fmt.Sprintf("r%d", i), Rate: 1, Count: 1}
	}
	takes = append(takes, store.BorrowTake{Rule: "slow", Rate: 1e-6, Count: 1}, store.BorrowTake{Rule: "zero", Count: 1})
	if _, err := s.TakeFirstBorrows(ctx, time.Now(), takes); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, "*:borrow:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 33 {
		t.Fatalf("%d bucket keys %q, want one per rule with a rate (33)", len(keys), keys)
	}
	tags := map[string]bool{}
	for _, k := range keys {
		tags[k[:strings.Index(k, "}")+1]] = true
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := 2 * time.Second
		if strings.HasSuffix(k, ":slow") {
			want = time.Duration(reservoir.GateMaxTTL) * time.Millisecond
		}
		if ttl <= want-time.Second || ttl > want {
			t.Errorf("%s expires in %v, want up to %v", k, ttl, want)
		}
	}
	if len(tags) < 8 {
		t.Errorf("32 rules' buckets in %d shards of 16: %v", len(tags), tags)
	}
}
