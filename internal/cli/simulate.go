package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/fleetsim"
	"github.com/tracesampling/controlplane/pkg/rules"
)

const simulateLong = `Runs a month of traffic through sampling rules on a virtual clock, and say
what it costs. With --budget, the control plane's own forecast, enforcement
and alerts run over the month as the server would run them, one step per
--interval, and the summary says where the month landed and which alerts
fired when. Nothing is contacted: everything happens in this process.

Traffic: --requests-per-day on average, following a daily cycle of
--daily-swing around the mean (lowest at 00:00 UTC, highest at 12:00 UTC),
times the factor of each --spike-day, growing --growth times over the run.
Every request is counted by one rule; the rules share the traffic evenly
unless --share says otherwise.

The budget plans each rule with its own traffic, reservoir and rate, and
cuts the rules of the lowest --priority first; the summary says how each
rule fared (the lowest and highest factor once it was first cut).

The budget's month is the calendar month (UTC), as on the server: a run that
goes past the end of the month of --start starts the next month's budget
afresh, and the figures are those of the month that came closest to its cap.

Two models. The fast one (the default) runs the server's forecast and
decision code on the fleet's expected traffic: a 30-day month in well
under a second, for sweeps. --fleet N runs the server's own pipeline
instead, on a virtual clock: the embedded store, the catalog, the report
path with its quota split, bounds and receipts, the budget controller
with the server's spend counting and scope scaling, and N virtual SDK
instances that decide as the SDK does (quota token bucket, borrowing,
fixed rates in force, decisions learnt only as streams learn them, reports
every --interval, which is then the report interval). Its spend is what
the server would count; it takes about 11 microseconds of CPU per report
(a 30-day month of 10 instances at 1m: about 5 seconds, where the fast
model takes 0.4). --zipf skews the traffic across instances, --service names
the services they run in (in turn), so that the rules' and the budget's
service globs apply, --duration runs a few minutes of the month instead of
--days, as a live run lasts.

The output ends with one JSON object on its own line, money in currency
units: requests, traces, traces_per_day, cost, monthly_cost (a 30-day
month), and with a budget: monthly_amount, spent, spent_ratio,
max_forecast_ratio, min_fixed_rate_factor, min_reservoir_factor, and the
alerts with their simulated times, and rules: how each rule in scope fared.

Exit codes: 0 success, 2 bad command line, 3 invalid rules file.`

// simFlags are simulate's command line.
type simFlags struct {
	file           string
	requestsPerDay float64
	days           int
	dailySwing     float64
	spikes         map[int]float64
	shares         map[string]float64
	budget         amountFlag
	mode           string
	price          amountFlag
	floor          float64
	interval       time.Duration
	start          string
	growth         float64
	priorities     priorityFlag
	pricing        string
	coverage       int

	// The fleet model's (--fleet).
	fleet    int
	zipf     float64
	services []string
	duration time.Duration
	seed     uint64
	scope    []string
}

