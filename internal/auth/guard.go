package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/xray"
)

// Options configure a Guard.
type Options struct {
	// Tokens is the token store (through its cache); nil means no stored
	// tokens, only Static ones and certificates.
	Tokens TokenSource
	// Static are tokens from the configuration: the first admin's.
	Static []StaticToken
	// CertRules map verified client certificates to principals. A
	// certificate that no rule maps is refused.
	CertRules []CertRule
	// AnonymousSampling are networks whose peers, without credentials, may
	// make the sampling calls (never edits) as principal
	// "anonymous@ADDRESS" with role sdk, for samplers that cannot send
	// credentials (the X-Ray daemon protocol, some Jaeger clients).
	// Default: none.
	AnonymousSampling []netip.Prefix
	// AnonymousServices scope the anonymous samplers. Default: every
	// service.
	AnonymousServices []string
	// Box opens the sealed secrets of AWS access keys. Without one SigV4
	// requests are refused.
	Box *secrets.Box
	// SigV4Region and SigV4Service are the credential scope SigV4 requests
	// must be signed for. Defaults: "us-east-1" and "xray".
	SigV4Region  string
	SigV4Service string
	// BodyTimeout bounds the time the body of a SigV4-signed X-Ray request
	// takes to arrive (the middleware reads it to verify the signature).
	// Default: xray.DefaultBodyTimeout.
	BodyTimeout time.Duration
	// Limits per principal.
	Limits Limits
	// Poll is how often the token cache checks the tokens version, besides
	// reloading on every change hint. Default: 500 ms, so that a
	// revocation is refused everywhere within a second even if a hint is
	// lost.
	Poll time.Duration
	// Registerer receives the refusal metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger gets token store errors. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// IsLoopback says whether a peer address is this host's, which
	// protected mode trusts. Default: netip.Addr.IsLoopback. Tests replace
	// it to see how a remote peer is answered, since they may only use
	// loopback addresses.
	IsLoopback func(netip.Addr) bool
}

// CertRule maps a verified client certificate to a principal. Exactly one
// of CommonName, DNSName, URI and Email identifies the certificate (an
// exact, case-sensitive match of its subject CN or one of its SANs).
type CertRule struct {
	CommonName string `yaml:"cn"`
	DNSName    string `yaml:"dns"`
	URI        string `yaml:"uri"`
	Email      string `yaml:"email"`
	// Name is the principal's name. Default: the identity matched.
	Name     string   `yaml:"name"`
	Role     Role     `yaml:"role"`
	Services []string `yaml:"services"`

	principal *Principal // made by New
}

// identity returns the rule's identity and whether exactly one is set.
func (r *CertRule) identity() (string, bool) {
	n, id := 0, ""
	for _, v := range []string{r.CommonName, r.DNSName, r.URI, r.Email} {
		if v != "" {
			n, id = n+1, v
		}
	}
	return id, n == 1
}

func (r *CertRule) matches(c *x509.Certificate) bool {
	switch {
	case r.CommonName != "":
		return c.Subject.CommonName == r.CommonName
	case r.DNSName != "":
		return slices.Contains(c.DNSNames, r.DNSName)
	case r.Email != "":
		return slices.Contains(c.EmailAddresses, r.Email)
	case r.URI != "":
		return slices.ContainsFunc(c.URIs, func(u *url.URL) bool { return u.String() == r.URI })
	}
	return false
}

// LoadCertRules reads a YAML list of CertRules:
//
//   - cn: shop-sdk          # or dns:, uri: spiffe://…, email:
//     role: sdk
//     services: ["shop-*"]
func LoadCertRules(path string) ([]CertRule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read client certificate map: %w", err)
	}
	var rs []CertRule
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	if err := checkCertRules(rs); err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return rs, nil
}

func checkCertRules(rs []CertRule) error {
	for i := range rs {
		r := &rs[i]
		id, ok := r.identity()
		if !ok {
			return fmt.Errorf("rule %d: set exactly one of cn, dns, uri, email", i+1)
		}
		if r.Name == "" {
			r.Name = id
		}
		if err := ValidateSpec(&TokenSpec{Name: "x", Role: r.Role, Services: r.Services}); err != nil {
			return fmt.Errorf("rule %d (%s): %w", i+1, id, err)
		}
	}
	return nil
}

// LoadStaticToken reads a token from a file (the first admin's, from
// --admin-token-file), trimmed of surrounding white space.
func LoadStaticToken(path, name string, role Role) (StaticToken, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return StaticToken{}, fmt.Errorf("auth: read token file: %w", err)
	}
	return StaticToken{Name: name, Role: role, Secret: strings.TrimSpace(string(b))}, nil
}

// Guard authenticates and authorises calls. It is safe for concurrent use;
// Run keeps its token cache current.
type Guard struct {
	tokens    *tokenCache
	static    []staticEntry
	certRules []CertRule
	anonNets  []netip.Prefix
	anonScope []string
	protected bool
	loopback  func(netip.Addr) bool
	box       *secrets.Box
	region    string
	service   string
	bodyTime  time.Duration
	limiter   *Limiter
	log       *slog.Logger
	now       func() time.Time

	refusals *prometheus.CounterVec
	limited  *prometheus.CounterVec
}

