package store

import (
	"context"
	"errors"
	"slices"
	"time"
)

// TopicTokens is published after every token creation and revocation, so
// that every replica's token cache reloads and a revoked token is refused
// everywhere within a second.
const TopicTokens Topic = "tokens"

// ErrLimit: the store holds as many of a kind of record as it allows.
var ErrLimit = errors.New("limit reached")

// MaxTokens bounds the tokens a store keeps, revoked and expired ones
// included until they are pruned (TokenRetention after they ended).
const MaxTokens = 10000

// TokenRetention is how long a revoked or expired token is still listed
// (as revoked or expired) before a later CreateToken prunes it, freeing its
// name.
const TokenRetention = 30 * 24 * time.Hour

// Token is a credential's stored record. It never holds a usable secret: a
// bearer token is kept as a hash of it, and an AWS access key's secret,
// which the server needs to verify SigV4 signatures, only sealed (encrypted)
// with the server's key. Package auth makes and checks them; stores only
// keep them.
type Token struct {
	// Name identifies the token (and is its principal's name).
	Name string
	// Role is "viewer", "editor", "sdk" or "admin".
	Role string
	// Services are the service globs the token is scoped to; empty means
	// every service.
	Services []string
	// Hash is the hex SHA-256 of a bearer token's secret; empty for an AWS
	// access key.
	Hash string
	// AccessKeyID is an AWS access key's ID; empty for a bearer token.
	AccessKeyID string
	// SealedSecret is an AWS access key's secret, sealed by the server's
	// key (package secrets); empty for a bearer token.
	SealedSecret string
	CreateTime   time.Time
	// ExpireTime is zero for a token that does not expire.
	ExpireTime time.Time
	// RevokeTime is zero for a token that is not revoked.
	RevokeTime time.Time
	// CreatedBy and RevokedBy are the actors of the two changes, for the
	// audit trail.
	CreatedBy string
	RevokedBy string
}

// Clone returns a copy of t that shares nothing with it.
func (t Token) Clone() Token {
	t.Services = slices.Clone(t.Services)
	return t
}

// Ended reports whether t was revoked or expired at now.
func (t *Token) Ended(now time.Time) bool {
	return !t.RevokeTime.IsZero() && !now.Before(t.RevokeTime) ||
		!t.ExpireTime.IsZero() && !now.Before(t.ExpireTime)
}

// TokenSnapshot is every token at one tokens version, by name.
type TokenSnapshot struct {
	Tokens  []Token
	Version int64
}

// TokenStore keeps tokens. All methods are safe for concurrent use and
// return copies the caller owns. Validation (names, roles, globs) is the
// caller's; a store enforces unique names, hashes and access key IDs, and
// MaxTokens.
type TokenStore interface {
	// CreateToken stores t with CreateTime set to the store's now (and
	// RevokeTime, RevokedBy cleared), or returns ErrAlreadyExists if its name, hash
	// or access key ID is taken, or ErrLimit if MaxTokens tokens are kept.
	// It first prunes tokens that ended more than TokenRetention ago. It
	// publishes TopicTokens.
	CreateToken(ctx context.Context, t Token) (Token, error)
	// Token returns the token called name, or ErrNotFound.
	Token(ctx context.Context, name string) (Token, error)
	// Tokens returns every token, by name, and the tokens version they were
	// read at.
	Tokens(ctx context.Context) (TokenSnapshot, error)
	// TokensVersion returns the tokens version, which grows on every
	// creation and revocation.
	TokensVersion(ctx context.Context) (int64, error)
	// RevokeToken marks the token called name revoked at the store's now by
	// actor, or returns ErrNotFound. Revoking a revoked token changes
	// nothing and returns it as it is. It publishes TopicTokens.
	RevokeToken(ctx context.Context, name, actor string) (Token, error)
	// TokenByHash returns the bearer token whose Hash is hash, or
	// ErrNotFound.
	TokenByHash(ctx context.Context, hash string) (Token, error)
	// TokenByAccessKey returns the AWS access key whose AccessKeyID is id,
	// or ErrNotFound.
	TokenByAccessKey(ctx context.Context, id string) (Token, error)
}
