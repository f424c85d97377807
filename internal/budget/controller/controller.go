// Package controller runs the budget controller: once per interval for the
// whole control plane (whichever replica claims the interval in the store), it
// reads every budget's month, decides the enforcement factors and the alerts
// that are due with package budget's math, stores the decisions for every
// replica to apply to the targets it hands out, fires each alert once, and
// delivers it to the budget's webhooks.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Store is what the controller needs from the store.
type Store interface {
	RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error)
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
	ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error)
	PutStates(ctx context.Context, states []budget.State) error
	PutState(ctx context.Context, st budget.State) error
	States(ctx context.Context) (map[string]budget.State, error)
	FireAlert(ctx context.Context, a budget.Alert) (budget.Alert, bool, error)
}

// Options configure a Controller. Zero values take the defaults given.
type Options struct {
	// Interval between decisions, and the SDKs' report interval (the
	// ledger's bucket length). Default 10 s.
	Interval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Webhook delivers alerts. Default: budget.Webhook's defaults.
	Webhook *budget.Webhook
	// Registerer receives the alert counter. Default: none.
	Registerer prometheus.Registerer
	// Secrets opens webhook secrets sealed at rest (budget.SealSecrets).
	// Default: none; secrets stored before a key existed are plain and
	// need none.
	Secrets *secrets.Box
}

// Controller decides budgets. Run it on every replica; only one of them
// works on each interval.
type Controller struct {
	store   Store
	catalog *catalog.Catalog
	opts    Options
	fired   *prometheus.CounterVec
	// failing is the condition "ticks fail": logged when it begins and
	// ends, not every interval.
	failing *condition.Condition

	deliveries sync.WaitGroup

	// fleet is the fleet's month as last read, for coverage: read again
	// once an hour (fleetMaxAge), since the pairs only grow.
	fleetMu sync.Mutex
	fleet   *fleetRead

	// The budgets woken by their first traffic (Wake), to decide at once:
	// woken waits for DecideWoken, which Run calls when wake is
	// signalled; decidedAt is when each was last decided so, for the
	// wakeGap.
	wakeMu    sync.Mutex
	woken     map[string]struct{}
	decidedAt map[string]time.Time
	wake      chan struct{}
}

// wakeGap is the shortest time between two decisions of one budget woken
// by its traffic on one replica: the replica's catalog may hold the
// decision before the one just stored for a moment, and its reports go on
// waking the budget meanwhile.
const wakeGap = time.Second

// maxWoken bounds the budgets waiting to be decided at once; past it a
// budget waits for the next interval. Budgets are few: a bound, not a
// limit anyone meets.
const maxWoken = 10_000

// fleetRead is one read of the fleet's usage record.
type fleetRead struct {
	at time.Time
	u  budget.Usage
}

// fleetMaxAge is how old a read of the fleet's record coverage may use.
const fleetMaxAge = time.Hour

// New returns a controller reading budgets and rules from cat.
func New(st Store, cat *catalog.Catalog, opts Options) *Controller {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Webhook == nil {
		opts.Webhook = &budget.Webhook{}
	}
	c := &Controller{store: st, catalog: cat, opts: opts, woken: map[string]struct{}{}, decidedAt: map[string]time.Time{}, wake: make(chan struct{}, 1), fired: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "controlplane_budget_alerts_fired_total",
		Help: "Budget alerts fired by this replica, by budget and kind.",
	}, []string{"budget", "kind"})}
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_budget_controller_errors_total",
		Help: "Budget controller intervals that failed, mostly for want of the store; the log says when such failures begin and end.",
	})
	c.failing = condition.New(opts.Logger, "budget controller: ticks fail; budgets keep their last decisions", failures)
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(c.fired, failures)
	}
	return c
}

// Run decides every interval, and the budgets woken by their traffic
// between intervals (Wake), until ctx ends, then waits for webhook
// deliveries in flight (they give up when ctx ends).
func (c *Controller) Run(ctx context.Context) {
	defer c.deliveries.Wait()
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			if _, err := c.DecideWoken(ctx); err != nil && ctx.Err() == nil {
				c.opts.Logger.Warn("budget controller: a budget's first traffic was not decided at once; the next interval will", "err", err)
			}
		case <-t.C:
			switch err := c.Tick(ctx); {
			case ctx.Err() != nil:
			case err != nil:
				c.failing.Occurred(ctx, err)
			default:
				c.failing.Cleared(ctx)
			}
		}
	}
}

