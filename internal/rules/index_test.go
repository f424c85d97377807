package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestIndexIsASupersetFilter: for random rule sets and requests, matching
// through the index finds exactly the rule a full scan finds.
func TestIndexIsASupersetFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	methods := []string{"GET", "get", "POST", "PUT", "*", "G*", "?ET", "DELETE", "pÖst"}
	paths := []string{"*", "/", "/api", "/api/*", "/API/v1/*", "/api/v1/items", "/api/v?/items/*", "*.json", "/a*b", "/Äpi/*", "/api/v1/items/*", "/health", "/x?"}
	reqMethods := []string{"GET", "get", "POST", "PUT", "DELETE", "PATCH", "", "PÖST"}
	reqPaths := []string{"", "/", "/api", "/api/v1/items", "/API/V1/ITEMS/42", "/api/v2/items/1.json", "/ab", "/axxb", "/äpi/x", "/health", "/healthz", "/xy", "/x"}
	for round := 0; round < 300; round++ {
		n := 1 + rng.IntN(80)
		if round%50 == 0 {
			n = MaxIndexed + 1 // unindexed
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
				want := set.Match(req)
				var got *Compiled
				c, ok := idx.Candidates(m, p)
				if !ok {
					if n <= MaxIndexed {
						t.Fatalf("a set of %d rules was not indexed", n)
					}
					continue
				}
				for i := c.Next(); i >= 0; i = c.Next() {
					full := set.Rules()[i].Matches(req)
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
