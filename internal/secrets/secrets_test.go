package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/internal/secrets"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, secrets.KeySize) }

func box(t *testing.T, keys ...[]byte) *secrets.Box {
	t.Helper()
	b, err := secrets.NewBox(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	b := box(t, key(1))
	for _, plain := range []string{"s3cret", "é€😀", strings.Repeat("x", 256)} {
		sealed, err := b.Seal(plain, "webhook:shop:0")
		if err != nil {
			t.Fatal(err)
		}
		if !secrets.IsSealed(sealed) || strings.Contains(sealed, plain) {
			t.Fatalf("Seal(%q) = %q: not sealed", plain, sealed)
		}
		got, err := b.Open(sealed, "webhook:shop:0")
		if err != nil || got != plain {
			t.Fatalf("Open(Seal(%q)) = %q, %v", plain, got, err)
		}
		again, _ := b.Seal(plain, "webhook:shop:0")
		if again == sealed {
			t.Errorf("two seals of %q are equal: the nonce is not fresh", plain)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	b := box(t, key(1))
	sealed, err := b.Seal("s3cret", "webhook:shop:0")
	if err != nil {
		t.Fatal(err)
	}
	body := sealed[strings.LastIndex(sealed, ":")+1:]
	raw, _ := base64.RawURLEncoding.DecodeString(body)
	raw[len(raw)-1] ^= 1
	flipped := sealed[:len(sealed)-len(body)] + base64.RawURLEncoding.EncodeToString(raw)
	tests := []struct {
		name    string
		box     *secrets.Box
		v, ctx  string
		wantErr error
	}{
		{"another context", b, sealed, "webhook:shop:1", secrets.ErrCorrupt},
		{"a flipped bit", b, flipped, "webhook:shop:0", secrets.ErrCorrupt},
		{"truncated", b, sealed[:len(sealed)-10], "webhook:shop:0", secrets.ErrCorrupt},
		{"no key id", b, "enc1:abc", "webhook:shop:0", secrets.ErrCorrupt},
		{"bad base64", b, "enc1:" + sealed[5:13] + ":!!!", "webhook:shop:0", secrets.ErrCorrupt},
		{"another key", box(t, key(2)), sealed, "webhook:shop:0", secrets.ErrNoKey},
		{"no box", nil, sealed, "webhook:shop:0", secrets.ErrNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.v, tt.ctx)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open = %q, %v; want %v", got, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}

// TestMigration: plain values written before a key was configured still
// open, and keys rotate.
func TestMigration(t *testing.T) {
	var none *secrets.Box
	plain, err := none.Seal("s3cret", "c")
	if err != nil || plain != "s3cret" {
		t.Fatalf("Seal without a key = %q, %v; want the value unchanged", plain, err)
	}
	old := box(t, key(1))
	sealedOld, _ := old.Seal("s3cret", "c")
	rotated := box(t, key(2), key(1))
	for _, v := range []string{plain, sealedOld} {
		got, err := rotated.Open(v, "c")
		if err != nil || got != "s3cret" {
			t.Errorf("Open(%.12q…) after rotation = %q, %v", v, got, err)
		}
	}
	if !rotated.NeedsReseal(plain) || !rotated.NeedsReseal(sealedOld) {
		t.Error("NeedsReseal is false for a plain value or one under the old key")
	}
	sealedNew, _ := rotated.Seal("s3cret", "c")
	if rotated.NeedsReseal(sealedNew) || none.NeedsReseal(plain) {
		t.Error("NeedsReseal is true for a value under the current key, or without a key")
	}
	if _, err := old.Open(sealedNew, "c"); !errors.Is(err, secrets.ErrNoKey) {
		t.Errorf("the old box opened a value of the new key: %v", err)
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hexKey, b64Key := hex.EncodeToString(key(1)), base64.StdEncoding.EncodeToString(key(2))
	b, err := secrets.LoadKeyFile(write("ok", "# current\n"+hexKey+"\n\n"+b64Key+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := b.Seal("x", "c")
	if got, err := box(t, key(1)).Open(sealed, "c"); err != nil || got != "x" {
		t.Errorf("the first line is not the sealing key: %q, %v", got, err)
	}
	for name, content := range map[string]string{
		"empty":   "# nothing\n",
		"short":   hexKey[:62] + "\n",
		"garbage": "not a key at all\n",
		"twice":   hexKey + "\n" + hexKey + "\n",
	} {
		_, err := secrets.LoadKeyFile(write(name, content))
		if err == nil {
			t.Errorf("LoadKeyFile(%s) accepted it", name)
			continue
		}
		if strings.Contains(err.Error(), hexKey[:16]) || strings.Contains(err.Error(), "not a key at all") {
			t.Errorf("LoadKeyFile(%s) error echoes the file: %v", name, err)
		}
	}
}