// Wait waits for the webhook deliveries in flight.
func (c *Controller) Wait() { c.deliveries.Wait() }

// Tick claims the current interval and, if this replica got it, decides.
func (c *Controller) Tick(ctx context.Context) error {
	now := c.opts.Now()
	tick := now.UnixNano() / int64(c.opts.Interval)
	ok, err := c.store.ClaimTick(ctx, tick, 2*c.opts.Interval)
	if err != nil || !ok {
		return err
	}
	return c.Step(ctx, now)
}

// Step decides every budget at now, stores the decisions and fires the alerts
// that are due.
func (c *Controller) Step(ctx context.Context, now time.Time) error {
	budgets := c.catalog.CurrentBudgets().Budgets
	prev, err := c.store.States(ctx)
	if err != nil {
		return err
	}
	states := make([]budget.State, 0, len(budgets))
	var failed error
	for i := range budgets {
		st, err := c.decide(ctx, budgets[i], prev, now, true)
		failed = errors.Join(failed, err)
		if st != nil {
			states = append(states, *st)
		}
	}
	return errors.Join(failed, c.store.PutStates(ctx, states))
}

// DecideBudget decides one budget now, as created or changed (b as
// stored), and stores its decision, leaving the others' as they are, so
// that a new budget, or a changed amount, is enforced at once rather than at
// the next interval. The budget service calls it after every create and
// update; the next Step decides it again with the rest, and fires its
// alerts (this call's context is the edit's, too short for webhooks). The
// store keeps the newer decision of each budget (budget.CompareStates): a
// Step that read the budgets before the edit and stores after this call
// cannot replace this decision with one for the budget as it was.
func (c *Controller) DecideBudget(ctx context.Context, b budget.Budget) error {
	now := c.opts.Now()
	prev, err := c.store.States(ctx)
	if err != nil {
		return err
	}
	st, failed := c.decide(ctx, b, prev, now, false)
	if st == nil {
		return failed
	}
	return errors.Join(failed, c.store.PutState(ctx, *st))
}

