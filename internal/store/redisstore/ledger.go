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
	keyIndex := map[string]int{}
	var keys []string
	args := []any{b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()}
	for _, u := range b.Rates {
		k, ok := keyIndex[u.Rule]
		if !ok {
			keys = append(keys, s.ledgerKey(u.Rule))
			k = len(keys)
			keyIndex[u.Rule] = k
		}
		rb, rr := int64(-1), 0.0
		if u.Retract != nil {
			rb, rr = u.Retract.Bucket, u.Retract.Rate
		}
		args = append(args, k, u.Add.Bucket, strconv.FormatFloat(u.Add.Rate, 'g', -1, 64), rb, strconv.FormatFloat(rr, 'g', -1, 64))
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
		out[i] = sums[keyIndex[u.Rule]-1]
	}
	return out, nil
}

func (s *Store) ledgerKey(rule string) string { return s.tag + ":ledger:" + rule }
