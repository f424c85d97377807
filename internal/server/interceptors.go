package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracesampling/controlplane/internal/store"
)

// rpcMetrics counts and times every RPC by method and status code.
type rpcMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRPCMetrics(reg prometheus.Registerer) *rpcMetrics {
	m := &rpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_grpc_requests_total",
			Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "controlplane_grpc_request_duration_seconds",
			Help:    "Time to handle a unary gRPC call, or the lifetime of a stream.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *rpcMetrics) observe(method string, start time.Time, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// unaryInterceptor recovers from panics, maps errors to statuses, and logs
// and measures each call. It is one interceptor rather than a chain of four
// because each step needs the outcome of the one inside it.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		s.metrics.observe(info.FullMethod, start, err)
		s.logCall(ctx, info.FullMethod, start, err)
	}()
	resp, err = handler(ctx, req)
	return resp, s.toStatus(ctx, info.FullMethod, err)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	ctx := ss.Context()
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in stream handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
		s.metrics.observe(info.FullMethod, start, err)
		s.logCall(ctx, info.FullMethod, start, err)
	}()
	return s.toStatus(ctx, info.FullMethod, handler(srv, ss))
}

// toStatus maps err (see the function toStatus) and counts a call that failed
// because the store is unreachable in the store condition, which logs when
// such failures begin and end rather than each of them.
func (s *Server) toStatus(ctx context.Context, method string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		s.storeDown.Occurred(ctx, fmt.Errorf("%s: %w", method, err))
	}
	return toStatus(ctx, s.log, method, err)
}

// logCall logs a call at DEBUG, or at WARN when it failed in a way an
// operator should see. Failures that come with a condition of their own (an
// unreachable store, a limit reached: UNAVAILABLE, RESOURCE_EXHAUSTED) are
// logged by it, once per condition; the client's own errors not at all,
// refusals of access control included (counted in
// controlplane_auth_refusals_total: a peer without credentials must not be
// able to flood the log). Every call is counted in
// controlplane_grpc_requests_total.
func (s *Server) logCall(ctx context.Context, method string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.LevelDebug
	switch code {
	case codes.OK, codes.Canceled, codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.Aborted, codes.FailedPrecondition,
		codes.Unavailable, codes.ResourceExhausted, codes.Unauthenticated, codes.PermissionDenied:
	default:
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "rpc", "method", method, "code", code.String(), "duration", time.Since(start))
}

// streamMetrics describe the SDK streams of this replica.
type streamMetrics struct {
	open     prometheus.Gauge
	ruleSets prometheus.Counter
	resent   prometheus.Counter
}

func newStreamMetrics(reg prometheus.Registerer) *streamMetrics {
	m := &streamMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_sampling_streams",
			Help: "SDK streams open on this replica.",
		}),
		ruleSets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_sampling_rule_sets_sent_total",
			Help: "Rule sets pushed to SDK streams.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_sampling_reports_resent_total",
			Help: "Stream reports sent again after the stream had recorded them (the answer was on its way): answered again, not recorded again.",
		}),
	}
	reg.MustRegister(m.open, m.ruleSets, m.resent)
	return m
}
