package rules_test

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// validRule is a rule that uses every field and passes validation; each test
// case breaks (or stretches) one thing about it.
func validRule() rules.Rule {
	return rules.Rule{
		Name:          "checkout-eu",
		Priority:      100,
		FixedRate:     0.1,
		ReservoirSize: 5,
		ServiceName:   "checkout",
		ServiceType:   "AWS::ECS::Container",
		Host:          "*.example.com",
		HTTPMethod:    "POST",
		URLPath:       "/api/cart/*",
		ResourceARN:   "*",
		Attributes:    map[string]string{"tier": "gold"},
		Description:   "Checkout in the EU.",
		Labels:        map[string]string{"team": "payments"},
		Tags:          map[string]string{"Stage": "prod"},
		Boost:         &rules.RateBoost{MaxRate: 0.5, Cooldown: 10 * time.Minute},
	}
}

// nMap returns a map with n distinct keys, each with value v.
func nMap(n int, v string) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = v
	}
	return m
}

var (
	a32  = strings.Repeat("a", 32)
	a33  = strings.Repeat("a", 33)
	a63  = strings.Repeat("a", 63)
	a64  = strings.Repeat("a", 64)
	e32  = strings.Repeat("é", 32) // 64 bytes, 32 characters
	e64  = strings.Repeat("é", 64) // 128 bytes, 64 characters
	e65  = strings.Repeat("é", 65)
	a65  = strings.Repeat("a", 65)
	a128 = "/" + strings.Repeat("a", 127)
	a129 = "/" + strings.Repeat("a", 128)
	a500 = strings.Repeat("a", 500)
	a501 = strings.Repeat("a", 501)
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(r *rules.Rule)
		wantFields []string // nil: the rule is valid
	}{
		{"valid base rule", func(r *rules.Rule) {}, nil},
		{"empty globs mean *", func(r *rules.Rule) {
			r.ServiceName, r.ServiceType, r.Host, r.HTTPMethod, r.URLPath, r.ResourceARN = "", "", "", "", "", ""
		}, nil},
		{"no maps", func(r *rules.Rule) { r.Attributes, r.Labels = nil, nil }, nil},
		{"Default as shipped", func(r *rules.Rule) { *r = rules.Default() }, nil},

		// name
		{"name 1 char", func(r *rules.Rule) { r.Name = "a" }, nil},
		{"name 32 chars", func(r *rules.Rule) { r.Name = a32 }, nil},
		{"name 33 chars", func(r *rules.Rule) { r.Name = a33 }, []string{"name"}},
		{"name empty", func(r *rules.Rule) { r.Name = "" }, []string{"name"}},
		{"name every allowed char", func(r *rules.Rule) { r.Name = "AZaz09-_" }, nil},
		{"name space", func(r *rules.Rule) { r.Name = "check out" }, []string{"name"}},
		{"name dot", func(r *rules.Rule) { r.Name = "check.out" }, []string{"name"}},
		{"name slash", func(r *rules.Rule) { r.Name = "check/out" }, []string{"name"}},
		{"name star", func(r *rules.Rule) { r.Name = "checkout*" }, []string{"name"}},
		{"name non-ASCII letter", func(r *rules.Rule) { r.Name = "café" }, []string{"name"}},
		{"name control char", func(r *rules.Rule) { r.Name = "a\nb" }, []string{"name"}},
		{"name invalid UTF-8", func(r *rules.Rule) { r.Name = "a\xffb" }, []string{"name"}},

		// priority
		{"priority 0", func(r *rules.Rule) { r.Priority = 0 }, []string{"priority"}},
		{"priority -1", func(r *rules.Rule) { r.Priority = -1 }, []string{"priority"}},
		{"priority 1", func(r *rules.Rule) { r.Priority = 1 }, nil},
		{"priority 9999", func(r *rules.Rule) { r.Priority = 9999 }, nil},
		{"priority 10000 on a normal rule", func(r *rules.Rule) { r.Priority = 10000 }, []string{"priority"}},
		{"priority max int32", func(r *rules.Rule) { r.Priority = math.MaxInt32 }, []string{"priority"}},
		{"Default priority 10000", func(r *rules.Rule) { *r = rules.Default(); r.Priority = 10000 }, nil},
		{"Default priority unset", func(r *rules.Rule) { *r = rules.Default(); r.Priority = 0 }, nil},
		{"Default priority 1", func(r *rules.Rule) { *r = rules.Default(); r.Priority = 1 }, []string{"priority"}},
		{"Default priority 9999", func(r *rules.Rule) { *r = rules.Default(); r.Priority = 9999 }, []string{"priority"}},
		{"Default priority 10001", func(r *rules.Rule) { *r = rules.Default(); r.Priority = 10001 }, []string{"priority"}},
		{"lower-case default is an ordinary rule", func(r *rules.Rule) { r.Name = "default"; r.Priority = 10000 }, []string{"priority"}},

		// fixed_rate
		{"fixed_rate -0.01", func(r *rules.Rule) { r.FixedRate = -0.01 }, []string{"fixed_rate"}},
		{"fixed_rate 0", func(r *rules.Rule) { r.FixedRate = 0 }, nil},
		{"fixed_rate 1", func(r *rules.Rule) { r.FixedRate = 1 }, nil},
		{"fixed_rate 1.01", func(r *rules.Rule) { r.FixedRate = 1.01 }, []string{"fixed_rate"}},
		{"fixed_rate just above 1", func(r *rules.Rule) { r.FixedRate = math.Nextafter(1, 2) }, []string{"fixed_rate"}},
		{"fixed_rate NaN", func(r *rules.Rule) { r.FixedRate = math.NaN() }, []string{"fixed_rate"}},
		{"fixed_rate +Inf", func(r *rules.Rule) { r.FixedRate = math.Inf(1) }, []string{"fixed_rate"}},
		{"fixed_rate -Inf", func(r *rules.Rule) { r.FixedRate = math.Inf(-1) }, []string{"fixed_rate"}},

		// reservoir_size
		{"reservoir -1", func(r *rules.Rule) { r.ReservoirSize = -1 }, []string{"reservoir_size"}},
		{"reservoir 0", func(r *rules.Rule) { r.ReservoirSize = 0 }, nil},
		{"reservoir max", func(r *rules.Rule) { r.ReservoirSize = rules.MaxReservoirSize }, nil},
		{"reservoir max+1", func(r *rules.Rule) { r.ReservoirSize = rules.MaxReservoirSize + 1 }, []string{"reservoir_size"}},

		// match globs: lengths count characters, not bytes
		{"service_name 64", func(r *rules.Rule) { r.ServiceName = a64 }, nil},
		{"service_name 65", func(r *rules.Rule) { r.ServiceName = a65 }, []string{"service_name"}},
		{"service_name 64 é (128 bytes)", func(r *rules.Rule) { r.ServiceName = e64 }, nil},
		{"service_name 65 é", func(r *rules.Rule) { r.ServiceName = e65 }, []string{"service_name"}},
		{"service_type 64", func(r *rules.Rule) { r.ServiceType = a64 }, nil},
		{"service_type 65", func(r *rules.Rule) { r.ServiceType = a65 }, []string{"service_type"}},
		{"host 64", func(r *rules.Rule) { r.Host = a64 }, nil},
		{"host 65", func(r *rules.Rule) { r.Host = a65 }, []string{"host"}},
		{"http_method 10", func(r *rules.Rule) { r.HTTPMethod = "PROPPATCH*" }, nil},
		{"http_method 11", func(r *rules.Rule) { r.HTTPMethod = "PROPPATCHES" }, []string{"http_method"}},
		{"url_path 128", func(r *rules.Rule) { r.URLPath = a128 }, nil},
		{"url_path 129", func(r *rules.Rule) { r.URLPath = a129 }, []string{"url_path"}},
		{"resource_arn 500", func(r *rules.Rule) { r.ResourceARN = a500 }, nil},
		{"resource_arn 501", func(r *rules.Rule) { r.ResourceARN = a501 }, []string{"resource_arn"}},
		{"service_name NUL", func(r *rules.Rule) { r.ServiceName = "a\x00b" }, []string{"service_name"}},
		{"service_type tab", func(r *rules.Rule) { r.ServiceType = "a\tb" }, []string{"service_type"}},
		{"host DEL", func(r *rules.Rule) { r.Host = "a\x7fb" }, []string{"host"}},
		{"http_method C1 control", func(r *rules.Rule) { r.HTTPMethod = "GET\u0085" }, []string{"http_method"}},
		{"url_path newline", func(r *rules.Rule) { r.URLPath = "/a\nb" }, []string{"url_path"}},
		{"resource_arn invalid UTF-8", func(r *rules.Rule) { r.ResourceARN = "arn:\xff" }, []string{"resource_arn"}},
		{"service_name truncated rune", func(r *rules.Rule) { r.ServiceName = "caf\xc3" }, []string{"service_name"}},

		// attributes
		{"16 attributes", func(r *rules.Rule) { r.Attributes = nMap(16, "v") }, nil},
		{"17 attributes", func(r *rules.Rule) { r.Attributes = nMap(17, "v") }, []string{"attributes"}},
		{"attribute key empty", func(r *rules.Rule) { r.Attributes = map[string]string{"": "v"} }, []string{"attributes."}},
		{"attribute key 32", func(r *rules.Rule) { r.Attributes = map[string]string{a32: "v"} }, nil},
		{"attribute key 32 é", func(r *rules.Rule) { r.Attributes = map[string]string{e32: "v"} }, nil},
		{"attribute key 33", func(r *rules.Rule) { r.Attributes = map[string]string{a33: "v"} }, []string{"attributes." + a33}},
		{"attribute key control", func(r *rules.Rule) { r.Attributes = map[string]string{"a\x01": "v"} }, []string{"attributes.a\x01"}},
		{"attribute key invalid UTF-8", func(r *rules.Rule) { r.Attributes = map[string]string{"a\xff": "v"} }, []string{"attributes.a\ufffd"}},
		{"attribute value empty", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": ""} }, []string{"attributes.tier"}},
		{"attribute value 32", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": a32} }, nil},
		{"attribute value 32 é", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": e32} }, nil},
		{"attribute value 33", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": a33} }, []string{"attributes.tier"}},
		{"attribute value control", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": "go\nld"} }, []string{"attributes.tier"}},
		{"attribute value invalid UTF-8", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": "\xc3"} }, []string{"attributes.tier"}},
		{"attribute violations in key order", func(r *rules.Rule) {
			r.Attributes = map[string]string{"b": "", "a": a33, "c": "ok"}
		}, []string{"attributes.a", "attributes.b"}},
		{"17 attributes, one bad", func(r *rules.Rule) {
			r.Attributes = nMap(17, "v")
			r.Attributes["k03"] = ""
		}, []string{"attributes", "attributes.k03"}},

		// resource_attributes
		{"8 resource attributes", func(r *rules.Rule) { r.ResourceAttributes = nMap(8, "v") }, nil},
		{"9 resource attributes", func(r *rules.Rule) { r.ResourceAttributes = nMap(9, "v") }, []string{"resource_attributes"}},
		{"resource attribute key empty", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"": "v"} }, []string{"resource_attributes."}},
		{"resource attribute key 32", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{a32: "v"} }, nil},
		{"resource attribute key 33", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{a33: "v"} }, []string{"resource_attributes." + a33}},
		{"resource attribute key invalid UTF-8", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"a\xff": "v"} }, []string{"resource_attributes.a\ufffd"}},
		{"resource attribute glob empty", func(r *rules.Rule) {
			r.ResourceAttributes = map[string]string{"deployment.environment.name": ""}
		}, []string{"resource_attributes.deployment.environment.name"}},
		{"resource attribute glob 32 é", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"service.version": e32} }, nil},
		{"resource attribute glob 33", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"service.version": a33} }, []string{"resource_attributes.service.version"}},
		{"resource attribute glob control", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"env": "pro\nd"} }, []string{"resource_attributes.env"}},
		{"9 resource attributes, one bad", func(r *rules.Rule) {
			r.ResourceAttributes = nMap(9, "v")
			r.ResourceAttributes["k03"] = ""
		}, []string{"resource_attributes", "resource_attributes.k03"}},

		// description
		{"description 512", func(r *rules.Rule) { r.Description = strings.Repeat("d", 512) }, nil},
		{"description 512 é", func(r *rules.Rule) { r.Description = strings.Repeat("é", 512) }, nil},
		{"description 513", func(r *rules.Rule) { r.Description = strings.Repeat("d", 513) }, []string{"description"}},
		{"description multi-line", func(r *rules.Rule) { r.Description = "line one\nline two" }, nil},
		{"description invalid UTF-8", func(r *rules.Rule) { r.Description = "bad \xff" }, []string{"description"}},

		// labels
		{"label key syntax", func(r *rules.Rule) { r.Labels = map[string]string{"team/sub.x-y_z9": "v"} }, nil},
		{"label key upper case", func(r *rules.Rule) { r.Labels = map[string]string{"Team": "v"} }, []string{"labels.Team"}},
		{"label key space", func(r *rules.Rule) { r.Labels = map[string]string{"cost center": "v"} }, []string{"labels.cost center"}},
		{"label key colon", func(r *rules.Rule) { r.Labels = map[string]string{"a:b": "v"} }, []string{"labels.a:b"}},
		{"label key non-ASCII", func(r *rules.Rule) { r.Labels = map[string]string{"équipe": "v"} }, []string{"labels.équipe"}},
		{"label key empty", func(r *rules.Rule) { r.Labels = map[string]string{"": "v"} }, []string{"labels."}},
		{"label key 63", func(r *rules.Rule) { r.Labels = map[string]string{a63: "v"} }, nil},
		{"label key 64", func(r *rules.Rule) { r.Labels = map[string]string{a64: "v"} }, []string{"labels." + a64}},
		{"label key invalid UTF-8", func(r *rules.Rule) { r.Labels = map[string]string{"\xff": "v"} }, []string{"labels.\ufffd"}},
		{"label value empty", func(r *rules.Rule) { r.Labels = map[string]string{"team": ""} }, nil},
		{"label value 63", func(r *rules.Rule) { r.Labels = map[string]string{"team": a63} }, nil},
		{"label value 64", func(r *rules.Rule) { r.Labels = map[string]string{"team": a64} }, []string{"labels.team"}},
		{"label value control", func(r *rules.Rule) { r.Labels = map[string]string{"team": "a\rb"} }, []string{"labels.team"}},
		{"label value invalid UTF-8", func(r *rules.Rule) { r.Labels = map[string]string{"team": "\xff"} }, []string{"labels.team"}},
		{"32 labels", func(r *rules.Rule) { r.Labels = nMap(32, "v") }, nil},
		{"33 labels", func(r *rules.Rule) { r.Labels = nMap(33, "v") }, []string{"labels"}},

		// tags: X-Ray's TagResource limits
		{"tag key every allowed char", func(r *rules.Rule) { r.Tags = map[string]string{"Stage é 9_.:/=+-@": "v"} }, nil},
		{"tag value empty", func(r *rules.Rule) { r.Tags = map[string]string{"Stage": ""} }, nil},
		{"tag key 128", func(r *rules.Rule) { r.Tags = map[string]string{strings.Repeat("é", 128): "v"} }, nil},
		{"tag key 129", func(r *rules.Rule) { r.Tags = map[string]string{strings.Repeat("k", 129): "v"} }, []string{"tags." + strings.Repeat("k", 129)}},
		{"tag key empty", func(r *rules.Rule) { r.Tags = map[string]string{"": "v"} }, []string{"tags."}},
		{"tag key aws:", func(r *rules.Rule) { r.Tags = map[string]string{"aws:owner": "v"} }, []string{"tags.aws:owner"}},
		{"tag key AWS: in any case", func(r *rules.Rule) { r.Tags = map[string]string{"AwS:owner": "v"} }, []string{"tags.AwS:owner"}},
		{"tag key with aws later", func(r *rules.Rule) { r.Tags = map[string]string{"my-aws:x": "v"} }, nil},
		{"tag key star", func(r *rules.Rule) { r.Tags = map[string]string{"a*": "v"} }, []string{"tags.a*"}},
		{"tag key invalid UTF-8", func(r *rules.Rule) { r.Tags = map[string]string{"\xff": "v"} }, []string{"tags.\ufffd"}},
		{"tag value 256", func(r *rules.Rule) { r.Tags = map[string]string{"k": strings.Repeat("é", 256)} }, nil},
		{"tag value 257", func(r *rules.Rule) { r.Tags = map[string]string{"k": strings.Repeat("v", 257)} }, []string{"tags.k"}},
		{"tag value tab", func(r *rules.Rule) { r.Tags = map[string]string{"k": "a\tb"} }, []string{"tags.k"}},
		{"50 tags", func(r *rules.Rule) { r.Tags = nMap(50, "v") }, nil},
		{"51 tags", func(r *rules.Rule) { r.Tags = nMap(51, "v") }, []string{"tags"}},

		// sampling_rate_boost
		{"no boost", func(r *rules.Rule) { r.Boost = nil }, nil},
		{"boost zero", func(r *rules.Rule) { r.Boost = &rules.RateBoost{} }, nil},
		{"boost max", func(r *rules.Rule) { r.Boost = &rules.RateBoost{MaxRate: 1, Cooldown: rules.MaxBoostCooldown} }, nil},
		{"boost max_rate above 1", func(r *rules.Rule) { r.Boost.MaxRate = 1.5 }, []string{"sampling_rate_boost.max_rate"}},
		{"boost max_rate negative", func(r *rules.Rule) { r.Boost.MaxRate = -0.1 }, []string{"sampling_rate_boost.max_rate"}},
		{"boost max_rate NaN", func(r *rules.Rule) { r.Boost.MaxRate = math.NaN() }, []string{"sampling_rate_boost.max_rate"}},
		{"boost cooldown not whole minutes", func(r *rules.Rule) { r.Boost.Cooldown = 90 * time.Second }, []string{"sampling_rate_boost.cooldown_window_minutes"}},
		{"boost cooldown negative", func(r *rules.Rule) { r.Boost.Cooldown = -time.Minute }, []string{"sampling_rate_boost.cooldown_window_minutes"}},
		{"boost cooldown above a day", func(r *rules.Rule) { r.Boost.Cooldown = rules.MaxBoostCooldown + time.Minute }, []string{"sampling_rate_boost.cooldown_window_minutes"}},
		{"Default with tags", func(r *rules.Rule) { *r = rules.Default(); r.Tags = map[string]string{"Stage": "prod"} }, nil},

		// several bad fields are all reported, in field order
		{"several bad fields", func(r *rules.Rule) {
			r.Name = ""
			r.Priority = 0
			r.FixedRate = 2
			r.ReservoirSize = -5
			r.HTTPMethod = "PROPPATCHES"
			r.URLPath = a129
			r.Attributes = map[string]string{"tier": ""}
			r.Description = "\xff"
			r.Labels = map[string]string{"Team": "v"}
		}, []string{
			"name", "priority", "fixed_rate", "reservoir_size", "http_method", "url_path",
			"attributes.tier", "description", "labels.Team",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRule()
			tt.edit(&r)
			err := rules.Validate(&r)
			if tt.wantFields == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *rules.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v (%T), want a *rules.ValidationError", err, err)
			}
			if got := violationFields(ve); !slices.Equal(got, tt.wantFields) {
				t.Errorf("Validate() violations on %q, want %q\nerror: %v", got, tt.wantFields, err)
			}
			for _, v := range ve.Violations {
				if v.Description == "" {
					t.Errorf("violation of %q has no description", v.Field)
				}
			}
		})
	}
}

