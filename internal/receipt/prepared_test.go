package receipt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// TestTokensSignAsTheRing: Tokens signs and opens with HMAC states it keeps
// for reuse. Its tokens must be the ones Ring.Sign makes, for every client
// and rule and from many goroutines at once (a reused state that kept
// anything of its last input would make a different MAC), and each must
// open, with Ring.Open and Tokens, only for its own client and rule.
func TestTokensSignAsTheRing(t *testing.T) {
	clk := clocktest.New(t0)
	src := &fakeSource{}
	keys := NewKeys(src, clk.Now, time.Second)
	if _, err := keys.Ring(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A second key, accepted but not signing: Open must pick each
	// token's own key's states.
	now := clk.Add(RotateEvery)
	ring, err := keys.Ring(context.Background())
	if err != nil || len(ring) != 2 {
		t.Fatalf("ring %v, %v; want two keys", ring, err)
	}
	oldToken := Ring{ring[1]}.Sign("client-0", "rule-0", claim())
	tokens := Tokens{Keys: keys}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				// Clients and rules of every length, so the MAC's input
				// crosses SHA-256's 64-byte blocks in different places.
				client := fmt.Sprintf("client-%d-%s", g, string(make([]byte, i)))
				rule := fmt.Sprintf("rule-%d", i)
				c := claim()
				c.Quota = float64(g*100 + i)
				tok := tokens.Keep(client, rule, c)
				if want := ring.Sign(client, rule, c); tok != want {
					t.Errorf("Tokens.Keep(%q, %q) = %q, Ring.Sign = %q", client, rule, tok, want)
					return
				}
				got, err := ring.Open(tok, client, rule)
				if err != nil || !cmp.Equal(got, c) {
					t.Errorf("Ring.Open of Tokens' token: %v, %v; want %v", got, err, c)
					return
				}
				got, ok, err := tokens.Previous(client, rule, tok, now)
				if err != nil || !ok || !cmp.Equal(got, c) {
					t.Errorf("Tokens.Previous of its own token: %v, %v, %v; want %v", got, ok, err, c)
					return
				}
				if _, _, err := tokens.Previous(client, "other", tok, now); !errors.Is(err, ErrForged) {
					t.Errorf("token opened for another rule: %v, want ErrForged", err)
					return
				}
				if _, _, err := tokens.Previous(client, rule, oldToken, now); !errors.Is(err, ErrForged) {
					t.Errorf("the old key's token opened for another client: %v, want ErrForged", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, ok, err := tokens.Previous("client-0", "rule-0", oldToken, now); err != nil || !ok || !cmp.Equal(got, claim()) {
		t.Errorf("the old key's token: %v, %v, %v", got, ok, err)
	}
}

// TestTokensWithoutRing: before the first load there is nothing to sign
// with, as with an empty ring.
func TestTokensWithoutRing(t *testing.T) {
	tokens := Tokens{Keys: NewKeys(&fakeSource{}, func() time.Time { return t0 }, time.Second)}
	if tok := tokens.Keep("c", "r", claim()); tok != "" {
		t.Errorf("Keep without a ring = %q, want none", tok)
	}
	tok := Ring{NewKey(t0)}.Sign("c", "r", claim())
	if _, ok, err := tokens.Previous("c", "r", tok, t0); ok || !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Previous without a ring: %v, %v; want ErrUnknownKey", ok, err)
	}
}

// BenchmarkSign is the receipt every target of every report carries.
//
//	go test -run '^$' -bench Sign -benchmem ./internal/receipt
func BenchmarkSign(b *testing.B) {
	keys := NewKeys(&fakeSource{}, func() time.Time { return t0 }, time.Second)
	if _, err := keys.Ring(context.Background()); err != nil {
		b.Fatal(err)
	}
	tokens := Tokens{Keys: keys}
	ring := keys.Cached()
	c := claim()
	b.Run("Ring", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ring.Sign("lg-12345-678", "checkout", c)
		}
	})
	b.Run("Tokens", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tokens.Keep("lg-12345-678", "checkout", c)
		}
	})
}
