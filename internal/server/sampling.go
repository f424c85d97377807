package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

const (
	maxClientIDLen = 64
	maxStatistics  = 1000
	maxFutureSkew  = time.Minute
	maxReportSpan  = time.Hour
	// maxRequestsPerSecond bounds what one instance may report for one rule.
	maxRequestsPerSecond = 10_000_000
	quotaTTLInterval     = 2 // a quota outlives this many missed report intervals minus one
)

// Rejection codes of statistics documents, stable for clients to act on.
const (
	rejectUnknownRule  = "UNKNOWN_RULE"
	rejectDuplicate    = "DUPLICATE_RULE"
	rejectNegative     = "NEGATIVE_COUNT"
	rejectInconsistent = "INCONSISTENT_COUNTS"
	rejectFuture       = "FUTURE_TIMESTAMP"
	rejectInterval     = "BAD_INTERVAL"
	rejectReceipt      = "BAD_RECEIPT"
	rejectTooLarge     = "COUNT_TOO_LARGE"
)

type samplingService struct {
	pb.UnimplementedSamplingServiceServer
	catalog  *catalog.Catalog
	batcher  *reportBatcher
	ledger   reservoir.Ledger
	now      func() time.Time
	log      *slog.Logger
	streams  *streamMetrics
	interval *durationpb.Duration
	stopping <-chan struct{}
}

func (s *samplingService) GetSamplingRules(ctx context.Context, req *pb.GetSamplingRulesRequest) (*pb.GetSamplingRulesResponse, error) {
	if err := validateService(req.GetServiceName(), req.GetServiceType()); err != nil {
		return nil, err
	}
	v := s.catalog.Current()
	if req.GetKnownRulesVersion() == v.Version {
		return &pb.GetSamplingRulesResponse{RulesVersion: v.Version, Unchanged: true}, nil
	}
	rs := v.ForService(req.GetServiceName(), req.GetServiceType())
	return &pb.GetSamplingRulesResponse{RulesVersion: rs.GetRulesVersion(), Rules: rs.GetRules()}, nil
}

func (s *samplingService) GetSamplingTargets(ctx context.Context, req *pb.GetSamplingTargetsRequest) (*pb.GetSamplingTargetsResponse, error) {
	if err := validateClient(req.GetClientId(), req.GetServiceName(), req.GetServiceType()); err != nil {
		return nil, err
	}
	if len(req.GetStatistics()) > maxStatistics {
		return nil, invalid("statistics", fmt.Sprintf("at most %d documents per report, got %d", maxStatistics, len(req.GetStatistics())))
	}
	base, err := s.report(ctx, req.GetServiceName(), req.GetStatistics(), nil)
	if err != nil {
		return nil, err
	}
	ts := s.withBudgets(base, req.GetServiceName())
	return &pb.GetSamplingTargetsResponse{
		Targets: ts.Targets, Rejected: ts.Rejected, RulesVersion: ts.RulesVersion, ReportInterval: ts.ReportInterval,
	}, nil
}

