package reservoir

import "testing"

// TestGateBucket: a fresh bucket holds max(1, rate) tokens, a take gets
// the whole ones up to its count, a clock behind the bucket's adds
// nothing, and the bucket is kept until full again and a second more,
// within [1 s, GateMaxTTL].
func TestGateBucket(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rate  float64
		takes [][2]int64 // at ms, count
		got   []int64
		ttl   int64
	}{
		{"a second's worth", 5, [][2]int64{{0, 3}, {0, 3}, {100, 1}}, []int64{3, 2, 0}, 900 + 1000}, // 0.5 left
		// 0.5 tokens at 100 ms: not a whole one; full at 1,000 ms.
		{"refill", 5, [][2]int64{{0, 5}, {100, 1}, {200, 1}}, []int64{5, 0, 1}, 1000 + 1000},
		{"below one a second", 0.25, [][2]int64{{0, 2}, {3999, 1}, {4000, 1}}, []int64{1, 0, 1}, 4000 + 1000},
		{"a clock behind", 1, [][2]int64{{5000, 1}, {4000, 1}, {5999, 1}, {6000, 1}}, []int64{1, 0, 0, 1}, 1000 + 1000},
		{"a slow rate", 1e-6, [][2]int64{{0, 1}}, []int64{1}, GateMaxTTL},
		{"nothing asked", 2, [][2]int64{{0, 0}}, []int64{0}, 1000},
	} {
		var b GateBucket
		for i, tk := range tt.takes {
			if got := b.Take(tk[0], tt.rate, i == 0, tk[1]); got != tt.got[i] {
				t.Errorf("%s: take %d of %d at %d ms got %d, want %d", tt.name, i, tk[1], tk[0], got, tt.got[i])
			}
		}
		if ttl := b.TTL(tt.rate); ttl != tt.ttl {
			t.Errorf("%s: kept %d ms, want %d", tt.name, ttl, tt.ttl)
		}
	}
}
