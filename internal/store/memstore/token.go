package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

// Tokens live in the state file with the rules: a creation or revocation is
// on disk before it is acknowledged, so a revoked token stays revoked
// across a restart.

// CreateToken stores t, stamped with the store's now.
func (s *Store) CreateToken(_ context.Context, t store.Token) (store.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Token{}, errClosed
	}
	now := s.now()
	next := s.st
	next.tokens = maps.Clone(s.st.tokens)
	maps.DeleteFunc(next.tokens, func(_ string, old store.Token) bool { return record.Prunable(&old, now) })
	if _, ok := next.tokens[t.Name]; ok {
		return store.Token{}, fmt.Errorf("create token %q: %w", t.Name, store.ErrAlreadyExists)
	}
	for _, old := range next.tokens {
		if t.Hash != "" && old.Hash == t.Hash || t.AccessKeyID != "" && old.AccessKeyID == t.AccessKeyID {
			return store.Token{}, fmt.Errorf("create token %q: %w: its secret or access key is another token's", t.Name, store.ErrAlreadyExists)
		}
	}
	if len(next.tokens) >= s.maxTokens {
		return store.Token{}, fmt.Errorf("create token %q: %w: %d tokens", t.Name, store.ErrLimit, s.maxTokens)
	}
	t = record.NormalizeToken(t)
	t.CreateTime, t.RevokeTime, t.RevokedBy = record.Timestamp(now), time.Time{}, ""
	next.tokens[t.Name] = t
	next.tokensVersion++
	if err := s.apply(&next, store.TopicTokens); err != nil {
		return store.Token{}, fmt.Errorf("create token %q: %w", t.Name, err)
	}
	return t.Clone(), nil
}

// Token returns the token called name.
func (s *Store) Token(_ context.Context, name string) (store.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Token{}, errClosed
	}
	t, ok := s.st.tokens[name]
	if !ok {
		return store.Token{}, fmt.Errorf("token %q: %w", name, store.ErrNotFound)
	}
	return t.Clone(), nil
}

// Tokens returns every token by name, with the tokens version.
func (s *Store) Tokens(context.Context) (store.TokenSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.TokenSnapshot{}, errClosed
	}
	snap := store.TokenSnapshot{Tokens: make([]store.Token, 0, len(s.st.tokens)), Version: s.st.tokensVersion}
	for _, name := range slices.Sorted(maps.Keys(s.st.tokens)) {
		snap.Tokens = append(snap.Tokens, s.st.tokens[name].Clone())
	}
	return snap, nil
}

// TokensVersion returns the tokens version.
func (s *Store) TokensVersion(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	return s.st.tokensVersion, nil
}

// RevokeToken marks the token called name revoked, once.
func (s *Store) RevokeToken(_ context.Context, name, actor string) (store.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Token{}, errClosed
	}
	t, ok := s.st.tokens[name]
	if !ok {
		return store.Token{}, fmt.Errorf("revoke token %q: %w", name, store.ErrNotFound)
	}
	if !t.RevokeTime.IsZero() {
		return t.Clone(), nil
	}
	t = t.Clone()
	t.RevokeTime, t.RevokedBy = record.Timestamp(s.now()), actor
	next := s.st
	next.tokens = maps.Clone(s.st.tokens)
	next.tokens[name] = t
	next.tokensVersion++
	if err := s.apply(&next, store.TopicTokens); err != nil {
		return store.Token{}, fmt.Errorf("revoke token %q: %w", name, err)
	}
	return t.Clone(), nil
}

// TokenByHash returns the bearer token whose hash is hash.
func (s *Store) TokenByHash(_ context.Context, hash string) (store.Token, error) {
	return s.tokenBy("hash", func(t *store.Token) bool { return hash != "" && t.Hash == hash })
}

// TokenByAccessKey returns the AWS access key whose ID is id.
func (s *Store) TokenByAccessKey(_ context.Context, id string) (store.Token, error) {
	return s.tokenBy("access key", func(t *store.Token) bool { return id != "" && t.AccessKeyID == id })
}

// tokenBy scans the tokens: there are at most store.MaxTokens, and callers
// (package auth) look them up in a cache of their own first.
func (s *Store) tokenBy(what string, match func(*store.Token) bool) (store.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Token{}, errClosed
	}
	for _, t := range s.st.tokens {
		if match(&t) {
			return t.Clone(), nil
		}
	}
	return store.Token{}, fmt.Errorf("token by %s: %w", what, store.ErrNotFound)
}