// report processes one client report: every valid document updates its
// rule's fleet ledger and the months of the budgets that count it (one store
// round trip for all of them), and gets back the client's quota, before any
// budget lowers it (see withBudgets). held carries the receipts a stream
// keeps for its client (nil for unary calls). A document's own receipt
// counts where held has none: unary callers echo every one, and an SDK
// echoes its last ones in the first report of a new stream, so that a
// reconnect replaces its previous figure instead of adding to it.
func (s *samplingService) report(ctx context.Context, service string, docs []*pb.SamplingStatistics, held map[string]reservoir.Receipt) (*pb.TargetSet, error) {
	now := s.now()
	view := s.catalog.Current()
	budgets := s.catalog.CurrentBudgets()
	var usage []store.UsageIncrement
	hour := int(now.Sub(budget.MonthStart(now)) / time.Hour)
	out := &pb.TargetSet{RulesVersion: view.Version, ReportInterval: s.interval}
	type accepted struct {
		rule *rules.Rule
		rate float64
	}
	var (
		acc     []accepted
		updates []store.RateUpdate
		seen    = make(map[string]bool, len(docs))
		bucket  = s.ledger.Bucket(now)
	)
	for i, d := range docs {
		code, msg := s.checkDocument(d, view, seen, now)
		var retract *reservoir.Receipt
		if code == "" {
			if r, ok := held[d.GetRuleName()]; ok {
				retract = &r
			} else if d.GetReceipt() != "" {
				r, err := reservoir.DecodeReceipt(d.GetReceipt(), d.GetRuleName())
				if err != nil {
					code, msg = rejectReceipt, "the receipt is not one this server issued"
				}
				retract = &r
			}
		}
		if code != "" {
			out.Rejected = append(out.Rejected, &pb.RejectedStatistics{RuleName: d.GetRuleName(), Index: int32(i), Code: code, Message: msg})
			continue
		}
		seen[d.GetRuleName()] = true
		if retract != nil && !s.ledger.Live(retract.Bucket, now) {
			retract = nil
		}
		rate := float64(d.GetRequestCount()) / s.span(d).Seconds()
		rule := view.Rule(d.GetRuleName())
		acc = append(acc, accepted{rule: rule, rate: rate})
		if d.GetRequestCount() > 0 || d.GetSampledCount() > 0 {
			// The fleet's record counts every report, for budgets created
			// later in the month and for coverage (store.FleetUsage).
			usage = append(usage, store.UsageIncrement{Budget: store.FleetUsage, Service: service, Month: now, Hour: hour, Rule: rule.Name, Requests: d.GetRequestCount(), Sampled: d.GetSampledCount()})
			for _, b := range budgets.Covering(service, rule) {
				usage = append(usage, store.UsageIncrement{Budget: b, Month: now, Hour: hour, Rule: rule.Name, Requests: d.GetRequestCount(), Sampled: d.GetSampledCount()})
			}
		}
		updates = append(updates, store.RateUpdate{Rule: d.GetRuleName(), Add: reservoir.Receipt{Bucket: bucket, Rate: rate}, Retract: retract})
	}
	if len(updates) == 0 {
		return out, nil
	}
	fleet, err := s.batcher.record(ctx, updates, usage, held != nil)
	if err != nil {
		return nil, err
	}
	expiry := timestamppb.New(now.Add(quotaTTLInterval * s.ledger.Interval))
	for i, a := range acc {
		u := updates[i]
		out.Targets = append(out.Targets, &pb.SamplingTarget{
			RuleName:             a.rule.Name,
			ReservoirQuota:       reservoir.Quota(float64(a.rule.ReservoirSize), a.rate, fleet[i]),
			ReservoirQuotaExpiry: expiry,
			FixedRate:            a.rule.FixedRate,
			Receipt:              u.Add.Encode(u.Rule),
		})
		if held != nil {
			held[u.Rule] = u.Add
		}
	}
	return out, nil
}

// errShuttingDown ends streams when the replica stops: SDKs reconnect, and
// their load balancer sends them to another replica.
var errShuttingDown = status.Error(codes.Unavailable, "this replica is shutting down; reconnect")

// withBudgets returns the targets as the budgets in force have them: fixed
// rates and reservoir quotas scaled by the strictest enforcing budget that
// covers each rule for this service. base is not modified.
func (s *samplingService) withBudgets(base *pb.TargetSet, service string) *pb.TargetSet {
	budgets := s.catalog.CurrentBudgets()
	view := s.catalog.Current()
	out := &pb.TargetSet{RulesVersion: base.GetRulesVersion(), ReportInterval: base.GetReportInterval(), Rejected: base.GetRejected()}
	for _, t := range base.GetTargets() {
		t2 := proto.Clone(t).(*pb.SamplingTarget)
		if r := view.Rule(t.GetRuleName()); r != nil {
			f, g := budgets.Factors(service, r, s.now())
			t2.FixedRate *= f
			t2.ReservoirQuota *= g
		}
		out.Targets = append(out.Targets, t2)
	}
	return out
}

// renewed returns ts with every quota's expiry moved to expiry.
func renewed(ts *pb.TargetSet, expiry *timestamppb.Timestamp) *pb.TargetSet {
	out := proto.Clone(ts).(*pb.TargetSet)
	for _, t := range out.GetTargets() {
		t.ReservoirQuotaExpiry = expiry
	}
	return out
}

// span is the length of time a document's counts cover.
func (s *samplingService) span(d *pb.SamplingStatistics) time.Duration {
	if d.GetInterval() != nil {
		return d.GetInterval().AsDuration()
	}
	return s.ledger.Interval
}

