package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/simulate"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// BudgetStore is what the budget service needs from a store: the editor's
// part (edit.BudgetStore) and what its reads of status, history and alerts
// need (edit.BudgetViewStore).
type BudgetStore interface {
	edit.BudgetStore
	edit.BudgetViewStore
}

// BudgetDecider decides one budget, as stored, and stores its decision.
type BudgetDecider interface {
	DecideBudget(ctx context.Context, b budget.Budget) error
}

// budgetService is the gRPC face of the budget editor (decode, edit,
// encode), and serves the budgets' status, history, alerts and cost
// simulations.
type budgetService struct {
	pb.UnimplementedBudgetServiceServer
	edit     *edit.Budgets
	views    *edit.BudgetViews
	catalog  *catalog.Catalog
	stopping <-chan struct{}
	log      *slog.Logger
	// decider, if set, decides a budget created or changed at once.
	decider BudgetDecider
	// simulator runs the replica's cost simulations.
	simulator simulate.Simulator
}

func (s *budgetService) CreateBudget(ctx context.Context, req *pb.CreateBudgetRequest) (*pb.CreateBudgetResponse, error) {
	if req.GetBudget() == nil {
		return nil, invalid("budget", "is required")
	}
	created, err := s.edit.Create(ctx, apiconv.BudgetFromProto(req.GetBudget()))
	if err != nil {
		return nil, prefixFields("budget.", err)
	}
	s.decide(ctx, created)
	s.log.InfoContext(ctx, "budget created", "budget", created.Name, "actor", created.UpdatedBy)
	return &pb.CreateBudgetResponse{Budget: apiconv.BudgetToProto(&created)}, nil
}

// decide has a budget just created or changed decided at once, so that an
// enforcing budget is in force from now rather than from the controller's
// next interval, and has the replica's catalog load it (and the decision).
// The edit is made whatever happens here: a decision that fails is logged,
// and the next interval decides.
func (s *budgetService) decide(ctx context.Context, b budget.Budget) {
	if s.decider != nil {
		if err := s.decider.DecideBudget(ctx, b); err != nil {
			s.log.WarnContext(ctx, "budget not decided at once; the next interval will", "budget", b.Name, "err", err)
		}
	}
	s.catalog.Kick()
}

func (s *budgetService) GetBudget(ctx context.Context, req *pb.GetBudgetRequest) (*pb.GetBudgetResponse, error) {
	b, err := s.edit.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetBudgetResponse{Budget: apiconv.BudgetToProto(&b)}, nil
}

func (s *budgetService) ListBudgets(ctx context.Context, req *pb.ListBudgetsRequest) (*pb.ListBudgetsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	page, err := s.edit.List(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListBudgetsResponse{NextPageToken: page.NextToken}
	for i := range page.Budgets {
		resp.Budgets = append(resp.Budgets, apiconv.BudgetToProto(&page.Budgets[i]))
	}
	return resp, nil
}

func (s *budgetService) UpdateBudget(ctx context.Context, req *pb.UpdateBudgetRequest) (*pb.UpdateBudgetResponse, error) {
	in := req.GetBudget()
	if in == nil {
		return nil, invalid("budget", "is required")
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 1 && paths[0] == "*" {
		paths = nil
	}
	for _, p := range paths {
		if !budget.IsMutableField(p) {
			return nil, invalid("update_mask", fmt.Sprintf("%q is not a field that can be updated; use one of %s", p, strings.Join(budget.MutableFields, ", ")))
		}
	}
	rev, err := etagRevision("budget.etag", in.GetEtag())
	if err != nil {
		return nil, err
	}
	updated, err := s.edit.Update(ctx, apiconv.BudgetFromProto(in), paths, rev)
	if err != nil {
		return nil, prefixFields("budget.", err)
	}
	s.decide(ctx, updated)
	s.log.InfoContext(ctx, "budget updated", "budget", updated.Name, "actor", updated.UpdatedBy)
	return &pb.UpdateBudgetResponse{Budget: apiconv.BudgetToProto(&updated)}, nil
}

func (s *budgetService) DeleteBudget(ctx context.Context, req *pb.DeleteBudgetRequest) (*pb.DeleteBudgetResponse, error) {
	rev, err := etagRevision("etag", req.GetEtag())
	if err != nil {
		return nil, err
	}
	if err := s.edit.Delete(ctx, req.GetName(), rev); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "budget deleted", "budget", req.GetName(), "actor", auth.Actor(ctx))
	return &pb.DeleteBudgetResponse{}, nil
}

func (s *budgetService) GetBudgetStatus(ctx context.Context, req *pb.GetBudgetStatusRequest) (*pb.GetBudgetStatusResponse, error) {
	b, st, err := s.views.Status(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetBudgetStatusResponse{Status: apiconv.StatusToProto(&b, st)}, nil
}

func (s *budgetService) GetBudgetHistory(ctx context.Context, req *pb.GetBudgetHistoryRequest) (*pb.GetBudgetHistoryResponse, error) {
	var month time.Time
	if ts := req.GetMonthTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalid("month_time", err.Error())
		}
		month = ts.AsTime()
	}
	h, err := s.views.History(ctx, req.GetName(), month)
	if err != nil {
		return nil, err
	}
	return apiconv.HistoryToProto(&h.Budget, &h.Usage, h.Points, h.Now), nil
}

