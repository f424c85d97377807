package rules

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestIndexIsASupersetFilter: for random rule sets and requests, matching
// through the index finds exactly the rule a full scan finds.
func TestIndexIsASupersetFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	methods := []string{"GET", "get", "POST", "PUT", "*", "G*", "?ET", "DELETE", "pÖst", "LOCK", "PROPPATCH", "GET\x00", "A", "GE", "OPTIONS", "PROPFIND", "G\x00T"}
	paths := []string{"*", "/", "/api", "/api/*", "/API/v1/*", "/api/v1/items", "/api/v?/items/*", "*.json", "/a*b", "/Äpi/*", "/api/v1/items/*", "/health", "/x?"}
	// The Kelvin sign and the long s fold to "k" and "s": a non-ASCII
	// request can match an ASCII rule.
	reqMethods := []string{"GET", "get", "POST", "PUT", "DELETE", "PATCH", "", "PÖST", "LOC\u212a", "lock", "PROPPATCH", "proppatcH", "GET\x00", "\x00GET",
		"A", "a", "GE", "ge", "G\x00T", "\x00", "G\xffT", "OPTIONS", "options", "PROPFIND", "propfinD"}
	reqPaths := []string{"", "/", "/api", "/api/v1/items", "/API/V1/ITEMS/42", "/api/v2/items/1.json", "/ab", "/axxb", "/äpi/x", "/health", "/healthz", "/xy", "/x",
		"/api/v1/itemſ", "/api/v1/itemſ/42", "/api/v1/items/a_long_tail_0123456789", "/API/V1/ITEMS", "/apı/v1/items", "/he"}
	for round := 0; round < 300; round++ {
		n := 1 + rng.IntN(80)
		switch {
		case round%50 == 0:
			n = MaxIndexed + 1 // unindexed
		case round%30 == 15:
			n = 65 + rng.IntN(MaxIndexed-64) // bitmaps of many words
		}
		var rs []Rule
		for i := 0; i < n; i++ {
			rs = append(rs, Rule{
				Name: fmt.Sprintf("r%03d", i), Priority: int32(1 + rng.IntN(50)),
				HTTPMethod: methods[rng.IntN(len(methods))], URLPath: paths[rng.IntN(len(paths))],
			})
		}
		set := NewSet(rs)
		idx := NewIndex(set.Rules())
		for _, m := range reqMethods {
			for _, p := range reqPaths {
				req := &Request{HTTPMethod: m, URLPath: p}
				want := fullScan(set, req)
				var got *Compiled
				c, ok := idx.Candidates(m, p)
				if idx.Small() != (n <= 64) {
					t.Fatalf("a set of %d rules: Small() = %v", n, idx.Small())
				}
				if c64, ok64 := idx.Candidates64(m, p); idx.Small() && (ok64 != ok || !slices.Equal(bitsOf(c64), drain(c))) {
					t.Fatalf("%s %q: Candidates64 = %x, %v; Candidates = %v, %v", m, p, c64, ok64, drain(c), ok)
				}
				if !ok {
					if n <= MaxIndexed && isASCII(m) && isASCII(p) {
						t.Fatalf("a set of %d rules was not indexed", n)
					}
					continue
				}
				for i := c.Next(); i >= 0; i = c.Next() {
					full := set.Rules()[i].Matches(req)
					if idx.Small() && idx.Settled(i) != (idx.Decided64()&(1<<i) != 0) {
						t.Fatalf("rule %d: Settled and Decided64 disagree", i)
					}
					if idx.Settled(i) && !full {
						t.Fatalf("%s %q: rule %s is settled by the index but does not match", m, p, name(&set.Rules()[i]))
					}
					if full {
						got = &set.Rules()[i]
						break
					}
				}
				if got != want {
					t.Fatalf("round %d, %s %q: index found %v, full scan %v", round, m, p, name(got), name(want))
				}
			}
		}
	}
}

