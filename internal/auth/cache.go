package auth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
)

// TokenSource is what the token cache reads: a store.TokenStore's listing
// and version, and the store's change hints.
type TokenSource interface {
	Tokens(ctx context.Context) (store.TokenSnapshot, error)
	TokensVersion(ctx context.Context) (int64, error)
	WatchChanges(ctx context.Context, notify func(store.Topic)) error
}

// tokenView is the cache's content at one tokens version. It is immutable.
type tokenView struct {
	version int64
	byHash  map[string]*cached
	byKey   map[string]*cached
}

// cached is a token and its principal, made once per load.
type cached struct {
	tok store.Token
	p   *Principal
}

// tokenCache keeps every stored token in memory, so that checking a call's
// credentials costs no store round trip. It reloads when the store
// announces a token change, and on a short poll of the tokens version in
// case an announcement is lost, so that a token revoked on one replica is
// refused by all within a second. A lookup that misses checks the version
// again (at most every missRecheck), so a token created on another replica
// a moment ago is not refused for long, and a flood of made-up tokens costs
// the store at most one small read per missRecheck.
type tokenCache struct {
	src         TokenSource
	poll        time.Duration
	missRecheck time.Duration
	now         func() time.Time
	onError     func(error)

	cur  atomic.Pointer[tokenView]
	kick chan struct{}

	mu        sync.Mutex // serialises reloads; guards lastCheck
	lastCheck time.Time
}

func newTokenCache(src TokenSource, poll, missRecheck time.Duration, now func() time.Time, onError func(error)) *tokenCache {
	return &tokenCache{src: src, poll: poll, missRecheck: missRecheck, now: now, onError: onError, kick: make(chan struct{}, 1)}
}

// errNotLoaded: the cache has not loaded the tokens yet (the store was
// unreachable since start-up).
var errNotLoaded = fmt.Errorf("auth: tokens not loaded yet: %w", store.ErrUnavailable)

// refresh reloads the tokens if their version changed (or if none are
// loaded). The caller holds c.mu.
func (c *tokenCache) refresh(ctx context.Context) error {
	c.lastCheck = c.now()
	cur := c.cur.Load()
	if cur != nil {
		v, err := c.src.TokensVersion(ctx)
		if err != nil {
			return err
		}
		if v == cur.version {
			return nil
		}
	}
	snap, err := c.src.Tokens(ctx)
	if err != nil {
		return err
	}
	view := &tokenView{version: snap.Version, byHash: map[string]*cached{}, byKey: map[string]*cached{}}
	for i := range snap.Tokens {
		t := &snap.Tokens[i]
		if t.Hash != "" {
			view.byHash[t.Hash] = &cached{tok: *t, p: principalOf(t, KindToken)}
		}
		if t.AccessKeyID != "" {
			view.byKey[t.AccessKeyID] = &cached{tok: *t, p: principalOf(t, KindAccessKey)}
		}
	}
	c.cur.Store(view)
	return nil
}

// Load reloads if the tokens changed.
func (c *tokenCache) Load(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refresh(ctx)
}

// Run keeps the cache current until ctx ends.
func (c *tokenCache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.src.WatchChanges(ctx, func(t store.Topic) {
			if t == store.TopicTokens {
				select {
				case c.kick <- struct{}{}:
				default:
				}
			}
		})
	}()
	defer wg.Wait()
	failing := false
	for {
		err := c.Load(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !failing && c.onError != nil {
			c.onError(err)
		}
		failing = err != nil
		wait := time.Duration(float64(c.poll) * (0.8 + 0.4*rand.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// lookup finds a token through index, rechecking the store on a miss.
func (c *tokenCache) lookup(ctx context.Context, index func(*tokenView) map[string]*cached, key string) (*cached, error) {
	if v := c.cur.Load(); v != nil {
		if t, ok := index(v)[key]; ok {
			return t, nil
		}
	}
	c.mu.Lock()
	if c.cur.Load() == nil || c.now().Sub(c.lastCheck) >= c.missRecheck {
		if err := c.refresh(ctx); err != nil && c.cur.Load() == nil {
			c.mu.Unlock()
			return nil, errors.Join(errNotLoaded, err)
		}
	}
	c.mu.Unlock()
	if t, ok := index(c.cur.Load())[key]; ok {
		return t, nil
	}
	return nil, nil
}

// byHash returns the bearer token with hash h, or nil.
func (c *tokenCache) byHash(ctx context.Context, h string) (*cached, error) {
	t, err := c.lookup(ctx, func(v *tokenView) map[string]*cached { return v.byHash }, h)
	if t != nil && !sameHash(t.tok.Hash, h) {
		return nil, err // unreachable: the map is keyed by hash; compared in constant time all the same
	}
	return t, err
}

// byAccessKey returns the AWS access key with ID id, or nil.
func (c *tokenCache) byAccessKey(ctx context.Context, id string) (*cached, error) {
	return c.lookup(ctx, func(v *tokenView) map[string]*cached { return v.byKey }, id)
}
