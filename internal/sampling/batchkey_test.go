package sampling

import (
	"regexp"
	"testing"
)

// TestNewBatchKey: 128 random bits in 32 lowercase hex digits, new each
// time.
func TestNewBatchKey(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 1000 {
		k := newBatchKey()
		if !hex32.MatchString(k) {
			t.Fatalf("newBatchKey() = %q, want 32 lowercase hex digits", k)
		}
		if seen[k] {
			t.Fatalf("newBatchKey() gave %q twice", k)
		}
		seen[k] = true
	}
}
