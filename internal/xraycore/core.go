// Package xraycore is the X-Ray sampling API's core (xray.Core) on the
// control plane's own parts: rules listed from the replica's catalog and
// edited through package edit (validation, the Default rule, etag-less
// read-modify-write retries, the principal's scope and the audit log's
// actor), reports fed into the same report pipeline as the gRPC API
// (package sampling: one ledger, one batcher, one set of budgets), and
// statistic summaries read from the fleet ledgers (package fleet).
//
// It is a package of its own, not part of package sampling, because what it
// adds is X-Ray's alone: clients that echo no receipts (it holds their last
// claims), a ClientID namespace of their own, whole quotas rounded with a
// per-rule running phase, LastRuleModification, tags read-modify-written,
// boosts in the X-Ray shapes. Package
// xray stays a transport that imports none of the core.
package xraycore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// DefaultMaxClients is how many client and rule pairs a replica holds the
// last claim of by default (about 150 bytes each).
const DefaultMaxClients = 100_000

// clientPrefix keeps X-Ray's ClientIDs apart from the gRPC API's client IDs
// in the ledger's per-client records (report numbers, receipts).
const clientPrefix = "xray:"

// Options configure a Core.
type Options struct {
	// Catalog is the replica's view of the rules and budgets, Rules the
	// rule editor, Sampling the report pipeline, Fleet the ledger reader.
	// All required.
	Catalog  *catalog.Catalog
	Rules    *edit.Rules
	Sampling *sampling.Core
	Fleet    *fleet.Service
	// MaxClients bounds the claims held (client and rule pairs). Default
	// DefaultMaxClients.
	MaxClients int
	// Registerer receives the claim table's metrics. Default: a private
	// registry.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Core implements xray.Core. It is safe for concurrent use.
type Core struct {
	cat    *catalog.Catalog
	edit   *edit.Rules
	rep    *sampling.Core
	fleet  *fleet.Service
	claims *claims
	phases *phases

	mu       sync.Mutex
	modVer   int64     // the rules version modTime was read at
	modTime  time.Time // the newest audit entry's time then
	modKnown bool
}

// New returns a Core.
func New(opts Options) (*Core, error) {
	if opts.Catalog == nil || opts.Rules == nil || opts.Sampling == nil || opts.Fleet == nil {
		return nil, errors.New("xraycore: Catalog, Rules, Sampling and Fleet are required")
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = DefaultMaxClients
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// A claim lives as long as the ledger bucket that counts it: a report
	// after that has nothing live to retract.
	ttl := opts.Sampling.QuotaLifetime() + opts.Sampling.Interval()
	return &Core{
		cat:    opts.Catalog,
		edit:   opts.Rules,
		rep:    opts.Sampling,
		fleet:  opts.Fleet,
		claims: newClaims(opts.MaxClients, ttl, opts.Now, opts.Registerer),
		phases: &phases{sums: map[string]float64{}},
	}, nil
}

var _ xray.Core = (*Core)(nil)

// Rules implements xray.RuleLister: the catalog's rules, in matching order,
// but for those that need a resource attribute (a resource glob other than
// "*"). X-Ray's rule has no such field and its clients declare no
// resource, so such a rule never applies to them; listed, it would apply to
// every instance, production and staging alike, since X-Ray SDKs match the
// rules they list themselves. Those rules are managed over the gRPC API
// (and the CLI) only: to the X-Ray API they do not exist.
func (c *Core) Rules(ctx context.Context) ([]xray.Rule, error) {
	v := c.cat.Current()
	if v.Version == 0 {
		return nil, fmt.Errorf("no rules loaded yet: %w", store.ErrUnavailable)
	}
	set := v.Set().Rules()
	out := make([]xray.Rule, 0, len(set))
	for i := range set {
		if !set[i].NeedsResource() {
			out = append(out, toXRay(set[i].Rule))
		}
	}
	return out, nil
}

func toXRay(r rules.Rule) xray.Rule { return xray.Rule{Rule: r} }

// RulesModified implements xray.RuleLister: the time of the newest entry
// of the audit log, which every create, update and delete writes in the
// same store step as the rules version it bumps (the expiry reaper's
// deletes too). It is read from the store, so every replica gives the same
// answer, and read again only when the catalog's rules version moves: one
// store read per edit and replica, none per call. Until anything was ever
// edited it is zero (the handler then says when the replica started).
func (c *Core) RulesModified(ctx context.Context) (time.Time, error) {
	v := c.cat.Current().Version
	c.mu.Lock()
	if c.modKnown && c.modVer == v {
		t := c.modTime
		c.mu.Unlock()
		return t, nil
	}
	c.mu.Unlock()
	page, err := c.edit.Events(ctx, "", 1, "")
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.modKnown {
			// The last time known, rather than failing the whole
			// SamplingTargets call; read again on the next one.
			return c.modTime, nil
		}
		return time.Time{}, err
	}
	var t time.Time
	if len(page.Events) > 0 {
		t = page.Events[0].Time
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.modVer, c.modTime, c.modKnown = v, t, true
	return t, nil
}

// caughtUp makes the catalog take an edit in at once, so that the editor's
// next GetSamplingRules on this replica shows it (other replicas take it in
// on the store's change hint). Load reads the store's rules version and
// the rules only if it moved. A failure is left to the catalog's own
// reloads.
func (c *Core) caughtUp(ctx context.Context) { _ = c.cat.Load(ctx) }

// CreateRule implements xray.RuleEditor: the rule and its tags in one
// step.
func (c *Core) CreateRule(ctx context.Context, r xray.Rule, tags xray.Tags) (xray.Rule, error) {
	rule := r.Rule.Clone()
	if len(tags) > 0 {
		rule.Tags = maps.Clone(tags)
	}
	created, err := c.edit.Create(ctx, rule)
	if err != nil {
		return xray.Rule{}, coreError(err)
	}
	c.caughtUp(ctx)
	return toXRay(created), nil
}

// UpdateRule implements xray.RuleEditor: etag "" lets package edit retry
// the read-modify-write when another edit lands in between.
func (c *Core) UpdateRule(ctx context.Context, u xray.RuleUpdate, etag string) (xray.Rule, error) {
	var rev int64
	if etag != "" {
		var err error
		if rev, err = rules.ParseEtag(etag); err != nil {
			return xray.Rule{}, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: "etag", Description: err.Error()}}}
		}
	}
	patch := u.Patch.Rule
	patch.Name = u.Name
	if len(u.Fields) == 0 {
		cur, err := c.edit.Get(ctx, u.Name)
		return toXRay(cur), coreError(err)
	}
	updated, err := c.edit.Update(ctx, patch, u.Fields, rev)
	if err != nil {
		return xray.Rule{}, coreError(err)
	}
	c.caughtUp(ctx)
	return toXRay(updated), nil
}

