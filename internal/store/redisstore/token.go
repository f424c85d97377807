package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

// Token keys, for the default prefix "tsc":
//
//	{tsc}:tokens          hash: token name -> token JSON
//	{tsc}:tokens:version  counter, bumped by every creation and revocation
//	{tsc}:tokens:hashes   hash: bearer token hash -> token name
//	{tsc}:tokens:keys     hash: AWS access key ID -> token name
//
// Changes publish "tokens" on {tsc}:changes.

//go:embed token.lua
var tokenLua string

func (s *Store) tokensKey() string        { return s.tag + ":tokens" }
func (s *Store) tokensVersionKey() string { return s.tag + ":tokens:version" }
func (s *Store) tokenHashesKey() string   { return s.tag + ":tokens:hashes" }
func (s *Store) tokenKeysKey() string     { return s.tag + ":tokens:keys" }

func (s *Store) runToken(ctx context.Context, op, name, arg3, arg4 string) (int64, string, error) {
	keys := []string{s.tokensKey(), s.tokensVersionKey(), s.tokenHashesKey(), s.tokenKeysKey(), s.callKey("")}
	v, err := s.tokenScript.Run(ctx, s.client, keys,
		op, name, arg3, arg4, s.maxTokens, s.channel, callTTL.Milliseconds(),
	).Slice()
	if err != nil {
		return 0, "", unavailable("run token script", err)
	}
	if len(v) < 1 {
		return 0, "", fmt.Errorf("token script returned %v", v)
	}
	status, ok := v[0].(int64)
	if !ok {
		return 0, "", fmt.Errorf("token script returned %v", v)
	}
	if status != statusOK {
		return status, "", nil
	}
	out, ok := "", len(v) == 2
	if ok {
		out, ok = v[1].(string)
	}
	if !ok {
		return 0, "", fmt.Errorf("token script returned %v", v)
	}
	return status, out, nil
}

// CreateToken stores t, stamped with the store's now, after pruning the
// tokens that ended more than store.TokenRetention ago.
func (s *Store) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	if s.closed.Load() {
		return store.Token{}, errClosed
	}
	now := s.now()
	t = record.NormalizeToken(t)
	t.CreateTime, t.RevokeTime, t.RevokedBy = record.Timestamp(now), time.Time{}, ""
	b, err := record.MarshalToken(&t)
	if err != nil {
		return store.Token{}, err
	}
	status, out, err := s.runToken(ctx, "create", t.Name, string(b), record.FormatTime(now.Add(-store.TokenRetention)))
	if err != nil {
		return store.Token{}, fmt.Errorf("create token %q: %w", t.Name, err)
	}
	switch status {
	case statusOK:
		return decodeStoredToken(t.Name, out)
	case statusExists:
		return store.Token{}, fmt.Errorf("create token %q: %w: its name, secret or access key is another token's", t.Name, store.ErrAlreadyExists)
	case statusLimit:
		return store.Token{}, fmt.Errorf("create token %q: %w: %d tokens", t.Name, store.ErrLimit, s.maxTokens)
	}
	return store.Token{}, fmt.Errorf("create token %q: unexpected status %d", t.Name, status)
}

// RevokeToken marks the token called name revoked, once.
func (s *Store) RevokeToken(ctx context.Context, name, actor string) (store.Token, error) {
	if s.closed.Load() {
		return store.Token{}, errClosed
	}
	status, out, err := s.runToken(ctx, "revoke", name, record.FormatTime(s.now()), actor)
	if err != nil {
		return store.Token{}, fmt.Errorf("revoke token %q: %w", name, err)
	}
	switch status {
	case statusOK:
		return decodeStoredToken(name, out)
	case statusNotFound:
		return store.Token{}, fmt.Errorf("revoke token %q: %w", name, store.ErrNotFound)
	}
	return store.Token{}, fmt.Errorf("revoke token %q: unexpected status %d", name, status)
}

func decodeStoredToken(name, raw string) (store.Token, error) {
	t, err := record.UnmarshalToken([]byte(raw))
	if err != nil {
		return store.Token{}, fmt.Errorf("token %q: %w", name, err)
	}
	return t, nil
}

// Token returns the token called name.
func (s *Store) Token(ctx context.Context, name string) (store.Token, error) {
	if s.closed.Load() {
		return store.Token{}, errClosed
	}
	raw, err := s.client.HGet(ctx, s.tokensKey(), name).Result()
	if errors.Is(err, redis.Nil) {
		return store.Token{}, fmt.Errorf("token %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Token{}, unavailable("read token", err)
	}
	return decodeStoredToken(name, raw)
}

// Tokens returns every token by name, and the version, read in one
// transaction.
func (s *Store) Tokens(ctx context.Context) (store.TokenSnapshot, error) {
	if s.closed.Load() {
		return store.TokenSnapshot{}, errClosed
	}
	var all *redis.MapStringStringCmd
	var ver *redis.StringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.tokensKey())
		ver = p.Get(ctx, s.tokensVersionKey())
		return nil
	})
	if err != nil && !(errors.Is(err, redis.Nil) && all.Err() == nil) {
		return store.TokenSnapshot{}, unavailable("list tokens", err)
	}
	version, err := parseVersion(ver)
	if err != nil {
		return store.TokenSnapshot{}, fmt.Errorf("list tokens: %w", err)
	}
	snap := store.TokenSnapshot{Tokens: make([]store.Token, 0, len(all.Val())), Version: version}
	for name, raw := range all.Val() {
		t, err := decodeStoredToken(name, raw)
		if err != nil {
			return store.TokenSnapshot{}, fmt.Errorf("list tokens: %w", err)
		}
		snap.Tokens = append(snap.Tokens, t)
	}
	slices.SortFunc(snap.Tokens, func(a, b store.Token) int { return strings.Compare(a.Name, b.Name) })
	return snap, nil
}

// TokensVersion returns the tokens version.
func (s *Store) TokensVersion(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	v, err := parseVersion(s.client.Get(ctx, s.tokensVersionKey()))
	if err != nil {
		return 0, fmt.Errorf("tokens version: %w", err)
	}
	return v, nil
}

// TokenByHash returns the bearer token whose hash is hash.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	return s.tokenBy(ctx, "hash", s.tokenHashesKey(), hash, func(t *store.Token) bool { return t.Hash == hash })
}

// TokenByAccessKey returns the AWS access key whose ID is id.
func (s *Store) TokenByAccessKey(ctx context.Context, id string) (store.Token, error) {
	return s.tokenBy(ctx, "access key", s.tokenKeysKey(), id, func(t *store.Token) bool { return t.AccessKeyID == id })
}

// tokenBy reads an index and then the token it names. The two reads are not
// atomic; the token is checked to still be the one indexed.
func (s *Store) tokenBy(ctx context.Context, what, index, key string, match func(*store.Token) bool) (store.Token, error) {
	if s.closed.Load() {
		return store.Token{}, errClosed
	}
	notFound := fmt.Errorf("token by %s: %w", what, store.ErrNotFound)
	if key == "" {
		return store.Token{}, notFound
	}
	name, err := s.client.HGet(ctx, index, key).Result()
	if errors.Is(err, redis.Nil) {
		return store.Token{}, notFound
	}
	if err != nil {
		return store.Token{}, unavailable("read token index", err)
	}
	t, err := s.Token(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Token{}, notFound
	}
	if err != nil {
		return store.Token{}, err
	}
	if !match(&t) {
		return store.Token{}, notFound
	}
	return t, nil
}
