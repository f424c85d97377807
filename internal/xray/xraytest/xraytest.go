// Package xraytest is an in-process xray.Core for tests of the X-Ray
// transport alone (serve runs the real one, package xraycore): rules live
// in a real memstore
// (revisions, audit log, the Default rule) and are validated with
// rules.Validate and rules.CheckDefault as the core does; tags and
// the reservoir split are kept here, simply. The split gives each client
// reservoir × its request rate / the sum of the latest rates of every client
// of the rule (reservoir.Quota), with no buckets, receipts or budgets; a
// boost is the rule's MaxRate for a minute whenever anomalies are reported.
// The audit log's actor is auth.Actor of the call's context.
package xraytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Interval is the report interval the Core hands out.
const Interval = 10 * time.Second

// MaxTags is how many tags a rule may have.
const MaxTags = 50

// Core implements xray.Core in memory. The zero value is not usable; call
// New.
type Core struct {
	// Store holds the rules; tests may read its audit log.
	Store *memstore.Store
	now   func() time.Time
	// MaxRules, if positive, makes CreateRule fail with xray.ErrRuleLimit
	// once that many rules exist (the Default rule counts).
	MaxRules int
	// Fail, if set, is called first by every method with the method's name;
	// an error it returns is returned as is (to inject ErrUnavailable,
	// ErrThrottled…).
	Fail func(method string) error
	// Observe, if set, is called with every report the Core takes.
	Observe func(xray.Report)

	mu       sync.Mutex
	modified time.Time
	tags     map[string]xray.Tags
	rates    map[string]map[string]float64 // rule → client → requests per second
	totals   map[string]*xray.Summary
}

// New returns an empty Core (the Default rule only) on the clock now.
func New(now func() time.Time) (*Core, error) {
	s, err := memstore.New(memstore.Options{Now: now})
	if err != nil {
		return nil, err
	}
	return &Core{
		Store:  s,
		now:    now,
		tags:   map[string]xray.Tags{},
		rates:  map[string]map[string]float64{},
		totals: map[string]*xray.Summary{},
	}, nil
}

// Close releases the store.
func (c *Core) Close() error { return c.Store.Close() }

func (c *Core) fail(method string) error {
	if c.Fail == nil {
		return nil
	}
	return c.Fail(method)
}

// withBoost is r as the X-Ray API carries it: its boost is the stored
// rule's own.
func (c *Core) withBoost(r rules.Rule) xray.Rule { return xray.Rule{Rule: r} }

func (c *Core) touch() {
	c.mu.Lock()
	c.modified = c.now()
	c.mu.Unlock()
}

// Rules implements xray.RuleLister.
func (c *Core) Rules(ctx context.Context) ([]xray.Rule, error) {
	if err := c.fail("Rules"); err != nil {
		return nil, err
	}
	snap, err := c.Store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]xray.Rule, len(snap.Rules))
	for i, r := range snap.Rules {
		out[i] = c.withBoost(r)
	}
	return out, nil
}

// RulesModified implements xray.RuleLister.
func (c *Core) RulesModified(context.Context) (time.Time, error) {
	if err := c.fail("RulesModified"); err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.modified, nil
}

// CreateRule implements xray.RuleEditor.
func (c *Core) CreateRule(ctx context.Context, r xray.Rule, tags xray.Tags) (xray.Rule, error) {
	if err := c.fail("CreateRule"); err != nil {
		return xray.Rule{}, err
	}
	rule := r.Rule.Normalize()
	if rule.IsDefault() {
		return xray.Rule{}, fmt.Errorf("rule %q: %w", rule.Name, store.ErrAlreadyExists)
	}
	if err := rules.Validate(&rule); err != nil {
		return xray.Rule{}, err
	}
	if len(tags) > MaxTags {
		return xray.Rule{}, xray.ErrTooManyTags
	}
	if c.MaxRules > 0 {
		snap, err := c.Store.Snapshot(ctx)
		if err != nil {
			return xray.Rule{}, err
		}
		if len(snap.Rules) >= c.MaxRules {
			return xray.Rule{}, xray.ErrRuleLimit
		}
	}
	created, err := c.Store.CreateRule(ctx, rule, auth.Actor(ctx))
	if err != nil {
		return xray.Rule{}, err
	}
	c.mu.Lock()
	if len(tags) > 0 {
		c.tags[created.Name] = tags
	}
	c.mu.Unlock()
	c.touch()
	return c.withBoost(created), nil
}

