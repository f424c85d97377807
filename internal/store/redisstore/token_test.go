package redisstore_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
)

func TestTokenConformance(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	storetest.RunTokens(t, func(t *testing.T) storetest.Backend {
		prefix := fmt.Sprintf("t%d", n.Add(1))
		return storetest.Backend{
			Open: func(t *testing.T, now func() time.Time) store.Store {
				return newStore(t, srv.Client(t), redisstore.Options{Prefix: prefix, Now: now})
			},
			Shared:  true,
			Durable: true,
		}
	})
}

func TestMaxTokens(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Client(t), redisstore.Options{MaxTokens: 3})
	ctx := t.Context()
	for i := range 3 {
		if _, err := s.CreateToken(ctx, store.Token{Name: fmt.Sprint("t", i), Role: "sdk", Hash: fmt.Sprintf("%064x", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.CreateToken(ctx, store.Token{Name: "t3", Role: "sdk", Hash: fmt.Sprintf("%064x", 3)})
	if !errors.Is(err, store.ErrLimit) {
		t.Fatalf("the 4th token of 3: %v, want ErrLimit", err)
	}
	if _, err := s.TokenByHash(ctx, fmt.Sprintf("%064x", 3)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused token's hash was indexed: %v", err)
	}
}
