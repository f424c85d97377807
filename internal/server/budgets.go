package server

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

// BudgetStore is what the budget service needs from a store.
type BudgetStore interface {
	Budgets(ctx context.Context, pageSize int, pageToken string) (store.BudgetPage, error)
	Budget(ctx context.Context, name string) (budget.Budget, error)
	CreateBudget(ctx context.Context, b budget.Budget) (budget.Budget, error)
	UpdateBudget(ctx context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error)
	DeleteBudget(ctx context.Context, name string, ifRevision int64) error
	States(ctx context.Context) (map[string]budget.State, error)
	Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error)
}

type budgetService struct {
	pb.UnimplementedBudgetServiceServer
	store    BudgetStore
	catalog  *catalog.Catalog
	stopping <-chan struct{}
	// simulations counts the SimulateCost calls running (maxSimulations).
	simulations atomic.Int32
	// simulate runs a simulation; nil is budget.Simulate. Tests replace it.
	simulate func(context.Context, budget.SimConfig) (budget.SimResult, error)
}

func (s *budgetService) CreateBudget(ctx context.Context, req *pb.CreateBudgetRequest) (*pb.CreateBudgetResponse, error) {
	if req.GetBudget() == nil {
		return nil, invalid("budget", "is required")
	}
	b := apiconv.BudgetFromProto(req.GetBudget()).Normalize()
	b.Channels = budget.KeepHidden(b.Channels, nil)
	if err := budget.Validate(&b); err != nil {
		return nil, prefixFields("budget.", err)
	}
	created, err := s.store.CreateBudget(ctx, b)
	if err != nil {
		return nil, err
	}
	s.catalog.Kick()
	return &pb.CreateBudgetResponse{Budget: apiconv.BudgetToProto(&created)}, nil
}