// DeleteRule implements xray.RuleEditor: it reads the rule, to answer with
// it, and deletes that revision, reading again if another edit landed in
// between (etag "").
func (c *Core) DeleteRule(ctx context.Context, name, etag string) (xray.Rule, error) {
	var want int64
	if etag != "" {
		var err error
		if want, err = rules.ParseEtag(etag); err != nil {
			return xray.Rule{}, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: "etag", Description: err.Error()}}}
		}
	}
	for attempt := 0; ; attempt++ {
		cur, err := c.edit.Get(ctx, name)
		if err != nil {
			return xray.Rule{}, coreError(err)
		}
		rev := cur.Revision
		if want != 0 {
			rev = want
		}
		err = c.edit.Delete(ctx, name, rev)
		if want == 0 && attempt < edit.UpdateRetries && errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return xray.Rule{}, coreError(err)
		}
		c.caughtUp(ctx)
		return toXRay(cur), nil
	}
}

// RuleTags implements xray.Tagger: the rule's Tags.
func (c *Core) RuleTags(ctx context.Context, rule string) (xray.Tags, error) {
	r, err := c.edit.Get(ctx, rule)
	if err != nil {
		return nil, coreError(err)
	}
	return xray.Tags(maps.Clone(r.Tags)), nil
}

// TagRule implements xray.Tagger: the rule's tags with these added or
// replaced, as an update of its tags (validated, audited), applied to the
// rule as it is and tried again if another edit lands in between.
func (c *Core) TagRule(ctx context.Context, rule string, tags xray.Tags) error {
	return c.retag(ctx, rule, func(cur map[string]string) map[string]string {
		next := maps.Clone(cur)
		if next == nil {
			next = map[string]string{}
		}
		maps.Copy(next, tags)
		return next
	})
}

