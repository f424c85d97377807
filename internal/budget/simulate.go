package budget

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// SimConfig describes a simulated month: the rules, the traffic, and
// optionally a budget over them.
type SimConfig struct {
	// Rules to simulate; empty means the Default rule alone.
	Rules []rules.Rule
	// Shares splits the traffic among the rules: rule name → weight. Every
	// request is counted once, by the one rule it matched, so the shares
	// say which rule matches how much. Rules not named get no traffic; nil
	// or all-zero splits the traffic evenly.
	Shares map[string]float64
	// RequestsPerDay is the mean traffic, requests per day.
	RequestsPerDay float64
	// Days to simulate; default 30.
	Days int
	// DailySwing is the amplitude of the daily cycle around the mean: 0.6
	// is ±60 %. The rate is mean × (1 − swing × cos(2π × time of day)),
	// lowest at 00:00 UTC and highest at 12:00 UTC, the mean of each day
	// unchanged. Clamped to [0, 1].
	DailySwing float64
	// SpikeDays multiplies the whole traffic of a day: day (1-based, from
	// Start) → factor.
	SpikeDays map[int]float64
	// Growth is how many times the traffic grows over the run, evenly per
	// day (3: the last day has 3 times the first's, +3.7 % a day over 30
	// days); 0 or 1: no growth. The mean of the first day is
	// RequestsPerDay.
	Growth float64
	// Budget runs the controller (Decide and DueAlerts) over the month;
	// nil prices the traffic alone. Its scope's rule labels select the
	// rules it covers; its service globs are ignored, the simulated
	// traffic having no services.
	Budget *Budget
	// PricePerMillionMicros prices traces without a budget; default 5.00. With a
	// budget, the budget's price of a recorded trace is used (retrievals
	// and spans included).
	PricePerMillionMicros int64
	// Interval is the controller's interval, and the simulation's step;
	// default 1 minute; at most 1 hour. An interval that does not divide an
	// hour puts each step's traffic in the hour the step starts in.
	Interval time.Duration
	// Start is the virtual clock's start; default 2026-11-01 00:00 UTC. The
	// budget's month is the calendar month (UTC) as on the server: a run
	// that crosses into the next month starts that month afresh, with
	// nothing spent (see SimBudget).
	Start time.Time
}

// DefaultSimStart is where a simulation starts unless told: the start of a
// 30-day month.
func DefaultSimStart() time.Time { return time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC) }

// SimResult is what a simulated month cost, and, with a budget, how the
// budget fared. Money is in the budget's currency (USD without one).
type SimResult struct {
	Start           time.Time `json:"start"`
	Days            int       `json:"days"`
	IntervalSeconds float64   `json:"interval_seconds"`
	Requests        float64   `json:"requests"`
	// Traces is what was recorded, at the factors the budget decided.
	Traces       float64 `json:"traces"`
	TracesPerDay float64 `json:"traces_per_day"`
	// Cost is the traces at the price per million, before any free
	// allowance.
	Cost float64 `json:"cost"`
	// MonthlyCost is the cost of a 30-day month at the run's daily mean.
	MonthlyCost float64 `json:"monthly_cost"`
	Currency    string  `json:"currency"`
	// UnenforcedTraces and UnenforcedCost are the same traffic at the rules'
	// own rates, as if there were no budget.
	UnenforcedTraces float64 `json:"unenforced_traces"`
	UnenforcedCost   float64 `json:"unenforced_cost"`
	// With a budget.
	*SimBudget
	// Fleet is set by the fleet model (package fleetsim), which runs the
	// server's pipeline with virtual SDK instances: how they sampled.
	Fleet *SimFleet `json:"fleet,omitempty"`
}

// SimFleet is what the virtual SDK instances of a fleet simulation did.
// Traces are what they sampled (SimResult.Traces is their sum); the
// budget's spend is what the server counted of their reports.
type SimFleet struct {
	Instances       int     `json:"instances"`
	Services        int     `json:"services"`
	Reports         int64   `json:"reports"`
	Decisions       int64   `json:"decisions"`
	ReservoirTraces float64 `json:"reservoir_traces"`
	BorrowedTraces  float64 `json:"borrowed_traces"`
	FixedRateTraces float64 `json:"fixed_rate_traces"`
	// Seconds is the virtual time simulated (Days may round it up).
	Seconds float64 `json:"seconds"`
}