func violationFields(ve *rules.ValidationError) []string {
	var fields []string
	for _, v := range ve.Violations {
		fields = append(fields, v.Field)
	}
	return fields
}

func TestValidationErrorMessage(t *testing.T) {
	r := validRule()
	r.Name = ""
	r.FixedRate = 2
	err := rules.Validate(&r)
	if err == nil {
		t.Fatal("Validate() = nil, want an error")
	}
	const want = "invalid argument: name: is required; fixed_rate: must be between 0 and 1, got 2"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestValidateResource: what an SDK instance declares of its resource is
// bounded, and every bad attribute is named under the caller's field.
func TestValidateResource(t *testing.T) {
	long := func(n int) string { return strings.Repeat("é", n) }
	many := nMap(rules.MaxInstanceResourceAttributes, "v")
	tooMany := nMap(rules.MaxInstanceResourceAttributes+1, "v")
	tests := []struct {
		name  string
		attrs map[string]string
		want  []string
	}{
		{"none", nil, nil},
		{"an OpenTelemetry resource", map[string]string{"deployment.environment.name": "production", "service.version": "2.4.1", "process.pid": "4242"}, nil},
		{"an empty value", map[string]string{"service.namespace": ""}, nil},
		{"64 attributes", many, nil},
		{"65 attributes", tooMany, []string{"hello.resource_attributes"}},
		{"key of 64", map[string]string{long(64): "v"}, nil},
		{"key of 65", map[string]string{long(65): "v"}, []string{"hello.resource_attributes." + long(65)}},
		{"empty key", map[string]string{"": "v"}, []string{"hello.resource_attributes."}},
		{"value of 256", map[string]string{"k": long(256)}, nil},
		{"value of 257", map[string]string{"k": long(257)}, []string{"hello.resource_attributes.k"}},
		{"control character", map[string]string{"k": "a\tb"}, []string{"hello.resource_attributes.k"}},
		{"invalid UTF-8 key", map[string]string{"k\xff": "v"}, []string{"hello.resource_attributes.k\ufffd"}},
		{"two bad, in key order", map[string]string{"b": long(257), "a": "\x00"}, []string{"hello.resource_attributes.a", "hello.resource_attributes.b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range rules.ValidateResource("hello.resource_attributes", tt.attrs) {
				if v.Description == "" || !utf8.ValidString(v.Field) {
					t.Errorf("bad violation %+v", v)
				}
				got = append(got, v.Field)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations on %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{"checkout", true},
		{rules.DefaultName, true},
		{a32, true},
		{a33, false},
		{"", false},
		{"check out", false},
		{"ünïcode", false},
	}
	for _, tt := range tests {
		err := rules.ValidateName(tt.name)
		if (err == nil) != tt.valid {
			t.Errorf("ValidateName(%q) = %v, want valid=%v", tt.name, err, tt.valid)
		}
		var ve *rules.ValidationError
		if err != nil && (!errors.As(err, &ve) || !slices.Equal(violationFields(ve), []string{"name"})) {
			t.Errorf("ValidateName(%q) = %v, want a *ValidationError on field name", tt.name, err)
		}
	}
}

func TestValidateLabels(t *testing.T) {
	got := rules.ValidateLabels("budget.selector", map[string]string{"ok": "v", "Bad": "v", "long": a64})
	want := []rules.FieldViolation{
		{Field: "budget.selector.Bad"},
		{Field: "budget.selector.long"},
	}
	if len(got) != len(want) {
		t.Fatalf("ValidateLabels() = %v, want violations of %v", got, want)
	}
	for i := range want {
		if got[i].Field != want[i].Field || got[i].Description == "" {
			t.Errorf("violation %d = %+v, want field %q with a description", i, got[i], want[i].Field)
		}
	}
	if got := rules.ValidateLabels("labels", nil); len(got) != 0 {
		t.Errorf("ValidateLabels(nil) = %v, want none", got)
	}
}

func TestCheckDefault(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(r *rules.Rule)
		wantErr bool
	}{
		{"as shipped", func(r *rules.Rule) {}, false},
		{"re-rated", func(r *rules.Rule) { r.FixedRate = 0.5; r.ReservoirSize = 100 }, false},
		{"rate zero", func(r *rules.Rule) { r.FixedRate = 0; r.ReservoirSize = 0 }, false},
		{"described and labelled", func(r *rules.Rule) {
			r.Description = "catch-all"
			r.Labels = map[string]string{"team": "sre"}
		}, false},
		{"empty globs mean *", func(r *rules.Rule) {
			r.ServiceName, r.ServiceType, r.Host, r.HTTPMethod, r.URLPath, r.ResourceARN = "", "", "", "", "", ""
		}, false},
		{"empty attribute map", func(r *rules.Rule) { r.Attributes = map[string]string{} }, false},
		{"priority unset", func(r *rules.Rule) { r.Priority = 0 }, false},
		{"re-prioritised", func(r *rules.Rule) { r.Priority = 9999 }, true},
		{"priority above default", func(r *rules.Rule) { r.Priority = 10001 }, true},
		{"service_name narrowed", func(r *rules.Rule) { r.ServiceName = "checkout" }, true},
		{"service_type narrowed", func(r *rules.Rule) { r.ServiceType = "AWS::EC2::Instance" }, true},
		{"host narrowed", func(r *rules.Rule) { r.Host = "*.example.com" }, true},
		{"http_method narrowed", func(r *rules.Rule) { r.HTTPMethod = "GET" }, true},
		{"url_path narrowed", func(r *rules.Rule) { r.URLPath = "/api/*" }, true},
		{"resource_arn narrowed", func(r *rules.Rule) { r.ResourceARN = "arn:aws:*" }, true},
		{"attribute added", func(r *rules.Rule) { r.Attributes = map[string]string{"tier": "gold"} }, true},
		{"empty resource attribute map", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{} }, false},
		{"resource attribute added", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"env": "prod"} }, true},
		{"resource attribute *", func(r *rules.Rule) { r.ResourceAttributes = map[string]string{"env": "*"} }, true},
		{"? is narrower than *", func(r *rules.Rule) { r.URLPath = "?*" }, true},
		{"tagged", func(r *rules.Rule) { r.Tags = map[string]string{"Stage": "prod"} }, false},
		{"boosted", func(r *rules.Rule) { r.Boost = &rules.RateBoost{MaxRate: 0.5, Cooldown: time.Minute} }, true},
		{"boosted by nothing", func(r *rules.Rule) { r.Boost = &rules.RateBoost{} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules.Default()
			tt.edit(&r)
			err := rules.CheckDefault(&r)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("CheckDefault() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, rules.ErrDefaultRule) {
				t.Fatalf("CheckDefault() = %v, want an error wrapping ErrDefaultRule", err)
			}
		})
	}
}