func (s *budgetService) ListAlerts(ctx context.Context, req *pb.ListAlertsRequest) (*pb.ListAlertsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	page, err := s.views.Alerts(ctx, req.GetBudgetName(), size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListAlertsResponse{NextPageToken: page.NextToken}
	for i := range page.Alerts {
		resp.Alerts = append(resp.Alerts, apiconv.AlertToProto(&page.Alerts[i]))
	}
	return resp, nil
}

// WatchAlerts sends every alert that fires after the call, on any replica,
// or after after_id, or from the oldest kept with from_oldest: each "an
// alert fired" hint makes it send what the core says is new since the last
// one it sent (edit.BudgetViews.AlertsSince).
func (s *budgetService) WatchAlerts(req *pb.WatchAlertsRequest, stream pb.BudgetService_WatchAlertsServer) error {
	ctx := stream.Context()
	name, last := req.GetBudgetName(), req.GetAfterId()
	send := func() error {
		fresh, err := s.views.AlertsSince(ctx, name, last)
		if err != nil {
			return err
		}
		for i := range fresh {
			if err := stream.Send(&pb.WatchAlertsResponse{Alert: apiconv.AlertToProto(&fresh[i])}); err != nil {
				return err
			}
			last = fresh[i].ID
		}
		return nil
	}
	// Subscribe before reading where to start, so that nothing fires
	// unseen in between.
	w := s.catalog.WatchAlerts()
	defer w.Close()
	var err error
	if last != "" || req.GetFromOldest() {
		err = send()
	} else {
		last, err = s.views.NewestAlert(ctx, name)
	}
	for err == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return errShuttingDown
		case <-w.C:
		}
		err = send()
	}
	return err
}

// SimulateCost decodes the request, has the replica's simulator check and
// run it, and encodes the outcome.
func (s *budgetService) SimulateCost(ctx context.Context, req *pb.SimulateCostRequest) (*pb.SimulateCostResponse, error) {
	res, err := s.simulator.Run(ctx, simRequestFromProto(req))
	if err != nil {
		return nil, err
	}
	return simResultToProto(&res), nil
}

