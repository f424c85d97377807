package auth

import (
	"strings"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// GlobWithin reports whether every service name that pattern matches is
// also matched by scope, so that a principal scoped to scope may edit a rule
// or budget for pattern. Globs are the rules' (case-insensitive, '*' any
// run, '?' one character, empty = "*").
//
// Deciding containment of globs exactly is costly, so this answers true
// only when it can prove it and false whenever unsure, which only ever
// refuses an edit that an unscoped principal can still make:
//
//   - scope matches everything ("*");
//   - pattern equals scope;
//   - pattern has no wildcard and scope matches it as a name;
//   - scope has exactly one '*' and no '?' ("shop-*", "*-shop",
//     "shop-*-eu"): pattern has a wildcard, and its literal start (before
//     its first wildcard) begins with scope's part before the '*' and its
//     literal end (after its last wildcard) finishes with scope's part after
//     it. Every name pattern matches starts with the one and ends with the
//     other, without overlap, so scope matches it.
//
// Anything else is refused: "shop-*" is not within "shop-?*" (though it
// is), and "*" is within nothing but "*".
func GlobWithin(pattern, scope string) bool {
	p, s := rules.CompileGlob(pattern), rules.CompileGlob(scope)
	if s.MatchesAll() {
		return true
	}
	if p.MatchesAll() {
		return false
	}
	ps, ss := p.String(), s.String() // case-folded
	if ps == ss {
		return true
	}
	first := strings.IndexAny(ps, "*?")
	if first < 0 {
		return s.Match(ps)
	}
	if strings.Count(ss, "*") != 1 || strings.Contains(ss, "?") {
		return false
	}
	head, tail, _ := strings.Cut(ss, "*")
	last := strings.LastIndexAny(ps, "*?")
	return strings.HasPrefix(ps[:first], head) && strings.HasSuffix(ps[last+1:], tail)
}
