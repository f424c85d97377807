package simulate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fields is the fields err names, in order, or nil if it is not a
// validation error.
func fields(err error) []string {
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	out := make([]string, len(ve.Violations))
	for i, v := range ve.Violations {
		out[i] = v.Field
	}
	return out
}

// traffic is a small valid traffic shape.
func traffic() Traffic { return Traffic{RequestsPerDay: 1000, Days: 1} }

func names(n int) []string {
	ns := make([]string, n)
	for i := range ns {
		ns[i] = fmt.Sprintf("s%d", i)
	}
	return ns
}

func rulesOf(n int) []rules.Rule {
	rs := make([]rules.Rule, n)
	for i := range rs {
		rs[i] = rules.Rule{Name: fmt.Sprintf("r%d", i), Priority: int32(i + 1), FixedRate: 0.1}
	}
	return rs
}

// TestCheckNamesEveryBadField: every bad field of a request is named by the
// API's path, all at once, and a good request is taken.
func TestCheckNamesEveryBadField(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want []string // nil: accepted
	}{
		{"a small run", Request{Traffic: traffic()}, nil},
		{"the defaults: 30 days, the Default rule", Request{Traffic: Traffic{RequestsPerDay: 250e6}}, nil},
		{"no traffic", Request{}, []string{"traffic.requests_per_day"}},
		{"negative traffic", Request{Traffic: Traffic{RequestsPerDay: -1}}, []string{"traffic.requests_per_day"}},
		{"traffic past 1e13", Request{Traffic: Traffic{RequestsPerDay: 2e13}}, []string{"traffic.requests_per_day"}},
		{"every traffic field", Request{Traffic: Traffic{RequestsPerDay: 1, Days: MaxDays + 1, DailySwing: 1.5, Growth: -1,
			SpikeDays: map[int]float64{0: 1}}}, []string{"traffic.days", "traffic.daily_swing", "traffic.spike_days[0]", "traffic.growth"}},
		{"negative days", Request{Traffic: Traffic{RequestsPerDay: 1, Days: -1}}, []string{"traffic.days"}},
		{"a spike after day 30 of a default run", Request{Traffic: Traffic{RequestsPerDay: 1, SpikeDays: map[int]float64{31: 2}}}, []string{"traffic.spike_days[31]"}},
		{"a spike on day 40 of a 40-day run", Request{Traffic: Traffic{RequestsPerDay: 1, Days: 40, SpikeDays: map[int]float64{40: 2}}}, nil},
		{"a spike too large", Request{Traffic: Traffic{RequestsPerDay: 1, SpikeDays: map[int]float64{2: 1001}}}, []string{"traffic.spike_days[2]"}},
		{"too many rules", Request{Traffic: traffic(), Rules: rulesOf(MaxRules + 1)}, []string{"rules"}},
		{"as many rules as allowed", Request{Traffic: traffic(), Rules: rulesOf(MaxRules)}, nil},
		{"a bad rule", Request{Traffic: traffic(), Rules: []rules.Rule{{Name: "ok", Priority: 1}, {Name: "x", Priority: 2, FixedRate: 2}}},
			[]string{"rules[1].fixed_rate"}},
		{"a bad budget", Request{Traffic: traffic(), Budget: &budget.Budget{MonthlyAmountMicros: -1, Mode: 3}},
			[]string{"budget.monthly_amount_micros", "budget.mode"}},
		{"a budget without a name", Request{Traffic: traffic(), Budget: &budget.Budget{MonthlyAmountMicros: 1_000_000}}, nil},
		{"a share of an unknown rule", Request{Traffic: Traffic{RequestsPerDay: 1, RuleShares: map[string]float64{"ghost": 1}}},
			[]string{`traffic.rule_shares["ghost"]`}},
		{"a share of the Default rule simulated alone", Request{Traffic: Traffic{RequestsPerDay: 1, RuleShares: map[string]float64{rules.DefaultName: 1}}}, nil},
		{"a share of the Default rule beside others", Request{Traffic: Traffic{RequestsPerDay: 1, RuleShares: map[string]float64{rules.DefaultName: 1}}, Rules: rulesOf(1)},
			[]string{`traffic.rule_shares["Default"]`}},
		{"a share of a rule refused", Request{Traffic: Traffic{RequestsPerDay: 1, RuleShares: map[string]float64{"x": 1}}, Rules: []rules.Rule{{Name: "x", Priority: 1, FixedRate: 2}}},
			[]string{"rules[0].fixed_rate", `traffic.rule_shares["x"]`}},
		{"a negative share", Request{Traffic: Traffic{RequestsPerDay: 1, RuleShares: map[string]float64{"r0": -1}}, Rules: rulesOf(1)},
			[]string{`traffic.rule_shares["r0"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(&tt.req)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, fields(err)); diff != "" {
				t.Errorf("fields named (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

// TestCheckNormalizes: the rules and budget checked are the ones the
// simulator runs, normalized, the budget named "simulated" if unnamed,
// and the request's own values are left as they were.
func TestCheckNormalizes(t *testing.T) {
	req := Request{Traffic: Traffic{RequestsPerDay: 1, SpikeDays: map[int]float64{3: 2}, RuleShares: map[string]float64{"r0": 1}},
		Rules: rulesOf(1), Budget: &budget.Budget{MonthlyAmountMicros: 1_000_000}}
	cfg, err := Check(&req)
	if err != nil {
		t.Fatal(err)
	}
	if want := rulesOf(1)[0].Normalize(); !cmp.Equal(cfg.Rules, []rules.Rule{want}) {
		t.Errorf("rules %+v, want %+v", cfg.Rules, want)
	}
	if want := (budget.Budget{Name: "simulated", MonthlyAmountMicros: 1_000_000}).Normalize(); !cmp.Equal(*cfg.Budget, want) {
		t.Errorf("budget %+v, want %+v", *cfg.Budget, want)
	}
	if req.Budget.Name != "" {
		t.Errorf("the request's budget was changed: %+v", req.Budget)
	}
	if !cmp.Equal(cfg.SpikeDays, map[int]float64{3: 2}) || !cmp.Equal(cfg.Shares, map[string]float64{"r0": 1}) {
		t.Errorf("spikes %v and shares %v, want the request's", cfg.SpikeDays, cfg.Shares)
	}
}

// TestCheckFleet: the fleet model's bounds, each field named; a value a
// transport could not read (decoded as a negative duration or the zero Unix
// time) is refused as out of bounds.
func TestCheckFleet(t *testing.T) {
	cfg, err := Check(&Request{Traffic: traffic()})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("s", rules.MaxServiceNameLen+1)
	tests := []struct {
		name string
		f    Fleet
		want []string // nil: accepted
	}{
		{"one instance for a day", Fleet{Instances: 1}, nil},
		{"every field out of bounds", Fleet{Zipf: -1, ServiceNames: []string{"", "ok", long, "\xff"}, ReportInterval: time.Hour, Duration: -1, Start: time.Unix(0, 0)},
			[]string{"fleet.instances", "fleet.zipf", "fleet.service_names[0]", "fleet.service_names[2]", "fleet.service_names[3]", "fleet.report_interval", "fleet.duration", "fleet.start_time"}},
		{"too many instances", Fleet{Instances: 10_001}, []string{"fleet.instances"}},
		{"too many services", Fleet{Instances: 1, ServiceNames: names(MaxFleetServices + 1)}, []string{"fleet.service_names"}},
		{"as many services as allowed", Fleet{Instances: 1, ServiceNames: names(MaxFleetServices)}, nil},
		{"a report interval under a second", Fleet{Instances: 1, ReportInterval: -1}, []string{"fleet.report_interval"}},
		{"the shortest report interval", Fleet{Instances: 1, ReportInterval: time.Second, Duration: time.Minute}, nil},
		{"a run past the longest", Fleet{Instances: 1, Duration: MaxFleetDuration + 1}, []string{"fleet.duration"}},
		{"a start after 9000", Fleet{Instances: 1, Start: time.Date(9001, 1, 1, 0, 0, 0, 0, time.UTC)}, []string{"fleet.start_time"}},
		{"the reports of a day's minutes at the limit", Fleet{Instances: MaxFleetReports / 1440}, nil},
		{"too many reports", Fleet{Instances: MaxFleetReports/1440 + 1}, []string{"fleet"}},
		{"too many reports in a short run", Fleet{Instances: 1000, ReportInterval: time.Second, Duration: 2 * time.Minute}, []string{"fleet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, err := checkFleet(&tt.f, cfg)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				want := tt.f.ReportInterval
				if want == 0 {
					want = DefaultReportInterval
				}
				if fc.Interval != want {
					t.Errorf("report interval %v, want %v", fc.Interval, want)
				}
				return
			}
			if diff := cmp.Diff(tt.want, fields(err)); diff != "" {
				t.Errorf("fields named (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

// TestWorkIsBounded: with a budget, the controller decides every minute
// when days × steps × (rules + 9) fits the bound, else less often, so that
// no allowed request (up to 62 days of 100 rules) costs more than about
// half a CPU-second; the answer says the interval used.
func TestWorkIsBounded(t *testing.T) {
	tests := []struct {
		name     string
		days     int
		rules    int
		budget   bool
		interval time.Duration // 0: the simulator's default
	}{
		{name: "the default 30 days of the Default rule", budget: true, interval: time.Minute},
		{name: "62 days of the Default rule", days: 62, budget: true, interval: time.Minute},
		{name: "a 31-day month of 11 rules", days: 31, rules: 11, budget: true, interval: time.Minute},
		{name: "a 31-day month of 12 rules", days: 31, rules: 12, budget: true, interval: 2 * time.Minute},
		{name: "a 31-day month of 100 rules", days: 31, rules: 100, budget: true, interval: 6 * time.Minute},
		{name: "62 days of 100 rules", days: 62, rules: 100, budget: true, interval: 12 * time.Minute},
		{name: "62 days of 100 rules without a budget", days: 62, rules: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &Request{Rules: rulesOf(tt.rules), Traffic: Traffic{RequestsPerDay: 1e6, Days: tt.days}}
			if tt.budget {
				req.Budget = &budget.Budget{MonthlyAmountMicros: 100_000_000}
			}
			cfg, err := Check(req)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if cfg.Interval != tt.interval {
				t.Errorf("controller interval %v, want %v", cfg.Interval, tt.interval)
			}
			days, rules := runDays(tt.days), max(tt.rules, 1)
			if steps := days * int(24*time.Hour/max(cfg.Interval, time.Minute)); tt.budget && steps*(rules+ControllerCost) > MaxWork {
				t.Errorf("%d steps of %d rules: over the bound", steps, rules)
			}
		})
	}
}

// TestIntervalDividesAnHour: every interval a run may get divides an hour,
// and the longest is taken when none fits.
func TestIntervalDividesAnHour(t *testing.T) {
	for _, iv := range intervals {
		if time.Hour%iv != 0 {
			t.Errorf("%v does not divide an hour", iv)
		}
	}
	if got := Interval(10_000, 10_000); got != time.Hour {
		t.Errorf("a run too large for every interval: %v, want 1h", got)
	}
}

// TestConcurrencyLimit: past MaxRunning simulations at once, Run refuses
// with ErrBusy, and runs again once one has finished.
func TestConcurrencyLimit(t *testing.T) {
	limit := int(MaxRunning())
	// The first limit simulations run until released; later ones return at
	// once, so that a call the limit fails to stop shows as an answer.
	var entered atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	sim := &Simulator{fast: func(ctx context.Context, cfg budget.SimConfig) (budget.SimResult, error) {
		if entered.Add(1) <= int32(limit) {
			started <- struct{}{}
			<-release
		}
		return budget.SimResult{}, nil
	}}
	req := &Request{Traffic: Traffic{RequestsPerDay: 1e6, Days: 1}}
	ctx := t.Context()
	errs := make(chan error, limit)
	for range limit {
		go func() {
			_, err := sim.Run(ctx, req)
			errs <- err
		}()
		<-started
	}
	if _, err := sim.Run(ctx, req); !errors.Is(err, ErrBusy) {
		t.Errorf("simulation %d of %d at once: %v, want ErrBusy", limit+1, limit, err)
	}
	if _, err := sim.Run(ctx, &Request{}); fields(err) == nil {
		t.Errorf("a bad request while busy: %v, want its fields named first", err)
	}
	release <- struct{}{}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if _, err := sim.Run(ctx, req); err != nil {
		t.Errorf("with a simulation finished, another: %v", err)
	}
	close(release)
	for range limit - 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestRun: both models run a checked request; the budget's amount comes
// back exact, and the fleet model's refusal of services that run no rule
// with traffic names the field.
func TestRun(t *testing.T) {
	var sim Simulator
	ctx := t.Context()
	res, err := sim.Run(ctx, &Request{Traffic: traffic(), Budget: &budget.Budget{MonthlyAmountMicros: 1_234_567}})
	if err != nil {
		t.Fatal(err)
	}
	if res.MonthlyAmountMicros != 1_234_567 || res.SimBudget == nil || res.Days != 1 {
		t.Errorf("fast model: amount %d, budget %v, %d days; want 1234567, an outcome, 1 day", res.MonthlyAmountMicros, res.SimBudget, res.Days)
	}
	res, err = sim.Run(ctx, &Request{Traffic: traffic(), Fleet: &Fleet{Instances: 2, Duration: 10 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fleet == nil || res.Fleet.Instances != 2 || res.Fleet.Reports == 0 {
		t.Errorf("fleet model: %+v, want 2 instances' reports", res.Fleet)
	}
	_, err = sim.Run(ctx, &Request{Traffic: traffic(), Rules: []rules.Rule{{Name: "shop", Priority: 10, ServiceName: "shop-*", FixedRate: 1}},
		Fleet: &Fleet{Instances: 1, ServiceNames: []string{"admin"}, Duration: time.Minute}})
	if diff := cmp.Diff([]string{"fleet.service_names"}, fields(err)); diff != "" {
		t.Errorf("services running no rule with traffic (-want +got):\n%s\nerror: %v", diff, err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := sim.Run(canceled, &Request{Traffic: Traffic{RequestsPerDay: 250e6}}); !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled run: %v, want context.Canceled", err)
	}
}
