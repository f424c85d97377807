package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/receipt"
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
	// now is the clock (Options.Now).
	now      func() time.Time
	stopping <-chan struct{}
	// storeDown logs reports that fail for want of the store once per outage.
	storeDown *condition.Condition
}

// firstRuleSet returns rs as a new instance gets it: the rules it may not
// borrow for before its first targets listed with first_borrow_withheld,
// as the core's first-borrow gate says (one store call at most, bounded in
// time; sampling.Core.FirstBorrows). rs is shared and not modified.
func (s *samplingService) firstRuleSet(ctx context.Context, rs *pb.RuleSet) *pb.RuleSet {
	return catalog.WithFirstBorrows(rs, s.core.FirstBorrows(ctx, catalog.FirstBorrows(rs)))
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
		rs = s.firstRuleSet(ctx, rs)
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

	// sent is the version of the last rule set sent (the client's, at
	// first), sentRates its rates in force: the rule set goes again when
	// either changes. A client that says it holds the current version
	// still gets the rule set if budgets lower its rates: it cannot know
	// them. A new instance's first rule set may withhold its borrowing
	// (firstRuleSet).
	sent, sentRates := hello.GetKnownRulesVersion(), []*pb.RuleRates(nil)
	// checked is what the rule set last compared with sent was made of:
	// the catalog's rules and budgets and the month (Catalog.RuleSet is a
	// function of these and the instance). While they are the same, the
	// set is the one sent or found equal to it, so a report, which asks
	// after each answer, skips the lookup (issue 17: the month's start,
	// a lock shared by every stream and the instance's key, per report).
	var checked struct {
		view     *catalog.View
		budgets  *catalog.Budgets
		from, to int64 // the month, in Unix nanoseconds: [from, to)
	}
	sendRules := func() error {
		view := s.catalog.Current()
		if view.Version == 0 { // no rules loaded yet
			return nil
		}
		budgets, now := s.catalog.CurrentBudgets(), s.now()
		if ns := now.UnixNano(); view == checked.view && budgets == checked.budgets && ns >= checked.from && ns < checked.to {
			return nil
		}
		rs := s.catalog.RuleSet(hello.GetServiceName(), hello.GetServiceType(), hello.GetResourceAttributes(), now)
		if rs.GetRulesVersion() == sent && sameRates(rs.GetRatesInForce(), sentRates) {
			checked.view, checked.budgets = view, budgets
			checked.from, checked.to = monthNanos(now)
			return nil
		}
		msg := rs
		if sent == 0 {
			msg = s.firstRuleSet(ctx, rs)
		}
		if err := stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: msg}}); err != nil {
			return err
		}
		s.streams.ruleSets.Inc()
		sent, sentRates = rs.GetRulesVersion(), rs.GetRatesInForce()
		checked.view, checked.budgets = view, budgets
		checked.from, checked.to = monthNanos(now)
		return nil
	}
	if err := sendRules(); err != nil {
		return err
	}

	// This goroutine waits for rule and budget changes; a second one
	// receives each report and answers it itself, so that a report passes
	// no hand-off between goroutines. Sends, and the state they send from,
	// are under mu; once the handler returns (ended), nothing more is sent.
	var (
		mu        sync.Mutex
		ended     bool
		base      *sampling.TargetSet // the last targets before budgets, to re-send when budgets change; nil or &last
		last      sampling.TargetSet
		budgetGen = s.catalog.CurrentBudgets().Gen
		// scratch is the targets as budgets have them, reused from one
		// answer to the next: they are encoded at once.
		scratch []sampling.Target
		// interval is the report interval the answers carry (targetsResponse).
		interval *durationpb.Duration
	)
	defer func() {
		mu.Lock()
		ended = true
		mu.Unlock()
	}()
	// sendTargets sends base as the budgets have it, acknowledging the
	// report numbered acked (0: none). mu is held.
	sendTargets := func(acked uint64) error {
		budgetGen = s.catalog.CurrentBudgets().Gen
		ts := s.core.WithBudgetsInto(scratch, *base, hello.GetServiceName())
		scratch = ts.Targets
		m := targetsResponse(ts, &interval)
		m.GetTargets().AckedSeq = acked
		return stream.Send(m)
	}
	held := receipt.NewHeld()
	keeper := held.Over(s.core.Tokens())
	var acked uint64 // the last report numbered and recorded
	// answer records a report and sends its targets, and the rules if the
	// report shows the client's are out of date.
	// docs is the documents of the report being answered, reused from one
	// report to the next: the core keeps none of them.
	var docs []sampling.Statistics
	// bufs is the core's memory for the reports (Report.Buffers): the
	// targets of a report, which base keeps, last while the next one is
	// made.
	bufs := new(sampling.ReportBuffers)
	answer := func(r *pb.Report) error {
		if seq := r.GetSeq(); seq != 0 && seq <= acked {
			// Sent again before the answer reached the client (a
			// loaded client or replica): it is recorded already, and
			// taken again its interval would move the client's chain
			// of claims past the time its counts cover (bound).
			mu.Lock()
			defer mu.Unlock()
			if ended {
				return ctx.Err()
			}
			s.streams.resent.Inc()
			return sendTargets(seq)
		}
		docs = statisticsFromProtoInto(docs, r.GetStatistics())
		ts, err := s.core.Report(ctx, sampling.Report{
			Client: hello.GetClientId(), Service: hello.GetServiceName(), Statistics: docs,
			Carry: true, Seq: r.GetSeq(), Resent: r.GetResent(), Applied: r.GetAppliedRulesVersion(), Buffers: bufs,
		}, keeper)
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return ctx.Err()
		}
		if err != nil {
			// Without the store there is no fleet to split by. Keep the
			// stream and renew the client's last quotas (the batcher
			// fails a report within half an interval, so this answer
			// comes before they lapse): the split was within the
			// reservoir when the store last answered, and the ledger
			// keeps counting it, so the fleet stays within the
			// reservoir instead of borrowing or falling back to the
			// local default. The report is not acknowledged: a
			// numbered one comes again.
			s.reportFailed(ctx, hello.GetClientId(), err)
			last = s.core.Renewal(docs, held)
			base = &last
			return sendTargets(0)
		}
		last = ts
		base, acked = &last, max(acked, r.GetSeq())
		if err := sendTargets(r.GetSeq()); err != nil {
			return err
		}
		// Later sends of base (a budget changed, a renewal) answer no
		// report: the client keeps the receipts this answer brought.
		for i := range base.Targets {
			base.Targets[i].Receipt = ""
		}
		// A report may show that the client's rules are out of date.
		return sendRules()
	}
	recvErr := make(chan error, 1)
	go func() {
		m := reusedRequest{new(pb.StreamSamplingRequest)}
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
				err = answer(r)
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
			if err == nil && base != nil && s.catalog.CurrentBudgets().Gen != budgetGen {
				err = sendTargets(0)
			}
			mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// monthNanos returns the bounds of now's month (budget.MonthStart), in
// Unix nanoseconds: the rates in force are the month's.
func monthNanos(now time.Time) (from, to int64) {
	start := budget.MonthStart(now)
	return start.UnixNano(), start.AddDate(0, 1, 0).UnixNano()
}

// sameRates reports whether two lists of rates in force are equal.
func sameRates(a, b []*pb.RuleRates) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.RuleRates) bool {
		return x.GetRuleName() == y.GetRuleName() && x.GetFixedRate() == y.GetFixedRate() && x.GetReservoirFactor() == y.GetReservoirFactor()
	})
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
