package receipt

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func claim() Claim {
	return Claim{Receipt: reservoir.Receipt{Bucket: 177_000_000, Rate: 12.5, Quota: 0.25, Sampled: 1.5, Applied: 1_772_366_400_000_042}, Issued: t0.Add(1500 * time.Millisecond), FixedRate: 0.05, Overlap: 7.25}
}

func TestSignOpen(t *testing.T) {
	old, cur := NewKey(t0), NewKey(t0)
	ring := Ring{cur, old}
	tok := ring.Sign("client-a", "checkout", claim())
	got, err := ring.Open(tok, "client-a", "checkout")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(claim(), got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// A token of the previous key is still good.
	if _, err := ring.Open(Ring{old}.Sign("c", "r", claim()), "c", "r"); err != nil {
		t.Errorf("token of the previous key: %v", err)
	}

	flip := func(i int) string {
		b, _ := base64.RawURLEncoding.DecodeString(tok)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	bad := func(c Claim) string { return ring.Sign("client-a", "checkout", c) }
	negative, hugeRate, negativeSampled, infiniteOverlap := claim(), claim(), claim(), claim()
	negative.Quota = -1
	hugeRate.FixedRate = 2
	negativeSampled.Sampled = -1
	infiniteOverlap.Overlap = math.Inf(1)
	tests := []struct {
		name, token, client, rule string
		want                      error
	}{
		{"another client", tok, "client-b", "checkout", ErrForged},
		{"another rule", tok, "client-a", "search", ErrForged},
		{"a changed quota", flip(25), "client-a", "checkout", ErrForged},
		{"a changed signature", flip(tokenLen - 1), "client-a", "checkout", ErrForged},
		{"an unknown key", Ring{NewKey(t0)}.Sign("client-a", "checkout", claim()), "client-a", "checkout", ErrUnknownKey},
		{"another version", flip(0), "client-a", "checkout", ErrMalformed},
		{"garbage", "not-a-receipt", "client-a", "checkout", ErrMalformed},
		{"empty", "", "client-a", "checkout", ErrMalformed},
		{"too long", strings.Repeat("A", MaxTokenLen+1), "client-a", "checkout", ErrMalformed},
		{"the receipt of an earlier version", base64.RawURLEncoding.EncodeToString(make([]byte, 24)), "client-a", "checkout", ErrMalformed},
		{"a negative quota, signed", bad(negative), "client-a", "checkout", ErrMalformed},
		{"a fixed rate over 1, signed", bad(hugeRate), "client-a", "checkout", ErrMalformed},
		{"a negative sampled rate, signed", bad(negativeSampled), "client-a", "checkout", ErrMalformed},
		{"an infinite overlap, signed", bad(infiniteOverlap), "client-a", "checkout", ErrMalformed},
		{"a version 1 body with a version 2 length", v1Token(cur, "client-a", "checkout", claim(), 1, tokenLen), "client-a", "checkout", ErrMalformed},
		{"a version 2 body with a version 1 length", v1Token(cur, "client-a", "checkout", claim(), 2, tokenLenV1), "client-a", "checkout", ErrMalformed},
		{"a version 2 body with a version 3 length", v1Token(cur, "client-a", "checkout", claim(), 2, tokenLen), "client-a", "checkout", ErrMalformed},
		{"a version 3 body with a version 2 length", v1Token(cur, "client-a", "checkout", claim(), 3, tokenLenV2), "client-a", "checkout", ErrMalformed},
		{"a version 3 body with a version 4 length", v1Token(cur, "client-a", "checkout", claim(), 3, tokenLen), "client-a", "checkout", ErrMalformed},
		{"a version 4 body with a version 3 length", v1Token(cur, "client-a", "checkout", claim(), version, tokenLenV3), "client-a", "checkout", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ring.Open(tt.token, tt.client, tt.rule); !errors.Is(err, tt.want) {
				t.Errorf("Open = %v, want %v", err, tt.want)
			}
		})
	}
	if got := (Ring{}).Sign("c", "r", claim()); got != "" {
		t.Errorf("an empty ring signed %q", got)
	}
}

// v1Token signs c in a token of version v and length n, made as Sign made
// version 1 tokens (no sampled rate) when n is tokenLenV1.
func v1Token(k Key, client, rule string, c Claim, v byte, n int) string {
	b, _ := base64.RawURLEncoding.DecodeString(Ring{k}.Sign(client, rule, c))
	b = b[:n]
	b[0] = v
	copy(b[n-macLen:], mac(k.Secret, b[:n-macLen], client, rule))
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestOpenVersion1: a receipt that a replica of the version before signed
// (without the sampled rate) still opens during a rolling upgrade; its
// sampled rate is taken as 0.
func TestOpenVersion1(t *testing.T) {
	k := NewKey(t0)
	got, err := Ring{k}.Open(v1Token(k, "c", "r", claim(), 1, tokenLenV1), "c", "r")
	if err != nil {
		t.Fatal(err)
	}
	want := claim()
	want.Sampled, want.Applied, want.Overlap = 0, 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("version 1 token (-want +got):\n%s", diff)
	}
}

// TestOpenVersion2: a receipt of version 2 (without the applied rule
// version) still opens; the client counts as not running the rule.
func TestOpenVersion2(t *testing.T) {
	k := NewKey(t0)
	got, err := Ring{k}.Open(v1Token(k, "c", "r", claim(), 2, tokenLenV2), "c", "r")
	if err != nil {
		t.Fatal(err)
	}
	want := claim()
	want.Applied, want.Overlap = 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("version 2 token (-want +got):\n%s", diff)
	}
}

