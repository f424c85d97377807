package jaeger

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// rule returns a rule with the Default's catch-all globs, edited by set.
func rule(name string, prio int32, rate float64, reservoir int64, set func(*rules.Rule)) rules.Rule {
	r := rules.Rule{Name: name, Priority: prio, FixedRate: rate, ReservoirSize: reservoir}
	if set != nil {
		set(&r)
	}
	return r.Normalize()
}

func def(rate float64, reservoir int64) rules.Rule {
	d := rules.Default()
	d.FixedRate, d.ReservoirSize = rate, reservoir
	return d
}

func route(method, path string) func(*rules.Rule) {
	return func(r *rules.Rule) { r.HTTPMethod, r.URLPath = method, path }
}

// in gives every rule factors 1 and 1.
func in(rs ...rules.Rule) []Rule {
	out := make([]Rule, len(rs))
	for i := range rs {
		out[i] = Rule{Rule: &rs[i], FixedRateFactor: 1, ReservoirFactor: 1}
	}
	return out
}

type op struct {
	name string
	p    float64
}

func want(defP, lower float64, ops ...op) *api.SamplingStrategyResponse {
	per := &api.PerOperationSamplingStrategies{DefaultSamplingProbability: defP, DefaultLowerBoundTracesPerSecond: lower, PerOperationStrategies: []*api.OperationSamplingStrategy{}}
	for _, o := range ops {
		per.PerOperationStrategies = append(per.PerOperationStrategies, &api.OperationSamplingStrategy{Operation: o.name, ProbabilisticSampling: &api.ProbabilisticSamplingStrategy{SamplingRate: o.p}})
	}
	return &api.SamplingStrategyResponse{
		StrategyType:          api.SamplingStrategyType_PROBABILISTIC,
		ProbabilisticSampling: &api.ProbabilisticSamplingStrategy{SamplingRate: defP},
		OperationSampling:     per,
	}
}

