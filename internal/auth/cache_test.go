package auth_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// waitTimeout bounds waits for another replica to notice a change. The
// promise is a second; the bound is generous for a loaded machine, and the
// test logs what it measured.
const waitTimeout = 15 * time.Second

// deafSource hides the store's change hints, so only the poll can notice.
type deafSource struct{ auth.TokenSource }

func (deafSource) WatchChanges(ctx context.Context, _ func(store.Topic)) error {
	<-ctx.Done()
	return ctx.Err()
}

// runGuard starts g.Run until the test ends.
func runGuard(t *testing.T, g *auth.Guard) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitFor polls the guard until check's answer is want (nil or an error
// it wraps) and returns how long that took.
func waitFor(t *testing.T, g *auth.Guard, creds auth.Credentials, want error, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := g.Check(context.Background(), creds, readCall)
		if want == nil && err == nil || want != nil && errors.Is(err, want) {
			return time.Since(start)
		}
		if time.Since(start) > waitTimeout {
			t.Fatalf("%s: still %v after %v", what, err, waitTimeout)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, not synchronising
	}
}

// TestRevocationAcrossReplicas: a token revoked on one replica is refused
// by another, through the change hint alone (the poll is an hour), and
// through the poll alone (the hints are lost).
func TestRevocationAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	open := func() *redisstore.Store {
		s, err := redisstore.New(context.Background(), srv.Client(t), redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a := open()
	tests := []struct {
		name string
		src  auth.TokenSource
		poll time.Duration
	}{
		{"by the hint", open(), time.Hour},
		{"by the poll", deafSource{open()}, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := auth.New(auth.Options{
				Tokens: tt.src, Poll: tt.poll,
				Static: []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: adminSecret}},
			})
			if err != nil {
				t.Fatal(err)
			}
			runGuard(t, g)
			var took []time.Duration
			for i := range 5 {
				name := fmt.Sprintf("%s-%d", tt.name[len("by the "):], i)
				iss, err := auth.Issue(auth.TokenSpec{Name: name, Role: auth.RoleViewer}, nil, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := a.CreateToken(t.Context(), iss.Record); err != nil {
					t.Fatal(err)
				}
				creds := bearer(iss.Secret)
				waitFor(t, g, creds, nil, "a token created on the other replica")
				if _, err := a.RevokeToken(t.Context(), name, "token:root"); err != nil {
					t.Fatal(err)
				}
				took = append(took, waitFor(t, g, creds, auth.ErrUnauthenticated, "a token revoked on the other replica"))
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			t.Logf("revoked on one replica, refused by the other after %v (median of 5), at most %v", took[2], took[4])
		})
	}
}

// TestCacheBeforeLoad: a store that was never reachable makes token calls
// UNAVAILABLE, not UNAUTHENTICATED, and configured tokens still work.
func TestCacheBeforeLoad(t *testing.T) {
	srv := redistest.Start(t)
	s, err := redisstore.New(context.Background(), srv.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // every call now fails with store.ErrUnavailable
	g, err := auth.New(auth.Options{Tokens: s, Static: []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: adminSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Check(t.Context(), bearer(auth.NewTokenSecret()), readCall)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("a token while the store is unreachable: %v, want ErrUnavailable", err)
	}
	if code, _ := auth.HTTPStatus(err); code != 503 {
		t.Errorf("HTTP %d, want 503", code)
	}
	if _, err := g.Check(t.Context(), bearer(adminSecret), readCall); err != nil {
		t.Errorf("the configured admin token: %v", err)
	}
}

// TestTokensChangedHoldsAtOnce: a credential made or revoked on this
// replica holds from the answer on (Guard.TokensChanged), even when the
// store's hint has not arrived and a miss has just rechecked the store
// (the clock stands still, so the next miss would not look again).
func TestTokensChangedHoldsAtOnce(t *testing.T) {
	clk := newClock()
	st := newMemStore(t, clk)
	g, err := auth.New(auth.Options{Tokens: deafSource{st}, Poll: time.Hour, Now: clk.Now,
		Static: []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: adminSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	iss, err := auth.Issue(auth.TokenSpec{Name: "new", Role: auth.RoleViewer}, nil, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	creds := bearer(iss.Secret)
	if _, err := g.Check(ctx, creds, readCall); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a token not yet made: %v, want unauthenticated", err)
	}
	if _, err := st.CreateToken(ctx, iss.Record); err != nil {
		t.Fatal(err)
	}
	g.TokensChanged(ctx)
	if _, err := g.Check(ctx, creds, readCall); err != nil {
		t.Errorf("a token made here, right after: %v", err)
	}
	if _, err := st.RevokeToken(ctx, "new", "token:root"); err != nil {
		t.Fatal(err)
	}
	g.TokensChanged(ctx)
	if _, err := g.Check(ctx, creds, readCall); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a token revoked here, right after: %v, want unauthenticated", err)
	}
}
