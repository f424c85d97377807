package sampler

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// The SDK's part of the field-coverage test (internal/cli's
// TestEveryRuleFieldIsCarried checks rulepb, the mapping the SDK shares):
// every field of the API's Rule is one the sampler matches spans or its
// instance on, each of which decides the rule a span takes, or one that
// says why the sampler needs no code of its own for it. A field added to
// the API's Rule fails here until the sampler carries it.

// notMatched are the API Rule's fields that select no span, and why the
// sampler is done with them.
var notMatched = map[protoreflect.Name]string{
	"name":                "names the rule in reports and targets",
	"priority":            "orders the rules (rulepb, rules.Index)",
	"fixed_rate":          "the rate before targets come (and TestRuleMatchingAndReasons)",
	"reservoir_size":      "the server's: the sampler spends the quotas it is given",
	"sampling_rate_boost": "boost.go counts anomalies of the rules that have one (TestAnomalyCounts)",
	"expire_time":         "the rule stops applying then (matcher.expires)",
	"description":         "not sent to SDKs (rulepb.SamplingToProto)",
	"labels":              "not sent to SDKs (rulepb.SamplingToProto)",
	"tags":                "not sent to SDKs (rulepb.SamplingToProto)",
	"etag":                "output only",
	"create_time":         "output only",
	"update_time":         "output only",
}

// matchCase sets a match field of a rule to a value, and gives a sampler
// (its options) and a span (its attributes) the value v.
type matchCase struct {
	set   func(r *pb.Rule, v string)
	opts  func(v string) []Option
	attrs func(v string) []attribute.KeyValue
	// never: the rule applies to no span, whatever its value.
	never bool
}

func spanAttr(key string) func(string) []attribute.KeyValue {
	return func(v string) []attribute.KeyValue { return []attribute.KeyValue{attribute.String(key, v)} }
}

var matchCases = map[protoreflect.Name]matchCase{
	"host":        {set: func(r *pb.Rule, v string) { r.Host = v }, attrs: spanAttr("server.address")},
	"http_method": {set: func(r *pb.Rule, v string) { r.HttpMethod = v }, attrs: spanAttr("http.request.method")},
	"url_path":    {set: func(r *pb.Rule, v string) { r.UrlPath = v }, attrs: spanAttr("url.path")},
	"attributes": {
		set:   func(r *pb.Rule, v string) { r.Attributes = map[string]string{"app.tier": v} },
		attrs: spanAttr("app.tier"),
	},
	"service_name": {
		set:  func(r *pb.Rule, v string) { r.ServiceName = v },
		opts: func(v string) []Option { return []Option{WithService(v, "")} },
	},
	"service_type": {
		set:  func(r *pb.Rule, v string) { r.ServiceType = v },
		opts: func(v string) []Option { return []Option{WithService("shop-api", v)} },
	},
	"resource_attributes": {
		set: func(r *pb.Rule, v string) { r.ResourceAttributes = map[string]string{"deployment.environment.name": v} },
		opts: func(v string) []Option {
			return []Option{WithResourceAttributes(map[string]string{"deployment.environment.name": v})}
		},
	},
	// Spans carry no resource ARN: a rule that names one never applies.
	"resource_arn": {set: func(r *pb.Rule, v string) { r.ResourceArn = v }, never: true},
}

func TestEveryRuleFieldReachesTheSampler(t *testing.T) {
	fields := (&pb.Rule{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		name := fields.Get(i).Name()
		_, skip := notMatched[name]
		mc, ok := matchCases[name]
		switch {
		case skip && ok:
			t.Errorf("pb.Rule.%s is in both notMatched and matchCases", name)
		case skip:
		case !ok:
			t.Errorf("pb.Rule.%s: the sampler does not say what it does with it: match spans on it (matchCases) or say why not (notMatched)", name)
		default:
			t.Run(string(name), func(t *testing.T) { checkMatch(t, mc) })
		}
	}
	for name := range matchCases {
		if fields.ByName(name) == nil {
			t.Errorf("matchCases names %s, which pb.Rule does not have", name)
		}
	}
	for name := range notMatched {
		if fields.ByName(name) == nil {
			t.Errorf("notMatched names %s, which pb.Rule does not have", name)
		}
	}
}

// checkMatch has a sampler and a span with the value a rule names take
// that rule, and with another value fall through to the Default rule.
func checkMatch(t *testing.T, mc matchCase) {
	const want = "v-1"
	for _, tt := range []struct {
		value, rule string
	}{{want, "only"}, {"v-2", "Default"}} {
		if mc.never {
			tt.rule = "Default"
		}
		opts := []Option{WithService("shop-api", ""), WithEndpoint("127.0.0.1:1"), WithClientID("test-client"),
			WithClock(clocktest.New(time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)))}
		if mc.opts != nil {
			opts = append(opts, mc.opts(tt.value)...)
		}
		s, err := newSampler(opts...)
		if err != nil {
			t.Fatal(err)
		}
		r := &pb.Rule{Name: "only", Priority: 1, FixedRate: 1}
		mc.set(r, want)
		s.applyRules(rulesFor(1, r))
		var attrs []attribute.KeyValue
		if mc.attrs != nil {
			attrs = mc.attrs(tt.value)
		}
		if e := s.Explain(params(outID, attrs...)); e.Rule != tt.rule {
			t.Errorf("a rule naming %q, an instance and span with %q: rule %q, want %q", want, tt.value, e.Rule, tt.rule)
		}
		s.Close()
	}
}