// TestIndexLargestSet: MaxIndexed rules on distinct paths that branch at
// every byte, the most tree nodes an index holds, are indexed and found.
func TestIndexLargestSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	seen := map[string]bool{}
	var rs []Rule
	for len(rs) < MaxIndexed {
		b := make([]byte, 1+rng.IntN(24))
		for i := range b {
			b[i] = "ab/"[rng.IntN(3)]
		}
		p := string(b)
		if seen[p] {
			continue
		}
		seen[p] = true
		rs = append(rs, Rule{Name: fmt.Sprintf("r%04d", len(rs)), Priority: int32(1 + len(rs)%MaxPriority), HTTPMethod: []string{"GET", "*"}[rng.IntN(2)], URLPath: p + "*"})
	}
	if MaxIndexed < MaxRules {
		t.Fatalf("MaxIndexed %d is under MaxRules %d: the largest rule set a control plane sends would be matched rule by rule", MaxIndexed, MaxRules)
	}
	set := NewSet(rs)
	idx := NewIndex(set.Rules())
	if len(idx.nodes) < MaxIndexed {
		t.Fatalf("the tree has %d nodes; the test wants one that branches more", len(idx.nodes))
	}
	for j := 0; j < 2000; j++ {
		// A rule's prefix, in upper case, then more; or cut short.
		p := strings.TrimSuffix(rs[rng.IntN(len(rs))].URLPath, "*")
		path := strings.ToUpper(p) + "ab"
		if j%2 == 1 {
			path = p[:rng.IntN(len(p)+1)]
		}
		req := &Request{HTTPMethod: "get", URLPath: path}
		c, ok := idx.Candidates("get", path)
		if !ok {
			t.Fatalf("%q not narrowed in a set of %d rules", path, len(rs))
		}
		var got *Compiled
		for i := c.Next(); i >= 0; i = c.Next() {
			if set.Rules()[i].Matches(req) {
				got = &set.Rules()[i]
				break
			}
		}
		if want := fullScan(set, req); got != want {
			t.Fatalf("%q: index found %v, full scan %v", path, name(got), name(want))
		}
	}
}

func name(c *Compiled) string {
	if c == nil {
		return "<none>"
	}
	return c.Rule.Name + " " + c.Rule.HTTPMethod + " " + c.Rule.URLPath
}

func TestIndexNarrows(t *testing.T) {
	var rs []Rule
	for i := 0; i < 50; i++ {
		rs = append(rs, Rule{Name: fmt.Sprintf("r%02d", i), Priority: int32(i + 1), HTTPMethod: []string{"GET", "POST"}[i%2], URLPath: fmt.Sprintf("/api/v%d/*", i)})
	}
	rs = append(rs, Default())
	set := NewSet(rs)
	idx := NewIndex(set.Rules())
	c, _ := idx.Candidates("get", "/API/v40/items")
	var got []string
	for i := c.Next(); i >= 0; i = c.Next() {
		got = append(got, set.Rules()[i].Rule.Name)
	}
	// Not r04: "/api/v4/" does not start "/api/v40/items".
	if fmt.Sprint(got) != "[r40 Default]" {
		t.Errorf("candidates %v, want [r40 Default]", got)
	}
	if n := testing.AllocsPerRun(100, func() { idx.Candidates("GET", "/api/v40/items") }); n != 0 {
		t.Errorf("Candidates allocates %v times", n)
	}
}

