// Package server implements the control plane's gRPC services on top of the
// store: request validation, the mapping of domain errors to gRPC statuses,
// interceptors (panic recovery, logging, metrics, access control through
// package auth), health and reflection.
package server

import (
	"context"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/secrets"
)

// Options configure a Server. Zero values take the defaults given.
type Options struct {
	// Rules stores rules and their audit log. Required.
	Rules RuleStore
	// Catalog is the replica's view of the current rules, and Ledger keeps
	// the fleet ledgers; with both set the SamplingService and the
	// StatusService are served. The caller runs the catalog.
	Catalog *catalog.Catalog
	Ledger  LedgerStore
	// Budgets keeps budgets and alerts; with it and Catalog the
	// BudgetService is served.
	Budgets BudgetStore
	// Decider decides a budget at once when it is created or changed, so
	// that it does not wait for the controller's next interval (the budget
	// controller). Default: none; the next interval decides it.
	Decider BudgetDecider
	// Waker has an enforcing budget decided as soon as a report brings
	// its first traffic (sampling.Options.Waker; the budget controller,
	// whose Run does the work). Default: none; the next interval decides
	// it.
	Waker sampling.BudgetWaker
	// ReportInterval is how often SDKs report, and the ledger's bucket
	// length. Default 10 s.
	ReportInterval time.Duration
	// Logger receives call logs and internal errors. Default: slog.Default().
	Logger *slog.Logger
	// Registerer receives the RPC metrics. Default: a private registry.
	Registerer prometheus.Registerer
	// MaxRecvMsgBytes refuses larger requests with RESOURCE_EXHAUSTED.
	// Default 1 MiB, far above the largest valid rule.
	MaxRecvMsgBytes int
	// MaxStreams bounds the calls (streams and unary calls) open at once;
	// more are refused with RESOURCE_EXHAUSTED before any of their message
	// is read. With MaxRecvMsgBytes it bounds the memory that requests
	// being received can hold. Default 10,000.
	MaxStreams int
	// MaxConnections bounds the client connections open at once: past it,
	// new ones wait to be accepted until one closes. Default 10,000.
	MaxConnections int
	// MaxStreamsPerConnection is each connection's HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS: a client opening more has them
	// refused (REFUSED_STREAM), and a gRPC client waits for a free one.
	// Default 1,000: a client multiplexing many SDK instances on one
	// connection (the load generator puts 100 on each) keeps room for its
	// unary calls; MaxStreams bounds the total.
	MaxStreamsPerConnection uint32
	// MaxHeaderBytes bounds a request's metadata (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE). Default 16 KiB.
	MaxHeaderBytes uint32
	// StreamWindowBytes is each stream's HTTP/2 flow-control window, fixed
	// (not grown with the bandwidth-delay product): how much a client may
	// send that the server has not read, and the server queues for a
	// client that does not read. A connection's window is 16 times it; at
	// least 64 KiB. Default 64 KiB.
	StreamWindowBytes int32
	// KeepaliveMinTime: a client that pings more often than this is
	// disconnected (GOAWAY ENHANCE_YOUR_CALM). Default 10 s.
	KeepaliveMinTime time.Duration
	// MaxConnectionAge closes connections after this long (with a grace period
	// for calls in flight), so long-lived streams spread over replicas as they
	// are added. Default 30 minutes.
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long calls in flight (streams: all of
	// them) may go on once a connection is past its age; then it is closed.
	// Default 1 minute.
	MaxConnectionAgeGrace time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Credentials secure the connections (TLS). Default: plaintext, for a
	// network that is private or for a proxy that terminates TLS.
	Credentials credentials.TransportCredentials
	// Services registers further services on the gRPC server (Jaeger's
	// SamplingManager), behind the same interceptors and decoding checks.
	Services []func(grpc.ServiceRegistrar)
	// Guard authenticates every call and checks it against the access
	// policy (package auth); the caller runs it (Guard.Run). Default: a
	// guard without credentials, in protected mode, which answers loopback
	// peers only (as the local admin).
	Guard *auth.Guard
	// Tokens keeps the credentials that TokenService issues; with it
	// TokenService is served.
	Tokens TokenStore
	// Secrets seals webhook secrets and AWS keys' secrets at rest.
	// Default: none: webhook secrets are stored as given, and AWS keys are
	// refused.
	Secrets *secrets.Box
	// Egress decides which addresses budget webhooks may name. Default:
	// no internal address (budget.Egress without an allow-list).
	Egress *budget.Egress
}

// Server is the gRPC server with every control plane service registered.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	log      *slog.Logger
	metrics  *rpcMetrics
	sampling *sampling.Core // nil without the sampling service
	// storeDown is the condition "calls fail because the store is
	// unreachable": logged when it begins and ends, counted per call.
	storeDown *condition.Condition
	// maxConns and conns bound and count the connections Serve accepts.
	maxConns int
	conns    prometheus.Gauge
	// stopping is closed when Stop begins, so that long-lived streams end
	// and their clients move to another replica, instead of holding the
	// graceful stop for its whole timeout.
	stopping chan struct{}
	stopOnce sync.Once
}

