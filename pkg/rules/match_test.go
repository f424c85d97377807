package rules_test

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// rule returns a rule that matches everything at the given priority; edit
// narrows it.
func rule(name string, priority int32, edit ...func(r *rules.Rule)) rules.Rule {
	r := rules.Rule{Name: name, Priority: priority, FixedRate: 0.1, ReservoirSize: 1}
	for _, e := range edit {
		e(&r)
	}
	return r
}

func svc(name string) func(r *rules.Rule) { return func(r *rules.Rule) { r.ServiceName = name } }

func attrs(kv ...string) func(r *rules.Rule) {
	return func(r *rules.Rule) {
		r.Attributes = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			r.Attributes[kv[i]] = kv[i+1]
		}
	}
}

func resource(kv ...string) func(r *rules.Rule) {
	return func(r *rules.Rule) {
		r.ResourceAttributes = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			r.ResourceAttributes[kv[i]] = kv[i+1]
		}
	}
}

// TestResourceMatch: a rule's resource globs are matched against the
// instance's resource, every one of them, case-insensitively; an attribute
// the instance does not declare matches only "*".
func TestResourceMatch(t *testing.T) {
	prod := map[string]string{"deployment.environment.name": "production", "service.version": "2.4.1"}
	staging := map[string]string{"deployment.environment.name": "staging", "service.version": "2.5.0-rc.1"}
	tests := []struct {
		name     string
		edit     func(r *rules.Rule)
		resource map[string]string
		want     bool
	}{
		{"no resource globs, any instance", func(r *rules.Rule) {}, prod, true},
		{"no resource globs, no resource", func(r *rules.Rule) {}, nil, true},
		{"environment matches", resource("deployment.environment.name", "production"), prod, true},
		{"environment differs", resource("deployment.environment.name", "production"), staging, false},
		{"case-insensitive", resource("deployment.environment.name", "PROD*"), prod, true},
		{"release glob", resource("service.version", "2.5.*"), staging, true},
		{"release glob misses", resource("service.version", "2.5.*"), prod, false},
		{"every glob must match", resource("deployment.environment.name", "staging", "service.version", "2.4.*"), staging, false},
		{"both match", resource("deployment.environment.name", "staging", "service.version", "2.5.*"), staging, true},
		{"absent attribute misses a glob", resource("k8s.cluster.name", "eu-*"), prod, false},
		{"absent attribute matches *", resource("k8s.cluster.name", "*"), prod, true},
		{"no resource misses a glob", resource("deployment.environment.name", "production"), nil, false},
		{"a resource key is matched exactly", resource("Deployment.Environment.Name", "production"), prod, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rule("r", 1, tt.edit)
			c := rules.Compile(r)
			if got := c.MatchesInstance("shop", "", tt.resource); got != tt.want {
				t.Errorf("MatchesInstance = %v, want %v", got, tt.want)
			}
			req := rules.Request{ServiceName: "shop", HTTPMethod: "GET", URLPath: "/", Resource: tt.resource}
			if got := c.Matches(&req); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
			// A set (indexed) decides the same.
			got := rules.NewSet([]rules.Rule{r}).Match(&req) != nil
			if got != tt.want {
				t.Errorf("Set.Match = %v, want %v", got, tt.want)
			}
		})
	}
	if c := rules.Compile(rule("r", 1, svc("shop"), resource("deployment.environment.name", "production"))); !c.MatchesInstance("shop", "", prod) || c.MatchesInstance("cart", "", prod) {
		t.Error("MatchesInstance ignored the service name")
	}
}

