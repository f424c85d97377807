package sampling

import (
	"regexp"
	"testing"
)

// TestBatchKeys: 128 random bits in 32 lowercase hex digits, new each
// time, across the blocks they are made in.
func TestBatchKeys(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	var keys batchKeys
	for range 10 * keysAhead {
		k := keys.next()
		if !hex32.MatchString(k) {
			t.Fatalf("next() = %q, want 32 lowercase hex digits", k)
		}
		if seen[k] {
			t.Fatalf("next() gave %q twice", k)
		}
		seen[k] = true
	}
}