func TestCheckDefaultNamesEveryNarrowedField(t *testing.T) {
	r := rules.Default()
	r.Priority = 5
	r.ServiceName = "a"
	r.URLPath = "/b"
	r.Attributes = map[string]string{"k": "v"}
	r.ResourceAttributes = map[string]string{"env": "prod"}
	r.Boost = &rules.RateBoost{MaxRate: 1}
	err := rules.CheckDefault(&r)
	if !errors.Is(err, rules.ErrDefaultRule) {
		t.Fatalf("CheckDefault() = %v, want ErrDefaultRule", err)
	}
	for _, f := range []string{"priority", "service_name", "url_path", "attributes", "resource_attributes", "sampling_rate_boost"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("CheckDefault() = %q, does not name %s", err, f)
		}
	}
	if strings.Contains(err.Error(), "host") {
		t.Errorf("CheckDefault() = %q names host, which was not changed", err)
	}
}

func TestCheckDefaultIgnoresOtherRules(t *testing.T) {
	r := validRule() // narrow, and at a priority the Default may not have
	if err := rules.CheckDefault(&r); err != nil {
		t.Errorf("CheckDefault(%q) = %v, want nil for a rule that is not the Default", r.Name, err)
	}
}

func TestDefault(t *testing.T) {
	d := rules.Default()
	if !d.IsDefault() || d.Name != "Default" || d.Priority != rules.DefaultPriority {
		t.Errorf("Default() = %+v, want the rule named Default at priority %d", d, rules.DefaultPriority)
	}
	if d.FixedRate != 0.05 || d.ReservoirSize != 1 {
		t.Errorf("Default() rates = %v + %d/s, want 0.05 + 1/s", d.FixedRate, d.ReservoirSize)
	}
	if err := rules.Validate(&d); err != nil {
		t.Errorf("Validate(Default()) = %v", err)
	}
	if err := rules.CheckDefault(&d); err != nil {
		t.Errorf("CheckDefault(Default()) = %v", err)
	}
	r := validRule()
	if r.IsDefault() {
		t.Errorf("%q.IsDefault() = true", r.Name)
	}
	r.Name = "default"
	if r.IsDefault() {
		t.Error(`"default".IsDefault() = true; the Default rule's name is case-sensitive`)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   rules.Rule
		want rules.Rule
	}{
		{
			name: "empty globs and maps",
			in:   rules.Rule{Name: "a", Priority: 5, Attributes: map[string]string{}, Labels: map[string]string{}, Tags: map[string]string{}},
			want: rules.Rule{
				Name: "a", Priority: 5,
				ServiceName: "*", ServiceType: "*", Host: "*", HTTPMethod: "*", URLPath: "*", ResourceARN: "*",
			},
		},
		{
			name: "set fields are kept",
			in: rules.Rule{
				Name: "a", Priority: 5, FixedRate: 0.5, ReservoirSize: 3,
				ServiceName: "svc", ServiceType: "t", Host: "h", HTTPMethod: "GET", URLPath: "/p", ResourceARN: "arn",
				Attributes: map[string]string{"k": "v"}, Labels: map[string]string{"l": "v"}, Description: "d", Revision: 7,
			},
			want: rules.Rule{
				Name: "a", Priority: 5, FixedRate: 0.5, ReservoirSize: 3,
				ServiceName: "svc", ServiceType: "t", Host: "h", HTTPMethod: "GET", URLPath: "/p", ResourceARN: "arn",
				Attributes: map[string]string{"k": "v"}, Labels: map[string]string{"l": "v"}, Description: "d", Revision: 7,
			},
		},
		{
			name: "Default priority filled in",
			in:   rules.Rule{Name: rules.DefaultName, FixedRate: 0.2},
			want: rules.Rule{
				Name: rules.DefaultName, Priority: rules.DefaultPriority, FixedRate: 0.2,
				ServiceName: "*", ServiceType: "*", Host: "*", HTTPMethod: "*", URLPath: "*", ResourceARN: "*",
			},
		},
		{
			name: "only the Default gets a priority",
			in:   rules.Rule{Name: "a"},
			want: rules.Rule{
				Name:        "a",
				ServiceName: "*", ServiceType: "*", Host: "*", HTTPMethod: "*", URLPath: "*", ResourceARN: "*",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.Clone()
			got := tt.in.Normalize()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize() = %+v, want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in, before) {
				t.Errorf("Normalize() modified its receiver: %+v, was %+v", tt.in, before)
			}
			if again := got.Normalize(); !reflect.DeepEqual(again, got) {
				t.Errorf("Normalize() is not idempotent: %+v then %+v", got, again)
			}
		})
	}
}

