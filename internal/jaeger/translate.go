// Package jaeger serves Jaeger's remote-sampling protocol
// (jaeger.api_v2.SamplingManager: proto-JSON over HTTP, and gRPC) from the
// control plane's rules, so that an unmodified OpenTelemetry jaeger_remote
// sampler (Go, Java, JS, Python) or a legacy Jaeger client follows them. It
// owns the translation of rules into Jaeger strategies, the estimate of a
// service's instance count from its polls, and the two thin transports with
// their error mappings; it reads rules and budget factors through Source.
package jaeger

import (
	"math"
	"strings"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Rule is one rule as it applies to a service: the rule and the budget
// factors in force for its fixed rate and its reservoir (1 and 1 when no
// budget enforces).
type Rule struct {
	Rule            *rules.Rule
	FixedRateFactor float64
	ReservoirFactor float64
}

// Translate turns a service's rules, in matching order, into the strategy a
// Jaeger remote sampler applies, with instances the estimated number of the
// service's instances (values below 1 count as 1). It is pure.
//
// Jaeger's model is smaller than a rule's: a strategy lists operations (span
// names) each with a probability, a default probability for every other
// operation, and one lower bound in traces per second that every instance
// applies to each operation on its own. The translation:
//
//   - Service: the rules whose service_name glob matches the service apply.
//     Jaeger clients report no service type, so they are served as this
//     project's SDK serves a service without one: a rule whose service_type
//     is not "*" does not apply. Nor do they declare a resource, so a rule
//     with a resource_attributes glob other than "*" (one for staging
//     instances, or for a release) does not apply either: it never matches
//     an instance without that resource attribute.
//   - Operations: a rule with one HTTP method and an exact url_path names the
//     operation "METHOD /path", the name OpenTelemetry gives an HTTP server
//     span of that route (the method in upper case, the path as the rule has
//     it; Jaeger compares names exactly, so other spellings get the default).
//     A path that is a literal prefix followed by '*' ("/checkout*") names
//     the operation of the prefix ("POST /checkout") as well.
//   - Probability: fixed_rate × its budget factor, of the first rule that
//     matches the operation (every rule's method and path globs are matched
//     against a listed operation's method and path), and for the default, of
//     the first rule that matches every request (method and path "*").
//   - Lower bound: reservoir_size × its budget factor ÷ instances, the
//     instance's share of the fleet's reservoir.
//
// Conditions Jaeger cannot see are host, attributes and resource_arn (the
// client sends only the span name), and, for operations the strategy does not
// list, every method or path glob. They degrade conservatively: a Jaeger
// client never samples a span with a higher probability, or a higher lower
// bound, than any rule that might apply to it allows. A rule that might apply
// but cannot be decided is passed over like a rule that does not match, but
// lowers the probability of what it might apply to to its own when that is
// lower: the listed operations its method and path match, and the default if
// it is not an exact method and path. And since the lower bound is one value
// for every operation, it is the smallest per-instance share among all the
// rules that can apply to the service (up to the first that matches every
// request), so a rule with no reservoir leaves the service without a lower
// bound. If no rule matches every request (the Default rule always does), the
// Default rule's defaults close the list.
func Translate(service string, rs []Rule, instances int) *api.SamplingStrategyResponse {
	n := float64(max(instances, 1))
	var reach []translated
	for i := range rs {
		c := rules.Compile(*rs[i].Rule)
		// A Jaeger client declares no resource: a rule that needs a
		// resource attribute never applies to it.
		if !c.MatchesInstance(service, "", nil) {
			continue
		}
		t := newTranslated(c, rs[i], n)
		reach = append(reach, t)
		if t.catchAll && !t.blind {
			break // the rules after it never apply
		}
	}
	if last := len(reach) - 1; last < 0 || !reach[last].catchAll || reach[last].blind {
		d := rules.Default()
		reach = append(reach, newTranslated(rules.Compile(d), Rule{Rule: &d, FixedRateFactor: 1, ReservoirFactor: 1}, n))
	}

	lower := math.Inf(1)
	for i := range reach {
		lower = min(lower, reach[i].perInstance)
	}
	def := 1.0
	for i := range reach {
		t := &reach[i]
		if t.exact {
			continue // its one operation is listed; it applies to no other
		}
		def = min(def, t.fixed)
		if t.catchAll && !t.blind {
			break
		}
	}

	per := &api.PerOperationSamplingStrategies{
		DefaultSamplingProbability:       def,
		DefaultLowerBoundTracesPerSecond: lower,
		PerOperationStrategies:           []*api.OperationSamplingStrategy{},
	}
	seen := map[string]bool{}
	for i := range reach {
		op := reach[i].op
		if op == "" || seen[op] {
			continue
		}
		seen[op] = true
		method, path, _ := strings.Cut(op, " ")
		p := 1.0
		for j := range reach {
			t := &reach[j]
			if !t.c.HTTPMethod.Match(method) || !t.c.URLPath.Match(path) {
				continue
			}
			p = min(p, t.fixed)
			if !t.blind {
				break
			}
		}
		per.PerOperationStrategies = append(per.PerOperationStrategies, &api.OperationSamplingStrategy{
			Operation:             op,
			ProbabilisticSampling: &api.ProbabilisticSamplingStrategy{SamplingRate: p},
		})
	}
	return &api.SamplingStrategyResponse{
		// Clients that do not read operationSampling when it lists no
		// operation (JS, Java) take the default from here.
		StrategyType:          api.SamplingStrategyType_PROBABILISTIC,
		ProbabilisticSampling: &api.ProbabilisticSamplingStrategy{SamplingRate: def},
		OperationSampling:     per,
	}
}

// translated is a rule as Translate sees it.
type translated struct {
	c           rules.Compiled
	fixed       float64 // probability: fixed_rate × factor, in [0, 1]
	perInstance float64 // lower bound: reservoir × factor ÷ instances
	blind       bool    // has a condition Jaeger cannot see
	catchAll    bool    // method and path match every request
	exact       bool    // one method and one exact path: applies to op only
	op          string  // the operation it names, or ""
}

func newTranslated(c rules.Compiled, r Rule, instances float64) translated {
	t := translated{
		c:           c,
		fixed:       unit(c.Rule.FixedRate * unit(r.FixedRateFactor)),
		perInstance: float64(max(c.Rule.ReservoirSize, 0)) * unit(r.ReservoirFactor) / instances,
		blind:       !c.Host.MatchesAll() || !c.ResourceARN.MatchesAll(),
		catchAll:    c.HTTPMethod.MatchesAll() && c.URLPath.MatchesAll(),
	}
	for _, a := range c.Attributes {
		t.blind = t.blind || !a.Glob.MatchesAll()
	}
	method, path := c.Rule.HTTPMethod, c.Rule.URLPath
	if method == "" || strings.ContainsAny(method, "*?") || path == "" {
		return t
	}
	switch prefix := strings.TrimRight(path, "*"); {
	case !strings.ContainsAny(path, "*?"):
		t.exact = true
		t.op = strings.ToUpper(method) + " " + path
	case prefix != "" && !strings.ContainsAny(prefix, "*?"):
		t.op = strings.ToUpper(method) + " " + prefix
	}
	return t
}

// unit clamps x to [0, 1]; NaN becomes 0, the conservative reading.
func unit(x float64) float64 {
	if !(x >= 0) {
		return 0
	}
	return min(x, 1)
}
