// Package fleetsim simulates a month (or a few minutes) of a fleet on the
// control plane's own pipeline, on a virtual clock: the embedded store
// (memstore), the catalog, the report pipeline (sampling.Core, with its
// bounds, receipts, fleet ledger and quota split), the budget controller
// (package controller, with its spend counting, scope scaling and alerts)
// and N virtual SDK instances that decide as the Go SDK does — a quota spent
// from a token bucket, one borrowed trace a second without one, the fixed
// rate in force (rule sets carry it), first borrows withheld as the server
// withholds them — and learn of a decision only as a stream does: pushed
// after the controller decides (at its interval, or woken by a budget's
// first traffic), from reports made once an interval. So
// what it says holds for the server: the spend is what the server counts.
//
// package budget's Simulate is the fast model: the same forecast and
// decision code on the fleet's expected traffic, without the pipeline. It
// runs a 30-day month in a fraction of a second; this one takes as long as
// the reports of N instances take the pipeline (docs/BUDGETS.md).
//
// It lives apart from package budget, which must not import the pipeline
// (sampling imports budget).
package fleetsim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Limits of one run.
const (
	// MaxInstances bounds the virtual SDK instances.
	MaxInstances = 10_000
	// MaxReports bounds the reports a run may make (instances × intervals):
	// about a minute of one core.
	MaxReports = 5_000_000
	// DefaultService is the service instances run in unless told.
	DefaultService = "simulated"
)

// ErrConfig is what a configuration that cannot run is refused with.
var ErrConfig = errors.New("fleetsim: invalid configuration")

// Config is a fleet simulation: the fast model's traffic, rules and budget,
// spread over Instances virtual SDK instances.
type Config struct {
	budget.SimConfig
	// Instances is the number of virtual SDK instances; default 10.
	Instances int
	// Zipf skews the traffic across instances by a Zipf law of this
	// exponent (as bench/loadgen's --zipf); 0: even.
	Zipf float64
	// Services the instances run in, assigned in turn; default
	// DefaultService. A rule's traffic goes to the instances whose service
	// its service glob matches; budgets' service globs count it so.
	Services []string
	// Duration, if positive, is the run's length instead of Days: a few
	// minutes of a month, as a live run lasts.
	Duration time.Duration
	// Seed makes the instances' report jitter (±10 %, as the SDK's)
	// repeatable; runs with one seed are identical.
	Seed uint64
}

// Limits of how the virtual SDK's decisions are integrated.
const (
	// piece is the longest stretch over which an instance's traffic is
	// taken as steady.
	piece = 10 * time.Second
	// firstReport is the SDK's delay of a stream's first report.
	firstReport = time.Second
)

// Run simulates cfg. Its result has the fast model's shape; Fleet says what
// the instances did, and the budget's spend is what the store counted.
func Run(ctx context.Context, cfg Config) (budget.SimResult, error) {
	cfg, err := cfg.check()
	if err != nil {
		return budget.SimResult{}, err
	}
	s, err := newSim(ctx, cfg)
	if err != nil {
		return budget.SimResult{}, err
	}
	defer s.close()
	if err := s.run(ctx); err != nil {
		return budget.SimResult{}, err
	}
	return s.result(ctx)
}

// check applies the defaults and refuses what cannot run.
func (cfg Config) check() (Config, error) {
	cfg.SimConfig = cfg.SimConfig.WithDefaults()
	if cfg.Instances <= 0 {
		cfg.Instances = 10
	}
	if cfg.Instances > MaxInstances {
		return cfg, fmt.Errorf("%w: at most %d instances, got %d", ErrConfig, MaxInstances, cfg.Instances)
	}
	if !(cfg.Zipf >= 0 && cfg.Zipf <= 10) {
		return cfg, fmt.Errorf("%w: zipf must be between 0 and 10, got %v", ErrConfig, cfg.Zipf)
	}
	if len(cfg.Services) == 0 {
		cfg.Services = []string{DefaultService}
	}
	for _, s := range cfg.Services {
		if s == "" || len(s) > rules.MaxServiceNameLen {
			return cfg, fmt.Errorf("%w: a service name must have 1 to %d characters, got %q", ErrConfig, rules.MaxServiceNameLen, s)
		}
	}
	if cfg.Duration < 0 {
		return cfg, fmt.Errorf("%w: negative duration %v", ErrConfig, cfg.Duration)
	}
	if cfg.Interval < time.Second {
		return cfg, fmt.Errorf("%w: the report interval must be at least 1s, got %v", ErrConfig, cfg.Interval)
	}
	if n := float64(cfg.Instances) * cfg.length().Seconds() / cfg.Interval.Seconds(); n > MaxReports {
		return cfg, fmt.Errorf("%w: %d instances reporting every %v for %v make %.3g reports, over the limit of %d: fewer instances, a longer interval, a shorter run, or the fast model",
			ErrConfig, cfg.Instances, cfg.Interval, cfg.length(), n, MaxReports)
	}
	return cfg, nil
}

