// Package server implements the control plane's gRPC services on top of the
// store: request validation, the mapping of domain errors to gRPC statuses,
// interceptors (panic recovery, logging, metrics), health and reflection.
package server

import (
	"context"
	"log/slog"
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

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/reservoir"
)

// Options configure a Server. Zero values take the defaults given.
type Options struct {
	// Rules stores rules and their audit log. Required.
	Rules RuleStore
	// Catalog is the replica's view of the current rules, and Ledger keeps
	// the fleet ledgers; with both set the SamplingService is served. The
	// caller runs the catalog.
	Catalog *catalog.Catalog
	Ledger  LedgerStore
	// Budgets keeps budgets and alerts; with it and Catalog the
	// BudgetService is served.
	Budgets BudgetStore
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
	// MaxConnectionAge closes connections after this long (with a grace period
	// for calls in flight), so long-lived streams spread over replicas as they
	// are added. Default 30 minutes.
	MaxConnectionAge time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Credentials secure the connections (TLS). Default: plaintext, for a
	// network that is private or for a proxy that terminates TLS.
	Credentials credentials.TransportCredentials
}

// Server is the gRPC server with every control plane service registered.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	log     *slog.Logger
	metrics *rpcMetrics
	batcher *reportBatcher // nil without the sampling service
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
		opts.MaxRecvMsgBytes = 1 << 20
	}
	if opts.MaxConnectionAge <= 0 {
		opts.MaxConnectionAge = 30 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = 10 * time.Second
	}
	s := &Server{
		stopping: make(chan struct{}),
		health:   health.NewServer(),
		log:      opts.Logger,
		metrics:  newRPCMetrics(opts.Registerer),
	}
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgBytes),
		grpc.UnaryInterceptor(s.unaryInterceptor),
		grpc.StreamInterceptor(s.streamInterceptor),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      opts.MaxConnectionAge,
			MaxConnectionAgeGrace: time.Minute,
			Time:                  time.Minute,
			Timeout:               20 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
	}
	if opts.Credentials != nil {
		serverOpts = append(serverOpts, grpc.Creds(opts.Credentials))
	}
	s.grpc = grpc.NewServer(serverOpts...)
	pb.RegisterRuleServiceServer(s.grpc, &ruleService{store: opts.Rules})
	if opts.Catalog != nil && opts.Ledger != nil {
		ledger := reservoir.NewLedger(opts.ReportInterval)
		s.batcher = newReportBatcher(opts.Ledger, ledger, opts.Now, opts.Logger, opts.Registerer)
		pb.RegisterSamplingServiceServer(s.grpc, &samplingService{
			catalog:  opts.Catalog,
			batcher:  s.batcher,
			ledger:   ledger,
			now:      opts.Now,
			log:      opts.Logger,
			streams:  newStreamMetrics(opts.Registerer),
			stopping: s.stopping,
			interval: durationpb.New(opts.ReportInterval),
		})
	}
	if opts.Catalog != nil && opts.Budgets != nil {
		pb.RegisterBudgetServiceServer(s.grpc, &budgetService{store: opts.Budgets, catalog: opts.Catalog, stopping: s.stopping, now: opts.Now})
		opts.Registerer.MustRegister(&budgetCollector{catalog: opts.Catalog})
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.SetServing(false)
	return s
}

// Serve accepts connections on lis until Stop. It returns nil after a
// graceful stop.
func (s *Server) Serve(lis net.Listener) error {
	return s.grpc.Serve(lis)
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
	if s.batcher != nil {
		s.batcher.close()
	}
}
