package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleetsim"
	"github.com/tracesampling/controlplane/pkg/rules"
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
	// simulations counts the SimulateCost calls running (maxSimulations).
	simulations atomic.Int32
	// simulate runs a simulation; nil is budget.Simulate. Tests replace it.
	simulate func(context.Context, budget.SimConfig) (budget.SimResult, error)
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

// SimulateCost's work is bounded per request, and in how many run at once.
// A simulated day is 1,440 / interval minutes steps; each step runs every
// rule and, with a budget, the controller: its forecast, and a plan of
// every rule in scope (BenchmarkSimulate in internal/budget). Measured in
// the cost of one rule's plan in one step, the controller costs about
// simControllerCost more per step. A run without a budget costs far less
// per rule and step, so maxSimDays and maxSimRules bound it; with one, the
// controller decides every minute when days × steps × (rules +
// simControllerCost) stays within maxSimWork, else at the first of
// simIntervals that does: the largest run allowed, 62 days of 100 rules,
// decides every 12 minutes.
const (
	maxSimDays        = 62
	maxSimRules       = 100
	simControllerCost = 9
	// maxSimWork is about 0.6 CPU-second here (docs/RELIABILITY.md).
	maxSimWork = 900_000
)

// simIntervals are the controller intervals SimulateCost may use, shortest
// first; each divides an hour.
var simIntervals = []time.Duration{
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute, 6 * time.Minute,
	10 * time.Minute, 12 * time.Minute, 15 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour,
}

// simInterval is the shortest controller interval at which a run of days
// and rules under a budget fits in maxSimWork.
func simInterval(days, rules int) time.Duration {
	for _, iv := range simIntervals {
		steps := days * int(24*time.Hour/iv)
		if steps*(rules+simControllerCost) <= maxSimWork {
			return iv
		}
	}
	return simIntervals[len(simIntervals)-1]
}

// maxSimulations is how many simulations a replica runs at once: half its
// cores, at least one, so that simulations never take every core from
// the sampling traffic.
func maxSimulations() int32 { return int32(max(1, runtime.GOMAXPROCS(0)/2)) }