func (s *samplingService) checkDocument(d *pb.SamplingStatistics, view *catalog.View, seen map[string]bool, now time.Time) (code, msg string) {
	switch {
	case view.Rule(d.GetRuleName()) == nil:
		return rejectUnknownRule, fmt.Sprintf("no rule %q at rules version %d", d.GetRuleName(), view.Version)
	case seen[d.GetRuleName()]:
		return rejectDuplicate, "the rule appears more than once in this report"
	case d.GetRequestCount() < 0 || d.GetSampledCount() < 0 || d.GetBorrowCount() < 0:
		return rejectNegative, "counts must not be negative"
	case d.GetSampledCount() > d.GetRequestCount() || d.GetBorrowCount() > d.GetSampledCount():
		return rejectInconsistent, "want borrow_count <= sampled_count <= request_count"
	case d.GetTimestamp() != nil && (!d.GetTimestamp().IsValid() || d.GetTimestamp().AsTime().After(now.Add(maxFutureSkew))):
		return rejectFuture, fmt.Sprintf("timestamp is more than %v ahead of the server's clock", maxFutureSkew)
	case d.GetInterval() != nil && (!d.GetInterval().IsValid() || d.GetInterval().AsDuration() <= 0 || d.GetInterval().AsDuration() > maxReportSpan):
		return rejectInterval, fmt.Sprintf("interval must be positive and at most %v", maxReportSpan)
	case float64(d.GetRequestCount()) > maxRequestsPerSecond*s.span(d).Seconds():
		// No instance serves this much; a count like it is a bug, and would
		// swamp the fleet's ledger and exhaust budgets.
		return rejectTooLarge, fmt.Sprintf("more than %g requests per second over the interval", float64(maxRequestsPerSecond))
	}
	return "", ""
}

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
// One goroutine owns the stream's sends; a second only receives. Rule changes
// reach it through a one-slot watcher, so a client that is slow to read gets
// the latest rule set once, never a backlog.
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
	s.streams.open.Inc()
	defer s.streams.open.Dec()
	w := s.catalog.Watch()
	defer w.Close()

	sent := hello.GetKnownRulesVersion()
	sendRules := func() error {
		v := s.catalog.Current()
		if v.Version == sent {
			return nil
		}
		rs := v.ForService(hello.GetServiceName(), hello.GetServiceType())
		if err := stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Rules{Rules: rs}}); err != nil {
			return err
		}
		s.streams.ruleSets.Inc()
		sent = v.Version
		return nil
	}
	if err := sendRules(); err != nil {
		return err
	}

	reports := make(chan []*pb.SamplingStatistics)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			r := m.GetReport()
			switch {
			case r == nil:
				recvErr <- invalid("hello", "only the first message may be a hello")
				return
			case len(r.GetStatistics()) > maxStatistics:
				recvErr <- invalid("report.statistics", fmt.Sprintf("at most %d documents per report", maxStatistics))
				return
			}
			select {
			case reports <- r.GetStatistics():
			case <-ctx.Done():
				return
			}
		}
	}()

	held := map[string]reservoir.Receipt{}
	var base *pb.TargetSet // the last targets before budgets, to re-send when budgets change
	budgetGen := s.catalog.CurrentBudgets().Gen
	sendTargets := func() error {
		budgetGen = s.catalog.CurrentBudgets().Gen
		return stream.Send(&pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: s.withBudgets(base, hello.GetServiceName())}})
	}
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
			if err := sendRules(); err != nil {
				return err
			}
			if base != nil && s.catalog.CurrentBudgets().Gen != budgetGen {
				if err := sendTargets(); err != nil {
					return err
				}
			}
		case docs := <-reports:
			ts, err := s.report(ctx, hello.GetServiceName(), docs, held)
			if err != nil {
				// Without the store there is no fleet to split by. Keep the
				// stream and renew the client's last quotas: the split was
				// right when the store last answered, and it never adds up
				// to more than the reservoir, so the fleet stays within it
				// instead of falling back to the local default.
				s.log.WarnContext(ctx, "report not recorded; renewing the last quotas", "client_id", hello.GetClientId(), "err", err)
				if base == nil {
					continue
				}
				base = renewed(base, timestamppb.New(s.now().Add(quotaTTLInterval*s.ledger.Interval)))
				if err := sendTargets(); err != nil {
					return err
				}
				continue
			}
			base = ts
			if err := sendTargets(); err != nil {
				return err
			}
			// Later sends of base (a budget changed, a renewal) answer no
			// report: the client keeps the receipts this answer brought.
			for _, t := range base.GetTargets() {
				t.Receipt = ""
			}
			// A report may show that the client's rules are out of date.
			if err := sendRules(); err != nil {
				return err
			}
		}
	}
}