// SimBudget is how a budget fared in a simulation. When the run spans more
// than one calendar month, each month is a budget month of its own; Months
// lists them and the top-level figures are those of the month that came
// closest to its cap (the maxima and minima are over the whole run).
type SimBudget struct {
	// MonthlyAmount is the budget's cap.
	MonthlyAmount float64 `json:"monthly_amount"`
	Mode          string  `json:"mode"`
	CapTraces     float64 `json:"cap_traces"`
	// Spent is money, SpentTraces traces, SpentRatio Spent over the cap.
	Spent       float64 `json:"spent"`
	SpentTraces float64 `json:"spent_traces"`
	SpentRatio  float64 `json:"spent_ratio"`
	// MaxForecastRatio is the highest month-end forecast at factors 1 over
	// the cap (what the traffic would have cost); MaxEnforcedForecastRatio
	// the highest at the factors decided.
	MaxForecastRatio         float64 `json:"max_forecast_ratio"`
	MaxEnforcedForecastRatio float64 `json:"max_enforced_forecast_ratio"`
	// MinFixedRateFactor is the lowest fixed-rate factor decided, and
	// MinReservoirFactor the lowest reservoir factor (1: never lowered).
	MinFixedRateFactor float64 `json:"min_fixed_rate_factor"`
	MinReservoirFactor float64 `json:"min_reservoir_factor"`
	Exhausted          bool    `json:"exhausted"`
	// Alerts fired, each once per month, kind and threshold.
	Alerts []SimAlert `json:"alerts"`
	// SpendCrossings are when the spend reached each spend threshold, as
	// the simulation (not the alerting) saw it.
	SpendCrossings []SimCrossing `json:"spend_crossings"`
	Months         []SimMonth    `json:"months,omitempty"`
	// Rules is how each rule in scope fared, by name.
	Rules []SimRule `json:"rules"`
}

// Note folds a decision into the extremes the result reports: the forecasts
// against capT (traces; 0: no cap), the lowest factors, exhaustion, and in
// ranges each rule's lowest and highest fixed-rate factor and lowest
// reservoir factor (a rule never cut has none). Both simulator models
// report through it.
func (sb *SimBudget) Note(d *Decision, capT float64, ranges map[string]*[3]float64) {
	if capT > 0 {
		sb.MaxForecastRatio = math.Max(sb.MaxForecastRatio, d.ForecastUnenforced/capT)
		sb.MaxEnforcedForecastRatio = math.Max(sb.MaxEnforcedForecastRatio, d.Forecast/capT)
	}
	sb.MinFixedRateFactor = math.Min(sb.MinFixedRateFactor, d.FixedRateFactor)
	sb.MinReservoirFactor = math.Min(sb.MinReservoirFactor, d.ReservoirFactor)
	sb.Exhausted = sb.Exhausted || d.Exhausted
	for _, p := range d.Rules {
		x := ranges[p.Name]
		if x == nil {
			if p.FixedRateFactor == 1 && p.ReservoirFactor == 1 {
				continue
			}
			x = &[3]float64{1, 0, 1}
			ranges[p.Name] = x
		}
		x[0] = math.Min(x[0], p.FixedRateFactor)
		x[1] = math.Max(x[1], p.FixedRateFactor)
		x[2] = math.Min(x[2], p.ReservoirFactor)
	}
}

// SimRule is how one rule in a budget's scope fared over the run.
type SimRule struct {
	Name     string `json:"name"`
	Priority int32  `json:"priority"`
	// Traces it recorded, and would have at its own rates.
	Traces           float64 `json:"traces"`
	UnenforcedTraces float64 `json:"unenforced_traces"`
	// The lowest and highest fixed-rate factor decided for it once
	// enforcement first lowered one of its rates (1 and 1: never), and the
	// lowest reservoir factor.
	MinFixedRateFactor float64 `json:"min_fixed_rate_factor"`
	MaxFixedRateFactor float64 `json:"max_fixed_rate_factor"`
	MinReservoirFactor float64 `json:"min_reservoir_factor"`
}