// Wake has the budget called name decided soon, on this replica (Run
// does it, or DecideWoken): the report pipeline (sampling.Core) calls it
// once a report of traffic in the scope of an enforcing budget whose
// decision saw none is recorded. That decision lowers nothing, and the
// budget's first traffic would otherwise run at the rules' own rates until
// the next interval: for a small budget, most of what it spends. A budget
// decided so on this replica less than wakeGap ago is not woken again. It
// never blocks.
func (c *Controller) Wake(name string) {
	now := c.opts.Now()
	c.wakeMu.Lock()
	if at, ok := c.decidedAt[name]; ok && now.Sub(at) < wakeGap && !now.Before(at) {
		c.wakeMu.Unlock()
		return
	}
	if len(c.woken) < maxWoken {
		c.woken[name] = struct{}{}
	}
	c.wakeMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// DecideWoken decides the budgets woken since its last call (Wake) now,
// as DecideBudget does (alerts wait for the tick), and returns how many
// it decided. A budget whose stored decision has seen its traffic already
// (another replica's, or the tick's, that this replica's catalog has not
// loaded yet) is left as it is. Run calls it when a budget is woken; the
// simulator (package fleetsim), which runs on a virtual clock, after each
// report.
//
// It is safe beside the ticks of any replica: the store keeps the newer
// decision of each budget (budget.CompareStates: same budget and revision,
// so the later computation), and a decision stored with PutState leaves
// the others' as they are.
func (c *Controller) DecideWoken(ctx context.Context) (int, error) {
	now := c.opts.Now()
	c.wakeMu.Lock()
	names := make([]string, 0, len(c.woken))
	for name := range c.woken {
		names = append(names, name)
	}
	clear(c.woken)
	maps.DeleteFunc(c.decidedAt, func(_ string, at time.Time) bool { return now.Sub(at) >= wakeGap || now.Before(at) })
	for _, name := range names {
		c.decidedAt[name] = now
	}
	c.wakeMu.Unlock()
	if len(names) == 0 {
		return 0, nil
	}
	slices.Sort(names) // in one order, for the simulator's runs
	prev, err := c.store.States(ctx)
	if err != nil {
		return 0, err
	}
	budgets := c.catalog.CurrentBudgets()
	month := budget.MonthStart(now)
	var failed error
	decided := 0
	for _, name := range names {
		i := slices.IndexFunc(budgets.Budgets, func(b budget.Budget) bool { return b.Name == name })
		if i < 0 {
			continue // deleted since
		}
		b := budgets.Budgets[i]
		if p, ok := prev[name]; ok && p.BudgetUID == b.UID && p.MonthStart.Equal(month) && p.Requests > 0 {
			continue
		}
		st, err := c.decide(ctx, b, prev, now, false)
		failed = errors.Join(failed, err)
		if st == nil {
			continue
		}
		if err := c.store.PutState(ctx, *st); err != nil {
			failed = errors.Join(failed, fmt.Errorf("budget %s: %w", name, err))
			continue
		}
		decided++
	}
	if decided > 0 {
		// This replica's reports take the decision up at once; the others
		// on the store's change hint.
		c.catalog.Kick()
	}
	return decided, failed
}

// decide decides one budget at now (prev are the stored states) and, with
// alerts, fires its alerts that are due. It returns the state to store (its last one
// when its month cannot be read; nil if it has none) and what failed.
func (c *Controller) decide(ctx context.Context, b budget.Budget, prev map[string]budget.State, now time.Time, alerts bool) (*budget.State, error) {
	view := c.catalog.Current()
	month := budget.MonthStart(now)
	var failed error
	var p *budget.State
	if st, ok := prev[b.Name]; ok && st.MonthStart.Equal(month) && st.BudgetUID == b.UID {
		p = &st
	}
	u, err := c.store.Usage(ctx, b.Name, now)
	backfilled := false
	if err == nil {
		if backfilled, err = c.backfill(ctx, &b, p, &u, view, now); err != nil {
			failed = errors.Join(failed, fmt.Errorf("budget %s: count the month before it was created: %w", b.Name, err))
		} else if backfilled {
			u, err = c.store.Usage(ctx, b.Name, now)
		}
	}
	if err != nil {
		// One unreadable budget must not freeze the others: keep its
		// last decision and go on.
		failed = errors.Join(failed, fmt.Errorf("budget %s: %w", b.Name, err))
		if p, ok := prev[b.Name]; ok {
			return &p, failed
		}
		return nil, failed
	}
	models := scopeModels(&b, &u, view)
	if err := c.scopeReservoirs(ctx, &u, models, trafficSince(p), now); err != nil {
		failed = errors.Join(failed, fmt.Errorf("budget %s: %w", b.Name, err))
	}
	in := budget.Input{Usage: u, Rules: models}
	if p != nil {
		in.Prev = &p.Decision
	}
	if b.CoverageMinutes > 0 {
		fleet, err := c.fleetUsage(ctx, now, false)
		if err != nil {
			failed = errors.Join(failed, fmt.Errorf("budget %s: coverage: %w", b.Name, err))
		} else {
			in.CoveragePairs = coveragePairs(&b, fleet, view)
		}
	}
	d := budget.Decide(&b, in, now, c.opts.Interval)
	if backfilled {
		d.Memory.Backfilled = true
	}
	requests, _ := u.Totals()
	st := &budget.State{Budget: b.Name, BudgetUID: b.UID, BudgetCreated: b.CreateTime, BudgetRevision: b.Revision, MonthStart: month, Computed: now, Decision: d, Requests: requests, Rules: u.Rules}
	if !alerts {
		return st, failed
	}
	for _, a := range budget.DueAlerts(&b, d, now) {
		stored, fired, err := c.store.FireAlert(ctx, a)
		if err != nil {
			// Still due next interval: the store never recorded it.
			failed = errors.Join(failed, fmt.Errorf("budget %s: fire alert: %w", b.Name, err))
			continue
		}
		if !fired {
			continue
		}
		c.fired.WithLabelValues(b.Name, a.Kind.String()).Inc()
		c.opts.Logger.Warn("budget alert", "budget", b.Name, "kind", a.Kind.String(), "threshold", a.Threshold, "message", a.Message)
		c.deliver(ctx, &b, stored)
	}
	return st, failed
}

// fleetUsage returns the fleet's month: the last read if it is of this
// month and less than fleetMaxAge old (and fresh is false), else a new one.
func (c *Controller) fleetUsage(ctx context.Context, now time.Time, fresh bool) (*budget.Usage, error) {
	c.fleetMu.Lock()
	defer c.fleetMu.Unlock()
	if f := c.fleet; !fresh && f != nil && f.u.MonthStart.Equal(budget.MonthStart(now)) && now.Sub(f.at) < fleetMaxAge && !now.Before(f.at) {
		return &f.u, nil
	}
	u, err := c.store.Usage(ctx, store.FleetUsage, now)
	if err != nil {
		return nil, err
	}
	c.fleet = &fleetRead{at: now, u: u}
	return &c.fleet.u, nil
}

// coveragePairs counts the service × rule pairs in a budget's scope that
// saw traffic this month, as the fleet's record kept them.
func coveragePairs(b *budget.Budget, fleet *budget.Usage, view *catalog.View) int {
	var n int
	for rule, services := range fleet.Services {
		r := view.Rule(rule)
		if r == nil {
			continue
		}
		for svc, cnt := range services {
			if cnt.Requests > 0 && b.Scope.Covers(svc, r) {
				n++
			}
		}
	}
	return n
}

// backfill adds to the usage of a budget created during this month what its
// scope recorded in the month before its creation, from the fleet's record,
// once (the decision remembers it: Memory.Backfilled). The fleet keeps each
// rule's hours but each service's month only, so a rule's hours count in
// the proportion of its month's traffic that came from services in scope.
// The hour of the creation counts what the fleet recorded in it beyond what
// the budget itself did: both record every report made once the budget
// existed, in one atomic step. It is written under a key of its own, so
// that a write whose answer was lost and is sent again at the next interval
// is applied once. A budget whose name already has usage from before its
// creation (one of the same name, deleted this month) keeps that instead:
// usage is kept by name.
func (c *Controller) backfill(ctx context.Context, b *budget.Budget, prev *budget.State, u *budget.Usage, view *catalog.View, now time.Time) (bool, error) {
	month := budget.MonthStart(now)
	if b.UID == "" || !b.CreateTime.After(month) || prev != nil && prev.Decision.Memory.Backfilled {
		return false, nil
	}
	hc := int(b.CreateTime.Sub(month) / time.Hour)
	for h := 0; h < hc && h < len(u.Requests); h++ {
		if u.Requests[h] > 0 || u.Sampled[h] > 0 {
			return true, nil // a predecessor's
		}
	}
	fleet, err := c.fleetUsage(ctx, now, true)
	if err != nil {
		return false, err
	}
	// The budget's own month, read after the fleet's: what it counts of
	// the creation hour then includes all the fleet had counted since the
	// creation, so the difference never counts a report twice (it may miss
	// one that landed between the two reads, the safe side).
	own, err := c.store.Usage(ctx, b.Name, now)
	if err != nil {
		return false, err
	}
	incs := backfillIncrements(b, fleet, &own, view, b.CreateTime)
	if len(incs) > 0 {
		if _, err := c.store.RecordReports(ctx, store.ReportBatch{Now: now, Usage: incs, Key: "backfill-" + b.UID}); err != nil {
			return false, err
		}
	}
	return true, nil
}

// backfillIncrements are the increments of backfill: the fleet's hours
// before the creation hour in the scope's share, and of the creation hour
// what the fleet's share holds beyond the budget's own (own).
func backfillIncrements(b *budget.Budget, fleet, own *budget.Usage, view *catalog.View, created time.Time) []store.UsageIncrement {
	month := fleet.MonthStart
	hc := int(created.Sub(month) / time.Hour)
	var incs []store.UsageIncrement
	// The creation hour's sampled traces are known per rule in the fleet
	// but only in total in the budget: the remainder is shared out over
	// the rules by their fleet counts.
	type lastHour struct {
		rule     string
		req, smp float64 // the scope's share of the fleet's
	}
	var last []lastHour
	var lastSmp float64
	for rule := range fleet.Rules {
		r := view.Rule(rule)
		if r == nil {
			if len(b.Scope.RuleLabels) > 0 {
				continue // deleted since: its labels are unknown
			}
			r = &rules.Rule{Name: rule}
		}
		shareR, shareS := 1.0, 1.0
		if len(b.Scope.Services) > 0 || !b.Scope.Covers("", r) {
			var inR, allR, inS, allS float64
			for svc, cnt := range fleet.Services[rule] {
				allR, allS = allR+float64(cnt.Requests), allS+float64(cnt.Sampled)
				if b.Scope.Covers(svc, r) {
					inR, inS = inR+float64(cnt.Requests), inS+float64(cnt.Sampled)
				}
			}
			shareR, shareS = 0, 0
			if allR > 0 {
				shareR = inR / allR
			}
			if allS > 0 {
				shareS = inS / allS
			}
		}
		if shareR == 0 && shareS == 0 {
			continue
		}
		reqs, smps := fleet.RuleRequests[rule], fleet.RuleSampled[rule]
		for h := 0; h < hc && h < len(fleet.Requests); h++ {
			req, smp := int64(math.Round(hourOf(reqs, h)*shareR)), int64(math.Round(hourOf(smps, h)*shareS))
			if req > 0 || smp > 0 {
				incs = append(incs, store.UsageIncrement{Budget: b.Name, Month: month, Hour: h, Rule: rule, Requests: req, Sampled: smp})
			}
		}
		if hc < len(fleet.Requests) {
			l := lastHour{rule: rule, req: hourOf(reqs, hc) * shareR, smp: hourOf(smps, hc) * shareS}
			last = append(last, l)
			lastSmp += l.smp
		}
	}
	var ownSmp float64
	if hc < len(own.Sampled) {
		ownSmp = own.Sampled[hc]
	}
	smpLeft := max(0, lastSmp-ownSmp)
	for _, l := range last {
		req := int64(math.Round(max(0, l.req-hourOf(own.RuleRequests[l.rule], hc))))
		var smp int64
		if lastSmp > 0 {
			smp = int64(math.Round(smpLeft * l.smp / lastSmp))
		}
		if req > 0 || smp > 0 {
			incs = append(incs, store.UsageIncrement{Budget: b.Name, Month: month, Hour: hc, Rule: l.rule, Requests: req, Sampled: smp})
		}
	}
	return incs
}

// hourOf is xs[h], or 0 past its end.
func hourOf(xs []float64, h int) float64 {
	if h < len(xs) {
		return xs[h]
	}
	return 0
}

// scopeModels returns the rules a budget plans, sorted by name: those whose
// labels its scope selects (its service globs cannot be checked without a
// service, so a rule with none of the scope's traffic yet is planned with
// none), and those with usage in its month.
func scopeModels(b *budget.Budget, u *budget.Usage, view *catalog.View) []budget.RuleModel {
	seen := map[string]bool{}
	var models []budget.RuleModel
	add := func(r *rules.Rule) {
		if r == nil || seen[r.Name] {
			return
		}
		seen[r.Name] = true
		models = append(models, budget.RuleModel{Name: r.Name, FixedRate: r.FixedRate, Reservoir: float64(r.ReservoirSize), Labels: r.Labels})
	}
	for i := range view.Rules {
		if (budget.Scope{RuleLabels: b.Scope.RuleLabels}).Covers("", &view.Rules[i]) {
			add(&view.Rules[i])
		}
	}
	for name := range u.Rules {
		add(view.Rule(name))
	}
	slices.SortFunc(models, func(a, b budget.RuleModel) int { return strings.Compare(a.Name, b.Name) })
	return models
}

// scopeReservoirs scales each rule's fleet-wide reservoir down to the part of
// it that the budget's scope gets. A client is given R × its rate / the fleet's
// rate, so the clients in scope together get R × scope rate / fleet rate; the
// forecast and the floor must count that, not R (a budget on one small
// service would otherwise expect, and promise as its floor, the whole
// fleet's reservoir). The fleet rates come from the ledger; adding nothing
// to it reads them.
func (c *Controller) scopeReservoirs(ctx context.Context, u *budget.Usage, models []budget.RuleModel, since, now time.Time) error {
	if len(models) == 0 {
		return nil
	}
	ledger := reservoir.NewLedger(c.opts.Interval)
	reads := make([]store.RateUpdate, len(models))
	for i, m := range models {
		reads[i] = store.RateUpdate{Rule: m.Name, Add: reservoir.Receipt{Bucket: ledger.Bucket(now)}}
	}
	fleet, err := c.store.RecordReports(ctx, store.ReportBatch{Now: now, Ledger: ledger, Rates: reads})
	if err != nil {
		return err
	}
	for i := range models {
		if fleet[i].Fleet <= 0 {
			continue // no current traffic known: keep the whole reservoir
		}
		if scope := recentRate(u, models[i].Name, since, now); scope > 0 {
			models[i].Reservoir *= min(1, scope/fleet[i].Fleet)
		}
	}
	return nil
}

// trafficSince is when the budget's traffic started, as its last decision
// (prev, nil for none) knows it: its memory's FirstSeen, or, for a
// decision that saw no traffic, when it read its usage (traffic started
// after). Zero when unknown.
func trafficSince(prev *budget.State) time.Time {
	switch {
	case prev == nil:
		return time.Time{}
	case !prev.Decision.Memory.FirstSeen.IsZero():
		return prev.Decision.Memory.FirstSeen
	case prev.Requests <= 0:
		return prev.Decision.Memory.Observed
	}
	return time.Time{}
}

// minRateWindow is the shortest time recentRate takes a rate over.
const minRateWindow = time.Minute

// recentRate is a rule's request rate in the scope over the last complete
// hour, or over the current hour so far when there is none yet; from the
// budget's hours in proportion to the rule's month when its own hours are
// not kept. An hour counts from since (the budget's traffic started then)
// if that is in it: the requests of traffic that started at 10:46 are not
// spread over the 46 minutes before it, which made the scope's part of
// the fleet's reservoir, for the first hour of a budget's traffic, a
// fraction of what it was (for a tiny budget, a reservoir left uncut
// until the plan caught up).
func recentRate(u *budget.Usage, rule string, since, now time.Time) float64 {
	series := u.RuleRequests[rule]
	share := 1.0
	if len(series) == 0 {
		var total int64
		for _, ru := range u.Rules {
			total += ru.Requests
		}
		if total <= 0 {
			return 0
		}
		series, share = u.Requests, float64(u.Rules[rule].Requests)/float64(total)
	}
	h := int(now.Sub(u.MonthStart) / time.Hour)
	// over is the time an hour's requests came in: from its start, or
	// from since, to its end or now; at least minRateWindow.
	over := func(h int) float64 {
		from := u.MonthStart.Add(time.Duration(h) * time.Hour)
		to := from.Add(time.Hour)
		if now.Before(to) {
			to = now
		}
		if since.After(from) && since.Before(to) {
			from = since
		}
		return max(to.Sub(from), minRateWindow).Seconds()
	}
	if h >= 1 && h-1 < len(series) && series[h-1] > 0 {
		return share * series[h-1] / over(h-1)
	}
	if h >= 0 && h < len(series) {
		return share * series[h] / over(h)
	}
	return 0
}

// deliver posts the alert to each of b's channels in the background; the
// store has already recorded that it fired, so a slow receiver never holds
// up the controller. Sealed secrets are opened here, for the signature; an
// error names the budget and channel, never the secret.
func (c *Controller) deliver(ctx context.Context, b *budget.Budget, a budget.Alert) {
	open, err := budget.OpenSecrets(*b, c.opts.Secrets)
	if err != nil {
		c.opts.Logger.Error("alert not delivered", "budget", a.Budget, "alert", a.ID, "err", err)
		return
	}
	for _, ch := range open.Channels {
		c.deliveries.Add(1)
		go func() {
			defer c.deliveries.Done()
			if err := c.opts.Webhook.Deliver(ctx, ch, &a); err != nil {
				c.opts.Logger.Error("alert not delivered", "budget", a.Budget, "alert", a.ID, "err", err)
			}
		}()
	}
}

var _ Store = store.Store(nil)
