package memstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// borrowBuckets are the first-borrow gate's buckets by rule, each with the
// Unix ms at which Redis would expire it (reservoir.GateBucket.TTL), the
// reference of redisstore's borrow.lua.
type borrowBuckets struct {
	mu      sync.Mutex
	buckets map[string]*borrowBucket
}

type borrowBucket struct {
	b       reservoir.GateBucket
	expires int64
}

// maxBorrowBuckets is how many buckets are kept before the expired ones
// are swept: the rules taken from lately, with room for rules deleted
// since.
const maxBorrowBuckets = 2 * store.MaxBorrowTakes

// TakeFirstBorrows implements store.BorrowStore under one mutex: a call is
// one atomic step.
func (s *Store) TakeFirstBorrows(ctx context.Context, now time.Time, takes []store.BorrowTake) ([]int64, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	if len(takes) > store.MaxBorrowTakes {
		return nil, fmt.Errorf("memstore: takes: at most %d, got %d", store.MaxBorrowTakes, len(takes))
	}
	return s.borrows.take(now.UnixMilli(), takes), nil
}

func (m *borrowBuckets) take(now int64, takes []store.BorrowTake) []int64 {
	out := make([]int64, len(takes))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buckets == nil {
		m.buckets = map[string]*borrowBucket{}
	}
	if len(m.buckets) > maxBorrowBuckets {
		for rule, b := range m.buckets {
			if b.expires <= now {
				delete(m.buckets, rule)
			}
		}
	}
	for i, t := range takes {
		if !reservoir.ValidGateRate(t.Rate) || t.Count < 1 {
			continue
		}
		b := m.buckets[t.Rule]
		fresh := b == nil || b.expires <= now
		if b == nil {
			if len(m.buckets) >= maxBorrowBuckets {
				// Every bucket live: more rules than a rule set holds
				// were taken from within an hour. Forget the lot (each
				// is full again) rather than grow.
				clear(m.buckets)
			}
			b = &borrowBucket{}
			m.buckets[t.Rule] = b
		}
		out[i] = b.b.Take(now, t.Rate, fresh, t.Count)
		b.expires = now + b.b.TTL(t.Rate)
	}
	return out
}

var _ store.BorrowStore = (*Store)(nil)
