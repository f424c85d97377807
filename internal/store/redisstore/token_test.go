package redisstore_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
)

func TestTokenConformance(t *testing.T) {
	tests := []struct {
		name   string
		opts   redistest.Options
		client func(t *testing.T, srv *redistest.Server) redis.UniversalClient
	}{
		{"single node", redistest.Options{}, func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.Client(t) }},
		// Cluster refuses a script whose keys lie in different slots.
		{"cluster", redistest.Options{Cluster: true}, func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.ClusterClient(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tt.opts)
			var n atomic.Int64
			storetest.RunTokens(t, func(t *testing.T) storetest.Backend {
				prefix := fmt.Sprintf("t%d", n.Add(1))
				return storetest.Backend{
					Open: func(t *testing.T, now func() time.Time) store.Store {
						return newStore(t, tt.client(t, srv), redisstore.Options{Prefix: prefix, Now: now})
					},
					Shared:  true,
					Durable: true,
				}
			})
		})
	}
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