// SimAlert is an alert at its simulated time. Spent and Forecast are money.
type SimAlert struct {
	Kind      string    `json:"kind"`
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
	AtHours   float64   `json:"at_hours"` // since Start
	Spent     float64   `json:"spent"`
	Forecast  float64   `json:"forecast"`
	Message   string    `json:"message"`
}

// SimCrossing is when the spend first reached a share of the cap.
type SimCrossing struct {
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
	AtHours   float64   `json:"at_hours"`
}

// SimMonth is one calendar month of a run that spans several.
type SimMonth struct {
	Month       string  `json:"month"` // "2026-11"
	Spent       float64 `json:"spent"`
	SpentTraces float64 `json:"spent_traces"`
	SpentRatio  float64 `json:"spent_ratio"`
}

// simRule is a rule as the simulation runs it.
type simRule struct {
	rule    rules.Rule
	share   float64
	inScope bool
	model   int // index in the budget's models (and its decisions' Rules)

	traces, unenforced float64
}

// Simulate runs a month of traffic through the rules on a virtual clock.
// With a budget it runs the controller exactly as the server does: each
// interval the traffic of the interval is sampled at the factors in force
// (per rule, min(requests, g × reservoir × seconds) traced by the reservoir,
// then f × fixed rate of the rest), added to the budget's Usage by hour and
// rule, then Decide sets the factors for the next interval and DueAlerts'
// alerts fire once each. Traffic and sampling are expected values, not
// random draws, so a run is exactly repeatable. It stops with ctx's error
// when ctx ends (checked every simulated hour).
func Simulate(ctx context.Context, cfg SimConfig) (SimResult, error) {
	cfg = cfg.withDefaults()
	var b *Budget
	price := Units(cfg.PricePerMillionMicros)
	currency := DefaultCurrency
	if cfg.Budget != nil {
		nb := cfg.Budget.Normalize()
		if nb.Name == "" {
			nb.Name = "simulated"
		}
		b = &nb
		price, currency = nb.PricePerMillion(), nb.Currency
	}

	sim := make([]simRule, len(cfg.Rules))
	var totalShare float64
	for i, r := range cfg.Rules {
		sim[i].rule = r.Normalize()
		if cfg.Shares != nil {
			sim[i].share = clean(cfg.Shares[r.Name])
		}
		totalShare += sim[i].share
	}
	var models []RuleModel
	for i := range sim {
		if totalShare > 0 {
			sim[i].share /= totalShare
		} else {
			sim[i].share = 1 / float64(len(sim))
		}
		if b != nil {
			sim[i].inScope = Scope{RuleLabels: b.Scope.RuleLabels}.Covers("", &sim[i].rule)
			if sim[i].inScope {
				sim[i].model = len(models)
				models = append(models, RuleModel{
					Name:      sim[i].rule.Name,
					FixedRate: sim[i].rule.FixedRate,
					Reservoir: float64(sim[i].rule.ReservoirSize),
					Labels:    sim[i].rule.Labels,
				})
			}
		}
	}

	start := cfg.Start
	end := start.Add(time.Duration(cfg.Days) * 24 * time.Hour)
	res := SimResult{
		Start:           start,
		Days:            cfg.Days,
		IntervalSeconds: cfg.Interval.Seconds(),
		Currency:        currency,
	}
	var run *simRun
	if b != nil {
		run = newSimRun(b, models, start, cfg.Interval)
		res.SimBudget = run.result
	}
	meanRate := clean(cfg.RequestsPerDay) / 86400
	for t, hour := start, start; t.Before(end); {
		if !t.Before(hour) {
			if err := ctx.Err(); err != nil {
				return SimResult{}, fmt.Errorf("simulate: %w", err)
			}
			hour = t.Add(time.Hour)
		}
		next := t.Add(cfg.Interval)
		if next.After(end) {
			next = end
		}
		secs := next.Sub(t).Seconds()
		mid := t.Add(next.Sub(t) / 2)
		rate := meanRate * cfg.shape(mid) * cfg.spike(int(t.Sub(start)/(24*time.Hour))+1) * cfg.growth(mid.Sub(start))
		if run != nil {
			run.beginStep(t)
		}
		for i := range sim {
			sr := &sim[i]
			req := rate * sr.share * secs
			fixed, resv := sr.rule.FixedRate, float64(sr.rule.ReservoirSize)
			unenforced := sampleTraces(req, secs, fixed, resv)
			traces := unenforced
			if run != nil && sr.inScope {
				f, g := run.factors(sr.model)
				traces = sampleTraces(req, secs, fixed*f, resv*g)
				run.add(sr.rule.Name, req, traces)
				sr.traces += traces
				sr.unenforced += unenforced
			}
			res.Requests += req
			res.Traces += traces
			res.UnenforcedTraces += unenforced
		}
		if run != nil {
			run.endStep(next)
		}
		t = next
	}
	if run != nil {
		run.finish()
		for _, sr := range sim {
			if sr.inScope {
				x := run.ruleFactors[sr.rule.Name]
				if x == nil {
					x = &[3]float64{1, 1, 1}
				}
				run.result.Rules = append(run.result.Rules, SimRule{
					Name: sr.rule.Name, Priority: b.Priority(sr.rule.Name, sr.rule.Labels),
					Traces: math.Round(sr.traces), UnenforcedTraces: math.Round(sr.unenforced),
					MinFixedRateFactor: x[0], MaxFixedRateFactor: x[1], MinReservoirFactor: x[2],
				})
			}
		}
		slices.SortFunc(run.result.Rules, func(a, b SimRule) int { return strings.Compare(a.Name, b.Name) })
	}
	// Whole requests and traces, money in cents: the sums of a month of
	// fractional expected values would otherwise print as 8499999999.999923.
	RoundResult(&res, cfg.Days)
	res.Cost = cents(res.Traces / 1e6 * price)
	res.MonthlyCost = cents(res.Traces / 1e6 * price / float64(cfg.Days) * 30)
	res.UnenforcedCost = cents(res.UnenforcedTraces / 1e6 * price)
	return res, nil
}

