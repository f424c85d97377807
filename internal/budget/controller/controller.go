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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/condition"
	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/store"
)

// Store is what the controller needs from the store.
type Store interface {
	RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error)
	Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error)
	ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error)
	PutStates(ctx context.Context, states []budget.State) error
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
}

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
	c := &Controller{store: st, catalog: cat, opts: opts, fired: prometheus.NewCounterVec(prometheus.CounterOpts{
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

// Run decides every interval until ctx ends, then waits for webhook
// deliveries in flight (they give up when ctx ends).
func (c *Controller) Run(ctx context.Context) {
	defer c.deliveries.Wait()
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
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
	view := c.catalog.Current()
	month := budget.MonthStart(now)
	states := make([]budget.State, 0, len(budgets))
	var failed error
	for i := range budgets {
		b := budgets[i]
		u, err := c.store.Usage(ctx, b.Name, now)
		if err != nil {
			// One unreadable budget must not freeze the others: keep its
			// last decision and go on.
			failed = errors.Join(failed, fmt.Errorf("budget %s: %w", b.Name, err))
			if p, ok := prev[b.Name]; ok {
				states = append(states, p)
			}
			continue
		}
		var models []budget.RuleModel
		for name := range u.Rules {
			if r := view.Rule(name); r != nil {
				models = append(models, budget.RuleModel{Name: name, FixedRate: r.FixedRate, Reservoir: float64(r.ReservoirSize)})
			}
		}
		if err := c.scopeReservoirs(ctx, &u, models, now); err != nil {
			failed = errors.Join(failed, fmt.Errorf("budget %s: %w", b.Name, err))
		}
		d := budget.Decide(&b, u, models, now, c.opts.Interval)
		before := budget.Decision{FixedRateFactor: 1, ReservoirFactor: 1}
		if p, ok := prev[b.Name]; ok && p.MonthStart.Equal(month) {
			before = p.Decision
		}
		requests, _ := u.Totals()
		states = append(states, budget.State{Budget: b.Name, MonthStart: month, Computed: now, Decision: d, Requests: requests, Rules: u.Rules})
		for _, a := range budget.DueAlerts(&b, d, before, now) {
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
			c.deliver(ctx, b.Channels, stored)
		}
	}
	return errors.Join(failed, c.store.PutStates(ctx, states))
}

// scopeReservoirs scales each rule's fleet-wide reservoir down to the part of
// it that the budget's scope gets. A client is given R × its rate / the fleet's
// rate, so the clients in scope together get R × scope rate / fleet rate; the
// forecast and the floor must count that, not R (a budget on one small
// service would otherwise expect, and promise as its floor, the whole
// fleet's reservoir). The fleet rates come from the ledger; adding nothing
// to it reads them.
func (c *Controller) scopeReservoirs(ctx context.Context, u *budget.Usage, models []budget.RuleModel, now time.Time) error {
	if len(models) == 0 {
		return nil
	}
	rate := recentRate(u, now)
	var total int64
	for _, ru := range u.Rules {
		total += ru.Requests
	}
	if rate <= 0 || total <= 0 {
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
		scope := rate * float64(u.Rules[models[i].Name].Requests) / float64(total)
		models[i].Reservoir *= min(1, scope/fleet[i].Fleet)
	}
	return nil
}

// recentRate is the scope's request rate over the last complete hour, or over
// the current hour so far when there is none yet.
func recentRate(u *budget.Usage, now time.Time) float64 {
	h := int(now.Sub(u.MonthStart) / time.Hour)
	if h >= 1 && h-1 < len(u.Requests) && u.Requests[h-1] > 0 {
		return u.Requests[h-1] / 3600
	}
	if h >= 0 && h < len(u.Requests) {
		elapsed := max(now.Sub(u.MonthStart.Add(time.Duration(h)*time.Hour)).Seconds(), 60)
		return u.Requests[h] / elapsed
	}
	return 0
}

// deliver posts the alert to each channel in the background; the store has
// already recorded that it fired, so a slow receiver never holds up the
// controller.
func (c *Controller) deliver(ctx context.Context, channels []budget.Channel, a budget.Alert) {
	for _, ch := range channels {
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