// New builds a Server; call Serve to accept connections.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.MaxRecvMsgBytes <= 0 {
		opts.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxStreamsPerConnection == 0 {
		opts.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	if opts.MaxHeaderBytes == 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	opts.StreamWindowBytes = max(opts.StreamWindowBytes, DefaultStreamWindowBytes)
	if opts.KeepaliveMinTime <= 0 {
		opts.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if opts.MaxConnectionAge <= 0 {
		opts.MaxConnectionAge = 30 * time.Minute
	}
	if opts.MaxConnectionAgeGrace <= 0 {
		opts.MaxConnectionAgeGrace = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = 10 * time.Second
	}
	storeErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_store_errors_total",
		Help: "Calls and stream reports that failed because the store was unreachable; the log says when such failures begin and end.",
	})
	conns := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "controlplane_grpc_connections",
		Help: "Client connections open on this replica; at most --max-connections.",
	})
	opts.Registerer.MustRegister(storeErrors, conns)
	if opts.Guard == nil {
		// No options that can fail: no static tokens, no certificate map.
		opts.Guard, _ = auth.New(auth.Options{Registerer: opts.Registerer, Logger: opts.Logger})
	}
	if opts.Egress == nil {
		opts.Egress, _ = budget.NewEgress(budget.EgressOptions{}) // no allow-list, no error
	}
	s := &Server{
		stopping:  make(chan struct{}),
		health:    health.NewServer(),
		log:       opts.Logger,
		metrics:   newRPCMetrics(opts.Registerer),
		maxConns:  opts.MaxConnections,
		conns:     conns,
		storeDown: condition.New(opts.Logger, "store unreachable: calls fail with UNAVAILABLE, stream reports renew the last quotas", storeErrors),
	}
	limit := newCallLimit(opts.MaxStreams, s, opts.Registerer)
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgBytes),
		grpc.InTapHandle(limit.tap),
		grpc.MaxConcurrentStreams(opts.MaxStreamsPerConnection),
		grpc.MaxHeaderListSize(opts.MaxHeaderBytes),
		grpc.StaticStreamWindowSize(opts.StreamWindowBytes),
		grpc.StaticConnWindowSize(int32(min(connWindowStreams*int64(opts.StreamWindowBytes), math.MaxInt32))),
		// The guard runs inside the server's own interceptor, so that its
		// refusals are logged, counted and recovered like any error.
		grpc.ChainUnaryInterceptor(s.unaryInterceptor, opts.Guard.UnaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor, opts.Guard.StreamInterceptor),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      opts.MaxConnectionAge,
			MaxConnectionAgeGrace: opts.MaxConnectionAgeGrace,
			Time:                  time.Minute,
			Timeout:               20 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             opts.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
	if opts.Credentials != nil {
		serverOpts = append(serverOpts, grpc.Creds(opts.Credentials))
	}
	codec := newLenientCodec()
	serverOpts = append(serverOpts, grpc.ForceServerCodecV2(codec))
	s.grpc = grpc.NewServer(serverOpts...)
	reg := checkedDecoding{Server: s.grpc, codec: codec}
	pb.RegisterRuleServiceServer(reg, &ruleService{edit: edit.NewRules(opts.Rules, edit.WithClock(opts.Now))})
	if opts.Catalog != nil && opts.Ledger != nil {
		s.sampling = sampling.New(sampling.Options{
			Catalog: opts.Catalog, Store: opts.Ledger, Interval: opts.ReportInterval, Now: opts.Now,
			Logger: opts.Logger, Registerer: opts.Registerer, StoreDown: s.storeDown, Waker: opts.Waker,
		})
		pb.RegisterSamplingServiceServer(reg, &samplingService{
			core:      s.sampling,
			catalog:   opts.Catalog,
			log:       opts.Logger,
			streams:   newStreamMetrics(opts.Registerer),
			now:       opts.Now,
			stopping:  s.stopping,
			storeDown: s.storeDown,
		})
		pb.RegisterStatusServiceServer(reg, &statusService{fleet: fleet.New(opts.Catalog, opts.Ledger, opts.ReportInterval, opts.Now)})
	}
	if opts.Catalog != nil && opts.Budgets != nil {
		pb.RegisterBudgetServiceServer(reg, &budgetService{
			edit:  edit.NewBudgets(opts.Budgets, edit.BudgetOptions{Egress: opts.Egress, Secrets: opts.Secrets, Changed: opts.Catalog.Kick}),
			views: edit.NewBudgetViews(opts.Budgets, opts.Now), catalog: opts.Catalog, stopping: s.stopping, log: opts.Logger, decider: opts.Decider,
		})
		opts.Registerer.MustRegister(&budgetCollector{catalog: opts.Catalog})
	}
	for _, register := range opts.Services {
		register(reg)
	}
	if opts.Tokens != nil {
		pb.RegisterTokenServiceServer(reg, &tokenService{edit: edit.NewTokens(opts.Tokens, opts.Secrets, opts.Now), changed: opts.Guard.TokensChanged, log: opts.Logger})
	}
	healthpb.RegisterHealthServer(reg, s.health)
	reflection.Register(reg)
	s.SetServing(false)
	return s
}

// Sampling is the report pipeline the SamplingService serves from (nil
// without Catalog and Ledger), for the other transports of the same
// replica (the X-Ray API): one batcher, one set of receipt keys. Stop
// closes it.
func (s *Server) Sampling() *sampling.Core { return s.sampling }

// Serve accepts connections on lis, at most MaxConnections at once, until
// Stop. It returns nil after a graceful stop.
func (s *Server) Serve(lis net.Listener) error {
	return s.grpc.Serve(newConnLimit(lis, s.maxConns, s.conns))
}

// SetServing sets what the standard health service reports for the server and
// every service on it; the caller ties it to the store's reachability.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, st)
	}
}

// Stop reports NOT_SERVING so load balancers drain the replica, lets calls in
// flight finish until ctx ends, then closes every connection.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	if s.sampling != nil {
		s.sampling.Close()
	}
}