func newSimulateCmd() *cobra.Command {
	f := simFlags{spikes: map[int]float64{}}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "what rules cost under a traffic shape, with or without a budget",
		Long:  simulateLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimulate(cmd.Context(), &f, cmd.Flags().Changed, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&f.file, "file", "f", "", "rules `file` to simulate, in the format rules apply reads; - reads stdin (default: the Default rule alone)")
	fs.Float64Var(&f.requestsPerDay, "requests-per-day", 250e6, "mean `requests` per day")
	fs.IntVar(&f.days, "days", 30, "`days` to simulate")
	fs.Float64Var(&f.dailySwing, "daily-swing", 0, "amplitude of the daily cycle around the mean, from 0 to 1: 0.6 = ±60 %")
	fs.Func("spike-day", "`DAY:FACTOR`: multiply the traffic of day DAY (from 1) by FACTOR; repeatable", func(s string) error {
		day, factor, err := simParsePair(s, "DAY:FACTOR")
		if err != nil {
			return err
		}
		d, err := strconv.Atoi(day)
		if err != nil || d < 1 {
			return fmt.Errorf("DAY must be a day number from 1, got %q", day)
		}
		if _, dup := f.spikes[d]; dup {
			return fmt.Errorf("day %d given twice", d)
		}
		f.spikes[d] = factor
		return nil
	})
	fs.Func("share", "`RULE:WEIGHT`: the rule's share of the traffic; repeatable; rules not named get none (default: even shares)", func(s string) error {
		name, weight, err := simParsePair(s, "RULE:WEIGHT")
		if err != nil {
			return err
		}
		if f.shares == nil {
			f.shares = map[string]float64{}
		}
		if _, dup := f.shares[name]; dup {
			return fmt.Errorf("rule %q given twice", name)
		}
		f.shares[name] = weight
		return nil
	})
	fs.Var(&f.budget, "budget", "monthly budget `amount` in currency units; without it, only the cost is simulated")
	fs.StringVar(&f.mode, "mode", "enforce", "what the budget does: enforce or alert_only")
	f.price.micros = budget.DefaultPricePerMillionMicros
	fs.Var(&f.price, "price-per-million", "`price` per million traces")
	fs.Float64Var(&f.floor, "floor", 0, "`traces/s` the budget keeps when exhausted")
	fs.Float64Var(&f.growth, "growth", 0, "how many `times` the traffic grows over the run, evenly per day (3: the last day has 3 times the first's)")
	fs.Var(&f.priorities, "priority", "`SELECTOR:N`: the budget cuts the rules of the lowest priority first; SELECTOR is a rule name or KEY=VALUE of its labels (repeatable)")
	fs.StringVar(&f.pricing, "pricing", "", "`preset` of a vendor's prices ("+strings.Join(budget.PresetNames(), ", ")+"); --price-per-million given with it wins")
	fs.IntVar(&f.coverage, "coverage-minutes", 0, "the budget keeps one trace per rule every `N` minutes in its plan; 0: none")
	fs.DurationVar(&f.interval, "interval", time.Minute, "the controller's `interval`, from 1s to 1h, dividing an hour")
	fs.IntVar(&f.fleet, "fleet", 0, "run the server's pipeline with `N` virtual SDK instances (the fleet model; 0: the fast model)")
	fs.Float64Var(&f.zipf, "zipf", 0, "with --fleet, the Zipf `exponent` of the traffic across instances (0: even)")
	fs.StringArrayVar(&f.services, "service", nil, "with --fleet, a `service` the instances run in (repeatable; given in turn; default "+fleetsim.DefaultService+")")
	fs.DurationVar(&f.duration, "duration", 0, "with --fleet, simulate this long from --start instead of --days (e.g. 15m)")
	fs.StringArrayVar(&f.scope, "budget-service", nil, "with --fleet, a service `glob` the budget covers (repeatable; none: every service)")
	fs.Uint64Var(&f.seed, "seed", 0, "with --fleet, the `seed` of the instances' report jitter")
	fs.StringVar(&f.start, "start", budget.DefaultSimStart().Format(time.DateOnly), "first simulated `day` (YYYY-MM-DD, or an RFC 3339 time), UTC")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

// runSimulate checks the flags, runs the simulation and prints it. changed
// says which flags were given.
func runSimulate(ctx context.Context, f *simFlags, changed func(name string) bool, stdin io.Reader, stdout io.Writer) error {
	cfg, err := f.config(changed)
	if err != nil {
		return usageError(fmt.Errorf("simulate: %w", err))
	}
	if f.file != "" {
		entries, err := files.ReadRules(f.file, stdin)
		if err != nil {
			return invalidInput(err)
		}
		if len(entries) == 0 {
			return invalidInput(fmt.Errorf("%s: no rules to simulate", files.DisplayName(f.file)))
		}
		for _, e := range entries {
			cfg.Rules = append(cfg.Rules, e.Rule)
		}
	}
	if len(cfg.Rules) == 0 {
		cfg.Rules = []rules.Rule{rules.Default()}
	}
	for name := range f.shares {
		if !slices.ContainsFunc(cfg.Rules, func(r rules.Rule) bool { return r.Name == name }) {
			return usageError(fmt.Errorf("simulate: --share names rule %q, which is not among the rules simulated", name))
		}
	}

	var res budget.SimResult
	if f.fleet > 0 {
		res, err = fleetsim.Run(ctx, fleetsim.Config{SimConfig: cfg, Instances: f.fleet, Zipf: f.zipf, Services: f.services, Duration: f.duration, Seed: f.seed})
		var ve *rules.ValidationError
		switch {
		case errors.As(err, &ve):
			return invalidInput(err)
		case errors.Is(err, fleetsim.ErrConfig):
			return usageError(fmt.Errorf("simulate: %w", err))
		}
	} else {
		res, err = budget.Simulate(ctx, cfg)
	}
	if err != nil {
		return err
	}
	printSimSummary(stdout, &cfg, &res)
	line, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// simParsePair splits "KEY:NUMBER" (the last colon).
func simParsePair(s, form string) (string, float64, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("want %s, got %q", form, s)
	}
	v, err := strconv.ParseFloat(s[i+1:], 64)
	if err != nil || !(v >= 0) || math.IsInf(v, 0) {
		return "", 0, fmt.Errorf("want %s with a number >= 0 after the colon, got %q", form, s)
	}
	return s[:i], v, nil
}

// config checks the flags and turns them into a simulation. The budget's
// fields are checked by budget.Validate, as the server checks them.
func (f *simFlags) config(changed func(name string) bool) (budget.SimConfig, error) {
	withBudget := changed("budget")
	cfg := budget.SimConfig{
		Growth:         f.growth,
		RequestsPerDay: f.requestsPerDay,
		Days:           f.days,
		DailySwing:     f.dailySwing,
		SpikeDays:      f.spikes,
		Shares:         f.shares,
		Interval:       f.interval,
	}
	if !(f.requestsPerDay >= 0) || f.requestsPerDay > 1e15 {
		return cfg, fmt.Errorf("--requests-per-day must be between 0 and 1e15, got %v", f.requestsPerDay)
	}
	if f.fleet < 0 || f.fleet > fleetsim.MaxInstances {
		return cfg, fmt.Errorf("--fleet must be between 0 and %d, got %d", fleetsim.MaxInstances, f.fleet)
	}
	if f.fleet == 0 {
		for _, name := range []string{"zipf", "service", "duration", "seed", "budget-service"} {
			if changed(name) {
				return cfg, fmt.Errorf("--%s needs --fleet", name)
			}
		}
	}
	if f.duration < 0 || f.duration > 366*24*time.Hour {
		return cfg, fmt.Errorf("--duration must be between 0 and 366 days, got %v", f.duration)
	}
	if f.days < 1 || f.days > 366 {
		return cfg, fmt.Errorf("--days must be between 1 and 366, got %d", f.days)
	}
	if !(f.dailySwing >= 0 && f.dailySwing <= 1) {
		return cfg, fmt.Errorf("--daily-swing must be between 0 and 1 (0.6 = ±60 %%), got %v", f.dailySwing)
	}
	for day := range f.spikes {
		if day > f.days {
			return cfg, fmt.Errorf("--spike-day %d is after the last simulated day (%d)", day, f.days)
		}
	}
	if !(f.growth >= 0 && f.growth <= 1000) {
		return cfg, fmt.Errorf("--growth must be between 0 and 1000, got %v", f.growth)
	}
	if f.interval < time.Second || f.interval > time.Hour || time.Hour%f.interval != 0 {
		return cfg, fmt.Errorf("--interval must be from 1s to 1h and divide an hour, got %v", f.interval)
	}
	start, err := time.Parse(time.DateOnly, f.start)
	if err != nil {
		if start, err = time.Parse(time.RFC3339, f.start); err != nil {
			return cfg, fmt.Errorf("--start wants YYYY-MM-DD or an RFC 3339 time, got %q", f.start)
		}
	}
	cfg.Start = start.UTC()

	var mode budget.Mode
	switch f.mode {
	case "enforce":
		mode = budget.Enforce
	case "alert_only":
		mode = budget.AlertOnly
	default:
		return cfg, fmt.Errorf("--mode must be enforce or alert_only, got %q", f.mode)
	}
	// Validate a budget even without --budget, for the price: one definition
	// of a valid price.
	// Not normalized first: a price of 0 given on the command line is a
	// mistake, not a request for the default.
	b := budget.Budget{Name: "simulated", MonthlyAmountMicros: budget.MicrosPerUnit, Currency: budget.DefaultCurrency,
		PricePerMillionMicros: f.price.micros, Mode: mode, FloorPerSecond: f.floor, Priorities: f.priorities.v,
		CoverageMinutes: int32(f.coverage), Scope: budget.Scope{Services: f.scope}}
	if f.pricing != "" {
		p, ok := budget.Preset(f.pricing)
		if !ok {
			return cfg, fmt.Errorf("--pricing must be one of %s, got %q", strings.Join(budget.PresetNames(), ", "), f.pricing)
		}
		price := b.PricePerMillionMicros
		p.Apply(&b)
		if changed("price-per-million") {
			b.PricePerMillionMicros = price
		}
	}
	if withBudget {
		b.MonthlyAmountMicros = f.budget.micros
	}
	flagOf := map[string]string{
		"monthly_amount_micros":    "--budget",
		"price_per_million_micros": "--price-per-million",
		"floor_traces_per_second":  "--floor",
		"coverage_minutes":         "--coverage-minutes",
		"scope.service_names":      "--budget-service",
	}
	var ve *rules.ValidationError
	if err := budget.Validate(&b); errors.As(err, &ve) {
		msgs := make([]string, 0, len(ve.Violations))
		for _, v := range ve.Violations {
			name := flagOf[v.Field]
			switch {
			case name != "":
			case strings.HasPrefix(v.Field, "rule_priorities"):
				name = "--priority (" + v.Field + ")"
			case strings.HasPrefix(v.Field, "scope.service_names"):
				name = "--budget-service (" + v.Field + ")"
			default:
				name = v.Field
			}
			msgs = append(msgs, name+": "+v.Description)
		}
		return cfg, errors.New(strings.Join(msgs, "; "))
	} else if err != nil {
		return cfg, err
	}
	b = b.Normalize()
	cfg.PricePerMillionMicros = b.PricePerMillionMicros
	if withBudget {
		cfg.Budget = &b
	}
	return cfg, nil
}

// printSimSummary prints the few lines a person reads before the JSON.
func printSimSummary(w io.Writer, cfg *budget.SimConfig, res *budget.SimResult) {
	money := func(x float64) string { return budget.FormatMoney(x, res.Currency) }
	shape := fmt.Sprintf("%s requests/day", simCount(cfg.RequestsPerDay))
	if cfg.DailySwing > 0 {
		shape += fmt.Sprintf(", ±%s daily swing", simPct(cfg.DailySwing))
	}
	days := make([]int, 0, len(cfg.SpikeDays))
	for d := range cfg.SpikeDays {
		days = append(days, d)
	}
	slices.Sort(days)
	for _, d := range days {
		shape += fmt.Sprintf(", day %d ×%s", d, strconv.FormatFloat(cfg.SpikeDays[d], 'g', -1, 64))
	}
	names := make([]string, len(cfg.Rules))
	for i, r := range cfg.Rules {
		names[i] = r.Name
	}
	span := fmt.Sprintf("%d days", res.Days)
	if fl := res.Fleet; fl != nil && fl.Seconds < float64(res.Days)*86400 {
		span = time.Duration(fl.Seconds * float64(time.Second)).String()
	}
	fmt.Fprintf(w, "Simulated %s from %s: %s; rules: %s; controller every %v.\n",
		span, res.Start.Format("2006-01-02 15:04 UTC"), shape, strings.Join(names, ", "), time.Duration(res.IntervalSeconds*float64(time.Second)))
	if fl := res.Fleet; fl != nil {
		fmt.Fprintf(w, "Fleet model: %d SDK instances in %d services on the server's pipeline, %s reports, %s decisions; sampled %s by quotas, %s borrowed, %s by fixed rates.\n",
			fl.Instances, fl.Services, simCount(float64(fl.Reports)), simCount(float64(fl.Decisions)), simCount(fl.ReservoirTraces), simCount(fl.BorrowedTraces), simCount(fl.FixedRateTraces))
	}
	ndays := float64(res.Days)
	if fl := res.Fleet; fl != nil && fl.Seconds > 0 {
		ndays = fl.Seconds / 86400
	}
	perDay := res.UnenforcedTraces / ndays
	fmt.Fprintf(w, "At the rules' own rates: %s traces (%s/day), %s; %s per 30 days.\n",
		simCount(res.UnenforcedTraces), simCount(perDay), money(res.UnenforcedCost), money(res.UnenforcedCost/ndays*30))
	sb := res.SimBudget
	if sb == nil {
		return
	}
	fmt.Fprintf(w, "Budget %s (%s): spent %s, %s of the cap (%s traces, %s/day); %s per 30 days.\n",
		money(sb.MonthlyAmount), sb.Mode, money(sb.Spent), simPct(sb.SpentRatio), simCount(res.Traces), simCount(res.TracesPerDay), money(res.MonthlyCost))
	fmt.Fprintf(w, "Forecast at most %s of the cap at the rules' own rates, %s at the factors decided; fixed rates scaled down to %s at the lowest, reservoirs to %s.\n",
		simPct(sb.MaxForecastRatio), simPct(sb.MaxEnforcedForecastRatio), simPct(sb.MinFixedRateFactor), simPct(sb.MinReservoirFactor))
	if len(sb.Rules) > 1 || len(sb.Rules) == 1 && sb.Rules[0].MinFixedRateFactor < 1 {
		fmt.Fprintln(w, "Rules in scope (priority; traces at the factors decided, and at the rule's own rates; the fixed-rate factor once first cut):")
		for _, r := range sb.Rules {
			factors := "never cut"
			if r.MinFixedRateFactor < 1 || r.MinReservoirFactor < 1 {
				factors = fmt.Sprintf("fixed rate x%s to x%s, reservoir down to x%s", strconv.FormatFloat(r.MinFixedRateFactor, 'f', 3, 64),
					strconv.FormatFloat(r.MaxFixedRateFactor, 'f', 3, 64), strconv.FormatFloat(r.MinReservoirFactor, 'f', 3, 64))
			}
			fmt.Fprintf(w, "  %s (%d): %s of %s traces; %s\n", r.Name, r.Priority, simCount(r.Traces), simCount(r.UnenforcedTraces), factors)
		}
	}
	if len(sb.Alerts) == 0 {
		fmt.Fprintln(w, "No alerts fired.")
		return
	}
	fmt.Fprintln(w, "Alerts:")
	for _, a := range sb.Alerts {
		fmt.Fprintf(w, "  %s (hour %.2f)  %s\n", a.At.Format("2006-01-02 15:04:05"), a.AtHours, a.Message)
	}
}

// simCount formats a number of requests or traces with thousands separators.
func simCount(x float64) string {
	s := strconv.FormatFloat(math.Round(x), 'f', 0, 64)
	var sb strings.Builder
	for i := range len(s) {
		if i > 0 && s[i-1] != '-' && (len(s)-i)%3 == 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

// simPct formats a share as a percentage: to 0.1 %, or to three figures
// below 0.1 %, so that a few minutes of a month (--fleet --duration) do not
// print as 0.0 %.
func simPct(share float64) string {
	if share > 0 && share < 0.001 {
		return strconv.FormatFloat(share*100, 'g', 3, 64) + "%"
	}
	return strconv.FormatFloat(share*100, 'f', 1, 64) + "%"
}
