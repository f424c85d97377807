package storetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/store"
)

// RunTokens runs the clauses of store.TokenStore. Every store the backend
// opens must implement it. It is apart from Run so that a backend can be
// checked before store.Store embeds store.TokenStore.
func RunTokens(t *testing.T, newBackend func(t *testing.T) Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b Backend)
	}{
		{"TokenCreateAndRead", testTokenCreateAndRead},
		{"TokenDuplicates", testTokenDuplicates},
		{"TokenRevoke", testTokenRevoke},
		{"TokenPrune", testTokenPrune},
		{"TokenReturnsCopies", testTokenReturnsCopies},
		{"TokenWatch", testTokenWatch},
		{"TokenReopen", testTokenReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newBackend(t)) })
	}
}

func tokenStore(t *testing.T, s store.Store) store.TokenStore {
	t.Helper()
	ts, ok := s.(store.TokenStore)
	if !ok {
		t.Fatalf("%T does not implement store.TokenStore", s)
	}
	return ts
}

// bearer returns a bearer token record as package auth makes them.
func bearer(name string) store.Token {
	return store.Token{
		Name:      name,
		Role:      "editor",
		Services:  []string{"shop-*", "cart"},
		Hash:      fmt.Sprintf("%x", sha256.Sum256([]byte(name))),
		CreatedBy: "admin",
	}
}

// accessKey returns an AWS access key record.
func accessKey(name, id string) store.Token {
	return store.Token{
		Name:         name,
		Role:         "sdk",
		AccessKeyID:  id,
		SealedSecret: "enc1:0000:sealed-" + id,
		CreatedBy:    "admin",
	}
}

// tokenOpts compares times as instants.
var tokenOpts = cmp.Options{cmpopts.EquateEmpty(), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })}

