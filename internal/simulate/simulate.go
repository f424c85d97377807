// Package simulate is the transport-neutral core of a cost simulation asked
// of the server (the API's SimulateCost): the request in domain types, its
// checks (every bad field named by the API's path), the bounds on one
// request's work, the controller interval that keeps a run within them, and
// how many simulations a replica runs at once. It runs the fast model
// (budget.Simulate) or the fleet model (fleetsim.Run).
//
// The CLI's `controlplane simulate` runs on its user's own machine, with
// the longer runs and the controller interval its flags allow, so it checks
// its flags itself and calls the models directly.
package simulate

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/fleetsim"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Request is a simulation as the API asks for it.
type Request struct {
	Traffic Traffic
	// Rules to simulate; none: the Default rule alone.
	Rules []rules.Rule
	// Budget, if set, runs the controller over the month; its name may be
	// empty.
	Budget *budget.Budget
	// Fleet, if set, runs the fleet model instead of the fast one.
	Fleet *Fleet
}

// Traffic is the simulated traffic's shape.
type Traffic struct {
	RequestsPerDay float64
	// Days of the run; 0: 30.
	Days       int
	DailySwing float64
	// SpikeDays: day of the run (from 1) → factor.
	SpikeDays map[int]float64
	Growth    float64
	// RuleShares: rule name → weight; none: even shares.
	RuleShares map[string]float64
}

// Fleet is the fleet model's part of a request. A transport decodes a value
// it was sent but cannot read (a malformed duration or time) as one every
// bound refuses (a negative duration, the zero Unix time), so that the field
// is named with the request's other problems.
type Fleet struct {
	Instances    int
	Zipf         float64
	ServiceNames []string
	// ReportInterval: 0, a minute.
	ReportInterval time.Duration
	// Duration, if not 0, is the run's length instead of the traffic's days.
	Duration time.Duration
	// Start: the zero time, the simulator's default.
	Start time.Time
	Seed  uint64
}

// Result is a simulation's outcome.
type Result struct {
	budget.SimResult
	// MonthlyAmountMicros is the simulated budget's amount, exact; 0
	// without a budget.
	MonthlyAmountMicros int64
}

// A request's work is bounded, and how many run at once. A simulated day
// is 1,440 / interval minutes steps; each step runs every rule and, with a
// budget, the controller: its forecast, and a plan of every rule in scope
// (BenchmarkSimulate in internal/budget). Measured in the cost of one
// rule's plan in one step, the controller costs about ControllerCost more
// per step. A run without a budget costs far less per rule and step, so
// MaxDays and MaxRules bound it; with one, the controller decides every
// minute when days × steps × (rules + ControllerCost) stays within MaxWork,
// else at the first of intervals that does: the largest run allowed, 62
// days of 100 rules, decides every 12 minutes.
const (
	MaxDays        = 62
	MaxRules       = 100
	ControllerCost = 9
	// MaxWork is about 0.6 CPU-second here (docs/RELIABILITY.md).
	MaxWork = 900_000
)

// The fleet model's bounds: its work is about 10-20 µs of CPU per report
// (instances × intervals), so MaxFleetReports keeps a run within a
// CPU-second or two: a 31-day month of two instances reporting every
// minute, or ten minutes of 1,000 instances every 10 s.
const (
	MaxFleetReports       = 100_000
	MaxFleetServices      = 100
	MaxFleetDuration      = MaxDays * 24 * time.Hour
	MinReportInterval     = time.Second
	MaxReportInterval     = time.Minute
	DefaultReportInterval = time.Minute
)

// intervals are the controller intervals a run may use, shortest first;
// each divides an hour.
var intervals = []time.Duration{
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute, 6 * time.Minute,
	10 * time.Minute, 12 * time.Minute, 15 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour,
}

// Interval is the shortest controller interval at which a run of days and
// rules under a budget fits in MaxWork.
func Interval(days, rules int) time.Duration {
	for _, iv := range intervals {
		steps := days * int(24*time.Hour/iv)
		if steps*(rules+ControllerCost) <= MaxWork {
			return iv
		}
	}
	return intervals[len(intervals)-1]
}

// MaxRunning is how many simulations a replica runs at once: half its
// cores, at least one, so that simulations never take every core from the
// sampling traffic.
func MaxRunning() int32 { return int32(max(1, runtime.GOMAXPROCS(0)/2)) }

