package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

const (
	maxClientIDLen = 64
	maxStatistics  = 1000
)

// samplingService is the gRPC transport of the report pipeline (package
// sampling): it decodes, calls the core and encodes.
type samplingService struct {
	pb.UnimplementedSamplingServiceServer
	core    *sampling.Core
	catalog *catalog.Catalog
	log     *slog.Logger
	streams *streamMetrics
	// answers holds the buffers a stream's answers are encoded into.
	answers answerPool
	// now is the clock (Options.Now).
	now      func() time.Time
	stopping <-chan struct{}
	// storeDown logs reports that fail for want of the store once per outage.
	storeDown *condition.Condition
}

func (s *samplingService) GetSamplingRules(ctx context.Context, req *pb.GetSamplingRulesRequest) (*pb.GetSamplingRulesResponse, error) {
	if err := validateService(req.GetServiceName(), req.GetServiceType()); err != nil {
		return nil, err
	}
	if vs := rules.ValidateResource("resource_attributes", req.GetResourceAttributes()); len(vs) > 0 {
		return nil, &rules.ValidationError{Violations: vs}
	}
	v := s.catalog.Current()
	if v.Version == 0 {
		// Started while the store was away: no rules to give yet.
		return nil, fmt.Errorf("no rules loaded yet: %w", store.ErrUnavailable)
	}
	if req.GetKnownRulesVersion() == v.Version {
		return &pb.GetSamplingRulesResponse{RulesVersion: v.Version, Unchanged: true}, nil
	}
	rs := s.catalog.RuleSet(req.GetServiceName(), req.GetServiceType(), req.GetResourceAttributes(), s.now())
	if req.GetKnownRulesVersion() == 0 {
		rs = s.core.FirstRuleSet(ctx, rs)
	}
	return &pb.GetSamplingRulesResponse{RulesVersion: rs.GetRulesVersion(), Rules: rs.GetRules(), RatesInForce: rs.GetRatesInForce()}, nil
}

func (s *samplingService) GetSamplingTargets(ctx context.Context, req *pb.GetSamplingTargetsRequest) (*pb.GetSamplingTargetsResponse, error) {
	if err := validateClient(req.GetClientId(), req.GetServiceName(), req.GetServiceType()); err != nil {
		return nil, err
	}
	if len(req.GetStatistics()) > maxStatistics {
		return nil, invalid("statistics", fmt.Sprintf("at most %d documents per report, got %d", maxStatistics, len(req.GetStatistics())))
	}
	if req.GetSeq() > store.MaxSeq {
		return nil, invalid("seq", fmt.Sprintf("at most %d", uint64(store.MaxSeq)))
	}
	base, err := s.core.Report(ctx, sampling.Report{
		Client: req.GetClientId(), Service: req.GetServiceName(), Statistics: statisticsFromProto(req.GetStatistics()),
		Seq: req.GetSeq(), Resent: req.GetResent(), Applied: req.GetAppliedRulesVersion(),
	}, s.core.Tokens())
	if err != nil {
		return nil, err
	}
	ts := targetSetToProto(s.core.WithBudgets(base, req.GetServiceName()))
	return &pb.GetSamplingTargetsResponse{
		Targets: ts.Targets, Rejected: ts.Rejected, RulesVersion: ts.RulesVersion, ReportInterval: ts.ReportInterval,
	}, nil
}

// errShuttingDown ends streams when the replica stops: SDKs reconnect, and
// their load balancer sends them to another replica.
var errShuttingDown = status.Error(codes.Unavailable, "this replica is shutting down; reconnect")

func validateService(name, typ string) error {
	var vs []rules.FieldViolation
	if name == "" {
		vs = append(vs, rules.FieldViolation{Field: "service_name", Description: "is required"})
	} else if n := utf8.RuneCountInString(name); n > rules.MaxServiceNameLen || !utf8.ValidString(name) {
		vs = append(vs, rules.FieldViolation{Field: "service_name", Description: fmt.Sprintf("at most %d characters of UTF-8", rules.MaxServiceNameLen)})
	}
	if n := utf8.RuneCountInString(typ); n > rules.MaxServiceTypeLen || !utf8.ValidString(typ) {
		vs = append(vs, rules.FieldViolation{Field: "service_type", Description: fmt.Sprintf("at most %d characters of UTF-8", rules.MaxServiceTypeLen)})
	}
	if len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	return nil
}

func validateClient(id, service, typ string) error {
	err := validateService(service, typ)
	if id == "" || len(id) > maxClientIDLen || !utf8.ValidString(id) {
		v := rules.FieldViolation{Field: "client_id", Description: fmt.Sprintf("1-%d characters are required", maxClientIDLen)}
		var ve *rules.ValidationError
		if errors.As(err, &ve) {
			ve.Violations = append([]rules.FieldViolation{v}, ve.Violations...)
			return ve
		}
		return &rules.ValidationError{Violations: []rules.FieldViolation{v}}
	}
	return err
}

