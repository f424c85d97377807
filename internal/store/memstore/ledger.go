package memstore

import (
	"context"
	"sync"

	"github.com/tracesampling/controlplane/internal/store"
)

// ledgers keeps every rule's fleet ledger: bucket index → sum of rates. They
// live only in memory: a ledger is rebuilt within one report interval, so
// persisting it would buy nothing.
type ledgers struct {
	mu sync.Mutex
	m  map[string]map[int64]float64
}

// RecordReports implements store.LedgerStore.
func (s *Store) RecordReports(ctx context.Context, b store.ReportBatch) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &s.ledgers
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]map[int64]float64{}
	}
	for _, u := range b.Rates {
		buckets := l.m[u.Rule]
		if buckets == nil {
			buckets = map[int64]float64{}
			l.m[u.Rule] = buckets
		}
		buckets[u.Add.Bucket] += u.Add.Rate
		if r := u.Retract; r != nil && b.Ledger.Live(r.Bucket, b.Now) {
			if _, ok := buckets[r.Bucket]; ok {
				buckets[r.Bucket] = max(0, buckets[r.Bucket]-r.Rate)
			}
		}
	}
	sums := make(map[string]float64, len(b.Rates))
	out := make([]float64, len(b.Rates))
	for i, u := range b.Rates {
		sum, ok := sums[u.Rule]
		if !ok {
			for bucket, v := range l.m[u.Rule] {
				if b.Ledger.Live(bucket, b.Now) {
					sum += v
				} else {
					delete(l.m[u.Rule], bucket)
				}
			}
			sums[u.Rule] = sum
		}
		out[i] = sum
	}
	return out, nil
}
