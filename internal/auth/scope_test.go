package auth

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestGlobWithin(t *testing.T) {
	tests := []struct {
		pattern, scope string
		want           bool
	}{
		{"shop-cart", "shop-*", true},
		{"SHOP-Cart", "shop-*", true},
		{"shop-*", "shop-*", true},
		{"shop-cart-*", "shop-*", true},
		{"shop-?", "shop-*", true},
		{"shop-*-eu", "shop-*", true},
		{"anything", "*", true},
		{"", "*", true},
		{"*", "*", true},
		{"", "shop-*", false}, // the empty glob matches every service
		{"*", "shop-*", false},
		{"shop*", "shop-*", false}, // "shop" and "shopping" are not shop-…
		{"sho?-cart", "shop-*", false},
		{"payments", "shop-*", false},
		{"*-eu", "*-eu", true},
		{"shop-*-eu", "*-eu", true},
		{"shop-*", "*-eu", false},
		{"shop-*-eu", "shop-*-eu", true},
		{"shop-a*b-eu", "shop-*-eu", true},
		{"shop-*", "shop-*-eu", false},
		{"shop-x", "shop-?", true},   // a name matched by the scope
		{"shop-*", "shop-?*", false}, // true, but not provable by the rule
		{"shop-**", "shop-*", true},  // folded the same
		{"cart", "cart", true},
		{"cart", "Cart", true},
		{"carts", "cart", false},
	}
	for _, tt := range tests {
		if got := GlobWithin(tt.pattern, tt.scope); got != tt.want {
			t.Errorf("GlobWithin(%q, %q) = %v, want %v", tt.pattern, tt.scope, got, tt.want)
		}
	}
}

// TestGlobWithinSound checks the promise against the matcher: whenever
// GlobWithin says yes, every name the pattern matches, the scope matches.
func TestGlobWithinSound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab-*?"
	word := func(n int, chars string) string {
		var b strings.Builder
		for range r.IntN(n + 1) {
			b.WriteByte(chars[r.IntN(len(chars))])
		}
		return b.String()
	}
	proved := 0
	for range 20000 {
		p, s := word(6, alphabet), word(5, alphabet)
		if !GlobWithin(p, s) {
			continue
		}
		proved++
		for range 50 {
			// A name the pattern matches: each wildcard filled in.
			var b strings.Builder
			for _, c := range p {
				switch c {
				case '*':
					b.WriteString(word(3, "ab-A"))
				case '?':
					b.WriteByte("ab-A"[r.IntN(4)])
				default:
					b.WriteRune(c)
				}
			}
			name := b.String()
			if !rules.MatchGlob(p, name) {
				t.Fatalf("test bug: %q does not match %q", name, p)
			}
			if !rules.MatchGlob(s, name) {
				t.Fatalf("GlobWithin(%q, %q) but %q matches the pattern and not the scope", p, s, name)
			}
		}
	}
	if proved < 1000 {
		t.Fatalf("only %d of 20000 random pairs proved: the test is too weak", proved)
	}
}
