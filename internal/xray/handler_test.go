package xray_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
)

const arnPrefix = "arn:aws:xray:us-east-1:000000000000:sampling-rule/"

// defaultRecord is the Default rule as GetSamplingRules lists it, with the
// times the store gave it at t0.
var defaultRecord = defaultRecordAt(arnPrefix)

func defaultRecordAt(arnPrefix string) map[string]any {
	return map[string]any{
		"SamplingRule": map[string]any{
			"RuleName": "Default", "RuleARN": arnPrefix + "Default", "ResourceARN": "*",
			"Priority": 10000.0, "FixedRate": 0.05, "ReservoirSize": 1.0,
			"ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*",
			"Version": 1.0, "Attributes": map[string]any{},
		},
		"CreatedAt":  1735787045.678,
		"ModifiedAt": 1735787045.678,
	}
}

func TestGetSamplingRulesBodies(t *testing.T) {
	e := newEnv(t, xray.Options{})
	for _, body := range []string{``, `{}`, `{"NextToken": null}`, `{"NextToken": ""}`, `null`, " \n{}\n", `{"Unknown": 1}`} {
		t.Run(fmt.Sprintf("%q", body), func(t *testing.T) {
			r := e.post("/GetSamplingRules", body).ok(t)
			want := map[string]any{"SamplingRuleRecords": []any{defaultRecord}}
			if diff := cmp.Diff(want, r.body); diff != "" {
				t.Errorf("GetSamplingRules (-want +got):\n%s", diff)
			}
			if got := r.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
		})
	}
}