func TestTranslate(t *testing.T) {
	gold := func(r *rules.Rule) { r.Attributes = map[string]string{"tier": "gold"} }
	tests := []struct {
		name      string
		rules     []Rule
		instances int
		want      *api.SamplingStrategyResponse
	}{
		{
			name:      "the Default alone: its rate, and its reservoir split over the instances",
			rules:     in(def(0.05, 1)),
			instances: 4,
			want:      want(0.05, 0.25),
		},
		{
			name:      "no instance seen counts as one",
			rules:     in(def(0.05, 3)),
			instances: 0,
			want:      want(0.05, 3),
		},
		{
			name:      "an exact method and path names an operation; the lower bound is the smallest share",
			rules:     in(rule("checkout", 10, 0.5, 10, route("POST", "/checkout")), def(0.05, 2)),
			instances: 2,
			want:      want(0.05, 1, op{"POST /checkout", 0.5}),
		},
		{
			name:      "the method is written in upper case, the path as the rule has it",
			rules:     in(rule("checkout", 10, 0.5, 1, route("post", "/Checkout")), def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1, op{"POST /Checkout", 0.5}),
		},
		{
			name:      "a literal prefix and '*' names the prefix's operation; its lower rate lowers the default",
			rules:     in(rule("static", 5, 0.01, 1, route("GET", "/static*")), rule("checkout", 10, 0.5, 1, route("POST", "/checkout*")), def(0.05, 1)),
			instances: 1,
			want:      want(0.01, 1, op{"GET /static", 0.01}, op{"POST /checkout", 0.5}),
		},
		{
			name: "globs are matched against listed operations: the first rule that matches decides",
			rules: in(
				rule("api", 1, 0.2, 1, route("GET", "/api/*")),
				rule("items", 2, 0.9, 1, route("GET", "/api/items")),
				rule("health", 3, 0, 1, route("GET", "/health")),
				def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1, op{"GET /api/", 0.2}, op{"GET /api/items", 0.2}, op{"GET /health", 0}),
		},
		{
			name:      "an exact rule applies to its operation only, however low its rate",
			rules:     in(rule("health", 1, 0, 1, route("GET", "/health")), def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1, op{"GET /health", 0}),
		},
		{
			name:      "a rule on attributes may apply: it lowers, never raises",
			rules:     in(rule("vip", 1, 1, 5, gold), rule("bots", 2, 0.01, 5, func(r *rules.Rule) { r.Attributes = map[string]string{"agent": "bot*"} }), def(0.05, 5)),
			instances: 1,
			want:      want(0.01, 5),
		},
		{
			name:      "a rule on the host lowers the listed operations it may match too",
			rules:     in(rule("internal", 1, 0.001, 1, func(r *rules.Rule) { r.Host = "internal.*" }), rule("checkout", 2, 0.5, 1, route("POST", "/checkout")), def(0.05, 1)),
			instances: 1,
			want:      want(0.001, 1, op{"POST /checkout", 0.001}),
		},
		{
			name:      "a blind exact rule lists its operation at the lower of its rate and the next rule's",
			rules:     in(rule("gold-checkout", 1, 1, 1, func(r *rules.Rule) { gold(r); route("POST", "/checkout")(r) }), def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1, op{"POST /checkout", 0.05}),
		},
		{
			name:      "a resource ARN cannot be seen either",
			rules:     in(rule("arn", 1, 0.01, 1, func(r *rules.Rule) { r.ResourceARN = "arn:aws:*" }), def(0.05, 1)),
			instances: 1,
			want:      want(0.01, 1),
		},
		{
			name:      "a method alone or a path glob with any method names no operation",
			rules:     in(rule("posts", 1, 0.5, 1, route("POST", "*")), rule("any", 2, 0.5, 1, route("*", "/orders")), def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1),
		},
		{
			name:      "a reservoir of zero anywhere leaves no lower bound",
			rules:     in(rule("health", 1, 0, 0, route("GET", "/health")), def(0.05, 10)),
			instances: 1,
			want:      want(0.05, 0, op{"GET /health", 0}),
		},
		{
			name: "only the service's rules apply, and none with a service type",
			rules: in(
				rule("other", 1, 0.001, 0, func(r *rules.Rule) { r.ServiceName = "billing-*" }),
				rule("lambda", 2, 0.001, 0, func(r *rules.Rule) { r.ServiceType = "AWS::Lambda::Function" }),
				rule("shop", 3, 0.3, 4, func(r *rules.Rule) { r.ServiceName = "SHOP-*" }),
				def(0.05, 1)),
			instances: 2,
			want:      want(0.3, 2),
		},
		{
			// A Jaeger client declares no resource: a rule for staging
			// instances would otherwise set every instance's rate.
			name: "no rule that needs a resource attribute applies; one whose resource globs are all * does",
			rules: in(
				rule("staging", 1, 0.001, 0, func(r *rules.Rule) {
					r.ResourceAttributes = map[string]string{"deployment.environment.name": "staging"}
				}),
				rule("any-env", 2, 0.3, 4, func(r *rules.Rule) {
					r.ResourceAttributes = map[string]string{"deployment.environment.name": "*"}
				}),
				def(0.05, 1)),
			instances: 2,
			want:      want(0.3, 2),
		},
		{
			name:      "rules after one that matches every request never apply",
			rules:     in(rule("all", 1, 0.3, 6, nil), rule("checkout", 2, 1, 0, route("POST", "/checkout")), def(0.05, 0)),
			instances: 3,
			want:      want(0.3, 2),
		},
		{
			name:      "the first rule naming an operation wins it",
			rules:     in(rule("a", 1, 0.4, 1, route("GET", "/x")), rule("b", 2, 0.1, 1, route("get", "/x")), def(0.05, 1)),
			instances: 1,
			want:      want(0.05, 1, op{"GET /x", 0.4}),
		},
		{
			name:      "without a rule that matches every request the Default's defaults close the list",
			rules:     in(rule("internal", 1, 0.5, 4, func(r *rules.Rule) { r.Host = "internal" })),
			instances: 1,
			want:      want(rules.DefaultFixedRate, rules.DefaultReservoirTPS),
		},
		{
			name:      "no rules at all",
			rules:     nil,
			instances: 1,
			want:      want(rules.DefaultFixedRate, rules.DefaultReservoirTPS),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Translate("shop-api", tt.rules, tt.instances)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("Translate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranslateBudgetFactors(t *testing.T) {
	checkout, d := rule("checkout", 1, 0.5, 10, route("POST", "/checkout")), def(0.2, 4)
	tests := []struct {
		name                 string
		fixed, reservoir     float64
		wantOp, wantDefault  float64
		wantLower            float64
		defFixed, defReserve float64
	}{
		{name: "no budget enforces", fixed: 1, reservoir: 1, defFixed: 1, defReserve: 1, wantOp: 0.5, wantDefault: 0.2, wantLower: 2},
		{name: "a budget halves the checkout rule", fixed: 0.5, reservoir: 0.1, defFixed: 1, defReserve: 1, wantOp: 0.25, wantDefault: 0.2, wantLower: 0.5},
		{name: "an exhausted budget stops the Default", fixed: 1, reservoir: 1, defFixed: 0, defReserve: 0, wantOp: 0.5, wantDefault: 0, wantLower: 0},
		{name: "factors out of range are clamped, NaN to 0", fixed: 7, reservoir: math.NaN(), defFixed: -1, defReserve: 1, wantOp: 0.5, wantDefault: 0, wantLower: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := []Rule{{Rule: &checkout, FixedRateFactor: tt.fixed, ReservoirFactor: tt.reservoir}, {Rule: &d, FixedRateFactor: tt.defFixed, ReservoirFactor: tt.defReserve}}
			got := Translate("shop", rs, 2)
			if diff := cmp.Diff(want(tt.wantDefault, tt.wantLower, op{"POST /checkout", tt.wantOp}), got, protocmp.Transform()); diff != "" {
				t.Errorf("Translate (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkTranslate is the cost of one poll's translation: 50 rules, 49 of
// them naming an operation.
func BenchmarkTranslate(b *testing.B) {
	var rs []rules.Rule
	for i := range 49 {
		rs = append(rs, rule("r"+string(rune('a'+i%26))+string(rune('a'+i/26)), int32(i+1), 0.1, 1, route("GET", "/api/v"+string(rune('0'+i%10))+"/items"+string(rune('a'+i/10)))))
	}
	rs = append(rs, def(0.05, 1))
	in := in(rs...)
	b.ReportAllocs()
	for b.Loop() {
		Translate("shop-api", in, 10)
	}
}
