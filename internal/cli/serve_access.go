package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
)

// accessConfig is what serve is told about access control (README, Access
// control).
type accessConfig struct {
	adminTokenFile string
	clientCertMap  string
	anonNetworks   []string
	anonServices   []string
	secretsKeyFile string
	webhookAllow   []string
	xrayRegion     string

	// isLoopback replaces the guard's test of a loopback peer; nil is the
	// real one. Tests use it to be a remote peer while only using loopback.
	isLoopback func(netip.Addr) bool
}

func (a *accessConfig) register(fs *pflag.FlagSet) {
	fs.StringVar(&a.adminTokenFile, "admin-token-file", "", "`file` holding the first admin's bearer token (at least 24 characters: openssl rand -hex 32), with which the others are made ('controlplane tokens create'); with neither it nor --client-cert-map, serve answers loopback clients only")
	fs.StringVar(&a.clientCertMap, "client-cert-map", "", "YAML `file` mapping verified client certificates (subject CN or a SAN) to principals with a role and services; needs --tls-client-ca")
	fs.StringSliceVar(&a.anonNetworks, "anonymous-sampling-networks", nil, "`CIDRs` whose peers may make the sampling calls without credentials (samplers that cannot send any); never edits or reads")
	fs.StringSliceVar(&a.anonServices, "anonymous-sampling-services", nil, "service `globs` the anonymous samplers are limited to (default: every service)")
	fs.StringVar(&a.secretsKeyFile, "secrets-key-file", "", "`file` of keys (64 hex digits or base64 of 32 bytes, one a line; the first seals) that seal webhook secrets and AWS keys' secrets at rest")
	fs.StringSliceVar(&a.webhookAllow, "webhook-allow", nil, "`networks and hosts` budget webhooks may reach although internal (loopback, private, link-local…): 10.1.0.0/16,hooks.internal")
	fs.StringVar(&a.xrayRegion, "xray-region", "us-east-1", "AWS `region` that SigV4 signatures on the X-Ray API must be made for")
}

// access is what serve builds from an accessConfig.
type access struct {
	guard  *auth.Guard
	box    *secrets.Box // nil without --secrets-key-file
	egress *budget.Egress
}

// guardHTTP puts the access guard in front of one of serve's HTTP ports:
// every route needs a policy (internal/auth's table), a principal where the
// policy asks for one, and gets the principal in its context. Every HTTP
// port serve opens goes through it: the health, metrics and dashboard
// port, and the X-Ray and Jaeger ports.
// The X-Ray port's handler also takes the guard as its SigV4 Verifier and
// its core scoped to each request's principal (see xrayHandler).
func (a *access) guardHTTP(h http.Handler) http.Handler { return a.guard.Middleware(h) }

// build checks the configuration and makes the guard, the sealing box and
// the webhooks' egress. tokens is the store's credentials; tlsClientCA
// whether client certificates are verified.
func (a *accessConfig) build(tokens auth.TokenSource, tlsClientCA bool, reg prometheus.Registerer, log *slog.Logger) (*access, error) {
	opts := auth.Options{
		Tokens:            tokens,
		AnonymousServices: a.anonServices,
		SigV4Region:       a.xrayRegion,
		Registerer:        reg,
		Logger:            log,
		IsLoopback:        a.isLoopback,
	}
	if a.adminTokenFile != "" {
		st, err := auth.LoadStaticToken(a.adminTokenFile, "admin", auth.RoleAdmin)
		if err != nil {
			return nil, usageError(fmt.Errorf("--admin-token-file: %w", err))
		}
		opts.Static = []auth.StaticToken{st}
	}
	if a.clientCertMap != "" {
		if !tlsClientCA {
			return nil, usageError(errors.New("--client-cert-map needs --tls-client-ca: without it no client certificate is verified"))
		}
		rs, err := auth.LoadCertRules(a.clientCertMap)
		if err != nil {
			return nil, usageError(fmt.Errorf("--client-cert-map: %w", err))
		}
		opts.CertRules = rs
	}
	for _, n := range a.anonNetworks {
		p, err := netip.ParsePrefix(strings.TrimSpace(n))
		if err != nil {
			return nil, usageError(fmt.Errorf("--anonymous-sampling-networks: %q: want a CIDR such as 10.20.0.0/16", n))
		}
		opts.AnonymousSampling = append(opts.AnonymousSampling, p.Masked())
	}
	acc := &access{}
	if a.secretsKeyFile != "" {
		box, err := secrets.LoadKeyFile(a.secretsKeyFile)
		if err != nil {
			return nil, usageError(fmt.Errorf("--secrets-key-file: %w", err))
		}
		acc.box, opts.Box = box, box
	}
	var err error
	if acc.egress, err = budget.NewEgress(budget.EgressOptions{Allow: a.webhookAllow}); err != nil {
		return nil, usageError(fmt.Errorf("--webhook-allow: %w", err))
	}
	if acc.guard, err = auth.New(opts); err != nil {
		return nil, usageError(err)
	}
	return acc, nil
}

// tokenSource is what serve needs of a store for credentials: the token
// API's calls and the guard's cache.
type tokenSource interface {
	store.TokenStore
	auth.TokenSource
}
