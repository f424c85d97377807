// Package catalog is a replica's view of the current rules: loaded from the
// store, reloaded when another replica's edit is announced (and on a slow
// periodic check, since announcements can be lost), and handed to SDK-facing
// calls and streams without touching the store. It decides *what* the
// current state is; the server decides how streams deliver it.
package catalog

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// Source is what the catalog reads from.
type Source interface {
	Snapshot(ctx context.Context) (store.Snapshot, error)
	RulesVersion(ctx context.Context) (int64, error)
	WatchChanges(ctx context.Context, notify func(store.Topic)) error
}

// BudgetSource is what the catalog reads budgets and their enforcement
// decisions from, when its Source offers them.
type BudgetSource interface {
	Budgets(ctx context.Context, pageSize int, pageToken string) (store.BudgetPage, error)
	States(ctx context.Context) (map[string]budget.State, error)
}

// Options configure a Catalog. Zero values take the defaults given.
type Options struct {
	// Poll is how often the rules version is checked even without an
	// announcement. Default 5 s; each wait is jittered by ±20 %.
	Poll time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Catalog holds the current View. It is safe for concurrent use.
type Catalog struct {
	src  Source
	opts Options
	cur  atomic.Pointer[View]
	kick chan struct{} // one slot: "check the version now"
	load sync.Mutex    // one load at a time, so an older snapshot never replaces a newer one

	budgets atomic.Pointer[Budgets]
	// sets are the rule sets SDKs get, with the rates in force, for the
	// current view, budgets generation and month.
	sets atomic.Pointer[ruleSets]

	mu            sync.Mutex
	watchers      map[*Watcher]struct{}
	alertWatchers map[*Watcher]struct{}
}

// New returns a catalog that holds no rules until Load or Run succeeds.
func New(src Source, opts Options) *Catalog {
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Catalog{src: src, opts: opts, kick: make(chan struct{}, 1), watchers: map[*Watcher]struct{}{}, alertWatchers: map[*Watcher]struct{}{}}
	c.cur.Store(newView(store.Snapshot{}))
	c.budgets.Store(newBudgets(0, nil, map[string]budget.State{}))
	return c
}

// Current returns the latest view; never nil. Views are immutable.
func (c *Catalog) Current() *View { return c.cur.Load() }

// Load reads the rules if the store's version differs from the view's, and
// wakes every watcher when it changed. A version lower than the view's is
// taken too: the store lost its data and started again.
func (c *Catalog) Load(ctx context.Context) error {
	c.load.Lock()
	defer c.load.Unlock()
	v, err := c.src.RulesVersion(ctx)
	if err != nil {
		return err
	}
	if v != 0 && v == c.Current().Version {
		return nil
	}
	snap, err := c.src.Snapshot(ctx)
	if err != nil {
		return err
	}
	if snap.Version == c.Current().Version {
		return nil
	}
	c.cur.Store(newView(snap))
	c.opts.Logger.Debug("rules loaded", "version", snap.Version, "rules", len(snap.Rules))
	c.notify()
	return nil
}

// Run keeps the view current until ctx ends: it reloads on every change
// announcement and on a jittered poll, and keeps serving the last view while
// the store is unreachable.
func (c *Catalog) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.src.WatchChanges(ctx, c.hint)
	}()
	defer wg.Wait()
	failing := false
	for {
		err := errors.Join(c.Load(ctx), c.LoadBudgets(ctx))
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !failing:
			c.opts.Logger.Warn("cannot reload rules; serving the last ones", "version", c.Current().Version, "err", err)
		case err == nil && failing:
			c.opts.Logger.Info("rules reloaded again", "version", c.Current().Version)
		}
		failing = err != nil
		wait := time.Duration(float64(c.opts.Poll) * (0.8 + 0.4*rand.Float64()))
		if failing {
			wait = min(wait, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// hint reacts to a change notification: an alert wakes the alert
// watchers; rules and budgets (and topics it does not know) make Run
// reload. Credentials are the token cache's (package auth): a token
// created or revoked changes no rule or budget, and reloading them all for
// it would cost every replica a snapshot read per token edit.
func (c *Catalog) hint(t store.Topic) {
	switch t {
	case store.TopicAlerts:
		c.notifyAlerts()
	case store.TopicTokens:
	default:
		c.Kick()
	}
}

// Kick asks Run to check the version now; it never blocks.
func (c *Catalog) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Watcher is told when the view changes. Its channel holds at most one
// signal: a watcher that is slow to look sees one signal for many changes and
// then reads only the latest view, so a slow stream never builds a queue.
type Watcher struct {
	C      <-chan struct{}
	c      chan struct{}
	k      *Catalog
	alerts bool
}

// Watch registers a watcher of rule and budget changes; Close it when done.
func (c *Catalog) Watch() *Watcher { return c.watch(false) }

// WatchAlerts registers a watcher that is signalled when an alert fired on
// any replica; it then reads the alert list.
func (c *Catalog) WatchAlerts() *Watcher { return c.watch(true) }

func (c *Catalog) watch(alerts bool) *Watcher {
	ch := make(chan struct{}, 1)
	w := &Watcher{C: ch, c: ch, k: c, alerts: alerts}
	c.mu.Lock()
	c.set(alerts)[w] = struct{}{}
	c.mu.Unlock()
	return w
}

func (c *Catalog) set(alerts bool) map[*Watcher]struct{} {
	if alerts {
		return c.alertWatchers
	}
	return c.watchers
}

// Close unregisters the watcher.
func (w *Watcher) Close() {
	w.k.mu.Lock()
	delete(w.k.set(w.alerts), w)
	w.k.mu.Unlock()
}

// Watchers returns how many watchers are registered.
func (c *Catalog) Watchers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watchers)
}