// UntagRule implements xray.Tagger: removing tags a rule does not have is
// no error, and changes nothing.
func (c *Core) UntagRule(ctx context.Context, rule string, keys []string) error {
	return c.retag(ctx, rule, func(cur map[string]string) map[string]string {
		next := maps.Clone(cur)
		for _, k := range keys {
			delete(next, k)
		}
		return next
	})
}

// retag sets a rule's tags to change(its tags) at the revision read, and
// reads again when another edit landed in between.
func (c *Core) retag(ctx context.Context, rule string, change func(map[string]string) map[string]string) error {
	for attempt := 0; ; attempt++ {
		cur, err := c.edit.Get(ctx, rule)
		if err != nil {
			return coreError(err)
		}
		next := change(cur.Tags)
		if maps.Equal(next, cur.Tags) {
			return nil
		}
		if len(next) > rules.MaxTags {
			return fmt.Errorf("rule %q would have %d tags, at most %d: %w", rule, len(next), rules.MaxTags, xray.ErrTooManyTags)
		}
		_, err = c.edit.Update(ctx, rules.Rule{Name: rule, Tags: next}, []string{"tags"}, cur.Revision)
		if errors.Is(err, store.ErrConflict) && attempt < edit.UpdateRetries {
			continue
		}
		if err != nil {
			return coreError(err)
		}
		c.caughtUp(ctx)
		return nil
	}
}

// coreError wraps the core's errors that X-Ray has a shape of its own for
// in package xray's sentinels; the rest pass as they are (xray maps them).
func coreError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrRuleLimit):
		return fmt.Errorf("%w: %w", xray.ErrRuleLimit, err)
	case errors.Is(err, auth.ErrPermissionDenied), errors.Is(err, auth.ErrUnauthenticated):
		return fmt.Errorf("%w: %w", xray.ErrAccessDenied, err)
	case errors.Is(err, auth.ErrLimited):
		return fmt.Errorf("%w: %w", xray.ErrThrottled, err)
	}
	return err
}