func TestClone(t *testing.T) {
	orig := validRule()
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone() = %+v, want %+v", c, orig)
	}
	c.Attributes["tier"] = "silver"
	c.Attributes["new"] = "x"
	c.Labels["team"] = "other"
	delete(c.Labels, "team")
	if want := map[string]string{"tier": "gold"}; !maps.Equal(orig.Attributes, want) {
		t.Errorf("editing the clone changed the original's attributes to %v", orig.Attributes)
	}
	if want := map[string]string{"team": "payments"}; !maps.Equal(orig.Labels, want) {
		t.Errorf("editing the clone changed the original's labels to %v", orig.Labels)
	}
	c.Tags["Stage"] = "dev"
	c.Boost.MaxRate = 1
	if want := map[string]string{"Stage": "prod"}; !maps.Equal(orig.Tags, want) {
		t.Errorf("editing the clone changed the original's tags to %v", orig.Tags)
	}
	if orig.Boost.MaxRate != 0.5 {
		t.Errorf("editing the clone changed the original's boost to %+v", *orig.Boost)
	}
	orig.Attributes["tier"] = "bronze"
	if c.Attributes["tier"] != "silver" {
		t.Errorf("editing the original changed the clone's attributes to %v", c.Attributes)
	}

	var empty rules.Rule
	if ce := empty.Clone(); ce.Attributes != nil || ce.Labels != nil || ce.Tags != nil || ce.Boost != nil {
		t.Errorf("Clone() of nil maps = %v, %v, %v, %v, want nils", ce.Attributes, ce.Labels, ce.Tags, ce.Boost)
	}
}

