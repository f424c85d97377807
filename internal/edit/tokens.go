package edit

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
)

// TokenStore is what credential edits need from a store.
type TokenStore interface {
	CreateToken(ctx context.Context, t store.Token) (store.Token, error)
	Token(ctx context.Context, name string) (store.Token, error)
	Tokens(ctx context.Context) (store.TokenSnapshot, error)
	RevokeToken(ctx context.Context, name, actor string) (store.Token, error)
}

// Tokens issues, reads and revokes credentials: package auth makes them
// (auth.Issue), the store keeps their records, and the context's principal
// is who made or revoked each. It is safe for concurrent use.
type Tokens struct {
	store TokenStore
	// box seals AWS keys' secrets; one that is not enabled refuses them.
	box *secrets.Box
	now func() time.Time
}

// NewTokens returns the credential editor over st; now nil is time.Now.
func NewTokens(st TokenStore, box *secrets.Box, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{store: st, box: box, now: now}
}

// Create issues the credential spec describes, made by the context's
// principal (spec.Actor is set here), and stores it. The secret (a bearer
// token, or an AWS secret access key) is returned once: the store keeps
// only its hash or, for an AWS key, its sealed form.
func (e *Tokens) Create(ctx context.Context, spec auth.TokenSpec) (store.Token, string, error) {
	spec.Actor = auth.Actor(ctx)
	iss, err := auth.Issue(spec, e.box, e.now())
	if err != nil {
		return store.Token{}, "", err
	}
	created, err := e.store.CreateToken(ctx, iss.Record)
	if err != nil {
		return store.Token{}, "", err
	}
	return created, iss.Secret, nil
}

// Get returns the credential called name.
func (e *Tokens) Get(ctx context.Context, name string) (store.Token, error) {
	if err := checkTokenName(name); err != nil {
		return store.Token{}, err
	}
	return e.store.Token(ctx, name)
}

// TokenPage is one page of a credential listing, by name.
type TokenPage struct {
	Tokens []store.Token
	// NextToken continues the listing; empty on the last page.
	NextToken string
}

// List returns up to pageSize credentials by name, after the one pageToken
// names (a NextToken of an earlier page; empty: from the first).
func (e *Tokens) List(ctx context.Context, pageSize int, pageToken string) (TokenPage, error) {
	after := ""
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || len(b) == 0 || len(b) > auth.MaxTokenNameLen {
			return TokenPage{}, invalid("page_token", "not a page token of ListTokens")
		}
		after = string(b)
	}
	snap, err := e.store.Tokens(ctx)
	if err != nil {
		return TokenPage{}, err
	}
	slices.SortFunc(snap.Tokens, func(a, b store.Token) int { return strings.Compare(a.Name, b.Name) })
	var page TokenPage
	for _, t := range snap.Tokens {
		if after != "" && t.Name <= after {
			continue
		}
		if len(page.Tokens) == pageSize {
			page.NextToken = base64.RawURLEncoding.EncodeToString([]byte(page.Tokens[pageSize-1].Name))
			break
		}
		page.Tokens = append(page.Tokens, t)
	}
	return page, nil
}

// Revoke revokes the credential called name, as the context's principal.
// Revoking a revoked credential changes nothing.
func (e *Tokens) Revoke(ctx context.Context, name string) (store.Token, error) {
	if err := checkTokenName(name); err != nil {
		return store.Token{}, err
	}
	return e.store.RevokeToken(ctx, name, auth.Actor(ctx))
}

// Now is the editor's clock: a credential's state (expired or not) is
// shown as of it.
func (e *Tokens) Now() time.Time { return e.now() }

// checkTokenName checks a credential's name as a new one's is checked.
func checkTokenName(name string) error {
	return auth.ValidateSpec(&auth.TokenSpec{Name: name, Role: auth.RoleViewer})
}