// ErrBusy refuses a simulation while MaxRunning run: to be retried later.
var ErrBusy = errors.New("busy")

// Simulator runs the simulations of one replica, at most MaxRunning at
// once. The zero value is ready to use.
type Simulator struct {
	running atomic.Int32
	// fast runs the fast model; nil is budget.Simulate. Tests replace it.
	fast func(context.Context, budget.SimConfig) (budget.SimResult, error)
}

// Run checks req (a *rules.ValidationError names every bad field), waits
// for no other simulation (ErrBusy if MaxRunning run) and runs it until it
// ends or ctx does.
func (s *Simulator) Run(ctx context.Context, req *Request) (Result, error) {
	cfg, err := Check(req)
	if err != nil {
		return Result{}, err
	}
	limit := MaxRunning()
	if s.running.Add(1) > limit {
		s.running.Add(-1)
		return Result{}, fmt.Errorf("%d cost simulations are running, as many as this replica runs at once: %w", limit, ErrBusy)
	}
	defer s.running.Add(-1)
	var res budget.SimResult
	if req.Fleet != nil {
		fc, ferr := checkFleet(req.Fleet, cfg)
		if ferr != nil {
			return Result{}, ferr
		}
		res, err = fleetsim.Run(ctx, fc)
		if errors.Is(err, fleetsim.ErrConfig) {
			// What checkFleet cannot see alone: a rule with traffic that
			// no instance's service runs.
			return Result{}, violations([]rules.FieldViolation{{Field: "fleet.service_names", Description: err.Error()}})
		}
	} else {
		fast := s.fast
		if fast == nil {
			fast = budget.Simulate
		}
		res, err = fast(ctx, cfg)
	}
	if err != nil {
		return Result{}, err
	}
	out := Result{SimResult: res}
	if cfg.Budget != nil {
		out.MonthlyAmountMicros = cfg.Budget.MonthlyAmountMicros
	}
	return out, nil
}

// violations is vs as an error.
func violations(vs []rules.FieldViolation) error {
	return &rules.ValidationError{Violations: vs}
}

// appendPrefixed appends err's violations to vs, each field prefixed: a
// rule's "fixed_rate" is the request's "rules[0].fixed_rate".
func appendPrefixed(vs []rules.FieldViolation, prefix string, err error) []rules.FieldViolation {
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		return append(vs, rules.FieldViolation{Field: prefix[:len(prefix)-1], Description: err.Error()})
	}
	for _, v := range ve.Violations {
		vs = append(vs, rules.FieldViolation{Field: prefix + v.Field, Description: v.Description})
	}
	return vs
}