// StreamSampling serves one SDK instance for as long as it stays connected.
// One goroutine receives and answers reports; the handler's waits for rule
// changes, which reach it through a one-slot watcher, so a client that is
// slow to read gets the latest rule set once, never a backlog.
func (s *samplingService) StreamSampling(stream pb.SamplingService_StreamSamplingServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return invalid("hello", "the first message on the stream must be a hello")
	}
	if err := validateClient(hello.GetClientId(), hello.GetServiceName(), hello.GetServiceType()); err != nil {
		return prefixFields("hello.", err)
	}
	if vs := rules.ValidateResource("hello.resource_attributes", hello.GetResourceAttributes()); len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	s.streams.open.Inc()
	defer s.streams.open.Dec()
	w := s.catalog.Watch()
	defer w.Close()
	sess := s.core.Session(sampling.Hello{
		Client: hello.GetClientId(), Service: hello.GetServiceName(), ServiceType: hello.GetServiceType(),
		Resource: hello.GetResourceAttributes(), RulesVersion: hello.GetKnownRulesVersion(),
	})
	// sendRules sends the client's rule set if it is not the one the
	// client holds.
	sendRules := func() error {
		rs, changed := sess.RuleSet(ctx)
		if !changed {
			return nil
		}
		if err := stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: rs}}); err != nil {
			return err
		}
		s.streams.ruleSets.Inc()
		return nil
	}
	if err := sendRules(); err != nil {
		return err
	}

	// This goroutine waits for rule and budget changes; a second one
	// receives each report and answers it itself, so that a report passes
	// no hand-off between goroutines. Sends, and the session's calls that
	// make what they send, are under mu; once the handler returns (ended),
	// nothing more is sent.
	var (
		mu    sync.Mutex
		ended bool
		// interval is the report interval the answers carry (targetsResponse).
		interval *durationpb.Duration
	)
	defer func() {
		mu.Lock()
		ended = true
		mu.Unlock()
	}()
	// out is the stream's targets answer, filled for each: the stream
	// encodes it (encodeTargets), so gRPC never holds it.
	var out targetsMessage
	// sendTargets sends ts, acknowledging the report numbered acked (0:
	// none). mu is held.
	sendTargets := func(ts sampling.TargetSet, acked uint64) error {
		m := out.response(ts, &interval)
		m.GetTargets().AckedSeq = acked
		e := s.answers.encodeTargets(m)
		// The rejections name the client's documents: they go with this
		// answer, not into the stream's memory until the next one.
		out.set.Rejected = nil
		if e != nil {
			return stream.SendMsg(e)
		}
		// A string protobuf would refuse: it says why.
		m = targetsResponse(ts, &interval)
		m.GetTargets().AckedSeq = acked
		return stream.Send(m)
	}
	// answer sends what the session answers to a report it recorded.
	answer := func(rec sampling.Recorded) error {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return ctx.Err()
		}
		a := sess.Answer(rec)
		switch {
		case a.Again:
			s.streams.resent.Inc()
		case a.Err != nil:
			s.reportFailed(ctx, hello.GetClientId(), a.Err)
		}
		if err := sendTargets(a.Targets, a.Acked); err != nil || !a.RulesFollow {
			return err
		}
		return sendRules()
	}
	recvErr := make(chan error, 1)
	go func() {
		m := newReusedRequest()
		// docs is the documents of the report being answered, reused
		// from one report to the next: the core keeps none of them.
		var docs []sampling.Statistics
		for {
			m.reset()
			if err := stream.RecvMsg(m); err != nil {
				recvErr <- err
				return
			}
			r := m.GetReport()
			var err error
			switch {
			case r == nil:
				err = invalid("hello", "only the first message may be a hello")
			case len(r.GetStatistics()) > maxStatistics:
				err = invalid("report.statistics", fmt.Sprintf("at most %d documents per report", maxStatistics))
			case r.GetSeq() > store.MaxSeq:
				err = invalid("report.seq", fmt.Sprintf("at most %d", uint64(store.MaxSeq)))
			default:
				// Recorded here, not in answer, so that the stack under
				// the core's report stays as deep as it was (a frame
				// more made each stream's stack grow again after every
				// collection shrank it).
				docs = statisticsFromProtoInto(docs, r.GetStatistics())
				err = answer(sess.Record(ctx, &sampling.Report{Statistics: docs, Seq: r.GetSeq(), Resent: r.GetResent(), Applied: r.GetAppliedRulesVersion()}))
			}
			if err != nil {
				recvErr <- err
				return
			}
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return errShuttingDown
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-w.C:
			mu.Lock()
			err := sendRules()
			if err == nil {
				if ts, ok := sess.BudgetsChanged(); ok {
					err = sendTargets(ts, 0)
				}
			}
			mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// reportFailed logs a stream report that was not recorded: as part of the
// store condition when the store is unreachable (one line per outage, not
// one per report), else at DEBUG (the client went away, the report was
// refused).
func (s *samplingService) reportFailed(ctx context.Context, clientID string, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		s.storeDown.Occurred(ctx, err)
		return
	}
	s.log.DebugContext(ctx, "report not recorded; renewing the last quotas", "client_id", clientID, "err", err)
}