type staticEntry struct {
	p    *Principal
	hash string
}

// New returns a Guard.
func New(opts Options) (*Guard, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.IsLoopback == nil {
		opts.IsLoopback = netip.Addr.IsLoopback
	}
	if opts.SigV4Region == "" {
		opts.SigV4Region = "us-east-1"
	}
	if opts.SigV4Service == "" {
		opts.SigV4Service = "xray"
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = xray.DefaultBodyTimeout
	}
	g := &Guard{
		certRules: slices.Clone(opts.CertRules),
		anonNets:  slices.Clone(opts.AnonymousSampling),
		anonScope: slices.Clone(opts.AnonymousServices),
		protected: len(opts.Static) == 0 && len(opts.CertRules) == 0,
		loopback:  opts.IsLoopback,
		box:       opts.Box,
		region:    opts.SigV4Region,
		service:   opts.SigV4Service,
		bodyTime:  opts.BodyTimeout,
		log:       opts.Logger,
		now:       opts.Now,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_auth_refusals_total",
			Help: "Calls refused by access control, by reason (unauthenticated, permission_denied).",
		}, []string{"reason"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_limit_refusals_total",
			Help: "Calls refused by a per-principal limit (edits, costly, streams, client_ids, principals).",
		}, []string{"limit"}),
	}
	if err := checkCertRules(g.certRules); err != nil {
		return nil, fmt.Errorf("auth: client certificate map: %w", err)
	}
	for i := range g.certRules {
		r := &g.certRules[i]
		r.principal = newPrincipal(r.Name, r.Role, r.Services, KindCert)
	}
	for i, st := range opts.Static {
		if len(st.Secret) < MinStaticTokenLen {
			return nil, fmt.Errorf("auth: configured token %q is %d characters; use at least %d random ones (openssl rand -hex 32)", st.Name, len(st.Secret), MinStaticTokenLen)
		}
		if err := ValidateSpec(&TokenSpec{Name: st.Name, Role: st.Role, Services: st.Services}); err != nil {
			return nil, fmt.Errorf("auth: configured token %d: %w", i+1, err)
		}
		g.static = append(g.static, staticEntry{
			p:    newPrincipal(st.Name, st.Role, st.Services, KindStatic),
			hash: HashToken(st.Secret),
		})
	}
	for _, n := range g.anonNets {
		if !n.IsValid() {
			return nil, errors.New("auth: an invalid anonymous sampling network")
		}
	}
	if err := ValidateSpec(&TokenSpec{Name: "x", Role: RoleSDK, Services: g.anonScope}); err != nil {
		return nil, fmt.Errorf("auth: anonymous sampling services: %w", err)
	}
	if opts.Tokens != nil {
		g.tokens = newTokenCache(opts.Tokens, opts.Poll, 100*time.Millisecond, opts.Now, func(err error) {
			opts.Logger.Warn("cannot reload tokens; using the last ones", "err", err)
		})
	}
	g.limiter = NewLimiter(opts.Limits, opts.Now, func(limit string) { g.limited.WithLabelValues(limit).Inc() })
	for _, r := range []string{"unauthenticated", "permission_denied"} {
		g.refusals.WithLabelValues(r)
	}
	for _, l := range []string{"edits", "costly", "streams", "client_ids", "principals"} {
		g.limited.WithLabelValues(l)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(g.refusals); err != nil {
			return nil, err
		}
		if err := opts.Registerer.Register(g.limited); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Protected reports whether the guard runs in protected mode: no
// credentials configured, so loopback peers are trusted as admins and
// remote ones get only public routes (and stored tokens, and anonymous
// sampling from its networks). serve says so at start-up.
func (g *Guard) Protected() bool { return g.protected }

// ProtectedMessage is what a remote peer of a server in protected mode is
// told, and what serve logs at start-up.
const ProtectedMessage = "this control plane has no credentials configured and answers only loopback clients; " +
	"set --admin-token-file (or CONTROLPLANE_ADMIN_TOKEN_FILE) and create tokens with `controlplane tokens create`, " +
	"map client certificates with --client-cert-map, or open sampling to networks with --anonymous-sampling-networks (" + docRef + ")"

// Run keeps the token cache current until ctx ends. It returns ctx's error.
func (g *Guard) Run(ctx context.Context) error {
	if g.tokens == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	return g.tokens.Run(ctx)
}

// TokensChanged reloads the token cache at once, for a transport that has
// just created or revoked a credential on this replica: the store's change
// hint reaches the cache asynchronously, and a lookup that misses rechecks
// the store at most every 100 ms, so a key used the moment its creation
// was answered could otherwise be refused, and a revoked one accepted. A
// failed reload is left to the cache's poll.
func (g *Guard) TokensChanged(ctx context.Context) {
	if g.tokens != nil {
		_ = g.tokens.Load(ctx)
	}
}

// Limiter returns the guard's per-principal limiter, for the checks the
// transports make themselves (client IDs seen inside a report).
func (g *Guard) Limiter() *Limiter { return g.limiter }

// Credentials are what a call presents, as a transport found them.
type Credentials struct {
	// Authorization are the values of the authorization header (HTTP) or
	// metadata key (gRPC).
	Authorization []string
	// Cert is the client's certificate if TLS verified it against the
	// client CAs, else nil.
	Cert *x509.Certificate
	// Peer is the remote address, if known.
	Peer netip.Addr
	// Local is true for a Unix socket peer.
	Local bool
}

// Call is what a call does, for the policy.
type Call struct {
	// Name is the full gRPC method or the HTTP path, for refusals.
	Name string
	Rule Rule
	// Services are the concrete service names the call acts for.
	Services []string
	// Globs are the service globs the call edits.
	Globs []string
}

// Check authenticates creds and authorises call: it returns the principal
// (nil for a public call without credentials) or an error wrapping
// ErrUnauthenticated, ErrPermissionDenied, ErrLimited or
// store.ErrUnavailable (the token store could not be read). Edits and
// costly calls are counted against the principal's rates here; streams are
// taken with Limiter().OpenStream.
func (g *Guard) Check(ctx context.Context, creds Credentials, call Call) (*Principal, error) {
	p, err := g.authenticate(ctx, creds)
	if call.Rule.Need == Public {
		// A probe or health check answers whatever credentials it carries
		// (an expired token on a scraper must not fail the liveness probe).
		if err != nil {
			return nil, nil
		}
		return p, nil
	}
	if err == nil && p == nil && g.protected {
		err = unauthenticated("%s", ProtectedMessage)
	}
	if err == nil {
		err = Authorize(p, call.Name, call.Rule, call.Services, nil)
	}
	if err == nil && p != nil {
		err = checkGlobs(p, call.Globs)
	}
	if err == nil {
		err = g.limiter.Allow(p, call.Rule.Class)
	}
	if err != nil {
		g.count(err)
		return nil, err
	}
	return p, nil
}

func (g *Guard) count(err error) {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		g.refusals.WithLabelValues("unauthenticated").Inc()
	case errors.Is(err, ErrPermissionDenied):
		g.refusals.WithLabelValues("permission_denied").Inc()
	}
}

