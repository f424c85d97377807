package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

	"github.com/tracesampling/controlplane/internal/store"
)

//go:embed ledger.lua
var ledgerLua string

// RecordReports implements store.LedgerStore: the whole batch is one script,
// one round trip. Each rule's ledger is one small hash under the store's hash
// tag, so every key of the script is in one Cluster slot.
func (s *Store) RecordReports(ctx context.Context, b store.ReportBatch) ([]float64, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if len(b.Rates) == 0 {
		return nil, nil
	}
	// Net every update into one delta per rule and bucket. Retractions
	// from buckets that are no longer live are dropped: those buckets are
	// gone, and their contributions with them.
	type ledgerDeltas struct {
		key    string
		deltas map[int64]float64
	}
	index := map[string]int{}
	var ledgers []*ledgerDeltas
	for _, u := range b.Rates {
		i, ok := index[u.Rule]
		if !ok {
			i = len(ledgers)
			index[u.Rule] = i
			ledgers = append(ledgers, &ledgerDeltas{key: s.ledgerKey(u.Rule), deltas: map[int64]float64{}})
		}
		l := ledgers[i]
		l.deltas[u.Add.Bucket] += u.Add.Rate
		if r := u.Retract; r != nil && b.Ledger.Live(r.Bucket, b.Now) {
			l.deltas[r.Bucket] -= r.Rate
		}
	}
	keys := make([]string, len(ledgers))
	args := []any{b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()}
	for i, l := range ledgers {
		keys[i] = l.key
		args = append(args, len(l.deltas))
		for bucket, d := range l.deltas {
			args = append(args, bucket, strconv.FormatFloat(d, 'g', -1, 64))
		}
	}
	res, err := s.ledger.Run(ctx, s.client, keys, args...).StringSlice()
	if err != nil {
		return nil, unavailable("record reports", err)
	}
	if len(res) != len(keys) {
		return nil, fmt.Errorf("redis: record reports: %d sums for %d ledgers", len(res), len(keys))
	}
	sums := make([]float64, len(keys))
	for i, r := range res {
		if sums[i], err = strconv.ParseFloat(r, 64); err != nil {
			return nil, fmt.Errorf("redis: record reports: bad sum %q: %w", r, err)
		}
	}
	out := make([]float64, len(b.Rates))
	for i, u := range b.Rates {
		out[i] = sums[index[u.Rule]]
	}
	return out, nil
}

func (s *Store) ledgerKey(rule string) string { return s.tag + ":ledger:" + rule }
