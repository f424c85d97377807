package fleetsim

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rule is a rule of every request of a service glob.
func rule(name, service string, fixed float64, reservoir int64) rules.Rule {
	return rules.Rule{Name: name, Priority: 10, ServiceName: service, FixedRate: fixed, ReservoirSize: reservoir}.Normalize()
}

func enforce(amount float64, services ...string) *budget.Budget {
	return &budget.Budget{Name: "b", MonthlyAmountMicros: int64(amount * budget.MicrosPerUnit), Mode: budget.Enforce,
		Scope: budget.Scope{Services: services}}
}

var dec2 = time.Date(2026, time.December, 2, 17, 0, 0, 0, time.UTC)

func run(t *testing.T, cfg Config) budget.SimResult {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestSpendIsWhatTheServerCounts: the budget's spend is the store's count
// of the instances' reports, and it is all they sampled (the last reports
// round the fractions of expected values, one trace at most per instance).
func TestSpendIsWhatTheServerCounts(t *testing.T) {
	res := run(t, Config{SimConfig: budget.SimConfig{
		Rules: []rules.Rule{rule("api", "*", 0.05, 10)}, RequestsPerDay: 2000 * 86400, Budget: enforce(500),
		Interval: 10 * time.Second, Start: dec2,
	}, Instances: 50, Zipf: 1.1, Duration: 10 * time.Minute})
	sb := res.SimBudget
	if sb == nil {
		t.Fatal("no budget outcome")
	}
	if d := math.Abs(sb.SpentTraces - res.Traces); d > 50 {
		t.Errorf("the budget counted %v traces, the instances sampled %v: %v apart, want at most one per instance", sb.SpentTraces, res.Traces, d)
	}
	if sb.MinFixedRateFactor >= 1 {
		t.Errorf("a $500 budget under 275 %% of its cap was never enforced: min fixed-rate factor %v", sb.MinFixedRateFactor)
	}
	// The fleet's quotas add up to the reservoir (10/s), not 50 × 10/s:
	// the server splits it.
	perSec := res.Fleet.ReservoirTraces / res.Fleet.Seconds
	if perSec < 9 || perSec > 11 {
		t.Errorf("the fleet sampled %.2f traces/s by quotas, want about the reservoir's 10", perSec)
	}
}

// TestBudgetServiceGlobsCount: a budget scoped to shop-* counts the
// traffic of instances in shop-cart and not that of admin, and the rules'
// service globs send each rule to its own instances.
func TestBudgetServiceGlobsCount(t *testing.T) {
	res := run(t, Config{SimConfig: budget.SimConfig{
		Rules:          []rules.Rule{rule("shop", "shop-*", 0.1, 0), rule("admin", "admin", 0.5, 0)},
		Shares:         map[string]float64{"shop": 1, "admin": 1},
		RequestsPerDay: 100 * 86400, Budget: enforce(1e6, "shop-*"), Interval: 10 * time.Second, Start: dec2,
	}, Instances: 4, Services: []string{"shop-cart", "admin"}, Duration: 10 * time.Minute})
	sb := res.SimBudget
	var names []string
	var shop float64
	for _, r := range sb.Rules {
		names = append(names, r.Name)
		shop += r.Traces
	}
	if diff := cmp.Diff([]string{"shop"}, names); diff != "" {
		t.Errorf("rules in the budget's scope (-want +got):\n%s", diff)
	}
	// 50 requests/s at 0.1 for 600 s: 3,000; admin's 15,000 not counted.
	if want := 3000.0; math.Abs(sb.SpentTraces-want) > 5 || math.Abs(shop-want) > 5 {
		t.Errorf("spent %v traces, shop sampled %v; want %v each", sb.SpentTraces, shop, want)
	}
	if want := 18000.0; math.Abs(res.Traces-want) > 10 {
		t.Errorf("the fleet sampled %v traces, want %v", res.Traces, want)
	}
}

// TestFleetLandsAMonthAsTheFastModel: a simple month (fixed rate only, a
// daily swing) lands at the aim on the pipeline as in the fast model.
func TestFleetLandsAMonthAsTheFastModel(t *testing.T) {
	if testing.Short() {
		t.Skip("a month of reports")
	}
	cfg := budget.SimConfig{
		Rules: []rules.Rule{rule("api", "*", 0.5, 0)}, RequestsPerDay: 10e6, DailySwing: 0.6, Budget: enforce(10),
		Interval: time.Minute, Start: time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC),
	}
	fast, err := budget.Simulate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	fleet := run(t, Config{SimConfig: cfg, Instances: 5})
	if r := fast.SpentRatio; r < 0.97 || r > 1 {
		t.Errorf("fast model: %.4f of the cap, want 0.97-1", r)
	}
	if r := fleet.SpentRatio; r < 0.97 || r > 1 {
		t.Errorf("fleet model: %.4f of the cap, want 0.97-1", r)
	}
	t.Logf("spent ratio: fast %.4f, fleet %.4f (%d reports)", fast.SpentRatio, fleet.SpentRatio, fleet.Fleet.Reports)
}