func checkToken(t *testing.T, what string, got, want store.Token) {
	t.Helper()
	if d := cmp.Diff(want, got, tokenOpts); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func tokensVersion(t *testing.T, ts store.TokenStore) int64 {
	t.Helper()
	v, err := ts.TokensVersion(t.Context())
	if err != nil {
		t.Fatalf("TokensVersion: %v", err)
	}
	return v
}

func testTokenCreateAndRead(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ts := tokenStore(t, s)
	reader := tokenStore(t, peer(t, b, s, clk))
	ctx := t.Context()

	if v := tokensVersion(t, ts); v != 0 {
		t.Errorf("TokensVersion of a new store = %d, want 0", v)
	}
	in := bearer("shop-editor")
	in.ExpireTime = clk.Now().Add(90 * 24 * time.Hour)
	in.RevokeTime, in.RevokedBy = clk.Now(), "ignored" // a new token is never revoked
	got, err := ts.CreateToken(ctx, in)
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	want := in
	want.CreateTime, want.RevokeTime, want.RevokedBy = clk.Now(), time.Time{}, ""
	checkToken(t, "CreateToken", got, want)

	clk.Add(time.Second)
	key := accessKey("shop-ci", "TSCKABCDEFGHIJKLMNOP")
	gotKey, err := ts.CreateToken(ctx, key)
	if err != nil {
		t.Fatalf("CreateToken(access key): %v", err)
	}
	wantKey := key
	wantKey.CreateTime = clk.Now()
	checkToken(t, "CreateToken(access key)", gotKey, wantKey)

	r, err := reader.Token(ctx, "shop-editor")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	checkToken(t, "Token", r, want)
	r, err = reader.TokenByHash(ctx, in.Hash)
	if err != nil {
		t.Fatalf("TokenByHash: %v", err)
	}
	checkToken(t, "TokenByHash", r, want)
	r, err = reader.TokenByAccessKey(ctx, key.AccessKeyID)
	if err != nil {
		t.Fatalf("TokenByAccessKey: %v", err)
	}
	checkToken(t, "TokenByAccessKey", r, wantKey)

	snap, err := reader.Tokens(ctx)
	if err != nil {
		t.Fatalf("Tokens: %v", err)
	}
	if d := cmp.Diff(store.TokenSnapshot{Tokens: []store.Token{wantKey, want}, Version: 2}, snap, tokenOpts); d != "" {
		t.Errorf("Tokens (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Token(unknown)", func() error { _, err := reader.Token(ctx, "nobody"); return err }},
		{"TokenByHash(unknown)", func() error { _, err := reader.TokenByHash(ctx, fmt.Sprintf("%064x", 1)); return err }},
		{"TokenByHash(empty)", func() error { _, err := reader.TokenByHash(ctx, ""); return err }},
		{"TokenByHash(an access key's)", func() error { _, err := reader.TokenByHash(ctx, key.AccessKeyID); return err }},
		{"TokenByAccessKey(unknown)", func() error { _, err := reader.TokenByAccessKey(ctx, "TSCKNOPE"); return err }},
		{"TokenByAccessKey(empty)", func() error { _, err := reader.TokenByAccessKey(ctx, ""); return err }},
		{"RevokeToken(unknown)", func() error { _, err := ts.RevokeToken(ctx, "nobody", "admin"); return err }},
	} {
		if err := tc.call(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s error = %v, want ErrNotFound", tc.name, err)
		}
	}
	if v := tokensVersion(t, reader); v != 2 {
		t.Errorf("TokensVersion = %d after two creations and refusals, want 2", v)
	}
}

func testTokenDuplicates(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ts := tokenStore(t, s)
	other := tokenStore(t, peer(t, b, s, clk))
	ctx := t.Context()
	first := bearer("a")
	if _, err := ts.CreateToken(ctx, first); err != nil {
		t.Fatal(err)
	}
	key := accessKey("k", "TSCKAAAAAAAAAAAAAAAA")
	if _, err := ts.CreateToken(ctx, key); err != nil {
		t.Fatal(err)
	}
	sameName := bearer("a")
	sameName.Hash = fmt.Sprintf("%064x", 42)
	sameHash := bearer("b")
	sameHash.Hash = first.Hash
	for _, tc := range []struct {
		name string
		tok  store.Token
	}{
		{"same name", sameName},
		{"same hash", sameHash},
		{"same access key", accessKey("k2", key.AccessKeyID)},
		{"same name as an access key", accessKey("k", "TSCKBBBBBBBBBBBBBBBB")},
	} {
		if _, err := other.CreateToken(ctx, tc.tok); !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("CreateToken(%s) error = %v, want ErrAlreadyExists", tc.name, err)
		}
	}
	if v := tokensVersion(t, ts); v != 2 {
		t.Errorf("TokensVersion = %d after refused creations, want 2", v)
	}
	if _, err := ts.TokenByHash(ctx, sameName.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused token's hash was indexed: %v", err)
	}
}

func testTokenRevoke(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ts := tokenStore(t, s)
	other := tokenStore(t, peer(t, b, s, clk))
	ctx := t.Context()
	created, err := ts.CreateToken(ctx, bearer("a"))
	if err != nil {
		t.Fatal(err)
	}
	revokedAt := clk.Add(time.Minute)
	got, err := other.RevokeToken(ctx, "a", "carol")
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	want := created
	want.RevokeTime, want.RevokedBy = revokedAt, "carol"
	checkToken(t, "RevokeToken", got, want)
	if !got.Ended(revokedAt) || got.Ended(revokedAt.Add(-time.Nanosecond)) {
		t.Errorf("Ended is wrong around the revoke time %v", revokedAt)
	}
	// Revoking again changes nothing: the first revocation stands.
	clk.Add(time.Minute)
	again, err := ts.RevokeToken(ctx, "a", "dave")
	if err != nil {
		t.Fatalf("RevokeToken again: %v", err)
	}
	checkToken(t, "RevokeToken again", again, want)
	if v := tokensVersion(t, ts); v != 2 {
		t.Errorf("TokensVersion = %d after a creation and a revocation (twice), want 2", v)
	}
	// Lookups still find it, revoked: the caller refuses it.
	byHash, err := other.TokenByHash(ctx, created.Hash)
	if err != nil {
		t.Fatalf("TokenByHash of a revoked token: %v", err)
	}
	checkToken(t, "TokenByHash of a revoked token", byHash, want)
}