func cents(x float64) float64 { return math.Round(x*100) / 100 }

// sampleTraces is the expected traces of req requests over secs seconds
// under one rule: the reservoir first, then the fixed rate.
func sampleTraces(req, secs, fixedRate, reservoir float64) float64 {
	r := math.Min(req, reservoir*secs)
	return r + fixedRate*(req-r)
}

// WithDefaults returns cfg with the defaults Simulate takes.
func (cfg SimConfig) WithDefaults() SimConfig { return cfg.withDefaults() }

// RequestRate is the traffic's requests per second at t: the mean, times
// the daily cycle, the spike of t's day and the growth since Start. cfg
// must have its defaults (WithDefaults). The fleet model draws its
// traffic from it, so that both models run the same traffic.
func (cfg *SimConfig) RequestRate(t time.Time) float64 {
	return clean(cfg.RequestsPerDay) / 86400 * cfg.shape(t) * cfg.spike(int(t.Sub(cfg.Start)/(24*time.Hour))+1) * cfg.growth(t.Sub(cfg.Start))
}

// RoundResult rounds a result's sums as Simulate prints them: whole
// requests and traces, money in cents.
func RoundResult(res *SimResult, days int) {
	res.Requests = math.Round(res.Requests)
	res.Traces = math.Round(res.Traces)
	res.UnenforcedTraces = math.Round(res.UnenforcedTraces)
	if days > 0 {
		res.TracesPerDay = math.Round(res.Traces / float64(days))
	}
	if sb := res.SimBudget; sb != nil {
		sb.Spent = cents(sb.Spent)
		sb.SpentTraces = math.Round(sb.SpentTraces)
		for i := range sb.Alerts {
			sb.Alerts[i].Spent = cents(sb.Alerts[i].Spent)
			sb.Alerts[i].Forecast = cents(sb.Alerts[i].Forecast)
		}
		for i := range sb.Months {
			sb.Months[i].Spent = cents(sb.Months[i].Spent)
			sb.Months[i].SpentTraces = math.Round(sb.Months[i].SpentTraces)
		}
	}
}