// TestIndexUnicodeFolding: a non-ASCII character of a request can fold into
// the ASCII of a rule (the Kelvin sign into "k", the long s into "s"), so the
// index must not rule such a request out.
func TestIndexUnicodeFolding(t *testing.T) {
	tests := []struct {
		rule       Rule
		method     string
		path       string
		wantMatch  bool
		wantNarrow bool // the index may answer without a full scan
	}{
		{Rule{HTTPMethod: "LOCK", URLPath: "*"}, "LOC\u212a", "/", true, false},
		{Rule{HTTPMethod: "*", URLPath: "/api/v1/items"}, "GET", "/api/v1/itemſ", true, false},
		{Rule{HTTPMethod: "*", URLPath: "/api/v1/items/*"}, "GET", "/api/v1/itemſ/42", true, false},
		{Rule{HTTPMethod: "*", URLPath: "/a/very/long/label/of/many/words/*"}, "GET", "/a/very/long/label/of/many/wordſ/x", true, false},
		{Rule{HTTPMethod: "*", URLPath: "/api/*"}, "GET", "/\u212api/x", false, false},
		{Rule{HTTPMethod: "GET", URLPath: "/api/*"}, "get", "/API/x", true, true},
		{Rule{HTTPMethod: "GET", URLPath: "/api/*"}, "POST", "/api/x", false, true},
		{Rule{HTTPMethod: "*", URLPath: "/api/v1/items"}, "GET", "/api/v2/itemſ", false, true},
	}
	for _, tt := range tests {
		tt.rule.Name = "r"
		set := NewSet([]Rule{tt.rule})
		req := &Request{HTTPMethod: tt.method, URLPath: tt.path}
		if got := set.Match(req) != nil; got != tt.wantMatch {
			t.Errorf("%s %q against %s %s: match %v, want %v", tt.method, tt.path, tt.rule.HTTPMethod, tt.rule.URLPath, got, tt.wantMatch)
		}
		c, ok := NewIndex(set.Rules()).Candidates(tt.method, tt.path)
		if ok && tt.wantMatch && c.Next() != 0 {
			t.Errorf("%s %q: the index ruled out %s %s, which matches", tt.method, tt.path, tt.rule.HTTPMethod, tt.rule.URLPath)
		}
		if ok != tt.wantNarrow {
			t.Errorf("%s %q: narrowed %v, want %v", tt.method, tt.path, ok, tt.wantNarrow)
		}
	}
}

// TestIndexRandomPrefixes: rules and paths over a small alphabet, so that
// prefixes share and split at every length, on both sides of the 8-byte
// words a walk compares; the index must agree with a full scan.
func TestIndexRandomPrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	word := func(max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = "abAB/"[rng.IntN(5)]
		}
		return string(b)
	}
	for round := 0; round < 200; round++ {
		var rs []Rule
		for i, n := 0, 1+rng.IntN(64); i < n; i++ {
			p := word(20)
			switch rng.IntN(3) {
			case 0:
				p += "*"
			case 1:
				p += "?" + word(3) + "*"
			}
			// The longest pattern first, so that the deepest prefix wins.
			rs = append(rs, Rule{Name: fmt.Sprintf("r%02d", i), Priority: int32(100 - len(p)), URLPath: p})
		}
		set := NewSet(rs)
		idx := NewIndex(set.Rules())
		for j := 0; j < 200; j++ {
			// Mostly a rule's pattern with its wildcards filled in, in
			// mixed case, sometimes cut short or with one byte changed,
			// so that walks go deep.
			p := []byte(strings.NewReplacer("*", word(4), "?", "b").Replace(rs[rng.IntN(len(rs))].URLPath))
			for k := range p {
				if rng.IntN(2) == 0 && 'a' <= p[k] && p[k] <= 'z' {
					p[k] -= 'a' - 'A'
				}
			}
			switch rng.IntN(4) {
			case 0:
				p = p[:rng.IntN(len(p)+1)]
			case 1:
				if len(p) > 0 {
					p[rng.IntN(len(p))] = "abAB/"[rng.IntN(5)]
				}
			}
			path := string(p) + word(6)
			req := &Request{URLPath: path}
			want := fullScan(set, req)
			c, ok := idx.Candidates("GET", path)
			if !ok {
				t.Fatalf("ASCII path %q not narrowed", path)
			}
			var got *Compiled
			for i := c.Next(); i >= 0; i = c.Next() {
				if set.Rules()[i].Matches(req) {
					got = &set.Rules()[i]
					break
				}
			}
			if got != want {
				t.Fatalf("round %d, %q: index found %v, full scan %v", round, path, name(got), name(want))
			}
		}
	}
}

// drain returns every candidate c yields, leaving c as it was.
func drain(c Cursor) []int {
	var out []int
	for i := c.Next(); i >= 0; i = c.Next() {
		out = append(out, i)
	}
	return out
}

// bitsOf returns the positions of the set bits of w, lowest first.
func bitsOf(w uint64) []int {
	var out []int
	for i := range 64 {
		if w&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// fullScan is Set.Match without the index.
func fullScan(set *Set, req *Request) *Compiled {
	for i := range set.Rules() {
		if set.Rules()[i].Matches(req) {
			return &set.Rules()[i]
		}
	}
	return nil
}
