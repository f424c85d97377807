// Package secrets seals values that the control plane must read back but
// that must not sit in its store in the clear: webhook secrets and the
// secrets of the AWS access keys it issues (it needs them to verify SigV4
// signatures). A Box encrypts with AES-256-GCM (the standard library's; no
// other module is needed) under a key read from a file.
//
// A sealed value is "enc1:<key id>:<base64url of nonce‖ciphertext‖tag>".
// The prefix lets sealed and plain values coexist while a store migrates:
// Open returns a value without it unchanged. The key ID (the first 4 bytes
// of SHA-256 of the key, in hex) lets a Box hold old keys beside the
// current one, so keys rotate without re-sealing everything at once.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Prefix starts every sealed value.
const Prefix = "enc1:"

// KeySize is the size of a key: AES-256.
const KeySize = 32

// ErrNoKey: a sealed value was met but no key is configured, or not the key
// it was sealed with.
var ErrNoKey = errors.New("no key to open this sealed value")

// ErrCorrupt: a sealed value does not decrypt under its key (tampered,
// truncated, or sealed for another purpose).
var ErrCorrupt = errors.New("sealed value does not decrypt")

// Box seals and opens values. The zero Box (and a nil *Box) has no key:
// Seal returns values unchanged and Open refuses sealed ones. A Box is
// immutable and safe for concurrent use.
type Box struct {
	current *key
	keys    map[string]*key
}

type key struct {
	id   string
	aead cipher.AEAD
}

// NewBox returns a Box that seals with keys[0] and opens with any of keys.
// Each key is KeySize bytes.
func NewBox(keys ...[]byte) (*Box, error) {
	if len(keys) == 0 {
		return nil, errors.New("secrets: no key")
	}
	b := &Box{keys: make(map[string]*key, len(keys))}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("secrets: key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %d: %w", i+1, err)
		}
		sum := sha256.Sum256(k)
		kk := &key{id: hex.EncodeToString(sum[:4]), aead: aead}
		if _, dup := b.keys[kk.id]; dup {
			return nil, fmt.Errorf("secrets: key %d repeats an earlier key", i+1)
		}
		b.keys[kk.id] = kk
		if i == 0 {
			b.current = kk
		}
	}
	return b, nil
}

// LoadKeyFile reads a key file: one key per line, each 64 hex digits or the
// standard base64 of 32 bytes (`openssl rand -hex 32` makes one); the first
// line seals, the others only open (older keys while rotating). Blank lines
// and lines starting with '#' are skipped.
func LoadKeyFile(path string) (*Box, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: read key file: %w", err)
	}
	var keys [][]byte
	for i, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, err := parseKey(string(line))
		if err != nil {
			// Never echo the line: it is a key.
			return nil, fmt.Errorf("secrets: %s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("secrets: %s holds no key", path)
	}
	return NewBox(keys...)
}

func parseKey(s string) ([]byte, error) {
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("not a key: want 64 hex digits or the base64 of %d bytes", KeySize)
}

// Enabled reports whether b has a key.
func (b *Box) Enabled() bool { return b != nil && b.current != nil }

// IsSealed reports whether v is a sealed value.
func IsSealed(v string) bool { return strings.HasPrefix(v, Prefix) }

// Seal encrypts plain, bound to context (say "webhook:budget-name:0" or
// "aws:ACCESSKEYID"): a sealed value copied to another context does not
// open. Without a key, and for the empty string, plain is returned as it
// is.
func (b *Box) Seal(plain, context string) (string, error) {
	if !b.Enabled() || plain == "" {
		return plain, nil
	}
	k := b.current
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	out := k.aead.Seal(nonce, nonce, []byte(plain), []byte(context))
	return Prefix + k.id + ":" + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open returns the plain value of v sealed in context, or v itself if it
// is not sealed (a value written before a key was configured). It returns
// ErrNoKey if b lacks v's key and ErrCorrupt if v does not decrypt. Errors
// never include v or the plain value.
func (b *Box) Open(v, context string) (string, error) {
	if !IsSealed(v) {
		return v, nil
	}
	id, body, ok := strings.Cut(v[len(Prefix):], ":")
	if !ok {
		return "", ErrCorrupt
	}
	if b == nil {
		return "", ErrNoKey
	}
	k, ok := b.keys[id]
	if !ok {
		return "", fmt.Errorf("%w (key %.8s)", ErrNoKey, id)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
		return "", ErrCorrupt
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, raw[:n], raw[n:], []byte(context))
	if err != nil {
		return "", ErrCorrupt
	}
	return string(plain), nil
}

// NeedsReseal reports whether v should be sealed again: it is plain while
// b has a key, or sealed with a key other than b's current one.
func (b *Box) NeedsReseal(v string) bool {
	if !b.Enabled() || v == "" {
		return false
	}
	if !IsSealed(v) {
		return true
	}
	id, _, _ := strings.Cut(v[len(Prefix):], ":")
	return id != b.current.id
}