func (c *Catalog) notify() { c.signal(c.watchers) }

func (c *Catalog) notifyAlerts() { c.signal(c.alertWatchers) }

func (c *Catalog) signal(set map[*Watcher]struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for w := range set {
		select {
		case w.c <- struct{}{}:
		default:
		}
	}
}

// maxCachedServices bounds the per-service cache of a view, so that clients
// inventing service names cannot grow memory without bound.
const maxCachedServices = 10_000

// View is one immutable rules version, with the per-service rule sets that
// SDKs ask for computed once and shared.
type View struct {
	Version int64
	Rules   []rules.Rule // in matching order
	byName  map[string]*rules.Rule
	set     *rules.Set
	// sent is each rule of set as SDKs get it, made once per view and
	// shared by every service's rule set.
	sent []*pb.Rule
	// resourceKeys are the resource attribute keys the rules name, sorted:
	// a rule set depends on an instance's resource only through them, so
	// instances that differ elsewhere (service.instance.id, host.name)
	// share one.
	resourceKeys []string

	mu       sync.Mutex
	services map[instanceKey]*pb.RuleSet
}

// instanceKey names the rule set of the instances of one service name,
// type and resource, as far as the rules can tell them apart
// (View.resourceKey).
type instanceKey struct {
	name, typ, resource string
}

func newView(snap store.Snapshot) *View {
	v := &View{Version: snap.Version, Rules: snap.Rules, byName: make(map[string]*rules.Rule, len(snap.Rules)), services: map[instanceKey]*pb.RuleSet{}}
	rules.Sort(v.Rules)
	keys := map[string]bool{}
	for i := range v.Rules {
		v.byName[v.Rules[i].Name] = &v.Rules[i]
		for k := range v.Rules[i].ResourceAttributes {
			keys[k] = true
		}
	}
	v.resourceKeys = slices.Sorted(maps.Keys(keys))
	v.set = rules.NewSet(v.Rules)
	v.sent = make([]*pb.Rule, len(v.set.Rules()))
	for i := range v.set.Rules() {
		v.sent[i] = rulepb.SamplingToProto(&v.set.Rules()[i].Rule)
	}
	return v
}

// Rule returns the named rule, or nil. The caller must not modify it.
func (v *View) Rule(name string) *rules.Rule { return v.byName[name] }

// Set returns the view's compiled rules, shared: the caller must not modify
// them.
func (v *View) Set() *rules.Set { return v.set }

// resourceKey encodes the part of an instance's resource that the view's
// rules name: each named key's value, or its absence, length-prefixed so
// that no two resources share an encoding.
func (v *View) resourceKey(resource map[string]string) string {
	if len(resource) == 0 || len(v.resourceKeys) == 0 {
		return ""
	}
	var b []byte
	for _, k := range v.resourceKeys {
		val, ok := resource[k]
		if !ok {
			b = append(b, '-')
			continue
		}
		b = strconv.AppendInt(append(b, '+'), int64(len(val)), 10)
		b = append(append(b, ':'), val...)
	}
	return string(b)
}