// TestOpenVersion3: a receipt of version 3 (without the overlap) still
// opens; the next report is bounded by the claim's quota alone, as before.
func TestOpenVersion3(t *testing.T) {
	k := NewKey(t0)
	got, err := Ring{k}.Open(v1Token(k, "c", "r", claim(), 3, tokenLenV3), "c", "r")
	if err != nil {
		t.Fatal(err)
	}
	want := claim()
	want.Overlap = 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("version 3 token (-want +got):\n%s", diff)
	}
}

func TestRotate(t *testing.T) {
	k1, k2 := NewKey(t0), NewKey(t0.Add(RotateEvery))
	k3 := NewKey(t0)
	tests := []struct {
		name        string
		set         KeySet
		ok          bool
		now         time.Time
		candidate   Key
		want        KeySet
		wantChanged bool
	}{
		{"the first key", KeySet{}, false, t0, k1, KeySet{Current: k1}, true},
		{"young", KeySet{Current: k1}, true, t0.Add(RotateEvery - time.Second), k2, KeySet{Current: k1}, false},
		{"due: a next key", KeySet{Current: k1}, true, t0.Add(RotateEvery), k2, KeySet{Current: k1, Next: &k2}, true},
		{"next not yet signing", KeySet{Current: k1, Next: &k2}, true, k2.Created.Add(Promote - time.Second), k3, KeySet{Current: k1, Next: &k2}, false},
		{"next signs", KeySet{Current: k1, Next: &k2}, true, k2.Created.Add(Promote), k3, KeySet{Current: k2, Previous: &k1}, true},
		{"the oldest goes at the next rotation", KeySet{Current: k2, Previous: &k1}, true, k2.Created.Add(RotateEvery), k3, KeySet{Current: k2, Next: &k3, Previous: &k1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Rotate(tt.set, tt.ok, tt.now, tt.candidate)
			if diff := cmp.Diff(tt.want, got); diff != "" || changed != tt.wantChanged {
				t.Errorf("Rotate changed %v, want %v; set (-want +got):\n%s", changed, tt.wantChanged, diff)
			}
		})
	}
	// The ring signs with the current key and accepts all three.
	ring := KeySet{Current: k2, Next: &k3, Previous: &k1}.Ring()
	if ring[0].ID != k2.ID || len(ring) != 3 {
		t.Errorf("ring %v", ring)
	}
	b, err := MarshalKeySet(KeySet{Current: k2, Previous: &k1})
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalKeySet(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(KeySet{Current: k2, Previous: &k1}, back); diff != "" {
		t.Errorf("marshal round trip (-want +got):\n%s", diff)
	}
	if _, err := UnmarshalKeySet([]byte(`{}`)); err == nil {
		t.Error("a key set without a current key was accepted")
	}
}

// fakeSource is a KeySource in memory whose answers a test controls.
type fakeSource struct {
	mu    sync.Mutex
	set   KeySet
	ok    bool
	err   error
	calls int
	block chan struct{} // if not nil, calls wait for it
}

func (f *fakeSource) ReceiptKeys(ctx context.Context, now time.Time) (KeySet, error) {
	f.mu.Lock()
	f.calls++
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return KeySet{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return KeySet{}, f.err
	}
	f.set, _ = Rotate(f.set, f.ok, now, NewKey(now))
	f.ok = true
	return f.set, nil
}

func (f *fakeSource) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func TestKeysReloadAndOutage(t *testing.T) {
	clk := clocktest.New(t0)
	src := &fakeSource{}
	keys := NewKeys(src, clk.Now, time.Second)
	ctx := context.Background()
	r1, err := keys.Ring(ctx)
	if err != nil || len(r1) != 1 {
		t.Fatalf("first ring %v, %v", r1, err)
	}
	if _, err := keys.Ring(ctx); err != nil || src.count() != 1 {
		t.Errorf("a second call within Refresh loaded again (%d loads, %v)", src.count(), err)
	}
	// Past RotateEvery, the reload brings the next key, accepted not signing.
	clk.Add(RotateEvery)
	r2, _ := keys.Ring(ctx)
	if len(r2) != 2 || r2[0].ID != r1[0].ID || src.count() != 2 {
		t.Errorf("after RotateEvery: ring %v after %d loads, want the old key first and a next one", r2, src.count())
	}
	// The store goes away: the ring it has goes on, and it is not asked
	// again for retryAfter.
	src.mu.Lock()
	src.err = errors.New("down")
	src.mu.Unlock()
	clk.Add(Refresh)
	if r, err := keys.Ring(ctx); err != nil || len(r) != 2 {
		t.Errorf("with the store down: %v, %v; want the last ring", r, err)
	}
	calls := src.count()
	clk.Add(retryAfter / 2)
	keys.Ring(ctx)
	if src.count() != calls {
		t.Error("asked the store again before retryAfter")
	}

	// A replica that never loaded has nothing to sign with.
	fresh := NewKeys(src, clk.Now, time.Second)
	if _, err := fresh.Ring(ctx); err == nil {
		t.Error("no ring and no store: no error")
	}
	calls = src.count()
	if _, err := fresh.Ring(ctx); err == nil || src.count() != calls {
		t.Errorf("right after a failed load: %v after %d more loads, want the error again and no load", err, src.count()-calls)
	}
}

func TestKeysOneLoadAtATime(t *testing.T) {
	now := t0
	src := &fakeSource{block: make(chan struct{})}
	keys := NewKeys(src, func() time.Time { return now }, time.Minute)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := keys.Ring(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	// Wait until one load is in the store, then let it through.
	for src.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(src.block)
	wg.Wait()
	if n := src.count(); n != 1 {
		t.Errorf("%d loads for 8 concurrent first calls, want 1", n)
	}
}

func TestGuard(t *testing.T) {
	g := NewGuard(2, time.Hour)
	now := t0.Add(time.Minute)
	steps := []struct {
		client, rule string
		issued       time.Time
		want         error
	}{
		{"a", "r", t0, nil},
		{"a", "r", t0, ErrReplayed},
		{"a", "r", t0.Add(-time.Second), ErrReplayed},
		{"a", "r", t0.Add(time.Second), nil},
		{"a", "s", t0, nil}, // another rule
		{"b", "r", t0, ErrFull},
		{"b", "r", now.Add(-2 * time.Hour), ErrExpired},
	}
	for i, s := range steps {
		if err := g.take(s.client, s.rule, s.issued, now); !errors.Is(err, s.want) {
			t.Errorf("step %d: take(%s, %s, %v) = %v, want %v", i, s.client, s.rule, s.issued, err, s.want)
		}
	}
	// An hour on, the old pairs are forgotten and b fits.
	later := now.Add(2 * time.Hour)
	if err := g.take("b", "r", later, later); err != nil || g.Len() != 1 {
		t.Errorf("after the old pairs aged: %v with %d pairs held", err, g.Len())
	}
}

func TestHeldAndTokens(t *testing.T) {
	keys := NewKeys(&fakeSource{}, func() time.Time { return t0 }, time.Second)
	if _, err := keys.Ring(context.Background()); err != nil {
		t.Fatal(err)
	}
	tokens := Tokens{Keys: keys, Guard: NewGuard(100, time.Hour)}
	now := t0.Add(10 * time.Second)
	echoed := tokens.Keep("c", "r", claim())

	h := NewHeld()
	k := h.Over(tokens)
	// The first report of a stream brings the token.
	got, ok, err := k.Previous("c", "r", echoed, now)
	if !ok || err != nil || got != claim() {
		t.Fatalf("first report: %v, %v, %v", got, ok, err)
	}
	// Later ones need none, even if the answer to the first was lost.
	if got, ok, _ := k.Previous("c", "r", "", now); !ok || got != claim() {
		t.Errorf("second report without a token: %v, %v", got, ok)
	}
	// The token cannot be used again, here or by another stream.
	if _, ok, err := NewHeld().Over(tokens).Previous("c", "r", echoed, now); ok || !errors.Is(err, ErrReplayed) {
		t.Errorf("the token replayed: %v, %v; want ErrReplayed", ok, err)
	}
	next := claim()
	next.Bucket++
	if tok := k.Keep("c", "r", next); tok == "" {
		t.Error("Keep returned no token: the client needs one to reconnect with")
	}
	if got, _ := h.Claim("r"); got != next {
		t.Errorf("held %v, want the claim kept", got)
	}
	// A token that does not open counts as none.
	if _, ok, err := NewHeld().Over(tokens).Previous("c", "s", "forged", now); ok || err == nil {
		t.Errorf("a bad token: %v, %v", ok, err)
	}
}

// TestResentTakesATokenOnceMore: a report sent again takes its token for
// the bound only, once more after any take of it on this replica, and
// never retracts with it; a stream holds what it took, so that the same
// report, failed by the store and sent again on the stream, is bounded the
// same without the guard; a claim the stream holds already is the
// stream's to retract. Before, a token was taken once per replica, so a
// resend the store failed was bounded as a new client's when it came
// again.
func TestResentTakesATokenOnceMore(t *testing.T) {
	keys := NewKeys(&fakeSource{}, func() time.Time { return t0 }, time.Second)
	if _, err := keys.Ring(context.Background()); err != nil {
		t.Fatal(err)
	}
	tokens := Tokens{Keys: keys, Guard: NewGuard(100, time.Hour)}
	now := t0.Add(10 * time.Second)
	first, second := claim(), claim()
	second.Issued = first.Issued.Add(time.Second)
	tok1, tok2 := tokens.Keep("c", "r", first), tokens.Keep("c", "r", second)
	bound := func(c Claim) Claim {
		c.BoundOnly = true
		return c
	}
	type take func(client, rule, token string, now time.Time) (Claim, bool, error)
	for i, st := range []struct {
		what  string
		take  take
		token string
		want  Claim // zero: refused as replayed
	}{
		{"first token, taken", tokens.Previous, tok1, first},
		{"first token, resent", tokens.Resent, tok1, bound(first)},
		{"first token, resent again", tokens.Resent, tok1, Claim{}},
		{"first token, taken again", tokens.Previous, tok1, Claim{}},
		{"second token, resent", tokens.Resent, tok2, bound(second)},
		{"second token, resent again", tokens.Resent, tok2, bound(second)},
		{"second token, resent a third time", tokens.Resent, tok2, Claim{}},
		{"second token, taken", tokens.Previous, tok2, Claim{}},
		{"another stream: a held claim of the second", NewHeld().Over(tokens).(ResendKeeper).Resent, tok2, Claim{}},
	} {
		got, ok, err := st.take("c", "r", st.token, now)
		if st.want == (Claim{}) {
			if ok || !errors.Is(err, ErrReplayed) {
				t.Errorf("step %d (%s): %v, %v, %v; want ErrReplayed", i, st.what, got, ok, err)
			}
			continue
		}
		if !ok || err != nil || got != st.want {
			t.Errorf("step %d (%s): %v, %v, %v; want %v", i, st.what, got, ok, err, st.want)
		}
	}

	// A stream takes a resent report's token once and holds its claim,
	// for the bound only, until it keeps a new one.
	third := claim()
	third.Issued = second.Issued.Add(time.Second)
	tok3 := tokens.Keep("c", "r", third)
	h := NewHeld()
	k := h.Over(tokens).(ResendKeeper)
	for try := range 3 {
		if got, ok, err := k.Resent("c", "r", tok3, now); !ok || err != nil || got != bound(third) {
			t.Errorf("resend %d on one stream: %v, %v, %v; want %v", try, got, ok, err, bound(third))
		}
	}
	if got, ok, _ := k.Previous("c", "r", "", now); !ok || got != bound(third) {
		t.Errorf("the next report on the stream: %v, %v; want the held claim, for the bound only", got, ok)
	}
	k.Keep("c", "r", first)
	if got, ok, _ := k.Resent("c", "r", tok3, now); !ok || got != first {
		t.Errorf("a resend on a stream that kept a claim since: %v, %v; want the claim kept, to retract", got, ok)
	}
}