// UpdateRule implements xray.RuleEditor: read, apply, validate, write with
// the revision read, and again if another edit landed in between.
func (c *Core) UpdateRule(ctx context.Context, u xray.RuleUpdate, etag string) (xray.Rule, error) {
	if err := c.fail("UpdateRule"); err != nil {
		return xray.Rule{}, err
	}
	var want int64
	if etag != "" {
		var err error
		if want, err = rules.ParseEtag(etag); err != nil {
			return xray.Rule{}, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: "etag", Description: err.Error()}}}
		}
	}
	for attempt := 0; ; attempt++ {
		cur, err := c.Store.Rule(ctx, u.Name)
		if err != nil {
			return xray.Rule{}, err
		}
		if want != 0 && cur.Revision != want {
			return xray.Rule{}, store.ErrConflict
		}
		next := apply(cur, &u).Normalize()
		if err := rules.CheckDefault(&next); err != nil {
			return xray.Rule{}, err
		}
		if err := rules.Validate(&next); err != nil {
			return xray.Rule{}, err
		}
		updated, err := c.Store.UpdateRule(ctx, next, cur.Revision, auth.Actor(ctx))
		if errors.Is(err, store.ErrConflict) && want == 0 && attempt < 5 {
			continue
		}
		if err != nil {
			return xray.Rule{}, err
		}
		c.touch()
		return c.withBoost(updated), nil
	}
}

func apply(cur rules.Rule, u *xray.RuleUpdate) rules.Rule {
	next := cur.Clone()
	p := &u.Patch
	for _, f := range u.Fields {
		switch f {
		case xray.FieldPriority:
			next.Priority = p.Priority
		case xray.FieldFixedRate:
			next.FixedRate = p.FixedRate
		case xray.FieldReservoirSize:
			next.ReservoirSize = p.ReservoirSize
		case xray.FieldServiceName:
			next.ServiceName = p.ServiceName
		case xray.FieldServiceType:
			next.ServiceType = p.ServiceType
		case xray.FieldHost:
			next.Host = p.Host
		case xray.FieldHTTPMethod:
			next.HTTPMethod = p.HTTPMethod
		case xray.FieldURLPath:
			next.URLPath = p.URLPath
		case xray.FieldResourceARN:
			next.ResourceARN = p.ResourceARN
		case xray.FieldAttributes:
			next.Attributes = p.Attributes
		case xray.FieldBoost:
			next.Boost = p.Boost
		}
	}
	return next
}

// DeleteRule implements xray.RuleEditor.
func (c *Core) DeleteRule(ctx context.Context, name, etag string) (xray.Rule, error) {
	if err := c.fail("DeleteRule"); err != nil {
		return xray.Rule{}, err
	}
	if name == rules.DefaultName {
		return xray.Rule{}, rules.ErrDefaultRule
	}
	cur, err := c.Store.Rule(ctx, name)
	if err != nil {
		return xray.Rule{}, err
	}
	before := c.withBoost(cur)
	if err := c.Store.DeleteRule(ctx, name, cur.Revision, auth.Actor(ctx)); err != nil {
		return xray.Rule{}, err
	}
	c.mu.Lock()
	delete(c.tags, name)
	delete(c.rates, name)
	c.mu.Unlock()
	c.touch()
	return before, nil
}

// RuleTags implements xray.Tagger.
func (c *Core) RuleTags(ctx context.Context, rule string) (xray.Tags, error) {
	if err := c.fail("RuleTags"); err != nil {
		return nil, err
	}
	if _, err := c.Store.Rule(ctx, rule); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := xray.Tags{}
	for k, v := range c.tags[rule] {
		out[k] = v
	}
	return out, nil
}