// authenticate returns the principal of creds, nil for none.
func (g *Guard) authenticate(ctx context.Context, creds Credentials) (*Principal, error) {
	switch len(creds.Authorization) {
	case 0:
	case 1:
		return g.bearer(ctx, creds.Authorization[0])
	default:
		return nil, unauthenticated("send one authorization header, not %d", len(creds.Authorization))
	}
	if creds.Cert != nil && len(g.certRules) > 0 {
		for i := range g.certRules {
			r := &g.certRules[i]
			if r.matches(creds.Cert) {
				return r.principal, nil
			}
		}
		return nil, unauthenticated("client certificate (subject %q) is not mapped to a principal; add its CN or a SAN to --client-cert-map (%s)",
			creds.Cert.Subject.CommonName, docRef)
	}
	peer := creds.Peer.Unmap()
	if g.protected && (creds.Local || peer.IsValid() && g.loopback(peer)) {
		return &Principal{Name: "local", Role: RoleAdmin, Kind: KindLocal}, nil
	}
	if peer.IsValid() {
		for _, n := range g.anonNets {
			if n.Contains(peer) {
				return newPrincipal("anonymous@"+peer.String(), RoleSDK, g.anonScope, KindAnonymous), nil
			}
		}
	}
	return nil, nil
}

// bearer authenticates an authorization value.
func (g *Guard) bearer(ctx context.Context, value string) (*Principal, error) {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(value), " ")
	tok = strings.TrimSpace(tok)
	switch {
	case strings.EqualFold(scheme, "Bearer") && tok != "":
	case strings.HasPrefix(scheme, "AWS4-"):
		return nil, unauthenticated("SigV4 signatures are accepted on the X-Ray API only; elsewhere send 'authorization: Bearer <token>'")
	default:
		return nil, unauthenticated("send 'authorization: Bearer <token>' (%s)", docRef)
	}
	h := HashToken(tok)
	// Every static token is compared, in constant time, whichever matches.
	var found *Principal
	for _, st := range g.static {
		if sameHash(st.hash, h) {
			found = st.p
		}
	}
	if found != nil {
		return found, nil
	}
	if !wellFormed(tok) || g.tokens == nil {
		return nil, unauthenticated("not a valid token (control plane tokens start with %q); check --token or CONTROLPLANE_TOKEN", TokenPrefix)
	}
	c, err := g.tokens.byHash(ctx, h)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, unauthenticated("unknown token; check --token or CONTROLPLANE_TOKEN, or ask an admin for one")
	}
	if err := checkLive(&c.tok, g.now()); err != nil {
		return nil, err
	}
	return c.p, nil
}
