package xraycore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/internal/xray"
)

// The X-Ray port under hostile input (docs/RELIABILITY.md): the transport
// over the real core, on loopback, with what a careless or hostile client
// sends. Every refusal is a 4xx in X-Ray's shape and changes nothing.

type hostileReply struct {
	status int
	typ    string
	msg    string
	body   map[string]any
}

func (e *env) serveHTTP(t *testing.T, core xray.Core) func(path, body string) hostileReply {
	t.Helper()
	h, err := xray.NewHandler(core, xray.Options{Now: e.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return func(path, body string) hostileReply {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		r := hostileReply{status: resp.StatusCode}
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("POST %s: not a JSON object: %s", path, raw)
		}
		r.typ, _ = r.body["__type"].(string)
		r.msg, _ = r.body["Message"].(string)
		return r
	}
}

// asEditor wraps the core so that every call runs as an editor principal
// (the guard's job on a real port).
type asEditor struct{ *Core }

func (a asEditor) CreateRule(ctx context.Context, r xray.Rule, tags xray.Tags) (xray.Rule, error) {
	return a.Core.CreateRule(as("ci"), r, tags)
}

func (a asEditor) UpdateRule(ctx context.Context, u xray.RuleUpdate, etag string) (xray.Rule, error) {
	return a.Core.UpdateRule(as("ci"), u, etag)
}

func (a asEditor) DeleteRule(ctx context.Context, name, etag string) (xray.Rule, error) {
	return a.Core.DeleteRule(as("ci"), name, etag)
}

func (a asEditor) TagRule(ctx context.Context, rule string, tags xray.Tags) error {
	return a.Core.TagRule(as("ci"), rule, tags)
}

func (a asEditor) UntagRule(ctx context.Context, rule string, keys []string) error {
	return a.Core.UntagRule(as("ci"), rule, keys)
}

func createBody(name, override string) string {
	return `{"SamplingRule":{"RuleName":"` + name + `","Priority":10,"FixedRate":0.1,"ReservoirSize":1,"ServiceName":"shop","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","ResourceARN":"*","Version":1` + override + `}}`
}

func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// TestHostileBodies: malformed and hostile JSON on every kind of call is
// refused as InvalidRequestException, naming what is wrong, and leaves the
// rules as they were.
func TestHostileBodies(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	post := e.serveHTTP(t, asEditor{e.core})
	const id = `"ClientID":"0123456789abcdef01234567"`
	stats := func(doc string) string {
		return `{"SamplingStatisticsDocuments":[{` + id + `,"RuleName":"checkout",` + doc + `}]}`
	}
	for _, tc := range []struct {
		name, path, body, text string
	}{
		{"nesting 40,000 deep", "/GetSamplingRules", `{"NextToken":` + nested(40_000) + `}`, "JSON"},
		{"nesting in an unknown member", "/CreateSamplingRule", `{"X":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`, "JSON"},
		{"FixedRate 1e400", "/CreateSamplingRule", createBody("a", `,"FixedRate":1e400`), "FixedRate"},
		{"FixedRate 1e308", "/CreateSamplingRule", createBody("a", `,"FixedRate":1e308`), "FixedRate"},
		{"FixedRate -0.5", "/CreateSamplingRule", createBody("a", `,"FixedRate":-0.5`), "FixedRate"},
		{"ReservoirSize 1e30", "/CreateSamplingRule", createBody("a", `,"ReservoirSize":1e30`), "SamplingRule.ReservoirSize: want an integer"},
		{"ReservoirSize 2^63", "/CreateSamplingRule", createBody("a", `,"ReservoirSize":9223372036854775808`), "SamplingRule.ReservoirSize: want an integer"},
		{"Priority 1e10", "/CreateSamplingRule", createBody("a", `,"Priority":10000000000`), "Priority"},
		{"Version 1.5", "/CreateSamplingRule", createBody("a", `,"Version":1.5`), "SamplingRule.Version: want an integer"},
		{"FixedRate NaN", "/CreateSamplingRule", createBody("a", `,"FixedRate":NaN`), "syntax"},
		{"FixedRate Infinity", "/CreateSamplingRule", createBody("a", `,"FixedRate":Infinity`), "syntax"},
		{"FixedRate \"NaN\"", "/CreateSamplingRule", createBody("a", `,"FixedRate":"NaN"`), "FixedRate"},
		{"MaxRate NaN string", "/CreateSamplingRule", createBody("a", `,"SamplingRateBoost":{"MaxRate":"NaN","CooldownWindowMinutes":1}`), "SamplingRateBoost"},
		{"RuleName a number", "/CreateSamplingRule", createBody("a", `,"RuleName":5`), "RuleName"},
		{"Attributes a list", "/CreateSamplingRule", createBody("a", `,"Attributes":["a"]`), "Attributes"},
		{"six attributes", "/CreateSamplingRule", createBody("a", `,"Attributes":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1"}`), "Attributes"},
		{"an attribute key of 1,000 characters", "/CreateSamplingRule", createBody("a", `,"Attributes":{"`+strings.Repeat("k", 1000)+`":"v"}`), "Attributes"},
		{"RuleName of invalid UTF-8", "/CreateSamplingRule", createBody("\xff\xfe", ""), "RuleName"},
		{"ServiceName of 65 characters", "/CreateSamplingRule", createBody("a", `,"ServiceName":"`+strings.Repeat("s", 65)+`"`), "ServiceName"},
		{"tags an object", "/TagResource", `{"ResourceARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout","Tags":{"a":"b"}}`, "Tags"},
		{"51 tags", "/CreateSamplingRule", `{"SamplingRule":` + createBody("a", "")[len(`{"SamplingRule":`):len(createBody("a", ""))-1] + `,"Tags":[` + tags(51) + `]}`, "Tags"},
		{"a tag value of invalid UTF-8", "/TagResource", `{"ResourceARN":"arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout","Tags":[{"Key":"k","Value":"` + "\xff" + `"}]}`, "Value"},
		{"an array body", "/GetSamplingRules", `[]`, "JSON object"},
		{"two objects", "/GetSamplingRules", `{}{}`, "after"},
		{"statistics an object", "/SamplingTargets", `{"SamplingStatisticsDocuments":{}}`, "SamplingStatisticsDocuments"},
		{"RequestCount 2^53+1", "/SamplingTargets", stats(`"RequestCount":9007199254740993,"SampledCount":0,"BorrowCount":0,"Timestamp":1`), "SamplingStatisticsDocuments.RequestCount: an integer out of range"},
		{"RequestCount a string", "/SamplingTargets", stats(`"RequestCount":"10","SampledCount":0,"BorrowCount":0,"Timestamp":1`), "SamplingStatisticsDocuments.RequestCount: want an integer"},
		{"a negative timestamp", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":-1`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"a timestamp after 5138", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":1e14`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"a NaN timestamp", "/SamplingTargets", stats(`"RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":"NaN"`), "SamplingStatisticsDocuments.Timestamp: want a timestamp"},
		{"26 documents", "/SamplingTargets", `{"SamplingStatisticsDocuments":[` + docs(26) + `]}`, "at most 25"},
		{"a short ClientID", "/SamplingTargets", `{"SamplingStatisticsDocuments":[{"ClientID":"abc","RuleName":"checkout","RequestCount":1,"SampledCount":0,"BorrowCount":0,"Timestamp":1}]}`, "ClientID"},
		{"a 10 MB body", "/SamplingTargets", `{"SamplingStatisticsDocuments":[],"X":"` + strings.Repeat("a", 10<<20) + `"}`, "over"},
	} {
		before := e.version(t)
		r := post(tc.path, tc.body)
		if r.status != http.StatusBadRequest || r.typ != "InvalidRequestException" || !strings.Contains(r.msg, tc.text) {
			t.Errorf("%s: %d %s %q, want 400 InvalidRequestException with %q", tc.name, r.status, r.typ, r.msg, tc.text)
		}
		if after := e.version(t); after != before {
			t.Errorf("%s: rules version %d → %d", tc.name, before, after)
		}
	}
}

func tags(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"Key":"k%d","Value":"v"}`, i)
	}
	return b.String()
}

func docs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"ClientID":"0123456789abcdef01234567","RuleName":"checkout","RequestCount":%d,"SampledCount":0,"BorrowCount":0,"Timestamp":1}`, i)
	}
	return b.String()
}

func (e *env) version(t *testing.T) int64 {
	t.Helper()
	v, err := e.st.RulesVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}
