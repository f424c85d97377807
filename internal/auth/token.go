package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Bearer tokens look like "tsc_" followed by 58 lower-case base32
// characters: 256 random bits and a CRC-32 of them. The prefix lets secret
// scanners (and people) recognise a leaked token; the checksum lets a
// scanner tell a real one from a look-alike, and the server refuse a
// mistyped one without a store lookup.
const (
	TokenPrefix  = "tsc_"
	tokenRandLen = 32
	tokenBodyLen = 58 // base32 of 36 bytes, unpadded
	accessKeyPfx = "TSCK"
	// MinStaticTokenLen bounds the strength of a configured token (the
	// first admin's): 24 characters of `openssl rand -hex 32` or such.
	MinStaticTokenLen = 24
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewTokenSecret returns a new bearer token.
func NewTokenSecret() string {
	var b [tokenRandLen + 4]byte
	_, _ = rand.Read(b[:tokenRandLen]) // never fails (crypto/rand)
	binary.BigEndian.PutUint32(b[tokenRandLen:], crc32.ChecksumIEEE(b[:tokenRandLen]))
	return TokenPrefix + strings.ToLower(b32.EncodeToString(b[:]))
}

// wellFormed reports whether s has a bearer token's shape and checksum.
func wellFormed(s string) bool {
	body, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok || len(body) != tokenBodyLen {
		return false
	}
	b, err := b32.DecodeString(strings.ToUpper(body))
	if err != nil || len(b) != tokenRandLen+4 {
		return false
	}
	return binary.BigEndian.Uint32(b[tokenRandLen:]) == crc32.ChecksumIEEE(b[:tokenRandLen])
}

// HashToken returns what the store keeps of a bearer token: the hex SHA-256
// of it. A fast unkeyed hash is enough because tokens carry 256 random bits:
// no dictionary or brute force can invert it, so a slow password hash
// (bcrypt, Argon2) would only cost CPU on every call, and a keyed hash
// would add a second secret that every replica and the CLI's bootstrap
// would have to share (and whose loss would void every token). The hash is
// the lookup key; the final comparison is constant-time all the same.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// sameHash compares two hashes in constant time.
func sameHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// TokenSpec is what `tokens create` asks for.
type TokenSpec struct {
	Name string
	Role Role
	// Services scope the token; empty means every service.
	Services []string
	// TTL is how long the token is valid; 0 means it does not expire.
	TTL time.Duration
	// AWS asks for an AWS access key pair (for SigV4 on the X-Ray API)
	// instead of a bearer token.
	AWS bool
	// Actor creates it (the audit trail).
	Actor string
}

// Limits of token specs.
const (
	MaxTokenNameLen = 64
	MaxTokenScopes  = 16
	MaxTokenTTL     = 10 * 365 * 24 * time.Hour
)

// ValidateSpec checks a TokenSpec, naming each bad field as the API does.
func ValidateSpec(s *TokenSpec) error {
	var vs []rules.FieldViolation
	add := func(field, format string, args ...any) {
		vs = append(vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if s.Name == "" || len(s.Name) > MaxTokenNameLen || strings.Trim(s.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@") != "" {
		add("name", "1-%d letters, digits and - _ . @", MaxTokenNameLen)
	}
	if _, err := ParseRole(string(s.Role)); err != nil {
		add("role", "viewer, editor, sdk or admin")
	}
	if len(s.Services) > MaxTokenScopes {
		add("services", "at most %d globs", MaxTokenScopes)
	}
	for i, g := range s.Services {
		if g == "" || len(g) > rules.MaxServiceNameLen || strings.ContainsFunc(g, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			add(fmt.Sprintf("services[%d]", i), "a glob of 1-%d printable characters", rules.MaxServiceNameLen)
		}
	}
	if s.TTL < 0 || s.TTL > MaxTokenTTL {
		add("ttl", "between 0 (never) and %v", MaxTokenTTL)
	}
	if len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	return nil
}

// ErrNoSealingKey: an AWS access key was asked for, but the server has no
// key to seal its secret with (FAILED_PRECONDITION).
var ErrNoSealingKey = fmt.Errorf("AWS access keys need a key to seal their secrets at rest: set --secrets-key-file (%s)", docRef)

// Issued is a new credential: its record for the store and the secret the
// caller is shown once.
type Issued struct {
	Record store.Token
	// Secret is the bearer token, or the AWS secret access key.
	Secret string
	// AccessKeyID is the AWS access key ID; empty for a bearer token.
	AccessKeyID string
}

// Issue makes a credential for spec. An AWS key's secret must be
// recoverable to verify signatures, so it is sealed with box (see package
// secrets): without a key Issue refuses, rather than store it in the
// clear. The store stamps the create time; ExpireTime is now+TTL.
func Issue(spec TokenSpec, box *secrets.Box, now time.Time) (Issued, error) {
	if err := ValidateSpec(&spec); err != nil {
		return Issued{}, err
	}
	rec := store.Token{
		Name:      spec.Name,
		Role:      string(spec.Role),
		Services:  append([]string(nil), spec.Services...),
		CreatedBy: spec.Actor,
	}
	if spec.TTL > 0 {
		rec.ExpireTime = now.Add(spec.TTL)
	}
	if !spec.AWS {
		secret := NewTokenSecret()
		rec.Hash = HashToken(secret)
		return Issued{Record: rec, Secret: secret}, nil
	}
	if !box.Enabled() {
		return Issued{}, ErrNoSealingKey
	}
	var idb [10]byte
	_, _ = rand.Read(idb[:])
	id := accessKeyPfx + b32.EncodeToString(idb[:]) // 4 + 16 characters, as AWS's
	var sb [30]byte
	_, _ = rand.Read(sb[:])
	secret := base64.StdEncoding.EncodeToString(sb[:]) // 40 characters, as AWS's
	sealed, err := box.Seal(secret, sealContext(id))
	if err != nil {
		return Issued{}, err
	}
	rec.AccessKeyID, rec.SealedSecret = id, sealed
	return Issued{Record: rec, Secret: secret, AccessKeyID: id}, nil
}

// sealContext binds a sealed AWS secret to its access key ID.
func sealContext(accessKeyID string) string { return "aws-secret:" + accessKeyID }

// principalOf returns the principal of a stored token.
func principalOf(t *store.Token, kind Kind) *Principal {
	return newPrincipal(t.Name, Role(t.Role), t.Services, kind)
}

// checkLive refuses a revoked or expired token, saying which.
func checkLive(t *store.Token, now time.Time) error {
	switch {
	case !t.RevokeTime.IsZero() && !now.Before(t.RevokeTime):
		return unauthenticated("token %q was revoked; ask an admin for a new one", t.Name)
	case !t.ExpireTime.IsZero() && !now.Before(t.ExpireTime):
		return unauthenticated("token %q expired at %s; ask an admin for a new one", t.Name, t.ExpireTime.UTC().Format(time.RFC3339))
	}
	if _, err := ParseRole(t.Role); err != nil {
		return denied("token %q has %v", t.Name, err)
	}
	return nil
}

// StaticToken is a bearer token from the server's configuration rather
// than the store: the first admin's (--admin-token-file), with which the
// others are created.
type StaticToken struct {
	Name     string
	Role     Role
	Services []string
	Secret   string
}