// length is how long the run lasts.
func (cfg *Config) length() time.Duration {
	if cfg.Duration > 0 {
		return cfg.Duration
	}
	return time.Duration(cfg.Days) * 24 * time.Hour
}

// clock is the virtual clock every part reads. One goroutine moves it;
// parts that answer on goroutines of their own (the first-borrow gate's
// store call) read it there too.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// sim is one run.
type sim struct {
	cfg   Config
	clock *clock
	st    *memstore.Store
	cat   *catalog.Catalog
	core  *sampling.Core
	ctrl  *controller.Controller
	b     *budget.Budget // as stored; nil without one

	rules    map[string]*simRule
	ruleList []*simRule
	insts    []*instance
	start    time.Time
	end      time.Time

	// The run's figures.
	res       budget.SimResult
	fleet     budget.SimFleet
	lastMonth time.Time
	fleetLast time.Time // unenforced's
	months    []budget.SimMonth
	ruleFac   map[string]*[3]float64
	crossed   map[float64]bool
	capT      float64
}

// simRule is a rule of the run and its traffic.
type simRule struct {
	rule  rules.Rule
	share float64 // of the traffic
	// weight is the sum of the weights of the instances that hold it.
	weight float64
	// traces sampled by the instances; unenforced: the fleet's traffic at
	// the rule's own rates (the fast model's formula, over pieces).
	traces, unenforced float64
}