func (cfg SimConfig) withDefaults() SimConfig {
	if len(cfg.Rules) == 0 {
		cfg.Rules = []rules.Rule{rules.Default()}
	}
	if cfg.Days <= 0 {
		cfg.Days = 30
	}
	cfg.DailySwing = clamp01(cfg.DailySwing)
	if cfg.PricePerMillionMicros <= 0 {
		cfg.PricePerMillionMicros = DefaultPricePerMillionMicros
	}
	switch {
	case cfg.Interval <= 0:
		cfg.Interval = time.Minute
	case cfg.Interval > time.Hour:
		cfg.Interval = time.Hour
	}
	if cfg.Start.IsZero() {
		cfg.Start = DefaultSimStart()
	}
	cfg.Start = cfg.Start.UTC()
	return cfg
}

// shape is the daily cycle's multiplier of the mean rate at t.
func (cfg *SimConfig) shape(t time.Time) float64 {
	y, m, d := t.Date()
	day := t.Sub(time.Date(y, m, d, 0, 0, 0, 0, time.UTC)).Seconds() / 86400
	return 1 - cfg.DailySwing*math.Cos(2*math.Pi*day)
}

// growth is the multiplier of the traffic at d into the run.
func (cfg *SimConfig) growth(d time.Duration) float64 {
	if !(cfg.Growth > 0) || cfg.Growth == 1 || math.IsInf(cfg.Growth, 0) || cfg.Days <= 1 {
		return 1
	}
	return math.Pow(cfg.Growth, d.Hours()/24/float64(cfg.Days-1))
}

// spike is the multiplier of day (1-based).
func (cfg *SimConfig) spike(day int) float64 {
	if f, ok := cfg.SpikeDays[day]; ok && f >= 0 && !math.IsInf(f, 0) {
		return f
	}
	return 1
}

// alertKey is what Alert.DedupKey says, for one budget.
type alertKey struct {
	month     time.Time
	kind      AlertKind
	threshold float64
	episode   string
}

// simRun is the controller's side of a simulation: the budget's usage as
// the server keeps it, the decision in force, and what the result records.
type simRun struct {
	b        *Budget
	models   []RuleModel
	start    time.Time
	interval time.Duration
	capT     float64

	usage     Usage
	ruleTotal map[string]*[2]float64 // requests, sampled
	stepHour  int                    // hour of the month the step is in
	decision  Decision
	cache     shareCache
	fired     map[alertKey]bool
	crossed   map[float64]bool
	// ruleFactors are each rule's lowest and highest fixed-rate factor and
	// lowest reservoir factor, from the first decision that lowered one of
	// its rates.
	ruleFactors map[string]*[3]float64
	months      []SimMonth
	result      *SimBudget
}

func newSimRun(b *Budget, models []RuleModel, start time.Time, interval time.Duration) *simRun {
	r := &simRun{
		b:           b,
		models:      models,
		start:       start,
		interval:    interval,
		capT:        b.CapTraces(),
		fired:       map[alertKey]bool{},
		crossed:     map[float64]bool{},
		ruleFactors: map[string]*[3]float64{},
		result: &SimBudget{
			MonthlyAmount:      b.MonthlyAmount(),
			Mode:               b.Mode.String(),
			CapTraces:          b.CapTraces(),
			MinFixedRateFactor: 1,
			MinReservoirFactor: 1,
			Alerts:             []SimAlert{},
			SpendCrossings:     []SimCrossing{},
			Rules:              []SimRule{},
		},
	}
	r.newMonth(start)
	return r
}

// newMonth starts the budget month of t afresh, as the server's usage keys
// do; the factors in force carry over until the next decision.
func (r *simRun) newMonth(t time.Time) {
	r.usage = NewUsage(MonthStart(t))
	r.ruleTotal = map[string]*[2]float64{}
	r.crossed = map[float64]bool{}
	r.months = append(r.months, SimMonth{Month: r.usage.MonthStart.Format("2006-01")})
	r.cache = shareCache{}
	r.decision = Decide(r.b, Input{Usage: r.usage, Rules: r.models, cache: &r.cache}, t, r.interval)
}

