package xray_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
)

var fuzzPaths = []string{
	"/GetSamplingRules", "/SamplingTargets", "/SamplingStatisticSummaries",
	"/CreateSamplingRule", "/UpdateSamplingRule", "/DeleteSamplingRule",
	"/TagResource", "/UntagResource", "/ListTagsForResource",
}

// FuzzHandler sends any body to any operation: the answer is always a JSON
// object, a 200 or one of X-Ray's error shapes with a client-error status
// (the in-memory core never fails), and nothing panics.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"NextToken": null}`, `null`, `[]`, `{"SamplingRule": {}}`,
		`{"SamplingStatisticsDocuments": [{"ClientID": "0123456789abcdef01234567", "RuleName": "Default", "RequestCount": 10, "SampledCount": 1, "BorrowCount": 0, "Timestamp": 1735787045000}], "SamplingBoostStatisticsDocuments": [{"RuleName": "Default", "ServiceName": "s", "TotalCount": 3, "AnomalyCount": 1, "SampledAnomalyCount": 0, "Timestamp": "2025-01-02T03:04:05Z"}]}`,
		`{"SamplingRule": {"RuleName": "r", "ResourceARN": "*", "Priority": 1, "FixedRate": 0.5, "ReservoirSize": 1, "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*", "Version": 1, "Attributes": {"a": "b"}, "SamplingRateBoost": {"MaxRate": 0.9, "CooldownWindowMinutes": 2}}, "Tags": [{"Key": "k", "Value": "v"}]}`,
		`{"SamplingRuleUpdate": {"RuleName": "Default", "FixedRate": 0.1, "SamplingRateBoost": null}}`,
		`{"RuleARN": "arn:aws:xray:us-east-1:000000000000:sampling-rule/Default"}`,
		`{"ResourceARN": "arn:aws:xray:us-east-1:000000000000:sampling-rule/Default", "Tags": [{"Key": "a", "Value": ""}], "TagKeys": ["a"]}`,
		`{"SamplingStatisticsDocuments": [{"RequestCount": 1e400, "Timestamp": -0}]}`,
		"{\"RuleName\": \"\xff\xfe\"}",
	} {
		for i := range fuzzPaths {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		now := func() time.Time { return t0 }
		core, err := xraytest.New(now)
		if err != nil {
			t.Fatal(err)
		}
		defer core.Close()
		h, err := xray.NewHandler(core, xray.Options{Now: now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		path := fuzzPaths[int(op)%len(fuzzPaths)]
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %q: answer is not a JSON object: %v: %s", path, body, err, w.Body.Bytes())
		}
		switch w.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusNotFound:
			if out["__type"] == nil || out["Message"] == nil || w.Header().Get("X-Amzn-Errortype") == "" {
				t.Fatalf("%s %q: error without its shape: %s", path, body, w.Body.Bytes())
			}
		default:
			t.Fatalf("%s %q: status %d: %s", path, body, w.Code, w.Body.Bytes())
		}
	})
}
