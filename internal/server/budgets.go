package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/secrets"
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
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
	History(ctx context.Context, budgetName string, month time.Time) ([]budget.HistoryPoint, error)
	Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error)
}

// BudgetDecider decides one budget, as stored, and stores its decision.
type BudgetDecider interface {
	DecideBudget(ctx context.Context, b budget.Budget) error
}

type budgetService struct {
	pb.UnimplementedBudgetServiceServer
	store    BudgetStore
	catalog  *catalog.Catalog
	stopping <-chan struct{}
	// egress decides which webhook URLs a budget may have; box seals
	// webhook secrets at rest (nil: stored as given).
	egress *budget.Egress
	box    *secrets.Box
	log    *slog.Logger
	// decider, if set, decides a budget created or changed at once.
	decider BudgetDecider
	// now is the clock; nil is time.Now.
	now func() time.Time
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
	stored, err := s.checkEdit(ctx, b)
	if err != nil {
		return nil, err
	}
	stored.UID = newUID()
	created, err := s.store.CreateBudget(ctx, stored)
	if err != nil {
		return nil, err
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

// checkEdit checks a budget as it will be stored by a create or update:
// its fields, its webhooks' addresses (budget.ValidateWebhooks), and that
// the caller's principal may edit budgets for its services. It returns the
// budget to store: secrets sealed, and the principal as its last editor.
func (s *budgetService) checkEdit(ctx context.Context, b budget.Budget) (budget.Budget, error) {
	if err := budget.Validate(&b); err != nil {
		return budget.Budget{}, prefixFields("budget.", err)
	}
	if err := budget.ValidateWebhooks(&b, s.egress); err != nil {
		return budget.Budget{}, prefixFields("budget.", err)
	}
	if err := auth.CheckScope(ctx, budgetGlobs(b.Scope.Services)...); err != nil {
		return budget.Budget{}, fmt.Errorf("budget %q: scope.service_names: %w", b.Name, err)
	}
	b.UpdatedBy = auth.Actor(ctx)
	return budget.SealSecrets(b, s.box)
}

// budgetGlobs are the service globs a budget's scope edits: one without
// services covers every service ("").
func budgetGlobs(services []string) []string {
	if len(services) == 0 {
		return []string{""}
	}
	return services
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
	"rule_priorities", "coverage_minutes", "retrieved_price_per_million_micros", "retrievals_per_trace",
	"span_price_per_million_micros", "spans_per_trace", "burn_rate_thresholds",
}

// newUID names a budget's incarnation: 64 random bits.
func newUID() string { return fmt.Sprintf("%016x", rand.Uint64()) }

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
		// The principal must be allowed the budget as it is, too: a team
		// may not take over another's budget by narrowing its scope.
		if err := auth.CheckScope(ctx, budgetGlobs(cur.Scope.Services)...); err != nil {
			return nil, fmt.Errorf("update budget %q: %w", cur.Name, err)
		}
		if wantRev != 0 && cur.Revision != wantRev {
			return nil, fmt.Errorf("budget %q has etag %q, not %q: %w", cur.Name, cur.Etag(), in.GetEtag(), store.ErrConflict)
		}
		// Secrets kept from the stored budget are checked and sealed again
		// as the client's new ones are (a key may have been configured since).
		open, err := budget.OpenSecrets(cur, s.box)
		if err != nil {
			return nil, err
		}
		next, err := s.checkEdit(ctx, applyBudgetMask(open, patch, paths).Normalize())
		if err != nil {
			return nil, err
		}
		if budget.MoneyChanged(&cur, &next) {
			next.Generation = cur.Generation + 1 // alerts are due again at the new amount
		}
		updated, err := s.store.UpdateBudget(ctx, next, cur.Revision)
		if errors.Is(err, store.ErrConflict) && wantRev == 0 && attempt < edit.UpdateRetries {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.decide(ctx, updated)
		s.log.InfoContext(ctx, "budget updated", "budget", updated.Name, "actor", updated.UpdatedBy)
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
		case "rule_priorities":
			next.Priorities = patch.Priorities
		case "coverage_minutes":
			next.CoverageMinutes = patch.CoverageMinutes
		case "retrieved_price_per_million_micros":
			next.RetrievedPricePerMillionMicros = patch.RetrievedPricePerMillionMicros
		case "retrievals_per_trace":
			next.RetrievalsPerTrace = patch.RetrievalsPerTrace
		case "span_price_per_million_micros":
			next.SpanPricePerMillionMicros = patch.SpanPricePerMillionMicros
		case "spans_per_trace":
			next.SpansPerTrace = patch.SpansPerTrace
		case "burn_rate_thresholds":
			next.BurnRateThresholds = patch.BurnRateThresholds
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
	// Read, check the principal's scope, and delete only the revision
	// checked, as rules are deleted (edit.Rules.Delete).
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Budget(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		if err := auth.CheckScope(ctx, budgetGlobs(cur.Scope.Services)...); err != nil {
			return nil, fmt.Errorf("delete budget %q: %w", cur.Name, err)
		}
		if rev != 0 && cur.Revision != rev {
			return nil, fmt.Errorf("budget %q has etag %q, not %q: %w", cur.Name, cur.Etag(), req.GetEtag(), store.ErrConflict)
		}
		err = s.store.DeleteBudget(ctx, cur.Name, cur.Revision)
		if rev == 0 && attempt < edit.UpdateRetries && (errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.catalog.Kick()
		s.log.InfoContext(ctx, "budget deleted", "budget", cur.Name, "actor", auth.Actor(ctx))
		return &pb.DeleteBudgetResponse{}, nil
	}
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

func (s *budgetService) GetBudgetHistory(ctx context.Context, req *pb.GetBudgetHistoryRequest) (*pb.GetBudgetHistoryResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	now := time.Now()
	if s.now != nil {
		now = s.now()
	}
	month := budget.MonthStart(now)
	if req.GetMonthTime() != nil {
		if err := req.GetMonthTime().CheckValid(); err != nil {
			return nil, invalid("month_time", err.Error())
		}
		month = budget.MonthStart(req.GetMonthTime().AsTime())
		if month.After(now) {
			return nil, invalid("month_time", fmt.Sprintf("the month of %s has not begun", month.Format("2006-01")))
		}
	}
	b, err := s.store.Budget(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	u, err := s.store.Usage(ctx, b.Name, month)
	if err != nil {
		return nil, err
	}
	points, err := s.store.History(ctx, b.Name, month)
	if err != nil {
		return nil, err
	}
	return apiconv.HistoryToProto(&b, &u, points, now), nil
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
	res, err := simulate(ctx, cfg)
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
	return out, nil
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