// ForService returns the rules whose service globs match a service, and
// whose resource globs match an instance's resource, as the API sends them
// to SDKs (apiconv.SamplingRuleToProto). The result and its rules are
// shared: the caller must not modify them.
func (v *View) ForService(name, typ string, resource map[string]string) *pb.RuleSet {
	return memo(&v.mu, v.services, instanceKey{name, typ, v.resourceKey(resource)}, func() *pb.RuleSet {
		rs := &pb.RuleSet{RulesVersion: v.Version}
		for i := range v.set.Rules() {
			if v.set.Rules()[i].MatchesInstance(name, typ, resource) {
				rs.Rules = append(rs.Rules, v.sent[i])
			}
		}
		return rs
	})
}

// memo returns the rule set m holds for key, or makes it and keeps it
// (while m holds fewer than maxCachedServices). Callers woken together by
// one change all miss the cache at once; the first set stored is the one
// every caller shares. mu guards m; build runs without it.
func memo(mu *sync.Mutex, m map[instanceKey]*pb.RuleSet, key instanceKey, build func() *pb.RuleSet) *pb.RuleSet {
	mu.Lock()
	rs, ok := m[key]
	mu.Unlock()
	if ok {
		return rs
	}
	rs = build()
	mu.Lock()
	defer mu.Unlock()
	if first, ok := m[key]; ok {
		return first
	}
	if len(m) < maxCachedServices {
		m[key] = rs
	}
	return rs
}

// ruleSets caches the rule sets with rates in force of one view, budgets
// generation and month: shared by every stream of a service woken by one
// change, as View.ForService's are.
type ruleSets struct {
	view    *View
	gen     int64
	month   time.Time
	mu      sync.Mutex
	service map[instanceKey]*pb.RuleSet
}

// RuleSet returns the rule set a service's SDKs of a resource get at now:
// the current view's rules for them (View.ForService) with the rates in
// force of the rules a budget lowers, so that a rule set never lifts
// enforcement. The result is shared: the caller must not modify it.
func (c *Catalog) RuleSet(name, typ string, resource map[string]string, now time.Time) *pb.RuleSet {
	v, b, month := c.Current(), c.CurrentBudgets(), budget.MonthStart(now)
	rs := c.sets.Load()
	if rs == nil || rs.view != v || rs.gen != b.Gen || !rs.month.Equal(month) {
		rs = &ruleSets{view: v, gen: b.Gen, month: month, service: map[instanceKey]*pb.RuleSet{}}
		// A racing caller may store its own: both are right, one is kept.
		c.sets.Store(rs)
	}
	return memo(&rs.mu, rs.service, instanceKey{name, typ, v.resourceKey(resource)}, func() *pb.RuleSet {
		base := v.ForService(name, typ, resource)
		return &pb.RuleSet{RulesVersion: base.GetRulesVersion(), Rules: base.GetRules(), RatesInForce: b.ratesInForce(name, base.GetRules(), v, now)}
	})
}

// ratesInForce returns the rates in force of the rules (as sent) that the
// budgets lower for a service.
func (b *Budgets) ratesInForce(service string, sent []*pb.Rule, v *View, now time.Time) []*pb.RuleRates {
	if len(b.Budgets) == 0 {
		return nil
	}
	var out []*pb.RuleRates
	for _, p := range sent {
		r := v.Rule(p.GetName())
		if r == nil {
			continue
		}
		if f, g := b.Factors(service, r, now); f < 1 || g < 1 {
			out = append(out, &pb.RuleRates{RuleName: r.Name, FixedRate: r.FixedRate * f, ReservoirFactor: g})
		}
	}
	return out
}

// Budgets is one generation of budgets and the controller's decisions for
// them. It is immutable.
type Budgets struct {
	// Gen grows whenever budgets or decisions change, so streams know to
	// send targets again.
	Gen     int64
	Budgets []budget.Budget
	States  map[string]budget.State
	// plans are each state's rule plans by rule name, for Factors.
	plans map[string]map[string]*budget.RulePlan
	// index is each budget's place in Budgets, by name, for Quiet.
	index map[string]int
}

// newBudgets indexes the rule plans of the states.
func newBudgets(gen int64, bs []budget.Budget, states map[string]budget.State) *Budgets {
	out := &Budgets{Gen: gen, Budgets: bs, States: states, plans: make(map[string]map[string]*budget.RulePlan, len(states)), index: make(map[string]int, len(bs))}
	for i := range bs {
		out.index[bs[i].Name] = i
	}
	for name, st := range states {
		m := make(map[string]*budget.RulePlan, len(st.Decision.Rules))
		for i := range st.Decision.Rules {
			m[st.Decision.Rules[i].Name] = &st.Decision.Rules[i]
		}
		out.plans[name] = m
	}
	return out
}

