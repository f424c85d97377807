package auth

import (
	"context"
	"fmt"

	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// SeesGlob reports whether a principal's sampling calls get a rule whose
// service glob is pattern. X-Ray's sampling calls name no service, so a
// scoped SDK principal is given the rules that may apply to its services:
// those for every service ("*", the Default rule's), those within its scope,
// and those whose glob contains one of its scope's globs ("shop-*" for a
// principal scoped to "shop-cart"). A rule that merely overlaps its scope
// ("*-eu" for "shop-*") is left out: deciding overlap of globs exactly is
// costly, and a sampler without a rule falls back to the Default rule.
func (p *Principal) SeesGlob(pattern string) bool {
	if p == nil || !p.Scoped() || rules.CompileGlob(pattern).MatchesAll() {
		return true
	}
	for _, s := range p.Services {
		if GlobWithin(pattern, s) || GlobWithin(s, pattern) {
			return true
		}
	}
	return false
}

// ScopeXRay returns core as the X-Ray API serves it to the principal of
// each request (which the guard's middleware puts in the context):
//
//   - GetSamplingRules lists only the rules the principal SeesGlob;
//   - SamplingTargets counts the report's ClientID against the principal's
//     client IDs (Limiter.ClientID; refused as X-Ray's ThrottledException),
//     and rejects the statistics of rules it does not see and the boost
//     statistics of services outside its scope, as X-Ray rejects documents
//     (so the client refreshes its rules), rather than refusing the call;
//   - TagResource and UntagResource are checked against the rule's service
//     glob (CheckScope), since the tags are the rule's.
//
// Rule edits are checked by the edit core (package edit) that core calls;
// reads (tags, statistic summaries) are not filtered, as elsewhere.
func ScopeXRay(core xray.Core, limiter *Limiter) xray.Core {
	return &scopedXRay{Core: core, limiter: limiter}
}

type scopedXRay struct {
	xray.Core
	limiter *Limiter
}

func (s *scopedXRay) Rules(ctx context.Context) ([]xray.Rule, error) {
	all, err := s.Core.Rules(ctx)
	p := FromContext(ctx)
	if err != nil || p == nil || !p.Scoped() {
		return all, err
	}
	seen := make([]xray.Rule, 0, len(all))
	for _, r := range all {
		if p.SeesGlob(r.ServiceName) {
			seen = append(seen, r)
		}
	}
	return seen, nil
}

// OutOfScope is the Rejection code of a document the principal may not
// report.
const OutOfScope = "OUT_OF_SCOPE"

func (s *scopedXRay) Report(ctx context.Context, r xray.Report) (xray.Targets, error) {
	p := FromContext(ctx)
	if err := s.limiter.ClientID(p, r.ClientID); err != nil {
		return xray.Targets{}, fmt.Errorf("%w: %w", xray.ErrThrottled, err)
	}
	if p == nil || !p.Scoped() {
		return s.Core.Report(ctx, r)
	}
	globs := map[string]string{}
	all, err := s.Core.Rules(ctx)
	if err != nil {
		return xray.Targets{}, err
	}
	for _, rule := range all {
		globs[rule.Name] = rule.ServiceName
	}
	var out xray.Targets
	kept := r
	kept.Statistics, kept.Boosts = nil, nil
	for _, st := range r.Statistics {
		if g, ok := globs[st.Rule]; ok && !p.SeesGlob(g) {
			out.Rejected = append(out.Rejected, xray.Rejection{Rule: st.Rule, Code: OutOfScope,
				Message: fmt.Sprintf("%s is scoped to services %q; rule %s is not for them", p.Actor(), p.Services, st.Rule)})
			continue
		}
		kept.Statistics = append(kept.Statistics, st) // an unknown rule is the core's to reject
	}
	for _, b := range r.Boosts {
		if !p.MatchesService(b.Service) {
			out.BoostRejected = append(out.BoostRejected, xray.Rejection{Rule: b.Rule, Code: OutOfScope,
				Message: fmt.Sprintf("%s is scoped to services %q, not %q", p.Actor(), p.Services, b.Service)})
			continue
		}
		kept.Boosts = append(kept.Boosts, b)
	}
	if len(kept.Statistics) == 0 && len(kept.Boosts) == 0 {
		return out, nil
	}
	got, err := s.Core.Report(ctx, kept)
	if err != nil {
		return xray.Targets{}, err
	}
	got.Rejected = append(got.Rejected, out.Rejected...)
	got.BoostRejected = append(got.BoostRejected, out.BoostRejected...)
	return got, nil
}

func (s *scopedXRay) TagRule(ctx context.Context, rule string, tags xray.Tags) error {
	if err := s.checkRule(ctx, rule); err != nil {
		return err
	}
	return s.Core.TagRule(ctx, rule, tags)
}

func (s *scopedXRay) UntagRule(ctx context.Context, rule string, keys []string) error {
	if err := s.checkRule(ctx, rule); err != nil {
		return err
	}
	return s.Core.UntagRule(ctx, rule, keys)
}

// checkRule checks that the principal may edit the named rule's tags. An
// unknown rule passes, for the core to answer.
func (s *scopedXRay) checkRule(ctx context.Context, name string) error {
	all, err := s.Core.Rules(ctx)
	if err != nil {
		return err
	}
	for _, r := range all {
		if r.Name == name {
			if err := CheckScope(ctx, r.ServiceName); err != nil {
				return fmt.Errorf("%w: %w", xray.ErrAccessDenied, err)
			}
		}
	}
	return nil
}