func TestNeedsResource(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(r *rules.Rule)
		want bool
	}{
		{"none", func(r *rules.Rule) {}, false},
		{"only *", resource("deployment.environment.name", "*"), false},
		{"a glob", resource("deployment.environment.name", "*", "service.version", "2.*"), true},
	} {
		c := rules.Compile(rule("r", 1, tt.edit))
		if got := c.NeedsResource(); got != tt.want {
			t.Errorf("%s: NeedsResource = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSetMatch(t *testing.T) {
	checkoutPOST := rules.Request{
		ServiceName: "checkout", ServiceType: "AWS::ECS::Container", Host: "shop.example.com",
		HTTPMethod: "POST", URLPath: "/api/cart/checkout", ResourceARN: "arn:aws:ecs:eu-west-1:1:task/x",
		Attributes: map[string]string{"tier": "gold", "region": "eu-west-1"},
	}
	tests := []struct {
		name  string
		rules []rules.Rule
		req   rules.Request
		want  string // name of the matched rule; "" for none
	}{
		{
			name:  "lower priority wins whatever the input order",
			rules: []rules.Rule{rule("b", 20), rule("a", 10)},
			req:   checkoutPOST,
			want:  "a",
		},
		{
			name:  "priority beats name",
			rules: []rules.Rule{rule("a", 20), rule("z", 10)},
			req:   checkoutPOST,
			want:  "z",
		},
		{
			name:  "tie on priority broken by name",
			rules: []rules.Rule{rule("beta", 10), rule("gamma", 10), rule("alpha", 10)},
			req:   checkoutPOST,
			want:  "alpha",
		},
		{
			name:  "earlier rule that does not match is skipped",
			rules: []rules.Rule{rule("cart", 2, svc("cart")), rule("checkout", 3, svc("checkout")), rule("any", 4)},
			req:   checkoutPOST,
			want:  "checkout",
		},
		{
			name:  "Default comes after every rule",
			rules: []rules.Rule{rules.Default(), rule("last", rules.MaxPriority)},
			req:   checkoutPOST,
			want:  "last",
		},
		{
			// Validate accepts an unset priority on the Default rule, so a
			// set built from validated but not normalized rules must still
			// try the Default last.
			name:  "Default with unset priority still comes last",
			rules: []rules.Rule{func() rules.Rule { d := rules.Default(); d.Priority = 0; return d }(), rule("any", 5000)},
			req:   checkoutPOST,
			want:  "any",
		},
		{
			name:  "Default matches what nothing else does",
			rules: []rules.Rule{rule("cart", 1, svc("cart")), rules.Default()},
			req:   checkoutPOST,
			want:  rules.DefaultName,
		},
		{
			name:  "Default matches an empty request",
			rules: []rules.Rule{rule("cart", 1, svc("cart")), rules.Default()},
			req:   rules.Request{},
			want:  rules.DefaultName,
		},
		{
			name:  "Default matches a request with odd attributes",
			rules: []rules.Rule{rules.Default()},
			req: rules.Request{
				ServiceName: "ü", HTTPMethod: "BREW", URLPath: "//",
				Attributes: map[string]string{"": "", "k": "\n"},
			},
			want: rules.DefaultName,
		},
		{
			name:  "no Default and no match",
			rules: []rules.Rule{rule("cart", 1, svc("cart"))},
			req:   checkoutPOST,
			want:  "",
		},
		{
			name:  "empty set",
			rules: nil,
			req:   checkoutPOST,
			want:  "",
		},

		// Service name and type.
		{
			name: "service name and type both match",
			rules: []rules.Rule{rule("ecs-shop", 1, func(r *rules.Rule) {
				r.ServiceName, r.ServiceType = "CHECK*", "AWS::ECS::*"
			}), rule("any", 2)},
			req:  checkoutPOST,
			want: "ecs-shop",
		},
		{
			name: "service type does not match",
			rules: []rules.Rule{rule("ec2-shop", 1, func(r *rules.Rule) {
				r.ServiceName, r.ServiceType = "checkout", "AWS::EC2::Instance"
			}), rule("any", 2)},
			req:  checkoutPOST,
			want: "any",
		},

		// Request-level globs.
		{
			name:  "host",
			rules: []rules.Rule{rule("other-host", 1, func(r *rules.Rule) { r.Host = "*.example.org" }), rule("host", 2, func(r *rules.Rule) { r.Host = "*.EXAMPLE.com" })},
			req:   checkoutPOST,
			want:  "host",
		},
		{
			name:  "http method",
			rules: []rules.Rule{rule("get", 1, func(r *rules.Rule) { r.HTTPMethod = "GET" }), rule("post", 2, func(r *rules.Rule) { r.HTTPMethod = "post" })},
			req:   checkoutPOST,
			want:  "post",
		},
		{
			name: "url path",
			rules: []rules.Rule{
				rule("json", 1, func(r *rules.Rule) { r.URLPath = "*.json" }),
				rule("cart", 2, func(r *rules.Rule) { r.URLPath = "/api/cart/*" }),
			},
			req:  checkoutPOST,
			want: "cart",
		},
		{
			name: "resource ARN",
			rules: []rules.Rule{
				rule("us", 1, func(r *rules.Rule) { r.ResourceARN = "arn:aws:ecs:us-*" }),
				rule("eu", 2, func(r *rules.Rule) { r.ResourceARN = "arn:aws:ecs:eu-*" }),
			},
			req:  checkoutPOST,
			want: "eu",
		},
		{
			name:  "empty request field matches only a glob that allows it",
			rules: []rules.Rule{rule("needs-host", 1, func(r *rules.Rule) { r.Host = "?*" }), rule("any-host", 2, func(r *rules.Rule) { r.Host = "*" })},
			req:   rules.Request{ServiceName: "checkout"},
			want:  "any-host",
		},
		{
			name: "every condition must match",
			rules: []rules.Rule{rule("almost", 1, func(r *rules.Rule) {
				r.ServiceName, r.HTTPMethod, r.URLPath, r.Host = "checkout", "POST", "/api/cart/*", "*.example.org"
			}), rule("any", 2)},
			req:  checkoutPOST,
			want: "any",
		},

		// Attributes.
		{
			name:  "all attributes match",
			rules: []rules.Rule{rule("gold-eu", 1, attrs("tier", "GOLD", "region", "eu-*")), rule("any", 2)},
			req:   checkoutPOST,
			want:  "gold-eu",
		},
		{
			name:  "one attribute does not match",
			rules: []rules.Rule{rule("gold-us", 1, attrs("tier", "gold", "region", "us-*")), rule("any", 2)},
			req:   checkoutPOST,
			want:  "any",
		},
		{
			name:  "absent attribute does not match a glob",
			rules: []rules.Rule{rule("plan", 1, attrs("tier", "gold", "plan", "?*")), rule("any", 2)},
			req:   checkoutPOST,
			want:  "any",
		},
		{
			name:  "absent attribute does not match a glob that matches the empty string",
			rules: []rules.Rule{rule("plan", 1, attrs("plan", "*?*")), rule("any", 2)},
			req:   rules.Request{Attributes: map[string]string{"plan": ""}},
			want:  "any",
		},
		{
			name:  "absent attribute matches *",
			rules: []rules.Rule{rule("plan-any", 1, attrs("tier", "gold", "plan", "*")), rule("any", 2)},
			req:   checkoutPOST,
			want:  "plan-any",
		},
		{
			name:  "absent attribute matches **",
			rules: []rules.Rule{rule("plan-any", 1, attrs("plan", "**")), rule("any", 2)},
			req:   rules.Request{},
			want:  "plan-any",
		},
		{
			name:  "present empty attribute matches *",
			rules: []rules.Rule{rule("plan-any", 1, attrs("plan", "*")), rule("any", 2)},
			req:   rules.Request{Attributes: map[string]string{"plan": ""}},
			want:  "plan-any",
		},
		{
			name:  "attribute keys are case-sensitive",
			rules: []rules.Rule{rule("tier", 1, attrs("Tier", "gold")), rule("any", 2)},
			req:   checkoutPOST,
			want:  "any",
		},
		{
			name:  "extra request attributes are ignored",
			rules: []rules.Rule{rule("tier", 1, attrs("tier", "g?ld"))},
			req:   checkoutPOST,
			want:  "tier",
		},
		{
			name:  "nil request attributes",
			rules: []rules.Rule{rule("tier", 1, attrs("tier", "gold")), rule("any", 2)},
			req:   rules.Request{ServiceName: "checkout"},
			want:  "any",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rules.NewSet(tt.rules)
			got := s.Match(&tt.req)
			switch {
			case tt.want == "" && got != nil:
				t.Errorf("Match() = %q, want no rule", got.Rule.Name)
			case tt.want != "" && got == nil:
				t.Errorf("Match() = nil, want %q", tt.want)
			case tt.want != "" && got.Rule.Name != tt.want:
				t.Errorf("Match() = %q, want %q", got.Rule.Name, tt.want)
			}
			// Explain finds the same rule, at its place in the order.
			c, pos, _, _ := s.Explain(&tt.req, -1)
			if c != got || c != nil && &s.Rules()[pos] != c {
				t.Errorf("Explain() = %v at %d, Match() = %v", c, pos, got)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	req := rules.Request{
		ServiceName: "checkout", ServiceType: "ecs", Host: "shop.example.com", HTTPMethod: "POST",
		URLPath: "/api/cart", ResourceARN: "arn:x", Attributes: map[string]string{"tier": "gold"},
		Resource: map[string]string{"deployment.environment.name": "staging"},
	}
	edit := func(f func(r *rules.Rule)) func(r *rules.Rule) { return f }
	set := rules.NewSet([]rules.Rule{
		rule("r1-service", 1, svc("cart")),
		rule("r2-type", 2, edit(func(r *rules.Rule) { r.ServiceType = "lambda" })),
		rule("r2a-env", 2, resource("deployment.environment.name", "prod*")),
		rule("r2b-version", 2, resource("deployment.environment.name", "*", "service.version", "2.*")),
		rule("r3-host", 3, edit(func(r *rules.Rule) { r.Host = "*.internal" })),
		rule("r4-method", 4, edit(func(r *rules.Rule) { r.HTTPMethod = "GET" })),
		rule("r5-path", 5, edit(func(r *rules.Rule) { r.URLPath = "/health*" })),
		rule("r6-arn", 6, edit(func(r *rules.Rule) { r.ResourceARN = "arn:y*" })),
		rule("r7-value", 7, attrs("tier", "silver")),
		rule("r8-absent", 8, attrs("tier", "gold", "region", "eu-*")),
		rule("r9-match", 9, svc("CHECK*"), attrs("tier", "g*")),
		rule("r10-later", 10),
	})
	type trial struct {
		Rule, Pattern string
		Miss          rules.Miss
	}
	want := []trial{
		{"r1-service", "cart", rules.Miss{Field: "service_name", Value: "checkout"}},
		{"r2-type", "lambda", rules.Miss{Field: "service_type", Value: "ecs"}},
		{"r2a-env", "prod*", rules.Miss{Field: "resource_attributes", Key: "deployment.environment.name", Value: "staging"}},
		{"r2b-version", "2.*", rules.Miss{Field: "resource_attributes", Key: "service.version", Absent: true}},
		{"r3-host", "*.internal", rules.Miss{Field: "host", Value: "shop.example.com"}},
		{"r4-method", "GET", rules.Miss{Field: "http_method", Value: "POST"}},
		{"r5-path", "/health*", rules.Miss{Field: "url_path", Value: "/api/cart"}},
		{"r6-arn", "arn:y*", rules.Miss{Field: "resource_arn", Value: "arn:x"}},
		{"r7-value", "silver", rules.Miss{Field: "attributes", Key: "tier", Value: "gold"}},
		{"r8-absent", "eu-*", rules.Miss{Field: "attributes", Key: "region", Absent: true}},
	}
	for _, tc := range []struct {
		name    string
		max     int
		tried   []trial
		skipped int
	}{
		{"every rule", -1, want, 0},
		{"the first three", 3, want[:3], len(want) - 3},
		{"none", 0, nil, len(want)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, pos, tried, skipped := set.Explain(&req, tc.max)
			if c == nil || c.Rule.Name != "r9-match" || pos != 10 {
				t.Fatalf("Explain matched %v at %d, want r9-match at 10", c, pos)
			}
			var got []trial
			for i, tr := range tried {
				if tr.Position != i || &set.Rules()[i] != tr.Rule {
					t.Errorf("trial %d is of position %d", i, tr.Position)
				}
				got = append(got, trial{tr.Rule.Rule.Name, tr.Miss.Pattern(&tr.Rule.Rule), tr.Miss})
			}
			if diff := cmp.Diff(tc.tried, got); diff != "" {
				t.Errorf("trials (-want +got):\n%s", diff)
			}
			if skipped != tc.skipped {
				t.Errorf("skipped %d, want %d", skipped, tc.skipped)
			}
		})
	}
	none := rules.NewSet([]rules.Rule{rule("only", 1, svc("cart"))})
	if c, pos, tried, _ := none.Explain(&req, -1); c != nil || pos != -1 || len(tried) != 1 {
		t.Errorf("Explain without a match = %v, %d, %d trials; want nil, -1, 1", c, pos, len(tried))
	}
}

func TestSetOrder(t *testing.T) {
	d := rules.Default()
	unset := rules.Default()
	unset.Priority = 0
	tests := []struct {
		name string
		in   []rules.Rule
		want []string
	}{
		{
			name: "priority then name, Default last",
			in:   []rules.Rule{d, rule("c", 5), rule("b", 5), rule("a", 9999), rule("d", 1)},
			want: []string{"d", "b", "c", "a", rules.DefaultName},
		},
		{
			name: "unset Default priority",
			in:   []rules.Rule{rule("a", 1), unset, rule("b", 2)},
			want: []string{"a", "b", rules.DefaultName},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range rules.NewSet(tt.in).Rules() {
				got = append(got, c.Rule.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("NewSet().Rules() in order %q, want %q", got, tt.want)
			}
			sorted := slices.Clone(tt.in)
			rules.Sort(sorted)
			got = got[:0]
			for _, r := range sorted {
				got = append(got, r.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Sort() gives order %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	d := rules.Default()
	tests := []struct {
		a, b rules.Rule
		want int
	}{
		{rule("a", 1), rule("b", 2), -1},
		{rule("b", 1), rule("a", 2), -1},
		{rule("a", 2), rule("b", 1), 1},
		{rule("a", 5), rule("b", 5), -1},
		{rule("b", 5), rule("a", 5), 1},
		{rule("a", 5), rule("a", 5), 0},
		{rule("z", rules.MaxPriority), d, -1},
		{d, rule("z", rules.MaxPriority), 1},
		{d, d, 0},
		{rule("Z", 10000), d, -1}, // even at the Default's own priority
		{rule("a", 1), rule(rules.DefaultName, 0), -1},
		{rule(rules.DefaultName, 0), rule("a", 1), 1},
	}
	for _, tt := range tests {
		if got := rules.Compare(&tt.a, &tt.b); got != tt.want {
			t.Errorf("Compare(%s@%d, %s@%d) = %d, want %d", tt.a.Name, tt.a.Priority, tt.b.Name, tt.b.Priority, got, tt.want)
		}
	}
}

func TestNewSetDoesNotModifyInput(t *testing.T) {
	in := []rules.Rule{
		rule("c", 30, attrs("tier", "gold")),
		rules.Default(),
		rule("a", 10, svc("checkout")),
		rule("b", 10, func(r *rules.Rule) { r.Labels = map[string]string{"team": "x"} }),
	}
	before := make([]rules.Rule, len(in))
	for i, r := range in {
		before[i] = r.Clone()
	}
	s := rules.NewSet(in)
	if !reflect.DeepEqual(in, before) {
		t.Fatalf("NewSet modified its input:\n got %+v\nwant %+v", in, before)
	}

	// The set is immutable: later edits of the caller's rules do not reach it.
	in[0].Attributes["tier"] = "silver"
	in[3].Labels["team"] = "y"
	in[2].ServiceName = "cart"
	for _, c := range s.Rules() {
		switch c.Rule.Name {
		case "c":
			if c.Rule.Attributes["tier"] != "gold" {
				t.Errorf("editing the input changed the set's rule c attributes to %v", c.Rule.Attributes)
			}
		case "b":
			if c.Rule.Labels["team"] != "x" {
				t.Errorf("editing the input changed the set's rule b labels to %v", c.Rule.Labels)
			}
		case "a":
			if c.Rule.ServiceName != "checkout" {
				t.Errorf("editing the input changed the set's rule a to %q", c.Rule.ServiceName)
			}
		}
	}
	if got := s.Match(&rules.Request{ServiceName: "checkout", Attributes: map[string]string{"tier": "gold"}}); got == nil || got.Rule.Name != "a" {
		t.Errorf("Match() after editing the input = %v, want rule a", got)
	}
}

func TestCompile(t *testing.T) {
	r := rule("r", 1, attrs("b", "2", "a", "1", "c", "3*"), func(r *rules.Rule) {
		r.ServiceName, r.ServiceType, r.URLPath = "Checkout", "", "/API/*"
	})
	c := rules.Compile(r)
	var keys []string
	for _, a := range c.Attributes {
		keys = append(keys, a.Key)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Errorf("Compile().Attributes keys = %q, want sorted [a b c]", keys)
	}
	if got := c.ServiceName.String(); got != "checkout" {
		t.Errorf("Compile().ServiceName = %q, want %q", got, "checkout")
	}
	if !c.ServiceType.MatchesAll() {
		t.Errorf("Compile().ServiceType of an empty glob = %q, want *", c.ServiceType)
	}
	if got := c.URLPath.String(); got != "/api/*" {
		t.Errorf("Compile().URLPath = %q, want %q", got, "/api/*")
	}
	if !reflect.DeepEqual(c.Rule, r) {
		t.Errorf("Compile().Rule = %+v, want %+v", c.Rule, r)
	}
	if !c.MatchesService("CHECKOUT", "anything") || c.MatchesService("cart", "") {
		t.Error("MatchesService does not follow the service name glob")
	}
}

func TestSetMatchDoesNotAllocate(t *testing.T) {
	s, late, early := benchSet()
	none := rules.Request{ServiceName: "nobody", HTTPMethod: "GET", URLPath: "/"}
	for _, req := range []*rules.Request{&late, &early, &none} {
		var got *rules.Compiled
		if allocs := testing.AllocsPerRun(100, func() { got = s.Match(req) }); allocs != 0 {
			t.Errorf("Set.Match(%+v) allocates %v times per call, want 0", req, allocs)
		}
		if got == nil {
			t.Errorf("Set.Match(%+v) = nil, want a rule (the set has a Default)", req)
		}
	}
}

// TestSetConcurrentMatch exercises the documented safety for concurrent use
// under the race detector.
func TestSetConcurrentMatch(t *testing.T) {
	s, late, early := benchSet()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			req := late
			want := benchLateRule
			if i%2 == 0 {
				req, want = early, benchEarlyRule
			}
			for range 200 {
				if got := s.Match(&req); got == nil || got.Rule.Name != want {
					t.Errorf("concurrent Match() = %v, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

const (
	benchEarlyRule = "r000-checkout"
	benchLateRule  = "r195-recommendations"
)

// benchSet returns a realistic set of 200 rules plus the Default (varied
// services, methods, paths with prefixes, suffixes and inner wildcards, some
// attributes), a request that only the rule tried 196th matches, and one that
// the first rule matches.
func benchSet() (s *rules.Set, late, early rules.Request) {
	services := []string{
		"checkout", "cart", "catalog", "search", "payments",
		"users", "inventory", "shipping", "auth", "recommendations",
	}
	methods := []string{"GET", "POST", "PUT", "DELETE", "*"}
	rs := make([]rules.Rule, 0, 201)
	for i := range 200 {
		sv := services[i%len(services)]
		r := rules.Rule{
			Name:          fmt.Sprintf("r%03d-%s", i, sv),
			Priority:      int32(1 + i/2), // pairs tie on priority; names decide
			FixedRate:     0.05,
			ReservoirSize: 1,
			ServiceType:   "*",
			Host:          "*",
			HTTPMethod:    methods[i%len(methods)],
			ResourceARN:   "*",
		}
		switch i % 4 {
		case 0:
			r.ServiceName = sv
		case 1:
			r.ServiceName = sv + "*"
		case 2:
			r.ServiceName = "*" + sv
		case 3:
			r.ServiceName = "*"
		}
		switch i % 6 {
		case 0:
			r.URLPath = "/api/v1/" + sv + "/*"
		case 1:
			r.URLPath = "*/" + sv + ".json"
		case 2:
			r.URLPath = "/api/*/" + sv + "/items/?*"
		case 3:
			r.URLPath = "/" + sv + "/health"
		case 4:
			r.URLPath = "*/" + sv + "/admin/*"
		case 5:
			r.URLPath = "/v?/" + sv + "/*/details"
		}
		if i%3 == 0 {
			r.ServiceType = "AWS::ECS::Container"
		}
		if i%8 == 0 {
			r.Host = "*.example.com"
		}
		if i%7 == 0 {
			r.Attributes = map[string]string{"tier": "gold"}
		}
		if i%11 == 0 {
			r.Attributes = map[string]string{"region": "eu-*", "tier": "*"}
		}
		if i == 195 {
			r.Name = benchLateRule
			r.ServiceName = "recommendations"
			r.HTTPMethod = "GET"
			r.URLPath = "/api/v3/recommendations/similar/*"
			r.Attributes = map[string]string{"tier": "gold", "region": "eu-*"}
		}
		rs = append(rs, r)
	}
	rs = append(rs, rules.Default())
	// Shuffle deterministically, so the set does the ordering.
	for i := range rs {
		j := (i * 7919) % len(rs)
		rs[i], rs[j] = rs[j], rs[i]
	}
	late = rules.Request{
		ServiceName: "Recommendations", ServiceType: "AWS::ECS::Container", Host: "api.example.com",
		HTTPMethod: "GET", URLPath: "/api/v3/recommendations/similar/8412",
		ResourceARN: "arn:aws:ecs:eu-west-1:123456789012:task/recs/0f3a",
		Attributes:  map[string]string{"tier": "gold", "region": "eu-west-1", "user": "u-1"},
	}
	early = rules.Request{
		ServiceName: "checkout", ServiceType: "AWS::ECS::Container", Host: "shop.example.com",
		HTTPMethod: "GET", URLPath: "/api/v1/checkout/cart/42",
		ResourceARN: "arn:aws:ecs:eu-west-1:123456789012:task/checkout/1a2b",
		Attributes:  map[string]string{"tier": "gold", "region": "eu-west-1"},
	}
	return rules.NewSet(rs), late, early
}

func TestBenchSet(t *testing.T) {
	s, late, early := benchSet()
	rs := s.Rules()
	if len(rs) != 201 {
		t.Fatalf("bench set has %d rules, want 201", len(rs))
	}
	for _, tc := range []struct {
		req      rules.Request
		want     string
		position int
	}{{late, benchLateRule, 195}, {early, benchEarlyRule, 0}} {
		got := s.Match(&tc.req)
		if got == nil || got.Rule.Name != tc.want {
			t.Fatalf("Match(%+v) = %v, want %q", tc.req, got, tc.want)
		}
		if pos := slices.IndexFunc(rs, func(c rules.Compiled) bool { return c.Rule.Name == tc.want }); pos != tc.position {
			t.Errorf("%q is tried at position %d, want %d", tc.want, pos, tc.position)
		}
	}
}

func BenchmarkMatch200Rules(b *testing.B) {
	s, late, early := benchSet()
	none := late
	none.URLPath = "/api/v3/recommendations/other"
	for _, bc := range []struct {
		name string
		req  rules.Request
		want string
	}{
		{"late", late, benchLateRule},
		{"early", early, benchEarlyRule},
		{"default", none, rules.DefaultName},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := s.Match(&bc.req); got == nil || got.Rule.Name != bc.want {
				b.Fatalf("Match() = %v, want %q", got, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				s.Match(&bc.req)
			}
		})
	}
}