// Report implements xray.Reporter: the statistics go through the report
// pipeline as one report of the client (under "xray:"+ClientID), with the
// claims this core holds standing in for receipts, no report number (a
// failed call is told and the client reports again) and no service name
// (each document counts for budgets as its rule's ServiceName; see
// sampling.Report). The quotas come back with the budgets applied and a
// running phase to round them with. Boost statistics go to the same
// pipeline (a boost document's ServiceName is validated, not used: a boost
// is per rule), and each target of a boosted rule carries the boost in
// force.
func (c *Core) Report(ctx context.Context, r xray.Report) (xray.Targets, error) {
	var out xray.Targets
	if len(r.Statistics) == 0 && len(r.Boosts) == 0 {
		return out, nil
	}
	boosts := make([]sampling.BoostStatistics, len(r.Boosts))
	for i, b := range r.Boosts {
		boosts[i] = sampling.BoostStatistics{Rule: b.Rule, BoostCounts: sampling.BoostCounts{Total: b.Total, Anomalies: b.Anomalies, Sampled: b.SampledAnomalies}}
	}
	docs := make([]sampling.Statistics, len(r.Statistics))
	for i, s := range r.Statistics {
		docs[i] = sampling.Statistics{Rule: s.Rule, Requests: s.Requests, Sampled: s.Sampled, Borrowed: s.Borrowed, Time: s.Time}
		if s.Borrowed > 0 && s.Sampled+s.Borrowed <= s.Requests {
			// X-Ray SDKs differ: the X-Ray SDK for Go counts borrowed
			// traces apart from SampledCount, while this project's
			// reports (and X-Ray's API reference) count them in it. Where
			// both fit in the requests they are taken as apart, so that
			// what a client recorded is never under-counted in budgets;
			// an SDK that counts them in is over-counted by its borrows,
			// at most one trace a second.
			docs[i].Sampled += s.Borrowed
		}
	}
	base, err := c.rep.Report(ctx, sampling.Report{Client: clientPrefix + r.ClientID, Statistics: docs, Boosts: boosts}, c.claims)
	if err != nil {
		return xray.Targets{}, err
	}
	ts := c.rep.WithBudgets(base, "")
	for _, rj := range ts.Rejected {
		out.Rejected = append(out.Rejected, xray.Rejection{Rule: rj.Rule, Code: rj.Code, Message: rj.Message})
	}
	for _, rj := range ts.BoostRejected {
		out.BoostRejected = append(out.BoostRejected, xray.Rejection{Rule: rj.Rule, Code: rj.Code, Message: rj.Message})
	}
	out.Targets = make([]xray.Target, len(ts.Targets))
	for i, t := range ts.Targets {
		out.Targets[i] = xray.Target{
			Rule: t.Rule, FixedRate: t.FixedRate, Quota: t.Quota, Expiry: t.Expiry, Interval: ts.Interval,
			Phase: c.phases.next(t.Rule, t.Quota), RunningPhase: true,
		}
		if t.Boost.Rate > 0 {
			out.Targets[i].Boost = &xray.Boost{Rate: t.Boost.Rate, Expiry: t.Boost.Expiry}
		}
	}
	return out, nil
}

// phases keeps, per rule, the running sum of the fractional shares this
// replica handed out, modulo 1 (see xray.WholeQuota): each client's share
// is rounded with the sum so far as its phase, so that consecutive
// clients' whole quotas tile the reservoir and a period's total is the sum
// of the shares ± 1 per replica, whatever the shares.
type phases struct {
	mu   sync.Mutex
	sums map[string]float64
}

func (p *phases) next(rule string, share float64) float64 {
	if !(share > 0) || math.IsInf(share, 0) {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sums) >= 2*rules.MaxRules {
		// Deleted rules' sums: forgetting them all costs each rule one
		// trace of rounding once.
		clear(p.sums)
	}
	phase := p.sums[rule]
	_, f := math.Modf(phase + share)
	p.sums[rule] = f
	return phase
}

// Summaries implements xray.Summarizer: each rule's fleet-wide rates from
// the ledgers, as counts over one report interval ending now. The ledger
// keeps rates, not borrow counts: BorrowCount is 0.
func (c *Core) Summaries(ctx context.Context) ([]xray.Summary, error) {
	st, err := c.fleet.Status(ctx, fleet.Query{PageSize: fleet.MaxPageSize})
	if err != nil {
		return nil, err
	}
	secs := st.Interval.Seconds()
	start := st.Time.Add(-st.Interval)
	out := make([]xray.Summary, 0, len(st.Rules))
	for _, r := range st.Rules {
		if r.Rate == 0 && r.Sampled == 0 {
			continue
		}
		out = append(out, xray.Summary{Rule: r.Rule.Name, Start: start,
			Requests: int64(math.Round(r.Rate * secs)), Sampled: int64(math.Round(r.Sampled * secs))})
	}
	return out, nil
}
