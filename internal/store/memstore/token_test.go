package memstore_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
)

func TestTokenConformance(t *testing.T) {
	t.Run("in memory", func(t *testing.T) {
		storetest.RunTokens(t, func(t *testing.T) storetest.Backend {
			return storetest.Backend{Open: func(t *testing.T, now func() time.Time) store.Store {
				return open(t, memstore.Options{Now: now})
			}}
		})
	})
	t.Run("with data dir", func(t *testing.T) {
		storetest.RunTokens(t, func(t *testing.T) storetest.Backend {
			dir := t.TempDir()
			return storetest.Backend{
				Open: func(t *testing.T, now func() time.Time) store.Store {
					return open(t, memstore.Options{DataDir: dir, Now: now})
				},
				Durable: true,
			}
		})
	})
}

func TestMaxTokens(t *testing.T) {
	s := open(t, memstore.Options{MaxTokens: 3})
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
	// A revoked token still counts until it is pruned.
	if _, err := s.RevokeToken(ctx, "t0", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateToken(ctx, store.Token{Name: "t3", Role: "sdk", Hash: fmt.Sprintf("%064x", 3)}); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("the 4th token of 3 with one revoked: %v, want ErrLimit", err)
	}
}
