package auth_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/internal/auth"
)

var (
	readCall   = auth.Call{Name: "/controlplane.v1.RuleService/ListRules", Rule: auth.Rule{Need: auth.Read}}
	editCall   = auth.Call{Name: "/controlplane.v1.RuleService/CreateRule", Rule: auth.Rule{Need: auth.EditRules, Class: auth.ClassEdit}, Globs: []string{"shop-*"}}
	sampleCall = auth.Call{Name: "/controlplane.v1.SamplingService/GetSamplingTargets", Rule: auth.Rule{Need: auth.Sample}, Services: []string{"shop-cart"}}
	healthCall = auth.Call{Name: "/grpc.health.v1.Health/Check", Rule: auth.Rule{Need: auth.Public}}
)

// TestProtectedMode: without credentials configured, loopback peers are
// admins and remote ones are told what to configure.
func TestProtectedMode(t *testing.T) {
	clk := newClock()
	st := newMemStore(t, clk)
	g, err := auth.New(auth.Options{Tokens: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Protected() {
		t.Fatal("a guard without credentials is not in protected mode")
	}
	ctx := t.Context()
	for _, c := range []auth.Credentials{{Peer: loopback}, {Peer: netip.MustParseAddr("::1")}, {Peer: netip.MustParseAddr("::ffff:127.0.0.5")}, {Local: true}} {
		p, err := g.Check(ctx, c, editCall)
		if err != nil || p.Kind != auth.KindLocal || p.Role != auth.RoleAdmin || p.Actor() != "local" {
			t.Errorf("loopback peer %+v: %+v, %v; want the local admin", c, p, err)
		}
	}
	_, err = g.Check(ctx, auth.Credentials{Peer: remote}, readCall)
	if !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("remote peer: %v, want ErrUnauthenticated", err)
	}
	for _, want := range []string{"no credentials configured", "answers only loopback clients", "--admin-token-file", "README#access-control"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if _, err := g.Check(ctx, auth.Credentials{Peer: remote}, healthCall); err != nil {
		t.Errorf("remote health check: %v", err)
	}
	// A token created from loopback works from anywhere.
	iss, err := auth.Issue(auth.TokenSpec{Name: "v", Role: auth.RoleViewer}, nil, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, iss.Record); err != nil {
		t.Fatal(err)
	}
	if p, err := g.Check(ctx, bearer(iss.Secret), readCall); err != nil || p.Name != "v" {
		t.Errorf("remote peer with a stored token: %+v, %v", p, err)
	}

	// Once a credential is configured, loopback is nobody special.
	e := newEnv(t, auth.Options{})
	if e.guard.Protected() {
		t.Fatal("a guard with an admin token is in protected mode")
	}
	if _, err := e.guard.Check(ctx, auth.Credentials{Peer: loopback}, readCall); !errors.Is(err, auth.ErrUnauthenticated) || strings.Contains(err.Error(), "loopback") {
		t.Errorf("loopback without credentials on a configured server: %v, want ErrUnauthenticated asking for a token", err)
	}
}

func TestAnonymousSampling(t *testing.T) {
	e := newEnv(t, auth.Options{
		AnonymousSampling: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		AnonymousServices: []string{"shop-*"},
	})
	ctx := t.Context()
	in := auth.Credentials{Peer: netip.MustParseAddr("198.51.100.9")}
	p, err := e.guard.Check(ctx, in, auth.Call{Name: "GetSamplingTargets", Rule: auth.Rule{Need: auth.Sample}, Services: []string{"shop-cart"}})
	if err != nil || p.Kind != auth.KindAnonymous || p.Name != "anonymous@198.51.100.9" || p.Role != auth.RoleSDK {
		t.Fatalf("anonymous sampler in the network: %+v, %v", p, err)
	}
	for _, tc := range []struct {
		name string
		call auth.Call
	}{
		{"an edit", editCall},
		{"a read", readCall},
		{"another service", auth.Call{Name: "GetSamplingTargets", Rule: auth.Rule{Need: auth.Sample}, Services: []string{"payments"}}},
	} {
		if _, err := e.guard.Check(ctx, in, tc.call); !errors.Is(err, auth.ErrPermissionDenied) {
			t.Errorf("anonymous sampler, %s: %v, want ErrPermissionDenied", tc.name, err)
		}
	}
	if _, err := e.guard.Check(ctx, auth.Credentials{Peer: netip.MustParseAddr("198.51.101.9")}, sampleCall); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a sampler outside the network: %v, want ErrUnauthenticated", err)
	}
}

func TestCertRules(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://example.org/shop/sdk")
	e := newEnv(t, auth.Options{CertRules: []auth.CertRule{
		{CommonName: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}},
		{URI: spiffe.String(), Name: "shop-sdk-spiffe", Role: auth.RoleSDK},
		{DNSName: "ops.example.org", Role: auth.RoleViewer},
	}})
	ctx := t.Context()
	tests := []struct {
		name     string
		cert     *x509.Certificate
		wantName string
	}{
		{"by CN", &x509.Certificate{Subject: pkix.Name{CommonName: "shop-sdk"}}, "shop-sdk"},
		{"by URI SAN", &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, URIs: []*url.URL{spiffe}}, "shop-sdk-spiffe"},
		{"by DNS SAN", &x509.Certificate{DNSNames: []string{"a.example.org", "ops.example.org"}}, "ops.example.org"},
	}
	for _, tt := range tests {
		p, err := e.guard.Check(ctx, auth.Credentials{Cert: tt.cert, Peer: remote}, auth.Call{Name: "x", Rule: auth.Rule{Need: auth.Public}})
		if err != nil || p == nil || p.Name != tt.wantName || p.Kind != auth.KindCert {
			t.Errorf("%s: %+v, %v; want %s", tt.name, p, err, tt.wantName)
		}
	}
	_, err := e.guard.Check(ctx, auth.Credentials{Cert: &x509.Certificate{Subject: pkix.Name{CommonName: "SHOP-SDK"}}, Peer: remote}, sampleCall)
	if !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "--client-cert-map") {
		t.Errorf("an unmapped certificate: %v, want ErrUnauthenticated naming --client-cert-map", err)
	}
	// A bearer token wins over the certificate.
	p, err := e.guard.Check(ctx, auth.Credentials{Authorization: []string{"Bearer " + adminSecret}, Cert: tests[0].cert}, readCall)
	if err != nil || p.Name != "root" {
		t.Errorf("token and certificate: %+v, %v; want the token's principal", p, err)
	}
	if _, err := auth.New(auth.Options{CertRules: []auth.CertRule{{CommonName: "a", DNSName: "b", Role: auth.RoleSDK}}}); err == nil {
		t.Error("a rule with two identities was accepted")
	}
}