func newSim(ctx context.Context, cfg Config) (*sim, error) {
	clk := &clock{t: cfg.Start}
	st, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		return nil, fmt.Errorf("fleetsim: %w", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &sim{cfg: cfg, clock: clk, st: st, rules: map[string]*simRule{},
		start: cfg.Start, end: cfg.Start.Add(cfg.length()), ruleFac: map[string]*[3]float64{}, crossed: map[float64]bool{}}
	fail := func(err error) (*sim, error) {
		_ = st.Close()
		return nil, fmt.Errorf("fleetsim: %w", err)
	}
	if err := s.putRules(ctx); err != nil {
		return fail(err)
	}
	s.cat = catalog.New(st, catalog.Options{Logger: quiet})
	if err := s.cat.Load(ctx); err != nil {
		return fail(err)
	}
	s.ctrl = controller.New(st, s.cat, controller.Options{Interval: cfg.Interval, Now: clk.Now, Logger: quiet})
	// As serve wires them: a report of a budget's first traffic wakes the
	// controller (run after each report here, see report).
	s.core = sampling.New(sampling.Options{Catalog: s.cat, Store: st, Interval: cfg.Interval, Now: clk.Now, Logger: quiet, Waker: s.ctrl})
	if cfg.Budget != nil {
		b := cfg.Budget.Normalize()
		if b.Name == "" {
			b.Name = "simulated"
		}
		if err := budget.Validate(&b); err != nil {
			s.core.Close()
			return fail(err)
		}
		b.UID = "fleetsim"
		stored, err := st.CreateBudget(ctx, b)
		if err != nil {
			s.core.Close()
			return fail(err)
		}
		s.b = &stored
		s.capT = stored.CapTraces()
		if err := s.cat.LoadBudgets(ctx); err != nil {
			s.core.Close()
			return fail(err)
		}
		// As the budget service does after a create: decided at once.
		if err := s.ctrl.DecideBudget(ctx, stored); err != nil {
			s.core.Close()
			return fail(err)
		}
		if err := s.cat.LoadBudgets(ctx); err != nil {
			s.core.Close()
			return fail(err)
		}
	}
	s.newInstances(ctx)
	for _, sr := range s.ruleList {
		if sr.share > 0 && sr.weight == 0 {
			s.close()
			return nil, fmt.Errorf("%w: rule %s has a share of the traffic, but its service glob %q matches none of the instances' services (%s)",
				ErrConfig, sr.rule.Name, sr.rule.ServiceName, strings.Join(cfg.Services, ", "))
		}
	}
	return s, nil
}

func (s *sim) close() {
	s.core.Close()
	s.ctrl.Wait()
	_ = s.st.Close()
}

// putRules stores the run's rules as the rule service would: the Default
// rule updated in place, the others created, each validated first.
func (s *sim) putRules(ctx context.Context) error {
	var total float64
	for _, r := range s.cfg.Rules {
		r = r.Normalize()
		if err := rules.Validate(&r); err != nil {
			return err
		}
		if _, dup := s.rules[r.Name]; dup {
			return fmt.Errorf("rule %q given twice", r.Name)
		}
		sr := &simRule{rule: r}
		if s.cfg.Shares != nil {
			sr.share = max(0, s.cfg.Shares[r.Name])
			if math.IsInf(sr.share, 0) || math.IsNaN(sr.share) {
				sr.share = 0
			}
		}
		total += sr.share
		s.rules[r.Name] = sr
		s.ruleList = append(s.ruleList, sr)
		if r.Name == rules.DefaultName {
			cur, err := s.st.Rule(ctx, rules.DefaultName)
			if err != nil {
				return err
			}
			r.Revision = cur.Revision
			if _, err := s.st.UpdateRule(ctx, r, cur.Revision, "fleetsim"); err != nil {
				return fmt.Errorf("rule %s: %w", r.Name, err)
			}
			continue
		}
		if _, err := s.st.CreateRule(ctx, r, "fleetsim"); err != nil {
			return fmt.Errorf("rule %s: %w", r.Name, err)
		}
	}
	for _, sr := range s.ruleList {
		if total > 0 {
			sr.share /= total
		} else {
			sr.share = 1 / float64(len(s.ruleList))
		}
	}
	return nil
}

// newInstances starts the instances, each on its stream at the start: the
// first rule set (borrowing withheld by the server's gate, the core's on
// the run's store), the first report about a second later (±10 %), then
// one an interval.
func (s *sim) newInstances(ctx context.Context) {
	weights := zipfWeights(s.cfg.Instances, s.cfg.Zipf)
	rng := rand.New(rand.NewPCG(s.cfg.Seed, 15))
	now := s.clock.Now()
	for i := range s.cfg.Instances {
		in := &instance{
			n:       i,
			id:      fmt.Sprintf("sim-%d", i),
			service: s.cfg.Services[i%len(s.cfg.Services)],
			weight:  weights[i],
			rng:     rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)+16)),
			held:    receipt.NewHeld(),
			byName:  map[string]*sdkRule{},
			last:    now,
		}
		in.keeper = in.held.Over(s.core.Tokens())
		rs := s.cat.RuleSet(in.service, "", nil, now)
		for _, p := range rs.GetRules() {
			sr := s.rules[p.GetName()]
			if sr == nil || sr.share == 0 {
				continue // no traffic of the run's
			}
			rt := &sdkRule{sim: sr, borrowRate: 1}
			rt.borrow.set(1, 0)
			in.rules = append(in.rules, rt)
			in.byName[sr.rule.Name] = rt
			sr.weight += in.weight
		}
		s.applyRules(in, catalog.WithFirstBorrows(rs, s.core.FirstBorrows(ctx, catalog.FirstBorrows(rs))))
		in.next = now.Add(jitter(min(firstReport, s.cfg.Interval), rng))
		s.insts = append(s.insts, in)
	}
	s.fleet.Instances = len(s.insts)
	s.fleet.Services = len(s.cfg.Services)
}

