package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// Limits of an explained request. Values are a request's, not globs, so
// they may be longer than a rule's patterns.
const (
	MaxExplainHostLen      = 256
	MaxExplainMethodLen    = 32
	MaxExplainPathLen      = 2048
	MaxExplainARNLen       = 2048
	MaxExplainAttributes   = 64
	MaxExplainAttrKeyLen   = 256
	MaxExplainAttrValueLen = 1024
	// MaxExplainSkipped is how many of the rules tried before the match an
	// explanation lists.
	MaxExplainSkipped = 1000
)

// Explanation is which rule a request matches, and why.
type Explanation struct {
	RulesVersion int64
	// Rule is the matching rule (nil if none: a rule set without the Default
	// rule), at Position in match order.
	Rule     *rules.Rule
	Position int
	// Skipped are the rules tried before it, in order (at most
	// MaxExplainSkipped); More counts the others.
	Skipped []Mismatch
	More    int
	// FixedRate and Reservoir are the rule's for the request's service, the
	// budget factors (FixedRateFactor, ReservoirFactor) applied; Budgets
	// name the budgets that count its traces there.
	FixedRate, Reservoir             float64
	FixedRateFactor, ReservoirFactor float64
	Budgets                          []string
	// Summary says it in a sentence.
	Summary string
}

// Mismatch is why one rule did not match.
type Mismatch struct {
	Rule     string
	Position int
	// Field is the rule's field as the API names it ("attributes.KEY" or
	// "resource_attributes.KEY" for an attribute), Pattern its glob there,
	// Value the request's.
	Field, Pattern, Value string
	Absent                bool // the request has no such attribute
}

// Explain matches req against the replica's current rules, as SDKs do, with
// the same code (rules.Set.Explain), and says why. It reads no store.
func (s *Service) Explain(req rules.Request) (Explanation, error) {
	if err := checkRequest(&req); err != nil {
		return Explanation{}, err
	}
	view := s.catalog.Current()
	c, pos, tried, more := view.Set().Explain(&req, MaxExplainSkipped)
	out := Explanation{RulesVersion: view.Version, Position: pos, More: more, FixedRateFactor: 1, ReservoirFactor: 1}
	for _, t := range tried {
		field := t.Miss.Field
		if field == "attributes" || field == "resource_attributes" {
			field += "." + t.Miss.Key
		}
		out.Skipped = append(out.Skipped, Mismatch{
			Rule: t.Rule.Rule.Name, Position: t.Position, Field: field,
			Pattern: t.Miss.Pattern(&t.Rule.Rule), Value: t.Miss.Value, Absent: t.Miss.Absent,
		})
	}
	if c == nil {
		out.Summary = fmt.Sprintf("No rule matches (rules version %d): the SDK samples with its local default.", view.Version)
		return out, nil
	}
	r := c.Rule.Clone()
	out.Rule = &r
	budgets := s.catalog.CurrentBudgets()
	out.FixedRateFactor, out.ReservoirFactor = budgets.Factors(req.ServiceName, &r, s.now())
	out.FixedRate = r.FixedRate * out.FixedRateFactor
	out.Reservoir = float64(r.ReservoirSize) * out.ReservoirFactor
	out.Budgets = budgets.Covering(req.ServiceName, &r)
	out.Summary = summary(&out, len(tried)+more)
	return out, nil
}

// summary says an explanation in a sentence.
func summary(e *Explanation, before int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Rule %q matches (position %d of rules version %d", e.Rule.Name, e.Position+1, e.RulesVersion)
	switch before {
	case 0:
		b.WriteString(", the first tried)")
	case 1:
		b.WriteString("; 1 rule before it did not match)")
	default:
		fmt.Fprintf(&b, "; %d rules before it did not match)", before)
	}
	fmt.Fprintf(&b, ": %.4g traces/s of reservoir for the fleet, then %.4g %% of the rest", e.Reservoir, e.FixedRate*100)
	if e.FixedRateFactor < 1 || e.ReservoirFactor < 1 {
		fmt.Fprintf(&b, ", budgets %s applying ×%.4g to the fixed rate and ×%.4g to the reservoir", strings.Join(e.Budgets, ", "), e.FixedRateFactor, e.ReservoirFactor)
	}
	b.WriteString(".")
	return b.String()
}

// checkRequest bounds what an explained request may hold.
func checkRequest(req *rules.Request) error {
	var vs []rules.FieldViolation
	check := func(field, v string, max int, required bool) {
		switch {
		case required && v == "":
			vs = append(vs, rules.FieldViolation{Field: field, Description: "is required"})
		case !utf8.ValidString(v) || utf8.RuneCountInString(v) > max:
			vs = append(vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf("at most %d characters of UTF-8", max)})
		}
	}
	check("service_name", req.ServiceName, rules.MaxServiceNameLen, true)
	check("service_type", req.ServiceType, rules.MaxServiceTypeLen, false)
	check("host", req.Host, MaxExplainHostLen, false)
	check("http_method", req.HTTPMethod, MaxExplainMethodLen, false)
	check("url_path", req.URLPath, MaxExplainPathLen, false)
	check("resource_arn", req.ResourceARN, MaxExplainARNLen, false)
	if len(req.Attributes) > MaxExplainAttributes {
		vs = append(vs, rules.FieldViolation{Field: "attributes", Description: fmt.Sprintf("at most %d", MaxExplainAttributes)})
	} else {
		for _, k := range slices.Sorted(maps.Keys(req.Attributes)) {
			if k == "" || !utf8.ValidString(k) || utf8.RuneCountInString(k) > MaxExplainAttrKeyLen {
				vs = append(vs, rules.FieldViolation{Field: "attributes", Description: fmt.Sprintf("keys are 1-%d characters of UTF-8", MaxExplainAttrKeyLen)})
				continue
			}
			check("attributes."+k, req.Attributes[k], MaxExplainAttrValueLen, false)
		}
	}
	vs = append(vs, rules.ValidateResource("resource_attributes", req.Resource)...)
	if len(vs) > 0 {
		return &rules.ValidationError{Violations: vs}
	}
	return nil
}
