package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/receipt"
)

//go:embed keys.lua
var keysCASLua string

// ReceiptKeys implements store.LedgerStore: it reads the key set, applies
// receipt.Rotate, and stores the result only if no other replica changed the
// set since it was read. A replica that loses the race takes the set the
// winner stored, so every replica ends with the same keys.
func (s *Store) ReceiptKeys(ctx context.Context, now time.Time) (receipt.KeySet, error) {
	if s.closed.Load() {
		return receipt.KeySet{}, errClosed
	}
	key := s.tag + ":receiptkeys"
	raw, err := s.client.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		raw = ""
	case err != nil:
		return receipt.KeySet{}, unavailable("receipt keys", err)
	}
	var cur receipt.KeySet
	if raw != "" {
		if cur, err = receipt.UnmarshalKeySet([]byte(raw)); err != nil {
			return receipt.KeySet{}, fmt.Errorf("redis: %w", err)
		}
	}
	next, changed := receipt.Rotate(cur, raw != "", now, receipt.NewKey(now))
	if !changed {
		return cur, nil
	}
	b, err := receipt.MarshalKeySet(next)
	if err != nil {
		return receipt.KeySet{}, err
	}
	stored, err := s.keysCAS.Run(ctx, s.client, []string{key}, raw, string(b)).Text()
	if err != nil {
		return receipt.KeySet{}, unavailable("receipt keys", err)
	}
	out, err := receipt.UnmarshalKeySet([]byte(stored))
	if err != nil {
		return receipt.KeySet{}, fmt.Errorf("redis: %w", err)
	}
	return out, nil
}