func TestEtagRoundTrip(t *testing.T) {
	for _, rev := range []int64{1, 2, 42, 1_000_000, math.MaxInt64} {
		r := rules.Rule{Revision: rev}
		etag := r.Etag()
		got, err := rules.ParseEtag(etag)
		if err != nil || got != rev {
			t.Errorf("ParseEtag(%q) = %d, %v, want %d", etag, got, err, rev)
		}
	}
	if got := (&rules.Rule{Revision: 42}).Etag(); got != "42" {
		t.Errorf("Etag() = %q, want %q", got, "42")
	}
}

func TestParseEtagRejects(t *testing.T) {
	// An etag is compared as an opaque string, so only the exact form Etag
	// produces names a revision: "042" or "+42" must not match revision 42.
	for _, etag := range []string{
		"", "0", "-1", "abc", "1.5", " 1", "1 ", "+1", "01", "0x10", "1e3", "9223372036854775808", `"1"`,
	} {
		if n, err := rules.ParseEtag(etag); err == nil {
			t.Errorf("ParseEtag(%q) = %d, nil; want an error", etag, n)
		}
	}
}

// FuzzValidate builds rules from fuzzed fields. Validate must not panic, must
// report violations exactly on the fields an independent reading of the
// documented limits rejects, and must name every violated field.
func FuzzValidate(f *testing.F) {
	f.Add("checkout-eu", int32(100), 0.1, int64(5), "checkout", "AWS::ECS::Container", "*.example.com", "POST", "/api/*", "*",
		"tier", "gold", uint8(1), "desc", "team", "payments", uint8(1))
	f.Add("Default", int32(10000), 0.05, int64(1), "*", "*", "*", "*", "*", "*", "", "", uint8(0), "", "", "", uint8(0))
	f.Add("Default", int32(0), 1.0, int64(0), "", "", "", "", "", "", "", "", uint8(0), "", "", "", uint8(0))
	f.Add("default", int32(10000), math.Copysign(0, -1), int64(1_000_000), "é", "", "", "", "", "", "", "", uint8(0), "", "", "", uint8(0))
	f.Add("", int32(0), math.NaN(), int64(-1), "a\x00", "\xff", "\u0085", "PROPPATCHES", "", "", "", "", uint8(17), "\xff", "Team", "\x01", uint8(33))
	f.Add(a33, int32(9999), 1.0000001, int64(1_000_001), e65, a64, a65, "GET", a129, a501, a33, a32, uint8(16), strings.Repeat("x", 513), a64, a63, uint8(32))
	f.Add("a_b-C9", int32(1), 0.0, int64(0), e64, "", "", "", "", "", e32, "é", uint8(0), "", "a/b.c-d_e", "", uint8(0))
	f.Fuzz(func(t *testing.T, name string, priority int32, rate float64, reservoir int64,
		svcName, svcType, host, method, path, arn, attrKey, attrVal string, nAttrs uint8,
		desc, labelKey, labelVal string, nLabels uint8,
	) {
		r := rules.Rule{
			Name: name, Priority: priority, FixedRate: rate, ReservoirSize: reservoir,
			ServiceName: svcName, ServiceType: svcType, Host: host, HTTPMethod: method, URLPath: path, ResourceARN: arn,
			Description: desc,
		}
		if n := int(nAttrs % 20); n > 0 {
			r.Attributes = nMap(n-1, "v")
			r.Attributes[attrKey] = attrVal
		}
		if n := int(nLabels % 40); n > 0 {
			r.Labels = nMap(n-1, "v")
			r.Labels[labelKey] = labelVal
		}
		// The resource globs take the attribute's fuzzed entry too, with
		// a count of their own.
		if n := int(nAttrs/20) % 12; n > 0 {
			r.ResourceAttributes = nMap(n-1, "v")
			r.ResourceAttributes[attrKey] = attrVal
		}
		before := r.Clone()

		err := rules.Validate(&r)

		if !reflect.DeepEqual(r, before) && !math.IsNaN(rate) {
			t.Fatalf("Validate modified the rule: %+v, was %+v", r, before)
		}
		want := referenceViolations(&r)
		if err == nil {
			if len(want) > 0 {
				t.Fatalf("Validate(%+v) = nil, but the limits are broken on %q", r, want)
			}
			return
		}
		var ve *rules.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("Validate() = %v (%T), want a *rules.ValidationError", err, err)
		}
		if len(ve.Violations) == 0 {
			t.Fatalf("Validate() = %v with no violations", err)
		}
		for _, v := range ve.Violations {
			// Fields and descriptions go into gRPC BadRequest details, which
			// are protobuf strings and must be valid UTF-8.
			if v.Field == "" || !utf8.ValidString(v.Field) || v.Description == "" || !utf8.ValidString(v.Description) {
				t.Fatalf("bad violation %+v in %v", v, err)
			}
		}
		got := violationFields(ve)
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Fatalf("Validate(%+v) violations on %q, the limits are broken on %q", r, got, want)
		}
	})
}