func TestBadBodies(t *testing.T) {
	e := newEnv(t, xray.Options{MaxBodyBytes: 1024})
	for _, tc := range []struct {
		name, path, body string
	}{
		{"token not issued", "/GetSamplingRules", `{"NextToken": "abc"}`},
		{"summaries token", "/SamplingStatisticSummaries", `{"NextToken": "abc"}`},
		{"not an object", "/GetSamplingRules", `[]`},
		{"not JSON", "/SamplingTargets", `{"SamplingStatisticsDocuments": [`},
		{"trailing data", "/GetSamplingRules", `{} {}`},
		{"wrong type", "/SamplingTargets", `{"SamplingStatisticsDocuments": {}}`},
		{"count not an integer", "/SamplingTargets", `{"SamplingStatisticsDocuments": [{"ClientID": "0123456789abcdef01234567", "RuleName": "Default", "RequestCount": 1.5}]}`},
		{"count too large", "/SamplingTargets", `{"SamplingStatisticsDocuments": [{"ClientID": "0123456789abcdef01234567", "RuleName": "Default", "RequestCount": 1e300}]}`},
		{"timestamp not a time", "/SamplingTargets", `{"SamplingStatisticsDocuments": [{"ClientID": "0123456789abcdef01234567", "RuleName": "Default", "Timestamp": "yesterday"}]}`},
		{"negative timestamp", "/SamplingTargets", `{"SamplingStatisticsDocuments": [{"ClientID": "0123456789abcdef01234567", "RuleName": "Default", "Timestamp": -1}]}`},
		{"too large", "/CreateSamplingRule", `{"SamplingRule": {"RuleName": "` + strings.Repeat("a", 2000) + `"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.path, tc.body)
			if r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
				t.Errorf("status %d %s, want 400 InvalidRequestException", r.status, r.raw)
			}
		})
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	e := newEnv(t, xray.Options{})
	r := e.post("/GetSamplingRulez", `{}`)
	if r.status != http.StatusNotFound || r.errType(t) != "UnknownOperationException" {
		t.Errorf("unknown path: %d %s", r.status, r.raw)
	}
	resp, err := e.srv.Client().Get(e.srv.URL + "/GetSamplingRules")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || resp.Header.Get("X-Amzn-Errortype") != "UnknownOperationException" {
		t.Errorf("GET: %d, Allow %q, type %q", resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("X-Amzn-Errortype"))
	}
}

func TestRuleRoundTrip(t *testing.T) {
	e := newEnv(t, xray.Options{Region: "eu-west-3", Account: "123456789012"})
	const arn = "arn:aws:xray:eu-west-3:123456789012:sampling-rule/checkout"
	rule := fullRule("checkout")
	rule["SamplingRateBoost"] = map[string]any{"MaxRate": 0.5, "CooldownWindowMinutes": 5}
	e.clock.Add(time.Second)
	created := e.post("/CreateSamplingRule", map[string]any{
		"SamplingRule": rule,
		"Tags":         []map[string]string{{"Key": "team", "Value": "payments"}},
	}).ok(t)
	wantRule := map[string]any{
		"RuleName": "checkout", "RuleARN": arn, "ResourceARN": "*", "Priority": 10.0, "FixedRate": 0.25,
		"ReservoirSize": 10.0, "ServiceName": "shop-*", "ServiceType": "*", "Host": "*", "HTTPMethod": "POST",
		"URLPath": "/checkout*", "Version": 1.0, "Attributes": map[string]any{"tier": "gold"},
		"SamplingRateBoost": map[string]any{"MaxRate": 0.5, "CooldownWindowMinutes": 5.0},
	}
	want := map[string]any{"SamplingRuleRecord": map[string]any{
		"SamplingRule": wantRule, "CreatedAt": 1735787046.678, "ModifiedAt": 1735787046.678,
	}}
	if diff := cmp.Diff(want, created.body); diff != "" {
		t.Errorf("CreateSamplingRule (-want +got):\n%s", diff)
	}

	e.clock.Add(time.Second)
	updated := e.post("/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{
		"RuleARN": arn, "FixedRate": 0.5, "Attributes": map[string]string{},
	}}).ok(t)
	wantRule["FixedRate"] = 0.5
	wantRule["Attributes"] = map[string]any{}
	want = map[string]any{"SamplingRuleRecord": map[string]any{
		"SamplingRule": wantRule, "CreatedAt": 1735787046.678, "ModifiedAt": 1735787047.678,
	}}
	if diff := cmp.Diff(want, updated.body); diff != "" {
		t.Errorf("UpdateSamplingRule (-want +got):\n%s", diff)
	}

	listed := e.post("/GetSamplingRules", `{}`).ok(t)
	wantList := map[string]any{"SamplingRuleRecords": []any{want["SamplingRuleRecord"], defaultRecordAt("arn:aws:xray:eu-west-3:123456789012:sampling-rule/")}}
	if diff := cmp.Diff(wantList, listed.body); diff != "" {
		t.Errorf("GetSamplingRules (-want +got):\n%s", diff)
	}

	// Removing the boost takes an explicit null; an update that sets
	// nothing changes nothing and answers the rule.
	e.post("/UpdateSamplingRule", `{"SamplingRuleUpdate": {"RuleName": "checkout", "SamplingRateBoost": null}}`).ok(t)
	v := e.version()
	same := e.post("/UpdateSamplingRule", `{"SamplingRuleUpdate": {"RuleName": "checkout"}}`).ok(t)
	if _, ok := same.body["SamplingRuleRecord"].(map[string]any)["SamplingRule"].(map[string]any)["SamplingRateBoost"]; ok {
		t.Errorf("boost still there after a null: %s", same.raw)
	}
	if e.version() != v {
		t.Errorf("an empty update changed the rules version")
	}

	deleted := e.post("/DeleteSamplingRule", map[string]any{"RuleName": "checkout"}).ok(t)
	if got := deleted.body["SamplingRuleRecord"].(map[string]any)["SamplingRule"].(map[string]any)["RuleARN"]; got != arn {
		t.Errorf("deleted record's ARN %v", got)
	}
	listed = e.post("/GetSamplingRules", `{}`).ok(t)
	if n := len(listed.body["SamplingRuleRecords"].([]any)); n != 1 {
		t.Errorf("%d rules after the delete, want the Default only", n)
	}
	if r := e.post("/DeleteSamplingRule", map[string]any{"RuleName": "checkout"}); r.errType(t) != "InvalidRequestException" || r.status != http.StatusBadRequest {
		t.Errorf("second delete: %d %s", r.status, r.raw)
	}
}

func TestCreateRefused(t *testing.T) {
	with := func(k string, v any) map[string]any {
		r := fullRule("r1")
		if v == nil {
			delete(r, k)
		} else {
			r[k] = v
		}
		return r
	}
	six := map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6"}
	for _, tc := range []struct {
		name  string
		body  any
		field string // named in the message
	}{
		{"no rule", map[string]any{}, "SamplingRule"},
		{"name 33", map[string]any{"SamplingRule": with("RuleName", strings.Repeat("n", 33))}, "RuleName"},
		{"no name", map[string]any{"SamplingRule": with("RuleName", nil)}, "RuleName"},
		{"service name 65", map[string]any{"SamplingRule": with("ServiceName", strings.Repeat("s", 65))}, "ServiceName"},
		{"host 65", map[string]any{"SamplingRule": with("Host", strings.Repeat("h", 65))}, "Host"},
		{"method 11", map[string]any{"SamplingRule": with("HTTPMethod", strings.Repeat("M", 11))}, "HTTPMethod"},
		{"path 129", map[string]any{"SamplingRule": with("URLPath", "/"+strings.Repeat("p", 128))}, "URLPath"},
		{"six attributes", map[string]any{"SamplingRule": with("Attributes", six)}, "Attributes"},
		{"attribute key 33", map[string]any{"SamplingRule": with("Attributes", map[string]string{strings.Repeat("k", 33): "v"})}, "Attributes"},
		{"attribute value empty", map[string]any{"SamplingRule": with("Attributes", map[string]string{"k": ""})}, "Attributes.k"},
		{"fixed rate 1.5", map[string]any{"SamplingRule": with("FixedRate", 1.5)}, "FixedRate"},
		{"priority 0", map[string]any{"SamplingRule": with("Priority", 0)}, "Priority"},
		{"priority 2^40", map[string]any{"SamplingRule": with("Priority", int64(1)<<40)}, "Priority"},
		{"reservoir -1", map[string]any{"SamplingRule": with("ReservoirSize", -1)}, "ReservoirSize"},
		{"version 2", map[string]any{"SamplingRule": with("Version", 2)}, "Version"},
		{"no version", map[string]any{"SamplingRule": with("Version", nil)}, "Version"},
		{"no resource ARN", map[string]any{"SamplingRule": with("ResourceARN", nil)}, "ResourceARN"},
		{"no fixed rate", map[string]any{"SamplingRule": with("FixedRate", nil)}, "FixedRate"},
		{"other rule's ARN", map[string]any{"SamplingRule": with("RuleARN", arnPrefix+"other")}, "RuleARN"},
		{"boost rate 2", map[string]any{"SamplingRule": with("SamplingRateBoost", map[string]any{"MaxRate": 2, "CooldownWindowMinutes": 1})}, "MaxRate"},
		{"boost cooldown 0", map[string]any{"SamplingRule": with("SamplingRateBoost", map[string]any{"MaxRate": 0.5, "CooldownWindowMinutes": 0})}, "CooldownWindowMinutes"},
		{"boost not an object", map[string]any{"SamplingRule": with("SamplingRateBoost", 3)}, "SamplingRateBoost"},
		{"Default exists", map[string]any{"SamplingRule": with("RuleName", "Default")}, "already exists"},
		{"tag aws:", map[string]any{"SamplingRule": fullRule("r1"), "Tags": []map[string]string{{"Key": "aws:x", "Value": "v"}}}, "Tags[0].Key"},
		{"tag without value", map[string]any{"SamplingRule": fullRule("r1"), "Tags": []map[string]string{{"Key": "k"}}}, "Tags[0].Value"},
		{"tag key twice", map[string]any{"SamplingRule": fullRule("r1"), "Tags": []map[string]string{{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}}}, "Tags[1].Key"},
		{"51 tags", map[string]any{"SamplingRule": fullRule("r1"), "Tags": manyTags(51)}, "Tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{})
			v := e.version()
			r := e.post("/CreateSamplingRule", tc.body)
			if r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
				t.Fatalf("status %d %s, want 400 InvalidRequestException", r.status, r.raw)
			}
			if msg := r.body["Message"].(string); !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %s", msg, tc.field)
			}
			if e.version() != v {
				t.Errorf("a refused create changed the rules")
			}
		})
	}
}

func manyTags(n int) []map[string]string {
	tags := make([]map[string]string, n)
	for i := range tags {
		tags[i] = map[string]string{"Key": fmt.Sprintf("k%d", i), "Value": "v"}
	}
	return tags
}

func TestDefaultRule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		update map[string]any
		ok     bool
	}{
		{"fixed rate and reservoir", map[string]any{"FixedRate": 0.1, "ReservoirSize": 3}, true},
		{"by ARN", map[string]any{"RuleName": nil, "RuleARN": arnPrefix + "Default", "FixedRate": 0.1}, true},
		{"unchanged globs sent back", map[string]any{"FixedRate": 0.1, "ServiceName": "*", "Host": "*", "Priority": 10000, "Attributes": map[string]string{}}, true},
		{"service name", map[string]any{"ServiceName": "shop"}, false},
		{"priority", map[string]any{"Priority": 5}, false},
		{"attributes", map[string]any{"Attributes": map[string]string{"a": "b"}}, false},
		{"boost", map[string]any{"SamplingRateBoost": map[string]any{"MaxRate": 0.5, "CooldownWindowMinutes": 1}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{})
			u := map[string]any{"RuleName": "Default"}
			for k, v := range tc.update {
				if v == nil {
					delete(u, k)
				} else {
					u[k] = v
				}
			}
			v := e.version()
			r := e.post("/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": u})
			if tc.ok {
				r.ok(t)
				got := r.body["SamplingRuleRecord"].(map[string]any)["SamplingRule"].(map[string]any)
				if got["FixedRate"] != 0.1 || got["ServiceName"] != "*" || got["Priority"] != 10000.0 {
					t.Errorf("Default after the update: %v", got)
				}
				return
			}
			if r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
				t.Errorf("status %d %s, want 400 InvalidRequestException", r.status, r.raw)
			}
			if e.version() != v {
				t.Errorf("a refused update changed the rules")
			}
		})
	}
	e := newEnv(t, xray.Options{})
	for _, body := range []any{map[string]any{"RuleName": "Default"}, map[string]any{"RuleARN": arnPrefix + "Default"}} {
		if r := e.post("/DeleteSamplingRule", body); r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
			t.Errorf("delete Default: %d %s", r.status, r.raw)
		}
	}
}

func TestUpdateAndDeleteRefused(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		body       any
		field      string
	}{
		{"no update", "/UpdateSamplingRule", map[string]any{}, "SamplingRuleUpdate"},
		{"no name", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"FixedRate": 0.1}}, "RuleName"},
		{"unknown rule", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": "nope", "FixedRate": 0.1}}, "does not exist"},
		{"another account's ARN", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleARN": "arn:aws:xray:us-east-1:111111111111:sampling-rule/r1", "FixedRate": 0.1}}, "does not exist"},
		{"not an ARN", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleARN": "r1", "FixedRate": 0.1}}, "RuleARN"},
		{"name and ARN differ", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": "r2", "RuleARN": arnPrefix + "r1", "FixedRate": 0.1}}, "RuleARN"},
		{"fixed rate 2", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": "r1", "FixedRate": 2}}, "FixedRate"},
		{"six attributes", "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": "r1", "Attributes": map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6"}}}, "Attributes"},
		{"delete nothing", "/DeleteSamplingRule", map[string]any{}, "RuleName"},
		{"delete unknown", "/DeleteSamplingRule", map[string]any{"RuleName": "nope"}, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{})
			e.create(fullRule("r1"))
			v := e.version()
			r := e.post(tc.path, tc.body)
			if r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
				t.Fatalf("status %d %s, want 400 InvalidRequestException", r.status, r.raw)
			}
			if msg := r.body["Message"].(string); !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %s", msg, tc.field)
			}
			if e.version() != v {
				t.Errorf("a refused call changed the rules")
			}
		})
	}
}

func TestTags(t *testing.T) {
	e := newEnv(t, xray.Options{})
	e.post("/CreateSamplingRule", map[string]any{"SamplingRule": fullRule("r1"), "Tags": []map[string]string{{"Key": "b", "Value": "2"}}}).ok(t)
	e.post("/TagResource", map[string]any{"ResourceARN": arnPrefix + "r1", "Tags": []map[string]string{{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "3"}, {"Key": "c d", "Value": ""}}}).ok(t)
	e.post("/UntagResource", map[string]any{"ResourceARN": arnPrefix + "r1", "TagKeys": []string{"c d", "absent"}}).ok(t)
	got := e.post("/ListTagsForResource", map[string]any{"ResourceARN": arnPrefix + "r1"}).ok(t)
	want := map[string]any{"Tags": []any{map[string]any{"Key": "a", "Value": "1"}, map[string]any{"Key": "b", "Value": "3"}}}
	if diff := cmp.Diff(want, got.body); diff != "" {
		t.Errorf("ListTagsForResource (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		typ        string
	}{
		{"list unknown rule", "/ListTagsForResource", map[string]any{"ResourceARN": arnPrefix + "nope"}, 404, "ResourceNotFoundException"},
		{"tag unknown rule", "/TagResource", map[string]any{"ResourceARN": arnPrefix + "nope", "Tags": []map[string]string{{"Key": "a", "Value": "1"}}}, 404, "ResourceNotFoundException"},
		{"untag unknown rule", "/UntagResource", map[string]any{"ResourceARN": arnPrefix + "nope", "TagKeys": []string{"a"}}, 404, "ResourceNotFoundException"},
		{"group ARN", "/ListTagsForResource", map[string]any{"ResourceARN": "arn:aws:xray:us-east-1:000000000000:group/g/ID"}, 404, "ResourceNotFoundException"},
		{"other region", "/ListTagsForResource", map[string]any{"ResourceARN": "arn:aws:xray:eu-west-1:000000000000:sampling-rule/r1"}, 404, "ResourceNotFoundException"},
		{"not an ARN", "/ListTagsForResource", map[string]any{"ResourceARN": "r1"}, 400, "InvalidRequestException"},
		{"no ARN", "/TagResource", map[string]any{"Tags": []map[string]string{{"Key": "a", "Value": "1"}}}, 400, "InvalidRequestException"},
		{"no tags", "/TagResource", map[string]any{"ResourceARN": arnPrefix + "r1"}, 400, "InvalidRequestException"},
		{"no keys", "/UntagResource", map[string]any{"ResourceARN": arnPrefix + "r1"}, 400, "InvalidRequestException"},
		{"key 129", "/TagResource", map[string]any{"ResourceARN": arnPrefix + "r1", "Tags": []map[string]string{{"Key": strings.Repeat("k", 129), "Value": "1"}}}, 400, "InvalidRequestException"},
		{"bad character", "/TagResource", map[string]any{"ResourceARN": arnPrefix + "r1", "Tags": []map[string]string{{"Key": "a", "Value": "x;y"}}}, 400, "InvalidRequestException"},
		{"too many in all", "/TagResource", map[string]any{"ResourceARN": arnPrefix + "r1", "Tags": manyTags(49)}, 400, "TooManyTagsException"},
		{"token", "/ListTagsForResource", map[string]any{"ResourceARN": arnPrefix + "r1", "NextToken": "x"}, 400, "InvalidRequestException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.path, tc.body)
			if r.status != tc.status || r.errType(t) != tc.typ {
				t.Errorf("status %d %s, want %d %s", r.status, r.raw, tc.status, tc.typ)
			}
			if tc.status == 404 && r.body["ResourceName"] == nil {
				t.Errorf("ResourceNotFoundException without ResourceName: %s", r.raw)
			}
		})
	}
}

func TestCoreErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		path   string
		body   any
		status int
		typ    string
	}{
		{"store down on list", fmt.Errorf("redis: dial tcp 10.0.0.1:6379: %w", store.ErrUnavailable), "/GetSamplingRules", `{}`, 503, "ServiceUnavailableException"},
		{"internal on targets", errors.New("redis: secret internal detail"), "/SamplingTargets", `{}`, 500, "InternalFailure"},
		{"throttled", xray.ErrThrottled, "/GetSamplingRules", `{}`, 429, "ThrottledException"},
		{"conflict after retries", store.ErrConflict, "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": "Default", "FixedRate": 0.1}}, 429, "ThrottledException"},
		{"rule limit", xray.ErrRuleLimit, "/CreateSamplingRule", map[string]any{"SamplingRule": fullRule("r1")}, 400, "RuleLimitExceededException"},
		{"deadline", context.DeadlineExceeded, "/GetSamplingRules", `{}`, 503, "ServiceUnavailableException"},
		{"access denied", xray.ErrAccessDenied, "/GetSamplingRules", `{}`, 403, "AccessDeniedException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{})
			e.core.Fail = func(string) error { return tc.err }
			r := e.post(tc.path, tc.body)
			if r.status != tc.status || r.errType(t) != tc.typ {
				t.Errorf("status %d %s, want %d %s", r.status, r.raw, tc.status, tc.typ)
			}
			if strings.Contains(r.raw, "redis") {
				t.Errorf("storage error text reached the client: %s", r.raw)
			}
		})
	}
}

func TestSamplingTargets(t *testing.T) {
	e := newEnv(t, xray.Options{})
	e.clock.Add(time.Second)
	e.create(fullRule("r1")) // reservoir 10, fixed rate 0.25
	const a, b = "0123456789abcdef01234567", "89ABCDEF0123456789ABCDEF"
	doc := func(client, rule string, requests int, ts any) map[string]any {
		return map[string]any{"ClientID": client, "RuleName": rule, "RequestCount": requests, "SampledCount": 1, "BorrowCount": 0, "Timestamp": ts}
	}
	// Client a alone has the whole reservoir.
	r := e.post("/SamplingTargets", map[string]any{"SamplingStatisticsDocuments": []any{
		doc(a, "r1", 100, 1735787046), doc(a, "nope", 1, 1735787046.5),
	}}).ok(t)
	want := map[string]any{
		"SamplingTargetDocuments": []any{map[string]any{
			"RuleName": "r1", "FixedRate": 0.25, "ReservoirQuota": 10.0, "ReservoirQuotaTTL": 1735787066.678, "Interval": 10.0,
		}},
		"LastRuleModification": 1735787046.678,
		"UnprocessedStatistics": []any{map[string]any{
			"RuleName": "nope", "ErrorCode": "400", "Message": `UNKNOWN_RULE: no rule "nope"`,
		}},
		"UnprocessedBoostStatistics": []any{},
	}
	if diff := cmp.Diff(want, r.body); diff != "" {
		t.Errorf("SamplingTargets (-want +got):\n%s", diff)
	}
	// Client b (upper-case hex, milliseconds) with three times a's traffic
	// gets 7.5 of 10: 7 or 8, by turns.
	r = e.post("/SamplingTargets", map[string]any{"SamplingStatisticsDocuments": []any{doc(b, "r1", 300, 1735787047000)}}).ok(t)
	q := r.body["SamplingTargetDocuments"].([]any)[0].(map[string]any)["ReservoirQuota"]
	if q != 7.0 && q != 8.0 {
		t.Errorf("quota %v for a share of 7.5", q)
	}
	// Empty bodies still answer LastRuleModification, which the X-Ray SDK
	// for Node.js requires.
	for _, body := range []string{``, `{}`, `{"SamplingStatisticsDocuments": []}`} {
		r = e.post("/SamplingTargets", body).ok(t)
		if r.body["LastRuleModification"] != 1735787046.678 || len(r.body["SamplingTargetDocuments"].([]any)) != 0 {
			t.Errorf("%q: %s", body, r.raw)
		}
	}
}

func TestSamplingTargetsRefused(t *testing.T) {
	const id = "0123456789abcdef01234567"
	docs := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = map[string]any{"ClientID": id, "RuleName": fmt.Sprintf("r%d", i), "RequestCount": 1}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"26 documents", map[string]any{"SamplingStatisticsDocuments": docs(26)}, "SamplingStatisticsDocuments"},
		{"26 boost documents", map[string]any{"SamplingBoostStatisticsDocuments": docs(26)}, "SamplingBoostStatisticsDocuments"},
		{"client ID 23", map[string]any{"SamplingStatisticsDocuments": []any{map[string]any{"ClientID": id[:23], "RuleName": "Default"}}}, "ClientID"},
		{"client ID not hex", map[string]any{"SamplingStatisticsDocuments": []any{map[string]any{"ClientID": "0123456789abcdef0123456g", "RuleName": "Default"}}}, "ClientID"},
		{"no client ID", map[string]any{"SamplingStatisticsDocuments": []any{map[string]any{"RuleName": "Default"}}}, "ClientID"},
		{"two clients", map[string]any{"SamplingStatisticsDocuments": []any{
			map[string]any{"ClientID": id, "RuleName": "Default"},
			map[string]any{"ClientID": "1123456789abcdef01234567", "RuleName": "r1"},
		}}, "same ClientID"},
		{"no rule name", map[string]any{"SamplingStatisticsDocuments": []any{map[string]any{"ClientID": id}}}, "RuleName"},
		{"rule name 33", map[string]any{"SamplingStatisticsDocuments": []any{map[string]any{"ClientID": id, "RuleName": strings.Repeat("r", 33)}}}, "RuleName"},
		{"boost without service", map[string]any{"SamplingBoostStatisticsDocuments": []any{map[string]any{"RuleName": "Default"}}}, "ServiceName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{})
			r := e.post("/SamplingTargets", tc.body)
			if r.status != http.StatusBadRequest || r.errType(t) != "InvalidRequestException" {
				t.Fatalf("status %d %s, want 400 InvalidRequestException", r.status, r.raw)
			}
			if msg := r.body["Message"].(string); !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %s", msg, tc.field)
			}
		})
	}
}

func TestBoostCarried(t *testing.T) {
	e := newEnv(t, xray.Options{})
	rule := fullRule("r1")
	rule["SamplingRateBoost"] = map[string]any{"MaxRate": 0.8, "CooldownWindowMinutes": 10}
	e.create(rule)
	const id = "0123456789abcdef01234567"
	r := e.post("/SamplingTargets", map[string]any{
		"SamplingStatisticsDocuments": []any{map[string]any{"ClientID": id, "RuleName": "r1", "RequestCount": 10, "SampledCount": 3, "Timestamp": 1735787045}},
		"SamplingBoostStatisticsDocuments": []any{
			map[string]any{"RuleName": "r1", "ServiceName": "shop-eu", "TotalCount": 10, "AnomalyCount": 4, "SampledAnomalyCount": 1, "Timestamp": 1735787045},
			map[string]any{"RuleName": "gone", "ServiceName": "shop-eu", "TotalCount": 1, "AnomalyCount": 1, "SampledAnomalyCount": 0, "Timestamp": 1735787045},
		},
	}).ok(t)
	got := r.body["SamplingTargetDocuments"].([]any)[0].(map[string]any)["SamplingBoost"]
	if diff := cmp.Diff(map[string]any{"BoostRate": 0.8, "BoostRateTTL": 1735787105.678}, got); diff != "" {
		t.Errorf("SamplingBoost (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{map[string]any{"RuleName": "gone", "ErrorCode": "400", "Message": `UNKNOWN_RULE: no rule "gone"`}}, r.body["UnprocessedBoostStatistics"]); diff != "" {
		t.Errorf("UnprocessedBoostStatistics (-want +got):\n%s", diff)
	}
}

func TestSummaries(t *testing.T) {
	e := newEnv(t, xray.Options{})
	const id = "0123456789abcdef01234567"
	e.post("/SamplingTargets", map[string]any{"SamplingStatisticsDocuments": []any{
		map[string]any{"ClientID": id, "RuleName": "Default", "RequestCount": 10, "SampledCount": 3, "BorrowCount": 1},
	}}).ok(t)
	r := e.post("/SamplingStatisticSummaries", `{}`).ok(t)
	want := map[string]any{"SamplingStatisticSummaries": []any{map[string]any{
		"RuleName": "Default", "Timestamp": 1735787045.678, "RequestCount": 10.0, "SampledCount": 3.0, "BorrowCount": 1.0,
	}}}
	if diff := cmp.Diff(want, r.body); diff != "" {
		t.Errorf("SamplingStatisticSummaries (-want +got):\n%s", diff)
	}
}

func TestNewHandlerOptions(t *testing.T) {
	for _, o := range []xray.Options{{Region: "US-EAST-1"}, {Region: "us east"}, {Account: "12345"}, {Account: "12345678901x"}} {
		if _, err := xray.NewHandler(&xraytest.Core{}, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := xray.NewHandler(nil, xray.Options{}); err == nil {
		t.Errorf("a nil core accepted")
	}
}

// verifier is a Verifier for tests: it accepts one access key ID.
type verifier struct{ key string }

func (v verifier) Verify(ctx context.Context, r *http.Request, body []byte, sig *xray.Signature) (context.Context, error) {
	switch {
	case sig == nil:
		return nil, fmt.Errorf("unsigned: %w", xray.ErrAccessDenied)
	case sig.AccessKeyID != v.key:
		return nil, fmt.Errorf("key %s: %w", sig.AccessKeyID, xray.ErrSignature)
	}
	return auth.NewContext(ctx, &auth.Principal{Kind: auth.KindAccessKey, Name: sig.AccessKeyID}), nil
}

func TestSignatures(t *testing.T) {
	sig := func(key string) string {
		return "AWS4-HMAC-SHA256 Credential=" + key + "/20250102/us-east-1/xray/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("cd", 32)
	}
	for _, tc := range []struct {
		name     string
		verifier xray.Verifier
		header   string
		status   int
		typ      string
		actor    string
	}{
		{"signed, not verified", nil, sig("AKID1"), 200, "", "anonymous"},
		{"unsigned, not verified", nil, "", 200, "", "anonymous"},
		{"bearer left for access control", nil, "Bearer t0ken", 200, "", "anonymous"},
		{"malformed SigV4", nil, "AWS4-HMAC-SHA256 Credential=AKID1", 400, "IncompleteSignatureException", ""},
		{"verified", verifier{"AKID1"}, sig("AKID1"), 200, "", "aws:AKID1"},
		{"wrong key", verifier{"AKID1"}, sig("AKID2"), 403, "InvalidSignatureException", ""},
		{"unsigned refused", verifier{"AKID1"}, "", 403, "AccessDeniedException", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, xray.Options{Verifier: tc.verifier})
			var header []string
			if tc.header != "" {
				header = []string{"Authorization", tc.header}
			}
			v := e.version()
			r := e.post("/CreateSamplingRule", map[string]any{"SamplingRule": fullRule("r1")}, header...)
			if tc.status != 200 {
				if r.status != tc.status || r.errType(t) != tc.typ {
					t.Errorf("status %d %s, want %d %s", r.status, r.raw, tc.status, tc.typ)
				}
				if e.version() != v {
					t.Errorf("a refused call changed the rules")
				}
				return
			}
			r.ok(t)
			page, err := e.core.Store.RuleEvents(context.Background(), "r1", 1, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Events) != 1 || !strings.Contains(page.Events[0].Actor, tc.actor) {
				t.Errorf("audit events %+v, want actor with %q", page.Events, tc.actor)
			}
		})
	}
}