func TestCredentialRefusals(t *testing.T) {
	e := newEnv(t, auth.Options{})
	ctx := t.Context()
	tests := []struct {
		name  string
		creds auth.Credentials
		want  string
	}{
		{"two headers", auth.Credentials{Authorization: []string{"Bearer " + adminSecret, "Bearer x"}}, "one authorization header"},
		{"basic", auth.Credentials{Authorization: []string{"Basic YTpi"}}, "Bearer <token>"},
		{"sigv4 off the X-Ray API", auth.Credentials{Authorization: []string{"AWS4-HMAC-SHA256 Credential=x"}}, "X-Ray API only"},
		{"empty bearer", auth.Credentials{Authorization: []string{"Bearer "}}, "Bearer <token>"},
		{"no credentials", auth.Credentials{Peer: remote}, "CONTROLPLANE_TOKEN"},
	}
	for _, tt := range tests {
		_, err := e.guard.Check(ctx, tt.creds, readCall)
		if !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrUnauthenticated saying %q", tt.name, err, tt.want)
		}
		if strings.Contains(err.Error(), adminSecret) {
			t.Errorf("%s: the refusal holds the token", tt.name)
		}
	}
	_, err := e.guard.Check(ctx, bearer(adminSecret), auth.Call{Name: "/x.Y/Z", Rule: auth.Rule{Need: auth.Sample}, Services: []string{"s"}})
	if err != nil {
		t.Errorf("the static admin may sample: %v", err)
	}
	if _, err := auth.New(auth.Options{Static: []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: "short"}}}); err == nil {
		t.Error("a configured token of 5 characters was accepted")
	}
}