// run moves the clock from event to event: the controller's ticks (at
// multiples of the interval, as the replicas claim them), the instances'
// reports, and the end.
func (s *sim) run(ctx context.Context) error {
	iv := s.cfg.Interval
	tick := s.start.Truncate(iv).Add(iv)
	hour := s.start.Add(time.Hour)
	q := reportQueue(slices.Clone(s.insts))
	heap.Init(&q)
	for {
		var in *instance
		next := tick
		if len(q) > 0 && q[0].next.Before(next) {
			in = q[0]
			next = in.next
		}
		if !next.Before(s.end) {
			break
		}
		if !next.Before(hour) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("fleetsim: %w", err)
			}
			hour = next.Add(time.Hour)
		}
		s.clock.set(next)
		if next.Equal(tick) {
			if err := s.decide(ctx, next); err != nil {
				return err
			}
			tick = tick.Add(iv)
			continue
		}
		if err := s.report(ctx, in, next, false); err != nil {
			return err
		}
		in.next = next.Add(jitter(iv, in.rng))
		heap.Fix(&q, 0)
	}
	// The end: no more requests; every instance reports what it counted
	// since its last report, as bench/loadgen's instances do.
	s.clock.set(s.end)
	for _, in := range s.insts {
		if err := s.report(ctx, in, s.end, true); err != nil {
			return err
		}
	}
	s.unenforced(s.end)
	return nil
}

// reportQueue orders the instances by their next report (then by number,
// so that a run is repeatable): a heap, since a fleet of thousands makes a
// report at every step.
type reportQueue []*instance