func (s *budgetService) SimulateCost(ctx context.Context, req *pb.SimulateCostRequest) (*pb.SimulateCostResponse, error) {
	cfg, err := simConfig(req)
	if err != nil {
		return nil, err
	}
	limit := maxSimulations()
	if s.simulations.Add(1) > limit {
		s.simulations.Add(-1)
		return nil, fmt.Errorf("%d cost simulations are running, as many as this replica runs at once: %w", limit, errBusy)
	}
	defer s.simulations.Add(-1)
	simulate := s.simulate
	if simulate == nil {
		simulate = budget.Simulate
	}
	var res budget.SimResult
	if req.GetFleet() != nil {
		fc, ferr := fleetConfig(req, cfg)
		if ferr != nil {
			return nil, ferr
		}
		res, err = fleetsim.Run(ctx, fc)
		if errors.Is(err, fleetsim.ErrConfig) {
			// What fleetConfig cannot see alone: a rule with traffic
			// that no instance's service runs.
			return nil, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: "fleet.service_names", Description: err.Error()}}}
		}
	} else {
		res, err = simulate(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
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
			MonthlyAmountMicros: cfg.Budget.MonthlyAmountMicros,
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
	return out, nil
}

// The fleet model's bounds on SimulateCost: its work is about 10-20 µs of
// CPU per report (instances × intervals), so maxFleetReports keeps a run
// within a CPU-second or two: a 31-day month of two instances reporting
// every minute, or ten minutes of 1,000 instances every 10 s.
const (
	maxFleetReports   = 100_000
	maxFleetServices  = 100
	maxFleetDuration  = maxSimDays * 24 * time.Hour
	fleetMinInterval  = time.Second
	fleetMaxInterval  = time.Minute
	fleetDefaultEvery = time.Minute
)

// fleetConfig checks a request's fleet model; cfg is its checked traffic,
// rules and budget.
func fleetConfig(req *pb.SimulateCostRequest, cfg budget.SimConfig) (fleetsim.Config, error) {
	var vs []rules.FieldViolation
	add := func(field, desc string) { vs = append(vs, rules.FieldViolation{Field: field, Description: desc}) }
	f := req.GetFleet()
	fc := fleetsim.Config{SimConfig: cfg, Instances: int(f.GetInstances()), Zipf: f.GetZipf(), Services: f.GetServiceNames(), Seed: f.GetSeed()}
	if fc.Instances < 1 || fc.Instances > fleetsim.MaxInstances {
		add("fleet.instances", fmt.Sprintf("between 1 and %d", fleetsim.MaxInstances))
	}
	if !(fc.Zipf >= 0 && fc.Zipf <= 10) {
		add("fleet.zipf", "between 0 and 10")
	}
	if len(fc.Services) > maxFleetServices {
		add("fleet.service_names", fmt.Sprintf("at most %d", maxFleetServices))
	}
	for i, svc := range fc.Services {
		if err := validateService(svc, ""); err != nil {
			add(fmt.Sprintf("fleet.service_names[%d]", i), fmt.Sprintf("1-%d characters of UTF-8", rules.MaxServiceNameLen))
		}
	}
	fc.Interval = fleetDefaultEvery
	if d := f.GetReportInterval(); d != nil {
		fc.Interval = d.AsDuration()
		if err := d.CheckValid(); err != nil || fc.Interval < fleetMinInterval || fc.Interval > fleetMaxInterval {
			add("fleet.report_interval", fmt.Sprintf("from %v to %v", fleetMinInterval, fleetMaxInterval))
		}
	}
	if d := f.GetDuration(); d != nil {
		fc.Duration = d.AsDuration()
		if err := d.CheckValid(); err != nil || fc.Duration <= 0 || fc.Duration > maxFleetDuration {
			add("fleet.duration", fmt.Sprintf("positive, at most %d days", maxSimDays))
		}
	}
	if ts := f.GetStartTime(); ts != nil {
		if err := ts.CheckValid(); err != nil || ts.AsTime().Year() < 2000 || ts.AsTime().Year() > 9000 {
			add("fleet.start_time", "a time from the year 2000 to 9000")
		} else {
			fc.Start = ts.AsTime()
		}
	}
	if len(vs) == 0 {
		length := fc.Duration
		if length == 0 {
			days := cfg.Days
			if days == 0 {
				days = 30
			}
			length = time.Duration(days) * 24 * time.Hour
		}
		if n := float64(fc.Instances) * length.Seconds() / fc.Interval.Seconds(); n > maxFleetReports {
			add("fleet", fmt.Sprintf("%d instances reporting every %v for %v make %.3g reports, over the limit of %d: fewer instances, a longer interval or a shorter run",
				fc.Instances, fc.Interval, length, n, maxFleetReports))
		}
	}
	if len(vs) > 0 {
		return fc, &rules.ValidationError{Violations: vs}
	}
	return fc, nil
}

func alertKind(name string) budget.AlertKind {
	for _, k := range budget.AlertKinds {
		if k.String() == name {
			return k
		}
	}
	return 0
}

// simConfig checks a simulation request and turns it into the simulator's
// configuration; every bad field is reported.
func simConfig(req *pb.SimulateCostRequest) (budget.SimConfig, error) {
	var vs []rules.FieldViolation
	add := func(field, desc string) { vs = append(vs, rules.FieldViolation{Field: field, Description: desc}) }
	tr := req.GetTraffic()
	cfg := budget.SimConfig{
		RequestsPerDay: tr.GetRequestsPerDay(),
		Days:           int(tr.GetDays()),
		DailySwing:     tr.GetDailySwing(),
		Growth:         tr.GetGrowth(),
	}
	if !(cfg.RequestsPerDay > 0) || cfg.RequestsPerDay > 1e13 {
		add("traffic.requests_per_day", "must be positive")
	}
	if cfg.Days < 0 || cfg.Days > maxSimDays {
		add("traffic.days", fmt.Sprintf("between 1 and %d (0: 30)", maxSimDays))
	}
	if !(cfg.DailySwing >= 0 && cfg.DailySwing <= 1) {
		add("traffic.daily_swing", "between 0 and 1")
	}
	for day, f := range tr.GetSpikeDays() {
		if day < 1 || int(day) > max(cfg.Days, 30) || !(f >= 0 && f <= 1000) {
			add(fmt.Sprintf("traffic.spike_days[%d]", day), "a day of the run and a factor between 0 and 1000")
			continue
		}
		if cfg.SpikeDays == nil {
			cfg.SpikeDays = map[int]float64{}
		}
		cfg.SpikeDays[int(day)] = f
	}
	if !(cfg.Growth >= 0 && cfg.Growth <= 1000) {
		add("traffic.growth", "between 0 and 1000")
	}
	if len(req.GetRules()) > maxSimRules {
		add("rules", fmt.Sprintf("at most %d rules", maxSimRules))
	}
	for i, p := range req.GetRules() {
		r := rulepb.FromProto(p).Normalize()
		if err := rules.Validate(&r); err != nil {
			vs = append(vs, prefixFields(fmt.Sprintf("rules[%d].", i), err).(*rules.ValidationError).Violations...)
			continue
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	if req.GetBudget() != nil {
		b := apiconv.BudgetFromProto(req.GetBudget())
		if b.Name == "" {
			b.Name = "simulated"
		}
		b = b.Normalize()
		if err := budget.Validate(&b); err != nil {
			vs = append(vs, prefixFields("budget.", err).(*rules.ValidationError).Violations...)
		}
		cfg.Budget = &b
	}
	if shares := tr.GetRuleShares(); len(shares) > 0 {
		cfg.Shares = make(map[string]float64, len(shares))
		for name, w := range shares {
			field := fmt.Sprintf("traffic.rule_shares[%q]", name)
			switch {
			case !slices.ContainsFunc(cfg.Rules, func(r rules.Rule) bool { return r.Name == name }) &&
				!(len(req.GetRules()) == 0 && name == rules.DefaultName):
				add(field, "names no rule of the request")
			case !(w >= 0 && w <= 1e6):
				add(field, "a weight between 0 and 1e6")
			default:
				cfg.Shares[name] = w
			}
		}
	}
	if cfg.Budget != nil && len(vs) == 0 {
		days, nRules := cfg.Days, max(len(cfg.Rules), 1) // the defaults: 30 days, the Default rule
		if days == 0 {
			days = 30
		}
		cfg.Interval = simInterval(days, nRules)
	}
	if len(vs) > 0 {
		return cfg, &rules.ValidationError{Violations: vs}
	}
	return cfg, nil
}