// CurrentBudgets returns the latest budgets; never nil.
func (c *Catalog) CurrentBudgets() *Budgets { return c.budgets.Load() }

// LoadBudgets reads budgets and decisions if the source keeps them, and wakes
// every watcher when they changed.
func (c *Catalog) LoadBudgets(ctx context.Context) error {
	bs, ok := c.src.(BudgetSource)
	if !ok {
		return nil
	}
	var all []budget.Budget
	for token := ""; ; {
		page, err := bs.Budgets(ctx, 1000, token)
		if err != nil {
			return err
		}
		all = append(all, page.Budgets...)
		if token = page.NextToken; token == "" {
			break
		}
	}
	states, err := bs.States(ctx)
	if err != nil {
		return err
	}
	c.load.Lock()
	defer c.load.Unlock()
	cur := c.budgets.Load()
	if reflect.DeepEqual(cur.Budgets, all) && sameDecisions(cur.States, states) {
		// Only the figures moved: keep them for status and metrics, but
		// streams have nothing new to send.
		c.budgets.Store(newBudgets(cur.Gen, all, states))
		return nil
	}
	c.budgets.Store(newBudgets(cur.Gen+1, all, states))
	c.notify()
	return nil
}

// sameDecisions reports whether two sets of states change targets alike:
// same budgets, incarnations, months, factors (each rule's too) and
// exhaustion.
func sameDecisions(a, b map[string]budget.State) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.BudgetUID != y.BudgetUID || !x.MonthStart.Equal(y.MonthStart) || x.Decision.FixedRateFactor != y.Decision.FixedRateFactor ||
			x.Decision.ReservoirFactor != y.Decision.ReservoirFactor || x.Decision.Exhausted != y.Decision.Exhausted ||
			len(x.Decision.Rules) != len(y.Decision.Rules) {
			return false
		}
		for i, p := range x.Decision.Rules {
			q := y.Decision.Rules[i]
			if p.Name != q.Name || p.FixedRateFactor != q.FixedRateFactor || p.ReservoirFactor != q.ReservoirFactor {
				return false
			}
		}
	}
	return true
}

// Factors returns what the budgets in force at now do to a rule's targets
// for a service: the fixed-rate and reservoir factors of the strictest
// enforcing budget that covers them (1 and 1 when none does), each budget's
// its plan for that rule, or, for a rule its last decision did not plan (new
// since), its strictest factors. A decision made for an earlier month, or
// for an earlier budget of the same name, does not count: a new month
// starts unenforced until the controller decides it.
func (b *Budgets) Factors(service string, r *rules.Rule, now time.Time) (fixed, reservoir float64) {
	fixed, reservoir = 1, 1
	month := budget.MonthStart(now)
	for i := range b.Budgets {
		bg := &b.Budgets[i]
		if bg.Mode != budget.Enforce || !bg.Scope.Covers(service, r) {
			continue
		}
		st, ok := b.States[bg.Name]
		if !ok || !st.MonthStart.Equal(month) || st.BudgetUID != bg.UID {
			continue
		}
		f, g := st.Decision.FixedRateFactor, st.Decision.ReservoirFactor
		if p := b.plans[bg.Name][r.Name]; p != nil {
			f, g = p.FixedRateFactor, p.ReservoirFactor
		}
		fixed = min(fixed, f)
		reservoir = min(reservoir, g)
	}
	return fixed, reservoir
}

// Quiet reports whether the enforcing budget called name is in force
// without having seen its traffic: its decision for this month and
// incarnation saw no requests in scope, or it has none. Such a decision
// was made without traffic to go by (at the budget's creation, at the
// month's start, before the scope's first request), so it lowers nothing,
// and the first report of traffic in scope should have the budget decided
// at once rather than at the controller's next interval (sampling.Core
// wakes the controller). False for a budget that only alerts, or that is
// not in this generation.
func (b *Budgets) Quiet(name string, now time.Time) bool {
	i, ok := b.index[name]
	if !ok || b.Budgets[i].Mode != budget.Enforce {
		return false
	}
	st, ok := b.States[name]
	return !ok || st.BudgetUID != b.Budgets[i].UID || !st.MonthStart.Equal(budget.MonthStart(now)) || st.Requests <= 0
}

// Covering returns the names of the budgets that count a rule's traces for a
// service.
func (b *Budgets) Covering(service string, r *rules.Rule) []string {
	var names []string
	for i := range b.Budgets {
		if b.Budgets[i].Scope.Covers(service, r) {
			names = append(names, b.Budgets[i].Name)
		}
	}
	return names
}