func (q reportQueue) Len() int { return len(q) }
func (q reportQueue) Less(i, j int) bool {
	if c := q[i].next.Compare(q[j].next); c != 0 {
		return c < 0
	}
	return q[i].n < q[j].n
}
func (q reportQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *reportQueue) Push(x any)   { *q = append(*q, x.(*instance)) }
func (q *reportQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// decide runs the controller's tick at now, reloads the catalog as its
// change hint makes every replica do, and pushes what streams push: a rule
// set whose rates in force changed, and the last targets at the new
// factors.
func (s *sim) decide(ctx context.Context, now time.Time) error {
	s.unenforced(now)
	month := budget.MonthStart(now)
	if s.b != nil && !month.Equal(s.lastMonth) && !s.lastMonth.IsZero() {
		if err := s.closeMonth(ctx, s.lastMonth); err != nil {
			return err
		}
	}
	s.lastMonth = month
	if s.b == nil {
		return nil
	}
	gen := s.cat.CurrentBudgets().Gen
	if err := s.ctrl.Step(ctx, now); err != nil {
		return fmt.Errorf("fleetsim: controller at %v: %w", now, err)
	}
	s.fleet.Decisions++
	return s.decided(ctx, gen, now)
}

// decideWoken runs what the controller's Run does when a report woke a
// budget (controller.Wake: its first traffic), at now, right after that
// report, and pushes its decision as decide does.
func (s *sim) decideWoken(ctx context.Context, now time.Time) error {
	gen := s.cat.CurrentBudgets().Gen
	n, err := s.ctrl.DecideWoken(ctx)
	if err != nil {
		return fmt.Errorf("fleetsim: controller woken at %v: %w", now, err)
	}
	if n == 0 {
		return nil
	}
	s.fleet.Decisions += int64(n)
	return s.decided(ctx, gen, now)
}

// decided reloads the catalog after a decision, as its change hint makes
// every replica do, notes it, and if the budgets moved on from generation
// gen pushes what streams push.
func (s *sim) decided(ctx context.Context, gen int64, now time.Time) error {
	if err := s.cat.LoadBudgets(ctx); err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	bs := s.cat.CurrentBudgets()
	if st, ok := bs.States[s.b.Name]; ok {
		s.noteDecision(&st.Decision)
		s.noteSpend(now, st.Decision.Spent)
	}
	if bs.Gen == gen {
		return nil
	}
	for _, in := range s.insts {
		s.advance(in, now)
		rs := s.cat.RuleSet(in.service, "", nil, now)
		if rs.GetRulesVersion() != in.sentVersion || !sampling.SameRates(rs.GetRatesInForce(), in.sentRates) {
			s.applyRules(in, rs)
		}
		if in.base != nil {
			s.applyTargets(in, s.core.WithBudgets(*in.base, in.service))
		}
	}
	return nil
}

// report makes one instance's report at now, as its stream does: the
// counts since its last one, through sampling.Core.Report with the
// stream's keeper, the targets as the budgets have them.
func (s *sim) report(ctx context.Context, in *instance, now time.Time, last bool) error {
	s.advance(in, now)
	span := now.Sub(in.lastReport)
	if in.lastReport.IsZero() {
		span = now.Sub(s.start)
	}
	in.lastReport = now
	docs := make([]sampling.Statistics, 0, len(in.rules))
	for _, rt := range in.rules {
		var round *rand.Rand
		if last {
			round = in.rng
		}
		req, smp, brw := rt.take(round)
		docs = append(docs, sampling.Statistics{Rule: rt.sim.rule.Name, Requests: req, Sampled: smp, Borrowed: brw, Time: now, Interval: max(span, time.Millisecond)})
	}
	if len(docs) == 0 {
		return nil
	}
	in.seq++
	base, err := s.core.Report(ctx, sampling.Report{Client: in.id, Service: in.service, Statistics: docs, Carry: true, Seq: in.seq, Applied: in.version}, in.keeper)
	if err != nil {
		return fmt.Errorf("fleetsim: report of %s at %v: %w", in.id, now, err)
	}
	if len(base.Rejected) > 0 {
		r := base.Rejected[0]
		return fmt.Errorf("fleetsim: report of %s at %v: rule %s refused: %s: %s", in.id, now, r.Rule, r.Code, r.Message)
	}
	s.fleet.Reports++
	s.applyTargets(in, s.core.WithBudgets(base, in.service))
	for i := range base.Targets {
		base.Targets[i].Receipt = ""
	}
	in.base = &base
	if s.b == nil || last {
		return nil
	}
	return s.decideWoken(ctx, now)
}

// applyRules takes a rule set's rates as the SDK does: those in force where
// a budget lowers them (the fixed rate, and borrowing scaled by the
// reservoir factor), else the rule's fixed rate unless a target of this
// rules version or later already gave the one in force.
func (s *sim) applyRules(in *instance, rs *pb.RuleSet) {
	in.sentVersion, in.sentRates = rs.GetRulesVersion(), rs.GetRatesInForce()
	version := rs.GetRulesVersion()
	inForce := map[string]*pb.RuleRates{}
	for _, r := range rs.GetRatesInForce() {
		inForce[r.GetRuleName()] = r
	}
	in.version = version
	for _, r := range rs.GetRules() {
		rt := in.byName[r.GetName()]
		if rt == nil {
			continue
		}
		if f := inForce[r.GetName()]; f != nil {
			rt.fixed = f.GetFixedRate()
			rt.borrowRate = min(1, max(0, f.GetReservoirFactor()))
			rt.withheld = rt.withheld || f.GetFirstBorrowWithheld() && rt.expiry.IsZero()
		} else {
			rt.borrowRate = 1
			if rt.targetVersion < version {
				rt.fixed = r.GetFixedRate()
			}
		}
		rt.setBorrow()
	}
}

// applyTargets takes targets as the SDK does: the quota (a fresh bucket
// starts full but for a random phase), its expiry, the fixed rate in force,
// and the end of a withheld first borrow.
func (s *sim) applyTargets(in *instance, ts sampling.TargetSet) {
	for _, t := range ts.Targets {
		rt := in.byName[t.Rule]
		if rt == nil {
			continue
		}
		rt.quota.set(t.Quota, in.rng.Float64())
		rt.expiry = t.Expiry
		if rt.withheld {
			rt.withheld = false
			rt.setBorrow()
		}
		if ts.RulesVersion >= in.version {
			rt.fixed = t.FixedRate
			rt.targetVersion = ts.RulesVersion
		}
	}
}

// advance plays an instance's requests from its last time to now at the
// rates in force, steady over pieces of at most piece, split where a quota
// lapses.
func (s *sim) advance(in *instance, now time.Time) {
	for in.last.Before(now) {
		to := minTime(now, in.last.Add(piece))
		for _, rt := range in.rules {
			if !rt.expiry.IsZero() && rt.expiry.After(in.last) && rt.expiry.Before(to) {
				to = rt.expiry
			}
		}
		dt := to.Sub(in.last).Seconds()
		rate := s.cfg.RequestRate(in.last.Add(to.Sub(in.last) / 2))
		for _, rt := range in.rules {
			if rt.sim.weight <= 0 {
				continue
			}
			n := rate * rt.sim.share * in.weight / rt.sim.weight * dt
			// The SDK spends its quota while it is current, borrows only
			// once it has lapsed (or before the first), and samples the
			// rest at the fixed rate in force.
			var res, brw float64
			if !rt.expiry.IsZero() && in.last.Before(rt.expiry) {
				res = rt.quota.take(n, dt)
				rt.borrow.refill(dt)
			} else {
				rt.quota.refill(dt)
				brw = rt.borrow.take(n, dt)
			}
			fix := (n - res - brw) * rt.fixed
			rt.add(n, res, brw, fix)
			s.fleet.ReservoirTraces += res
			s.fleet.BorrowedTraces += brw
			s.fleet.FixedRateTraces += fix
			s.res.Requests += n
			rt.sim.traces += res + brw + fix
		}
		in.last = to
	}
}

// unenforced adds the fleet's traffic since the last call at the rules'
// own rates (the fast model's formula), for the figure without a budget.
func (s *sim) unenforced(now time.Time) {
	from := s.fleetLast
	if from.IsZero() {
		from = s.start
	}
	for t := from; t.Before(now); {
		to := minTime(now, t.Add(piece))
		dt := to.Sub(t).Seconds()
		rate := s.cfg.RequestRate(t.Add(to.Sub(t) / 2))
		for _, sr := range s.ruleList {
			if sr.weight <= 0 {
				continue
			}
			n := rate * sr.share * dt
			r := math.Min(n, float64(sr.rule.ReservoirSize)*dt)
			sr.unenforced += r + sr.rule.FixedRate*(n-r)
		}
		t = to
	}
	s.fleetLast = now
}

// noteDecision keeps the extremes of the decisions.
func (s *sim) noteDecision(d *budget.Decision) { s.simBudget().Note(d, s.capT, s.ruleFac) }

// noteSpend records when the month's spend, as the controller read it,
// first reached each spend threshold.
func (s *sim) noteSpend(now time.Time, spent float64) {
	sb := s.simBudget()
	money := s.b.Cost(spent)
	for _, t := range s.b.SpendThresholds {
		if !s.crossed[t] && money >= t*s.b.MonthlyAmount() {
			s.crossed[t] = true
			sb.SpendCrossings = append(sb.SpendCrossings, budget.SimCrossing{Threshold: t, At: now, AtHours: now.Sub(s.start).Hours()})
		}
	}
}

// closeMonth records a month's spend as the store counted it.
func (s *sim) closeMonth(ctx context.Context, month time.Time) error {
	u, err := s.st.Usage(ctx, s.b.Name, month)
	if err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	_, spent := u.Totals()
	m := budget.SimMonth{Month: month.Format("2006-01"), SpentTraces: spent, Spent: s.b.Cost(spent)}
	if s.capT > 0 {
		m.SpentRatio = spent / s.capT
	}
	s.months = append(s.months, m)
	s.crossed = map[float64]bool{}
	return nil
}

func (s *sim) simBudget() *budget.SimBudget {
	if s.res.SimBudget == nil {
		s.res.SimBudget = &budget.SimBudget{
			MonthlyAmount: s.b.MonthlyAmount(), Mode: s.b.Mode.String(), CapTraces: s.capT,
			MinFixedRateFactor: 1, MinReservoirFactor: 1,
			Alerts: []budget.SimAlert{}, SpendCrossings: []budget.SimCrossing{}, Rules: []budget.SimRule{},
		}
	}
	return s.res.SimBudget
}

// result gathers the run's figures: the traces the instances sampled, and
// the budget's spend and alerts as the store holds them.
func (s *sim) result(ctx context.Context) (budget.SimResult, error) {
	res := &s.res
	days := int(math.Ceil(s.end.Sub(s.start).Hours() / 24))
	res.Start, res.Days, res.IntervalSeconds = s.start, days, s.cfg.Interval.Seconds()
	price := budget.Units(s.cfg.PricePerMillionMicros)
	res.Currency = budget.DefaultCurrency
	if s.b != nil {
		price, res.Currency = s.b.PricePerMillion(), s.b.Currency
	}
	for _, sr := range s.ruleList {
		res.Traces += sr.traces
		res.UnenforcedTraces += sr.unenforced
	}
	secs := s.end.Sub(s.start).Seconds()
	s.fleet.Seconds = secs
	res.Cost = cents(res.Traces / 1e6 * price)
	res.MonthlyCost = cents(res.Traces / 1e6 * price / secs * 30 * 86400)
	res.UnenforcedCost = cents(res.UnenforcedTraces / 1e6 * price)
	if s.b != nil {
		sb := s.simBudget()
		if err := s.closeMonth(ctx, budget.MonthStart(s.end.Add(-time.Nanosecond))); err != nil {
			return budget.SimResult{}, err
		}
		worst := budget.WorstMonth(s.months)
		sb.Spent, sb.SpentTraces, sb.SpentRatio = worst.Spent, worst.SpentTraces, worst.SpentRatio
		if len(s.months) > 1 {
			sb.Months = s.months
		}
		alerts, err := s.alerts(ctx)
		if err != nil {
			return budget.SimResult{}, err
		}
		sb.Alerts = alerts
		for _, sr := range s.ruleList {
			if !s.inScope(sr) {
				continue
			}
			x := s.ruleFac[sr.rule.Name]
			if x == nil {
				x = &[3]float64{1, 1, 1}
			}
			sb.Rules = append(sb.Rules, budget.SimRule{
				Name: sr.rule.Name, Priority: s.b.Priority(sr.rule.Name, sr.rule.Labels),
				Traces: math.Round(sr.traces), UnenforcedTraces: math.Round(sr.unenforced),
				MinFixedRateFactor: x[0], MaxFixedRateFactor: x[1], MinReservoirFactor: x[2],
			})
		}
		slices.SortFunc(sb.Rules, func(a, b budget.SimRule) int { return strings.Compare(a.Name, b.Name) })
	}
	fleet := s.fleet
	fleet.ReservoirTraces = math.Round(fleet.ReservoirTraces)
	fleet.BorrowedTraces = math.Round(fleet.BorrowedTraces)
	fleet.FixedRateTraces = math.Round(fleet.FixedRateTraces)
	res.Fleet = &fleet
	budget.RoundResult(res, 0)
	res.TracesPerDay = math.Round(res.Traces / secs * 86400)
	return *res, nil
}

// inScope says whether the budget counts some of a rule's traffic: its
// labels are in scope for a service some instance holding it runs in.
func (s *sim) inScope(sr *simRule) bool {
	for _, in := range s.insts {
		if in.byName[sr.rule.Name] != nil && s.b.Scope.Covers(in.service, &sr.rule) {
			return true
		}
	}
	return false
}

// alerts are the alerts the store recorded, oldest first.
func (s *sim) alerts(ctx context.Context) ([]budget.SimAlert, error) {
	var out []budget.SimAlert
	token := ""
	for {
		page, err := s.st.Alerts(ctx, s.b.Name, 1000, token)
		if err != nil {
			return nil, fmt.Errorf("fleetsim: %w", err)
		}
		for _, a := range page.Alerts {
			out = append(out, budget.SimAlert{Kind: a.Kind.String(), Threshold: a.Threshold, At: a.Time, AtHours: a.Time.Sub(s.start).Hours(),
				Spent: a.Spent, Forecast: a.Forecast, Message: a.Message})
		}
		if token = page.NextToken; token == "" {
			break
		}
	}
	slices.SortStableFunc(out, func(a, b budget.SimAlert) int { return a.At.Compare(b.At) })
	if out == nil {
		out = []budget.SimAlert{}
	}
	return out, nil
}

func cents(x float64) float64 { return math.Round(x*100) / 100 }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// jitter is the SDK's: d ± 10 %.
func jitter(d time.Duration, rng *rand.Rand) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rng.Float64()))
}

// zipfWeights are the instances' shares of the traffic (summing to 1), by
// a Zipf law of exponent z over the instances in a shuffled order, as
// bench/loadgen spreads its traffic.
func zipfWeights(n int, z float64) []float64 {
	w := make([]float64, n)
	var sum float64
	for i := range w {
		w[i] = 1 / math.Pow(float64(i+1), z)
		sum += w[i]
	}
	for i := range w {
		w[i] /= sum
	}
	rand.New(rand.NewPCG(5, 5)).Shuffle(n, func(i, j int) { w[i], w[j] = w[j], w[i] })
	return w
}