// Check checks a request and turns it into the fast model's configuration,
// with the controller interval that keeps it within MaxWork; every bad
// field is reported. The fleet model's part is checked by Run.
func Check(req *Request) (budget.SimConfig, error) {
	var vs []rules.FieldViolation
	add := func(field, desc string) { vs = append(vs, rules.FieldViolation{Field: field, Description: desc}) }
	tr := &req.Traffic
	cfg := budget.SimConfig{
		RequestsPerDay: tr.RequestsPerDay,
		Days:           tr.Days,
		DailySwing:     tr.DailySwing,
		Growth:         tr.Growth,
	}
	if !(cfg.RequestsPerDay > 0) || cfg.RequestsPerDay > 1e13 {
		add("traffic.requests_per_day", "must be positive")
	}
	if cfg.Days < 0 || cfg.Days > MaxDays {
		add("traffic.days", fmt.Sprintf("between 1 and %d (0: 30)", MaxDays))
	}
	if !(cfg.DailySwing >= 0 && cfg.DailySwing <= 1) {
		add("traffic.daily_swing", "between 0 and 1")
	}
	for day, f := range tr.SpikeDays {
		if day < 1 || day > max(cfg.Days, 30) || !(f >= 0 && f <= 1000) {
			add(fmt.Sprintf("traffic.spike_days[%d]", day), "a day of the run and a factor between 0 and 1000")
			continue
		}
		if cfg.SpikeDays == nil {
			cfg.SpikeDays = map[int]float64{}
		}
		cfg.SpikeDays[day] = f
	}
	if !(cfg.Growth >= 0 && cfg.Growth <= 1000) {
		add("traffic.growth", "between 0 and 1000")
	}
	if len(req.Rules) > MaxRules {
		add("rules", fmt.Sprintf("at most %d rules", MaxRules))
	}
	for i := range req.Rules {
		r := req.Rules[i].Normalize()
		if err := rules.Validate(&r); err != nil {
			vs = appendPrefixed(vs, fmt.Sprintf("rules[%d].", i), err)
			continue
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	if req.Budget != nil {
		b := *req.Budget
		if b.Name == "" {
			b.Name = "simulated"
		}
		b = b.Normalize()
		if err := budget.Validate(&b); err != nil {
			vs = appendPrefixed(vs, "budget.", err)
		}
		cfg.Budget = &b
	}
	if len(tr.RuleShares) > 0 {
		cfg.Shares = make(map[string]float64, len(tr.RuleShares))
		for name, w := range tr.RuleShares {
			field := fmt.Sprintf("traffic.rule_shares[%q]", name)
			switch {
			case !slices.ContainsFunc(cfg.Rules, func(r rules.Rule) bool { return r.Name == name }) &&
				!(len(req.Rules) == 0 && name == rules.DefaultName):
				add(field, "names no rule of the request")
			case !(w >= 0 && w <= 1e6):
				add(field, "a weight between 0 and 1e6")
			default:
				cfg.Shares[name] = w
			}
		}
	}
	if cfg.Budget != nil && len(vs) == 0 {
		cfg.Interval = Interval(runDays(cfg.Days), max(len(cfg.Rules), 1)) // none: the Default rule
	}
	if len(vs) > 0 {
		return cfg, violations(vs)
	}
	return cfg, nil
}

// runDays is how many days a run of days lasts: 0 is the simulator's 30.
func runDays(days int) int {
	if days == 0 {
		return 30
	}
	return days
}

// checkFleet checks a request's fleet model; cfg is its checked traffic,
// rules and budget.
func checkFleet(f *Fleet, cfg budget.SimConfig) (fleetsim.Config, error) {
	var vs []rules.FieldViolation
	add := func(field, desc string) { vs = append(vs, rules.FieldViolation{Field: field, Description: desc}) }
	fc := fleetsim.Config{SimConfig: cfg, Instances: f.Instances, Zipf: f.Zipf, Services: f.ServiceNames, Seed: f.Seed, Duration: f.Duration}
	if fc.Instances < 1 || fc.Instances > fleetsim.MaxInstances {
		add("fleet.instances", fmt.Sprintf("between 1 and %d", fleetsim.MaxInstances))
	}
	if !(fc.Zipf >= 0 && fc.Zipf <= 10) {
		add("fleet.zipf", "between 0 and 10")
	}
	if len(fc.Services) > MaxFleetServices {
		add("fleet.service_names", fmt.Sprintf("at most %d", MaxFleetServices))
	}
	for i, svc := range fc.Services {
		if svc == "" || utf8.RuneCountInString(svc) > rules.MaxServiceNameLen || !utf8.ValidString(svc) {
			add(fmt.Sprintf("fleet.service_names[%d]", i), fmt.Sprintf("1-%d characters of UTF-8", rules.MaxServiceNameLen))
		}
	}
	fc.Interval = DefaultReportInterval
	if f.ReportInterval != 0 {
		fc.Interval = f.ReportInterval
		if fc.Interval < MinReportInterval || fc.Interval > MaxReportInterval {
			add("fleet.report_interval", fmt.Sprintf("from %v to %v", MinReportInterval, MaxReportInterval))
		}
	}
	if fc.Duration < 0 || fc.Duration > MaxFleetDuration {
		add("fleet.duration", fmt.Sprintf("positive, at most %d days", MaxDays))
	}
	if !f.Start.IsZero() {
		if f.Start.Year() < 2000 || f.Start.Year() > 9000 {
			add("fleet.start_time", "a time from the year 2000 to 9000")
		}
		fc.Start = f.Start
	}
	if len(vs) == 0 {
		length := fc.Duration
		if length == 0 {
			length = time.Duration(runDays(cfg.Days)) * 24 * time.Hour
		}
		if n := float64(fc.Instances) * length.Seconds() / fc.Interval.Seconds(); n > MaxFleetReports {
			add("fleet", fmt.Sprintf("%d instances reporting every %v for %v make %.3g reports, over the limit of %d: fewer instances, a longer interval or a shorter run",
				fc.Instances, fc.Interval, length, n, MaxFleetReports))
		}
	}
	if len(vs) > 0 {
		return fc, violations(vs)
	}
	return fc, nil
}
