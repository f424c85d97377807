package budget

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// ErrBlockedAddress: a webhook would reach an address inside the network
// the control plane runs in (loopback, link-local such as the cloud
// metadata service, private, carrier-grade NAT, unspecified, multicast or
// reserved), which the operator has not allow-listed.
var ErrBlockedAddress = errors.New("webhook address not allowed")

// blockedNets are refused besides what netip.Addr's predicates catch.
var blockedNets = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified (this network)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (shared)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved (IETF protocol assignments)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved (benchmarking)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("100::/64"), "reserved (discard)"},
}

// Prefixes whose IPv6 addresses carry an IPv4 address, which is checked in
// its turn: NAT64 (the well-known and local prefixes) and 6to4.
var (
	nat64     = []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96"), netip.MustParsePrefix("64:ff9b:1::/48")}
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// blocked says why a is refused, or "" if it may be reached.
func blocked(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local (such as the cloud metadata service)"
	case a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(), a.IsMulticast():
		return "multicast"
	case a.IsPrivate():
		return "private"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	for _, b := range blockedNets {
		if b.prefix.Contains(a) {
			return b.why
		}
	}
	if a.Is6() {
		b := a.As16()
		for _, p := range nat64 {
			if p.Contains(a) {
				if why := blocked(netip.AddrFrom4([4]byte(b[12:16]))); why != "" {
					return why + " (through NAT64)"
				}
			}
		}
		if sixToFour.Contains(a) {
			if why := blocked(netip.AddrFrom4([4]byte(b[2:6]))); why != "" {
				return why + " (through 6to4)"
			}
		}
	}
	return ""
}

// Resolver looks up the addresses of a host name (net.Resolver does).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// EgressOptions configure an Egress.
type EgressOptions struct {
	// Allow opens networks (CIDRs, "10.1.0.0/16") and hosts (names, which
	// are then reached wherever they resolve; or single addresses) that
	// would be refused: an in-cluster receiver, a proxy. Default: none.
	Allow []string
	// Resolver resolves host names. Default: net.DefaultResolver.
	Resolver Resolver
	// Dial connects to an address already checked ("ip:port"). Default: a
	// net.Dialer whose Control checks the socket's address once more.
	// Tests replace it to see what would be dialled without dialling.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Egress decides which addresses webhooks may reach, and dials only those:
// after DNS resolution, on every redirect, and for the address actually
// connected to (a name is resolved once, each address checked, and the
// connection made to that checked address, so a DNS answer that changes
// between the check and the dial cannot slip through). It is immutable and
// safe for concurrent use.
type Egress struct {
	allow      []netip.Prefix
	allowHosts map[string]bool
	resolver   Resolver
	dial       func(ctx context.Context, network, address string) (net.Conn, error)
}

// NewEgress returns an Egress.
func NewEgress(opts EgressOptions) (*Egress, error) {
	e := &Egress{allowHosts: map[string]bool{}, resolver: opts.Resolver, dial: opts.Dial}
	for _, s := range opts.Allow {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("webhook allow-list: %q: %w", s, err)
			}
			e.allow = append(e.allow, p.Masked())
		default:
			if a, err := netip.ParseAddr(s); err == nil {
				e.allow = append(e.allow, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			e.allowHosts[strings.ToLower(strings.TrimSuffix(s, "."))] = true
		}
	}
	if e.resolver == nil {
		e.resolver = net.DefaultResolver
	}
	if e.dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, ControlContext: e.control}
		e.dial = d.DialContext
	}
	return e, nil
}

// CheckAddr refuses an address inside the network, unless allow-listed.
func (e *Egress) CheckAddr(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	for _, p := range e.allow {
		if p.Contains(a) {
			return nil
		}
	}
	if why := blocked(a); why != "" {
		return fmt.Errorf("%w: %s is a %s address; allow it with --webhook-allow if it is meant", ErrBlockedAddress, a, why)
	}
	return nil
}

func (e *Egress) hostAllowed(host string) bool {
	return e.allowHosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// CheckURL refuses a webhook URL that surely reaches a refused address: an
// address literal, or a name that always means this host ("localhost",
// "*.localhost") or that a resolver may read as a number ("2130706433",
// "0x7f.1"). Other names are checked when they are dialled, since what
// they resolve to may change.
func (e *Egress) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return errors.New("an http or https URL")
	}
	host := u.Hostname()
	if e.hostAllowed(host) {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return e.CheckAddr(a)
	}
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return fmt.Errorf("%w: %s is this host (loopback); allow it with --webhook-allow if it is meant", ErrBlockedAddress, host)
	}
	last := lower[strings.LastIndex(lower, ".")+1:]
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return fmt.Errorf("%w: %s is not a host name or a standard IP address", ErrBlockedAddress, host)
	}
	return nil
}

// ValidateWebhooks checks every channel's URL of b with e, naming each bad
// one as budget validation does ("channels[1].webhook_url"). Budget create
// and update call it after Validate.
func ValidateWebhooks(b *Budget, e *Egress) error {
	var vs []rules.FieldViolation
	for i, c := range b.Channels {
		if err := e.CheckURL(c.WebhookURL); err != nil {
			vs = append(vs, rules.FieldViolation{Field: fmt.Sprintf("channels[%d].webhook_url", i), Description: strings.TrimPrefix(err.Error(), ErrBlockedAddress.Error()+": ")})
		}
	}
	if len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	return nil
}

// DialContext resolves address's host, and connects to the first of its
// addresses that may be reached (an allow-listed host: to any).
func (e *Egress) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if e.hostAllowed(host) {
		return e.dialAllowedHost(ctx, network, host, port)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = e.resolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		if err := e.CheckAddr(a); err != nil {
			errs = append(errs, err)
			continue
		}
		conn, err := e.dial(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s: no addresses", host)
	}
	return nil, errors.Join(errs...)
}

// dialAllowedHost dials an allow-listed host name at whatever it resolves
// to; the Control check is skipped for it.
func (e *Egress) dialAllowedHost(ctx context.Context, network, host, port string) (net.Conn, error) {
	return e.dial(context.WithValue(ctx, allowedDialKey{}, true), network, net.JoinHostPort(host, port))
}

type allowedDialKey struct{}

// control checks the address a socket is about to connect to, the last
// word on what is dialled.
func (e *Egress) control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	if ctx.Value(allowedDialKey{}) != nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read the dialled address %q", ErrBlockedAddress, address)
	}
	return e.CheckAddr(ap.Addr())
}

// maxRedirects bounds the redirects one delivery follows.
const maxRedirects = 3

// Client returns an HTTP client that reaches only what e allows: its
// transport dials through e (no proxy from the environment: a proxy would
// connect on the control plane's behalf where e cannot look), and every
// redirect's URL is checked too.
func (e *Egress) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           e.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return e.CheckURL(req.URL.String())
		},
	}
}
