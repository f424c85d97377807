package jaeger

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"unicode/utf8"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Source is what the Jaeger endpoints read from the control plane.
// Implementations must be safe for concurrent use.
type Source interface {
	// Rules returns the current rules that may apply to a service of this
	// name, in matching order (Translate checks the service globs again, so
	// returning every rule is correct too). The caller does not modify them.
	Rules(ctx context.Context, service string) ([]rules.Rule, error)
	// Factors returns the budget factors in force now for a rule's fixed
	// rate and reservoir for a service: 1 and 1 when no budget enforces.
	Factors(service string, r *rules.Rule) (fixedRate, reservoir float64)
}

// Pollers estimates a service's instance count from its polls. Estimator is
// the in-memory implementation.
type Pollers interface {
	// Seen records a poll of service by poller and returns the estimated
	// number of the service's instances, this one included (at least 1).
	Seen(service, poller string) int
}

// Options configure a Server.
type Options struct {
	// Logger for errors that are not the client's. Default slog.Default().
	Logger *slog.Logger
}

// Server answers Jaeger remote samplers. It is safe for concurrent use.
type Server struct {
	src     Source
	pollers Pollers
	log     *slog.Logger
}

// NewServer returns a server reading rules from src and counting instances
// with pollers.
func NewServer(src Source, pollers Pollers, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Server{src: src, pollers: pollers, log: opts.Logger}
}

// Strategy returns the strategy for a poll of service by poller (the
// client's identity: its address). Both transports call it.
func (s *Server) Strategy(ctx context.Context, service, poller string) (*api.SamplingStrategyResponse, error) {
	if err := validateService(service); err != nil {
		return nil, err
	}
	rs, err := s.src.Rules(ctx, service)
	if err != nil {
		return nil, fmt.Errorf("rules for service %q: %w", service, err)
	}
	in := make([]Rule, len(rs))
	for i := range rs {
		f, g := s.src.Factors(service, &rs[i])
		in[i] = Rule{Rule: &rs[i], FixedRateFactor: f, ReservoirFactor: g}
	}
	return Translate(service, in, s.pollers.Seen(service, poller)), nil
}

// invalidServiceError is a bad service name: the client's fault.
type invalidServiceError struct{ reason string }

func (e *invalidServiceError) Error() string { return "service: " + e.reason }

// validateService applies the limits the gRPC SamplingService puts on a
// service name (internal/server validateService), so that a Jaeger client
// and this project's SDK are held to the same names.
func validateService(name string) error {
	switch {
	case name == "":
		return &invalidServiceError{"is required"}
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > rules.MaxServiceNameLen:
		return &invalidServiceError{fmt.Sprintf("at most %d characters of UTF-8", rules.MaxServiceNameLen)}
	}
	return nil
}

// pollerOf is a client's identity for the instance estimate: its IP address.
// Ports change when a client reconnects (some open a connection per poll),
// so they are left out; processes that share an address count as one.
func pollerOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