// TestMonthsStartAfresh: a run across a month's end counts each month
// apart, as the store's usage keys do. A report counts in the hour it is
// made, so the one that spans midnight moves up to an interval's traffic
// (60 traces) into December, as on the server.
func TestMonthsStartAfresh(t *testing.T) {
	res := run(t, Config{SimConfig: budget.SimConfig{
		Rules: []rules.Rule{rule("api", "*", 1, 0)}, RequestsPerDay: 86400, Budget: enforce(1000),
		Interval: time.Minute, Start: time.Date(2026, time.November, 30, 23, 0, 0, 0, time.UTC),
	}, Instances: 2, Duration: 2 * time.Hour})
	var got []string
	for _, m := range res.Months {
		got = append(got, m.Month)
		if math.Abs(m.SpentTraces-3600) > 60 {
			t.Errorf("%s: %v traces, want 3,600", m.Month, m.SpentTraces)
		}
	}
	if diff := cmp.Diff([]string{"2026-11", "2026-12"}, got); diff != "" {
		t.Errorf("months (-want +got):\n%s", diff)
	}
}

// TestRepeatable: one seed, one result.
func TestRepeatable(t *testing.T) {
	cfg := Config{SimConfig: budget.SimConfig{
		Rules: []rules.Rule{rule("api", "*", 0.05, 5)}, RequestsPerDay: 500 * 86400, Budget: enforce(100),
		Interval: 5 * time.Second, Start: dec2,
	}, Instances: 20, Zipf: 1, Duration: 5 * time.Minute, Seed: 7}
	a, b := run(t, cfg), run(t, cfg)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("two runs of one seed differ (-first +second):\n%s", diff)
	}
}

// TestRefusals: what cannot run is refused with ErrConfig, naming why.
func TestRefusals(t *testing.T) {
	base := budget.SimConfig{RequestsPerDay: 1000, Interval: 10 * time.Second}
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"too many instances", Config{SimConfig: base, Instances: MaxInstances + 1}},
		{"too many reports", Config{SimConfig: base, Instances: 1000, Duration: 30 * 24 * time.Hour}},
		{"an interval under a second", Config{SimConfig: budget.SimConfig{RequestsPerDay: 1000, Interval: time.Millisecond}}},
		{"an empty service", Config{SimConfig: base, Services: []string{""}}},
		{"a negative zipf", Config{SimConfig: base, Zipf: -1}},
		{"a rule no instance runs", Config{SimConfig: budget.SimConfig{Rules: []rules.Rule{rule("shop", "shop-*", 1, 0)}, RequestsPerDay: 1000, Interval: 10 * time.Second},
			Services: []string{"admin"}, Duration: time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tt.cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("Run: %v, want ErrConfig", err)
			}
		})
	}
	t.Run("an invalid rule", func(t *testing.T) {
		bad := rule("api", "*", 2, 0)
		var ve *rules.ValidationError
		if _, err := Run(context.Background(), Config{SimConfig: budget.SimConfig{Rules: []rules.Rule{bad}, RequestsPerDay: 1000}}); !errors.As(err, &ve) {
			t.Errorf("Run: %v, want a validation error", err)
		}
	})
}

// TestCanceled: a canceled run stops with the context's error.
func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Config{SimConfig: budget.SimConfig{RequestsPerDay: 1000, Interval: time.Minute, Days: 2}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
}

// TestFirstTrafficCutWithinAReport: as on the server, a tiny budget whose
// traffic starts mid-interval is decided at its first report
// (controller.Wake), not at the controller's next tick 7 s later: its
// fixed rate runs in full only until the instances' first reports, about
// a second (2,000 requests/s at 0.05: about 100 traces, where the 7 s
// before the tick were 700).
func TestFirstTrafficCutWithinAReport(t *testing.T) {
	res := run(t, Config{SimConfig: budget.SimConfig{
		Rules: []rules.Rule{rule("api", "*", 0.05, 10)}, RequestsPerDay: 2000 * 86400, Budget: enforce(0.05),
		Interval: 10 * time.Second, Start: dec2.Add(3 * time.Second),
	}, Instances: 100, Zipf: 1.1, Duration: 2 * time.Minute})
	// The first reports come 0.9 to 1.1 s in: the first of them cuts.
	if f := res.Fleet.FixedRateTraces; f > 2000*1.1*0.05*1.2 {
		t.Errorf("the fleet sampled %v traces by the fixed rate, want at most those of its first reports' 1.1 s (110) and a fifth more", f)
	}
	if res.SimBudget.MinFixedRateFactor >= 0.01 {
		t.Errorf("min fixed-rate factor %v, want the budget's traffic cut", res.SimBudget.MinFixedRateFactor)
	}
}

// TestTinySpendIsWhatTheFleetSampled: a tiny budget's spend, a hundred
// traces over a fleet of a hundred instances (most holding a fraction of
// a trace), is what the instances sampled, over five seeds within 8 %
// (the last reports round each instance's fraction up with its chance: a
// few traces of spread). Before, the fractions were rounded to the
// nearest, and a first report after the budget's cut was bounded by the
// cut rate: the store counted a third less than was sampled.
func TestTinySpendIsWhatTheFleetSampled(t *testing.T) {
	var spent, traces float64
	for seed := range uint64(5) {
		res := run(t, Config{SimConfig: budget.SimConfig{
			Rules: []rules.Rule{rule("api", "*", 0.05, 10)}, RequestsPerDay: 2000 * 86400, Budget: enforce(0.05),
			Interval: 10 * time.Second, Start: dec2.Add(3 * time.Second),
		}, Instances: 100, Zipf: 1.1, Duration: time.Minute, Seed: seed})
		spent += res.SimBudget.SpentTraces
		traces += res.Traces
	}
	if math.Abs(spent/traces-1) > 0.08 {
		t.Errorf("over five seeds the budget counted %v traces, the instances sampled %v: want within 8 %%", spent, traces)
	}
}