// factors are the fixed-rate and reservoir factors in force for the rule
// of models[i], as the catalog hands them out.
func (r *simRun) factors(i int) (f, g float64) {
	if i < len(r.decision.Rules) {
		p := &r.decision.Rules[i]
		return p.FixedRateFactor, p.ReservoirFactor
	}
	return r.decision.FixedRateFactor, r.decision.ReservoirFactor
}

func (r *simRun) beginStep(t time.Time) {
	if !MonthStart(t).Equal(r.usage.MonthStart) {
		r.newMonth(t)
	}
	r.stepHour = int(t.Sub(r.usage.MonthStart) / time.Hour)
}

// add counts one rule's requests and traces of the step, as client reports
// do.
func (r *simRun) add(rule string, req, traces float64) {
	r.usage.Requests[r.stepHour] += req
	r.usage.Sampled[r.stepHour] += traces
	hours := r.usage.RuleRequests[rule]
	if hours == nil {
		hours = make([]float64, len(r.usage.Requests))
		r.usage.RuleRequests[rule] = hours
	}
	hours[r.stepHour] += req
	tot := r.ruleTotal[rule]
	if tot == nil {
		tot = new([2]float64)
		r.ruleTotal[rule] = tot
	}
	tot[0] += req
	tot[1] += traces
}

// endStep runs the controller at now, the end of the step. At the end of
// a month it only closes the month: the server's controller, running at
// that instant, works on the new month (see newMonth).
func (r *simRun) endStep(now time.Time) {
	for name, tot := range r.ruleTotal {
		r.usage.Rules[name] = RuleUsage{Requests: int64(math.Round(tot[0])), Sampled: int64(math.Round(tot[1]))}
	}
	hours := now.Sub(r.start).Hours()
	if !MonthStart(now).Equal(r.usage.MonthStart) {
		_, spent := r.usage.Totals()
		r.record(now, hours, spent)
		return
	}
	d := Decide(r.b, Input{Usage: r.usage, Rules: r.models, Prev: &r.decision, cache: &r.cache}, now, r.interval)
	r.record(now, hours, d.Spent)
	for _, a := range DueAlerts(r.b, d, now) {
		// The store's "fires once" (Alert.DedupKey), without formatting
		// the key every interval.
		if key := (alertKey{a.MonthStart, a.Kind, a.Threshold, a.Episode}); !r.fired[key] {
			r.fired[key] = true
			r.result.Alerts = append(r.result.Alerts, SimAlert{
				Kind:      a.Kind.String(),
				Threshold: a.Threshold,
				At:        now,
				AtHours:   hours,
				Spent:     a.Spent,
				Forecast:  a.Forecast,
				Message:   a.Message,
			})
		}
	}
	r.result.Note(&d, r.capT, r.ruleFactors)
	r.decision = d
}

// record notes the month's spend at now, and the spend thresholds it
// reached.
func (r *simRun) record(now time.Time, hours, spent float64) {
	spentMoney := r.b.Cost(spent)
	for _, t := range r.b.SpendThresholds {
		if !r.crossed[t] && spentMoney >= t*r.b.MonthlyAmount() {
			r.crossed[t] = true
			r.result.SpendCrossings = append(r.result.SpendCrossings, SimCrossing{Threshold: t, At: now, AtHours: hours})
		}
	}
	m := &r.months[len(r.months)-1]
	m.SpentTraces = spent
	m.Spent = spentMoney
	if r.capT > 0 {
		m.SpentRatio = spent / r.capT
	}
}

// WorstMonth is the month of the highest spend ratio, which a
// simulation's top-level figures report. months must not be empty.
func WorstMonth(months []SimMonth) SimMonth {
	return slices.MaxFunc(months, func(a, b SimMonth) int { return cmp.Compare(a.SpentRatio, b.SpentRatio) })
}

// finish picks the month the top-level figures report.
func (r *simRun) finish() {
	worst := WorstMonth(r.months)
	r.result.Spent, r.result.SpentTraces, r.result.SpentRatio = worst.Spent, worst.SpentTraces, worst.SpentRatio
	if len(r.months) > 1 {
		r.result.Months = r.months
	}
}