var (
	nameSyntax     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	labelKeySyntax = regexp.MustCompile(`^[a-z0-9._/-]{1,63}$`)
)

// referenceViolations reads the documented limits independently of Validate
// and returns the sorted, distinct fields that break them.
func referenceViolations(r *rules.Rule) []string {
	var bad []string
	flag := func(ok bool, field string) {
		if !ok {
			bad = append(bad, field)
		}
	}
	// text is valid UTF-8 with no C0/C1 control characters and between min
	// and max characters (runes, not bytes).
	text := func(s string, minChars, maxChars int) bool {
		if !utf8.ValidString(s) {
			return false
		}
		n := 0
		for _, c := range s {
			if c < 0x20 || 0x7f <= c && c <= 0x9f {
				return false
			}
			n++
		}
		return minChars <= n && n <= maxChars
	}
	// keyField is how a map key appears in a field name: protobuf strings
	// must be valid UTF-8.
	keyField := func(prefix, k string) string { return prefix + "." + strings.ToValidUTF8(k, "\ufffd") }

	flag(nameSyntax.MatchString(r.Name), "name")
	if r.Name == "Default" {
		flag(r.Priority == 0 || r.Priority == 10000, "priority")
	} else {
		flag(1 <= r.Priority && r.Priority <= 9999, "priority")
	}
	flag(0 <= r.FixedRate && r.FixedRate <= 1, "fixed_rate")
	flag(0 <= r.ReservoirSize && r.ReservoirSize <= 1_000_000, "reservoir_size")
	flag(text(r.ServiceName, 0, 64), "service_name")
	flag(text(r.ServiceType, 0, 64), "service_type")
	flag(text(r.Host, 0, 64), "host")
	flag(text(r.HTTPMethod, 0, 10), "http_method")
	flag(text(r.URLPath, 0, 128), "url_path")
	flag(text(r.ResourceARN, 0, 500), "resource_arn")
	flag(len(r.Attributes) <= 16, "attributes")
	for k, v := range r.Attributes {
		flag(text(k, 1, 32) && text(v, 1, 32), keyField("attributes", k))
	}
	flag(len(r.ResourceAttributes) <= 8, "resource_attributes")
	for k, v := range r.ResourceAttributes {
		flag(text(k, 1, 32) && text(v, 1, 32), keyField("resource_attributes", k))
	}
	flag(utf8.ValidString(r.Description) && utf8.RuneCountInString(r.Description) <= 512, "description")
	flag(len(r.Labels) <= 32, "labels")
	for k, v := range r.Labels {
		flag(labelKeySyntax.MatchString(k) && text(v, 0, 63), keyField("labels", k))
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}