// simRequestFromProto decodes a SimulateCost request.
func simRequestFromProto(req *pb.SimulateCostRequest) *simulate.Request {
	tr := req.GetTraffic()
	out := &simulate.Request{Traffic: simulate.Traffic{
		RequestsPerDay: tr.GetRequestsPerDay(), Days: int(tr.GetDays()), DailySwing: tr.GetDailySwing(),
		Growth: tr.GetGrowth(), RuleShares: tr.GetRuleShares(),
	}}
	if days := tr.GetSpikeDays(); len(days) > 0 {
		out.Traffic.SpikeDays = make(map[int]float64, len(days))
		for day, f := range days {
			out.Traffic.SpikeDays[int(day)] = f
		}
	}
	for _, r := range req.GetRules() {
		out.Rules = append(out.Rules, rulepb.FromProto(r))
	}
	if b := req.GetBudget(); b != nil {
		d := apiconv.BudgetFromProto(b)
		out.Budget = &d
	}
	if f := req.GetFleet(); f != nil {
		out.Fleet = &simulate.Fleet{
			Instances: int(f.GetInstances()), Zipf: f.GetZipf(), ServiceNames: f.GetServiceNames(), Seed: f.GetSeed(),
			ReportInterval: simDuration(f.GetReportInterval()), Duration: simDuration(f.GetDuration()),
		}
		if ts := f.GetStartTime(); ts != nil {
			// The zero Unix time, before 2000, is refused as a time
			// that cannot be read is.
			out.Fleet.Start = time.Unix(0, 0).UTC()
			if t := ts.AsTime(); ts.CheckValid() == nil && !t.IsZero() {
				out.Fleet.Start = t
			}
		}
	}
	return out
}

// simDuration decodes an optional duration of the fleet model: unset is 0,
// and one set that cannot be read or is not positive is -1ns, which the
// core refuses, naming the field.
func simDuration(d *durationpb.Duration) time.Duration {
	switch {
	case d == nil:
		return 0
	case d.CheckValid() != nil || d.AsDuration() <= 0:
		return -1
	}
	return d.AsDuration()
}

// simResultToProto encodes a simulation's outcome.
func simResultToProto(res *simulate.Result) *pb.SimulateCostResponse {
	out := &pb.SimulateCostResponse{
		ControllerIntervalSeconds: int32(res.IntervalSeconds),
		StartTime:                 timestamppb.New(res.Start),
		Requests:                  int64(res.Requests),
		Traces:                    int64(res.Traces),
		TracesPerDay:              int64(res.TracesPerDay),
		CostMicros:                budget.Micros(res.Cost),
		MonthlyCostMicros:         budget.Micros(res.MonthlyCost),
		CurrencyCode:              res.Currency,
	}
	if sb := res.SimBudget; sb != nil {
		o := &pb.BudgetOutcome{
			MonthlyAmountMicros: res.MonthlyAmountMicros,
			SpentMicros:         budget.Micros(sb.Spent),
			SpentRatio:          sb.SpentRatio,
			MaxForecastRatio:    sb.MaxForecastRatio,
			MinFixedRateFactor:  sb.MinFixedRateFactor,
			MinReservoirFactor:  sb.MinReservoirFactor,
			Exhausted:           sb.Exhausted,
		}
		for _, a := range sb.Alerts {
			o.Alerts = append(o.Alerts, &pb.SimulatedAlert{
				Kind: apiconv.AlertKindToProto(alertKind(a.Kind)), Threshold: a.Threshold, FireTime: timestamppb.New(a.At),
				SpentMicros: budget.Micros(a.Spent), ForecastMicros: budget.Micros(a.Forecast), Message: a.Message,
			})
		}
		for _, r := range sb.Rules {
			o.Rules = append(o.Rules, &pb.SimulatedRule{
				RuleName: r.Name, Priority: r.Priority, Traces: int64(r.Traces), UnenforcedTraces: int64(r.UnenforcedTraces),
				MinFixedRateFactor: r.MinFixedRateFactor, MaxFixedRateFactor: r.MaxFixedRateFactor, MinReservoirFactor: r.MinReservoirFactor,
			})
		}
		out.BudgetOutcome = o
	}
	if fl := res.Fleet; fl != nil {
		out.FleetOutcome = &pb.FleetOutcome{
			Instances: int32(fl.Instances), Reports: fl.Reports, Decisions: fl.Decisions,
			ReservoirTraces: int64(fl.ReservoirTraces), BorrowedTraces: int64(fl.BorrowedTraces), FixedRateTraces: int64(fl.FixedRateTraces),
		}
	}
	return out
}

func alertKind(name string) budget.AlertKind {
	for _, k := range budget.AlertKinds {
		if k.String() == name {
			return k
		}
	}
	return 0
}