func testTokenPrune(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ts := tokenStore(t, s)
	ctx := t.Context()
	revoked, expiring, kept := bearer("revoked"), bearer("expiring"), bearer("kept")
	expiring.ExpireTime = clk.Now().Add(time.Hour)
	for _, tok := range []store.Token{revoked, expiring, kept} {
		if _, err := ts.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.RevokeToken(ctx, "revoked", "admin"); err != nil {
		t.Fatal(err)
	}
	// Just within the retention: both are still listed.
	clk.Add(store.TokenRetention)
	if _, err := ts.CreateToken(ctx, bearer("x")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"revoked", "expiring"} {
		if _, err := ts.Token(ctx, name); err != nil {
			t.Errorf("Token(%q) within the retention: %v", name, err)
		}
	}
	clk.Add(2 * time.Hour)
	if _, err := ts.CreateToken(ctx, bearer("y")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"revoked", "expiring"} {
		if _, err := ts.Token(ctx, name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Token(%q) after the retention: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := ts.TokenByHash(ctx, revoked.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a pruned token's hash is still indexed: %v", err)
	}
	if _, err := ts.Token(ctx, "kept"); err != nil {
		t.Errorf("Token(kept): %v", err)
	}
	// The name is free again.
	if _, err := ts.CreateToken(ctx, bearer("revoked")); err != nil {
		t.Errorf("CreateToken with a pruned token's name: %v", err)
	}
}

func testTokenReturnsCopies(t *testing.T, b Backend) {
	clk := newClock()
	ts := tokenStore(t, open(t, b, clk))
	ctx := t.Context()
	in := bearer("a")
	got, err := ts.CreateToken(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	in.Services[0] = "changed-by-caller"
	got.Services[1] = "changed-by-caller"
	read, err := ts.Token(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"shop-*", "cart"}, read.Services); d != "" {
		t.Errorf("stored services changed with the caller's copies (-want +got):\n%s", d)
	}
	read.Services[0] = "changed-again"
	snap, err := ts.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"shop-*", "cart"}, snap.Tokens[0].Services); d != "" {
		t.Errorf("stored services changed with a read copy (-want +got):\n%s", d)
	}
}

func testTokenWatch(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ts := tokenStore(t, peer(t, b, s, clk))
	ctx := t.Context()
	ch, _ := watch(t, s)
	waitTopic(t, ch, store.TopicTokens, "on subscribing")
	drain(ch)
	if _, err := ts.CreateToken(ctx, bearer("a")); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, ch, store.TopicTokens, "after CreateToken")
	drain(ch)
	if _, err := ts.RevokeToken(ctx, "a", "admin"); err != nil {
		t.Fatal(err)
	}
	waitTopic(t, ch, store.TopicTokens, "after RevokeToken")
}

func testTokenReopen(t *testing.T, b Backend) {
	clk := newClock()
	ctx := t.Context()
	s := b.Open(t, clk.Now)
	ts := tokenStore(t, s)
	if _, err := ts.CreateToken(ctx, bearer("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.CreateToken(ctx, accessKey("k", "TSCKAAAAAAAAAAAAAAAA")); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.RevokeToken(ctx, "a", "admin"); err != nil {
		t.Fatal(err)
	}
	want, err := ts.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ts2 := tokenStore(t, open(t, b, clk))
	got, err := ts2.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Durable {
		if len(got.Tokens) != 0 || got.Version != 0 {
			t.Errorf("a fresh store has tokens %+v", got)
		}
		return
	}
	if d := cmp.Diff(want, got, tokenOpts); d != "" {
		t.Errorf("tokens after reopening (-want +got):\n%s", d)
	}
	if _, err := ts2.TokenByAccessKey(ctx, "TSCKAAAAAAAAAAAAAAAA"); err != nil {
		t.Errorf("TokenByAccessKey after reopening: %v", err)
	}
}
