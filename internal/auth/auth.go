// Package auth decides who may do what on the control plane: it turns the
// credentials of a call (a bearer token, a mutual-TLS client certificate, a
// SigV4 signature, or none from a trusted network) into a Principal, checks
// the call against a policy table that names every gRPC method and HTTP
// route (anything not named is refused), enforces per-principal limits, and
// puts the principal in the context so the audit log records who really
// made a change.
//
// The core (Guard.Check, Authorize, the Limiter) knows no transport; thin
// adapters serve gRPC (UnaryInterceptor, StreamInterceptor), HTTP
// (Middleware) and the X-Ray API's SigV4 (Guard implements xray.Verifier).
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// Role is what a principal may do; each role includes the ones before it
// but sdk, which is apart.
type Role string

// Roles.
const (
	// RoleViewer reads rules, budgets, their status and alerts, the
	// dashboard and the metrics.
	RoleViewer Role = "viewer"
	// RoleEditor also edits rules and budgets (within its services).
	RoleEditor Role = "editor"
	// RoleSDK makes the sampling calls only: rules for a service, targets,
	// the stream, and the X-Ray and Jaeger sampling endpoints (for its
	// services).
	RoleSDK Role = "sdk"
	// RoleAdmin may do everything, tokens included.
	RoleAdmin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleViewer, RoleEditor, RoleSDK, RoleAdmin}

// ParseRole returns the role called s.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles, r) {
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: want viewer, editor, sdk or admin", s)
}

// Kind says how a principal was authenticated.
type Kind string

// Kinds of principals.
const (
	// KindToken: a bearer token from the token store.
	KindToken Kind = "token"
	// KindStatic: a bearer token from the server's configuration (the
	// first admin's, from --admin-token-file).
	KindStatic Kind = "static"
	// KindAccessKey: a SigV4 signature by an access key the control plane
	// issued.
	KindAccessKey Kind = "aws"
	// KindCert: a verified mutual-TLS client certificate.
	KindCert Kind = "cert"
	// KindLocal: a loopback peer of a server without credentials
	// configured (protected mode).
	KindLocal Kind = "local"
	// KindAnonymous: a peer in a network opened to anonymous sampling.
	KindAnonymous Kind = "anonymous"
)

// Principal is who makes a call. Principals are immutable once made.
type Principal struct {
	// Name is the token's name, the certificate's mapped name, "local", or
	// the anonymous peer's address.
	Name string
	Role Role
	// Services are the service globs the principal is scoped to; empty
	// means every service.
	Services []string
	Kind     Kind

	globs []rules.Glob // Services compiled; nil in a Principal made by hand
}

// newPrincipal returns a principal with its globs compiled.
func newPrincipal(name string, role Role, services []string, kind Kind) *Principal {
	p := &Principal{Name: name, Role: role, Services: slices.Clone(services), Kind: kind}
	for _, s := range p.Services {
		p.globs = append(p.globs, rules.CompileGlob(s))
	}
	return p
}

// Actor is what the audit log records for the principal's changes:
// "token:shop-editor", "cert:shop-sdk", "local".
func (p *Principal) Actor() string {
	if p == nil {
		return "anonymous"
	}
	if p.Kind == KindLocal {
		return "local"
	}
	return string(p.Kind) + ":" + p.Name
}

// Scoped reports whether the principal is limited to some services.
func (p *Principal) Scoped() bool { return len(p.Services) > 0 }

// MatchesService reports whether the principal may act for the concrete
// service name (a sampler reporting as it).
func (p *Principal) MatchesService(service string) bool {
	if !p.Scoped() {
		return true
	}
	if len(p.globs) == len(p.Services) {
		for _, g := range p.globs {
			if g.Match(service) {
				return true
			}
		}
		return false
	}
	for _, g := range p.Services {
		if rules.MatchGlob(g, service) {
			return true
		}
	}
	return false
}

// CoversGlob reports whether every service the glob pattern matches is
// surely within the principal's scope (see GlobWithin).
func (p *Principal) CoversGlob(pattern string) bool {
	if !p.Scoped() {
		return true
	}
	for _, g := range p.Services {
		if GlobWithin(pattern, g) {
			return true
		}
	}
	return false
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the authenticated principal of a call, or nil if
// there is none (a public route, or a call that never passed the guard).
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Actor returns the audit log's actor for ctx's principal. It never reads
// anything the client claims about itself (such as an actor header).
func Actor(ctx context.Context) string { return FromContext(ctx).Actor() }

// Errors of access control. Each comes wrapped with a message that tells
// the caller what to do or what to configure.
var (
	// ErrUnauthenticated: no usable credentials (gRPC UNAUTHENTICATED,
	// HTTP 401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the principal may not make this call (gRPC
	// PERMISSION_DENIED, HTTP 403).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrLimited: a per-principal limit refused the call (gRPC
	// RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After). The
	// error is a *LimitError.
	ErrLimited = errors.New("limit exceeded")
)

// LimitError is a refusal by a per-principal limit.
type LimitError struct {
	// Limit names the limit: "edits", "costly", "streams", "client_ids",
	// "principals".
	Limit string
	// RetryAfter is when the call may succeed again.
	RetryAfter time.Duration
	Message    string
}

func (e *LimitError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrLimited) hold.
func (e *LimitError) Is(target error) bool { return target == ErrLimited }

// README anchor that refusals point to.
const docRef = "see README#access-control"

func unauthenticated(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, args...))
}

func denied(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPermissionDenied, fmt.Sprintf(format, args...))
}