// TagRule implements xray.Tagger.
func (c *Core) TagRule(ctx context.Context, rule string, tags xray.Tags) error {
	if err := c.fail("TagRule"); err != nil {
		return err
	}
	if _, err := c.Store.Rule(ctx, rule); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := xray.Tags{}
	for k, v := range c.tags[rule] {
		next[k] = v
	}
	for k, v := range tags {
		next[k] = v
	}
	if len(next) > MaxTags {
		return fmt.Errorf("rule %q: %w", rule, xray.ErrTooManyTags)
	}
	c.tags[rule] = next
	return nil
}

// UntagRule implements xray.Tagger.
func (c *Core) UntagRule(ctx context.Context, rule string, keys []string) error {
	if err := c.fail("UntagRule"); err != nil {
		return err
	}
	if _, err := c.Store.Rule(ctx, rule); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.tags[rule], k)
	}
	return nil
}

// Report implements xray.Reporter.
func (c *Core) Report(ctx context.Context, r xray.Report) (xray.Targets, error) {
	if err := c.fail("Report"); err != nil {
		return xray.Targets{}, err
	}
	if c.Observe != nil {
		c.Observe(r)
	}
	snap, err := c.Store.Snapshot(ctx)
	if err != nil {
		return xray.Targets{}, err
	}
	byName := map[string]*rules.Rule{}
	for i := range snap.Rules {
		byName[snap.Rules[i].Name] = &snap.Rules[i]
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out xray.Targets
	for _, s := range r.Statistics {
		rule := byName[s.Rule]
		switch {
		case rule == nil:
			out.Rejected = append(out.Rejected, xray.Rejection{Rule: s.Rule, Code: "UNKNOWN_RULE", Message: fmt.Sprintf("no rule %q", s.Rule)})
			continue
		case s.Requests < 0 || s.Sampled < 0 || s.Borrowed < 0:
			out.Rejected = append(out.Rejected, xray.Rejection{Rule: s.Rule, Code: "NEGATIVE_COUNT", Message: "counts must not be negative"})
			continue
		}
		if c.rates[s.Rule] == nil {
			c.rates[s.Rule] = map[string]float64{}
		}
		rate := float64(s.Requests) / Interval.Seconds()
		c.rates[s.Rule][r.ClientID] = rate
		var fleet float64
		for _, v := range c.rates[s.Rule] {
			fleet += v
		}
		sum := c.totals[s.Rule]
		if sum == nil {
			sum = &xray.Summary{Rule: s.Rule, Start: now}
			c.totals[s.Rule] = sum
		}
		sum.Requests += s.Requests
		sum.Sampled += s.Sampled
		sum.Borrowed += s.Borrowed
		out.Targets = append(out.Targets, xray.Target{
			Rule:      s.Rule,
			FixedRate: rule.FixedRate,
			Quota:     reservoir.Quota(float64(rule.ReservoirSize), rate, fleet),
			Expiry:    now.Add(2 * Interval),
			Interval:  Interval,
		})
	}
	for _, b := range r.Boosts {
		if byName[b.Rule] == nil {
			out.BoostRejected = append(out.BoostRejected, xray.Rejection{Rule: b.Rule, Code: "UNKNOWN_RULE", Message: fmt.Sprintf("no rule %q", b.Rule)})
			continue
		}
		boost := byName[b.Rule].Boost
		if boost == nil || b.Anomalies <= 0 {
			continue
		}
		for i := range out.Targets {
			if out.Targets[i].Rule == b.Rule {
				out.Targets[i].Boost = &xray.Boost{Rate: boost.MaxRate, Expiry: now.Add(time.Minute)}
			}
		}
	}
	return out, nil
}

// Summaries implements xray.Summarizer: every rule's counts since its first
// report.
func (c *Core) Summaries(context.Context) ([]xray.Summary, error) {
	if err := c.fail("Summaries"); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]xray.Summary, 0, len(c.totals))
	for _, s := range c.totals {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b xray.Summary) int {
		switch {
		case a.Rule < b.Rule:
			return -1
		case a.Rule > b.Rule:
			return 1
		}
		return 0
	})
	return out, nil
}