func (s *budgetService) GetBudget(ctx context.Context, req *pb.GetBudgetRequest) (*pb.GetBudgetResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	b, err := s.store.Budget(ctx, req.GetName())
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
	page, err := s.store.Budgets(ctx, size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListBudgetsResponse{NextPageToken: page.NextToken}
	for i := range page.Budgets {
		resp.Budgets = append(resp.Budgets, apiconv.BudgetToProto(&page.Budgets[i]))
	}
	return resp, nil
}

var mutableBudgetFields = []string{
	"description", "scope", "monthly_amount_micros", "currency_code", "price_per_million_micros", "free_traces", "mode",
	"spend_thresholds", "forecast_thresholds", "channels", "floor_traces_per_second",
}

func (s *budgetService) UpdateBudget(ctx context.Context, req *pb.UpdateBudgetRequest) (*pb.UpdateBudgetResponse, error) {
	in := req.GetBudget()
	if in == nil {
		return nil, invalid("budget", "is required")
	}
	if err := rules.ValidateName(in.GetName()); err != nil {
		return nil, prefixFields("budget.", err)
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 || len(paths) == 1 && paths[0] == "*" {
		paths = mutableBudgetFields
	}
	for _, p := range paths {
		if !slices.Contains(mutableBudgetFields, p) {
			return nil, invalid("update_mask", fmt.Sprintf("%q is not a field that can be updated; use one of %s", p, strings.Join(mutableBudgetFields, ", ")))
		}
	}
	var wantRev int64
	if in.GetEtag() != "" {
		var err error
		if wantRev, err = rules.ParseEtag(in.GetEtag()); err != nil {
			return nil, invalid("budget.etag", err.Error())
		}
	}
	patch := apiconv.BudgetFromProto(in)
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Budget(ctx, in.GetName())
		if err != nil {
			return nil, err
		}
		if wantRev != 0 && cur.Revision != wantRev {
			return nil, fmt.Errorf("budget %q has etag %q, not %q: %w", cur.Name, cur.Etag(), in.GetEtag(), store.ErrConflict)
		}
		next := applyBudgetMask(cur, patch, paths).Normalize()
		if err := budget.Validate(&next); err != nil {
			return nil, prefixFields("budget.", err)
		}
		updated, err := s.store.UpdateBudget(ctx, next, cur.Revision)
		if errors.Is(err, store.ErrConflict) && wantRev == 0 && attempt < edit.UpdateRetries {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.catalog.Kick()
		return &pb.UpdateBudgetResponse{Budget: apiconv.BudgetToProto(&updated)}, nil
	}
}

// applyBudgetMask returns cur with the fields in paths taken from patch. A
// channel sent back as answers show it (URL redacted, secret masked) keeps
// the URL and secret it had.
func applyBudgetMask(cur, patch budget.Budget, paths []string) budget.Budget {
	next := cur
	for _, p := range paths {
		switch p {
		case "description":
			next.Description = patch.Description
		case "scope":
			next.Scope = patch.Scope
		case "monthly_amount_micros":
			next.MonthlyAmountMicros = patch.MonthlyAmountMicros
		case "currency_code":
			next.Currency = patch.Currency
		case "price_per_million_micros":
			next.PricePerMillionMicros = patch.PricePerMillionMicros
		case "free_traces":
			next.FreeTraces = patch.FreeTraces
		case "mode":
			next.Mode = patch.Mode
		case "spend_thresholds":
			next.SpendThresholds = patch.SpendThresholds
		case "forecast_thresholds":
			next.ForecastThresholds = patch.ForecastThresholds
		case "channels":
			next.Channels = budget.KeepHidden(patch.Channels, cur.Channels)
		case "floor_traces_per_second":
			next.FloorPerSecond = patch.FloorPerSecond
		}
	}
	return next
}

func (s *budgetService) DeleteBudget(ctx context.Context, req *pb.DeleteBudgetRequest) (*pb.DeleteBudgetResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	var rev int64
	if req.GetEtag() != "" {
		var err error
		if rev, err = rules.ParseEtag(req.GetEtag()); err != nil {
			return nil, invalid("etag", err.Error())
		}
	}
	if err := s.store.DeleteBudget(ctx, req.GetName(), rev); err != nil {
		return nil, err
	}
	s.catalog.Kick()
	return &pb.DeleteBudgetResponse{}, nil
}

func (s *budgetService) GetBudgetStatus(ctx context.Context, req *pb.GetBudgetStatusRequest) (*pb.GetBudgetStatusResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	b, err := s.store.Budget(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	states, err := s.store.States(ctx)
	if err != nil {
		return nil, err
	}
	var st *budget.State
	if x, ok := states[b.Name]; ok {
		st = &x
	}
	return &pb.GetBudgetStatusResponse{Status: apiconv.StatusToProto(&b, st)}, nil
}

func (s *budgetService) ListAlerts(ctx context.Context, req *pb.ListAlertsRequest) (*pb.ListAlertsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if err := checkBudgetFilter(req.GetBudgetName()); err != nil {
		return nil, err
	}
	page, err := s.store.Alerts(ctx, req.GetBudgetName(), size, req.GetPageToken())
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
// alert fired" hint makes it read the newest alerts back to the last one it
// sent (at most the 1,000 newest, if that one is no longer kept).
func (s *budgetService) WatchAlerts(req *pb.WatchAlertsRequest, stream pb.BudgetService_WatchAlertsServer) error {
	ctx := stream.Context()
	if err := checkBudgetFilter(req.GetBudgetName()); err != nil {
		return err
	}
	if n := len(req.GetAfterId()); n > maxAlertIDLen {
		return invalid("after_id", fmt.Sprintf("at most %d characters, got %d", maxAlertIDLen, n))
	}
	// Subscribe before reading where to start, so that nothing fires
	// unseen in between.
	w := s.catalog.WatchAlerts()
	defer w.Close()
	last := req.GetAfterId()
	if last != "" || req.GetFromOldest() {
		if err := s.sendSince(ctx, stream, req.GetBudgetName(), &last); err != nil {
			return err
		}
	} else {
		var err error
		if last, err = s.newestAlert(ctx, req.GetBudgetName()); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return errShuttingDown
		case <-w.C:
		}
		if err := s.sendSince(ctx, stream, req.GetBudgetName(), &last); err != nil {
			return err
		}
	}
}

// checkBudgetFilter checks the budget_name filter of ListAlerts and
// WatchAlerts: empty, or a budget name.
func checkBudgetFilter(name string) error {
	if name == "" {
		return nil
	}
	var ve *rules.ValidationError
	if err := rules.ValidateName(name); errors.As(err, &ve) {
		return invalid("budget_name", ve.Violations[0].Description)
	} else if err != nil {
		return err
	}
	return nil
}

// maxAlertIDLen bounds after_id: the stores' IDs are far shorter.
const maxAlertIDLen = 128

// maxCatchUp is how many alerts one pass of sendSince sends at most: the
// newest ones, when the alert last sent is older or no longer listed.
const maxCatchUp = 1000

// sendSince sends, oldest first, the alerts newer than *last, and moves
// *last to the newest one sent. With *last empty every alert listed is new.
func (s *budgetService) sendSince(ctx context.Context, stream pb.BudgetService_WatchAlertsServer, budgetName string, last *string) error {
	var fresh []budget.Alert
	for token := ""; ; {
		page, err := s.store.Alerts(ctx, budgetName, 100, token)
		if err != nil {
			return err
		}
		stop := false
		for _, a := range page.Alerts {
			if a.ID == *last {
				stop = true
				break
			}
			fresh = append(fresh, a)
		}
		if token = page.NextToken; stop || token == "" || len(fresh) >= maxCatchUp {
			break
		}
	}
	fresh = fresh[:min(len(fresh), maxCatchUp)]
	for i := len(fresh) - 1; i >= 0; i-- {
		if err := stream.Send(&pb.WatchAlertsResponse{Alert: apiconv.AlertToProto(&fresh[i])}); err != nil {
			return err
		}
		*last = fresh[i].ID
	}
	return nil
}

func (s *budgetService) newestAlert(ctx context.Context, budgetName string) (string, error) {
	page, err := s.store.Alerts(ctx, budgetName, 1, "")
	if err != nil || len(page.Alerts) == 0 {
		return "", err
	}
	return page.Alerts[0].ID, nil
}

// SimulateCost's work is bounded per request, and in how many run at once.
// A simulated day is simStepsPerDay steps (one a minute, the simulator's
// controller interval); each step runs every rule and, with a budget, the
// controller (forecast, Decide, DueAlerts), which costs about as much as
// simControllerRules rules do (BenchmarkSimulate in internal/budget). A run
// without a budget costs far less per rule and step, so maxSimDays and
// maxSimRules bound it.
const (
	maxSimDays         = 62
	maxSimRules        = 100
	simStepsPerDay     = 24 * 60
	simControllerRules = 75
	// maxSimWork bounds days × simStepsPerDay × (rules + simControllerRules)
	// of a run with a budget: a 31-day month of 100 rules, about half a
	// CPU-second (docs/RELIABILITY.md).
	maxSimWork = 31 * simStepsPerDay * (maxSimRules + simControllerRules)
)

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
	res, err := simulate(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out := &pb.SimulateCostResponse{
		StartTime:         timestamppb.New(res.Start),
		Requests:          int64(res.Requests),
		Traces:            int64(res.Traces),
		TracesPerDay:      int64(res.TracesPerDay),
		CostMicros:        budget.Micros(res.Cost),
		MonthlyCostMicros: budget.Micros(res.MonthlyCost),
		CurrencyCode:      res.Currency,
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
		out.BudgetOutcome = o
	}
	return out, nil
}

func alertKind(name string) budget.AlertKind {
	for k := budget.AlertSpend; k <= budget.AlertExhausted; k++ {
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
	if len(req.GetRules()) > maxSimRules {
		add("rules", fmt.Sprintf("at most %d rules", maxSimRules))
	}
	for i, p := range req.GetRules() {
		r := apiconv.RuleFromProto(p).Normalize()
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
	if cfg.Budget != nil && len(vs) == 0 {
		days, nRules := cfg.Days, max(len(cfg.Rules), 1) // the defaults: 30 days, the Default rule
		if days == 0 {
			days = 30
		}
		if work := days * simStepsPerDay * (nRules + simControllerRules); work > maxSimWork {
			add("traffic.days", fmt.Sprintf("with a budget, days × %d steps × (rules + %d for the controller) must be at most %d "+
				"(a 31-day month of %d rules), got %d × %d × (%d + %d) = %d: simulate fewer days or rules",
				simStepsPerDay, simControllerRules, maxSimWork, maxSimRules, days, simStepsPerDay, nRules, simControllerRules, work))
		}
	}
	if len(vs) > 0 {
		return cfg, &rules.ValidationError{Violations: vs}
	}
	return cfg, nil
}
